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
//! per post; X25519 per read was a tenth of a publish's CPU). Beside a
//! record may sit the sealed answer of a token exchange whose sender died
//! (`.<account>.answer`, see [`crate::escrow`]); it is encrypted like a
//! record, re-encrypted by a rekey and removed with the account.
//!
//! Never: prints a secret, or touches the network.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    pub scope: String,
    pub profile: Profile,
    pub created_at: DateTime<Utc>,
    pub last_refreshed: Option<DateTime<Utc>>,
    /// Non-secret per-account settings (a Mastodon instance URL).
    pub settings: BTreeMap<String, String>,
    /// Token health as the refresh scheduler last saw it.
    #[serde(default)]
    pub health: Health,
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

    /// Every secret this record holds, for scrubbing output.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut v = vec![&self.access_token];
        if let Some(r) = &self.refresh_token {
            v.push(r);
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
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// Where credentials live. The age-directory backend is the default; a
/// PostgreSQL backend (rows encrypted with age) can implement the same trait.
pub trait CredentialStore: Send + Sync {
    fn load(&self, id: &AccountId) -> Result<Record, StoreError>;
    /// Write `record` atomically, replacing any previous version.
    fn save(&self, record: &Record) -> Result<(), StoreError>;
    fn list(&self) -> Result<Vec<AccountId>, StoreError>;
    fn remove(&self, id: &AccountId) -> Result<(), StoreError>;
    /// Wait for, then hold, the right to refresh `id`: one refresher per
    /// account across every process sharing the store. Released on drop.
    /// Blocking.
    fn lease(&self, id: &AccountId) -> Result<Lease, StoreError>;
    /// A secret that belongs to no account (a Mastodon app registration),
    /// by a name of a-z, 0-9, `-`, `_`, `.`.
    fn load_aux(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn save_aux(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError>;
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
}

/// Where an escrowed exchange for one account is coordinated: the lock its
/// sender holds, the file its answer is sealed into, and the public keys
/// it is sealed to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EscrowSlot {
    pub lock: PathBuf,
    pub answer: PathBuf,
    pub recipients: Vec<String>,
}

/// A held refresh lease; dropping it releases the lease.
pub struct Lease(#[allow(dead_code)] Box<dyn Send + Sync>);

/// The user's age identity: decrypts records; its recipient encrypts them.
pub struct Identity {
    path: PathBuf,
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    recipients: Vec<Box<dyn age::Recipient + Send + Sync>>,
    public: Vec<String>,
}

impl Identity {
    /// Load the identity at `path`, creating a new X25519 identity (0600)
    /// if there is none. An identity file that is itself age-encrypted with
    /// a passphrase is decrypted with `passphrase` (from
    /// `OUTREACH_IDENTITY_PASSPHRASE` or a prompt, chosen by the caller).
    pub fn load_or_create(
        path: &Path,
        passphrase: impl FnOnce() -> Option<String>,
    ) -> Result<Self, StoreError> {
        if !path.exists() {
            Self::create(path)?;
        }
        let raw = fs::read(path).map_err(io("cannot read the identity file", path))?;
        let text = if is_age_file(&raw) {
            let pass = passphrase().ok_or_else(|| StoreError::Identity {
                path: path.to_path_buf(),
                detail: "is passphrase-protected; set OUTREACH_IDENTITY_PASSPHRASE or run in a terminal to be asked".into(),
            })?;
            let ident = age::scrypt::Identity::new(SecretString::from(pass));
            let plain = decrypt_bytes(&raw, &[&ident as &dyn age::Identity]).map_err(|e| {
                StoreError::Identity {
                    path: path.to_path_buf(),
                    detail: format!("cannot be unlocked with that passphrase ({e})"),
                }
            })?;
            String::from_utf8(plain).map_err(|_| StoreError::Identity {
                path: path.to_path_buf(),
                detail: "decrypts to something that is not an identity file".into(),
            })?
        } else {
            String::from_utf8(raw).map_err(|_| StoreError::Identity {
                path: path.to_path_buf(),
                detail: "is not a text age identity file".into(),
            })?
        };
        let mut ident = Self::from_text(path, &text)?;
        // An interrupted `store rekey` leaves the next identity beside this
        // one; records it already rewrote must stay readable.
        let next = next_path(path);
        if let Ok(t) = fs::read_to_string(&next) {
            ident
                .identities
                .extend(Self::from_text(&next, &t)?.identities);
        }
        Ok(ident)
    }

    fn from_text(path: &Path, text: &str) -> Result<Self, StoreError> {
        let bad = |detail: String| StoreError::Identity {
            path: path.to_path_buf(),
            detail,
        };
        let mut recipients: Vec<Box<dyn age::Recipient + Send + Sync>> = Vec::new();
        let mut public = Vec::new();
        for line in text.lines().map(str::trim) {
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
            identities,
            recipients,
            public,
        })
    }

    fn create(path: &Path) -> Result<(), StoreError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io("cannot create the directory", dir))?;
        }
        let key = age::x25519::Identity::generate();
        let body = format!(
            "# outreach credential store identity, created {}\n# public key: {}\n{}\n",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            key.to_public(),
            key.to_string().expose_secret()
        );
        write_atomic(path, body.as_bytes()).map_err(io("cannot write the identity file", path))?;
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

    /// The public keys (`age1…`) records are encrypted to.
    pub fn public_keys(&self) -> &[String] {
        &self.public
    }
}

