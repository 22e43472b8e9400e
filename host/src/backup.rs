//! Backups: `outreach backup FILE` and `outreach restore FILE`.
//!
//! Owns: the backup file's format and both commands. A backup is a tar
//! archive (zstd-compressed, with zstd's own checksum) whose first entry is
//! a manifest ([`MANIFEST`]: outreach's version, when it was made, what is
//! inside and the SHA-256 and size of every other entry), then the config
//! file (`config/outreach.toml`), with `--include-identity` the identity
//! file as it is (`identity/identity.txt`), the store's encrypted files as
//! they are (`store/…`: records, escrowed answers, auxiliary secrets,
//! `.recipients`) and a snapshot of the journal (`journal/outbox.sqlite`).
//! With the identity inside, the whole file is age-encrypted to a
//! passphrase (scrypt), so nothing in it opens without that passphrase.
//!
//! A backup is consistent while other processes (the daemon) run: the
//! journal is copied by SQLite itself (`VACUUM INTO`, one read transaction:
//! a snapshot of committed state that never blocks a writer); each account's
//! files are copied under the store's own locks — the refresh lease and the
//! exchange lock (so a record and its escrowed answer are copied as one
//! state, never a record whose answer was applied a moment before), and the
//! record's writer lock; and the whole store is copied under the lock a
//! `store rekey` holds, so the identity and every record in one backup
//! belong to the same keys. Records are written by rename, so a copy is
//! always a whole file.
//!
//! A restore reads and checks the whole backup before it writes anything:
//! every entry must be a regular file with a safe relative path that the
//! manifest lists, with that size and checksum, and every listed entry must
//! be there. Only then are the files put into place — where the current
//! config says (or under `--to DIR`), and only where nothing exists yet; a
//! failure part-way removes what it put.
//!
//! Never: decrypts a record or an answer (they are copied still
//! encrypted), prints a secret (a passphrase, the identity, a record's
//! contents), writes over a file or into a folder that holds anything on
//! restore, follows a link or a path out of the destination that an
//! archive names, or puts anything in place that it has not verified.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use age::secrecy::SecretString;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::Loaded;
use crate::error::bad;
use crate::store::{
    AccountId, exchange_path, lease_path, lock_file, lock_file_within, record_lock_path,
    rekey_lock_path,
};

/// The first entry of every backup.
pub const MANIFEST: &str = "outreach-backup.json";
/// Where the passphrase of an encrypted backup may come from.
pub const PASSPHRASE_ENV: &str = "OUTREACH_BACKUP_PASSPHRASE";

