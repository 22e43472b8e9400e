//! The plugin host: one wasmtime engine, every platform plugin loaded,
//! checked and sandboxed.
//!
//! Owns: loading `*.wasm` from the plugins folder (a component, or a core
//! module with embedded WIT which is wrapped into a component here), the
//! checks before first use — the file is a regular file (never opened if it
//! is a FIFO, a device or a folder; skipped with a warning), it parses
//! whole, and its contract version, imports (limited to what the host
//! grants, every refused one named) and exports are right, all before
//! anything is compiled; the manifest after — the on-disk compile cache
//! (keyed by the file's SHA-256 and the engine's compatibility hash),
//! knowing which content each file last had (a file written with the same
//! bytes is not loaded again), and every call into
//! a plugin: a fresh store per call from a pre-instantiated component on the
//! pooling allocator, with a memory cap, a wall-clock deadline (epoch
//! interruption plus a timeout around host calls) and a bounded number of
//! calls in flight.
//!
//! Never: gives a plugin WASI, a socket, a file, an environment variable or
//! a secret; compiles a file it can already tell it will refuse; blocks on
//! opening a file. The only imports granted are `outreach:platform/host` (HTTP
//! through [`crate::http::Broker`], logging, a clock) and the types
//! interface.

mod legacy;
pub mod manifest;
use legacy::Instance;
pub mod wasi;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, Trap};

use crate::config::{Limits, Loaded};
use crate::http::{Broker, Scope};

use crate::contract::v0_1;
use crate::contract::{bindings, wit};

use wit::types::{Account, CallError, Context, Manifest, Post, Problem, Profile, Receipt};

/// The contract versions this host implements, newest first.
pub const CONTRACTS: [&str; 2] = ["outreach:platform@0.2.0", "outreach:platform@0.1.0"];
/// The contract interfaces a plugin may import (besides WASI, see
/// [`wasi::granted`]).
pub const GRANTED_IMPORTS: [&str; 4] = [
    "outreach:platform/host@0.2.0",
    "outreach:platform/types@0.2.0",
    "outreach:platform/host@0.1.0",
    "outreach:platform/types@0.1.0",
];

/// The slowest upload a publish with media is given time for, in bytes a
/// second, on top of `limits.publish_timeout_ms` (256 KiB/s: a 2 GB video
/// gets over two hours).
const SLOWEST_UPLOAD_BYTES_PER_SEC: u64 = 256 << 10;

/// Epoch tick: the resolution of plugin deadlines.
const TICK: Duration = Duration::from_millis(5);

/// Why a plugin could not be loaded or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("plugin `{plugin}` {message}; outreach and the other plugins carry on")]
    Call { plugin: String, message: String },
    #[error("no plugin provides platform `{0}`; run `outreach plugins` to see what is loaded")]
    Unknown(String),
    /// A `*.wasm` that is not a regular file (a FIFO, a socket, a device, a
    /// folder, a symbolic link to nothing): skipped, never opened for reading.
    #[error("plugin {path}: is {what}, not a regular file; skipped")]
    NotAFile { path: PathBuf, what: &'static str },
}

/// The outcome of [`Host::reload`].
pub enum Reload {
    /// The file's content changed and it loaded.
    Loaded(Arc<LoadedPlugin>),
    /// The file has the content it had when it was last loaded, rejected
    /// or skipped: nothing was done.
    Unchanged,
    /// The file is no longer a regular file (see [`PluginError::NotAFile`]).
    Skipped(PluginError),
}

/// Why [`read_regular`] returned no bytes.
#[derive(Debug)]
pub enum ReadError {
    /// What the path is instead of a regular file.
    NotRegular(&'static str),
    /// Larger than [`MAX_PLUGIN_BYTES`] (its size, or at least that).
    TooLarge(u64),
    Io(std::io::Error),
}

/// The largest plugin file read: a Python component is about 40 MB, a
/// JavaScript one about 10 MB; anything far beyond is not a plugin, and
/// reading it would hold that much memory.
pub const MAX_PLUGIN_BYTES: u64 = 256 << 20;

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotRegular(what) => write!(f, "is {what}, not a regular file"),
            ReadError::TooLarge(n) => write!(
                f,
                "is {} MiB; plugins larger than {} MiB are not read (is it really a plugin?)",
                n >> 20,
                MAX_PLUGIN_BYTES >> 20
            ),
            ReadError::Io(e) => write!(f, "cannot be read: {e}"),
        }
    }
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// What a file type is, unless it is a regular file.
fn not_regular(t: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_dir() {
        Some("a folder")
    } else {
        Some("a special file")
    }
}

/// What `path` is if it is not a regular file, following symbolic links
/// and opening nothing. `Ok(None)`: a regular file (or a link to one).
pub fn file_kind(path: &Path) -> std::io::Result<Option<&'static str>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(not_regular(&m.file_type())),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            Ok(Some("a symbolic link to nothing"))
        }
        Err(e) => Err(e),
    }
}