/// Where `store rekey` keeps the identity it is moving to.
fn next_path(identity: &Path) -> PathBuf {
    let mut p = identity.as_os_str().to_owned();
    p.push(".next");
    PathBuf::from(p)
}

/// What `rekey` did.
#[derive(Debug)]
pub struct RekeyReport {
    pub records: usize,
    pub recipients: Vec<String>,
    /// Where the previous identity now lives, when it was replaced.
    pub retired: Option<PathBuf>,
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
    let enc =
        age::Encryptor::with_recipients(recipients.iter().copied()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).map_err(|e| e.to_string())?;
    w.write_all(plain).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Open (creating, 0600) and exclusively lock the lock file at `path`,
/// waiting for whoever holds it. Blocking; released when the file drops.
pub fn lock_file(path: &Path) -> Result<File, StoreError> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io("cannot open the lock file", path))?;
    f.lock().map_err(io("cannot lock", path))?;
    Ok(f)
}

/// Encrypt `plain` to age X25519 public keys (`age1…`).
pub fn seal_to(recipients: &[String], plain: &[u8]) -> Result<Vec<u8>, String> {
    let parsed = recipients
        .iter()
        .map(|r| parse_recipient(r))
        .collect::<Result<Vec<_>, _>>()?;
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
    identity: Identity,
    /// Extra recipients every record is also encrypted to (`.recipients`).
    extra: Vec<Box<dyn age::Recipient + Send + Sync>>,
    extra_keys: Vec<String>,
    /// Ciphertext → the record it decrypted to, per account.
    decrypted: std::sync::Mutex<std::collections::HashMap<AccountId, (Vec<u8>, Record)>>,
}

fn parse_recipient(s: &str) -> Result<Box<dyn age::Recipient + Send + Sync>, String> {
    s.trim()
        .parse::<age::x25519::Recipient>()
        .map(|r| Box::new(r) as Box<dyn age::Recipient + Send + Sync>)
        .map_err(|e| format!("`{}` is not an age X25519 recipient (age1…): {e}", s.trim()))
}

