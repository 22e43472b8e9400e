//! The PostgreSQL credential store (`[store] backend = "postgres"`): the
//! same [`CredentialStore`] as the age directory, in a database several
//! processes and daemons can share.
//!
//! Owns, in this order:
//! - the connection: the URL read from the environment variable the config
//!   names (`store.url_env`), TLS as its `sslmode` says (`require`,
//!   `verify-ca`, `verify-full`, with `sslrootcert`; rustls with ring), two
//!   pools (queries, and connections that hold advisory locks);
//! - the schema, under sqlx's versioned migrations from
//!   `host/migrations/postgres/`, applied when the store is opened; a
//!   database migrated by a newer outreach is refused, changing nothing;
//! - the rows: one per account (`outreach_accounts`), whose `sealed`
//!   column is the record encrypted with age exactly as the files backend
//!   writes its file (same identity, same recipients, the extra ones in
//!   `outreach_recipients`), so `age -d -i identity.txt` opens a value
//!   copied out; beside it the plain columns scheduling needs (platform,
//!   account, expiry, state, next refresh, last update) and nothing
//!   secret. Aux secrets (`outreach_aux`) and escrowed token answers
//!   (`outreach_answers`) are sealed the same way;
//! - the locks: an account's refresh lease and its escrow exchange lock
//!   are session advisory locks (`pg_advisory_lock`) held on a connection
//!   of their own for as long as the [`Lease`] or [`ExchangeLock`] lives.
//!   A process that dies loses its connection, and the server releases
//!   its locks at once, so another process takes over;
//! - the retries: a server that is briefly unreachable or restarting is
//!   waited for with backoff for `store.connect_retry_secs`, then reported
//!   as an error naming the server and the environment variable. Writes
//!   are idempotent (an upsert, a delete), so a retried write that had in
//!   fact landed changes nothing more.
//!
//! Written here rather than taken from a crate: the bridge. The
//! [`CredentialStore`] trait is synchronous and is called from inside
//! tokio runtimes (even from async tasks), where blocking on a runtime of
//! one's own panics. So every query runs on one process-wide runtime with
//! its own two threads, and the caller waits on a std channel, as it would
//! wait for a file read.
//!
//! Never: reads the URL from a file, prints it or its password (every
//! message names the server as `user@host:port/database` and the
//! variable), stores a secret in a column other than `sealed`, or
//! decrypts anything the caller did not ask for.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx_core::Error as SqlError;
use sqlx_core::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx_core::pool::PoolConnection;
use sqlx_core::query::query;
use sqlx_core::query_scalar::query_scalar;
use sqlx_core::row::Row;
use sqlx_core::sql_str::SqlSafeStr;
use sqlx_postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use zeroize::Zeroizing;

use super::{
    AccountId, AccountState, CredentialStore, EscrowSlot, Identity, Lease, Record, SlotPlace,
    StoreError, age_plugin, check_aux_name, decrypt_bytes, decrypt_error, encrypt_to,
};
use crate::config::StoreConfig;

/// The schema's migrations, oldest first: (version, description, SQL).
/// A database that has applied a version not listed here was migrated by
/// a newer outreach.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "credential store",
        include_str!("../../migrations/postgres/0001_credential_store.sql"),
    ),
    (
        2,
        "publishing journal",
        include_str!("../../migrations/postgres/0002_journal.sql"),
    ),
];

/// The process-wide runtime every query runs on (see the module docs).
/// Never dropped: a runtime may not be dropped inside another one.
fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("outreach-pg")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| {
        StoreError::Database(format!(
            "cannot start the PostgreSQL store's I/O threads ({e}); nothing was changed"
        ))
    })
}

/// Run `fut` on the bridge runtime and wait for it on this thread.
pub(crate) fn block_on<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| {
        StoreError::Database(
            "the PostgreSQL store's I/O thread stopped before answering; run the command again"
                .into(),
        )
    })
}

/// An advisory lock key for `kind` (`lease`, `exchange`) of `id`: 64 bits
/// of a hash, so two accounts practically never share one (and if they
/// did, they would only take turns).
pub(crate) fn lock_key(kind: &str, id: &AccountId) -> i64 {
    let h = Sha256::digest(format!("outreach/{kind}/{}/{}", id.platform, id.account));
    i64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// Whether `e` is TLS refusing the server (an untrusted or mismatched
/// certificate): the driver reports some as I/O errors, and waiting does
/// not change them.
fn tls_failure(e: &SqlError) -> bool {
    match e {
        SqlError::Tls(_) => true,
        SqlError::Io(io) => {
            let text = io.to_string().to_ascii_lowercase();
            text.contains("certificate") || text.contains("tls") || text.contains("handshake")
        }
        _ => false,
    }
}

/// Whether a failed operation may succeed if tried again: the connection
/// broke (a restart, a network blip), or the server said so.
fn transient(e: &SqlError) -> bool {
    match e {
        SqlError::Io(_) => !tls_failure(e),
        SqlError::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") // connection exception
                || matches!(
                    c.as_ref(),
                    "57P01" // admin_shutdown
                        | "57P02" // crash_shutdown
                        | "57P03" // cannot_connect_now (starting up)
                        | "53300" // too_many_connections
                        | "40001" // serialization_failure
                        | "40P01" // deadlock_detected
                )
        }),
        _ => false,
    }
}

/// One database as this process reaches it.
pub(crate) struct Db {
    pub(crate) pool: PgPool,
    /// Connections that hold advisory locks, apart so that waiting for a
    /// lease never starves the queries.
    locks: PgPool,
    options: PgConnectOptions,
    url_env: String,
    /// `user@host:port/database`, for messages.
    pub(crate) target: String,
    retry: Duration,
    /// Taken out of every message, should a library ever echo it.
    password: Option<Zeroizing<String>>,
    /// The schema is known to be current: the store and the journal of
    /// one process share this database, and migrate it once.
    migrated: std::sync::atomic::AtomicBool,
}

impl Drop for Db {
    fn drop(&mut self) {
        // A pool closes (and its connections return) through tasks on a
        // runtime: the bridge's.
        if let Ok(rt) = runtime() {
            let (pool, locks) = (self.pool.clone(), self.locks.clone());
            rt.spawn(async move {
                pool.close().await;
                locks.close().await;
            });
        }
    }
}

