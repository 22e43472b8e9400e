//! Encrypted credential storage.
//!
//! Owns: the [`CredentialStore`] trait, the account [`Record`] (what the
//! seed's `BaseTokens` held, plus the account's settings), the age identity
//! file, and the default backend [`AgeDirStore`]: a directory with one
//! age-encrypted file per account at `<platform>/<account>.age`, readable by
//! the standard `age` tool (`age -d -i identity.txt x/alice.age`).
//!
//! Writes are atomic (temp file, fsync, rename, fsync the directory), files
//! are 0600, and a writer holds an exclusive lock on the record, so a second
//! process writing the same record at the same time gets a clear error and
//! changes nothing. A failed read never writes. Up to 256 decrypted
//! records are kept in memory beside their ciphertext, and reused while the
//! file holds exactly those bytes (publishing reads every target's record
//! per post; X25519 per read was a tenth of a publish's CPU). Views of an
//! account (status, the dashboard) get the record with its secrets blanked
//! ([`CredentialStore::load_view`]), kept for every account beside its
//! file's stamp (inode, size, times) and the SHA-256 of its ciphertext, so
//! looking at 1,000 accounts stats 1,000 files and reads and decrypts
//! only the changed ones. Beside a
//! record may sit the sealed answer of a token exchange whose sender died
//! (`.<account>.answer`, see [`crate::escrow`]); it is encrypted like a
//! record, re-encrypted by a rekey and removed with the account.
//!
//! The identity file may be sealed: with a passphrase (`age -p`), or
//! wrapped to the recipient of a key an age plugin holds (a YubiKey, a
//! TPM, a cloud KMS; see [`age_plugin`]). Either is opened once, when the
//! store is opened, and every record is then read with the X25519 key in
//! memory.
//!
//! A second backend, [`PgStore`] (`[store] backend = "postgres"`, in
//! [`postgres`]), keeps the same age-encrypted records as rows of a
//! PostgreSQL database that several processes and daemons share.
//!
//! Never: prints a secret. Only the PostgreSQL backend touches the
//! network, and only to reach its database.

mod age_plugin;
pub(crate) mod postgres;

pub use age_plugin::PluginPrompts;
pub use postgres::PgStore;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use age::secrecy::{ExposeSecret, SecretString};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// Which account a record belongs to: `x/alice`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountId {
    pub platform: String,
    pub account: String,
}

impl AccountId {
    /// A checked id: both parts are lower-case letters, digits, `-` or `_`,
    /// so an id can never name a path outside the store.
    pub fn new(platform: &str, account: &str) -> Result<Self, StoreError> {
        for (what, v) in [("platform", platform), ("account", account)] {
            let ok = !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                return Err(StoreError::BadName(format!(
                    "{what} name `{v}` must be 1-64 characters of a-z, 0-9, `-` or `_`"
                )));
            }
        }
        Ok(AccountId {
            platform: platform.to_string(),
            account: account.to_string(),
        })
    }

    /// Parse `platform/account` (or `platform`, meaning account `default`).
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        match s.split_once('/') {
            Some((p, a)) => Self::new(p, a),
            None => Self::new(s, "default"),
        }
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.platform, self.account)
    }
}

/// Who the account is on its platform (no secrets).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: String,
    pub name: String,
    pub handle: Option<String>,
    pub picture: Option<String>,
    pub url: Option<String>,
}

impl Profile {
    /// `Name (@handle)`, or just the name.
    pub fn label(&self) -> String {
        match &self.handle {
            Some(h) => format!("{} (@{h})", self.name),
            None => self.name.clone(),
        }
    }
}

/// One account's credentials and settings. Lives only inside the encrypted
/// envelope; the secrets are [`Secret`]s so they never print.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// Format version of this record.
    pub version: u32,
    pub id: AccountId,
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    /// Lifetime in seconds the platform gave when the token was issued.
    pub expires_in: Option<u64>,
    /// When the access token expires; `None` for tokens that do not.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the refresh token expires, if the platform said (TikTok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_expires_at: Option<DateTime<Utc>>,
    pub scope: String,
    pub profile: Profile,
    pub created_at: DateTime<Utc>,
    pub last_refreshed: Option<DateTime<Utc>>,
    /// Non-secret per-account settings (a Mastodon instance URL).
    pub settings: BTreeMap<String, String>,
    /// Token health as the refresh scheduler last saw it.
    #[serde(default)]
    pub health: Health,
    /// The hosts the plugin declared when the user connected this account
    /// or last approved the plugin (`outreach plugins approve`): the only
    /// plugin-declared hosts its credential is sent to. Hosts the user
    /// gave (endpoint overrides in the config, host settings) need no
    /// approval. `None`: a record from before pinning, pinned to the
    /// plugin's hosts the first time a daemon sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// The scopes the plugin asked for when the account was last
    /// connected (the platform may have granted fewer: `scope`). A
    /// reconnect that would ask for more needs the user's approval.
    /// `None`: not known (stored by an earlier version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_asked: Option<Vec<String>>,
    /// The username and password of a login the user chose to keep
    /// (`connect --remember-password`), for platforms whose sessions are
    /// renewed by logging in again (refresh style `relogin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_login: Option<SavedLogin>,
}

/// A login kept for renewing a session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedLogin {
    pub username: Secret,
    pub password: Secret,
}

/// Where an account stands. Changes between these are announced once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountState {
    #[default]
    Healthy,
    /// Refreshes fail for reasons that may pass (network, 5xx, 429).
    Failing,
    /// The grant is gone (invalid_grant, revoked): the user must reconnect.
    NeedsReconnect,
}

impl std::fmt::Display for AccountState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccountState::Healthy => "healthy",
            AccountState::Failing => "failing",
            AccountState::NeedsReconnect => "needs reconnect",
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub state: AccountState,
    /// The last refresh failure, for people (never holds a secret).
    pub last_error: Option<String>,
    /// Consecutive transient failures (drives the backoff).
    pub failures: u32,
    /// When the next refresh attempt is due after a failure.
    pub retry_at: Option<DateTime<Utc>>,
}

impl Record {
    pub const VERSION: u32 = 1;

    /// This record with every secret blanked, but whether each is there
    /// kept (a refresh token, a saved login): what views of an account
    /// need, and nothing they must not hold.
    pub fn redacted(mut self) -> Record {
        self.access_token = Secret::new("");
        if let Some(t) = &mut self.refresh_token {
            *t = Secret::new("");
        }
        if let Some(l) = &mut self.saved_login {
            l.username = Secret::new("");
            l.password = Secret::new("");
        }
        self
    }

    /// Every secret this record holds, for scrubbing output.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut v = vec![&self.access_token];
        if let Some(r) = &self.refresh_token {
            v.push(r);
        }
        if let Some(l) = &self.saved_login {
            v.push(&l.username);
            v.push(&l.password);
        }
        v
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    BadName(String),
    #[error("there is no account {id}; add it with `outreach accounts add {}`", id.platform)]
    NotFound { id: AccountId },
    #[error(
        "the record for {id} cannot be decrypted with the identity at {identity} (wrong key?); nothing was changed"
    )]
    WrongKey { id: AccountId, identity: PathBuf },
    #[error(
        "the record for {id} at {path} is corrupt or truncated ({detail}); nothing was changed — restore it from a backup or remove it with `outreach accounts remove {id}`"
    )]
    Corrupt {
        id: AccountId,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "another outreach process is writing the record for {id}; nothing was changed — try again when it has finished"
    )]
    Busy { id: AccountId },
    #[error("the identity file {path}: {detail}")]
    Identity { path: PathBuf, detail: String },
    #[error(
        "the identity file {path} is missing, but the store {store} holds {records} encrypted file(s) (such as {example}) that only that identity can decrypt; no new identity was made and the records were left untouched — restore the identity file from your backup to {path} (then `chmod 600` it) and run the command again. If it is lost for good, the records cannot be read: move {store} aside and the next run starts an empty store with a new identity"
    )]
    MissingIdentity {
        path: PathBuf,
        store: PathBuf,
        records: usize,
        example: PathBuf,
    },
    #[error(
        "another `outreach store rekey` is running on the store {dir}; nothing was changed — let it finish (if it was killed, run `outreach store rekey` again to finish its work)"
    )]
    Rekeying { dir: PathBuf },
    #[error(
        "the identity file {path} is missing, but the PostgreSQL store holds {records} encrypted row(s) that only that identity can decrypt; no new identity was made and nothing in the database was changed — restore the identity file from your backup to {path} (then `chmod 600` it) and run the command again"
    )]
    MissingIdentityDb { path: PathBuf, records: i64 },
    /// A PostgreSQL store's failure, already written for people: what
    /// failed, on which server (never its password), what to do.
    #[error("{0}")]
    Database(String),
    /// The I/O error is in the message, not the `source` (which `{:#}`
    /// would print a second time).
    #[error("{what} {path}: {error}")]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |error| StoreError::Io { what, path, error }
}

/// An account with when it was last saved ([`CredentialStore::saved_since`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    pub id: AccountId,
    pub at: DateTime<Utc>,
    /// Saved by this process (so not news to it).
    pub by_me: bool,
}