const FORMAT: &str = "outreach-backup";
const FORMAT_VERSION: u32 = 1;
const CONFIG_ENTRY: &str = "config/outreach.toml";
const IDENTITY_ENTRY: &str = "identity/identity.txt";
/// The age plugin identities that unwrap a wrapped identity file
/// (`[paths] identity_plugin`), beside it with `--include-identity`.
const PLUGIN_IDENTITIES_ENTRY: &str = "identity/identity-plugin.txt";
const JOURNAL_ENTRY: &str = "journal/outbox.sqlite";
const STORE_PREFIX: &str = "store/";
/// A manifest larger than this is not one outreach wrote.
const MAX_MANIFEST: u64 = 64 << 20;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// What a backup holds, as its first entry says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `outreach-backup`.
    pub format: String,
    /// The format's version (1).
    pub version: u32,
    /// The outreach that wrote it.
    pub outreach_version: String,
    pub created_at: DateTime<Utc>,
    pub contents: Contents,
    /// Every other entry of the archive, in order.
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Contents {
    /// Account records (`store/PLATFORM/ACCOUNT.age`).
    pub accounts: usize,
    /// Every file of the store: records, escrowed answers, auxiliary
    /// secrets, the extra recipients list.
    pub store_files: usize,
    pub journal: bool,
    /// Posts in the journal, when it has any.
    pub posts: Option<u64>,
    pub config: bool,
    pub identity: bool,
    /// The age plugin identities file (`[paths] identity_plugin`), with a
    /// wrapped identity.
    #[serde(default)]
    pub plugin_identities: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

// ---------------------------------------------------------------------
// The commands.

/// `outreach backup FILE [--include-identity]`.
pub fn backup_command(
    config: Option<&Path>,
    out: &Path,
    include_identity: bool,
) -> anyhow::Result<i32> {
    let cfg = Loaded::load(config)?;
    let passphrase = if include_identity {
        Some(passphrase(true)?)
    } else {
        None
    };
    let made = backup(&cfg, out, include_identity, passphrase.as_ref())?;
    let c = &made.contents;
    let mut parts = vec![format!(
        "{} account{} ({} file{} from the store, still encrypted)",
        c.accounts,
        plural(c.accounts),
        c.store_files,
        plural(c.store_files)
    )];
    if c.journal {
        let posts = c.posts.unwrap_or(0);
        parts.push(format!(
            "the journal ({posts} post{})",
            plural(posts as usize)
        ));
    }
    if c.config {
        parts.push("the config".into());
    }
    if c.identity {
        parts.push("the identity".into());
    }
    if c.plugin_identities {
        parts.push("its age plugin identities (the hardware key itself stays where it is)".into());
    }
    println!(
        "backed up {} to {}{}",
        join_and(&parts),
        out.display(),
        if c.identity {
            "; the whole file is encrypted with your passphrase — without it the backup cannot be read"
        } else {
            ""
        }
    );
    if !c.identity {
        println!(
            "the identity is not in this backup: keep a copy of {} (or back up with --include-identity) — without it the records cannot be read",
            cfg.identity.display()
        );
    }
    Ok(0)
}

/// `outreach restore FILE [--to DIR]`.
pub fn restore_command(
    config: Option<&Path>,
    file: &Path,
    to: Option<&Path>,
) -> anyhow::Result<i32> {
    let (targets, cfg_file) = match to {
        Some(dir) => (Targets::under(dir), None),
        None => {
            let cfg = Loaded::load(config)?;
            (Targets::configured(&cfg), cfg.file.clone())
        }
    };
    let done = restore(file, &targets, &mut || passphrase(false))?;
    let c = &done.manifest.contents;
    let mut parts = vec![format!(
        "{} account{} ({} file{}) into {}",
        c.accounts,
        plural(c.accounts),
        c.store_files,
        plural(c.store_files),
        targets.store.display()
    )];
    if c.journal {
        parts.push(format!(
            "the journal ({} post{}) into {}",
            c.posts.unwrap_or(0),
            plural(c.posts.unwrap_or(0) as usize),
            targets.journal.display()
        ));
    }
    if c.identity {
        parts.push(format!("the identity into {}", targets.identity.display()));
    }
    if c.plugin_identities {
        parts.push(format!(
            "its age plugin identities into {}",
            targets.plugin_identities.display()
        ));
    }
    if let (true, Some(p)) = (c.config, &targets.config) {
        parts.push(format!("the config into {}", p.display()));
    }
    println!(
        "restored {}; every file matched the backup's checksums (made by outreach {} at {})",
        join_and(&parts),
        done.manifest.outreach_version,
        done.manifest
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    if c.config && targets.config.is_none() {
        println!(
            "the backed-up config was not written: {} stays in use (`outreach restore FILE --to DIR` writes the backed-up one as DIR/outreach.toml)",
            cfg_file
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the default configuration".into())
        );
    }
    if !c.identity && c.store_files > 0 {
        println!(
            "this backup holds no identity: put the identity the records were encrypted to at {} (then `chmod 600` it)",
            targets.identity.display()
        );
    }
    if to.is_some() {
        println!(
            "to use it, set [paths] store, outbox and identity in a config to these files (paths in a backed-up config are as they were when it was made)"
        );
    }
    Ok(0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The backup passphrase: from [`PASSPHRASE_ENV`], or asked for (twice
/// when `confirm`) at a hidden prompt.
fn passphrase(confirm: bool) -> anyhow::Result<SecretString> {
    use std::io::IsTerminal;
    let nothing = if confirm {
        "nothing was written"
    } else {
        "nothing was restored"
    };
    if let Some(v) = std::env::var_os(PASSPHRASE_ENV) {
        let v = Zeroizing::new(
            v.into_string()
                .map_err(|_| bad!("{PASSPHRASE_ENV} is not valid UTF-8; {nothing}"))?,
        );
        if v.is_empty() {
            return Err(bad!(
                "{PASSPHRASE_ENV} is empty; a backup passphrase cannot be — {nothing}"
            ));
        }
        return Ok(SecretString::from(v.to_string()));
    }
    if !std::io::stdin().is_terminal() {
        let why = if confirm {
            "--include-identity encrypts the backup with a passphrase"
        } else {
            "this backup is encrypted with a passphrase"
        };
        return Err(bad!(
            "{why}: set {PASSPHRASE_ENV} or run in a terminal to be asked; {nothing}"
        ));
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("backup passphrase (input is hidden): ")
            .context("cannot read the passphrase from the terminal")?,
    );
    if first.is_empty() {
        return Err(bad!("the passphrase is empty; {nothing}"));
    }
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("the same passphrase again: ")
                .context("cannot read the passphrase from the terminal")?,
        );
        if *again != *first {
            return Err(bad!("the two passphrases differ; {nothing}"));
        }
    }
    Ok(SecretString::from(first.to_string()))
}

// ---------------------------------------------------------------------
// Making a backup.

/// One file bound for the archive, read while its locks were held.
struct Staged {
    path: String,
    bytes: Zeroizing<Vec<u8>>,
}

/// A folder of our own that is removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(path: PathBuf) -> io::Result<Self> {
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(false)
            .create(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Write a backup of what `cfg` names to `out` (which must not exist).
pub fn backup(
    cfg: &Loaded,
    out: &Path,
    include_identity: bool,
    passphrase: Option<&SecretString>,
) -> anyhow::Result<Manifest> {
    if cfg.config.store.backend != crate::config::StoreBackend::Files {
        return Err(bad!(
            "`outreach backup` copies the files credential store, and the config chooses the PostgreSQL backend ([store] backend = \"postgres\"); nothing was written — back the database up with `pg_dump` (its rows are age-encrypted) and keep the identity file {} with it",
            cfg.identity.display()
        ));
    }
    if fs::symlink_metadata(out).is_ok() {
        return Err(bad!(
            "{} exists; a backup never replaces a file — choose a new name or move it aside",
            out.display()
        ));
    }
    let dir = parent_of(out);
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| bad!("{} is not a file name", out.display()))?;
    if !dir.is_dir() {
        return Err(bad!(
            "cannot write {}: the folder {} does not exist",
            out.display(),
            dir.display()
        ));
    }
    if let (Ok(d), Ok(s)) = (dir.canonicalize(), cfg.store_dir.canonicalize())
        && d.starts_with(&s)
    {
        return Err(bad!(
            "{} is inside the store {}; write the backup somewhere else",
            out.display(),
            cfg.store_dir.display()
        ));
    }
    let staging = TempDir::new(dir.join(format!(".{name}.backup-{}", std::process::id())))
        .with_context(|| format!("cannot create a temporary folder in {}", dir.display()))?;

    // The store (and the identity) under the rekey lock: one set of keys.
    let mut files = Vec::new();
    let mut identity = None;
    let mut plugin_identities = None;
    {
        let _rekey = if cfg.store_dir.is_dir() {
            Some(hold_rekey_lock(&cfg.store_dir)?)
        } else {
            None
        };
        if include_identity {
            let raw = match fs::read(&cfg.identity) {
                Ok(r) => Zeroizing::new(r),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(bad!(
                        "--include-identity: there is no identity file at {}; nothing was written",
                        cfg.identity.display()
                    ));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot read the identity file {}", cfg.identity.display())
                    });
                }
            };
            identity = Some(raw);
            // A wrapped identity opens only with its plugin's identities:
            // they go along (stubs that name the hardware key; no secret
            // key is in them).
            match fs::read(&cfg.identity_plugin) {
                Ok(r) => plugin_identities = Some(Zeroizing::new(r)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot read {}", cfg.identity_plugin.display()));
                }
            }
        }
        if cfg.store_dir.is_dir() {
            files = copy_store(&cfg.store_dir)?;
        }
    }

    // The journal: SQLite's own consistent copy.
    let journal_copy = staging.0.join("outbox.sqlite");
    let mut posts = None;
    let journal = if cfg.outbox.is_file() {
        posts = snapshot_journal(&cfg.outbox, &journal_copy)?;
        true
    } else {
        false
    };

    let config = match &cfg.file {
        Some(p) => Some(
            fs::read(p).with_context(|| format!("cannot read the config file {}", p.display()))?,
        ),
        None => None,
    };
    if files.is_empty() && !journal {
        return Err(bad!(
            "nothing to back up: there is no store at {} and no journal at {} (is this the right config?)",
            cfg.store_dir.display(),
            cfg.outbox.display()
        ));
    }

    // The manifest: what follows, with checksums.
    let mut entries = Vec::new();
    let sum = |path: &str, bytes: &[u8]| Entry {
        path: path.to_string(),
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
    };
    if let Some(c) = &config {
        entries.push(sum(CONFIG_ENTRY, c));
    }
    if let Some(i) = &identity {
        entries.push(sum(IDENTITY_ENTRY, i));
    }
    if let Some(i) = &plugin_identities {
        entries.push(sum(PLUGIN_IDENTITIES_ENTRY, i));
    }
    for f in &files {
        entries.push(sum(&f.path, &f.bytes));
    }
    if journal {
        let (size, sha256) = hash_file(&journal_copy)?;
        entries.push(Entry {
            path: JOURNAL_ENTRY.into(),
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        outreach_version: env!("CARGO_PKG_VERSION").into(),
        created_at: Utc::now(),
        contents: Contents {
            accounts: files
                .iter()
                .filter(|f| matches!(classify(&f.path), Some(Kind::Store(StoreFile::Record))))
                .count(),
            store_files: files.len(),
            journal,
            posts,
            config: config.is_some(),
            identity: identity.is_some(),
            plugin_identities: plugin_identities.is_some(),
        },
        entries,
    };

    let keys = [
        (IDENTITY_ENTRY, &identity),
        (PLUGIN_IDENTITIES_ENTRY, &plugin_identities),
    ];
    // The archive, into a temp file beside `out`, then linked into place
    // (never over a file that appeared meanwhile).
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| -> anyhow::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let w = io::BufWriter::new(file);
        let w = match passphrase {
            Some(p) => {
                let enc = age::Encryptor::with_user_passphrase(p.clone());
                let sealed = enc
                    .wrap_output(w)
                    .context("cannot start encrypting the backup")?;
                let sealed =
                    write_archive(sealed, &manifest, &config, &keys, &files, &journal_copy)?;
                sealed
                    .finish()
                    .context("cannot finish encrypting the backup")?
            }
            None => write_archive(w, &manifest, &config, &keys, &files, &journal_copy)?,
        };
        let file = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        match fs::hard_link(&tmp, out) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(bad!(
                    "{} appeared while the backup was made; it was left alone",
                    out.display()
                ));
            }
            // A file system without hard links: look, then rename.
            Err(_) if fs::symlink_metadata(out).is_err() => {
                fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot write {}", out.display()));
            }
        }
        Ok(())
    })();
    let _ = fs::remove_file(&tmp);
    written?;
    let _ = File::open(&dir).and_then(|d| d.sync_all());
    Ok(manifest)
}

