//! The daemon's watchers: the plugins folder, the posts folder, the config
//! file and the credential store, through `notify`, with a short per-path
//! debounce (a path is acted on once it has been quiet for
//! `daemon.debounce_ms`).
//!
//! Owns: deciding what a change means — a plugin added, replaced or
//! removed; a post file to validate and queue (or publish if due); a config
//! to re-read; an account written by another process — and reporting what
//! could not be used. Only events that can change a file count: writes
//! (and the close after one), creates, renames and removals. Reads, opens,
//! closes without writing and metadata changes are ignored, so `cat`, the
//! CLI, and the daemon's own reads of the files it watches cause nothing.
//! A file written with the content it had when it was last acted on is
//! left alone: no plugin load, no config re-apply, no post re-read, no log
//! line (`GET /metrics` counts both: `outreach_reloads_total` and
//! `outreach_reloads_unchanged_total`, by kind).
//!
//! Work on a path runs off the watcher's path, one at a time per path (a
//! change that arrives meanwhile is handled once the current work ends), so
//! a plugin that takes long to compile delays nothing else.
//!
//! A store other daemons write to (PostgreSQL) has no folder to watch: it
//! is polled instead ([`poll_store`]).
//!
//! Never: loads a plugin file that is still being written (a failed load of
//! a file that changes again shortly after is not reported; the next quiet
//! moment retries), lets a bad file replace what is serving, or opens a
//! watched path that is not a regular file (a FIFO named `*.wasm` or
//! `*.toml` is skipped with a warning).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::Daemon;
use crate::plugin::{Reload, read_regular};
use crate::store::AccountId;

/// The watchers; dropping this stops them.
pub struct Watchers {
    _watcher: notify::RecommendedWatcher,
    state: Arc<State>,
}

/// What one watched path belongs to.
#[derive(Clone)]
struct Roots {
    plugins: PathBuf,
    posts: Option<PathBuf>,
    config: Option<PathBuf>,
    store: PathBuf,
}

/// What a watched path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Config,
    Plugin,
    Post,
    Account,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Plugin => "plugin",
            Kind::Post => "post",
            Kind::Account => "account",
        }
    }
}

/// What the watcher remembers between events.
#[derive(Default)]
struct State {
    /// Paths with work running; `true`: changed again meanwhile.
    busy: Mutex<HashMap<PathBuf, bool>>,
    /// What each config or post file held when it was last acted on.
    seen: Mutex<HashMap<PathBuf, String>>,
}

impl State {
    /// Record what `path` holds now; `false` if it held that already.
    fn note(&self, path: &Path, what: &str) -> bool {
        let mut seen = self.seen.lock().expect("seen");
        if seen.get(path).is_some_and(|s| s == what) {
            return false;
        }
        seen.insert(path.to_path_buf(), what.to_string());
        true
    }

    fn forget(&self, path: &Path) {
        self.seen.lock().expect("seen").remove(path);
    }
}

/// Read `path` for its content's fingerprint, never blocking on a file
/// that is not a regular one: `Ok(sha256)`, or `Err` with what it is.
fn fingerprint(path: &Path) -> Result<String, String> {
    match read_regular(path) {
        Ok(bytes) => Ok(hex::encode(Sha256::digest(&bytes))),
        Err(e) => Err(e.to_string()),
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether an event may mean that a file's content changed: a write (or
/// the close after one), a create, a rename or a removal. Reads, opens,
/// closes without writing and metadata changes may not.
fn may_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        // Backends that cannot tell what happened.
        EventKind::Any => true,
        EventKind::Other => false,
    }
}

impl Roots {
    /// What `path` is to the daemon, if anything.
    fn kind(&self, path: &Path) -> Option<Kind> {
        let name = path.file_name()?.to_string_lossy();
        // Temporary and hidden files (editors, `cp` to a dot-file then rename).
        if name.starts_with('.') || name.ends_with('~') {
            return None;
        }
        let parent = path.parent()?;
        if Some(path) == self.config.as_deref() {
            Some(Kind::Config)
        } else if parent == self.plugins && name.ends_with(".wasm") {
            Some(Kind::Plugin)
        } else if self.posts.as_deref() == Some(parent) && name.ends_with(".toml") {
            Some(Kind::Post)
        } else if account_of(&self.store, path).is_some() {
            Some(Kind::Account)
        } else {
            None
        }
    }

