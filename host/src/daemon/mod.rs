//! `outreach daemon`: everything long-running, in one tokio runtime.
//!
//! Owns: the daemon's life — one daemon per store (an OS file lock beside
//! the store, with a state file naming its pid and control address), the
//! refresh scheduler, publishing posts as they fall due, the watchers
//! ([`watch`]: plugins, post files, the config file, the store), the control
//! API ([`api`]), readiness for systemd, and shutdown: SIGTERM or SIGINT
//! stops new work, lets publishes and refreshes in flight finish within a
//! grace period and folds the outbox's log into its database; a second
//! signal exits at once (every write is atomic, so nothing is corrupted).
//!
//! Never: publishes or refreshes on its own authority beyond what the store
//! and outbox hold, or listens beyond loopback unless the config says so.

pub mod api;
pub mod client;
pub mod ui;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::config::Loaded;
use crate::error::bad;
use crate::schedule::Refresher;
use crate::store::AccountId;

/// A problem the daemon found in a file it watches (a post file that does
/// not validate, a config change that does not parse, a plugin that does
/// not load), shown in the log, `GET /health` and `GET /problems`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Problem {
    pub path: String,
    pub kind: String,
    pub message: String,
    pub at: chrono::DateTime<Utc>,
}

/// What the running daemon shares between its tasks.
pub struct Daemon {
    pub app: Arc<App>,
    pub refresher: Arc<Refresher>,
    /// Publishes and post-file work in flight: awaited on shutdown.
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Wakes the due-post loop (a post was queued).
    due: tokio::sync::Notify,
    problems: Mutex<BTreeMap<String, Problem>>,
    pub(crate) accounts_changed: tokio::sync::mpsc::UnboundedSender<AccountId>,
    started: Instant,
    /// Connections started through the control API (`POST /connect`), by
    /// id: where each stands.
    pub connects: Mutex<BTreeMap<String, api::Connecting>>,
    /// The web UI's sign-in links, sessions and waiting connections.
    pub ui: ui::Ui,
}

impl Daemon {
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Run `fut` as tracked work (awaited on shutdown); `None` once the
    /// daemon is shutting down.
    pub fn spawn<F>(&self, fut: F) -> Option<tokio::task::JoinHandle<F::Output>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if self.shutting_down() {
            return None;
        }
        Some(self.tasks.spawn(fut))
    }

    pub fn problem(&self, path: &Path, kind: &str, message: String) {
        let key = path.display().to_string();
        self.problems.lock().expect("problems").insert(
            key.clone(),
            Problem {
                path: key,
                kind: kind.into(),
                message,
                at: Utc::now(),
            },
        );
    }

    pub fn clear_problem(&self, path: &Path) {
        self.problems
            .lock()
            .expect("problems")
            .remove(&path.display().to_string());
    }

    pub fn problems(&self) -> Vec<Problem> {
        self.problems
            .lock()
            .expect("problems")
            .values()
            .cloned()
            .collect()
    }

    pub fn wake_due(&self) {
        self.due.notify_one();
    }

    /// Resolves once the daemon begins to shut down.
    pub async fn shutdown_signal(&self) {
        self.shutdown.cancelled().await
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// What `outreach daemon` was asked on the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Exit after this long (tests and benchmarks); `None`: until a signal.
    pub exit_after: Option<Duration>,
}

/// Where a running daemon says it can be reached (beside the store).
#[derive(Debug, Serialize, Deserialize)]
pub struct StateFile {
    pub pid: u32,
    pub address: String,
    pub token_file: PathBuf,
    pub started_at: chrono::DateTime<Utc>,
}

/// The lock that makes one daemon per store.
pub fn lock_path(cfg: &Loaded) -> PathBuf {
    sibling(&cfg.store_dir, "daemon.lock")
}

/// The running daemon's [`StateFile`].
pub fn state_path(cfg: &Loaded) -> PathBuf {
    sibling(&cfg.store_dir, "daemon.json")
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    dir.with_file_name(format!("{name}.{suffix}"))
}

/// The store's daemon lock, held for the daemon's life.
pub struct Lock(#[allow(dead_code)] std::fs::File);

/// Take the store's daemon lock, or say who holds it.
pub fn take_lock(cfg: &Loaded) -> anyhow::Result<Lock> {
    let path = lock_path(cfg);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the daemon lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Lock(file)),
        Err(std::fs::TryLockError::WouldBlock) => {
            let who = std::fs::read_to_string(state_path(cfg))
                .ok()
                .and_then(|s| serde_json::from_str::<StateFile>(&s).ok())
                .map(|s| format!(" (pid {}, control API on {})", s.pid, s.address))
                .unwrap_or_default();
            Err(bad!(
                "another outreach daemon is already running on the store {}{who}; stop it first (two daemons would publish and refresh twice)",
                cfg.store_dir.display()
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::anyhow!("cannot lock {}: {e}", path.display()))
        }
    }
}