/// Read a regular file (or what a symbolic link points to) without ever
/// blocking on the open: the type is checked before opening, the open is
/// non-blocking (a FIFO swapped in meanwhile opens at once) and the opened
/// file is checked again before it is read.
pub fn read_regular(path: &Path) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(what) = file_kind(path)? {
        return Err(ReadError::NotRegular(what));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    if let Some(what) = not_regular(&m.file_type()) {
        return Err(ReadError::NotRegular(what));
    }
    if m.len() > MAX_PLUGIN_BYTES {
        return Err(ReadError::TooLarge(m.len()));
    }
    let mut bytes = Vec::with_capacity(m.len() as usize);
    // A file that grows while it is read stops at the cap too.
    f.take(MAX_PLUGIN_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PLUGIN_BYTES {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads bytes `[offset, offset+len)` of media attachment `handle`.
pub type MediaReader = Arc<crate::http::MediaOpen>;

/// State of one call's store.
pub struct CallState {
    scope: Scope,
    broker: Broker,
    limiter: MemoryCap,
    deadline: Instant,
    media: MediaReader,
    wasi: wasi::Wasi,
}

/// Caps linear memory growth and remembers that it did.
struct MemoryCap {
    max: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl wit::types::Host for CallState {}

impl CallState {
    /// Send a request through the broker within the call's deadline.
    async fn send_now(
        &mut self,
        req: wit::host::Request,
    ) -> Result<wit::host::Response, wit::host::HttpError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let media = self.media.clone();
        let fut = self.broker.send(&self.scope, req, &*media);
        match tokio::time::timeout(left, fut).await {
            Ok(r) => r,
            Err(_) => Err(wit::host::HttpError::Timeout(
                "the call's deadline passed while the request was in flight".into(),
            )),
        }
    }

    fn log_line(&self, level: wit::host::Level, message: String) {
        let message: String = message.chars().take(2000).collect();
        let message = self.scope.uploads.redact(&message);
        let plugin = &self.scope.plugin;
        use wit::host::Level;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    async fn sleep(&mut self, millis: u64) {
        let left = self.deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(Duration::from_millis(millis).min(left)).await;
    }
}

fn now_millis() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

impl wit::host::Host for CallState {
    async fn send(
        &mut self,
        req: wit::host::Request,
    ) -> wasmtime::Result<Result<wit::host::Response, wit::host::HttpError>> {
        Ok(self.send_now(req).await)
    }

    async fn report_limit(
        &mut self,
        class: String,
        remaining: u32,
        reset_seconds: u64,
    ) -> wasmtime::Result<()> {
        self.broker
            .report_limit(&self.scope, &class, remaining, reset_seconds);
        Ok(())
    }

    async fn log(&mut self, level: wit::host::Level, message: String) -> wasmtime::Result<()> {
        self.log_line(level, message);
        Ok(())
    }

    async fn now_millis(&mut self) -> wasmtime::Result<u64> {
        Ok(now_millis())
    }

    async fn sleep_millis(&mut self, millis: u64) -> wasmtime::Result<()> {
        self.sleep(millis).await;
        Ok(())
    }

    async fn checkpoint(&mut self, state: String) -> wasmtime::Result<()> {
        let uploads = self.scope.uploads.clone();
        uploads.hide_state(&state);
        if let Some(c) = uploads.checkpoint.clone() {
            let saved = tokio::task::spawn_blocking(move || c.save(&state))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            if let Err(e) = saved {
                // The upload goes on; only a resume after a failure is lost.
                tracing::warn!(plugin = %self.scope.plugin, "could not keep the upload's checkpoint: {e}");
            }
        }
        Ok(())
    }

    async fn last_checkpoint(&mut self) -> wasmtime::Result<Option<String>> {
        let Some(c) = self.scope.uploads.checkpoint.clone() else {
            return Ok(None);
        };
        let state = tokio::task::spawn_blocking(move || c.load())
            .await
            .unwrap_or_default();
        if let Some(s) = &state {
            self.scope.uploads.hide_state(s);
        }
        Ok(state)
    }
}

/// A loaded, checked plugin.
pub struct LoadedPlugin {
    pub manifest: Manifest,
    pub path: PathBuf,
    pub sha256: String,
    /// Hosts the manifest declares, parsed once at load.
    pub declared: Vec<crate::http::AllowedHost>,
    /// The contract version it was built against (`0.2.0`, `0.1.0`).
    pub contract: &'static str,
    /// `None`: known from the manifest cache only (`outreach status`),
    /// never called.
    pre: Option<Pre>,
}

/// A plugin ready to instantiate, by contract version.
enum Pre {
    V2(bindings::PluginPre<CallState>),
    V1(v0_1::bindings::PluginPre<CallState>),
}

/// The engine, the linker and the loaded plugins.
pub struct Host {
    engine: Engine,
    linker: Linker<CallState>,
    limits: Limits,
    cache_dir: PathBuf,
    slots: Arc<Semaphore>,
    /// Loaded plugins by platform id. Swapped whole-entry on reload: a call
    /// holds its own `Arc`, so it finishes on the version it started with.
    plugins: RwLock<BTreeMap<String, Arc<LoadedPlugin>>>,
    /// Files that failed to load, with why (cleared when a file loads).
    rejected: RwLock<BTreeMap<PathBuf, String>>,
    /// The content each file had when it was last loaded, rejected or
    /// skipped (its SHA-256, or what it was instead of a regular file):
    /// [`Host::reload`] does nothing for a file that still has it.
    seen: std::sync::Mutex<BTreeMap<PathBuf, String>>,
    /// Built-in plugins that a folder plugin of the same id shadows, ready
    /// to serve again when that file goes.
    shadowed: RwLock<BTreeMap<String, Option<Arc<LoadedPlugin>>>>,
    pub broker: Broker,
}

/// The plugins built into this binary (`host/build.rs`): `(id, component)`.
mod builtin {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}

/// The `*.wasm` files in the plugins folder `dir`, in name order, each
/// spelled from the folder's canonical path (so the watcher's events match
/// loaded paths). A folder that does not exist has none: the built-in
/// platforms may be all there is.
fn plugin_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(dir = %dir.display(), "the plugins folder does not exist");
            Vec::new()
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "cannot read the plugins folder {}: {e}",
                dir.display()
            ));
        }
    };
    files.sort();
    Ok(files)
}

/// Where a built-in plugin says it comes from (no file: the binary).
pub const BUILT_IN: &str = "(built in)";

/// The ids of the plugins built into this binary (none when it was built
/// with `OUTREACH_SKIP_PLUGIN_BUILD`).
pub fn built_in_ids() -> Vec<&'static str> {
    builtin::BUNDLED.iter().map(|(id, _)| *id).collect()
}

impl LoadedPlugin {
    /// Whether this plugin is the one built into the binary.
    pub fn is_built_in(&self) -> bool {
        self.path.starts_with(BUILT_IN)
    }
}