/// Tar, compressed with zstd (with its checksum), written to `w`.
fn write_archive<W: Write>(
    w: W,
    manifest: &Manifest,
    config: &Option<Vec<u8>>,
    identity: &[(&str, &Option<Zeroizing<Vec<u8>>>)],
    files: &[Staged],
    journal: &Path,
) -> anyhow::Result<W> {
    let result = (|| -> io::Result<W> {
        let mut z = zstd::stream::write::Encoder::new(w, 3)?;
        z.include_checksum(true)?;
        let mut tar = tar::Builder::new(z);
        let mtime = manifest.created_at.timestamp().max(0) as u64;
        let m = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
        add(&mut tar, mtime, MANIFEST, m.len() as u64, &mut &m[..])?;
        if let Some(c) = config {
            add(&mut tar, mtime, CONFIG_ENTRY, c.len() as u64, &mut &c[..])?;
        }
        for (entry, bytes) in identity {
            if let Some(i) = bytes {
                add(&mut tar, mtime, entry, i.len() as u64, &mut &i[..])?;
            }
        }
        for f in files {
            add(
                &mut tar,
                mtime,
                &f.path,
                f.bytes.len() as u64,
                &mut &f.bytes[..],
            )?;
        }
        if manifest.contents.journal {
            let mut j = File::open(journal)?;
            let size = j.metadata()?.len();
            add(&mut tar, mtime, JOURNAL_ENTRY, size, &mut j)?;
        }
        tar.into_inner()?.finish()
    })();
    result.context("cannot write the backup")
}

