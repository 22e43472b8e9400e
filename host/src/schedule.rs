//! Keeping tokens valid: single-flight refresh, failure classification,
//! token health, state-change notifications, and the one refresh
//! scheduler.
//!
//! Owns: [`Refresher`] — at most one refresh per account in flight, across
//! tasks (an async mutex) and across processes (the store's refresh lease);
//! the record is re-read inside the lease (after applying any answer an
//! interrupted exchange left, see [`crate::escrow`]) and stored before
//! anyone uses the new token. Failures are classified: an invalid grant marks the account
//! *needs reconnect* at once; network errors, 5xx and 429 back off
//! exponentially with jitter, capped, and never disconnect. A state change
//! is announced once (log, hook command, webhook), never once per attempt.
//! Which tokens can be renewed at all ([`can_refresh`]: not a pasted token,
//! which has no refresh token — it stays healthy until it expires, then
//! needs reconnect) and when one is about to expire ([`about_to_expire`],
//! scaled to its lifetime). [`run`] is the scheduler: one priority queue of
//! due times for every account, refreshing at `refresh_at` of each token's
//! real lifetime and logging each refresh it does.
//!
//! Never: talks to a platform itself (that is [`crate::auth`]) or lets a
//! response without a refresh token erase the stored one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::{TokenClient, TokenError, client_for};
use crate::contract::wit::types::{ExpiryFormat, Manifest, RefreshStyle};
use crate::plugin::manifest::effective_endpoints;
use crate::services::{Services, account_view};
use crate::store::{AccountId, AccountState, Record, StoreError};

/// Why a refresh did not produce a usable token.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("{id} needs to be reconnected ({reason}); run `outreach connect {platform} --account {account}`", platform = id.platform, account = id.account)]
    NeedsReconnect { id: AccountId, reason: String },
    #[error("refreshing {id} failed for now ({reason}); next attempt at {retry_at}")]
    Transient {
        id: AccountId,
        reason: String,
        retry_at: DateTime<Utc>,
    },
    /// The token cannot be renewed (the platform does not renew tokens, or
    /// no refresh token is stored for the account); it is still valid.
    #[error("{id} cannot be refreshed ({reason}); {}", validity(expires_at, id))]
    CannotRefresh {
        id: AccountId,
        reason: String,
        expires_at: Option<DateTime<Utc>>,
    },
    /// The platform renews a token only once it has lived `min_age`
    /// (Instagram, Threads); it is still valid.
    #[error(
        "{id} is not refreshed yet: {platform} renews a token only once it is {} old; it can be from {} (it is valid until {})",
        human_duration(*min_age),
        ready_at.format("%Y-%m-%d %H:%M:%S UTC"),
        expires_at.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| "it is replaced".into())
    )]
    TooEarly {
        id: AccountId,
        platform: String,
        min_age: chrono::Duration,
        ready_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

/// The seed's `TokenHealth`, plus the account's state and schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenHealth {
    pub platform: String,
    pub account: String,
    pub state: AccountState,
    pub is_valid: bool,
    /// Seconds until the access token expires (negative: expired); `None`
    /// for tokens that do not expire.
    pub expires_in: Option<i64>,
    pub last_refreshed: Option<DateTime<Utc>>,
    /// Inside the last 20% of the token's lifetime.
    pub needs_refresh: bool,
    pub refreshable: bool,
    pub next_refresh: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// No loaded plugin provides the platform (its file was removed); the
    /// credential is kept and nothing is refreshed or published until the
    /// plugin is back.
    #[serde(default)]
    pub plugin_missing: bool,
    /// Hosts its plugin declares that this account's credential may not go
    /// to until `outreach plugins approve PLATFORM` (a plugin update added
    /// them).
    #[serde(default)]
    pub awaiting_approval: Vec<String>,
}

/// When a token was issued and how long it lives, from its record.
fn lifetime(r: &Record) -> Option<(DateTime<Utc>, chrono::Duration)> {
    let expires_at = r.expires_at?;
    let issued = r.last_refreshed.unwrap_or(r.created_at);
    let life = match r.expires_in {
        Some(s) if s > 0 => chrono::Duration::seconds(s as i64),
        _ => expires_at - issued,
    };
    let issued = expires_at - life;
    Some((issued, life))
}

/// `36 hours`, `24 hours`, `90 seconds`: a duration for people.
fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    if s >= 7200 && s % 3600 == 0 {
        format!("{} hours", s / 3600)
    } else if s >= 120 && s % 60 == 0 {
        format!("{} minutes", s / 60)
    } else {
        format!("{s} seconds")
    }
}