    /// Every path worth looking at again after the watcher lost events.
    fn everything(&self, d: &Daemon) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = self.config.iter().cloned().collect();
        let mut dirs = vec![self.plugins.clone()];
        dirs.extend(self.posts.iter().cloned());
        for dir in dirs {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                all.extend(entries.flatten().map(|e| e.path()));
            }
        }
        // Loaded plugins whose file went away meanwhile.
        all.extend(d.app.host.plugins().iter().map(|p| p.path.clone()));
        if let Ok(platforms) = std::fs::read_dir(&self.store) {
            for platform in platforms.flatten() {
                if let Ok(records) = std::fs::read_dir(platform.path()) {
                    all.extend(records.flatten().map(|e| e.path()));
                }
            }
        }
        all
    }
}

/// The account whose record `path` is, if it is one.
fn account_of(store: &Path, path: &Path) -> Option<AccountId> {
    let account = path.file_name()?.to_str()?.strip_suffix(".age")?;
    let parent = path.parent()?;
    if parent.parent() != Some(store) {
        return None;
    }
    AccountId::new(&parent.file_name()?.to_string_lossy(), account).ok()
}

/// What the notify thread hands to the debouncer.
enum Seen {
    Changed(PathBuf, Kind),
    /// The backend lost events (its queue overflowed): look at everything.
    Rescan,
}

/// Start watching; events are handled on the daemon's runtime.
pub fn start(d: Arc<Daemon>) -> anyhow::Result<Watchers> {
    let cfg = d.app.cfg();
    for dir in [Some(&cfg.plugins_dir), cfg.posts_dir.as_ref()]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&cfg.store_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", cfg.store_dir.display()))?;
    let roots = Roots {
        plugins: canonical(&cfg.plugins_dir),
        posts: cfg.posts_dir.as_deref().map(canonical),
        config: cfg.file.as_deref().map(canonical),
        store: canonical(&cfg.store_dir),
    };
    let state = Arc::new(State::default());
    // The config as it was applied at start: writing it again unchanged
    // changes nothing.
    if let Some(config) = &roots.config
        && let Ok(sha) = fingerprint(config)
    {
        state.note(config, &sha);
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Seen>();
    let classify = roots.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                if event.need_rescan() {
                    let _ = tx.send(Seen::Rescan);
                    return;
                }
                let queued = may_change(&event.kind);
                tracing::trace!(?event, queued, "file event");
                crate::metrics::watch_event(queued);
                if !queued {
                    return;
                }
                for path in event.paths {
                    if let Some(kind) = classify.kind(&path) {
                        let _ = tx.send(Seen::Changed(path, kind));
                    }
                }
            }
            Err(e) => tracing::error!("file watcher error: {e}"),
        })?;
    watcher.watch(&roots.plugins, RecursiveMode::NonRecursive)?;
    if let Some(posts) = &roots.posts {
        watcher.watch(posts, RecursiveMode::NonRecursive)?;
    }
    if let Some(parent) = roots.config.as_ref().and_then(|c| c.parent()) {
        // The folder, not the file: editors replace files by renaming.
        watcher.watch(parent, RecursiveMode::NonRecursive)?;
    }
    watcher.watch(&roots.store, RecursiveMode::Recursive)?;
    let posts = match &roots.posts {
        Some(p) => p.display().to_string(),
        None => "none (paths.posts is not set)".into(),
    };
    tracing::info!(plugins = %roots.plugins.display(), posts = %posts, "watching for changes");
    let quiet = Duration::from_millis(cfg.config.daemon.debounce_ms);
    tokio::spawn(debounce(d, roots, state.clone(), rx, quiet));
    Ok(Watchers {
        _watcher: watcher,
        state,
    })
}