/// One regular file (0600, owned by nobody in particular) of the archive.
fn add<W: Write>(
    tar: &mut tar::Builder<W>,
    mtime: u64,
    path: &str,
    size: u64,
    data: &mut dyn Read,
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    tar.append_data(&mut h, path, data)
}

/// Hold the lock a `store rekey` holds for its whole run, waiting a while
/// for one that is running.
fn hold_rekey_lock(store: &Path) -> anyhow::Result<File> {
    lock_file_within(&rekey_lock_path(store), Duration::from_secs(30))?.ok_or_else(|| {
        bad!(
            "an `outreach store rekey` is running on the store {}; back up when it has finished (nothing was written)",
            store.display()
        )
    })
}

/// A record's writer lock, as the store takes it, waiting a little for a
/// writer that holds it.
fn hold_record_lock(dir: &Path, account: &str) -> anyhow::Result<File> {
    lock_file_within(&record_lock_path(dir, account), Duration::from_secs(10))?.ok_or_else(|| {
        anyhow::anyhow!(
            "another process kept writing {} for 10 seconds; nothing was written — try again",
            dir.join(format!("{account}.age")).display()
        )
    })
}

/// The bytes of `path`, or `None` when it does not exist (any more).
fn read_if_there(path: &Path) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(Zeroizing::new(b))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Names in `dir` that are regular files (links are not followed).
fn regular_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        if e.file_type().is_ok_and(|t| t.is_file()) {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Every encrypted file of the store, each account's read under its locks.
/// Lock files, temp files and anything else the store does not write are
/// left out.
fn copy_store(store: &Path) -> anyhow::Result<Vec<Staged>> {
    let mut out = Vec::new();
    let top = store.join(".recipients");
    if fs::symlink_metadata(&top).is_ok_and(|m| m.is_file())
        && let Some(bytes) = read_if_there(&top)?
    {
        out.push(Staged {
            path: format!("{STORE_PREFIX}.recipients"),
            bytes,
        });
    }
    let aux = store.join(".aux");
    if fs::symlink_metadata(&aux).is_ok_and(|m| m.is_dir()) {
        for name in regular_files(&aux)? {
            if aux_name(&name).is_some()
                && let Some(bytes) = read_if_there(&aux.join(&name))?
            {
                out.push(Staged {
                    path: format!("{STORE_PREFIX}.aux/{name}"),
                    bytes,
                });
            }
        }
    }
    let mut platforms = Vec::new();
    for e in fs::read_dir(store).with_context(|| format!("cannot list {}", store.display()))? {
        let e = e.with_context(|| format!("cannot list {}", store.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_dir()) && AccountId::new(&name, "x").is_ok() {
            platforms.push(name);
        }
    }
    platforms.sort();
    for platform in platforms {
        let dir = store.join(&platform);
        let mut accounts = BTreeSet::new();
        for name in regular_files(&dir)? {
            let account = match name.strip_prefix('.') {
                Some(hidden) => hidden.strip_suffix(".answer"),
                None => name.strip_suffix(".age"),
            };
            if let Some(a) = account
                && AccountId::new(&platform, a).is_ok()
            {
                accounts.insert(a.to_string());
            }
        }
        for account in accounts {
            // As a refresh and `store rekey` take them: the lease, then the
            // exchange lock (the escrow helper holds it until an answer is
            // sealed), then the record's writer lock.
            let _lease = lock_file(&lease_path(&dir, &account))?;
            let _exchange = lock_file(&exchange_path(&dir, &account))?;
            let _record = hold_record_lock(&dir, &account)?;
            if let Some(bytes) = read_if_there(&dir.join(format!("{account}.age")))? {
                out.push(Staged {
                    path: format!("{STORE_PREFIX}{platform}/{account}.age"),
                    bytes,
                });
            }
            if let Some(bytes) = read_if_there(&dir.join(format!(".{account}.answer")))? {
                out.push(Staged {
                    path: format!("{STORE_PREFIX}{platform}/.{account}.answer"),
                    bytes,
                });
            }
        }
    }
    Ok(out)
}

/// A consistent copy of the journal at `dest`, in WAL mode like the
/// original; how many posts it holds.
fn snapshot_journal(src: &Path, dest: &Path) -> anyhow::Result<Option<u64>> {
    use rusqlite::{Connection, OpenFlags};
    let what = || format!("cannot copy the journal {}", src.display());
    let conn = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(what)?;
    conn.busy_timeout(Duration::from_secs(30))
        .with_context(what)?;
    let dest_str = dest
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not a UTF-8 path", dest.display()))?;
    conn.execute("VACUUM INTO ?1", [dest_str])
        .with_context(what)?;
    drop(conn);
    let copy = Connection::open(dest).with_context(what)?;
    copy.pragma_update(None, "journal_mode", "WAL")
        .with_context(what)?;
    let check: String = copy
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .with_context(what)?;
    if check != "ok" {
        anyhow::bail!(
            "the journal {} fails SQLite's check ({check}); nothing was written",
            src.display()
        );
    }
    let posts = copy
        .query_row("SELECT COUNT(*) FROM posts", [], |r| r.get::<_, i64>(0))
        .ok()
        .map(|n| n.max(0) as u64);
    drop(copy);
    fs::set_permissions(dest, fs::Permissions::from_mode(0o600)).with_context(what)?;
    Ok(posts)
}

fn hash_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    let n = io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((n, hex::encode(h.finalize())))
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

// ---------------------------------------------------------------------
// What an archive may hold.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreFile {
    Record,
    Answer,
    Aux,
    Recipients,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Config,
    Identity,
    PluginIdentities,
    Journal,
    Store(StoreFile),
}

fn aux_name(name: &str) -> Option<()> {
    let stem = name.strip_suffix(".age")?;
    let ok = !stem.is_empty()
        && stem.len() <= 128
        && !stem.starts_with('.')
        && stem
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    ok.then_some(())
}

/// What an entry path of a backup is, if it is one outreach writes. Only
/// plain relative names of known shapes pass: no `..`, `.`, empty or
/// absolute parts.
fn classify(path: &str) -> Option<Kind> {
    match path {
        CONFIG_ENTRY => return Some(Kind::Config),
        IDENTITY_ENTRY => return Some(Kind::Identity),
        PLUGIN_IDENTITIES_ENTRY => return Some(Kind::PluginIdentities),
        JOURNAL_ENTRY => return Some(Kind::Journal),
        _ => {}
    }
    let rest = path.strip_prefix(STORE_PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts[..] {
        [".recipients"] => Some(Kind::Store(StoreFile::Recipients)),
        [".aux", name] => aux_name(name).map(|()| Kind::Store(StoreFile::Aux)),
        [platform, name] => {
            let (account, kind) = match name.strip_prefix('.') {
                Some(hidden) => (hidden.strip_suffix(".answer")?, StoreFile::Answer),
                None => (name.strip_suffix(".age")?, StoreFile::Record),
            };
            AccountId::new(platform, account).ok()?;
            Some(Kind::Store(kind))
        }
        _ => None,
    }
}

/// Why an entry path is unsafe to write anywhere, if it is.
fn unsafe_path(path: &[u8]) -> Option<&'static str> {
    if path.is_empty() {
        return Some("an empty path");
    }
    if path.starts_with(b"/") {
        return Some("an absolute path");
    }
    if path.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Some("control characters in its path");
    }
    let Ok(text) = std::str::from_utf8(path) else {
        return Some("a path that is not UTF-8");
    };
    for part in text.split('/') {
        match part {
            ".." => {
                return Some("a `..` in its path (it would be written outside the destination)");
            }
            "." | "" => return Some("an empty or `.` part in its path"),
            _ => {}
        }
    }
    None
}