/// When `r`'s token may first be refreshed, if that is still to come: the
/// platform renews a token only once it has lived `min_age`.
pub fn ready_at(r: &Record, min_age: chrono::Duration) -> Option<DateTime<Utc>> {
    if min_age <= chrono::Duration::zero() {
        return None;
    }
    let issued = match lifetime(r) {
        Some((issued, _)) => issued,
        None => r.last_refreshed.unwrap_or(r.created_at),
    };
    Some(issued + min_age).filter(|t| *t > Utc::now())
}

/// `outreach connect …` for `id` (the `--account` only when it is not
/// the default one).
pub fn reconnect_command(id: &AccountId) -> String {
    if id.account == "default" {
        format!("outreach connect {}", id.platform)
    } else {
        format!("outreach connect {} --account {}", id.platform, id.account)
    }
}

/// How long a token that cannot be refreshed stays usable, for people.
fn validity(expires_at: &Option<DateTime<Utc>>, id: &AccountId) -> String {
    match expires_at {
        None => "its token does not expire".to_string(),
        Some(t) => format!(
            "its token stays valid until {}; reconnect with `{}` before then",
            t.format("%Y-%m-%d %H:%M UTC"),
            reconnect_command(id)
        ),
    }
}

/// Whether `r`'s token can be renewed: the platform renews tokens and the
/// record holds what the renewal needs (a pasted token has no refresh
/// token).
pub fn can_refresh(m: &Manifest, r: &Record) -> bool {
    match &m.auth.refresh {
        RefreshStyle::None => false,
        RefreshStyle::Standard | RefreshStyle::Rotating => r.refresh_token.is_some(),
        RefreshStyle::Custom(x) => {
            !x.uses(crate::contract::wit::types::SecretName::RefreshToken)
                || r.refresh_token.is_some()
        }
        RefreshStyle::Relogin => r.saved_login.is_some() && m.auth.login.is_some(),
    }
}

/// Why `r`'s token cannot be renewed (see [`can_refresh`]), for people.
pub fn why_not_refreshable(m: &Manifest, r: &Record) -> String {
    match &m.auth.refresh {
        RefreshStyle::None => format!("{} tokens are not renewable", m.name),
        RefreshStyle::Relogin if r.saved_login.is_none() => {
            "its session is renewed by logging in again, and no password is kept for it (reconnect with --remember-password to keep one)".to_string()
        }
        RefreshStyle::Relogin => format!("{} declares no login to renew the session with", m.name),
        _ if r.refresh_token.is_none() => {
            "no refresh token is stored for it; a pasted token has none".to_string()
        }
        _ => format!("{} cannot renew this token", m.name),
    }
}

/// Room kept before a token's expiry, within which it counts as about to
/// expire and is refreshed before use: a tenth of the token's lifetime, at
/// most 30 s, so short-lived tokens are not refreshed on every use.
pub fn expiry_margin(r: &Record) -> chrono::Duration {
    let cap = chrono::Duration::seconds(30);
    match lifetime(r) {
        Some((_, life)) if life > chrono::Duration::zero() => (life / 10).min(cap),
        _ => cap,
    }
}

/// Whether `r`'s access token has expired or is about to (see
/// [`expiry_margin`]).
pub fn about_to_expire(r: &Record) -> bool {
    r.expires_at
        .is_some_and(|t| t <= Utc::now() + expiry_margin(r))
}

/// A stable per-account fraction in [0, 1), so jitter does not move a due
/// time every time it is computed.
fn spread(id: &AccountId, salt: u64) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    salt.hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}

/// The refresh policy for one platform.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub refresh_at: f64,
    pub jitter: f64,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub warn_before: Duration,
    /// How old a token must be before the platform renews it.
    pub min_age: chrono::Duration,
    /// Mixed into each account's jitter. 0 (the same due times in every
    /// process) except in a daemon on a shared store, where each daemon
    /// draws its own, so that of several daemons one comes first for
    /// each refresh and the others find it done, instead of all waking
    /// at the same moment to queue for the account's lease.
    pub salt: u64,
}

impl Policy {
    pub fn for_platform(app: &Services, platform: &str) -> Self {
        let cfg = app.cfg();
        let a = &cfg.config.auth;
        let declared = app
            .host
            .get(platform)
            .map_or(0, |p| p.manifest.auth.refresh_min_age);
        let min_age = cfg
            .platform(platform)
            .refresh_min_age_secs
            .unwrap_or(declared);
        Policy {
            min_age: chrono::Duration::seconds(min_age.min(i64::MAX as u64 / 1000) as i64),
            refresh_at: cfg.platform(platform).refresh_at.unwrap_or(a.refresh_at),
            jitter: a.jitter,
            min_backoff: Duration::from_secs(a.min_backoff_secs),
            max_backoff: Duration::from_secs(a.max_backoff_secs),
            warn_before: Duration::from_secs(a.warn_before_secs),
            salt: 0,
        }
    }