/// Every database this process has opened, by the environment variable
/// that names it: the store and its escrow slots share one.
fn registry() -> &'static Mutex<HashMap<String, Arc<Db>>> {
    static DBS: OnceLock<Mutex<HashMap<String, Arc<Db>>>> = OnceLock::new();
    DBS.get_or_init(Default::default)
}

impl Db {
    /// The database named by `url_env`, opened (lazily: no I/O yet) on
    /// first use in this process.
    pub(crate) fn shared(
        url_env: &str,
        retry: Duration,
        pool_size: u32,
    ) -> Result<Arc<Db>, StoreError> {
        let mut dbs = registry().lock().expect("database registry");
        if let Some(db) = dbs.get(url_env) {
            return Ok(db.clone());
        }
        let db = Arc::new(Db::new(url_env, retry, pool_size)?);
        dbs.insert(url_env.to_string(), db.clone());
        Ok(db)
    }

    fn new(url_env: &str, retry: Duration, pool_size: u32) -> Result<Db, StoreError> {
        let example =
            "postgres://USER:PASSWORD@HOST:5432/DATABASE (add ?sslmode=verify-full for TLS)";
        let url = match std::env::var(url_env) {
            Ok(u) if !u.trim().is_empty() => Zeroizing::new(u),
            Ok(_) | Err(std::env::VarError::NotPresent) => {
                return Err(StoreError::Database(format!(
                    "the PostgreSQL store ([store] backend = \"postgres\") reads its connection URL from the environment variable {url_env} (store.url_env), which is not set; set it to {example}"
                )));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(StoreError::Database(format!(
                    "the environment variable {url_env} (store.url_env) is not valid UTF-8; set it to {example}"
                )));
            }
        };
        let bad = |why: &str| {
            StoreError::Database(format!(
                "the environment variable {url_env} (store.url_env) does not hold a usable PostgreSQL URL ({why}); set it to {example}"
            ))
        };
        let parsed = url::Url::parse(&url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(bad("it must start with postgres://"));
        }
        let password = parsed.password().map(|p| {
            Zeroizing::new(
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        });
        drop(parsed);
        let scrub = |text: String| match &password {
            Some(p) if p.len() >= 6 => text.replace(p.as_str(), "****"),
            _ => text,
        };
        let options = PgConnectOptions::from_str(&url)
            .map_err(|e| bad(&scrub(e.to_string())))?
            .application_name("outreach");
        drop(url);
        let target = format!(
            "{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username())
        );
        let pool_options = move || {
            PgPoolOptions::new()
                .min_connections(0)
                .acquire_timeout(retry)
                .idle_timeout(Some(Duration::from_secs(300)))
                .test_before_acquire(true)
        };
        // Building a pool needs a runtime context (it starts its reaper).
        let (o1, o2) = (options.clone(), options.clone());
        let (pool, locks) = block_on(async move {
            (
                pool_options()
                    .max_connections(pool_size)
                    .connect_lazy_with(o1),
                pool_options()
                    .max_connections(pool_size.saturating_mul(4).max(16))
                    .connect_lazy_with(o2),
            )
        })?;
        Ok(Db {
            pool,
            locks,
            options,
            url_env: url_env.to_string(),
            target,
            retry,
            password,
            migrated: Default::default(),
        })
    }

    /// Run `op` against the pool on the bridge, retrying transient
    /// failures with backoff until the retry window has passed; a failure
    /// is described by `what` (`cannot save the record for x/alice`).
    pub(crate) fn run<T, F, Fut>(
        &self,
        what: impl FnOnce() -> String,
        op: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(PgPool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, SqlError>> + Send + 'static,
    {
        let pool = self.pool.clone();
        let retry = self.retry;
        let result = block_on(retrying(retry, move || op(pool.clone())))?;
        crate::metrics::database_up(!matches!(
            &result,
            Err(e) if transient(e) || matches!(e, SqlError::PoolTimedOut)
        ));
        result.map_err(|e| self.describe(&what(), e))
    }

    /// Take the advisory lock `key` on a connection of its own, waiting for
    /// whoever holds it. Blocking.
    pub(crate) fn hold(
        &self,
        key: i64,
        what: impl FnOnce() -> String,
    ) -> Result<HeldLock, StoreError> {
        let locks = self.locks.clone();
        let result = block_on(retrying(self.retry, move || {
            let locks = locks.clone();
            async move {
                let mut conn = locks.acquire().await?;
                query("SELECT pg_advisory_lock($1)")
                    .bind(key)
                    .execute(&mut *conn)
                    .await?;
                Ok(conn)
            }
        }))?;
        let conn = result.map_err(|e| self.describe(&what(), e))?;
        Ok(HeldLock {
            conn: Mutex::new(Some(conn)),
            key,
        })
    }

    /// A failure written for people: what failed, on which server, why,
    /// and what to do. Never the URL or its password.
    pub(crate) fn describe(&self, what: &str, e: SqlError) -> StoreError {
        let (env, target) = (&self.url_env, &self.target);
        let secs = self.retry.as_secs();
        let msg = match &e {
            SqlError::Database(d) => {
                let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
                let server = d.message();
                match code.as_str() {
                    "28000" if server.contains("no encryption") => format!(
                        "{what}: the PostgreSQL server {target} accepts only TLS connections ({server}); add ?sslmode=verify-full&sslrootcert=/path/to/ca.pem (or sslmode=require) to the URL in {env} (store.url_env); nothing was changed"
                    ),
                    "28P01" | "28000" => format!(
                        "{what}: the PostgreSQL server {target} refused the login ({server}); check the user and password in the URL in {env} (store.url_env); nothing was changed"
                    ),
                    "3D000" => format!(
                        "{what}: the PostgreSQL server {target} has no such database ({server}); create it (`createdb`) or fix the database name in {env}; nothing was changed"
                    ),
                    "42501" => format!(
                        "{what}: the PostgreSQL user lacks a privilege on {target} ({server}); grant it, or use the database's owner in {env}; nothing was changed"
                    ),
                    "53100" => format!(
                        "{what}: the PostgreSQL server {target} is out of disk space ({server}); nothing was changed — free space on the server and try again"
                    ),
                    "25006" => format!(
                        "{what}: the PostgreSQL server {target} is read-only ({server}; a standby, or default_transaction_read_only); point {env} at the primary; nothing was changed"
                    ),
                    _ => format!(
                        "{what}: the PostgreSQL server {target} answered with an error ({server}, SQLSTATE {code}); nothing was changed"
                    ),
                }
            }
            SqlError::Io(io) if tls_failure(&e) => format!(
                "{what}: TLS to the PostgreSQL server {target} failed ({io}); check sslmode and sslrootcert (the CA that signed the server's certificate) in the URL in {env}; nothing was changed"
            ),
            SqlError::Io(io) => format!(
                "{what}: cannot reach the PostgreSQL server {target} named by {env} ({io}), retried for {secs} s (store.connect_retry_secs); nothing was changed — is the server running and reachable?"
            ),
            SqlError::PoolTimedOut => format!(
                "{what}: the PostgreSQL server {target} named by {env} did not answer within {secs} s (store.connect_retry_secs){}; nothing was changed — is the server running and reachable?",
                self.diagnose()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            SqlError::Tls(t) => format!(
                "{what}: TLS to the PostgreSQL server {target} failed ({t}); check sslmode and sslrootcert in the URL in {env}; nothing was changed"
            ),
            SqlError::Configuration(c) => {
                format!("{what}: the URL in {env} cannot be used ({c}); nothing was changed")
            }
            other => format!("{what}: PostgreSQL server {target}: {other}; nothing was changed"),
        };
        StoreError::Database(self.scrub(msg))
    }

    /// Why the server cannot be reached, when the pool only says it timed
    /// out: one direct attempt, bounded.
    fn diagnose(&self) -> Option<String> {
        let options = self.options.clone();
        let attempt = block_on(async move {
            use sqlx_core::connection::ConnectOptions;
            match tokio::time::timeout(Duration::from_secs(5), options.connect()).await {
                Ok(Ok(conn)) => {
                    use sqlx_core::connection::Connection;
                    let _ = conn.close().await;
                    None
                }
                Ok(Err(e)) => Some(match &e {
                    SqlError::Database(d) => d.message().to_string(),
                    other => other.to_string(),
                }),
                Err(_) => Some("a connection attempt timed out".to_string()),
            }
        })
        .ok()??;
        Some(self.scrub(attempt))
    }

    /// `text` without the password. A password shorter than 6 characters
    /// is not searched for: it would mangle every word it occurs in, and
    /// no message is built from the URL.
    fn scrub(&self, text: String) -> String {
        match &self.password {
            Some(p) if p.len() >= 6 => text.replace(p.as_str(), "****"),
            _ => text,
        }
    }

    /// Apply the migrations this binary knows; refuse a newer schema.
    pub(crate) fn migrate(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        self.migrate_now()?;
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    fn migrate_now(&self) -> Result<(), StoreError> {
        let newest = MIGRATIONS.last().map_or(0, |m| m.0);
        let pool = self.pool.clone();
        let result = block_on(retrying(self.retry, move || {
            let pool = pool.clone();
            async move {
                let migrations = MIGRATIONS
                    .iter()
                    .map(|(v, d, sql)| {
                        Migration::new(
                            *v,
                            (*d).into(),
                            MigrationType::Simple,
                            sql.into_sql_str(),
                            false,
                        )
                    })
                    .collect();
                match Migrator::with_migrations(migrations).run(&pool).await {
                    Ok(()) => Ok(Ok(())),
                    Err(MigrateError::Execute(e)) => Err(e),
                    Err(other) => Ok(Err(other)),
                }
            }
        }))?;
        let (env, target) = (&self.url_env, &self.target);
        match result {
            Ok(Ok(())) => Ok(()),
            Err(e) => Err(self.describe("cannot prepare the PostgreSQL store's schema", e)),
            Ok(Err(MigrateError::VersionMissing(v))) => Err(StoreError::Database(format!(
                "the PostgreSQL store in {target} (named by {env}) has schema version {v}, newer than this outreach knows (up to {newest}); it was migrated by a newer outreach, and nothing was changed — run that version (or a newer one) here too: every process on one database must be at least as new as the newest that has opened it"
            ))),
            Ok(Err(MigrateError::VersionMismatch(v))) => Err(StoreError::Database(format!(
                "the PostgreSQL store in {target} (named by {env}) applied a schema version {v} that differs from this outreach's version {v}; nothing was changed — it was prepared by a different build: run that build, or restore the database from a backup"
            ))),
            Ok(Err(MigrateError::Dirty(v))) => Err(StoreError::Database(format!(
                "the PostgreSQL store in {target} (named by {env}) holds a half-applied schema version {v}; nothing was changed — restore the database from a backup"
            ))),
            Ok(Err(MigrateError::ExecuteMigration(e, v))) => Err(self.describe(
                &format!("cannot apply version {v} of the PostgreSQL store's schema"),
                e,
            )),
            Ok(Err(other)) => Err(StoreError::Database(self.scrub(format!(
                "cannot prepare the PostgreSQL store's schema in {target}: {other}; nothing was changed"
            )))),
        }
    }
}

/// `op` again and again while it fails transiently, waiting 50 ms, then
/// twice as long each time up to 2 s, until `window` has passed.
async fn retrying<T, F, Fut>(window: Duration, op: F) -> Result<T, SqlError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, SqlError>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        match op().await {
            Err(e) if transient(&e) && start.elapsed() + delay < window => {
                crate::metrics::database_retry();
                tracing::debug!("PostgreSQL store: retrying after a transient failure: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// An advisory lock held on a connection of its own; released (and the
/// connection returned) when dropped. A process that dies closes the
/// connection, which releases the lock on the server.
pub(crate) struct HeldLock {
    conn: Mutex<Option<PoolConnection<Postgres>>>,
    key: i64,
}

impl HeldLock {
    /// Whether the lock's connection still answers. One that does not is
    /// closed: the server has released (or will release) its lock.
    pub(crate) fn alive(&self) -> bool {
        let Some(mut conn) = self.conn.lock().ok().and_then(|mut c| c.take()) else {
            return false;
        };
        let checked = block_on(async move {
            let ping = tokio::time::timeout(
                Duration::from_secs(5),
                query("SELECT 1").execute(&mut *conn),
            )
            .await;
            if matches!(ping, Ok(Ok(_))) {
                Some(conn)
            } else {
                let _ = conn.close().await;
                None
            }
        });
        match checked {
            Ok(Some(conn)) => {
                *self.conn.lock().expect("held lock") = Some(conn);
                true
            }
            _ => false,
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.lock().map(|mut c| c.take()).unwrap_or(None) else {
            return;
        };
        let key = self.key;
        // The connection belongs to the bridge runtime: unlock there. A
        // connection that cannot say it unlocked is closed, which unlocks.
        if let Ok(rt) = runtime() {
            rt.spawn(async move {
                let unlocked: Result<bool, SqlError> =
                    query_scalar("SELECT pg_advisory_unlock($1)")
                        .bind(key)
                        .fetch_one(&mut *conn)
                        .await;
                if !matches!(unlocked, Ok(true)) {
                    let _ = conn.close().await;
                }
            });
        }
    }
}

/// The escrow helper's exchange lock for one account (see
/// [`crate::escrow`]).
pub struct ExchangeLock(#[allow(dead_code)] HeldLock);

impl ExchangeLock {
    /// Wait for, then hold, the exchange lock of `id` in the database named
    /// by `url_env`. Blocking.
    pub fn take(url_env: &str, retry_secs: u64, id: &AccountId) -> Result<Self, StoreError> {
        let db = Db::shared(url_env, Duration::from_secs(retry_secs), 2)?;
        db.hold(lock_key("exchange", id), || {
            format!("cannot take the token exchange lock of {id}")
        })
        .map(ExchangeLock)
    }
}

/// Keep an escrowed answer, already sealed, for `id`.
pub fn keep_answer(
    url_env: &str,
    retry_secs: u64,
    id: &AccountId,
    sealed: &[u8],
) -> Result<(), StoreError> {
    let db = Db::shared(url_env, Duration::from_secs(retry_secs), 2)?;
    let (p, a, sealed) = (id.platform.clone(), id.account.clone(), sealed.to_vec());
    db.run(
        || format!("cannot keep the token answer for {id}"),
        move |pool| {
            let (p, a, sealed) = (p.clone(), a.clone(), sealed.clone());
            async move {
                query(
                    "INSERT INTO outreach_answers (platform, account, sealed, created_at)
                     VALUES ($1, $2, $3, now())
                     ON CONFLICT (platform, account)
                     DO UPDATE SET sealed = EXCLUDED.sealed, created_at = now()",
                )
                .bind(p)
                .bind(a)
                .bind(sealed)
                .execute(&pool)
                .await
                .map(drop)
            }
        },
    )
}

/// Wait until no process holds `id`'s exchange lock. Blocking.
pub fn wait_exchange(url_env: &str, retry_secs: u64, id: &AccountId) -> Result<(), StoreError> {
    let db = Db::shared(url_env, Duration::from_secs(retry_secs), 2)?;
    let key = lock_key("exchange", id);
    db.run(
        || format!("cannot wait for the token exchange of {id}"),
        move |pool| async move {
            // A transaction-level lock: released at commit, on whichever
            // pooled connection ran it.
            let mut tx = pool.begin().await?;
            query("SELECT pg_advisory_xact_lock($1)")
                .bind(key)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        },
    )
}

/// The PostgreSQL backend (see the module docs).
pub struct PgStore {
    db: Arc<Db>,
    identity: Identity,
    /// Extra recipients every value is also encrypted to
    /// (`outreach_recipients`).
    extra_keys: std::sync::RwLock<Vec<String>>,
    /// Ciphertext → the record it decrypted to, per account: a read whose
    /// row holds the same bytes skips the X25519 work.
    decrypted: super::RecordCache,
    /// SHA-256 of the ciphertext → the record without its secrets, for
    /// every account ([`CredentialStore::views`]: one query, and only
    /// changed rows decrypted).
    views: Mutex<HashMap<AccountId, ([u8; 32], Arc<Record>)>>,
    /// When this process last saved each account (the row's `updated_at`),
    /// so that [`CredentialStore::saved_since`] can tell its own saves.
    own_writes: Mutex<HashMap<AccountId, DateTime<Utc>>>,
    retry_secs: u64,
}

/// How a record's health reads in the `state` column.
fn state_name(s: AccountState) -> &'static str {
    match s {
        AccountState::Healthy => "healthy",
        AccountState::Failing => "failing",
        AccountState::NeedsReconnect => "needs-reconnect",
    }
}

/// The `next_refresh` a saved record gets until the scheduler notes its
/// own (see [`CredentialStore::note_next_refresh`]): the retry time of a
/// failing account, nothing for one that needs reconnecting, else the
/// latest a refresh can come (the token's expiry).
fn provisional_next_refresh(r: &Record) -> Option<DateTime<Utc>> {
    match r.health.state {
        AccountState::NeedsReconnect => None,
        AccountState::Failing => r.health.retry_at.or(r.expires_at),
        AccountState::Healthy => r.expires_at,
    }
}

/// The extra recipients in `outreach_recipients`, checked.
fn read_recipients(db: &Db) -> Result<Vec<String>, StoreError> {
    let extra: Vec<String> = db.run(
        || "cannot read the PostgreSQL store's extra recipients".to_string(),
        |pool| async move {
            query_scalar("SELECT recipient FROM outreach_recipients ORDER BY recipient")
                .fetch_all(&pool)
                .await
        },
    )?;
    for r in &extra {
        age_plugin::check_recipient(r).map_err(|detail| {
            StoreError::Database(format!(
                "the PostgreSQL store's table outreach_recipients holds a recipient outreach cannot use ({detail}); nothing was changed — remove or fix that row"
            ))
        })?;
    }
    Ok(extra)
}

/// A set of extra recipients as the database computes it
/// ([`RECIPIENTS_NOW`]): a write sealed to `keys` lands only while the
/// table still holds exactly those.
fn recipients_tag(keys: &[String]) -> String {
    let mut sorted: Vec<&str> = keys.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    hex::encode(Sha256::digest(sorted.join("\n").as_bytes()))
}

/// The advisory lock that orders adding a recipient (held alone, while
/// every row is sealed again) against writes (held shared).
const RECIPIENTS_LOCK: i64 = 0x6f75_7472_6561_6368; // "outreach"

/// SQL for the tag of the recipients in the table now (see
/// [`recipients_tag`]).
const RECIPIENTS_NOW: &str = "(SELECT encode(sha256(convert_to(COALESCE(string_agg(recipient, E'\\n' ORDER BY recipient COLLATE \"C\"), ''), 'UTF8')), 'hex') FROM outreach_recipients)";

impl PgStore {
    /// Connect to the database named by `cfg.url_env`, bring its schema up
    /// to date, and open the identity at `identity_path` (created, 0600,
    /// only when the database holds nothing encrypted; a passphrase is
    /// asked for, and an age plugin run, only if the file is sealed).
    pub fn open(
        cfg: &StoreConfig,
        identity_path: &Path,
        plugin_identities: &Path,
        passphrase: impl FnOnce() -> Option<String>,
    ) -> Result<Self, StoreError> {
        let retry = Duration::from_secs(cfg.connect_retry_secs);
        let db = Db::shared(&cfg.url_env, retry, cfg.pool_size)?;
        db.migrate()?;
        if !identity_path.exists() {
            let records: i64 = db.run(
                || "cannot count the PostgreSQL store's encrypted rows".to_string(),
                |pool| async move {
                    query_scalar(
                        "SELECT (SELECT count(*) FROM outreach_accounts)
                              + (SELECT count(*) FROM outreach_aux)
                              + (SELECT count(*) FROM outreach_answers)",
                    )
                    .fetch_one(&pool)
                    .await
                },
            )?;
            if records > 0 {
                return Err(StoreError::MissingIdentityDb {
                    path: identity_path.to_path_buf(),
                    records,
                });
            }
            Identity::create(identity_path)?;
        }
        let identity = Identity::load_with_plugins(identity_path, passphrase, plugin_identities)?;
        let extra = read_recipients(&db)?;
        Ok(PgStore {
            db,
            identity,
            extra_keys: std::sync::RwLock::new(extra),
            decrypted: Default::default(),
            views: Default::default(),
            own_writes: Default::default(),
            retry_secs: cfg.connect_retry_secs,
        })
    }

    /// The platforms that have accounts, read without the identity, so
    /// that a command loads only their plugins. One attempt of at most
    /// two seconds: a server that cannot answer is reported when the
    /// store itself is opened.
    pub fn platforms(cfg: &StoreConfig) -> Result<Vec<String>, StoreError> {
        let retry = Duration::from_secs(cfg.connect_retry_secs);
        let db = Db::shared(&cfg.url_env, retry, cfg.pool_size)?;
        let pool = db.pool.clone();
        let peek = block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                query_scalar("SELECT DISTINCT platform FROM outreach_accounts ORDER BY 1")
                    .fetch_all(&pool),
            )
            .await
        })?;
        match peek {
            Ok(Ok(platforms)) => Ok(platforms),
            Ok(Err(e)) => Err(db.describe("cannot list the platforms with accounts", e)),
            Err(_) => Err(StoreError::Database(format!(
                "the PostgreSQL server {} did not answer within 2 s",
                db.target
            ))),
        }
    }

    /// `user@host:port/database`, for messages (never the password).
    pub fn target(&self) -> &str {
        &self.db.target
    }

    /// The identity in use.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Encrypt `plain` to the identity's keys and the extra recipients.
    /// Encrypt `plain` to the identity's keys and `keys`.
    fn seal_to(&self, plain: &[u8], keys: &[String]) -> Result<Vec<u8>, StoreError> {
        let extra = age_plugin::recipients_for(keys).map_err(|detail| StoreError::Identity {
            path: self.identity.path.clone(),
            detail: format!("cannot encrypt: {detail}; nothing was written"),
        })?;
        let recipients: Vec<&dyn age::Recipient> = self
            .identity
            .recipients
            .iter()
            .chain(extra.iter())
            .map(|r| r.as_ref() as &dyn age::Recipient)
            .collect();
        encrypt_to(&recipients, plain).map_err(|detail| StoreError::Identity {
            path: self.identity.path.clone(),
            detail: format!("cannot encrypt: {detail}; nothing was written"),
        })
    }

    /// Seal `plain` to the identity and the extra recipients, and write it
    /// with `write`, which is given the ciphertext and the tag of the
    /// recipients it was sealed to and runs in a transaction that holds
    /// the recipients lock shared; it answers `None` when the table holds
    /// other recipients by then (another process added one): the
    /// recipients are read again and the value sealed again. Returns the
    /// ciphertext written and the write's time.
    fn sealed_write<W, F, Fut>(
        &self,
        plain: &[u8],
        what: impl Fn() -> String,
        write: W,
    ) -> Result<(Vec<u8>, DateTime<Utc>), StoreError>
    where
        W: Fn(Vec<u8>, String) -> F,
        F: Fn(sqlx_core::transaction::Transaction<'static, Postgres>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<Option<DateTime<Utc>>, SqlError>> + Send + 'static,
    {
        for _ in 0..5 {
            let keys = self.extra_keys.read().expect("recipients").clone();
            let sealed = self.seal_to(plain, &keys)?;
            let op = Arc::new(write(sealed.clone(), recipients_tag(&keys)));
            let landed = self.db.run(&what, move |pool| {
                let op = op.clone();
                async move {
                    let mut tx = pool.begin().await?;
                    query("SELECT pg_advisory_xact_lock_shared($1)")
                        .bind(RECIPIENTS_LOCK)
                        .execute(&mut *tx)
                        .await?;
                    op(tx).await
                }
            })?;
            match landed {
                Some(at) => return Ok((sealed, at)),
                // Another process added a recipient: seal to them all.
                None => *self.extra_keys.write().expect("recipients") = read_recipients(&self.db)?,
            }
        }
        Err(StoreError::Database(format!(
            "{}: the PostgreSQL store's recipients kept changing while it was written; nothing was changed — try again",
            what()
        )))
    }

    /// `store rekey --add-recipient` on PostgreSQL: add `new` to the extra
    /// recipients, and seal every value (records, aux secrets, escrowed
    /// answers) again to the identity and every extra recipient — in one
    /// transaction holding the recipients lock alone, so every other
    /// process's writes wait for it and then seal to the new set. Nothing
    /// changes if any value cannot be opened. Returns how many values were
    /// sealed again.
    pub fn reseal_with(&self, new: &[String]) -> Result<usize, StoreError> {
        for r in new {
            age_plugin::check_recipient(r).map_err(|detail| {
                StoreError::Database(format!(
                    "--add-recipient {r}: {detail}; nothing was changed"
                ))
            })?;
        }
        let what = "cannot add recipients to the PostgreSQL store";
        let pool = self.db.pool.clone();
        let conn = block_on(async move { pool.acquire().await })?
            .map_err(|e| self.db.describe(what, e))?;
        let new = new.to_vec();
        type Rows = Vec<(String, String, String, Vec<u8>)>;
        let (conn, read) = block_on(async move {
            let mut conn = conn;
            let read = async {
                query("BEGIN").execute(&mut *conn).await?;
                query("SELECT pg_advisory_xact_lock($1)")
                    .bind(RECIPIENTS_LOCK)
                    .execute(&mut *conn)
                    .await?;
                for r in &new {
                    query("INSERT INTO outreach_recipients (recipient) VALUES ($1) ON CONFLICT DO NOTHING")
                        .bind(r)
                        .execute(&mut *conn)
                        .await?;
                }
                let keys: Vec<String> =
                    query_scalar("SELECT recipient FROM outreach_recipients ORDER BY recipient")
                        .fetch_all(&mut *conn)
                        .await?;
                let rows: Rows = query(
                    "SELECT 'accounts', platform, account, sealed FROM outreach_accounts
                     UNION ALL SELECT 'aux', '', name, sealed FROM outreach_aux
                     UNION ALL SELECT 'answers', platform, account, sealed FROM outreach_answers",
                )
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect::<Result<_, SqlError>>()?;
                Ok::<_, SqlError>((keys, rows))
            }
            .await;
            (conn, read)
        })?;
        let abort = |conn: PoolConnection<Postgres>| {
            let _ = block_on(async move {
                let _ = conn.close().await;
            });
        };
        let (keys, rows) = match read {
            Ok(r) => r,
            Err(e) => {
                abort(conn);
                return Err(self.db.describe(what, e));
            }
        };
        // Open and seal again, in this process: a value that does not
        // open stops everything before anything is written.
        let mut resealed: Vec<(String, String, String, Vec<u8>)> = Vec::with_capacity(rows.len());
        for (table, platform, name, sealed) in rows {
            let id = AccountId {
                platform: if table == "aux" {
                    "_aux".into()
                } else {
                    platform.clone()
                },
                account: name.clone(),
            };
            let plain = match self.open_sealed(&sealed, &id, &format!("outreach_{table}")) {
                Ok(p) => Zeroizing::new(p),
                Err(e) => {
                    abort(conn);
                    return Err(e);
                }
            };
            match self.seal_to(&plain, &keys) {
                Ok(s) => resealed.push((table, platform, name, s)),
                Err(e) => {
                    abort(conn);
                    return Err(e);
                }
            }
        }
        let count = resealed.len();
        let (conn, wrote) = block_on(async move {
            let mut conn = conn;
            let wrote = async {
                for (table, platform, name, sealed) in &resealed {
                    let sql = match table.as_str() {
                        "accounts" => "UPDATE outreach_accounts SET sealed = $3 WHERE platform = $1 AND account = $2",
                        "aux" => "UPDATE outreach_aux SET sealed = $3 WHERE $1 = '' AND name = $2",
                        _ => "UPDATE outreach_answers SET sealed = $3 WHERE platform = $1 AND account = $2",
                    };
                    query(sql)
                        .bind(platform)
                        .bind(name)
                        .bind(sealed)
                        .execute(&mut *conn)
                        .await?;
                }
                query("COMMIT").execute(&mut *conn).await.map(drop)
            }
            .await;
            (conn, wrote)
        })?;
        if let Err(e) = wrote {
            abort(conn);
            return Err(self.db.describe(what, e));
        }
        drop(conn);
        *self.extra_keys.write().expect("recipients") = keys;
        Ok(count)
    }

    /// Decrypt a value of `id` read from `table`.
    fn open_sealed(&self, raw: &[u8], id: &AccountId, table: &str) -> Result<Vec<u8>, StoreError> {
        decrypt_bytes(raw, &self.identity.readers())
            .map_err(|e| decrypt_error(e, id, &self.row_name(table, id), &self.identity.path))
    }

    /// Decrypt and parse `raw`, the sealed record of `id`.
    fn decode(&self, id: &AccountId, raw: &[u8]) -> Result<Record, StoreError> {
        let plain = Zeroizing::new(self.open_sealed(raw, id, "outreach_accounts")?);
        let record: Record = serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt {
            id: id.clone(),
            path: self.row_name("outreach_accounts", id),
            detail: format!("decrypted, but the contents do not parse: {e}"),
        })?;
        if &record.id != id {
            return Err(StoreError::Corrupt {
                id: id.clone(),
                path: self.row_name("outreach_accounts", id),
                detail: format!("it holds the record of {}", record.id),
            });
        }
        Ok(record)
    }

    /// A row, named for messages where the files backend names a path.
    fn row_name(&self, table: &str, id: &AccountId) -> PathBuf {
        PathBuf::from(format!("{table} row {id} in {}", self.db.target))
    }

    fn remember(&self, id: &AccountId, sealed: Vec<u8>, record: &Record) {
        self.decrypted.keep(id, sealed, record);
    }

    fn fetch_sealed(
        &self,
        table: &'static str,
        id: &AccountId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (p, a) = (id.platform.clone(), id.account.clone());
        let sql = match table {
            "outreach_accounts" => {
                "SELECT sealed FROM outreach_accounts WHERE platform = $1 AND account = $2"
            }
            _ => "SELECT sealed FROM outreach_answers WHERE platform = $1 AND account = $2",
        };
        self.db.run(
            || format!("cannot read {id} from the PostgreSQL store"),
            move |pool| {
                let (p, a) = (p.clone(), a.clone());
                async move {
                    query_scalar(sql)
                        .bind(p)
                        .bind(a)
                        .fetch_optional(&pool)
                        .await
                }
            },
        )
    }
}

impl CredentialStore for PgStore {
    fn load(&self, id: &AccountId) -> Result<Record, StoreError> {
        let Some(raw) = self.fetch_sealed("outreach_accounts", id)? else {
            return Err(StoreError::NotFound { id: id.clone() });
        };
        if let Some(record) = self.decrypted.get(id, &raw) {
            return Ok(record);
        }
        let record = self.decode(id, &raw)?;
        self.remember(id, raw, &record);
        Ok(record)
    }

    fn views(&self) -> Result<Vec<(AccountId, Result<Record, StoreError>)>, StoreError> {
        use sha2::Digest as _;
        let rows: Vec<(String, String, Vec<u8>)> = self.db.run(
            || "cannot list the accounts in the PostgreSQL store".to_string(),
            |pool| async move {
                let rows = query(
                    "SELECT platform, account, sealed FROM outreach_accounts ORDER BY platform, account",
                )
                .fetch_all(&pool)
                .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                    .collect()
            },
        )?;
        let mut out = Vec::with_capacity(rows.len());
        let mut cache = self.views.lock().expect("view cache");
        let mut live = std::collections::HashSet::with_capacity(rows.len());
        for (p, a, raw) in rows {
            let Ok(id) = AccountId::new(&p, &a) else {
                // Not written by outreach (see `list`).
                continue;
            };
            let digest: [u8; 32] = sha2::Sha256::digest(&raw).into();
            live.insert(id.clone());
            let r = match cache.get(&id) {
                Some((d, record)) if *d == digest => Ok(Record::clone(record)),
                _ => self.decode(&id, &raw).map(|r| {
                    let r = Arc::new(r.redacted());
                    cache.insert(id.clone(), (digest, r.clone()));
                    Record::clone(&r)
                }),
            };
            out.push((id, r));
        }
        // Accounts removed by any daemon leave the cache too.
        cache.retain(|id, _| live.contains(id));
        Ok(out)
    }

    fn save(&self, record: &Record) -> Result<(), StoreError> {
        let id = &record.id;
        let plain = Zeroizing::new(serde_json::to_vec(record).expect("records always serialise"));
        let (sealed, at) = self.sealed_write(
            &plain,
            || format!("cannot save the record for {id} in the PostgreSQL store"),
            |sealed, tag| {
                let row = (
                    id.platform.clone(),
                    id.account.clone(),
                    sealed,
                    record.expires_at,
                    state_name(record.health.state),
                    provisional_next_refresh(record),
                    tag,
                );
                move |mut tx: sqlx_core::transaction::Transaction<'static, Postgres>| {
                    let (p, a, sealed, expires_at, state, next, tag) = row.clone();
                    async move {
                        let at: Option<DateTime<Utc>> = query_scalar(sqlx_core::sql_str::AssertSqlSafe(format!(
                            "INSERT INTO outreach_accounts
                                 (platform, account, sealed, expires_at, state, next_refresh, updated_at)
                             SELECT $1, $2, $3, $4, $5, $6, now() WHERE {RECIPIENTS_NOW} = $7
                             ON CONFLICT (platform, account) DO UPDATE SET
                                 sealed = EXCLUDED.sealed,
                                 expires_at = EXCLUDED.expires_at,
                                 state = EXCLUDED.state,
                                 next_refresh = EXCLUDED.next_refresh,
                                 updated_at = now()
                             RETURNING updated_at"
                        )))
                        .bind(p)
                        .bind(a)
                        .bind(sealed)
                        .bind(expires_at)
                        .bind(state)
                        .bind(next)
                        .bind(tag)
                        .fetch_optional(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        Ok(at)
                    }
                }
            },
        )?;
        self.own_writes
            .lock()
            .expect("own writes")
            .insert(id.clone(), at);
        self.remember(id, sealed, record);
        Ok(())
    }

    fn list(&self) -> Result<Vec<AccountId>, StoreError> {
        let rows: Vec<(String, String)> = self.db.run(
            || "cannot list the accounts in the PostgreSQL store".to_string(),
            |pool| async move {
                let rows = query(
                    "SELECT platform, account FROM outreach_accounts ORDER BY platform, account",
                )
                .fetch_all(&pool)
                .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            },
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (p, a) in rows {
            match AccountId::new(&p, &a) {
                Ok(id) => out.push(id),
                // Not written by outreach: never a path, never used.
                Err(_) => tracing::warn!(
                    "the PostgreSQL store holds a row whose platform or account is not a valid name; it is ignored"
                ),
            }
        }
        Ok(out)
    }

    fn list_platform(&self, platform: &str) -> Result<Vec<AccountId>, StoreError> {
        let p = platform.to_string();
        let accounts: Vec<String> = self.db.run(
            || format!("cannot list the {platform} accounts in the PostgreSQL store"),
            move |pool| {
                let p = p.clone();
                async move {
                    query_scalar(
                        "SELECT account FROM outreach_accounts WHERE platform = $1 ORDER BY account",
                    )
                    .bind(p)
                    .fetch_all(&pool)
                    .await
                }
            },
        )?;
        Ok(accounts
            .into_iter()
            .filter_map(|a| AccountId::new(platform, &a).ok())
            .collect())
    }

    fn contains(&self, id: &AccountId) -> Result<bool, StoreError> {
        let (p, a) = (id.platform.clone(), id.account.clone());
        self.db.run(
            || format!("cannot look {id} up in the PostgreSQL store"),
            move |pool| {
                let (p, a) = (p.clone(), a.clone());
                async move {
                    query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM outreach_accounts
                                        WHERE platform = $1 AND account = $2)",
                    )
                    .bind(p)
                    .bind(a)
                    .fetch_one(&pool)
                    .await
                }
            },
        )
    }

    fn remove(&self, id: &AccountId) -> Result<(), StoreError> {
        self.decrypted.forget(id);
        let (p, a) = (id.platform.clone(), id.account.clone());
        let removed: u64 = self.db.run(
            || format!("cannot remove {id} from the PostgreSQL store"),
            move |pool| {
                let (p, a) = (p.clone(), a.clone());
                async move {
                    let mut tx = pool.begin().await?;
                    query("DELETE FROM outreach_answers WHERE platform = $1 AND account = $2")
                        .bind(&p)
                        .bind(&a)
                        .execute(&mut *tx)
                        .await?;
                    let done =
                        query("DELETE FROM outreach_accounts WHERE platform = $1 AND account = $2")
                            .bind(&p)
                            .bind(&a)
                            .execute(&mut *tx)
                            .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected())
                }
            },
        )?;
        if removed == 0 {
            return Err(StoreError::NotFound { id: id.clone() });
        }
        Ok(())
    }

    fn lease(&self, id: &AccountId) -> Result<Lease, StoreError> {
        let held = self.db.hold(lock_key("lease", id), || {
            format!("cannot take the refresh lease of {id}")
        })?;
        Ok(Lease(Box::new(held)))
    }

    fn load_aux(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_aux_name(name)?;
        let n = name.to_string();
        let raw: Option<Vec<u8>> = self.db.run(
            || format!("cannot read the store entry {name} from the PostgreSQL store"),
            move |pool| {
                let n = n.clone();
                async move {
                    query_scalar("SELECT sealed FROM outreach_aux WHERE name = $1")
                        .bind(n)
                        .fetch_optional(&pool)
                        .await
                }
            },
        )?;
        let id = AccountId {
            platform: "_aux".into(),
            account: name.into(),
        };
        raw.map(|raw| self.open_sealed(&raw, &id, "outreach_aux"))
            .transpose()
    }

    fn save_aux(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        check_aux_name(name)?;
        self.sealed_write(
            bytes,
            || format!("cannot save the store entry {name} in the PostgreSQL store"),
            |sealed, tag| {
                let row = (name.to_string(), sealed, tag);
                move |mut tx: sqlx_core::transaction::Transaction<'static, Postgres>| {
                    let (n, sealed, tag) = row.clone();
                    async move {
                        let at: Option<DateTime<Utc>> = query_scalar(sqlx_core::sql_str::AssertSqlSafe(format!(
                            "INSERT INTO outreach_aux (name, sealed, updated_at)
                             SELECT $1, $2, now() WHERE {RECIPIENTS_NOW} = $3
                             ON CONFLICT (name) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now()
                             RETURNING updated_at"
                        )))
                        .bind(n)
                        .bind(sealed)
                        .bind(tag)
                        .fetch_optional(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        Ok(at)
                    }
                }
            },
        )
        .map(drop)
    }

    fn remove_aux(&self, name: &str) -> Result<(), StoreError> {
        check_aux_name(name)?;
        let n = name.to_string();
        self.db.run(
            || format!("cannot remove the store entry {name} from the PostgreSQL store"),
            move |pool| {
                let n = n.clone();
                async move {
                    query("DELETE FROM outreach_aux WHERE name = $1")
                        .bind(n)
                        .execute(&pool)
                        .await
                        .map(drop)
                }
            },
        )
    }

    fn aux_names(&self) -> Result<Vec<String>, StoreError> {
        self.db.run(
            || "cannot list the PostgreSQL store's aux entries".to_string(),
            |pool| async move {
                query_scalar("SELECT name FROM outreach_aux ORDER BY name")
                    .fetch_all(&pool)
                    .await
            },
        )
    }

    fn escrow_slot(&self, id: &AccountId) -> Option<EscrowSlot> {
        Some(EscrowSlot {
            place: SlotPlace::Postgres {
                url_env: self.db.url_env.clone(),
                connect_retry_secs: self.retry_secs,
                id: id.clone(),
            },
            recipients: self
                .identity
                .public
                .iter()
                .chain(self.extra_keys.read().expect("recipients").iter())
                .cloned()
                .collect(),
        })
    }

    fn read_answer(&self, id: &AccountId) -> Result<Option<Vec<u8>>, StoreError> {
        let raw = self.fetch_sealed("outreach_answers", id)?;
        raw.map(|raw| self.open_sealed(&raw, id, "outreach_answers"))
            .transpose()
    }

    fn clear_answer(&self, id: &AccountId) -> Result<(), StoreError> {
        let (p, a) = (id.platform.clone(), id.account.clone());
        self.db.run(
            || format!("cannot remove the escrowed token answer of {id} from the PostgreSQL store"),
            move |pool| {
                let (p, a) = (p.clone(), a.clone());
                async move {
                    query("DELETE FROM outreach_answers WHERE platform = $1 AND account = $2")
                        .bind(p)
                        .bind(a)
                        .execute(&pool)
                        .await
                        .map(drop)
                }
            },
        )
    }

    fn saved_since(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<Vec<super::Saved>>, StoreError> {
        let rows: Vec<(String, String, DateTime<Utc>)> = self.db.run(
            || "cannot list the accounts saved lately in the PostgreSQL store".to_string(),
            move |pool| async move {
                query(
                    "SELECT platform, account, updated_at FROM outreach_accounts
                     WHERE $1::timestamptz IS NULL OR updated_at >= $1",
                )
                .bind(since)
                .fetch_all(&pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect()
            },
        )?;
        let own = self.own_writes.lock().expect("own writes");
        Ok(Some(
            rows.into_iter()
                .filter_map(|(p, a, at)| {
                    let id = AccountId::new(&p, &a).ok()?;
                    let by_me = own.get(&id) == Some(&at);
                    Some(super::Saved { id, at, by_me })
                })
                .collect(),
        ))
    }

    fn add_recipients(&self, new: &[String]) -> Result<Option<usize>, StoreError> {
        self.reseal_with(new).map(Some)
    }

    fn note_next_refresh(
        &self,
        id: &AccountId,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let (p, a) = (id.platform.clone(), id.account.clone());
        self.db.run(
            || format!("cannot note the next refresh of {id} in the PostgreSQL store"),
            move |pool| {
                let (p, a) = (p.clone(), a.clone());
                async move {
                    query(
                        "UPDATE outreach_accounts SET next_refresh = $3
                         WHERE platform = $1 AND account = $2",
                    )
                    .bind(p)
                    .bind(a)
                    .bind(at)
                    .execute(&pool)
                    .await
                    .map(drop)
                }
            },
        )
    }
}