/// Where credentials live. The age-directory backend is the default;
/// [`PgStore`] keeps the same records, encrypted with age, in PostgreSQL.
pub trait CredentialStore: Send + Sync {
    fn load(&self, id: &AccountId) -> Result<Record, StoreError>;
    /// Write `record` atomically, replacing any previous version.
    fn save(&self, record: &Record) -> Result<(), StoreError>;
    fn list(&self) -> Result<Vec<AccountId>, StoreError>;
    /// The accounts of one platform (what resolving a post's targets needs,
    /// without listing every platform's).
    fn list_platform(&self, platform: &str) -> Result<Vec<AccountId>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|id| id.platform == platform)
            .collect())
    }
    /// Whether `id` is stored (without decrypting it).
    fn contains(&self, id: &AccountId) -> Result<bool, StoreError> {
        Ok(self.list_platform(&id.platform)?.contains(id))
    }
    /// For a backend other processes write to, which a daemon polls for
    /// their changes: every account with the time it was last saved,
    /// only those saved at or after `since` when given (the daemon asks
    /// for everything now and then, to see removals). `None`: this
    /// backend's changes are seen otherwise (the files backend's folder
    /// watcher).
    fn saved_since(&self, _since: Option<DateTime<Utc>>) -> Result<Option<Vec<Saved>>, StoreError> {
        Ok(None)
    }
    /// The record of `id` with its secrets blanked ([`Record::redacted`]),
    /// for views (status, dashboard, approvals) that never need them.
    /// Backends may answer from memory while the stored bytes are
    /// unchanged: views of every account must not cost a decryption each.
    fn load_view(&self, id: &AccountId) -> Result<Record, StoreError> {
        self.load(id).map(|r| r.redacted())
    }
    /// [`CredentialStore::load_view`] of every account, each with its
    /// record or why it cannot be read (a database answers this in one
    /// query).
    #[allow(clippy::type_complexity)]
    fn views(&self) -> Result<Vec<(AccountId, Result<Record, StoreError>)>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .map(|id| {
                let r = self.load_view(&id);
                (id, r)
            })
            .collect())
    }
    fn remove(&self, id: &AccountId) -> Result<(), StoreError>;
    /// Wait for, then hold, the right to refresh `id`: one refresher per
    /// account across every process sharing the store. Released on drop.
    /// Blocking.
    fn lease(&self, id: &AccountId) -> Result<Lease, StoreError>;
    /// A secret that belongs to no account (a Mastodon app registration),
    /// by a name of a-z, 0-9, `-`, `_`, `.`.
    fn load_aux(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn save_aux(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Forget the aux entry `name` (no error if there is none).
    fn remove_aux(&self, name: &str) -> Result<(), StoreError>;
    /// The names of every aux entry, sorted.
    fn aux_names(&self) -> Result<Vec<String>, StoreError>;
    /// `store rekey --add-recipient` done by the backend itself (the
    /// PostgreSQL store: every value sealed again, once, for every process
    /// on the database). `None`: not this way (the files backend's
    /// [`AgeDirStore::rekey`] does it).
    fn add_recipients(&self, _new: &[String]) -> Result<Option<usize>, StoreError> {
        Ok(None)
    }
    /// Where a single-use token exchange for `id` leaves its answer, for
    /// when the process that asked dies before storing it (see
    /// [`crate::escrow`]). `None`: this backend keeps no such answers and
    /// exchanges run in-process.
    fn escrow_slot(&self, _id: &AccountId) -> Option<EscrowSlot> {
        None
    }
    /// The sealed answer waiting for `id`, decrypted.
    fn read_answer(&self, _id: &AccountId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    /// Forget the answer for `id` (it has been applied, or is useless).
    fn clear_answer(&self, _id: &AccountId) -> Result<(), StoreError> {
        Ok(())
    }
    /// The refresh scheduler's next due time for `id` (`None`: none is
    /// scheduled), for a backend that keeps it beside the record so that
    /// scheduling is a query. The file backend keeps nothing.
    fn note_next_refresh(
        &self,
        _id: &AccountId,
        _at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Where an escrowed exchange for one account is coordinated: the lock its
/// sender holds, where its answer is sealed into, and the public keys it
/// is sealed to. It crosses a pipe to the escrow helper, a process of its
/// own, so it names places (paths, an environment variable), never
/// handles.
///
/// On the pipe, a files slot is what it always was (`lock`, `answer`,
/// `recipients`): the place's fields are flattened in, and which backend
/// it is follows from which fields are there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EscrowSlot {
    #[serde(flatten)]
    pub place: SlotPlace,
    pub recipients: Vec<String>,
}

/// The backend-specific half of an [`EscrowSlot`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SlotPlace {
    /// A lock file and an answer file beside the record.
    Files { lock: PathBuf, answer: PathBuf },
    /// An advisory lock and a row of the answers table in the database
    /// whose URL is in the environment variable `url_env` (the helper
    /// inherits it; the URL never crosses the pipe).
    Postgres {
        url_env: String,
        connect_retry_secs: u64,
        id: AccountId,
    },
}

/// A held exchange lock (see [`EscrowSlot::lock`]); released on drop.
pub enum SlotLock {
    File(File),
    Database(postgres::ExchangeLock),
}

impl EscrowSlot {
    /// The exchange lock, if it can be had at once without waiting or a
    /// round trip; `None`: call [`EscrowSlot::lock`] on a thread that may
    /// block.
    pub fn try_lock_now(&self) -> Option<SlotLock> {
        match &self.place {
            SlotPlace::Files { lock, .. } => OpenOptions::new()
                .write(true)
                .open(lock)
                .ok()
                .filter(|f| f.try_lock().is_ok())
                .map(SlotLock::File),
            SlotPlace::Postgres { .. } => None,
        }
    }

    /// Wait for, then hold, the exchange lock. Blocking.
    pub fn lock(&self) -> Result<SlotLock, StoreError> {
        match &self.place {
            SlotPlace::Files { lock, .. } => lock_file(lock).map(SlotLock::File),
            SlotPlace::Postgres {
                url_env,
                connect_retry_secs,
                id,
            } => postgres::ExchangeLock::take(url_env, *connect_retry_secs, id)
                .map(SlotLock::Database),
        }
    }

    /// Keep `sealed` (an answer already encrypted to
    /// [`EscrowSlot::recipients`]) where the next refresher finds it.
    /// Called with the exchange lock held.
    pub fn keep_answer(&self, sealed: &[u8]) -> Result<(), String> {
        match &self.place {
            SlotPlace::Files { answer, .. } => {
                write_atomic(answer, sealed).map_err(|e| e.to_string())
            }
            SlotPlace::Postgres {
                url_env,
                connect_retry_secs,
                id,
            } => postgres::keep_answer(url_env, *connect_retry_secs, id, sealed)
                .map_err(|e| e.to_string()),
        }
    }

    /// Whether an answer may be waiting, or an exchange in flight (false
    /// only when neither can be: no exchange ever ran here).
    pub fn may_be_busy(&self) -> bool {
        match &self.place {
            SlotPlace::Files { lock, answer } => answer.exists() || lock.exists(),
            SlotPlace::Postgres { .. } => true,
        }
    }

    /// Wait until no exchange holds the lock (another process's helper may
    /// still be sending one). Blocking.
    pub fn wait_idle(&self) -> Result<(), StoreError> {
        match &self.place {
            SlotPlace::Files { lock, .. } => lock_file(lock).map(drop),
            SlotPlace::Postgres {
                url_env,
                connect_retry_secs,
                id,
            } => postgres::wait_exchange(url_env, *connect_retry_secs, id),
        }
    }

    /// Where the answer is kept, for messages.
    pub fn describe(&self) -> String {
        match &self.place {
            SlotPlace::Files { answer, .. } => answer.display().to_string(),
            SlotPlace::Postgres { id, .. } => {
                format!("the PostgreSQL store's answers table (row {id})")
            }
        }
    }
}

/// Decrypted records beside the ciphertext each came from, per account,
/// for backends to reuse while the stored bytes are unchanged (publishing
/// reads every target's record per post; X25519 per read was a tenth of a
/// publish's CPU). Bounded: a full cache drops an entry, and the next read
/// of that account decrypts.
#[derive(Default)]
pub(crate) struct RecordCache(
    std::sync::Mutex<std::collections::HashMap<AccountId, (Vec<u8>, Record)>>,
);

impl RecordCache {
    const CAP: usize = 256;

    /// The record `sealed` decrypted to, if that is what was kept.
    pub(crate) fn get(&self, id: &AccountId, sealed: &[u8]) -> Option<Record> {
        let cache = self.0.lock().expect("record cache");
        cache
            .get(id)
            .filter(|(kept, _)| kept.as_slice() == sealed)
            .map(|(_, r)| r.clone())
    }

    /// Keep `record` with the ciphertext it is stored as.
    pub(crate) fn keep(&self, id: &AccountId, sealed: Vec<u8>, record: &Record) {
        let mut cache = self.0.lock().expect("record cache");
        if cache.len() >= Self::CAP
            && !cache.contains_key(id)
            && let Some(k) = cache.keys().next().cloned()
        {
            cache.remove(&k);
        }
        cache.insert(id.clone(), (sealed, record.clone()));
    }

    pub(crate) fn forget(&self, id: &AccountId) {
        self.0.lock().expect("record cache").remove(id);
    }
}

/// A held refresh lease; dropping it releases the lease.
pub struct Lease(#[allow(dead_code)] Box<dyn Send + Sync>);

/// The user's age identity: decrypts records; its current keys' recipients
/// encrypt them.
///
/// An identity file may hold several keys. While `store rekey` moves the
/// store to a new key, the file holds the new key first and, below a
/// marker line (`# outreach-rekey-retiring: …`), the key being retired:
/// both decrypt, only the keys above the marker encrypt. The standard
/// `age` tool ignores the comments and tries every key, so
/// `age -d -i identity.txt` opens every record at every instant of a rekey.
pub struct Identity {
    path: PathBuf,
    /// Every key that decrypts: the current keys first, then the keys an
    /// unfinished rekey is retiring (and those of a `.next` file an older
    /// version's interrupted rekey left).
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// How many of `identities` are current keys.
    current: usize,
    recipients: Vec<Box<dyn age::Recipient + Send + Sync>>,
    public: Vec<String>,
    /// The file names an unfinished rekey (the marker line is there).
    rekey_pending: bool,
    /// Where that rekey copied the previous identity file.
    retired_copy: Option<PathBuf>,
    /// How the file is sealed when it is passphrase-protected (`age -p`)
    /// or wrapped to an age plugin's key, so a rekey writes it back sealed
    /// the same way and a changed file can be read again.
    sealing: Option<Sealing>,
    /// The file as it was when read: a different one is read again.
    stamp: Option<Stamp>,
    /// The file's text as it was read (unsealed): a rekey of the file as
    /// it was read needs no second passphrase or plugin run.
    text: Zeroizing<String>,
    /// The age plugin identities (`AGE-PLUGIN-…`) that unwrap the file
    /// when it is wrapped to a plugin's key.
    plugin_identities: PathBuf,
}

/// How a sealed identity file is sealed.
#[derive(Clone)]
enum Sealing {
    /// With a passphrase (`age -p`).
    Passphrase {
        passphrase: SecretString,
        armored: bool,
        /// The scrypt work factor (log2 N) it was sealed with, kept when
        /// it is sealed again.
        work_factor: Option<u8>,
    },
    /// Encrypted to age recipients, an age plugin's among them
    /// (`age1yubikey1…`), and unwrapped with the plugin identities.
    Wrapped {
        /// Who it is encrypted to: from the note outreach writes into the
        /// file when it wraps it, else from the plugin identities'
        /// `# recipient:` comments. Empty: not known (a rekey, which
        /// must wrap the file again, says how to name them).
        recipients: Vec<String>,
        armored: bool,
    },
}

impl Sealing {
    fn passphrase(&self) -> Option<SecretString> {
        match self {
            Sealing::Passphrase { passphrase, .. } => Some(passphrase.clone()),
            Sealing::Wrapped { .. } => None,
        }
    }

    /// Whether the file can be sealed this way again; the reason when not.
    fn check(&self, path: &Path, plugin_identities: &Path) -> Result<(), StoreError> {
        match self {
            Sealing::Wrapped { recipients, .. } if recipients.is_empty() => {
                Err(StoreError::Identity {
                    path: path.to_path_buf(),
                    detail: format!(
                        "is wrapped to an age plugin's key, but which recipient it is wrapped to is not known, so it cannot be wrapped again; nothing was changed — add a line `# recipient: age1…` (the key's recipient) to {}, or name it with `outreach store rekey --wrap-with age1…`",
                        plugin_identities.display()
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The line outreach writes into a wrapped identity file's text, once
/// per recipient it is wrapped to, so that a rekey can wrap the new key
/// to the same recipients.
const WRAP_NOTE: &str = "# outreach-wrapped-to:";

/// The recipients a wrapped identity's text names.
fn wrap_notes(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(WRAP_NOTE))
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

/// `text` with wrap notes naming `recipients` (first, before anything
/// else) instead of the ones it had.
fn with_wrap_notes(text: &str, recipients: &[String]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(text.len() + 80 * recipients.len()));
    for r in recipients {
        s.push_str(WRAP_NOTE);
        s.push(' ');
        s.push_str(r);
        s.push('\n');
    }
    for line in text.split_inclusive('\n') {
        if !line.trim_start().starts_with(WRAP_NOTE) {
            s.push_str(line);
        }
    }
    s
}

pub use crate::config::default_plugin_identities;

/// The scrypt work factor in the header of a passphrase-sealed age file.
fn scrypt_work_factor(raw: &[u8]) -> Option<u8> {
    let mut binary = Vec::new();
    age::armor::ArmoredReader::new(BufReader::new(raw))
        .take(4096)
        .read_to_end(&mut binary)
        .ok()?;
    let header = String::from_utf8_lossy(&binary);
    header
        .lines()
        .find_map(|l| l.strip_prefix("-> scrypt "))
        .and_then(|args| args.split(' ').nth(1))
        .and_then(|n| n.trim().parse().ok())
        .filter(|n| (1..64).contains(n))
}

/// Which version of a file was read: a rename over it or a write changes
/// one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

/// The line in an identity file above which are the keys a rekey moves
/// the store to, and below which the keys it retires.
const REKEY_MARKER: &str = "# outreach-rekey-retiring:";

/// Split an identity file's text into its current part and, when a rekey
/// is unfinished, the retiring part and where the previous file was kept.
fn split_rekey(text: &str) -> (&str, Option<(&str, Option<PathBuf>)>) {
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.trim_start().strip_prefix(REKEY_MARKER) {
            let kept = rest.trim();
            let kept = (!kept.is_empty()).then(|| PathBuf::from(kept));
            return (&text[..off], Some((&text[off + line.len()..], kept)));
        }
        off += line.len();
    }
    (text, None)
}

/// An identity file holding `new` (current) and `old` (retiring).
fn compose_rekey(new: &str, retired_copy: &Path, old: &str) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(new.len() + old.len() + 400));
    s.push_str(new);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(REKEY_MARKER);
    s.push(' ');
    s.push_str(&retired_copy.display().to_string());
    s.push_str(
        "\n# `outreach store rekey` is moving every record to the key above; the key\n\
         # below is removed when it has finished. If it was interrupted, run\n\
         # `outreach store rekey` again to finish. Both keys open every record.\n",
    );
    s.push_str(old);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// What opens a sealed identity file: its passphrase (asked for only when
/// it is passphrase-protected) and the plugin identities (read, and their
/// plugin run, only when it is wrapped to an age plugin's key).
struct Unlock<'a> {
    passphrase: &'a mut dyn FnMut() -> Option<SecretString>,
    plugin_identities: &'a Path,
}

/// The identity file at `path`: its text (unsealed when it is
/// passphrase-protected or wrapped to a plugin's key), its sealing and
/// its stamp.
fn read_identity(
    path: &Path,
    unlock: &mut Unlock<'_>,
) -> Result<(Zeroizing<String>, Option<Sealing>, Stamp), StoreError> {
    let mut f = File::open(path).map_err(io("cannot read the identity file", path))?;
    let meta = f
        .metadata()
        .map_err(io("cannot read the identity file", path))?;
    let mut raw = Zeroizing::new(Vec::new());
    f.read_to_end(&mut raw)
        .map_err(io("cannot read the identity file", path))?;
    warn_if_exposed_meta(path, &meta, "the age identity file");
    let bad = |detail: String| StoreError::Identity {
        path: path.to_path_buf(),
        detail,
    };
    if !is_age_file(&raw) {
        let text = std::str::from_utf8(&raw)
            .map_err(|_| bad("is not a text age identity file".into()))?
            .to_string();
        return Ok((Zeroizing::new(text), None, Stamp::of(&meta)));
    }
    let armored = raw.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----");
    let header = age::Decryptor::new(age::armor::ArmoredReader::new(BufReader::new(&raw[..])))
        .map_err(|e| bad(format!("is an age file whose header cannot be read ({e})")))?;
    let (plain, sealing) = if header.is_scrypt() {
        let pass = (unlock.passphrase)().ok_or_else(|| {
            bad("is passphrase-protected; set OUTREACH_IDENTITY_PASSPHRASE or run in a terminal to be asked".into())
        })?;
        let ident = age::scrypt::Identity::new(pass.clone());
        let plain = decrypt_bytes(&raw, &[&ident as &dyn age::Identity])
            .map_err(|e| bad(format!("cannot be unlocked with that passphrase ({e})")))?;
        let sealing = Sealing::Passphrase {
            passphrase: pass,
            armored,
            work_factor: scrypt_work_factor(&raw),
        };
        (Zeroizing::new(plain), sealing)
    } else {
        // Encrypted to recipients: a key an age plugin holds.
        let pi = unlock.plugin_identities;
        let keys = age_plugin::PluginKeys::read(pi)
            .map_err(|e| bad(format!("is wrapped to an age plugin's key, and {e}")))?
            .ok_or_else(|| {
                bad(format!(
                    "is wrapped to an age plugin's key (it is not passphrase-protected), and outreach unwraps it with the plugin's identities (AGE-PLUGIN-…), looked for in {}, which does not exist: save the key's identity there (for a YubiKey: `age-plugin-yubikey --identity > {}`), or name its file with `identity_plugin` under [paths] in the config",
                    pi.display(),
                    pi.display()
                ))
            })?;
        let plain = keys
            .unwrap(&raw)
            .map_err(|e| bad(format!("{e}; nothing was changed")))?;
        let text = std::str::from_utf8(&plain)
            .map_err(|_| bad("unwraps to something that is not an identity file".into()))?;
        let mut recipients = wrap_notes(text);
        if recipients.is_empty() {
            recipients = keys.recipients.clone();
        }
        (
            plain,
            Sealing::Wrapped {
                recipients,
                armored,
            },
        )
    };
    let text = String::from_utf8(plain.to_vec())
        .map_err(|_| bad("decrypts to something that is not an identity file".into()))?;
    Ok((Zeroizing::new(text), Some(sealing), Stamp::of(&meta)))
}

/// `text` encrypted to `recipients`, armored or not.
fn seal_text(
    recipients: &[&dyn age::Recipient],
    text: &str,
    armored: bool,
) -> Result<Vec<u8>, String> {
    let enc = age::Encryptor::with_recipients(recipients.iter().copied())
        .map_err(|e| age_plugin::encrypt_error(&e))?;
    let mut out = Vec::new();
    (|| -> std::io::Result<()> {
        if armored {
            let armor =
                age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)?;
            let mut w = enc.wrap_output(armor)?;
            w.write_all(text.as_bytes())?;
            w.finish()?.finish()?;
        } else {
            let mut w = enc.wrap_output(&mut out)?;
            w.write_all(text.as_bytes())?;
            w.finish()?;
        }
        Ok(())
    })()
    .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Write an identity file atomically (0600), sealed as it was: with its
/// passphrase, or wrapped to the same recipients.
fn write_identity(path: &Path, text: &str, sealing: Option<&Sealing>) -> Result<(), StoreError> {
    let failed = |detail: String| StoreError::Identity {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = match sealing {
        None => Zeroizing::new(text.as_bytes().to_vec()),
        Some(Sealing::Passphrase {
            passphrase,
            armored,
            work_factor,
        }) => {
            let mut scrypt = age::scrypt::Recipient::new(passphrase.clone());
            if let Some(n) = work_factor {
                scrypt.set_work_factor(*n);
            }
            Zeroizing::new(
                seal_text(&[&scrypt as &dyn age::Recipient], text, *armored).map_err(|e| {
                    failed(format!("cannot be sealed with its passphrase again ({e})"))
                })?,
            )
        }
        Some(Sealing::Wrapped {
            recipients,
            armored,
        }) => {
            let text = with_wrap_notes(text, recipients);
            let to = age_plugin::recipients_for(recipients)
                .map_err(|e| failed(format!("cannot be wrapped: {e}")))?;
            let refs: Vec<&dyn age::Recipient> = to
                .iter()
                .map(|r| r.as_ref() as &dyn age::Recipient)
                .collect();
            Zeroizing::new(
                seal_text(&refs, &text, *armored)
                    .map_err(|e| failed(format!("cannot be wrapped ({e})")))?,
            )
        }
    };
    write_atomic(path, &bytes).map_err(io("cannot write the identity file", path))
}

impl Identity {
    /// Load the identity at `path`, creating a new X25519 identity (0600)
    /// if there is none. An identity file that is itself age-encrypted with
    /// a passphrase is decrypted with `passphrase` (from
    /// `OUTREACH_IDENTITY_PASSPHRASE` or a prompt, chosen by the caller);
    /// one wrapped to an age plugin's key is unwrapped with the plugin
    /// identities at [`default_plugin_identities`].
    ///
    /// Creates without looking at any store: for a store that holds
    /// records use [`Identity::open_for_store`], which refuses to.
    pub fn load_or_create(
        path: &Path,
        passphrase: impl FnOnce() -> Option<String>,
    ) -> Result<Self, StoreError> {
        if !path.exists() {
            Self::create(path)?;
        }
        Self::load(path, passphrase)
    }

    /// Load the identity that decrypts the store at `store`. When the file
    /// is missing, a new identity is created only if the store holds no
    /// encrypted file (no `*.age`, no escrowed `.ACCOUNT.answer`): records
    /// without their identity are an error that changes nothing, never a
    /// reason to make a key that cannot read them.
    pub fn open_for_store(
        path: &Path,
        store: &Path,
        passphrase: impl FnOnce() -> Option<String>,
    ) -> Result<Self, StoreError> {
        Self::open_for_store_with(path, store, passphrase, &default_plugin_identities(path))
    }

    /// [`Identity::open_for_store`], unwrapping an identity file wrapped
    /// to an age plugin's key with the plugin identities at
    /// `plugin_identities` (`[paths] identity_plugin`): the plugin runs
    /// once, here.
    pub fn open_for_store_with(
        path: &Path,
        store: &Path,
        passphrase: impl FnOnce() -> Option<String>,
        plugin_identities: &Path,
    ) -> Result<Self, StoreError> {
        match fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (records, example) = encrypted_files(store);
                if let Some(example) = example {
                    return Err(StoreError::MissingIdentity {
                        path: path.to_path_buf(),
                        store: store.to_path_buf(),
                        records,
                        example,
                    });
                }
                Self::create(path)?;
            }
            _ => {}
        }
        Self::load_with_plugins(path, passphrase, plugin_identities)
    }

    /// Load the identity at `path`, which must exist.
    pub fn load(
        path: &Path,
        passphrase: impl FnOnce() -> Option<String>,
    ) -> Result<Self, StoreError> {
        Self::load_with_plugins(path, passphrase, &default_plugin_identities(path))
    }

    /// Load the identity at `path`, which must exist, unwrapping it with
    /// the plugin identities at `plugin_identities` when it is wrapped to
    /// an age plugin's key.
    pub fn load_with_plugins(
        path: &Path,
        passphrase: impl FnOnce() -> Option<String>,
        plugin_identities: &Path,
    ) -> Result<Self, StoreError> {
        let mut ask = Some(passphrase);
        Self::load_with(
            path,
            &mut Unlock {
                passphrase: &mut || ask.take().and_then(|f| f()).map(SecretString::from),
                plugin_identities,
            },
        )
    }

    fn load_with(path: &Path, unlock: &mut Unlock<'_>) -> Result<Self, StoreError> {
        let (text, sealing, stamp) = read_identity(path, unlock)?;
        let mut ident = Self::from_text(path, &text)?;
        ident.sealing = sealing;
        ident.stamp = Some(stamp);
        ident.text = text;
        ident.plugin_identities = unlock.plugin_identities.to_path_buf();
        // An older version's interrupted `store rekey` left the next
        // identity beside this one; records it already rewrote must stay
        // readable (the next rekey moves that key into this file).
        let next = next_path(path);
        if let Ok(t) = fs::read_to_string(&next) {
            let t = Zeroizing::new(t);
            ident
                .identities
                .extend(Self::from_section(&next, &t)?.identities);
        }
        Ok(ident)
    }

    /// The identity a file's text holds, with a rekey's retiring keys.
    fn from_text(path: &Path, text: &str) -> Result<Self, StoreError> {
        let (current, retiring) = split_rekey(text);
        let mut ident = Self::from_section(path, current)?;
        if let Some((old, kept)) = retiring {
            let old = Self::from_section(path, old)?;
            ident.identities.extend(old.identities);
            ident.rekey_pending = true;
            ident.retired_copy = kept;
        }
        Ok(ident)
    }

    /// The keys in one part of an identity file; every key encrypts.
    fn from_section(path: &Path, text: &str) -> Result<Self, StoreError> {
        let bad = |detail: String| StoreError::Identity {
            path: path.to_path_buf(),
            detail,
        };
        let mut recipients: Vec<Box<dyn age::Recipient + Send + Sync>> = Vec::new();
        let mut public = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with("AGE-PLUGIN-") {
                // Every record read would run the plugin (a touch per
                // record): the plugin wraps this file instead.
                return Err(bad(
                    "holds an age plugin identity (AGE-PLUGIN-…); outreach keeps an X25519 key in the identity file and lets the plugin unwrap the file once at start — move the AGE-PLUGIN line to the plugin identities file (`identity_plugin` under [paths], by default identity-plugin.txt beside the identity file) and wrap the identity with `outreach store rekey --wrap-with age1…` (the plugin key's recipient)".into(),
                ));
            }
            if line.starts_with("AGE-SECRET-KEY-") {
                let id: age::x25519::Identity = line
                    .parse()
                    .map_err(|e| bad(format!("holds a malformed key ({e})")))?;
                public.push(id.to_public().to_string());
                recipients.push(Box::new(id.to_public()));
            }
        }
        let identities = age::IdentityFile::from_buffer(text.as_bytes())
            .map_err(|e| bad(format!("cannot be parsed ({e})")))?
            .into_identities()
            .map_err(|e| bad(format!("cannot be used ({e})")))?;
        if identities.is_empty() || recipients.is_empty() {
            return Err(bad("holds no AGE-SECRET-KEY line".into()));
        }
        Ok(Identity {
            path: path.to_path_buf(),
            current: identities.len(),
            identities,
            recipients,
            public,
            rekey_pending: false,
            retired_copy: None,
            sealing: None,
            stamp: None,
            text: Zeroizing::new(text.to_string()),
            plugin_identities: default_plugin_identities(path),
        })
    }

    /// The text of a new identity file with a fresh X25519 key.
    fn new_key_text() -> Zeroizing<String> {
        let key = age::x25519::Identity::generate();
        Zeroizing::new(format!(
            "# outreach credential store identity, created {}\n# public key: {}\n{}\n",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            key.to_public(),
            key.to_string().expose_secret()
        ))
    }

    fn create(path: &Path) -> Result<(), StoreError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io("cannot create the directory", dir))?;
        }
        write_identity(path, &Self::new_key_text(), None)?;
        tracing::info!(path = %path.display(), "created a new age identity; back it up — without it the store cannot be read");
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identities that decrypt records.
    fn readers(&self) -> Vec<&dyn age::Identity> {
        self.identities
            .iter()
            .map(|i| i.as_ref() as &dyn age::Identity)
            .collect()
    }

    /// The current keys only (not those a rekey is retiring).
    fn current_readers(&self) -> Vec<&dyn age::Identity> {
        self.identities[..self.current]
            .iter()
            .map(|i| i.as_ref() as &dyn age::Identity)
            .collect()
    }

    /// The public keys (`age1…`) records are encrypted to.
    pub fn public_keys(&self) -> &[String] {
        &self.public
    }

    /// Whether a `store rekey` was interrupted (run it again to finish).
    pub fn rekey_pending(&self) -> bool {
        self.rekey_pending
    }

    /// The recipients the identity file is wrapped to, when it is wrapped
    /// to an age plugin's key (empty when which ones is not known).
    pub fn wrapped_to(&self) -> Option<&[String]> {
        match &self.sealing {
            Some(Sealing::Wrapped { recipients, .. }) => Some(recipients),
            _ => None,
        }
    }

    /// Where the plugin identities that unwrap a wrapped identity file are
    /// looked for.
    pub fn plugin_identities(&self) -> &Path {
        &self.plugin_identities
    }
}

/// How many encrypted files (`*.age`, escrowed `.ACCOUNT.answer`) the
/// store folder holds, and one of them.
fn encrypted_files(store: &Path) -> (usize, Option<PathBuf>) {
    fn walk(dir: &Path, depth: u32, n: &mut usize, first: &mut Option<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            if kind.is_dir() {
                if depth < 3 {
                    walk(&e.path(), depth + 1, n, first);
                }
            } else if name.ends_with(".age") || (name.starts_with('.') && name.ends_with(".answer"))
            {
                *n += 1;
                if first.is_none() {
                    *first = Some(e.path());
                }
            }
        }
    }
    let (mut n, mut first) = (0, None);
    walk(store, 0, &mut n, &mut first);
    (n, first)
}

/// Where an older version's `store rekey` kept the identity it was moving to.
fn next_path(identity: &Path) -> PathBuf {
    let mut p = identity.as_os_str().to_owned();
    p.push(".next");
    PathBuf::from(p)
}

/// A name beside `identity` for a copy of it: `….retired-DATE` (with a
/// suffix when that name is taken).
fn retired_path(identity: &Path) -> PathBuf {
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    for n in 1.. {
        let mut p = identity.as_os_str().to_owned();
        p.push(format!(".retired-{stamp}"));
        if n > 1 {
            p.push(format!("-{n}"));
        }
        let p = PathBuf::from(p);
        if fs::symlink_metadata(&p).is_err() {
            return p;
        }
    }
    unreachable!("some suffix is free")
}

/// Warn, once per process and file, when `path` is open to group or others.
pub fn warn_if_exposed(path: &Path, what: &str) {
    if let Ok(meta) = fs::metadata(path) {
        warn_if_exposed_meta(path, &meta, what);
    }
}

/// Whether a file's mode lets group or others read or write it.
fn exposed(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o077 != 0
}

fn warn_if_exposed_meta(path: &Path, meta: &fs::Metadata, what: &str) {
    if exposed(meta) && first_warning(path) {
        tracing::warn!(
            "{what} {} is open to other users (mode {:04o}); only you should be able to read it — fix it with `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o7777,
            path.display()
        );
    }
}

/// True the first time this process asks about `path`.
fn first_warning(path: &Path) -> bool {
    static WARNED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<PathBuf>>> =
        std::sync::LazyLock::new(Default::default);
    WARNED
        .lock()
        .map(|mut w| w.insert(path.to_path_buf()))
        .unwrap_or(false)
}

/// What `rekey` did.
#[derive(Debug)]
pub struct RekeyReport {
    pub records: usize,
    pub recipients: Vec<String>,
    /// Where the previous identity now lives, when it was replaced.
    pub retired: Option<PathBuf>,
    /// The recipients the identity file is wrapped to (empty: it is not
    /// wrapped to an age plugin's key).
    pub wrapped_to: Vec<String>,
}

/// How the identity file at `path` is sealed when it is wrapped to
/// `recipients`, once it is known that the plugin identities at
/// `plugin_identities` open what is wrapped to them: a probe is wrapped
/// and unwrapped (each plugin runs; a hardware key asks for its touch),
/// so a wrap never leaves an identity file nothing here opens.
fn wrapping(
    path: &Path,
    recipients: &[String],
    plugin_identities: &Path,
) -> Result<Sealing, StoreError> {
    let unchanged = |detail: String| StoreError::Identity {
        path: path.to_path_buf(),
        detail: format!("was not wrapped: {detail}; nothing was changed"),
    };
    for r in recipients {
        age_plugin::check_recipient(r).map_err(unchanged)?;
    }
    if !recipients
        .iter()
        .any(|r| age_plugin::plugin_of(r).is_some())
    {
        return Err(unchanged(
            "--wrap-with needs the recipient of a key an age plugin holds (age1yubikey1…, age1tpm1…); X25519 keys may be added beside it as offline spares".into(),
        ));
    }
    let pi = plugin_identities.display();
    let keys = age_plugin::PluginKeys::read(plugin_identities)
        .map_err(unchanged)?
        .ok_or_else(|| {
            unchanged(format!(
                "outreach would unwrap it at start with the plugin's identities (AGE-PLUGIN-…) in {pi}, which does not exist — save the key's identity there first (for a YubiKey: `age-plugin-yubikey --identity > {pi}`), or name its file with `identity_plugin` under [paths] in the config"
            ))
        })?;
    let to = age_plugin::recipients_for(recipients).map_err(unchanged)?;
    let refs: Vec<&dyn age::Recipient> = to
        .iter()
        .map(|r| r.as_ref() as &dyn age::Recipient)
        .collect();
    const PROBE: &str = "outreach: can the plugin identities open what is wrapped?";
    let probe = seal_text(&refs, PROBE, false)
        .map_err(|e| unchanged(format!("cannot encrypt to {} ({e})", recipients.join(", "))))?;
    let opened = keys
        .unwrap(&probe)
        .map_err(|e| unchanged(format!("a probe wrapped to {} {e}", recipients.join(", "))))?;
    if opened.as_slice() != PROBE.as_bytes() {
        return Err(unchanged(format!(
            "a probe wrapped to {} came back changed from the plugin",
            recipients.join(", ")
        )));
    }
    Ok(Sealing::Wrapped {
        recipients: recipients.to_vec(),
        armored: false,
    })
}

fn is_age_file(raw: &[u8]) -> bool {
    raw.starts_with(b"age-encryption.org/")
        || raw.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
}

/// What a failed decryption of `id`'s file at `path` means for the user.
fn decrypt_error(e: age::DecryptError, id: &AccountId, path: &Path, identity: &Path) -> StoreError {
    match e {
        age::DecryptError::NoMatchingKeys => StoreError::WrongKey {
            id: id.clone(),
            identity: identity.to_path_buf(),
        },
        other => StoreError::Corrupt {
            id: id.clone(),
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

fn decrypt_bytes(raw: &[u8], ids: &[&dyn age::Identity]) -> Result<Vec<u8>, age::DecryptError> {
    let reader = age::armor::ArmoredReader::new(BufReader::new(raw));
    let dec = age::Decryptor::new(reader)?;
    let mut out = Vec::new();
    dec.decrypt(ids.iter().copied())?
        .read_to_end(&mut out)
        .map_err(age::DecryptError::Io)?;
    Ok(out)
}

fn encrypt_to(recipients: &[&dyn age::Recipient], plain: &[u8]) -> Result<Vec<u8>, String> {
    let enc = age::Encryptor::with_recipients(recipients.iter().copied())
        .map_err(|e| age_plugin::encrypt_error(&e))?;
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).map_err(|e| e.to_string())?;
    w.write_all(plain).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// The lock files the store keeps beside an account's record, named in
/// one place so that every process taking them (refresh, rekey, escrow,
/// backup) agrees: the record's writer lock, the refresh lease, and the
/// exchange lock the escrow helper holds until an answer is sealed.
pub fn record_lock_path(dir: &Path, account: &str) -> PathBuf {
    dir.join(format!(".{account}.lock"))
}
pub fn lease_path(dir: &Path, account: &str) -> PathBuf {
    dir.join(format!(".{account}.refresh"))
}
pub fn exchange_path(dir: &Path, account: &str) -> PathBuf {
    dir.join(format!(".{account}.exchange"))
}
/// Held by `store rekey` for its whole run (and by a backup, so that one
/// backup's records and identity belong to the same keys).
pub fn rekey_lock_path(store: &Path) -> PathBuf {
    store.join(".rekey.lock")
}

fn open_lock(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io("cannot open the lock file", path))
}

/// Open (creating, 0600) and exclusively lock the lock file at `path`,
/// waiting for whoever holds it. Blocking; released when the file drops.
pub fn lock_file(path: &Path) -> Result<File, StoreError> {
    let f = open_lock(path)?;
    f.lock().map_err(io("cannot lock", path))?;
    Ok(f)
}

/// Exclusively lock the lock file at `path`, waiting at most `patience`
/// for whoever holds it: `None` if it is still held then.
pub fn lock_file_within(path: &Path, patience: Duration) -> Result<Option<File>, StoreError> {
    let f = open_lock(path)?;
    let deadline = Instant::now() + patience;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(io("cannot lock", path)(e)),
        }
    }
}

/// An aux entry's name: 1-128 of a-z, 0-9, `-`, `_`, `.`, not starting
/// with `.`.
fn check_aux_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName(format!(
            "`{name}` is not a valid store entry name"
        )))
    }
}