    /// When `r` should next be refreshed (or, for tokens that cannot be, when
    /// to warn). `None`: never.
    pub fn due(&self, r: &Record, refreshable: bool) -> Option<DateTime<Utc>> {
        if r.health.state == AccountState::NeedsReconnect {
            return None;
        }
        if let Some(at) = r.health.retry_at
            && r.health.state == AccountState::Failing
        {
            return Some(at);
        }
        let (issued, life) = lifetime(r)?;
        if !refreshable {
            let warn = chrono::Duration::from_std(self.warn_before).unwrap_or_default();
            return Some(r.expires_at? - warn.min(life / 5 * 4));
        }
        let at = self.refresh_at
            + self.jitter
                * (spread(
                    &r.id,
                    r.last_refreshed.map_or(0, |t| t.timestamp() as u64) ^ self.salt,
                ) - 0.5)
                * 2.0;
        let at = at.clamp(0.05, 0.98);
        let at =
            issued + chrono::Duration::milliseconds((life.num_milliseconds() as f64 * at) as i64);
        // Never before the platform will renew it.
        Some(at.max(issued + self.min_age))
    }

    /// The delay before retry number `failures` (1-based), with jitter:
    /// never shorter than `min_backoff`, never longer than `max_backoff`.
    pub fn backoff(&self, id: &AccountId, failures: u32) -> Duration {
        let min = self.min_backoff.as_secs_f64();
        let max = self.max_backoff.as_secs_f64().max(min);
        let base = min * 2f64.powi(failures.saturating_sub(1).min(30) as i32);
        // Jitter goes above the exponential step (up to half of it), so
        // retries stay spread without coming earlier than the minimum;
        // at the cap they spread over its last third.
        let hi = (base * 1.5).min(max);
        let lo = (hi / 1.5).max(min).min(hi);
        Duration::from_secs_f64(lo + (hi - lo) * spread(id, failures as u64))
    }
}

/// Health of `r` as `outreach status` shows it. A token that cannot be
/// refreshed shows no next refresh, and once it has expired the account
/// needs reconnecting, whether or not anyone has marked it yet.
pub fn health(app: &Services, r: &Record) -> TokenHealth {
    let now = Utc::now();
    let plugin = app.host.get(&r.id.platform).ok();
    let refreshable = plugin.as_ref().is_some_and(|p| can_refresh(&p.manifest, r));
    let expires_in = r.expires_at.map(|t| (t - now).num_seconds());
    let expired = r.expires_at.is_some_and(|t| t <= now);
    let (state, error) = match &plugin {
        Some(p) if !refreshable && expired && r.health.state != AccountState::NeedsReconnect => (
            AccountState::NeedsReconnect,
            Some(expired_reason(&p.manifest, r)),
        ),
        _ => (r.health.state, r.health.last_error.clone()),
    };
    let needs_refresh = refreshable
        && match lifetime(r) {
            Some((issued, life)) => now >= issued + life / 5 * 4,
            None => false,
        };
    TokenHealth {
        platform: r.id.platform.clone(),
        account: r.id.account.clone(),
        state,
        is_valid: state != AccountState::NeedsReconnect && !expired,
        expires_in,
        last_refreshed: r.last_refreshed,
        needs_refresh,
        refreshable,
        next_refresh: if refreshable {
            Policy::for_platform(app, &r.id.platform).due(r, true)
        } else {
            None
        },
        error,
        awaiting_approval: plugin
            .as_ref()
            .map(|p| crate::services::unapproved_hosts(&p.manifest, r))
            .unwrap_or_default(),
        plugin_missing: plugin.is_none(),
    }
}

/// Why an expired token that cannot be refreshed needs reconnecting.
fn expired_reason(m: &Manifest, r: &Record) -> String {
    format!(
        "the token expired{} and cannot be refreshed: {}",
        r.expires_at
            .map(|t| format!(" at {}", t.format("%Y-%m-%d %H:%M UTC")))
            .unwrap_or_default(),
        why_not_refreshable(m, r)
    )
}

/// Announces account state changes and failed or unknown publishes: log,
/// hook command, webhook. The hooks are read from the configuration at each
/// event, so a changed config applies to the next one.
#[derive(Clone)]
pub struct Notifier {
    cfg: Arc<arc_swap::ArcSwap<crate::config::Loaded>>,
    http: reqwest::Client,
}