/// An entry name fit to print: not a secret, but maybe hostile.
fn shown(path: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(path))
}

// ---------------------------------------------------------------------
// Restoring.

/// Where a restore puts each part.
#[derive(Clone, Debug)]
pub struct Targets {
    pub store: PathBuf,
    pub journal: PathBuf,
    pub identity: PathBuf,
    /// Where the age plugin identities of a wrapped identity go.
    pub plugin_identities: PathBuf,
    /// Where the backed-up config goes; `None`: it is not written.
    pub config: Option<PathBuf>,
    /// `--to DIR`: the folder itself, which must be empty.
    pub root: Option<PathBuf>,
}

impl Targets {
    /// `--to DIR`: `DIR/store`, `DIR/outbox.sqlite`, `DIR/identity.txt`,
    /// `DIR/outreach.toml`.
    pub fn under(dir: &Path) -> Self {
        Targets {
            store: dir.join("store"),
            journal: dir.join("outbox.sqlite"),
            identity: dir.join("identity.txt"),
            plugin_identities: dir.join("identity-plugin.txt"),
            config: Some(dir.join("outreach.toml")),
            root: Some(dir.to_path_buf()),
        }
    }

    /// The paths `cfg` names; its own file is not replaced.
    pub fn configured(cfg: &Loaded) -> Self {
        Targets {
            store: cfg.store_dir.clone(),
            journal: cfg.outbox.clone(),
            identity: cfg.identity.clone(),
            plugin_identities: cfg.identity_plugin.clone(),
            config: None,
            root: None,
        }
    }
}