/// Encrypt `plain` to age recipients: X25519 public keys (`age1…`) and
/// age plugins' recipients (`age1yubikey1…`, whose plugin runs once).
pub fn seal_to(recipients: &[String], plain: &[u8]) -> Result<Vec<u8>, String> {
    let parsed = age_plugin::recipients_for(recipients)?;
    let refs: Vec<&dyn age::Recipient> = parsed
        .iter()
        .map(|r| r.as_ref() as &dyn age::Recipient)
        .collect();
    encrypt_to(&refs, plain)
}

/// Write `bytes` to `path` atomically with mode 0600: a temp file beside it,
/// fsync, rename over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The default backend: one age file per account in a directory.
pub struct AgeDirStore {
    dir: PathBuf,
    /// The identity as last read; read again when its file changes (a
    /// `store rekey` in another process moved the store to a new key).
    identity: std::sync::RwLock<Arc<Identity>>,
    /// A changed identity file that could not be read: not retried until
    /// it changes again.
    unreadable: std::sync::Mutex<Option<Stamp>>,
    /// Extra recipients every record is also encrypted to (`.recipients`):
    /// X25519 keys, or age plugins' recipients (whose plugin runs once per
    /// write, to wrap the record's file key; reading never runs it).
    extra_keys: Vec<String>,
    /// Ciphertext → the record it decrypted to, per account.
    decrypted: RecordCache,
    /// SHA-256 of the ciphertext → the record without its secrets, per
    /// account, for [`CredentialStore::load_view`]: every account's, since
    /// it holds nothing secret (a dashboard of 1,000 accounts must not
    /// decrypt 1,000 files per look).
    /// The file's [`Stamp`] when it was last read for a view: while it is
    /// unchanged the file is not even opened (each open of a watched file
    /// wakes the daemon's file watcher).
    views: std::sync::Mutex<std::collections::HashMap<AccountId, (Stamp, [u8; 32], Arc<Record>)>>,
}