/// One announcement, as the hook command (environment) and webhook (JSON)
/// receive it.
struct Event<'a> {
    /// `account` or `publish`.
    kind: &'static str,
    account: &'a AccountId,
    state: &'a str,
    previous_state: &'a str,
    message: &'a str,
    post: Option<&'a str>,
}

impl Notifier {
    pub fn new(app: &Services) -> Self {
        Notifier {
            cfg: app.cfg_handle(),
            http: app.host.broker.client(),
        }
    }

    /// Warn that a token which cannot be refreshed will expire.
    pub async fn expiring(&self, id: &AccountId, message: &str) {
        let s = AccountState::Healthy.to_string();
        self.hooks(Event {
            kind: "account",
            account: id,
            state: "expiring",
            previous_state: &s,
            message,
            post: None,
        })
        .await;
    }

    /// Announce `id` moving from `from` to `to`. Failures of the hook are
    /// logged, never fatal.
    pub async fn changed(
        &self,
        id: &AccountId,
        from: AccountState,
        to: AccountState,
        message: &str,
    ) {
        match to {
            AccountState::Healthy => {
                tracing::info!(account = %id, %from, "account recovered: {message}")
            }
            AccountState::Failing => {
                tracing::warn!(account = %id, %from, "refresh failing: {message}")
            }
            AccountState::NeedsReconnect => {
                tracing::error!(account = %id, %from, "account needs reconnect: {message}")
            }
        }
        let (state, previous) = (to.to_string(), from.to_string());
        self.hooks(Event {
            kind: "account",
            account: id,
            state: &state,
            previous_state: &previous,
            message,
            post: None,
        })
        .await;
    }

    /// Announce that a delivery of `post` to `id` ended `failed` or
    /// `unknown` (called once, when the delivery reaches that state).
    pub async fn publish_ended(&self, post: &str, id: &AccountId, state: &str, message: &str) {
        if state == "handed-to-user" {
            tracing::warn!(post, account = %id, state, "publish {state}: {message}");
        } else {
            tracing::error!(post, account = %id, state, "publish {state}: {message}");
        }
        self.hooks(Event {
            kind: "publish",
            account: id,
            state,
            previous_state: "sending",
            message,
            post: Some(post),
        })
        .await;
    }

    async fn hooks(&self, e: Event<'_>) {
        let notify = self.cfg.load().config.notify.clone();
        if let Some(cmd) = &notify.command {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c")
                .arg(cmd)
                .env("OUTREACH_EVENT", e.kind)
                .env("OUTREACH_ACCOUNT", e.account.to_string())
                .env("OUTREACH_STATE", e.state)
                .env("OUTREACH_PREVIOUS_STATE", e.previous_state)
                .env("OUTREACH_MESSAGE", e.message)
                .stdin(std::process::Stdio::null());
            if let Some(p) = e.post {
                c.env("OUTREACH_POST", p);
            }
            let failed = match c.status().await {
                Ok(s) if s.success() => None,
                Ok(s) => Some(s.to_string()),
                Err(err) => Some(format!("it could not be started: {err}")),
            };
            if let Some(why) = failed {
                tracing::warn!(
                    account = %e.account,
                    "the notify command failed ({why}); check `command` under [notify] in the config"
                );
            }
        }
        if let Some(url) = &notify.webhook {
            let body = serde_json::json!({
                "event": e.kind,
                "account": e.account.to_string(),
                "state": e.state,
                "previous_state": e.previous_state,
                "message": e.message,
                "post": e.post,
                "at": Utc::now(),
            });
            if let Err(err) = self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
            {
                tracing::warn!(account = %e.account, "the notify webhook failed: {err}");
            }
        }
    }
}

/// How eager a refresh is.
#[derive(Clone, Debug, PartialEq)]
pub enum Need {
    /// The platform rejected this access token: refresh unless another
    /// task already replaced it.
    Replace(crate::secret::Secret),
    /// Refresh whatever the token's state (`outreach refresh`).
    Now,
    /// Refresh only if the scheduled time has come.
    Due,
    /// Refresh only if the token is expired or about to be (publishing).
    Usable,
}

/// Single-flight refreshes for every account.
pub struct Refresher {
    app: Arc<Services>,
    tokens: TokenClient,
    pub notifier: Notifier,
    /// Refresh requests actually sent to a platform (for tests and metrics).
    pub sent: std::sync::atomic::AtomicU64,
    /// This process's [`Policy::salt`].
    salt: u64,
}

