//! The daemon's watchers: the plugins folder, the posts folder, the config
//! file and the credential store, through `notify` with a short per-path
//! debounce (notify-debouncer-mini: a path is reported once it has been
//! quiet for `daemon.debounce_ms`).
//!
//! Owns: deciding what a change means — a plugin added, replaced or
//! removed; a post file to validate and queue (or publish if due); a config
//! to re-read; an account written by another process — and reporting what
//! could not be used.
//!
//! Never: loads a plugin file that is still being written (a failed load of
//! a file that changes again shortly after is not reported; the next quiet
//! moment retries), or lets a bad file replace what is serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::{DebouncedEventKind, new_debouncer};

use super::Daemon;
use crate::store::AccountId;

/// The watchers; dropping this stops them.
pub struct Watchers {
    _debouncer: notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>,
}

/// What one watched path belongs to.
#[derive(Clone)]
struct Roots {
    plugins: PathBuf,
    posts: Option<PathBuf>,
    config: Option<PathBuf>,
    store: PathBuf,
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
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
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut debouncer = new_debouncer(
        Duration::from_millis(cfg.config.daemon.debounce_ms),
        move |events: notify_debouncer_mini::DebounceEventResult| match events {
            Ok(events) => {
                for e in events {
                    // `AnyContinuous`: still being written; wait for quiet.
                    if e.kind == DebouncedEventKind::Any {
                        let _ = tx.send(e.path);
                    }
                }
            }
            Err(e) => tracing::error!("file watcher error: {e}"),
        },
    )?;
    let w = debouncer.watcher();
    w.watch(&roots.plugins, RecursiveMode::NonRecursive)?;
    if let Some(posts) = &roots.posts {
        w.watch(posts, RecursiveMode::NonRecursive)?;
    }
    if let Some(parent) = roots.config.as_ref().and_then(|c| c.parent()) {
        // The folder, not the file: editors replace files by renaming.
        w.watch(parent, RecursiveMode::NonRecursive)?;
    }
    w.watch(&roots.store, RecursiveMode::Recursive)?;
    tracing::info!(plugins = %roots.plugins.display(), posts = ?roots.posts, "watching for changes");
    tokio::spawn(async move {
        while let Some(path) = rx.recv().await {
            if d.shutting_down() {
                break;
            }
            dispatch(&d, &roots, path).await;
        }
    });
    Ok(Watchers {
        _debouncer: debouncer,
    })
}

async fn dispatch(d: &Arc<Daemon>, roots: &Roots, path: PathBuf) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Temporary and hidden files (editors, `cp` to a dot-file then rename).
    if name.starts_with('.') || name.ends_with('~') {
        return;
    }
    let parent = path.parent().unwrap_or(Path::new(""));
    if Some(&path) == roots.config.as_ref() {
        reload_config(d, &path);
    } else if parent == roots.plugins && name.ends_with(".wasm") {
        plugin_changed(d, path).await;
    } else if roots.posts.as_deref() == Some(parent) && name.ends_with(".toml") {
        post_changed(d, path);
    } else if path.starts_with(&roots.store)
        && let Some(account) = name.strip_suffix(".age")
        && let Some(platform) = parent.file_name()
        && parent.parent() == Some(roots.store.as_path())
        && let Ok(id) = AccountId::new(&platform.to_string_lossy(), account)
    {
        let _ = d.accounts_changed.send(id);
    }
}

/// Size and modification time: a file still being copied changes these.
fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

async fn plugin_changed(d: &Arc<Daemon>, path: PathBuf) {
    if !path.exists() {
        d.clear_problem(&path);
        if let Some(id) = d.app.host.unload_path(&path) {
            tracing::warn!(platform = %id, "plugin removed; its accounts show `plugin missing` until it is back (credentials are kept)");
        }
        return;
    }
    let before = stamp(&path);
    match d.app.host.load_file(&path).await {
        Ok(p) => {
            d.clear_problem(&path);
            tracing::info!(platform = %p.manifest.id, version = %p.manifest.version, sha256 = %&p.sha256[..12], "plugin ready");
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
            if stamp(&path) != before {
                tracing::debug!(path = %path.display(), "plugin file still changing; waiting");
                return;
            }
            let serving = d
                .app
                .host
                .plugins()
                .into_iter()
                .find(|p| p.path == path)
                .map(|p| format!("; version {} keeps serving", p.manifest.version))
                .unwrap_or_default();
            tracing::error!("{e}{serving}");
            d.problem(&path, "plugin", format!("{e}{serving}"));
        }
    }
}

/// Validate and queue (or publish, if due) one post file.
fn post_changed(d: &Arc<Daemon>, path: PathBuf) {
    if !path.exists() {
        d.clear_problem(&path);
        tracing::info!(path = %path.display(), "post file removed; anything it queued stays queued (`outreach posts cancel ID` stops it)");
        return;
    }
    let d2 = d.clone();
    d.spawn(async move {
        let opts = crate::publish::Options::default();
        match crate::publish::publish_file(&d2.app, &path, opts).await {
            Ok(Ok(report)) => {
                d2.clear_problem(&path);
                if report.results.iter().all(|t| t.already) {
                    tracing::debug!(post = %report.post, "post file unchanged and already published");
                } else {
                    super::log_report(&report);
                }
                d2.wake_due();
            }
            Ok(Err(problems)) => {
                let msg = problems
                    .iter()
                    .map(|p| format!("{} {}: {}", p.target, p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(path = %path.display(), "post file not queued: {msg}");
                d2.problem(&path, "post", msg);
            }
            Err(e) => {
                tracing::error!(path = %path.display(), "post file not queued: {e:#}");
                d2.problem(&path, "post", format!("{e:#}"));
            }
        }
    });
}

/// Every post file already in the folder (at start).
pub fn scan_posts(d: &Arc<Daemon>) {
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
            post_changed(d, path);
        }
    }
}

fn reload_config(d: &Arc<Daemon>, path: &Path) {
    // Read it as it was named at start, so its relative paths resolve alike.
    let named = d
        .app
        .cfg()
        .file
        .clone()
        .unwrap_or_else(|| path.to_path_buf());
    match crate::config::Loaded::load(Some(&named)) {
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