/// Hand each changed path to [`dispatch`] once it has been quiet for
/// `quiet` (a file being copied is written many times).
async fn debounce(
    d: Arc<Daemon>,
    roots: Roots,
    state: Arc<State>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Seen>,
    quiet: Duration,
) {
    let mut pending: HashMap<PathBuf, (Kind, Instant)> = HashMap::new();
    loop {
        let next = pending.values().map(|(_, at)| *at + quiet).min();
        tokio::select! {
            _ = d.shutdown.cancelled() => return,
            seen = rx.recv() => match seen {
                None => return,
                Some(Seen::Changed(path, kind)) => {
                    pending.insert(path, (kind, Instant::now()));
                }
                Some(Seen::Rescan) => {
                    tracing::warn!("the file watcher lost events; looking at every watched file again");
                    let now = Instant::now();
                    for path in roots.everything(&d) {
                        if let Some(kind) = roots.kind(&path) {
                            pending.insert(path, (kind, now));
                        }
                    }
                }
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                let due: Vec<PathBuf> = pending
                    .iter()
                    .filter(|(_, (_, at))| *at + quiet <= now)
                    .map(|(p, _)| p.clone())
                    .collect();
                for path in due {
                    if let Some((kind, _)) = pending.remove(&path) {
                        dispatch(&d, &state, path, kind);
                    }
                }
            }
        }
    }
}

fn dispatch(d: &Arc<Daemon>, state: &Arc<State>, path: PathBuf, kind: Kind) {
    if d.shutting_down() {
        return;
    }
    match kind {
        Kind::Account => {
            let id = path
                .parent()
                .and_then(|store| account_of(store.parent()?, &path));
            if let Some(id) = id {
                let _ = d.accounts_changed.send(id);
            }
        }
        _ => run_serially(d, state, path, kind),
    }
}

/// Run the work for `path` now, unless work for it is running: then once
/// more when that ends (however many changes arrived meanwhile).
fn run_serially(d: &Arc<Daemon>, state: &Arc<State>, path: PathBuf, kind: Kind) {
    {
        let mut busy = state.busy.lock().expect("busy");
        if let Some(again) = busy.get_mut(&path) {
            *again = true;
            return;
        }
        busy.insert(path.clone(), false);
    }
    let (d, state) = (d.clone(), state.clone());
    tokio::spawn(async move {
        loop {
            match kind {
                Kind::Config => reload_config(&d, &state, &path),
                Kind::Plugin => plugin_changed(&d, &path).await,
                Kind::Post => post_changed(&d, &state, path.clone()).await,
                Kind::Account => {}
            }
            let mut busy = state.busy.lock().expect("busy");
            if busy.get(&path) == Some(&true) && !d.shutting_down() {
                busy.insert(path.clone(), false);
                continue;
            }
            busy.remove(&path);
            break;
        }
    });
}