impl Refresher {
    pub fn new(app: Arc<Services>) -> anyhow::Result<Self> {
        let shared = app.cfg().config.store.backend == crate::config::StoreBackend::Postgres;
        let salt = if shared {
            u64::from_le_bytes(
                uuid::Uuid::new_v4().as_bytes()[..8]
                    .try_into()
                    .expect("8 bytes"),
            )
        } else {
            0
        };
        Ok(Refresher {
            tokens: TokenClient::new(&app)?,
            notifier: Notifier::new(&app),
            app,
            sent: Default::default(),
            salt,
        })
    }

    /// The refresh policy of `platform` in this process.
    fn policy(&self, platform: &str) -> Policy {
        Policy {
            salt: self.salt,
            ..Policy::for_platform(&self.app, platform)
        }
    }

    pub fn app(&self) -> &Services {
        &self.app
    }

    fn is_satisfied(&self, r: &Record, need: &Need, refreshable: bool) -> bool {
        let now = Utc::now();
        match need {
            Need::Now => false,
            Need::Replace(old) => r.access_token != *old,
            // A token that cannot be refreshed is used until it expires.
            Need::Usable | Need::Due if !refreshable => r.expires_at.is_none_or(|t| t > now),
            Need::Usable => !about_to_expire(r),
            Need::Due => self
                .policy(&r.id.platform)
                .due(r, true)
                .is_none_or(|t| t > now),
        }
    }

    /// Mark `record` *needs reconnect* for `reason`, storing it, and
    /// announce the change if it is one. The caller holds the lease.
    async fn needs_reconnect(
        &self,
        store: &Arc<dyn crate::store::CredentialStore>,
        record: &mut Record,
        reason: &str,
    ) -> Result<(), RefreshError> {
        let before = record.health.state;
        record.health.state = AccountState::NeedsReconnect;
        record.health.last_error = Some(reason.to_string());
        record.health.retry_at = None;
        store.save(record)?;
        if before != AccountState::NeedsReconnect {
            self.notifier
                .changed(&record.id, before, AccountState::NeedsReconnect, reason)
                .await;
        }
        Ok(())
    }

    /// What `need` gets for a record whose token cannot be refreshed: the
    /// record while its token is valid; once it has expired (or the
    /// platform refused it), *needs reconnect*. The caller holds the lease.
    async fn unrefreshable(
        &self,
        store: &Arc<dyn crate::store::CredentialStore>,
        m: &Manifest,
        mut record: Record,
        need: &Need,
    ) -> Result<(Record, bool), RefreshError> {
        let id = record.id.clone();
        let reason = if record.expires_at.is_some_and(|t| t <= Utc::now()) {
            expired_reason(m, &record)
        } else if matches!(need, Need::Replace(_)) {
            format!(
                "{} refused the access token, and it cannot be refreshed: {}",
                m.name,
                why_not_refreshable(m, &record)
            )
        } else if record.health.state == AccountState::NeedsReconnect {
            return Err(RefreshError::NeedsReconnect {
                id,
                reason: record.health.last_error.clone().unwrap_or_default(),
            });
        } else if *need == Need::Now {
            return Err(RefreshError::CannotRefresh {
                reason: why_not_refreshable(m, &record),
                expires_at: record.expires_at,
                id,
            });
        } else {
            return Ok((record, false));
        };
        if record.health.state != AccountState::NeedsReconnect
            || record.health.last_error.as_deref() != Some(reason.as_str())
        {
            self.needs_reconnect(store, &mut record, &reason).await?;
        }
        Err(RefreshError::NeedsReconnect { id, reason })
    }

    /// Apply an answer an earlier exchange sealed for `id` (see
    /// [`crate::escrow`]); the record as stored afterwards, if there was
    /// one with tokens. The caller holds the lease.
    async fn settle(
        &self,
        store: &Arc<dyn crate::store::CredentialStore>,
        id: &AccountId,
        m: &crate::contract::wit::types::Manifest,
    ) -> Result<Option<Record>, RefreshError> {
        let (s2, id2) = (store.clone(), id.clone());
        let answer = tokio::task::spawn_blocking(move || crate::escrow::settle(&*s2, &id2))
            .await
            .map_err(|e| RefreshError::Other(e.to_string()))??;
        let Some(answer) = answer else {
            return Ok(None);
        };
        let shape = match &m.auth.refresh {
            RefreshStyle::Custom(x) => &x.response,
            _ => &m.auth.token_response,
        };
        let mut record = store.load(id)?;
        let parsed = crate::auth::parse_tokens(
            answer.status,
            &answer.body(),
            shape,
            m.auth.access_token_lifetime,
            &record.secrets(),
        );
        let applied = match parsed {
            Ok(mut tokens) => {
                // "Expires in" counts from when the platform answered.
                if !matches!(
                    shape.expiry_format,
                    ExpiryFormat::UnixSeconds | ExpiryFormat::UnixMillis
                ) {
                    let late = Utc::now() - answer.at;
                    tokens.expires_at = tokens.expires_at.map(|t| t - late);
                }
                if record.access_token != tokens.access {
                    let before = record.health.state;
                    crate::auth::apply(&mut record, tokens);
                    record.last_refreshed = Some(answer.at);
                    store.save(&record)?;
                    tracing::info!(
                        account = %id,
                        "applied the answer of a token refresh whose sender stopped before storing it"
                    );
                    if before != AccountState::Healthy {
                        self.notifier
                            .changed(id, before, AccountState::Healthy, "token refreshed")
                            .await;
                    }
                }
                Some(record)
            }
            // An answer without usable tokens issued nothing.
            Err(_) => None,
        };
        store.clear_answer(id)?;
        Ok(applied)
    }