impl AgeDirStore {
    pub fn open(dir: &Path, identity: Identity) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io("cannot create the store directory", dir))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let list = dir.join(".recipients");
        let mut extra = Vec::new();
        let mut extra_keys = Vec::new();
        if let Ok(text) = fs::read_to_string(&list) {
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                extra.push(
                    parse_recipient(line).map_err(|detail| StoreError::Identity {
                        path: list.clone(),
                        detail,
                    })?,
                );
                extra_keys.push(line.to_string());
            }
        }
        Ok(AgeDirStore {
            dir: dir.to_path_buf(),
            identity,
            extra,
            extra_keys,
            decrypted: Default::default(),
        })
    }

    /// Re-encrypt every record: to a new identity (created beside the
    /// current one, which is kept as `…retired-DATE`), or, with
    /// `add_recipients`, to the current identity plus those recipients.
    /// Each record is rewritten atomically; an interrupted run is resumed by
    /// running it again.
    pub fn rekey(
        &self,
        identity_path: &Path,
        add_recipients: &[String],
    ) -> Result<RekeyReport, StoreError> {
        let list = self.dir.join(".recipients");
        let mut extra: Vec<Box<dyn age::Recipient + Send + Sync>> = Vec::new();
        let mut keys = self.extra_keys.clone();
        for k in add_recipients {
            parse_recipient(k).map_err(|detail| StoreError::Identity {
                path: list.clone(),
                detail,
            })?;
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        for k in &keys {
            extra.push(parse_recipient(k).map_err(|detail| StoreError::Identity {
                path: list.clone(),
                detail,
            })?);
        }
        let next = next_path(identity_path);
        let new_identity = if add_recipients.is_empty() {
            if !next.exists() {
                Identity::create(&next)?;
            }
            let text = fs::read_to_string(&next).map_err(io("cannot read", &next))?;
            Some(Identity::from_text(&next, &text)?)
        } else {
            None
        };
        let target = new_identity.as_ref().unwrap_or(&self.identity);
        let recipients: Vec<&dyn age::Recipient> = target
            .recipients
            .iter()
            .map(|r| r.as_ref() as &dyn age::Recipient)
            .chain(extra.iter().map(|r| r.as_ref() as &dyn age::Recipient))
            .collect();
        let mut readers = self.identity.readers();
        if let Some(n) = &new_identity {
            readers.extend(n.readers());
        }
        // Every record file and auxiliary secret.
        let mut files: Vec<(AccountId, PathBuf)> = self
            .list()?
            .into_iter()
            .map(|id| {
                let p = self.path_of(&id);
                (id, p)
            })
            .collect();
        if let Ok(entries) = fs::read_dir(self.dir.join(".aux")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".age") && !name.starts_with('.') {
                    files.push((
                        AccountId {
                            platform: "_aux".into(),
                            account: name,
                        },
                        e.path(),
                    ));
                }
            }
        }
        let records = files.len();
        // Token answers waiting to be applied (see `crate::escrow`).
        let answers: Vec<(AccountId, PathBuf)> = files
            .iter()
            .filter(|(id, _)| id.platform != "_aux")
            .map(|(id, _)| (id.clone(), self.answer_path(id)))
            .filter(|(_, p)| p.exists())
            .collect();
        files.extend(answers);
        for (id, path) in &files {
            let _lock = if id.platform != "_aux" {
                Some(self.lock(id)?)
            } else {
                None
            };
            let raw = fs::read(path).map_err(io("cannot read", path))?;
            let plain = decrypt_bytes(&raw, &readers)
                .map_err(|e| decrypt_error(e, id, path, identity_path))?;
            let sealed =
                encrypt_to(&recipients, &plain).map_err(|detail| StoreError::Identity {
                    path: identity_path.to_path_buf(),
                    detail,
                })?;
            write_atomic(path, &sealed).map_err(io("cannot write", path))?;
        }
        if !add_recipients.is_empty() {
            let body = format!(
                "# extra recipients of every record (outreach store rekey --add-recipient)\n{}\n",
                keys.join("\n")
            );
            write_atomic(&list, body.as_bytes()).map_err(io("cannot write", &list))?;
        }
        let retired = if new_identity.is_some() {
            let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
            let mut old = identity_path.as_os_str().to_owned();
            old.push(format!(".retired-{stamp}"));
            let old = PathBuf::from(old);
            fs::rename(identity_path, &old)
                .map_err(io("cannot retire the identity", identity_path))?;
            fs::rename(&next, identity_path)
                .map_err(io("cannot install the new identity", &next))?;
            if let Some(dir) = identity_path.parent() {
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            Some(old)
        } else {
            None
        };
        let mut shown = target.public.clone();
        shown.extend(keys);
        Ok(RekeyReport {
            records,
            recipients: shown,
            retired,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn aux_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if !ok {
            return Err(StoreError::BadName(format!(
                "`{name}` is not a valid store entry name"
            )));
        }
        let dir = self.dir.join(".aux");
        fs::create_dir_all(&dir).map_err(io("cannot create the store directory", &dir))?;
        Ok(dir.join(format!("{name}.age")))
    }

    /// Keep `record` with the ciphertext it is stored as (bounded: a full
    /// cache drops an entry; the next read of that account decrypts).
    fn remember(&self, id: &AccountId, sealed: Vec<u8>, record: &Record) {
        const CAP: usize = 256;
        let mut cache = self.decrypted.lock().expect("record cache");
        if cache.len() >= CAP
            && !cache.contains_key(id)
            && let Some(k) = cache.keys().next().cloned()
        {
            cache.remove(&k);
        }
        cache.insert(id.clone(), (sealed, record.clone()));
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
        let dir = self.dir.join(&id.platform);
        fs::create_dir_all(&dir).map_err(io("cannot create the store directory", &dir))?;
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        let path = dir.join(format!(".{}.lock", id.account));
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("cannot open the lock file", &path))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy { id: id.clone() }),
            Err(std::fs::TryLockError::Error(e)) => Err(io("cannot lock", &path)(e)),
        }
    }

    fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let recipients: Vec<&dyn age::Recipient> = self
            .identity
            .recipients
            .iter()
            .chain(self.extra.iter())
            .map(|r| r.as_ref() as &dyn age::Recipient)
            .collect();
        encrypt_to(&recipients, plain)
    }
}