impl Host {
    /// A host with no plugins yet.
    pub fn new(cfg: &Loaded) -> anyhow::Result<Self> {
        let limits = cfg.config.limits.clone();
        let mut wcfg = wasmtime::Config::new();
        wcfg.epoch_interruption(true);
        // Plugins are synchronous guests behind async host imports; the
        // component-model concurrency machinery only adds per-call cost
        // (about half of instantiate + call, measured in wasm-hosts.md).
        wcfg.concurrency_support(false);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        let slots = limits.max_concurrent_calls;
        pool.total_component_instances(slots)
            .total_core_instances(slots * 4)
            .total_memories(slots * 2)
            .total_tables(slots * 4)
            .total_stacks(slots)
            .max_memory_size((limits.memory_mib as usize) << 20)
            // Every call frees an instance. Resetting a plugin's small heap
            // with memset rather than madvise, and decommitting in batches,
            // saves syscalls and cross-core TLB shootdowns per call (about
            // 10% of a loopback publish in the foundation benchmark).
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(256 << 10)
            .decommit_batch_size(32);
        wcfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        wcfg.memory_reservation((limits.memory_mib << 20).max(1 << 20));
        wcfg.memory_guard_size(64 << 10);
        let engine = Engine::new(&wcfg)?;

        // One ticker per process; it stops when the engine is dropped.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("outreach-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })?;

        let mut linker = Linker::new(&engine);
        bindings::Plugin::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)?;
        v0_1::bindings::Plugin::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)?;
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        Ok(Host {
            broker: Broker::new(&limits, &cfg.config.http)?,
            engine,
            linker,
            slots: Arc::new(Semaphore::new(slots as usize)),
            limits,
            cache_dir: cfg.cache_dir.clone(),
            plugins: RwLock::new(BTreeMap::new()),
            rejected: RwLock::new(BTreeMap::new()),
            seen: Default::default(),
            shadowed: Default::default(),
        })
    }

    /// Load the plugins built into this binary — all, or those of `only` —
    /// except where a plugin from the folder already provides the id: the
    /// folder's shadows the built-in one (loaded first, see
    /// [`Host::load_dir`]).
    pub async fn load_built_in(&self, only: Option<&[String]>) {
        let wanted: Vec<&(&str, &[u8])> = builtin::BUNDLED
            .iter()
            .filter(|(id, _)| only.is_none_or(|o| o.iter().any(|w| w == id)))
            .collect();
        let prepared = futures::future::join_all(wanted.iter().map(|(id, bytes)| {
            let path = PathBuf::from(BUILT_IN).join(format!("{id}.wasm"));
            let sha = hex::encode(Sha256::digest(bytes));
            async move {
                (
                    *id,
                    path.clone(),
                    self.prepare(&path, bytes.to_vec(), sha).await,
                )
            }
        }))
        .await;
        for (id, path, r) in prepared {
            // Kept for when the folder's plugin goes.
            let served_by_folder = self
                .plugins
                .read()
                .expect("plugin table")
                .get(id)
                .is_some_and(|p| !p.is_built_in());
            match r {
                Ok(p) if served_by_folder => {
                    tracing::info!(
                        id,
                        "a plugin in the plugins folder shadows the built-in one"
                    );
                    self.shadowed
                        .write()
                        .expect("shadowed")
                        .insert(id.to_string(), Some(p));
                }
                r => {
                    if let Err(e) = self.register(&path, r) {
                        tracing::error!("{e}");
                    }
                }
            }
        }
    }

    /// Built-in plugins a folder plugin shadows, by id.
    pub fn shadowed_ids(&self) -> Vec<String> {
        self.shadowed
            .read()
            .expect("shadowed")
            .keys()
            .cloned()
            .collect()
    }

    /// Load every `*.wasm` in `dir`. A file that fails is recorded in
    /// `rejected` with the reason and the others still load; one that is
    /// not a regular file (a FIFO, a device, a folder) is skipped with a
    /// warning. Files are checked and compiled concurrently and registered
    /// in name order (so the first of two files claiming an id wins).
    pub async fn load_dir(&self, dir: &Path) -> anyhow::Result<()> {
        let files = plugin_files(dir)?;
        let prepared =
            futures::future::join_all(files.iter().map(|path| self.read_and_prepare(path))).await;
        for (path, r) in files.iter().zip(prepared) {
            let r = match r {
                Err(e @ PluginError::NotAFile { .. }) => {
                    tracing::warn!("{e}");
                    continue;
                }
                r => r,
            };
            if let Err(e) = self.register(path, r) {
                tracing::error!("{e}");
            }
        }
        Ok(())
    }

    /// Load, check and register one plugin file, replacing the version the
    /// same file provided before. Checks and compilation run on a blocking
    /// thread, off the async runtime. On failure the file is recorded in
    /// [`Host::rejected`] and whatever was serving before keeps serving; a
    /// file that is not a regular file is [`PluginError::NotAFile`] and
    /// changes nothing.
    pub async fn load_file(&self, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        match self.read_and_prepare(path).await {
            Err(e @ PluginError::NotAFile { .. }) => Err(e),
            r => self.register(path, r),
        }
    }

    /// [`Host::load_file`] if the file's content differs from what it was
    /// when it was last loaded, rejected or skipped; otherwise nothing at
    /// all (no compile, no log line). For the daemon's watcher, which sees
    /// a write with the same bytes as often as a real change.
    pub async fn reload(&self, path: &Path) -> Result<Reload, PluginError> {
        let (bytes, sha) = match self.read(path) {
            Ok(read) => read,
            Err(e @ PluginError::NotAFile { .. }) => {
                return Ok(match self.note_seen(path, &e.to_string()) {
                    true => Reload::Skipped(e),
                    false => Reload::Unchanged,
                });
            }
            Err(e) => {
                self.forget_seen(path);
                return self.register(path, Err(e)).map(Reload::Loaded);
            }
        };
        if !self.note_seen(path, &sha) {
            return Ok(Reload::Unchanged);
        }
        let r = self.prepare(path, bytes, sha).await;
        self.register(path, r).map(Reload::Loaded)
    }

    /// Record what `path` holds now; `false` if it held that already.
    fn note_seen(&self, path: &Path, what: &str) -> bool {
        let mut seen = self.seen.lock().expect("seen table");
        if seen.get(path).is_some_and(|s| s == what) {
            return false;
        }
        seen.insert(path.to_path_buf(), what.to_string());
        true
    }

    fn forget_seen(&self, path: &Path) {
        self.seen.lock().expect("seen table").remove(path);
    }

    /// Read a plugin file (never blocking on one that is not a regular
    /// file) and hash it.
    fn read(&self, path: &Path) -> Result<(Vec<u8>, String), PluginError> {
        match read_regular(path) {
            Ok(bytes) => {
                let sha = hex::encode(Sha256::digest(&bytes));
                Ok((bytes, sha))
            }
            Err(ReadError::NotRegular(what)) => Err(PluginError::NotAFile {
                path: path.to_path_buf(),
                what,
            }),
            Err(e) => Err(PluginError::Load {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        }
    }

    async fn read_and_prepare(&self, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let (bytes, sha) = match self.read(path) {
            Ok(read) => read,
            Err(e) => {
                match &e {
                    PluginError::NotAFile { .. } => _ = self.note_seen(path, &e.to_string()),
                    _ => self.forget_seen(path),
                }
                return Err(e);
            }
        };
        self.note_seen(path, &sha);
        self.prepare(path, bytes, sha).await
    }

    /// Make a prepared plugin the one `path` provides, or record why it
    /// cannot be.
    fn register(
        &self,
        path: &Path,
        r: Result<Arc<LoadedPlugin>, PluginError>,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let mut rejected = self.rejected.write().expect("rejected table");
        match r {
            Ok(plugin) => {
                rejected.remove(path);
                let mut plugins = self.plugins.write().expect("plugin table");
                // A folder plugin shadows the built-in one with its id; the
                // built-in one comes back if the file goes.
                if let Some(other) = plugins.get(&plugin.manifest.id)
                    && other.is_built_in()
                    && !plugin.is_built_in()
                {
                    tracing::info!(id = %plugin.manifest.id, path = %path.display(), "this plugin shadows the built-in one");
                    self.shadowed
                        .write()
                        .expect("shadowed")
                        .insert(plugin.manifest.id.clone(), Some(other.clone()));
                    plugins.remove(&plugin.manifest.id);
                }
                if let Some(other) = plugins.get(&plugin.manifest.id)
                    && other.path != path
                {
                    let e = PluginError::Load {
                        path: path.to_path_buf(),
                        message: format!(
                            "declares platform id `{}`, which {} already provides; ids must be unique",
                            plugin.manifest.id,
                            other.path.display()
                        ),
                    };
                    rejected.insert(path.to_path_buf(), e.to_string());
                    return Err(e);
                }
                // The same file may now declare another id: retire the old one.
                plugins.retain(|id, p| p.path != path || *id == plugin.manifest.id);
                plugins.insert(plugin.manifest.id.clone(), plugin.clone());
                crate::metrics::plugins_loaded(plugins.len());
                tracing::info!(id = %plugin.manifest.id, version = %plugin.manifest.version, contract = plugin.contract, path = %path.display(), "plugin loaded");
                Ok(plugin)
            }
            Err(e) => {
                rejected.insert(path.to_path_buf(), e.to_string());
                crate::metrics::plugin_rejected();
                Err(e)
            }
        }
    }

    /// Forget the plugin loaded from `path` (its file was deleted). Calls in
    /// flight finish; accounts of its platform show *plugin missing*.
    pub fn unload_path(&self, path: &Path) -> Option<String> {
        self.forget_seen(path);
        self.rejected.write().expect("rejected table").remove(path);
        let mut plugins = self.plugins.write().expect("plugin table");
        let id = plugins
            .iter()
            .find(|(_, p)| p.path == path)
            .map(|(id, _)| id.clone())?;
        plugins.remove(&id);
        // The built-in plugin it shadowed serves again.
        if let Some(Some(builtin)) = self.shadowed.write().expect("shadowed").remove(&id) {
            tracing::info!(id = %id, "the built-in plugin serves again");
            plugins.insert(id.clone(), builtin);
        }
        crate::metrics::plugins_loaded(plugins.len());
        tracing::info!(id = %id, path = %path.display(), "plugin unloaded (its file was removed)");
        Some(id)
    }

    /// Check, compile, link and describe one file's bytes without
    /// registering it. Everything that can be told from the bytes (a
    /// truncated file, refused imports, missing exports, another contract
    /// version) is checked before compiling.
    async fn prepare(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        sha256: String,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let fail = |message: String| PluginError::Load {
            path: path.to_path_buf(),
            message,
        };
        crate::metrics::plugin_load();
        let (engine, cache_dir) = (self.engine.clone(), self.cache_dir.clone());
        let key = sha256.clone();
        let component =
            tokio::task::spawn_blocking(move || compile(&engine, &cache_dir, &bytes, &key))
                .await
                .map_err(|e| fail(format!("could not be compiled: {e}")))?
                .map_err(&fail)?;
        check_imports(&self.engine, &component).map_err(&fail)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| fail(format!("cannot be linked: {e:#}")))?;
        // The newest contract whose exports it has, with their types.
        let (pre, contract) = match bindings::PluginPre::new(pre.clone()) {
            Ok(p) => (Pre::V2(p), "0.2.0"),
            Err(e2) => match v0_1::bindings::PluginPre::new(pre) {
                Ok(p) => (Pre::V1(p), "0.1.0"),
                Err(_) => {
                    return Err(fail(format!(
                        "does not export the {} `plugin` world: {e2:#}",
                        CONTRACTS[0]
                    )));
                }
            },
        };
        let mut plugin = LoadedPlugin {
            manifest: placeholder_manifest(),
            path: path.to_path_buf(),
            sha256,
            declared: Vec::new(),
            contract,
            pre: Some(pre),
        };
        let manifest = self
            .describe(&plugin)
            .await
            .map_err(|e| fail(e.to_string()))?;
        manifest::check(&manifest).map_err(|m| fail(format!("has an invalid manifest: {m}")))?;
        plugin.declared = manifest::declared_hosts(&manifest);
        self.remember_id(&plugin.sha256, &manifest.id);
        self.remember_manifest(&plugin.sha256, contract, &manifest);
        plugin.manifest = manifest;
        Ok(Arc::new(plugin))
    }

    /// Where the platform id of each plugin file this host has described
    /// is kept, by the file's SHA-256, beside the compiled code: a command
    /// that needs one platform loads only the files that provide it.
    fn id_file(&self, sha256: &str) -> PathBuf {
        self.cache_dir.join("ids").join(sha256)
    }

    fn remember_id(&self, sha256: &str, id: &str) {
        let path = self.id_file(sha256);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(id) {
            return;
        }
        let saved = std::fs::create_dir_all(path.parent().expect("a parent"))
            .and_then(|()| crate::store::write_atomic(&path, id.as_bytes()));
        if let Err(e) = saved {
            tracing::debug!("could not cache a plugin's id: {e}");
        }
    }

    /// Where the manifest each described file declared is kept, by the
    /// file's SHA-256, for commands that only read manifests.
    fn manifest_file(&self, sha256: &str) -> PathBuf {
        self.cache_dir
            .join("manifests")
            .join(format!("{sha256}.json"))
    }

    fn remember_manifest(&self, sha256: &str, contract: &'static str, m: &Manifest) {
        let path = self.manifest_file(sha256);
        let Ok(json) =
            serde_json::to_vec(&serde_json::json!({ "contract": contract, "manifest": m }))
        else {
            return;
        };
        if std::fs::read(&path).ok().as_deref() == Some(json.as_slice()) {
            return;
        }
        let saved = std::fs::create_dir_all(path.parent().expect("a parent"))
            .and_then(|()| crate::store::write_atomic(&path, &json));
        if let Err(e) = saved {
            tracing::debug!("could not cache a plugin's manifest: {e}");
        }
    }

    /// The plugin at `path` with these bytes, from the manifest cache: a
    /// plugin that can be listed and whose rules can be read, never
    /// called. `None` when the cache has no valid entry for it.
    fn cached_manifest(&self, path: &Path, sha256: &str) -> Option<Arc<LoadedPlugin>> {
        #[derive(serde::Deserialize)]
        struct Entry {
            contract: String,
            manifest: Manifest,
        }
        let bytes = std::fs::read(self.manifest_file(sha256)).ok()?;
        let e: Entry = serde_json::from_slice(&bytes).ok()?;
        let contract = CONTRACTS
            .iter()
            .map(|c| c.trim_start_matches("outreach:platform@"))
            .find(|c| *c == e.contract)
            .map(|c| if c == "0.1.0" { "0.1.0" } else { "0.2.0" })?;
        manifest::check(&e.manifest).ok()?;
        Some(Arc::new(LoadedPlugin {
            declared: manifest::declared_hosts(&e.manifest),
            manifest: e.manifest,
            path: path.to_path_buf(),
            sha256: sha256.to_string(),
            contract,
            pre: None,
        }))
    }

    /// [`Host::load_only`] for commands that only read manifests (`outreach
    /// status`): each plugin whose manifest is in the cache beside the
    /// compiled code is taken from there without being instantiated; the
    /// others are loaded (and cached for next time).
    pub async fn load_manifests(
        &self,
        dir: &Path,
        built_in: bool,
        ids: &[String],
    ) -> anyhow::Result<()> {
        let mut rest = Vec::new();
        for path in plugin_files(dir)? {
            let Ok((_, sha)) = self.read(&path) else {
                continue;
            };
            match self.cached_manifest(&path, &sha) {
                Some(p) if ids.contains(&p.manifest.id) => {
                    tracing::debug!(id = %p.manifest.id, path = %path.display(), "plugin read from the manifest cache");
                    let _ = self.register(&path, Ok(p));
                }
                Some(_) => {}
                None => rest.push(path),
            }
        }
        // Not in the cache (new, changed, or the cache was cleared): loaded
        // as `load_only` would, which caches them.
        let prepared =
            futures::future::join_all(rest.iter().map(|path| self.read_and_prepare(path))).await;
        for (path, r) in rest.iter().zip(prepared) {
            match r {
                Ok(p) if !ids.contains(&p.manifest.id) => {}
                Err(e @ PluginError::NotAFile { .. }) => tracing::warn!("{e}"),
                r => {
                    if let Err(e) = self.register(path, r) {
                        tracing::error!("{e}");
                    }
                }
            }
        }
        if built_in {
            for (id, bytes) in builtin::BUNDLED {
                let have = self.plugins.read().expect("plugin table").contains_key(*id);
                if have || !ids.iter().any(|w| w == id) {
                    continue;
                }
                let path = PathBuf::from(BUILT_IN).join(format!("{id}.wasm"));
                let sha = hex::encode(Sha256::digest(bytes));
                match self.cached_manifest(&path, &sha) {
                    Some(p) => {
                        tracing::debug!(id = %p.manifest.id, "built-in plugin read from the manifest cache");
                        let _ = self.register(&path, Ok(p));
                    }
                    None => self.load_built_in(Some(&[id.to_string()])).await,
                }
            }
        }
        Ok(())
    }

    /// The platform id the file with this hash declared when it was last
    /// described, if this host remembers it.
    fn known_id(&self, sha256: &str) -> Option<String> {
        std::fs::read_to_string(self.id_file(sha256))
            .ok()
            .filter(|id| !id.is_empty() && id.len() <= 64)
    }

    /// Every platform id this host could serve without loading anything
    /// more: the loaded plugins', the built-in ones (when `built_in`), and
    /// those remembered for the files in `dir`. For messages that tell a
    /// typo from a platform a command did not need.
    pub fn known_ids(&self, dir: &Path, built_in: bool) -> Vec<String> {
        let mut ids: Vec<String> = self
            .plugins
            .read()
            .expect("plugin table")
            .keys()
            .cloned()
            .collect();
        if built_in {
            ids.extend(built_in_ids().into_iter().map(str::to_string));
        }
        for path in plugin_files(dir).unwrap_or_default() {
            if let Ok((_, sha)) = self.read(&path)
                && let Some(id) = self.known_id(&sha)
            {
                ids.push(id);
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// Load only the plugins of the platforms `ids` — from the folder
    /// (files whose id this host remembers for their content are skipped
    /// when it is not wanted; a file it does not know is described once),
    /// then the built-in ones the folder does not provide (when
    /// `built_in`). For commands that work on a few platforms; the daemon
    /// loads everything ([`Host::load_dir`], [`Host::load_built_in`]).
    pub async fn load_only(
        &self,
        dir: &Path,
        built_in: bool,
        ids: &[String],
    ) -> anyhow::Result<()> {
        let files = plugin_files(dir)?;
        let mut wanted = Vec::new();
        for path in files {
            let Ok((bytes, sha)) = self.read(&path) else {
                // Not readable or not a file: loading it reports why.
                wanted.push((path, None));
                continue;
            };
            match self.known_id(&sha) {
                Some(id) if !ids.contains(&id) => {}
                _ => wanted.push((path, Some((bytes, sha)))),
            }
        }
        let prepared = futures::future::join_all(wanted.iter().map(|(path, read)| async move {
            match read {
                Some((bytes, sha)) => self.prepare(path, bytes.clone(), sha.clone()).await,
                None => self.read_and_prepare(path).await,
            }
        }))
        .await;
        for ((path, _), r) in wanted.iter().zip(prepared) {
            match r {
                Err(e @ PluginError::NotAFile { .. }) => tracing::warn!("{e}"),
                // Described only to learn its id: not one of these.
                Ok(p) if !ids.contains(&p.manifest.id) => {}
                r => {
                    if let Err(e) = self.register(path, r) {
                        tracing::error!("{e}");
                    }
                }
            }
        }
        if built_in {
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !self.plugins.read().expect("plugin table").contains_key(*id))
                .cloned()
                .collect();
            if !missing.is_empty() {
                self.load_built_in(Some(&missing)).await;
            }
        }
        Ok(())
    }

    /// Check a plugin file as loading would — read, shape, imports,
    /// exports, compile, link, describe, manifest — without registering it
    /// or touching the plugins folder.
    pub async fn inspect(&self, path: &Path) -> Inspection {
        let mut out = Inspection {
            path: path.display().to_string(),
            shape: None,
            imports: Vec::new(),
            exports: Vec::new(),
            contract: None,
            manifest: None,
            refused: None,
        };
        let (bytes, sha) = match self.read(path) {
            Ok(read) => read,
            Err(e) => {
                out.refused = Some(e.to_string());
                return out;
            }
        };
        let names = match shape(&bytes) {
            Ok(Shape::Component) => {
                out.shape = Some("component".into());
                component_names(&bytes)
            }
            Ok(Shape::CoreModule) => {
                out.shape = Some("core module".into());
                wit_component::ComponentEncoder::default()
                    .module(&bytes)
                    .and_then(|e| e.validate(true).encode())
                    .map_err(|e| format!("cannot be made into a component: {e:#}"))
                    .and_then(|c| component_names(&c))
            }
            Err(e) => Err(e),
        };
        match names {
            Ok((imports, exports)) => {
                out.imports = imports;
                out.exports = exports;
            }
            Err(e) => {
                out.refused = Some(e);
                return out;
            }
        }
        match self.prepare(path, bytes, sha).await {
            Ok(p) => {
                out.contract = Some(p.contract.to_string());
                out.manifest = Some(manifest::wit_style(&p.manifest));
            }
            Err(e) => out.refused = Some(e.to_string()),
        }
        out
    }

    pub fn get(&self, id: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        self.plugins
            .read()
            .expect("plugin table")
            .get(id)
            .cloned()
            .ok_or_else(|| PluginError::Unknown(id.to_string()))
    }

    /// The loaded plugins, by id.
    pub fn plugins(&self) -> Vec<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .expect("plugin table")
            .values()
            .cloned()
            .collect()
    }

    /// Files that failed to load, with why.
    pub fn rejected(&self) -> Vec<(PathBuf, String)> {
        self.rejected
            .read()
            .expect("rejected table")
            .iter()
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect()
    }

    /// A fresh store and instance for one call.
    async fn instance(
        &self,
        plugin: &LoadedPlugin,
        scope: Scope,
        budget: Duration,
    ) -> Result<
        (
            Store<CallState>,
            Instance,
            tokio::sync::OwnedSemaphorePermit,
        ),
        PluginError,
    > {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the call semaphore is never closed");
        let state = CallState {
            scope,
            broker: self.broker.clone(),
            limiter: MemoryCap {
                max: (self.limits.memory_mib as usize) << 20,
                hit: false,
            },
            deadline: Instant::now() + budget,
            media: no_media(),
            wasi: wasi::Wasi::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = (budget.as_millis() / TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let Some(pre) = &plugin.pre else {
            return Err(PluginError::Call {
                plugin: plugin.manifest.id.clone(),
                message: "was read from the manifest cache only and cannot be called".into(),
            });
        };
        let inst = match pre {
            Pre::V2(pre) => pre.instantiate_async(&mut store).await.map(Instance::V2),
            Pre::V1(pre) => pre.instantiate_async(&mut store).await.map(Instance::V1),
        }
        .map_err(|e| call_error(&plugin.manifest.id, &store, e, budget))?;
        Ok((store, inst, permit))
    }

    async fn describe(&self, plugin: &LoadedPlugin) -> Result<Manifest, PluginError> {
        let budget = Duration::from_millis(self.limits.call_timeout_ms);
        let scope = Scope {
            plugin: plugin
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            account: None,
            allow: Arc::new(Vec::new()),
            credentials: None,
            placement: Arc::new(Vec::new()),
            settings: Arc::new(Vec::new()),
            rate_limits: Arc::new(Vec::new()),
            rate_headers: None,
            dry_run: None,
            dispatched: Default::default(),
            taint: Default::default(),
            pinned: None,
            jar: Default::default(),
            user_agent: None,
            uploads: Default::default(),
        };
        let id = scope.plugin.clone();
        let start = Instant::now();
        let (mut store, inst, _permit) = self.instance(plugin, scope, budget).await?;
        let r = tokio::time::timeout(budget, inst.describe(&mut store)).await;
        observe(&id, "describe", start);
        finish(&id, &store, r, budget)
    }

    /// Run the plugin's `validate`.
    pub async fn validate(
        &self,
        plugin: &LoadedPlugin,
        post: &Post,
        account: Option<&Account>,
    ) -> Result<Vec<Problem>, PluginError> {
        let budget = Duration::from_millis(self.limits.call_timeout_ms);
        let scope = self.scope(plugin, None, None, None);
        let start = Instant::now();
        let (mut store, inst, _permit) = self.instance(plugin, scope, budget).await?;
        let r = tokio::time::timeout(budget, inst.validate(&mut store, post, account)).await;
        observe(&plugin.manifest.id, "validate", start);
        finish(&plugin.manifest.id, &store, r, budget)
    }

    /// Run the plugin's `publish` for one account.
    pub async fn publish(
        &self,
        plugin: &LoadedPlugin,
        scope: Scope,
        ctx: &Context,
        post: &Post,
    ) -> Result<Result<Receipt, CallError>, PluginError> {
        self.publish_inner(plugin, scope, ctx, post, no_media(), Duration::ZERO)
            .await
    }

    async fn publish_inner(
        &self,
        plugin: &LoadedPlugin,
        scope: Scope,
        ctx: &Context,
        post: &Post,
        media: MediaReader,
        extra: Duration,
    ) -> Result<Result<Receipt, CallError>, PluginError> {
        let budget = Duration::from_millis(self.limits.publish_timeout_ms) + extra;
        let start = Instant::now();
        taint_with_post(&scope.taint, ctx, post);
        let (mut store, inst, _permit) = self.instance(plugin, scope, budget).await?;
        store.data_mut().media = media;
        let r = tokio::time::timeout(budget, inst.publish(&mut store, ctx, post)).await;
        observe(&plugin.manifest.id, "publish", start);
        let out = finish(&plugin.manifest.id, &store, r, budget)?;
        if let Ok(receipt) = &out {
            well_formed(&plugin.manifest.id, receipt)?;
        }
        Ok(out)
    }

    /// `publish`, with the post's media files readable by the plugin's
    /// upload requests (by handle, in bounded slices).
    pub async fn publish_with_media(
        &self,
        plugin: &LoadedPlugin,
        scope: Scope,
        ctx: &Context,
        post: &Post,
        files: Arc<Vec<PathBuf>>,
    ) -> Result<Result<Receipt, CallError>, PluginError> {
        let reader: MediaReader = Arc::new(move |handle| {
            let path = files
                .get(handle as usize)
                .ok_or_else(|| format!("there is no media attachment {handle}"))?;
            // The path was checked and resolved when the post was read; a
            // link or special file put in its place since is refused
            // before it is opened.
            let meta =
                std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            if !meta.file_type().is_file() {
                return Err(format!(
                    "{} is no longer a regular file; nothing was read",
                    path.display()
                ));
            }
            std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))
        });
        // Uploads take time with their size: a 2 GB video is not cut at
        // the budget meant for a text post.
        let bytes: u64 = post.media.iter().map(|m| m.size).sum();
        let extra = Duration::from_secs(bytes / SLOWEST_UPLOAD_BYTES_PER_SEC);
        self.publish_inner(plugin, scope, ctx, post, reader, extra)
            .await
    }

    /// Run the plugin's `profile` for one account.
    pub async fn profile(
        &self,
        plugin: &LoadedPlugin,
        scope: Scope,
        ctx: &Context,
    ) -> Result<Result<Profile, CallError>, PluginError> {
        let budget = Duration::from_millis(self.limits.publish_timeout_ms);
        let start = Instant::now();
        let (mut store, inst, _permit) = self.instance(plugin, scope, budget).await?;
        let r = tokio::time::timeout(budget, inst.profile(&mut store, ctx)).await;
        observe(&plugin.manifest.id, "profile", start);
        finish(&plugin.manifest.id, &store, r, budget)
    }

    /// Run the plugin's `find-post`: whether `post` already exists on the
    /// platform (`None` when the plugin cannot tell).
    pub async fn find_post(
        &self,
        plugin: &LoadedPlugin,
        scope: Scope,
        ctx: &Context,
        post: &Post,
    ) -> Result<Result<Option<Receipt>, CallError>, PluginError> {
        let budget = Duration::from_millis(self.limits.publish_timeout_ms);
        let start = Instant::now();
        taint_with_post(&scope.taint, ctx, post);
        let (mut store, inst, _permit) = self.instance(plugin, scope, budget).await?;
        let r = tokio::time::timeout(budget, inst.find_post(&mut store, ctx, post)).await;
        observe(&plugin.manifest.id, "find-post", start);
        let out = finish(&plugin.manifest.id, &store, r, budget)?;
        if let Ok(Some(receipt)) = &out {
            well_formed(&plugin.manifest.id, receipt)?;
        }
        Ok(out)
    }

    /// Run the plugin's `list-identities`: the pages or organizations the
    /// grant in `scope` can act as.
    pub async fn list_identities(
        &self,
        plugin: &LoadedPlugin,
        scope: Scope,
        ctx: &Context,
    ) -> Result<Result<Vec<wit::types::Identity>, CallError>, PluginError> {
        let budget = Duration::from_millis(self.limits.publish_timeout_ms);
        let start = Instant::now();
        let (mut store, inst, _permit) = self.instance(plugin, scope, budget).await?;
        let r = tokio::time::timeout(budget, inst.list_identities(&mut store, ctx)).await;
        observe(&plugin.manifest.id, "list-identities", start);
        finish(&plugin.manifest.id, &store, r, budget)
    }

    /// Run the plugin's `check-receipt`: where a pending post stands now.
    pub async fn check_receipt(
        &self,
        plugin: &LoadedPlugin,
        scope: Scope,
        ctx: &Context,
        receipt: &Receipt,
    ) -> Result<Result<Receipt, CallError>, PluginError> {
        let budget = Duration::from_millis(self.limits.publish_timeout_ms);
        let start = Instant::now();
        let (mut store, inst, _permit) = self.instance(plugin, scope, budget).await?;
        let r = tokio::time::timeout(budget, inst.check_receipt(&mut store, ctx, receipt)).await;
        observe(&plugin.manifest.id, "check-receipt", start);
        let out = finish(&plugin.manifest.id, &store, r, budget)?;
        if let Ok(receipt) = &out {
            well_formed(&plugin.manifest.id, receipt)?;
        }
        Ok(out)
    }

    /// The network scope of a call: the plugin's allow-list (manifest hosts
    /// and endpoints, config overrides, the account's host settings), the
    /// account's credentials, and its rate limits.
    pub fn scope(
        &self,
        plugin: &LoadedPlugin,
        endpoints: Option<&[wit::types::Endpoint]>,
        account: Option<&Account>,
        credentials: Option<Arc<crate::http::Credentials>>,
    ) -> Scope {
        let m = &plugin.manifest;
        let mut allow = plugin.declared.clone();
        if let Some(eps) = endpoints {
            for e in eps {
                if let Ok(u) = url::Url::parse(&e.url)
                    && let Some(a) = crate::http::AllowedHost::from_url(&u)
                    && !allow.contains(&a)
                {
                    allow.push(a);
                }
            }
        }
        Scope {
            plugin: m.id.clone(),
            account: account.map(|a| a.name.clone()),
            allow: Arc::new(allow),
            credentials,
            placement: Arc::new(m.auth.placement.clone()),
            settings: Arc::new(account.map(|a| a.settings.clone()).unwrap_or_default()),
            rate_limits: Arc::new(m.rate_limits.clone()),
            rate_headers: m.rate_limit_headers.clone(),
            dry_run: None,
            dispatched: Default::default(),
            taint: Default::default(),
            pinned: None,
            jar: Default::default(),
            user_agent: None,
            uploads: Default::default(),
        }
    }
}

/// Mark every placeholder-like text a publish call is given, so that the
/// broker never fills a credential into it (see `http::Taint`).
fn taint_with_post(taint: &crate::http::Taint, ctx: &Context, post: &Post) {
    let mark = |s: &str| taint.mark(s);
    mark(&post.text);
    for s in [&post.title, &post.link, &post.reply_to, &post.thread_root]
        .into_iter()
        .flatten()
    {
        mark(s);
    }
    for p in &post.extra {
        mark(&p.name);
        mark(&p.value);
    }
    for m in &post.media {
        mark(&m.file_name);
        for s in [&m.alt_text, &m.public_url].into_iter().flatten() {
            mark(s);
        }
    }
    for p in &ctx.account.settings {
        mark(&p.value);
    }
}

/// The functions the `plugin` world exports.
const EXPORTS: [&str; 5] = ["describe", "validate", "publish", "profile", "find-post"];

/// What a plugin file holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Component,
    CoreModule,
}