/// One encrypted file of the store, as a rekey rewrites it.
enum Sealed {
    Record(AccountId),
    /// A secret of no account (`.aux/NAME.age`).
    Aux(String),
    /// An escrowed token answer (`.ACCOUNT.answer`).
    Answer(AccountId),
}

/// The process that wrote a temp file `.NAME.tmp-PID`, if `name` is one.
fn temp_writer(name: &str) -> Option<u32> {
    let (_, pid) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    pid.parse().ok()
}

/// Whether the temp file `name` was left by a writer that is gone: its
/// process no longer runs, or it is older than any write takes.
fn stale_temp(name: &str, meta: &fs::Metadata) -> bool {
    let Some(pid) = temp_writer(name) else {
        return false;
    };
    if pid == std::process::id() {
        return false;
    }
    let dead = Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists();
    let old = meta
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(3600));
    dead || old
}

/// Remove the temp files dead writers left in the store and beside the
/// identity file (a write killed before its rename), and warn about
/// encrypted files that other users can read.
fn sweep(dir: &Path, identity: &Path) {
    let mut exposed_files = Vec::new();
    let mut visit = |d: &Path, keep: &dyn Fn(&str) -> bool, check: bool| {
        let Ok(entries) = fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() || !keep(&name) {
                continue;
            }
            if stale_temp(&name, &meta) {
                match fs::remove_file(e.path()) {
                    Ok(()) => {
                        tracing::debug!(path = %e.path().display(), "removed a temp file a killed writer left")
                    }
                    Err(err) => tracing::warn!(
                        "cannot remove {}, a temp file a killed writer left ({err}); remove it by hand",
                        e.path().display()
                    ),
                }
            } else if check
                && (name.ends_with(".age") || (name.starts_with('.') && name.ends_with(".answer")))
                && exposed(&meta)
            {
                exposed_files.push((e.path(), meta));
            }
        }
    };
    visit(dir, &|_| true, true);
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                visit(&e.path(), &|_| true, true);
            }
        }
    }
    if let (Some(parent), Some(name)) = (identity.parent(), identity.file_name()) {
        let prefix = format!(".{}", name.to_string_lossy());
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        visit(parent, &|n| n.starts_with(&prefix), false);
    }
    const NAMED: usize = 5;
    for (path, meta) in exposed_files.iter().take(NAMED) {
        warn_if_exposed_meta(path, meta, "the encrypted store file");
    }
    if exposed_files.len() > NAMED && first_warning(&dir.join("*")) {
        tracing::warn!(
            "{} more encrypted files in {} are open to other users; `chmod -R go-rwx {}` fixes them all",
            exposed_files.len() - NAMED,
            dir.display(),
            dir.display()
        );
    }
}