/// Size and modification time: a file still being copied changes these.
fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Whether `path` is gone (a symbolic link to nothing is still there).
fn gone(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

async fn plugin_changed(d: &Arc<Daemon>, path: &Path) {
    if gone(path) {
        d.clear_problem(path);
        crate::metrics::reload(Kind::Plugin.label());
        if let Some(id) = d.app.host.unload_path(path) {
            tracing::warn!(platform = %id, "plugin removed; its accounts show `plugin missing` until it is back (credentials are kept)");
        }
        return;
    }
    let before = stamp(path);
    let reload = d.app.host.reload(path).await;
    if !matches!(reload, Ok(Reload::Unchanged)) {
        crate::metrics::reload(Kind::Plugin.label());
    }
    match reload {
        Ok(Reload::Unchanged) => crate::metrics::reload_unchanged(Kind::Plugin.label()),
        Ok(Reload::Skipped(e)) => {
            let serving = serving(d, path);
            tracing::warn!("{e}{serving}");
            d.problem(path, "plugin", format!("{e}{serving}"));
        }
        Ok(Reload::Loaded(p)) => {
            d.clear_problem(path);
            tracing::info!(platform = %p.manifest.id, version = %p.manifest.version, sha256 = %&p.sha256[..12], "plugin ready");
            // The config may override an endpoint this version lacks.
            let cfg = d.app.cfg();
            let id = p.manifest.id.clone();
            let wrong =
                crate::plugin::manifest::override_problems(&cfg, |i| (i == id).then(|| p.clone()));
            if !wrong.is_empty() {
                let msg = format!(
                    "the config {} does not fit this plugin: {}; those overrides are not used",
                    cfg.file.as_deref().unwrap_or(Path::new("")).display(),
                    wrong.join("; ")
                );
                tracing::error!("{msg}");
                d.problem(path, "plugin", msg);
            }
            // Accounts that waited for this plugin get their refreshes
            // scheduled again.
            if let Ok(ids) = d.app.store().and_then(|s| Ok(s.list()?)) {
                for id in ids.into_iter().filter(|i| i.platform == p.manifest.id) {
                    let _ = d.accounts_changed.send(id);
                }
            }
        }
        Err(e) => {
            // Still being written? Another event follows; report nothing yet.
            tokio::time::sleep(Duration::from_millis(250)).await;
            if stamp(path) != before {
                tracing::debug!(path = %path.display(), "plugin file still changing; waiting");
                return;
            }
            let serving = serving(d, path);
            tracing::error!("{e}{serving}");
            d.problem(path, "plugin", format!("{e}{serving}"));
        }
    }
}

/// `; version V keeps serving` if a plugin loaded from `path` still serves.
fn serving(d: &Daemon, path: &Path) -> String {
    d.app
        .host
        .plugins()
        .into_iter()
        .find(|p| p.path == path)
        .map(|p| format!("; version {} keeps serving", p.manifest.version))
        .unwrap_or_default()
}

/// Validate and queue (or publish, if due) one post file, unless it holds
/// what it held when it was last queued.
async fn post_changed(d: &Arc<Daemon>, state: &Arc<State>, path: PathBuf) {
    if gone(&path) {
        state.forget(&path);
        d.clear_problem(&path);
        crate::metrics::reload(Kind::Post.label());
        tracing::info!(path = %path.display(), "post file removed; anything it queued stays queued (`outreach posts cancel ID` stops it)");
        return;
    }
    let sha = match fingerprint(&path) {
        Ok(sha) => sha,
        Err(why) => {
            // Not a regular file (a FIFO would block whoever opens it), or
            // unreadable: say so once per state of the file.
            if state.note(&path, &why) {
                crate::metrics::reload(Kind::Post.label());
                tracing::warn!(path = %path.display(), "post file skipped: it {why}");
                d.problem(&path, "post", format!("skipped: it {why}"));
            } else {
                crate::metrics::reload_unchanged(Kind::Post.label());
            }
            return;
        }
    };
    if !state.note(&path, &sha) {
        crate::metrics::reload_unchanged(Kind::Post.label());
        return;
    }
    crate::metrics::reload(Kind::Post.label());
    let d2 = d.clone();
    let file = path.clone();
    let Some(job) = d.spawn(async move {
        let opts = crate::publish::Options::default();
        crate::publish::publish_file(d2.app.services(), &file, opts).await
    }) else {
        state.forget(&path);
        return;
    };
    match job.await {
        Ok(Ok(Ok(report))) => {
            d.clear_problem(&path);
            if report.results.iter().all(|t| t.already) {
                tracing::debug!(post = %report.post, "post file unchanged and already published");
            } else {
                super::log_report(&report);
            }
            d.wake_due();
        }
        Ok(Ok(Err(problems))) => {
            let msg = problems
                .iter()
                .map(|p| format!("{} {}: {}", p.target, p.field, p.message))
                .collect::<Vec<_>>()
                .join("; ");
            tracing::error!(path = %path.display(), "post file not queued: {msg}");
            d.problem(&path, "post", msg);
        }
        Ok(Err(e)) => {
            // Perhaps not the file's fault (the store, the outbox): the next
            // write tries again, even with the same content.
            state.forget(&path);
            tracing::error!(path = %path.display(), "post file not queued: {e:#}");
            d.problem(&path, "post", format!("{e:#}"));
        }
        Err(e) => {
            state.forget(&path);
            tracing::error!(path = %path.display(), "post file not queued: {e}");
        }
    }
}

impl Watchers {
    /// Every post file already in the folder (at start).
    pub fn scan_posts(&self, d: &Arc<Daemon>) {
        let Some(dir) = d.app.cfg().posts_dir.clone() else {
            return;
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(canonical(&dir))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for path in files {
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden && path.extension().is_some_and(|e| e == "toml") {
                run_serially(d, &self.state, path, Kind::Post);
            }
        }
    }
}

fn reload_config(d: &Arc<Daemon>, state: &State, path: &Path) {
    let what = match fingerprint(path) {
        Ok(sha) => sha,
        Err(why) => why,
    };
    if !state.note(path, &what) {
        crate::metrics::reload_unchanged(Kind::Config.label());
        return;
    }
    crate::metrics::reload(Kind::Config.label());
    if let Some(what) = crate::plugin::file_kind(path).ok().flatten() {
        let msg = format!(
            "the config {} is {what}, not a regular file; the previous configuration stays in effect",
            path.display()
        );
        tracing::error!("{msg}");
        d.problem(path, "config", msg);
        return;
    }
    // Read it as it was named at start, so its relative paths resolve alike.
    let named = d
        .app
        .cfg()
        .file
        .clone()
        .unwrap_or_else(|| path.to_path_buf());
    let loaded = crate::config::Loaded::load(Some(&named)).and_then(|new| {
        crate::plugin::manifest::check_overrides(&new, &d.app.host)?;
        Ok(new)
    });
    match loaded {
        Ok(new) => {
            d.clear_problem(path);
            let restart = d.app.reload_config(new);
            tracing::info!(path = %path.display(), "config reloaded");
            if !restart.is_empty() {
                tracing::warn!(
                    "config changes to [{}] take effect after a restart",
                    restart.join(", ")
                );
            }
            d.wake_due();
        }
        Err(e) => {
            tracing::error!("{e}; the previous configuration stays in effect");
            d.problem(
                path,
                "config",
                format!("{e}; the previous configuration stays in effect"),
            );
        }
    }
}

/// How often a shared store is asked for accounts saved elsewhere.
const STORE_POLL: Duration = Duration::from_secs(5);
/// The key of the problem shown while a shared store does not answer.
const STORE_PROBLEM: &str = "[store]";
/// Every this many polls the whole list is read, to see removals.
const STORE_FULL_EVERY: u32 = 12;

/// For a store other processes write to ([`crate::store::CredentialStore::saved_since`]
/// answers): every few seconds, each account saved since the last look —
/// by another daemon, or a command — is handed to the scheduler, as the
/// folder watcher hands over a changed file; every minute the whole list
/// is read, so accounts removed elsewhere are handed over too. Returns at
/// once for the files backend. A database that cannot be reached is
/// reported once per outage, and polled again.
pub async fn poll_store(d: Arc<Daemon>) {
    let mut seen: HashMap<AccountId, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let mut round: u32 = 0;
    let mut failing = false;
    loop {
        if round > 0 {
            tokio::select! {
                _ = d.shutdown.cancelled() => return,
                _ = tokio::time::sleep(STORE_POLL) => {}
            }
        }
        let full = round.is_multiple_of(STORE_FULL_EVERY);
        // A transaction that commits late carries an earlier time: look
        // back a little, and hand over only what changed.
        let since = if full {
            None
        } else {
            seen.values()
                .max()
                .map(|t| *t - chrono::Duration::seconds(30))
        };
        let app = d.app.clone();
        let answer = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            Ok(app.store()?.saved_since(since)?)
        })
        .await;
        let rows = match answer {
            Ok(Ok(Some(rows))) => rows,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!("cannot ask the store for accounts saved elsewhere: {e:#}");
                }
                // Shown in /problems, /health and the dashboard until the
                // store answers again.
                d.problem(Path::new(STORE_PROBLEM), "store", format!("{e:#}"));
                failing = true;
                continue;
            }
            Err(e) => {
                tracing::error!("asking the store for accounts saved elsewhere panicked: {e}");
                continue;
            }
        };
        if failing {
            tracing::info!("the store answers again");
            d.clear_problem(Path::new(STORE_PROBLEM));
            failing = false;
        }
        let first = round == 0;
        round = round.wrapping_add(1);
        if full && !first {
            let present: std::collections::HashSet<&AccountId> =
                rows.iter().map(|r| &r.id).collect();
            let gone: Vec<AccountId> = seen
                .keys()
                .filter(|id| !present.contains(id))
                .cloned()
                .collect();
            for id in gone {
                seen.remove(&id);
                let _ = d.accounts_changed.send(id);
            }
        }
        for r in rows {
            // This daemon's own saves are not news to it.
            if seen.insert(r.id.clone(), r.at) != Some(r.at) && !first && !r.by_me {
                tracing::debug!(account = %r.id, "account saved elsewhere");
                let _ = d.accounts_changed.send(r.id);
            }
        }
    }
}