    /// A record for `id` whose token satisfies `need`, refreshing it if it
    /// does not. Concurrent callers for one account share one refresh.
    pub async fn ensure(&self, id: &AccountId, need: Need) -> Result<Record, RefreshError> {
        self.ensure_reporting(id, need).await.map(|(r, _)| r)
    }

    /// [`Refresher::ensure`], also saying whether this call renewed the
    /// token (rather than finding it good enough, or renewed by someone
    /// else).
    pub async fn ensure_reporting(
        &self,
        id: &AccountId,
        need: Need,
    ) -> Result<(Record, bool), RefreshError> {
        let store = self
            .app
            .store()
            .map_err(|e| RefreshError::Other(format!("{e:#}")))?;
        let plugin = self
            .app
            .host
            .get(&id.platform)
            .map_err(|e| RefreshError::Other(e.to_string()))?;
        let record = store.load(id)?;
        if self.is_satisfied(&record, &need, can_refresh(&plugin.manifest, &record)) {
            return Ok((record, false));
        }
        // One refresh per account in this process…
        let lock = self.app.refresh_locks.get(id);
        let _local = lock.lock().await;
        // …and across processes.
        let store2 = store.clone();
        let id2 = id.clone();
        let _lease = tokio::task::spawn_blocking(move || store2.lease(&id2))
            .await
            .map_err(|e| RefreshError::Other(e.to_string()))??;
        // An exchange for this account may have outlived the process that
        // sent it: its answer holds the only live refresh token.
        let m = &plugin.manifest;
        if crate::auth::spends_refresh_token(m) {
            self.settle(&store, id, m).await?;
        }
        // Someone may have refreshed while we waited: read again.
        let mut record = store.load(id)?;
        let refreshable = can_refresh(m, &record);
        if need != Need::Now && self.is_satisfied(&record, &need, refreshable) {
            return Ok((record, false));
        }
        if record.health.state == AccountState::NeedsReconnect && need != Need::Now {
            return Err(RefreshError::NeedsReconnect {
                id: id.clone(),
                reason: record.health.last_error.clone().unwrap_or_default(),
            });
        }
        if !refreshable {
            return self.unrefreshable(&store, m, record, &need).await;
        }
        let policy = self.policy(&id.platform);
        if let Some(ready_at) = ready_at(&record, policy.min_age) {
            let valid = record.expires_at.is_none_or(|t| t > Utc::now());
            match need {
                Need::Now => {
                    return Err(RefreshError::TooEarly {
                        id: id.clone(),
                        platform: m.name.clone(),
                        min_age: policy.min_age,
                        ready_at,
                        expires_at: record.expires_at,
                    });
                }
                // Asking now would only be refused: the token is used as it
                // is, and the scheduler comes back once it may be renewed.
                Need::Due | Need::Usable if valid => return Ok((record, false)),
                // The platform refused it, or it has expired: the refresh
                // will say whether it can still be renewed.
                _ => {}
            }
        }
        let client = client_for(&self.app.cfg(), &m.id).ok();
        let overrides = self.app.cfg().platform(&m.id).endpoints;
        let endpoints = effective_endpoints(m, &overrides, Some(&account_view(&record)));
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = store
            .escrow_slot(id)
            .filter(|_| crate::auth::spends_refresh_token(m));
        let pins = crate::services::pinned_hosts(m, &record, &endpoints);
        let result = self
            .tokens
            .pinned(pins)
            .refresh(m, &endpoints, client.as_ref(), &record, slot.as_ref())
            .await;
        // The helper may have sealed an answer it could not hand over.
        if matches!(result, Err(TokenError::Transient(_)))
            && slot.is_some()
            && let Some(settled) = self.settle(&store, id, m).await?
        {
            return Ok((settled, true));
        }
        let before = record.health.state;
        match result {
            Ok(tokens) => {
                crate::metrics::refresh(&id.platform, "ok");
                crate::auth::apply(&mut record, tokens);
                // Stored before anyone uses the new token: a rotated refresh
                // token must never exist only in memory.
                store.save(&record)?;
                if slot.is_some()
                    && let Err(e) = store.clear_answer(id)
                {
                    tracing::warn!(account = %id, "{e}");
                }
                if before != AccountState::Healthy {
                    self.notifier
                        .changed(id, before, AccountState::Healthy, "token refreshed")
                        .await;
                }
                Ok((record, true))
            }
            Err(TokenError::InvalidGrant(reason)) => {
                crate::metrics::refresh(&id.platform, "needs_reconnect");
                self.needs_reconnect(&store, &mut record, &reason).await?;
                Err(RefreshError::NeedsReconnect {
                    id: id.clone(),
                    reason,
                })
            }
            Err(TokenError::Transient(reason)) | Err(TokenError::Rejected(reason)) => {
                crate::metrics::refresh(&id.platform, "transient");
                record.health.failures += 1;
                let retry_at = Utc::now()
                    + chrono::Duration::from_std(policy.backoff(id, record.health.failures))
                        .unwrap_or_default();
                record.health.state = AccountState::Failing;
                record.health.last_error = Some(reason.clone());
                record.health.retry_at = Some(retry_at);
                store.save(&record)?;
                if before != AccountState::Failing {
                    self.notifier
                        .changed(id, before, AccountState::Failing, &reason)
                        .await;
                }
                Err(RefreshError::Transient {
                    id: id.clone(),
                    reason,
                    retry_at,
                })
            }
        }
    }
}