impl AgeDirStore {
    /// Open the store at `dir` (created if missing). Removes the temp files
    /// of writers that were killed, and warns about files other users can
    /// read.
    pub fn open(dir: &Path, identity: Identity) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io("cannot create the store directory", dir))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        sweep(dir, identity.path());
        if identity.rekey_pending && first_warning(&identity.path.join("rekey")) {
            tracing::warn!(
                "an `outreach store rekey` was interrupted: {} holds the new key and the one it replaces (both open every record{}); run `outreach store rekey` to finish",
                identity.path.display(),
                identity
                    .retired_copy
                    .as_ref()
                    .map(|p| format!("; a copy of the file as it was is at {}", p.display()))
                    .unwrap_or_default()
            );
        }
        let list = dir.join(".recipients");
        let mut extra_keys = Vec::new();
        if let Ok(text) = fs::read_to_string(&list) {
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                age_plugin::check_recipient(line).map_err(|detail| StoreError::Identity {
                    path: list.clone(),
                    detail,
                })?;
                extra_keys.push(line.to_string());
            }
        }
        Ok(AgeDirStore {
            dir: dir.to_path_buf(),
            identity: std::sync::RwLock::new(Arc::new(identity)),
            unreadable: Default::default(),
            extra_keys,
            decrypted: Default::default(),
            views: Default::default(),
        })
    }

    /// The identity, read again if its file changed since it was read.
    fn ident(&self) -> Arc<Identity> {
        let cur = self.identity.read().expect("identity").clone();
        let Ok(meta) = fs::metadata(&cur.path) else {
            return cur;
        };
        let now = Stamp::of(&meta);
        if cur.stamp.is_none_or(|s| s == now) {
            return cur;
        }
        let mut failed = self.unreadable.lock().expect("identity");
        if *failed == Some(now) {
            return cur;
        }
        let mut pass = cur.sealing.as_ref().and_then(Sealing::passphrase);
        let mut unlock = Unlock {
            passphrase: &mut || pass.take(),
            plugin_identities: &cur.plugin_identities,
        };
        match Identity::load_with(&cur.path, &mut unlock) {
            Ok(new) => {
                let new = Arc::new(new);
                *self.identity.write().expect("identity") = new.clone();
                *failed = None;
                new
            }
            Err(e) => {
                tracing::warn!(
                    "the identity file changed and cannot be read again ({e}); the keys read before stay in use — restart outreach once the file is right"
                );
                *failed = Some(now);
                cur
            }
        }
    }

    /// The store's identity gate: writers hold it shared while they encrypt
    /// and write, a rekey holds it alone while it changes the identity
    /// file. So once a rekey has put its new key in, every write that
    /// follows sees it, and every write before has landed where the rekey
    /// looks.
    fn gate(&self, alone: bool) -> Result<File, StoreError> {
        let path = self.dir.join(".identity.lock");
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("cannot open the lock file", &path))?;
        if alone { f.lock() } else { f.lock_shared() }.map_err(io("cannot lock", &path))?;
        Ok(f)
    }

    /// Re-encrypt every record (and escrowed answer and auxiliary secret):
    /// to a new identity, or, with `add_recipients`, to the current
    /// identity plus those recipients.
    ///
    /// The identity file opens every record at every instant: the new key
    /// is first added to it (above the current key, which is copied to
    /// `…retired-DATE` before), each file is rewritten atomically, and only
    /// when every file opens with the new key alone is the old key taken
    /// out of the identity file. A passphrase-protected identity file stays
    /// sealed with its passphrase, a wrapped one wrapped to the same
    /// recipients. An interrupted run is finished by the next one, which
    /// goes on with the key the interrupted run added.
    pub fn rekey(
        &self,
        identity_path: &Path,
        add_recipients: &[String],
    ) -> Result<RekeyReport, StoreError> {
        self.rekey_with(identity_path, add_recipients, &[])
    }

    /// [`AgeDirStore::rekey`], and with `wrap_with` the identity file is
    /// from then on wrapped to those recipients (an age plugin's key among
    /// them: `age1yubikey1…`) and unwrapped with the plugin identities at
    /// start. Before anything changes, a probe wrapped to them must unwrap
    /// with those plugin identities. Without `add_recipients` the store
    /// also moves to a new key, which is never on disk unwrapped.
    ///
    /// Recipients of age plugins (in `add_recipients` too) need their
    /// plugin on PATH; a missing one, or a plugin that refuses, is an
    /// error before anything changes.
    pub fn rekey_with(
        &self,
        identity_path: &Path,
        add_recipients: &[String],
        wrap_with: &[String],
    ) -> Result<RekeyReport, StoreError> {
        // One rekey at a time.
        let Some(_run) = lock_file_within(&rekey_lock_path(&self.dir), Duration::ZERO)? else {
            return Err(StoreError::Rekeying {
                dir: self.dir.clone(),
            });
        };
        let list = self.dir.join(".recipients");
        let mut keys = self.extra_keys.clone();
        for k in add_recipients {
            age_plugin::check_recipient(k).map_err(|detail| StoreError::Identity {
                path: list.clone(),
                detail: format!("{detail}; nothing was changed"),
            })?;
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        let unchanged = |detail: String| StoreError::Identity {
            path: list.clone(),
            detail: format!("{detail}; nothing was changed"),
        };
        let extra = age_plugin::recipients_for(&keys).map_err(unchanged)?;
        if add_recipients
            .iter()
            .any(|k| age_plugin::plugin_of(k).is_some())
        {
            // The plugins run, and accept their recipients, before any
            // record depends on them.
            let refs: Vec<&dyn age::Recipient> = extra
                .iter()
                .map(|r| r.as_ref() as &dyn age::Recipient)
                .collect();
            encrypt_to(&refs, b"outreach recipient probe")
                .map_err(|e| unchanged(format!("cannot encrypt to the recipients ({e})")))?;
        }
        // The identity file as it is now (it may have changed since this
        // store read it).
        let known = self.ident();
        let (text, sealing) = self.identity_text(identity_path, &known)?;
        let pending = split_rekey(&text).1.is_some();
        let moving = pending || add_recipients.is_empty();
        let sealing = if wrap_with.is_empty() {
            sealing
        } else {
            Some(wrapping(
                identity_path,
                wrap_with,
                &known.plugin_identities,
            )?)
        };
        if moving && let Some(s) = &sealing {
            s.check(identity_path, &known.plugin_identities)?;
        }
        let (moving, retired, target_text) = if let Some((_, kept)) = split_rekey(&text).1 {
            // An interrupted rekey: finish moving to the key it added.
            (true, kept, text.clone())
        } else if add_recipients.is_empty() {
            // The new key goes into the identity file first, beside the
            // current one, after a copy of the file as it is. A `.next`
            // file (an older version's interrupted rekey) has the key to
            // move to.
            let next = next_path(identity_path);
            let new_text = match fs::read_to_string(&next) {
                Ok(t) => {
                    let t = Zeroizing::new(t);
                    Identity::from_section(&next, &t)?;
                    t
                }
                Err(_) => Identity::new_key_text(),
            };
            let copy = retired_path(identity_path);
            let original = Zeroizing::new(
                fs::read(identity_path)
                    .map_err(io("cannot read the identity file", identity_path))?,
            );
            write_atomic(&copy, &original)
                .map_err(io("cannot keep a copy of the identity file at", &copy))?;
            let both = compose_rekey(&new_text, &copy, &text);
            {
                let _gate = self.gate(true)?;
                write_identity(identity_path, &both, sealing.as_ref())?;
                self.adopt(identity_path, &both, &sealing, &known.plugin_identities);
            }
            if next.exists() {
                // Its key is in the identity file now.
                fs::remove_file(&next).map_err(io("cannot remove", &next))?;
            }
            (true, Some(copy), both)
        } else {
            if !wrap_with.is_empty() {
                // The key stays: wrap it as it is.
                let _gate = self.gate(true)?;
                write_identity(identity_path, &text, sealing.as_ref())?;
                self.adopt(identity_path, &text, &sealing, &known.plugin_identities);
            }
            (false, None, text.clone())
        };
        let target = Identity::from_text(identity_path, &target_text)?;
        let recipients: Vec<&dyn age::Recipient> = target
            .recipients
            .iter()
            .map(|r| r.as_ref() as &dyn age::Recipient)
            .chain(extra.iter().map(|r| r.as_ref() as &dyn age::Recipient))
            .collect();
        let mut readers = target.readers();
        readers.extend(known.readers());
        let current = target.current_readers();
        if !add_recipients.is_empty() {
            let body = format!(
                "# extra recipients of every record (outreach store rekey --add-recipient)\n{}\n",
                keys.join("\n")
            );
            write_atomic(&list, body.as_bytes()).map_err(io("cannot write", &list))?;
        }
        // A move skips files the new key already opens alone (rewritten
        // before an interruption); a second look finds none left, or
        // catches a file written meanwhile by a process that had not read
        // the new identity yet.
        let skip_current = moving && add_recipients.is_empty();
        let mut records = 0;
        for pass in 0.. {
            let files = self.sealed_files()?;
            if pass == 0 {
                records = files
                    .iter()
                    .filter(|(k, _)| !matches!(k, Sealed::Answer(_)))
                    .count();
            }
            let mut rewritten = 0;
            for (kind, path) in &files {
                let only = skip_current.then_some(&current[..]);
                if self.rekey_file(kind, path, &readers, only, &recipients, identity_path)? {
                    rewritten += 1;
                }
            }
            if !skip_current || rewritten == 0 {
                break;
            }
            if pass >= 5 {
                return Err(StoreError::Identity {
                    path: identity_path.to_path_buf(),
                    detail: "keeps getting records written with the previous key while `store rekey` runs; both keys stay in it — run `outreach store rekey` again".into(),
                });
            }
        }
        // Every file opens with the new key alone: take the old one out.
        if moving {
            let (new_only, _) = split_rekey(&target_text);
            let _gate = self.gate(true)?;
            write_identity(identity_path, new_only, sealing.as_ref())?;
            self.adopt(identity_path, new_only, &sealing, &known.plugin_identities);
        }
        let mut shown = target.public.clone();
        shown.extend(keys);
        let wrapped_to = match &sealing {
            Some(Sealing::Wrapped { recipients, .. }) => recipients.clone(),
            _ => Vec::new(),
        };
        Ok(RekeyReport {
            records,
            recipients: shown,
            retired,
            wrapped_to,
        })
    }

    /// The identity file's text and sealing as they are now: as this store
    /// read them when the file has not changed since (no second
    /// passphrase, no second plugin run or touch), else read again.
    fn identity_text(
        &self,
        path: &Path,
        known: &Identity,
    ) -> Result<(Zeroizing<String>, Option<Sealing>), StoreError> {
        let now = fs::metadata(path).ok().map(|m| Stamp::of(&m));
        if known.path == path && known.stamp.is_some() && known.stamp == now {
            return Ok((known.text.clone(), known.sealing.clone()));
        }
        let mut pass = known.sealing.as_ref().and_then(Sealing::passphrase);
        let mut unlock = Unlock {
            passphrase: &mut || pass.take(),
            plugin_identities: &known.plugin_identities,
        };
        let (text, sealing, _) = read_identity(path, &mut unlock)?;
        Ok((text, sealing))
    }

    /// Use the identity this process just wrote to `path` (its text
    /// unsealed) without reading it back: a wrapped file would need its
    /// plugin again.
    fn adopt(&self, path: &Path, text: &str, sealing: &Option<Sealing>, plugin_identities: &Path) {
        let Ok(meta) = fs::metadata(path) else {
            return;
        };
        if let Ok(mut ident) = Identity::from_text(path, text) {
            ident.sealing = sealing.clone();
            ident.stamp = Some(Stamp::of(&meta));
            ident.text = Zeroizing::new(text.to_string());
            ident.plugin_identities = plugin_identities.to_path_buf();
            *self.identity.write().expect("identity") = Arc::new(ident);
        }
    }

    /// Every encrypted file in the store: records, auxiliary secrets and
    /// escrowed answers.
    fn sealed_files(&self) -> Result<Vec<(Sealed, PathBuf)>, StoreError> {
        let mut files: Vec<(Sealed, PathBuf)> = self
            .list()?
            .into_iter()
            .map(|id| {
                let p = self.path_of(&id);
                (Sealed::Record(id), p)
            })
            .collect();
        if let Ok(entries) = fs::read_dir(self.dir.join(".aux")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".age") && !name.starts_with('.') {
                    files.push((Sealed::Aux(name), e.path()));
                }
            }
        }
        if let Ok(platforms) = fs::read_dir(&self.dir) {
            for platform in platforms.flatten() {
                let pname = platform.file_name().to_string_lossy().into_owned();
                if pname.starts_with('.') || !platform.path().is_dir() {
                    continue;
                }
                let Ok(entries) = fs::read_dir(platform.path()) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(account) = name
                        .strip_prefix('.')
                        .and_then(|n| n.strip_suffix(".answer"))
                        && let Ok(id) = AccountId::new(&pname, account)
                    {
                        files.push((Sealed::Answer(id), e.path()));
                    }
                }
            }
        }
        Ok(files)
    }

    /// Rewrite one file of a rekey to `recipients`, unless `current` (the
    /// keys moved to) already opens it. Whether it was rewritten.
    fn rekey_file(
        &self,
        kind: &Sealed,
        path: &Path,
        readers: &[&dyn age::Identity],
        current: Option<&[&dyn age::Identity]>,
        recipients: &[&dyn age::Recipient],
        identity_path: &Path,
    ) -> Result<bool, StoreError> {
        let (id, _held) = match kind {
            Sealed::Record(id) => (id.clone(), vec![self.lock_patiently(id)?]),
            // An answer is sealed by the escrow helper under the exchange
            // lock and applied under the refresh lease: hold both, so a
            // rewrite never puts back a stale copy.
            Sealed::Answer(id) => {
                let dir = self.dir.join(&id.platform);
                let lease = lock_file(&lease_path(&dir, &id.account))?;
                let exchange = lock_file(&exchange_path(&dir, &id.account))?;
                (id.clone(), vec![lease, exchange])
            }
            Sealed::Aux(name) => (
                AccountId {
                    platform: "_aux".into(),
                    account: name.clone(),
                },
                Vec::new(),
            ),
        };
        let raw = match fs::read(path) {
            Ok(r) => r,
            // Removed meanwhile (an account removed, an answer applied).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io("cannot read", path)(e)),
        };
        if let Some(current) = current
            && decrypt_bytes(&raw, current).is_ok()
        {
            return Ok(false);
        }
        let plain = Zeroizing::new(
            decrypt_bytes(&raw, readers).map_err(|e| decrypt_error(e, &id, path, identity_path))?,
        );
        let sealed = encrypt_to(recipients, &plain).map_err(|detail| StoreError::Identity {
            path: identity_path.to_path_buf(),
            detail,
        })?;
        write_atomic(path, &sealed).map_err(io("cannot write", path))?;
        Ok(true)
    }

    /// The record lock for `id`, waiting a little for another writer.
    fn lock_patiently(&self, id: &AccountId) -> Result<File, StoreError> {
        self.lock_within(id, Duration::from_secs(10))
    }

    /// The identity in use (read again when its file changed).
    pub fn identity(&self) -> Arc<Identity> {
        self.ident()
    }

    fn aux_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        check_aux_name(name)?;
        let dir = self.dir.join(".aux");
        fs::create_dir_all(&dir).map_err(io("cannot create the store directory", &dir))?;
        Ok(dir.join(format!("{name}.age")))
    }

    fn remember(&self, id: &AccountId, sealed: Vec<u8>, record: &Record) {
        self.decrypted.keep(id, sealed, record);
    }

    fn answer_path(&self, id: &AccountId) -> PathBuf {
        self.dir
            .join(&id.platform)
            .join(format!(".{}.answer", id.account))
    }

    /// Where the record for `id` lives.
    pub fn path_of(&self, id: &AccountId) -> PathBuf {
        self.dir
            .join(&id.platform)
            .join(format!("{}.age", id.account))
    }

    fn lock(&self, id: &AccountId) -> Result<File, StoreError> {
        self.lock_within(id, Duration::ZERO)
    }

    fn lock_within(&self, id: &AccountId, patience: Duration) -> Result<File, StoreError> {
        let dir = self.dir.join(&id.platform);
        fs::create_dir_all(&dir).map_err(io("cannot create the store directory", &dir))?;
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        lock_file_within(&record_lock_path(&dir, &id.account), patience)?
            .ok_or_else(|| StoreError::Busy { id: id.clone() })
    }

    /// Encrypt `plain` to the identity's current keys and the extra
    /// recipients. Returns the identity gate, held shared: keep it until
    /// the sealed bytes are written.
    fn encrypt(&self, plain: &[u8]) -> Result<(Vec<u8>, File), StoreError> {
        let gate = self.gate(false)?;
        let ident = self.ident();
        let extra = age_plugin::recipients_for(&self.extra_keys).map_err(|detail| {
            StoreError::Identity {
                path: ident.path.clone(),
                detail: format!("cannot encrypt: {detail}; nothing was written"),
            }
        })?;
        let recipients: Vec<&dyn age::Recipient> = ident
            .recipients
            .iter()
            .chain(extra.iter())
            .map(|r| r.as_ref() as &dyn age::Recipient)
            .collect();
        let sealed = encrypt_to(&recipients, plain).map_err(|detail| StoreError::Identity {
            path: ident.path.clone(),
            detail: format!("cannot encrypt: {detail}"),
        })?;
        Ok((sealed, gate))
    }
}