/// What a restore did.
pub struct Restored {
    pub manifest: Manifest,
}

/// Why a path is not free to restore into, if it is not.
fn occupied(path: &Path, dir_may_be_empty: bool) -> anyhow::Result<Option<&'static str>> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot look at {}", path.display())),
        Ok(m) if m.is_dir() && dir_may_be_empty => {
            let mut entries =
                fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?;
            Ok(entries
                .next()
                .is_some()
                .then_some("is a folder that is not empty"))
        }
        Ok(m) if m.is_dir() => Ok(Some("is a folder")),
        Ok(_) => Ok(Some("exists")),
    }
}

fn refuse_occupied(path: &Path, dir_may_be_empty: bool) -> anyhow::Result<()> {
    if let Some(why) = occupied(path, dir_may_be_empty)? {
        return Err(bad!(
            "{} {why}; a restore never writes over anything — restore into an empty location (move it aside, or use --to DIR); nothing was restored",
            path.display()
        ));
    }
    Ok(())
}

/// Check the destination, read and verify the whole backup into a
/// private folder beside it, then put every file in place.
pub fn restore(
    file: &Path,
    targets: &Targets,
    passphrase: &mut dyn FnMut() -> anyhow::Result<SecretString>,
) -> anyhow::Result<Restored> {
    // Nothing may be there yet (an empty store folder is fine).
    if let Some(root) = &targets.root {
        refuse_occupied(root, true)?;
    }
    refuse_occupied(&targets.store, true)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = targets.journal.as_os_str().to_owned();
        p.push(suffix);
        refuse_occupied(Path::new(&p), false)?;
    }
    if let Some(c) = &targets.config {
        refuse_occupied(c, false)?;
    }
    let source = File::open(file).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            bad!(
                "there is no backup at {}; nothing was restored",
                file.display()
            )
        } else {
            anyhow::Error::from(e).context(format!("cannot read {}", file.display()))
        }
    })?;
    if source.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(bad!(
            "{} is a folder, not a backup; nothing was restored",
            file.display()
        ));
    }
    // Only a backup with the identity is sealed with a passphrase: see
    // that the identity can go in before asking for it.
    let mut head = [0u8; 64];
    let n = (&source).read(&mut head).unwrap_or(0);
    if is_age(&head[..n]) {
        refuse_occupied(&targets.identity, false)?;
    }
    (&source)
        .seek(io::SeekFrom::Start(0))
        .with_context(|| format!("cannot read {}", file.display()))?;

    // A private folder for what is read, beside where it goes.
    let mut made_root = false;
    let base = match &targets.root {
        Some(root) => {
            if !root.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .with_context(|| format!("cannot create {}", root.display()))?;
                made_root = true;
            }
            root.clone()
        }
        None => {
            let p = parent_of(&targets.store);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            p
        }
    };
    let result = (|| {
        let staging = TempDir::new(base.join(format!(".outreach-restore-{}", std::process::id())))
            .with_context(|| format!("cannot create a temporary folder in {}", base.display()))?;
        let manifest = read_backup(file, source, &staging.0, passphrase)?;
        if manifest.contents.identity {
            refuse_occupied(&targets.identity, false)?;
        }
        if manifest.contents.plugin_identities {
            refuse_occupied(&targets.plugin_identities, false)?;
        }
        place(&staging.0, &manifest, targets)?;
        Ok(Restored { manifest })
    })();
    if result.is_err() && made_root {
        let _ = fs::remove_dir_all(&base);
    }
    result
}

fn is_age(head: &[u8]) -> bool {
    head.starts_with(b"age-encryption.org/")
        || head.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
}

/// The error for a backup that cannot be read to its end.
fn corrupt(file: &Path, detail: impl std::fmt::Display) -> anyhow::Error {
    bad!(
        "{} is truncated or corrupt ({detail}); nothing was restored",
        file.display()
    )
}

/// Read, decrypt, decompress and check the backup at `file`, writing its
/// entries under `staging`.
fn read_backup(
    file: &Path,
    source: File,
    staging: &Path,
    passphrase: &mut dyn FnMut() -> anyhow::Result<SecretString>,
) -> anyhow::Result<Manifest> {
    let mut r = BufReader::new(source);
    let head = r
        .fill_buf()
        .with_context(|| format!("cannot read {}", file.display()))?;
    if head.is_empty() {
        return Err(bad!(
            "{} is empty; it is not a backup — nothing was restored",
            file.display()
        ));
    }
    if !is_age(head) {
        return unpack(file, r, staging);
    }
    let pass = passphrase()?;
    let dec = age::Decryptor::new(age::armor::ArmoredReader::new(r))
        .map_err(|e| corrupt(file, format!("its encryption header cannot be read: {e}")))?;
    if !dec.is_scrypt() {
        return Err(bad!(
            "{} is encrypted to a key, not with a passphrase; it is not an outreach backup — nothing was restored",
            file.display()
        ));
    }
    let ident = age::scrypt::Identity::new(pass);
    let plain = dec
        .decrypt(std::iter::once(&ident as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed
            | age::DecryptError::NoMatchingKeys => bad!(
                "{} cannot be decrypted with that passphrase (a wrong passphrase, or a damaged file); nothing was restored",
                file.display()
            ),
            age::DecryptError::ExcessiveWork { .. } => bad!(
                "{} asks for far more passphrase work than outreach does; it was not made by outreach — nothing was restored",
                file.display()
            ),
            other => corrupt(file, other),
        })?;
    unpack(file, BufReader::new(plain), staging)
}