/// Tell a component from a core module and walk every section of it
/// (nested modules and components included), so that a truncated or
/// garbled file is refused in one line before any tool that might choke on
/// it sees it.
fn shape(bytes: &[u8]) -> Result<Shape, String> {
    if bytes.is_empty() {
        return Err("is empty (0 bytes); rebuild it or remove it from the plugins folder".into());
    }
    let shape = if wasmparser::Parser::is_component(bytes) {
        Shape::Component
    } else if wasmparser::Parser::is_core_wasm(bytes) {
        Shape::CoreModule
    } else {
        return Err("is not a WebAssembly file (bad magic number); rebuild it or remove it from the plugins folder".into());
    };
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let Err(e) = payload {
            let what = match shape {
                Shape::Component => "component",
                Shape::CoreModule => "module",
            };
            let truncated = e.message().contains("end-of-file") || e.offset() >= bytes.len();
            return Err(format!(
                "is not a well-formed WebAssembly {what} ({} at byte {} of {}){}; rebuild it",
                e.message(),
                e.offset(),
                bytes.len(),
                if truncated {
                    ": it looks truncated"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(shape)
}

/// Refuse a component, from its bytes alone, whose top-level imports
/// exceed what the host grants (naming every refused one), that was built
/// against another contract version, or that lacks the world's exports.
fn check_component(bytes: &[u8]) -> Result<(), String> {
    let (imports, exports) = component_names(bytes)?;
    let refused = refused_imports(imports.iter().map(String::as_str));
    let missing: Vec<String> = EXPORTS
        .iter()
        .filter(|e| !exports.iter().any(|x| x == *e))
        .map(|e| format!("`{e}`"))
        .collect();
    let mut problems = refused.into_iter().collect::<Vec<_>>();
    if !missing.is_empty() {
        problems.push(format!(
            "does not export the {} `plugin` world (no {} function)",
            CONTRACTS[0],
            list(&missing, "or")
        ));
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems.join("; ")),
    }
}

/// The top-level imports that ask something of the host and the exported
/// functions of a component, from its bytes.
fn component_names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    use wasmparser::{ComponentExternalKind, ComponentTypeRef, Payload};
    let malformed =
        |e: wasmparser::BinaryReaderError| format!("is not a well-formed component: {e}");
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(r) if depth == 0 => {
                for import in r {
                    let import = import.map_err(malformed)?;
                    // A type import equal to a known type (the contract's
                    // records, as wit-component encodes them) asks nothing
                    // of the host; anything else does.
                    if !matches!(
                        import.ty,
                        ComponentTypeRef::Type(wasmparser::TypeBounds::Eq(_))
                    ) {
                        imports.push(import.name.name.to_string());
                    }
                }
            }
            Payload::ComponentExportSection(r) if depth == 0 => {
                for export in r {
                    let export = export.map_err(malformed)?;
                    if export.kind == ComponentExternalKind::Func {
                        exports.push(export.name.name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// What `outreach plugins check FILE` reports about a plugin file, without
/// installing it.
#[derive(Debug, serde::Serialize)]
pub struct Inspection {
    pub path: String,
    /// `component`, or `core module` (wrapped into a component on load).
    pub shape: Option<String>,
    /// What it imports (WASI interfaces and the contract's).
    pub imports: Vec<String>,
    /// The functions it exports.
    pub exports: Vec<String>,
    /// The contract version it was built against, once it loaded.
    pub contract: Option<String>,
    /// Its manifest, in WIT spelling, once it loaded.
    pub manifest: Option<serde_json::Value>,
    /// Why the host would refuse it; `None` if it would load.
    pub refused: Option<String>,
}

/// Why imports `names` are refused (every one of them), if any is.
fn refused_imports<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let (mut other_contract, mut refused) = (Vec::new(), Vec::new());
    for name in names {
        if GRANTED_IMPORTS.contains(&name) || wasi::granted(name) {
            continue;
        }
        if name.starts_with("outreach:platform/") {
            other_contract.push(format!("`{name}`"));
        } else {
            refused.push(format!("`{name}`"));
        }
    }
    let mut why = Vec::new();
    if !other_contract.is_empty() {
        why.push(format!(
            "was built against {}; this outreach implements {} — rebuild it with a matching outreach-sdk",
            list(&other_contract, "and"),
            list(&CONTRACTS.map(String::from), "and")
        ));
    }
    if !refused.is_empty() {
        why.push(format!(
            "imports {}, which outreach does not grant (plugins may import the outreach:platform host and types interfaces and WASI 0.2's cli, io, clocks, random, filesystem, sockets and http, whose files, sockets and requests are refused)",
            list(&refused, "and")
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// `a`, `a and b`, `a, b and c`.
fn list(items: &[String], and: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {and} {last}", init.join(", ")),
    }
}

/// Check and compile `bytes` (a component, or a core module with embedded
/// WIT), through the on-disk cache. Nothing that [`shape`] or
/// [`check_component`] refuses is compiled or cached.
fn compile(
    engine: &Engine,
    cache_dir: &Path,
    bytes: &[u8],
    sha: &str,
) -> Result<Component, String> {
    let shape = shape(bytes)?;
    if shape == Shape::Component {
        check_component(bytes)?;
    }
    let engine_key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let cached = cache_dir.join(format!("{sha}-{engine_key}.cwasm"));
    if cached.is_file() {
        // SAFETY: files in the cache directory are written only by
        // `precompile_component` below, under a name that binds them to
        // the source's hash and this engine's compatibility hash.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %cached.display(), "ignoring an unusable cache entry: {e}");
            }
        }
    }
    let encoded;
    let component_bytes = match shape {
        Shape::Component => bytes,
        Shape::CoreModule => {
            encoded = wit_component::ComponentEncoder::default()
                .module(bytes)
                .and_then(|e| e.validate(true).encode())
                .map_err(|e| {
                    format!("is a core module that cannot be made into a component (was it built with outreach-sdk?): {e:#}")
                })?;
            check_component(&encoded)?;
            &encoded[..]
        }
    };
    let compiled = engine
        .precompile_component(component_bytes)
        .map_err(|e| format!("is not a valid component: {e:#}"))?;
    if std::fs::create_dir_all(cache_dir).is_ok()
        && let Err(e) = crate::store::write_atomic(&cached, &compiled)
    {
        tracing::warn!(dir = %cache_dir.display(), "cannot write the compile cache: {e}");
    }
    // SAFETY: `compiled` was produced by this engine just now.
    let component = unsafe { Component::deserialize(engine, &compiled) }
        .map_err(|e| format!("cannot be loaded: {e:#}"))?;
    Ok(component)
}

fn placeholder_manifest() -> Manifest {
    use wit::types::*;
    Manifest {
        id: String::new(),
        name: String::new(),
        version: String::new(),
        auth: AuthInfo {
            kind: AuthKind::ApiKey,
            scopes: vec![],
            scope_separator: String::new(),
            client_auth: ClientAuth::None,
            authorize_params: vec![],
            token_params: vec![],
            token_response: TokenShape {
                access_token: String::new(),
                refresh_token: String::new(),
                expiry: String::new(),
                expiry_format: ExpiryFormat::Never,
                refresh_expiry: String::new(),
                scope: String::new(),
                error: String::new(),
            },
            refresh: RefreshStyle::None,
            pkce: PkceMethod::S256,
            access_token_lifetime: 0,
            refresh_token_lifetime: 0,
            refresh_min_age: 0,
            placement: vec![],
            dynamic_registration: false,
            login: None,
            after_connect: vec![],
            identities: None,
        },
        endpoints: vec![],
        hosts: vec![],
        rate_limits: vec![],
        rate_limit_headers: None,
        content: ContentRules {
            max_length: 0,
            counting: CountRule::Chars,
            max_length_setting: None,
            title_required: false,
            max_title_length: 0,
            media_required: false,
            media: vec![],
            threads: false,
        },
        settings: vec![],
        post_fields: vec![],
        idempotent_publish: false,
    }
}

fn observe(plugin: &str, call: &'static str, start: Instant) {
    crate::metrics::plugin_call(plugin, call, start.elapsed().as_secs_f64());
}

fn no_media() -> MediaReader {
    Arc::new(|_| Err("this call has no media attachments".into()))
}

/// A receipt must name the post, and its URL must be a URL.
fn well_formed(plugin: &str, r: &Receipt) -> Result<(), PluginError> {
    let handed = r.state == wit::types::ReceiptState::HandedToUser;
    let message = if handed && r.url.is_none() {
        "a receipt handed to the user without the page to open".to_string()
    } else if r.id.trim().is_empty() && !handed {
        "a receipt without a post id".to_string()
    } else if let Some(u) = &r.url
        && url::Url::parse(u).is_err()
    {
        format!("a receipt whose URL `{u}` does not parse")
    } else {
        return Ok(());
    };
    Err(PluginError::Call {
        plugin: plugin.to_string(),
        message: format!("returned malformed data: {message}"),
    })
}

/// Refuse a compiled component whose imports exceed what the host grants
/// (the same rule as [`check_component`], from wasmtime's view of its
/// types; a cached artifact is checked here).
fn check_imports(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let names: Vec<&str> = ty.imports(engine).map(|(name, _)| name).collect();
    match refused_imports(names.into_iter()) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Map the outcome of a call (timeout, trap or value) to a clear result.
fn finish<T>(
    plugin: &str,
    store: &Store<CallState>,
    r: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    budget: Duration,
) -> Result<T, PluginError> {
    store.data().wasi.log_output(plugin);
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(call_error(plugin, store, e, budget)),
        Err(_) => Err(PluginError::Call {
            plugin: plugin.to_string(),
            message: format!(
                "did not finish within its {} ms deadline",
                budget.as_millis()
            ),
        }),
    }
}

fn call_error(
    plugin: &str,
    store: &Store<CallState>,
    e: wasmtime::Error,
    budget: Duration,
) -> PluginError {
    let message = if store.data().limiter.hit {
        format!(
            "tried to use more than its memory cap of {} MiB and was stopped",
            store.data().limiter.max >> 20
        )
    } else {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => format!(
                "ran past its {} ms deadline and was stopped",
                budget.as_millis()
            ),
            Some(Trap::UnreachableCodeReached) => {
                "crashed (it panicked or hit `unreachable`)".to_string()
            }
            Some(Trap::StackOverflow) => "overflowed its stack".to_string(),
            Some(t) => format!("trapped: {t}"),
            None => format!("failed: {e:#}"),
        }
    };
    PluginError::Call {
        plugin: plugin.to_string(),
        message,
    }
}