impl AgeDirStore {
    /// The sealed bytes of `id`'s record.
    fn read_sealed(&self, id: &AccountId) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(id);
        match fs::read(&path) {
            Ok(r) => Ok(r),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { id: id.clone() })
            }
            Err(e) => Err(io("cannot read the record", &path)(e)),
        }
    }

    /// Decrypt and parse `raw`, the sealed record of `id`.
    fn open_sealed(&self, id: &AccountId, raw: &[u8]) -> Result<Record, StoreError> {
        let path = self.path_of(id);
        let ident = self.ident();
        let plain = decrypt_bytes(raw, &ident.readers())
            .map_err(|e| decrypt_error(e, id, &path, &ident.path))?;
        let record: Record = serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt {
            id: id.clone(),
            path: path.clone(),
            detail: format!("decrypted, but the contents do not parse: {e}"),
        })?;
        if &record.id != id {
            return Err(StoreError::Corrupt {
                id: id.clone(),
                path,
                detail: format!("it holds the record of {}", record.id),
            });
        }
        Ok(record)
    }
}

impl CredentialStore for AgeDirStore {
    fn load(&self, id: &AccountId) -> Result<Record, StoreError> {
        let raw = self.read_sealed(id)?;
        if let Some(record) = self.decrypted.get(id, &raw) {
            return Ok(record);
        }
        let record = self.open_sealed(id, &raw)?;
        self.remember(id, raw, &record);
        Ok(record)
    }