/// Decompress (when zstd) and unpack the tar stream `r` into `staging`,
/// checking every entry against the manifest.
fn unpack<R: BufRead>(file: &Path, mut r: R, staging: &Path) -> anyhow::Result<Manifest> {
    let head = r.fill_buf().map_err(|e| corrupt(file, e))?;
    if head.starts_with(&ZSTD_MAGIC) {
        let z = zstd::stream::read::Decoder::with_buffer(r).map_err(|e| corrupt(file, e))?;
        unpack_tar(file, z, staging, true)
    } else {
        unpack_tar(file, r, staging, false)
    }
}

/// `compressed`: `r` comes out of zstd, whose checks make a failure to
/// read the first entry a damaged file rather than some other file.
fn unpack_tar<R: Read>(
    file: &Path,
    r: R,
    staging: &Path,
    compressed: bool,
) -> anyhow::Result<Manifest> {
    let not_backup = || {
        bad!(
            "{} is not an outreach backup (it does not start with {MANIFEST}); nothing was restored",
            file.display()
        )
    };
    let mut archive = tar::Archive::new(r);
    let manifest;
    {
        let mut entries = archive.entries().map_err(|e| corrupt(file, e))?;
        let mut first = match entries.next() {
            None => return Err(not_backup()),
            Some(Err(e)) if compressed => return Err(corrupt(file, e)),
            Some(Err(e)) => {
                return Err(bad!(
                    "{} is not an outreach backup, or it is corrupt ({e}); nothing was restored",
                    file.display()
                ));
            }
            Some(Ok(e)) => e,
        };
        if first.path_bytes().as_ref() != MANIFEST.as_bytes()
            || first.header().entry_type() != tar::EntryType::Regular
        {
            return Err(not_backup());
        }
        if first.header().size().unwrap_or(u64::MAX) > MAX_MANIFEST {
            return Err(not_backup());
        }
        let mut text = Vec::new();
        (&mut first)
            .take(MAX_MANIFEST)
            .read_to_end(&mut text)
            .map_err(|e| corrupt(file, e))?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| {
            bad!(
                "{} has a manifest that cannot be read ({e}); nothing was restored",
                file.display()
            )
        })?;
        if m.format != FORMAT {
            return Err(not_backup());
        }
        if m.version > FORMAT_VERSION {
            return Err(bad!(
                "{} was made by a newer outreach ({}, backup format {}); this one reads format {FORMAT_VERSION} — restore it with that version or newer; nothing was restored",
                file.display(),
                m.outreach_version,
                m.version
            ));
        }
        let mut expected: BTreeMap<&str, &Entry> = BTreeMap::new();
        for e in &m.entries {
            if let Some(why) = unsafe_path(e.path.as_bytes()) {
                return Err(bad!(
                    "{}'s manifest lists {} with {why}; refusing it — nothing was restored",
                    file.display(),
                    shown(e.path.as_bytes())
                ));
            }
            if classify(&e.path).is_none() {
                return Err(bad!(
                    "{}'s manifest lists {}, which is not part of an outreach backup; nothing was restored",
                    file.display(),
                    shown(e.path.as_bytes())
                ));
            }
            if expected.insert(e.path.as_str(), e).is_some() {
                return Err(bad!(
                    "{}'s manifest lists {} twice; nothing was restored",
                    file.display(),
                    shown(e.path.as_bytes())
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for entry in entries {
            let mut entry = entry.map_err(|e| corrupt(file, e))?;
            let raw = entry.path_bytes().into_owned();
            let kind = entry.header().entry_type();
            if kind != tar::EntryType::Regular {
                let what = match kind {
                    tar::EntryType::Symlink => "a symbolic link",
                    tar::EntryType::Link => "a hard link",
                    tar::EntryType::Directory => "a folder entry",
                    tar::EntryType::Char | tar::EntryType::Block => "a device",
                    tar::EntryType::Fifo => "a FIFO",
                    _ => "an entry that is not a regular file",
                };
                return Err(bad!(
                    "{} holds {what}, {}; a backup holds only regular files — refusing it, nothing was restored",
                    file.display(),
                    shown(&raw)
                ));
            }
            if let Some(why) = unsafe_path(&raw) {
                return Err(bad!(
                    "{} holds an entry with {why}, {}; refusing it — nothing was restored",
                    file.display(),
                    shown(&raw)
                ));
            }
            let path = String::from_utf8(raw.clone()).expect("checked above");
            let Some(want) = expected.get(path.as_str()) else {
                return Err(bad!(
                    "{} holds {}, which its manifest does not list; refusing it — nothing was restored",
                    file.display(),
                    shown(&raw)
                ));
            };
            if !seen.insert(path.clone()) {
                return Err(bad!(
                    "{} holds {} twice; nothing was restored",
                    file.display(),
                    shown(&raw)
                ));
            }
            let dest = staging.join(&path);
            if let Some(dir) = dest.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&dest)
                .with_context(|| format!("cannot create {}", dest.display()))?;
            let mut h = Sha256::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match entry.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(corrupt(file, e)),
                };
                size += n as u64;
                if size > want.size {
                    break;
                }
                h.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .with_context(|| format!("cannot write {}", dest.display()))?;
            }
            if size != want.size || hex::encode(h.finalize()) != want.sha256 {
                return Err(bad!(
                    "{} does not match its checksum in {}: the backup is corrupt or was changed; nothing was restored",
                    shown(&raw),
                    file.display()
                ));
            }
            out.sync_all()
                .with_context(|| format!("cannot write {}", dest.display()))?;
        }
        let missing: Vec<&str> = expected
            .keys()
            .filter(|p| !seen.contains(**p))
            .copied()
            .collect();
        if let Some(first) = missing.first() {
            return Err(corrupt(
                file,
                format!(
                    "{} of its {} entries are missing, such as {}",
                    missing.len(),
                    expected.len(),
                    shown(first.as_bytes())
                ),
            ));
        }
        manifest = m;
    }
    // What follows the archive must read to its end cleanly: that is where
    // a cut-off compressed or encrypted file shows.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| corrupt(file, e))?;
    Ok(manifest)
}