/// Read the control API token, creating it (0600) on first start.
pub fn load_or_create_token(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().len() >= 32 => {
            crate::store::warn_if_exposed(path, "the control API token file");
            return Ok(t.trim().to_string());
        }
        Ok(_) => {
            return Err(bad!(
                "the control API token file {} is too short; delete it and a new one is made on the next start",
                path.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    crate::store::write_atomic(path, format!("{token}\n").as_bytes())
        .with_context(|| format!("cannot write the control API token {}", path.display()))?;
    tracing::info!(path = %path.display(), "created the control API token");
    Ok(token)
}

/// Run the daemon until a signal (or `opts.exit_after`), holding `_lock`
/// (taken before the plugins load, so a second daemon is refused at once).
/// Returns the exit code.
pub async fn run(app: Arc<App>, opts: Options, _lock: Lock) -> anyhow::Result<i32> {
    let cfg = app.cfg();
    let token = load_or_create_token(&cfg.token_file)?;
    // Open the store and the journal now: a passphrase prompt or a broken
    // store stops the start, not a publish an hour later.
    app.store()?;
    let settled = app.outbox()?.lock().expect("outbox").settle_interrupted()?;
    if settled > 0 {
        tracing::warn!(
            deliveries = settled,
            "deliveries interrupted by an earlier crash are marked unknown; `outreach posts` lists them"
        );
    }
    // Accounts stored before credentials were pinned to hosts: pinned now
    // to their plugins' hosts, before any plugin can be replaced.
    match crate::accounts::pin_unpinned(app.services()).await {
        Ok(ids) if !ids.is_empty() => tracing::info!(
            accounts = ids.len(),
            "pinned the credentials of accounts stored by an earlier version to the hosts their plugins declare now"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("could not pin older accounts to their plugins' hosts: {e:#}"),
    }
    let listener = tokio::net::TcpListener::bind(&cfg.config.daemon.listen)
        .await
        .map_err(|e| {
            bad!(
                "cannot listen on {} for the control API: {e}; change daemon.listen in the config",
                cfg.config.daemon.listen
            )
        })?;
    let address = listener.local_addr()?;
    // The media listener, when platforms may fetch attachments from it:
    // bound now, so a taken address is reported at start.
    if cfg.config.media.public_base_url.is_some() {
        app.services()
            .public_media
            .listen(&cfg.config.media)
            .await?;
    }
    let refresher = Arc::new(Refresher::new(app.services().clone())?);
    let (accounts_tx, accounts_rx) = tokio::sync::mpsc::unbounded_channel();
    let daemon = Arc::new(Daemon {
        app: app.clone(),
        refresher: refresher.clone(),
        tasks: TaskTracker::new(),
        shutdown: CancellationToken::new(),
        due: tokio::sync::Notify::new(),
        problems: Mutex::new(BTreeMap::new()),
        accounts_changed: accounts_tx,
        started: Instant::now(),
        connects: Mutex::new(BTreeMap::new()),
        ui: ui::Ui::new(
            address,
            cfg.config
                .daemon
                .public_url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .as_ref(),
            Duration::from_secs(cfg.config.daemon.signin_link_secs.max(1)),
        ),
    });
    for (path, error) in app.host.rejected() {
        daemon.problem(&path, "plugin", error);
    }

    let scheduler = {
        let stop = daemon.shutdown.clone();
        tokio::spawn(crate::schedule::run_with(
            refresher,
            16,
            async move { stop.cancelled().await },
            accounts_rx,
        ))
    };
    let due_loop = tokio::spawn(due_loop(daemon.clone()));
    let processing_loop = tokio::spawn(processing_loop(daemon.clone()));
    let watchers = watch::start(daemon.clone())?;
    let store_poll = tokio::spawn(watch::poll_store(daemon.clone()));
    let api = {
        let stop = daemon.shutdown.clone();
        let router = api::router(daemon.clone(), Arc::new(token)).merge(ui::router(daemon.clone()));
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    let state = state_path(&cfg);
    crate::store::write_atomic(
        &state,
        serde_json::to_string_pretty(&StateFile {
            pid: std::process::id(),
            address: address.to_string(),
            token_file: cfg.token_file.clone(),
            started_at: Utc::now(),
        })?
        .as_bytes(),
    )?;
    // Post files that arrived while nothing was running.
    watchers.scan_posts(&daemon);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        %address,
        plugins = app.host.plugins().len(),
        started_in_ms = daemon.started.elapsed().as_millis() as u64,
        "outreach daemon ready"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let exit_after = async {
        match opts.exit_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = exit_after => tracing::info!("--exit-after reached"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let grace = Duration::from_secs(cfg.config.daemon.grace_secs);
    tracing::info!(
        grace_s = grace.as_secs(),
        in_flight = daemon.tasks.len(),
        "shutting down: finishing publishes and refreshes in flight; a second signal stops at once"
    );
    daemon.shutdown.cancel();
    daemon.tasks.close();
    // A second signal: leave now. Store writes are atomic renames and the
    // outbox is a journaled database, so an abrupt exit loses no record;
    // a delivery cut short is reported `unknown` on the next start.
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("outreach: second signal, exiting now");
        std::process::exit(130);
    });
    let finished = tokio::time::timeout(grace, async {
        daemon.tasks.wait().await;
        let _ = due_loop.await;
        let _ = processing_loop.await;
        let _ = store_poll.await;
        let _ = scheduler.await;
        let _ = api.await;
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            still_running = daemon.tasks.len(),
            "the grace period ended with work in flight; deliveries cut short are reported unknown on the next start"
        );
    }
    if let Err(e) = app.outbox()?.lock().expect("outbox").checkpoint() {
        tracing::warn!("cannot checkpoint the outbox: {e:#}");
    }
    let _ = std::fs::remove_file(&state);
    tracing::info!("outreach daemon stopped");
    Ok(0)
}

/// Publish posts as they fall due: sleep until the earliest schedule (or
/// `daemon.due_check_secs`, or a wake-up), then publish what is due.
/// Every few seconds, ask about the posts platforms are still processing
/// (see [`crate::publish::recheck_processing`]) — also those a `publish`
/// or an earlier daemon left `processing` — after settling as unknown what
/// another process left `sending` when it died.
async fn processing_loop(d: Arc<Daemon>) {
    loop {
        tokio::select! {
            _ = d.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let (app, refresher) = (d.app.clone(), d.refresher.clone());
        let Some(job) = d.spawn(async move {
            // A delivery another process left `sending` when it died
            // (another daemon on a shared journal, a killed `publish`)
            // becomes unknown, visible, and is never re-sent on its own.
            let settled = app.outbox()?.lock().expect("outbox").settle_interrupted()?;
            if settled > 0 {
                tracing::warn!(
                    settled,
                    "deliveries interrupted in another process are now unknown; see `outreach posts`"
                );
            }
            crate::publish::recheck_processing(app.services(), &refresher).await
        })
        else {
            return;
        };
        match job.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("asking about posts still processing failed: {e:#}"),
            Err(e) => tracing::error!("asking about posts still processing panicked: {e}"),
        }
    }
}

async fn due_loop(d: Arc<Daemon>) {
    loop {
        let next = d
            .app
            .outbox()
            .and_then(|o| o.lock().expect("outbox").next_due())
            .unwrap_or_else(|e| {
                tracing::error!("cannot read the outbox: {e:#}");
                None
            });
        let check = Duration::from_secs(d.app.cfg().config.daemon.due_check_secs);
        let wait = match next {
            Some(at) => (at - Utc::now()).to_std().unwrap_or_default().min(check),
            None => check,
        };
        tokio::select! {
            _ = d.shutdown.cancelled() => return,
            _ = d.due.notified() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        if next.is_none_or(|at| at > Utc::now()) {
            continue;
        }
        let (app, stop) = (d.app.clone(), d.shutdown.clone());
        let Some(job) = d.spawn(async move {
            crate::publish::publish_due_while(app.services(), || !stop.is_cancelled()).await
        }) else {
            return;
        };
        match job.await {
            Ok(Ok(reports)) => {
                for r in &reports {
                    log_report(r);
                }
            }
            Ok(Err(e)) => tracing::error!("publishing due posts failed: {e:#}"),
            Err(e) => tracing::error!("publishing due posts panicked: {e}"),
        }
    }
}

/// One log line per target of a publish.
pub fn log_report(r: &crate::publish::Report) {
    for t in &r.results {
        if t.ok {
            tracing::info!(post = %r.post, target = %t.target, state = %t.state, url = t.url.as_deref().unwrap_or(""), late = r.late, "post {}", t.state);
        } else if t.error_kind.as_deref() == Some("in-progress") {
            // Another daemon on a shared journal (or a `publish`) has it:
            // the claim working as it should, not a failure.
            tracing::info!(post = %r.post, target = %t.target, "post taken by another outreach process; it sends this delivery");
        } else {
            tracing::error!(post = %r.post, target = %t.target, state = %t.state, "post {}: {}", t.state, t.error.as_deref().unwrap_or(""));
        }
    }
}