    fn load_view(&self, id: &AccountId) -> Result<Record, StoreError> {
        use sha2::Digest as _;
        let path = self.path_of(id);
        let stamp = match fs::metadata(&path) {
            Ok(m) => Stamp::of(&m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { id: id.clone() });
            }
            Err(e) => return Err(io("cannot read the record", &path)(e)),
        };
        let cached = self.views.lock().expect("view cache").get(id).cloned();
        if let Some((s, _, record)) = &cached
            && *s == stamp
        {
            return Ok(Record::clone(record));
        }
        let raw = self.read_sealed(id)?;
        let digest: [u8; 32] = sha2::Sha256::digest(&raw).into();
        let record = match cached {
            // Rewritten with the same bytes (a rekey's probe, a copy).
            Some((_, d, record)) if d == digest => record,
            // Not kept among the decrypted records: a look at every
            // account would push out the ones publishing uses.
            _ => Arc::new(self.open_sealed(id, &raw)?.redacted()),
        };
        self.views
            .lock()
            .expect("view cache")
            .insert(id.clone(), (stamp, digest, record.clone()));
        Ok(Record::clone(&record))
    }

    fn list_platform(&self, platform: &str) -> Result<Vec<AccountId>, StoreError> {
        let mut out = Vec::new();
        if AccountId::new(platform, "x").is_err() || platform.starts_with('.') {
            return Ok(out);
        }
        let dir = self.dir.join(platform);
        let files = match fs::read_dir(&dir) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io("cannot list", &dir)(e)),
        };
        for f in files.flatten() {
            let fname = f.file_name().to_string_lossy().into_owned();
            if let Some(account) = fname.strip_suffix(".age")
                && !fname.starts_with('.')
                && let Ok(id) = AccountId::new(platform, account)
            {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    fn contains(&self, id: &AccountId) -> Result<bool, StoreError> {
        let path = self.path_of(id);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("cannot read the record", &path)(e)),
        }
    }

    fn save(&self, record: &Record) -> Result<(), StoreError> {
        let _lock = self.lock(&record.id)?;
        let plain = serde_json::to_vec(record).expect("records always serialise");
        let (sealed, _gate) = self.encrypt(&plain)?;
        let path = self.path_of(&record.id);
        write_atomic(&path, &sealed).map_err(io("cannot write the record", &path))?;
        self.remember(&record.id, sealed, record);
        Ok(())
    }

    fn list(&self) -> Result<Vec<AccountId>, StoreError> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io("cannot list the store", &self.dir)(e)),
        };
        for platform in entries.flatten() {
            let pname = platform.file_name().to_string_lossy().into_owned();
            if !platform.path().is_dir() || pname.starts_with('.') {
                continue;
            }
            let files =
                fs::read_dir(platform.path()).map_err(io("cannot list", &platform.path()))?;
            for f in files.flatten() {
                let fname = f.file_name().to_string_lossy().into_owned();
                if let Some(account) = fname.strip_suffix(".age")
                    && !fname.starts_with('.')
                    && let Ok(id) = AccountId::new(&pname, account)
                {
                    out.push(id);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn lease(&self, id: &AccountId) -> Result<Lease, StoreError> {
        let dir = self.dir.join(&id.platform);
        fs::create_dir_all(&dir).map_err(io("cannot create the store directory", &dir))?;
        Ok(Lease(Box::new(lock_file(&lease_path(&dir, &id.account))?)))
    }

    fn load_aux(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.aux_path(name)?;
        let raw = match fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("cannot read", &path)(e)),
        };
        let ident = self.ident();
        let id = AccountId {
            platform: "_aux".into(),
            account: name.into(),
        };
        decrypt_bytes(&raw, &ident.readers())
            .map(Some)
            .map_err(|e| decrypt_error(e, &id, &path, &ident.path))
    }

    fn save_aux(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.aux_path(name)?;
        let (sealed, _gate) = self.encrypt(bytes)?;
        write_atomic(&path, &sealed).map_err(io("cannot write", &path))
    }

    fn remove_aux(&self, name: &str) -> Result<(), StoreError> {
        let path = self.aux_path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("cannot remove", &path)(e)),
        }
    }

    fn aux_names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.dir.join(".aux");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("cannot list", &dir)(e)),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".age")?.to_string();
                check_aux_name(&name).ok().map(|()| name)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn escrow_slot(&self, id: &AccountId) -> Option<EscrowSlot> {
        let dir = self.dir.join(&id.platform);
        Some(EscrowSlot {
            place: SlotPlace::Files {
                lock: exchange_path(&dir, &id.account),
                answer: self.answer_path(id),
            },
            recipients: self
                .ident()
                .public
                .iter()
                .chain(self.extra_keys.iter())
                .cloned()
                .collect(),
        })
    }

    fn read_answer(&self, id: &AccountId) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.answer_path(id);
        let raw = match fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("cannot read the escrowed answer", &path)(e)),
        };
        let ident = self.ident();
        decrypt_bytes(&raw, &ident.readers())
            .map(Some)
            .map_err(|e| decrypt_error(e, id, &path, &ident.path))
    }

    fn clear_answer(&self, id: &AccountId) -> Result<(), StoreError> {
        let path = self.answer_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("cannot remove the escrowed answer", &path)(e)),
        }
    }

    fn remove(&self, id: &AccountId) -> Result<(), StoreError> {
        let _lock = self.lock(id)?;
        self.decrypted.forget(id);
        self.views.lock().expect("view cache").remove(id);
        self.clear_answer(id)?;
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { id: id.clone() });
            }
            Err(e) => return Err(io("cannot remove the record", &path)(e)),
        }
        if let Some(dir) = path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}