/// Put the verified files under `staging` where `targets` say, never over
/// anything; a failure removes what was put.
fn place(staging: &Path, manifest: &Manifest, targets: &Targets) -> anyhow::Result<()> {
    let mut placed: Vec<PathBuf> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        let mut plan: Vec<(PathBuf, PathBuf)> = Vec::new();
        for e in &manifest.entries {
            let dest = match classify(&e.path) {
                Some(Kind::Config) => match &targets.config {
                    Some(c) => c.clone(),
                    None => continue,
                },
                Some(Kind::Identity) => targets.identity.clone(),
                Some(Kind::PluginIdentities) => targets.plugin_identities.clone(),
                Some(Kind::Journal) => targets.journal.clone(),
                Some(Kind::Store(_)) => targets
                    .store
                    .join(e.path.strip_prefix(STORE_PREFIX).expect("classified")),
                None => unreachable!("manifest entries were checked"),
            };
            plan.push((staging.join(&e.path), dest));
        }
        // The store folder first, so it is ours (0700) before files land.
        if !targets.store.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&targets.store)
                .with_context(|| format!("cannot create {}", targets.store.display()))?;
            placed.push(targets.store.clone());
        }
        for (src, dest) in plan {
            if let Some(dir) = dest.parent()
                && !dir.exists()
            {
                let mut missing = Vec::new();
                let mut d = dir.to_path_buf();
                while !d.exists() {
                    missing.push(d.clone());
                    if !d.pop() {
                        break;
                    }
                }
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                placed.extend(missing.into_iter().rev());
            }
            place_file(&src, &dest)?;
            placed.push(dest.clone());
            if let Some(dir) = dest.parent() {
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
        }
        Ok(())
    })();
    if result.is_err() {
        for p in placed.iter().rev() {
            let _ = if p.is_dir() {
                fs::remove_dir(p)
            } else {
                fs::remove_file(p)
            };
        }
    }
    result
}

/// `src` at `dest`, which must not exist: a hard link when both are on one
/// file system, else a copy (0600, fsynced).
fn place_file(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let taken = |dest: &Path| {
        bad!(
            "{} appeared while the backup was restored; it was left alone and nothing was restored",
            dest.display()
        )
    };
    match fs::hard_link(src, dest) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(taken(dest)),
        Err(_) => {}
    }
    let mut from = File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
    let mut to = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(taken(dest)),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dest.display())),
    };
    let copied = io::copy(&mut from, &mut to).and_then(|_| to.sync_all());
    if let Err(e) = copied {
        drop(to);
        let _ = fs::remove_file(dest);
        return Err(e).with_context(|| format!("cannot write {}", dest.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_safe_paths_pass() {
        for ok in [
            "store/x/alice.age",
            "store/x/.alice.answer",
            "store/.aux/mastodon-app.age",
            "store/.recipients",
            CONFIG_ENTRY,
            IDENTITY_ENTRY,
            JOURNAL_ENTRY,
        ] {
            assert!(unsafe_path(ok.as_bytes()).is_none(), "{ok}");
            assert!(classify(ok).is_some(), "{ok}");
        }
        for bad in [
            "../x",
            "store/../x",
            "/etc/passwd",
            "store//x.age",
            "./a",
            "",
        ] {
            assert!(unsafe_path(bad.as_bytes()).is_some(), "{bad}");
        }
        for unknown in [
            "store/x/alice.txt",
            "store/X/alice.age",
            "store/x/y/alice.age",
            "store/x/.alice.lock",
            "config/other.toml",
            "store/.aux/.hidden.age",
        ] {
            assert!(classify(unknown).is_none(), "{unknown}");
        }
    }
}