impl Refresher {
    /// One refresh the scheduler does for `id`, logged (account, outcome,
    /// next refresh; never a token); when to look at `id` again, if ever.
    async fn scheduled_refresh(&self, id: &AccountId) -> Option<DateTime<Utc>> {
        let next = self.refresh_for_schedule(id).await;
        // A backend that keeps the due time beside the record (PostgreSQL)
        // makes scheduling a query; the files backend keeps nothing.
        if let Ok(store) = self.app.store()
            && let Err(e) = store.note_next_refresh(id, next)
        {
            tracing::warn!(account = %id, "{e}");
        }
        next
    }

    async fn refresh_for_schedule(&self, id: &AccountId) -> Option<DateTime<Utc>> {
        let policy = self.policy(&id.platform);
        match self.ensure_reporting(id, Need::Due).await {
            Ok((rec, refreshed)) => {
                let refreshable = self
                    .app
                    .host
                    .get(&id.platform)
                    .is_ok_and(|p| can_refresh(&p.manifest, &rec));
                let next = policy.due(&rec, refreshable);
                let shown = next
                    .map(|t| format!("next refresh at {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                    .unwrap_or_else(|| "no refresh scheduled".into());
                if refreshed {
                    tracing::info!(
                        account = %id,
                        outcome = "refreshed",
                        next_refresh = ?next,
                        "refreshed {id}; {shown}"
                    );
                } else {
                    tracing::debug!(
                        account = %id,
                        outcome = "current",
                        next_refresh = ?next,
                        "{id} needed no refresh (renewed elsewhere); {shown}"
                    );
                }
                next
            }
            Err(e) => match &e {
                RefreshError::Transient { retry_at, .. } => {
                    tracing::warn!(account = %id, outcome = "failed", next_refresh = ?retry_at, "{e}");
                    Some(*retry_at)
                }
                RefreshError::NeedsReconnect { .. } => {
                    tracing::warn!(
                        account = %id,
                        outcome = "needs-reconnect",
                        "{e}; no refresh is scheduled until it is reconnected"
                    );
                    None
                }
                RefreshError::Store(crate::store::StoreError::NotFound { .. }) => None,
                _ => {
                    let retry_at = Utc::now() + chrono::Duration::seconds(60);
                    tracing::error!(account = %id, outcome = "error", next_refresh = ?retry_at, "{e}");
                    Some(retry_at)
                }
            },
        }
    }
}

/// Run the refresh scheduler until `stop` resolves: one priority queue of
/// (due time, account), refreshed at most `parallel` at a time.
pub async fn run(
    refresher: Arc<Refresher>,
    parallel: usize,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    run_with(refresher, parallel, stop, rx).await
}

/// [`run`], also told of accounts written by someone else (`connect` in
/// another process, the control API): each id received on `changed` that
/// is not already scheduled is read again and scheduled from its record.
/// When `stop` resolves, refreshes in flight are awaited (the caller bounds
/// how long).
pub async fn run_with(
    refresher: Arc<Refresher>,
    parallel: usize,
    stop: impl std::future::Future<Output = ()>,
    mut changed: tokio::sync::mpsc::UnboundedReceiver<AccountId>,
) -> anyhow::Result<()> {
    let app = refresher.app.clone();
    let store = app.store()?;
    let mut queue: BinaryHeap<Reverse<(DateTime<Utc>, AccountId)>> = BinaryHeap::new();
    // Accounts in the queue or being refreshed.
    let mut scheduled: HashSet<AccountId> = HashSet::new();
    let mut warned: HashMap<AccountId, DateTime<Utc>> = HashMap::new();
    let schedule_of = |r: &Record| -> Option<DateTime<Utc>> {
        let refreshable = app
            .host
            .get(&r.id.platform)
            .is_ok_and(|p| can_refresh(&p.manifest, r));
        refresher.policy(&r.id.platform).due(r, refreshable)
    };
    for id in store.list()? {
        match store.load(&id) {
            Ok(r) => {
                if let Some(at) = schedule_of(&r) {
                    scheduled.insert(id.clone());
                    queue.push(Reverse((at, id)));
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
    tracing::info!(accounts = queue.len(), "refresh scheduler started");
    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::unbounded_channel::<(AccountId, Option<DateTime<Utc>>)>();
    let parallel = parallel.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(parallel));
    tokio::pin!(stop);
    loop {
        let next = queue.peek().map(|Reverse((at, _))| *at);
        let wait = next.map(|at| (at - Utc::now()).to_std().unwrap_or_default());
        let sleep = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600)));
        tokio::select! {
            _ = &mut stop => break,
            Some((id, at)) = done_rx.recv() => {
                match at {
                    Some(at) => queue.push(Reverse((at, id))),
                    None => { scheduled.remove(&id); }
                }
            }
            Some(id) = changed.recv() => {
                if scheduled.contains(&id) {
                    continue;
                }
                match store.load(&id) {
                    Ok(r) => {
                        if let Some(at) = schedule_of(&r) {
                            tracing::debug!(account = %id, %at, "account scheduled");
                            scheduled.insert(id.clone());
                            queue.push(Reverse((at, id)));
                        }
                    }
                    Err(crate::store::StoreError::NotFound { .. }) => {}
                    Err(e) => tracing::error!("{e}"),
                }
            }
            _ = sleep, if next.is_some() => {
                let Some(Reverse((_, id))) = queue.pop() else { continue };
                let record = match store.load(&id) {
                    Ok(r) => r,
                    Err(crate::store::StoreError::NotFound { .. }) => {
                        scheduled.remove(&id);
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(account = %id, "{e}");
                        queue.push(Reverse((Utc::now() + chrono::Duration::seconds(60), id)));
                        continue;
                    }
                };
                let Ok(plugin) = app.host.get(&id.platform) else {
                    // Nothing to do until its plugin is back.
                    scheduled.remove(&id);
                    continue;
                };
                let expired = record.expires_at.is_some_and(|t| t <= Utc::now());
                if !can_refresh(&plugin.manifest, &record) && !expired {
                    // A token that cannot be refreshed: warn once, ahead of
                    // expiry, then look again when it expires.
                    match record.expires_at {
                        Some(exp) => {
                            if warned.get(&id) != Some(&exp) {
                                warned.insert(id.clone(), exp);
                                let msg = format!(
                                    "the token expires at {} and cannot be refreshed ({}); reconnect with `{}` before then",
                                    exp.format("%Y-%m-%d %H:%M:%S UTC"),
                                    why_not_refreshable(&plugin.manifest, &record),
                                    reconnect_command(&id)
                                );
                                tracing::warn!(account = %id, "{msg}");
                                refresher.notifier.expiring(&id, &msg).await;
                            }
                            queue.push(Reverse((exp, id)));
                        }
                        None => {
                            scheduled.remove(&id);
                        }
                    }
                    continue;
                }
                // A token to refresh, or one that expired and cannot be
                // (which `ensure` marks *needs reconnect*).
                let permit = slots.clone().acquire_owned().await.expect("semaphore open");
                let (r, tx) = (refresher.clone(), done_tx.clone());
                tokio::spawn(async move {
                    let next = r.scheduled_refresh(&id).await;
                    drop(permit);
                    let _ = tx.send((id, next));
                });
            }
        }
    }
    // Let refreshes in flight finish: a rotated token must reach the store.
    let _all = slots.acquire_many(parallel as u32).await;
    tracing::info!("refresh scheduler stopped");
    Ok(())
}