impl CredentialStore for AgeDirStore {
    fn load(&self, id: &AccountId) -> Result<Record, StoreError> {
        let path = self.path_of(id);
        let raw = match fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { id: id.clone() });
            }
            Err(e) => return Err(io("cannot read the record", &path)(e)),
        };
        if let Some((sealed, record)) = self.decrypted.lock().expect("record cache").get(id)
            && *sealed == raw
        {
            return Ok(record.clone());
        }
        let ids = self.identity.readers();
        let plain = decrypt_bytes(&raw, &ids)
            .map_err(|e| decrypt_error(e, id, &path, &self.identity.path))?;
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
        self.remember(id, raw, &record);
        Ok(record)
    }

    fn save(&self, record: &Record) -> Result<(), StoreError> {
        let _lock = self.lock(&record.id)?;
        let plain = serde_json::to_vec(record).expect("records always serialise");
        let sealed = self
            .encrypt(&plain)
            .map_err(|detail| StoreError::Identity {
                path: self.identity.path.clone(),
                detail: format!("cannot encrypt: {detail}"),
            })?;
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
        let path = dir.join(format!(".{}.refresh", id.account));
        Ok(Lease(Box::new(lock_file(&path)?)))
    }

    fn load_aux(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.aux_path(name)?;
        let raw = match fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("cannot read", &path)(e)),
        };
        let ids = self.identity.readers();
        let id = AccountId {
            platform: "_aux".into(),
            account: name.into(),
        };
        decrypt_bytes(&raw, &ids)
            .map(Some)
            .map_err(|e| decrypt_error(e, &id, &path, &self.identity.path))
    }

    fn save_aux(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.aux_path(name)?;
        let sealed = self.encrypt(bytes).map_err(|detail| StoreError::Identity {
            path: self.identity.path.clone(),
            detail: format!("cannot encrypt: {detail}"),
        })?;
        write_atomic(&path, &sealed).map_err(io("cannot write", &path))
    }

    fn escrow_slot(&self, id: &AccountId) -> Option<EscrowSlot> {
        let dir = self.dir.join(&id.platform);
        Some(EscrowSlot {
            lock: dir.join(format!(".{}.exchange", id.account)),
            answer: self.answer_path(id),
            recipients: self
                .identity
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
        let ids = self.identity.readers();
        decrypt_bytes(&raw, &ids)
            .map(Some)
            .map_err(|e| decrypt_error(e, id, &path, &self.identity.path))
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
        self.decrypted.lock().expect("record cache").remove(id);
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
