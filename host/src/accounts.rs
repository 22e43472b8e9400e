//! Accounts: the link between a plugin, the user's settings and a stored
//! credential.
//!
//! Owns: the [`App`] that commands run against (config, plugin host, store),
//! adding an account from a pasted credential (verified with one profile
//! request before anything is stored; an existing account is replaced only
//! when asked, atomically, and one that comes back from *failing* or *needs
//! reconnect* is announced), listing and removing accounts, and
//! building the per-account call context and network scope.
//!
//! Never: stores a credential the platform has not accepted, or shows one.
//! Connect flows and token exchanges live in [`crate::auth`], refresh in
//! [`crate::schedule`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::config::Loaded;
use crate::http::{Credentials, Scope};
use crate::plugin::manifest::effective_endpoints;
use crate::plugin::wit::types::{Account, CallError, Context, Pair};
use crate::plugin::{Host, LoadedPlugin};
use crate::secret::Secret;
use crate::store::{
    AccountId, AccountState, AgeDirStore, CredentialStore, Identity, Profile, Record,
};

/// A mistake in what the user gave (arguments, settings, post files):
/// reported with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// `return Err(bad!(…)))` for a [`BadInput`].
macro_rules! bad {
    ($($t:tt)*) => { anyhow::Error::from($crate::accounts::BadInput(format!($($t)*))) };
}
pub(crate) use bad;

/// Everything a command needs. The store is opened on first use, so
/// commands that do not need credentials never ask for the identity.
pub struct App {
    cfg: Arc<ArcSwap<Loaded>>,
    pub host: Host,
    store: OnceLock<Arc<AgeDirStore>>,
    outbox: OnceLock<Arc<std::sync::Mutex<crate::outbox::Outbox>>>,
    /// One refresh per account in this process, whichever task (scheduler,
    /// publish, API) asks: shared by every [`crate::schedule::Refresher`].
    pub(crate) refresh_locks: crate::schedule::RefreshLocks,
    /// One delivery of a post at a time in this process (the daemon's due
    /// loop and its post-file watcher may reach the same post together).
    pub(crate) post_locks: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Sends token exchanges that must survive this process.
    pub escrow: Arc<crate::escrow::Escrow>,
}

impl App {
    /// Load the config's plugins.
    pub async fn new(cfg: Loaded) -> anyhow::Result<Self> {
        let host = Host::new(&cfg)?;
        host.load_dir(&cfg.plugins_dir).await?;
        // An endpoint override the plugin does not have is a config error.
        crate::plugin::manifest::check_overrides(&cfg, &host)?;
        let escrow = crate::escrow::Escrow::new(
            crate::escrow::Escrow::own_binary(),
            crate::escrow::HelperHttp {
                user_agent: cfg.config.http.user_agent.clone(),
                timeout_ms: cfg.config.limits.http_timeout_ms,
            },
        );
        Ok(App {
            escrow: Arc::new(escrow),
            cfg: Arc::new(ArcSwap::from_pointee(cfg)),
            host,
            store: OnceLock::new(),
            outbox: OnceLock::new(),
            refresh_locks: Default::default(),
            post_locks: Default::default(),
        })
    }

    /// The configuration as it is now (the daemon swaps in a new one when
    /// the file changes; a caller keeps the snapshot it took).
    pub fn cfg(&self) -> Arc<Loaded> {
        self.cfg.load_full()
    }

    /// A handle that always reads the current configuration.
    pub fn cfg_handle(&self) -> Arc<ArcSwap<Loaded>> {
        self.cfg.clone()
    }

    /// Apply a new configuration. Paths, limits and HTTP settings are fixed
    /// for the life of the process; the returned list names those that
    /// changed and need a restart.
    pub fn reload_config(&self, mut new: Loaded) -> Vec<&'static str> {
        let old = self.cfg();
        let mut restart = Vec::new();
        if old.plugins_dir != new.plugins_dir
            || old.store_dir != new.store_dir
            || old.identity != new.identity
            || old.cache_dir != new.cache_dir
            || old.outbox != new.outbox
            || old.config.paths.posts != new.config.paths.posts
        {
            restart.push("paths");
        }
        if old.config.limits != new.config.limits {
            restart.push("limits");
        }
        if old.config.http != new.config.http {
            restart.push("http");
        }
        if old.config.daemon != new.config.daemon {
            restart.push("daemon");
        }
        // What needs a restart keeps its running value until then.
        new.plugins_dir = old.plugins_dir.clone();
        new.store_dir = old.store_dir.clone();
        new.identity = old.identity.clone();
        new.cache_dir = old.cache_dir.clone();
        new.outbox = old.outbox.clone();
        new.posts_dir = old.posts_dir.clone();
        new.config.paths = old.config.paths.clone();
        new.config.limits = old.config.limits.clone();
        new.config.http = old.config.http.clone();
        new.config.daemon = old.config.daemon.clone();
        self.cfg.store(Arc::new(new));
        restart
    }

    /// The credential store, opening it (and creating the identity on first
    /// run) if needed.
    pub fn store(&self) -> anyhow::Result<Arc<dyn CredentialStore>> {
        Ok(self.store_dir()?)
    }

    /// The publishing journal, opened once per process: opening SQLite
    /// (and recreating its WAL) per post costs more than the post.
    pub fn outbox(&self) -> anyhow::Result<Arc<std::sync::Mutex<crate::outbox::Outbox>>> {
        if let Some(o) = self.outbox.get() {
            return Ok(o.clone());
        }
        let o = Arc::new(std::sync::Mutex::new(crate::outbox::Outbox::open(
            &self.cfg().outbox,
        )?));
        Ok(self.outbox.get_or_init(|| o).clone())
    }

    /// The default store backend itself (for operations only it has).
    pub fn store_dir(&self) -> anyhow::Result<Arc<AgeDirStore>> {
        if let Some(s) = self.store.get() {
            return Ok(s.clone());
        }
        let identity =
            Identity::open_for_store(&self.cfg().identity, &self.cfg().store_dir, || {
                std::env::var("OUTREACH_IDENTITY_PASSPHRASE")
                    .ok()
                    .or_else(|| {
                        rpassword::prompt_password(format!(
                            "passphrase for {}: ",
                            self.cfg().identity.display()
                        ))
                        .ok()
                    })
            })?;
        let store = Arc::new(AgeDirStore::open(&self.cfg().store_dir, identity)?);
        Ok(self.store.get_or_init(|| store).clone())
    }

    /// The account as a plugin sees it (no secrets).
    pub fn account_view(record: &Record) -> Account {
        Self::account_view_of(&record.id, &record.settings, &record.profile)
    }

    /// The plugin for `platform`, if it is loaded and enabled in config.
    pub fn platform(&self, platform: &str) -> anyhow::Result<Arc<LoadedPlugin>> {
        let plugin = self.host.get(platform)?;
        if !self.cfg().platform(platform).enabled {
            return Err(bad!(
                "platform `{platform}` is disabled in the config (platforms.{platform}.enabled = false)"
            ));
        }
        Ok(plugin)
    }

    /// The context and network scope of a call for `record`'s account.
    pub fn call_env(&self, plugin: &LoadedPlugin, record: &Record) -> (Context, Scope) {
        let account = Self::account_view(record);
        let settings = self.cfg().platform(&plugin.manifest.id);
        let endpoints = effective_endpoints(&plugin.manifest, &settings.endpoints, Some(&account));
        let mut creds = Credentials::new().with("access_token", record.access_token.clone());
        if let Some(r) = &record.refresh_token {
            creds = creds.with("refresh_token", r.clone());
        }
        let mut scope = self.host.scope(
            plugin,
            Some(&endpoints),
            Some(&account),
            Some(Arc::new(creds)),
        );
        if !settings.declared_limits {
            scope.rate_limits = Arc::new(Vec::new());
        }
        (Context { account, endpoints }, scope)
    }

    /// Check `settings` against the plugin's declared settings, filling in
    /// defaults.
    pub fn check_settings(
        &self,
        plugin: &LoadedPlugin,
        mut settings: BTreeMap<String, String>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let m = &plugin.manifest;
        let platform = &m.id;
        for k in settings.keys() {
            if !m.settings.iter().any(|s| &s.name == k) {
                let known: Vec<&str> = m.settings.iter().map(|s| s.name.as_str()).collect();
                return Err(bad!(
                    "platform `{platform}` has no setting `{k}` (its settings: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
        for s in &m.settings {
            if !settings.contains_key(&s.name) {
                match &s.default_value {
                    Some(d) => {
                        settings.insert(s.name.clone(), d.clone());
                    }
                    None if s.required => {
                        return Err(bad!(
                            "platform `{platform}` needs setting `{}` ({}); pass --set {}=VALUE",
                            s.name,
                            s.description,
                            s.name
                        ));
                    }
                    None => {}
                }
            }
            if s.is_host
                && let Some(v) = settings.get(&s.name)
            {
                let u = url::Url::parse(v)
                    .with_context(|| format!("setting `{}` = {v:?} is not a URL", s.name))?;
                if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                    return Err(bad!("setting `{}` = {v:?} must be an http(s) URL", s.name));
                }
            }
        }
        Ok(settings)
    }

    /// The account view of an account that is not stored yet.
    pub fn account_view_of(
        id: &AccountId,
        settings: &BTreeMap<String, String>,
        profile: &Profile,
    ) -> Account {
        Account {
            name: id.account.clone(),
            settings: settings
                .iter()
                .map(|(k, v)| Pair {
                    name: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            user_id: (!profile.id.is_empty()).then(|| profile.id.clone()),
            handle: profile.handle.clone(),
        }
    }

    /// Ask the platform who a new credential belongs to; store the account
    /// only if it answers. An account stored before is replaced (a
    /// reconnect); see [`App::store_verified_as`].
    pub async fn store_verified(
        &self,
        plugin: &LoadedPlugin,
        id: AccountId,
        tokens: crate::auth::Tokens,
        settings: BTreeMap<String, String>,
    ) -> anyhow::Result<Record> {
        self.store_verified_as(plugin, id, tokens, settings, Existing::Replace)
            .await
    }

    /// [`App::store_verified`], doing with an account that exists already
    /// what `existing` says. The platform is asked first; only then, under
    /// the account's refresh lease (so no refresh of the old credential
    /// lands on top), is the old record replaced, in one atomic write. An
    /// account that comes back from *failing* or *needs reconnect* is
    /// announced healthy again.
    pub async fn store_verified_as(
        &self,
        plugin: &LoadedPlugin,
        id: AccountId,
        tokens: crate::auth::Tokens,
        settings: BTreeMap<String, String>,
        existing: Existing,
    ) -> anyhow::Result<Record> {
        let store = self.store()?;
        if existing == Existing::Refuse {
            refuse_existing(&*store, &id)?;
        }
        let mut record = crate::auth::new_record(id.clone(), tokens, settings);
        if record.scope.is_empty() {
            let m = &plugin.manifest;
            record.scope = m.auth.scopes.join(&m.auth.scope_separator);
        }
        let (ctx, scope) = self.call_env(plugin, &record);
        let profile = match self.host.profile(plugin, scope, &ctx).await? {
            Ok(p) => p,
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "{} did not accept the credential for {id} ({}); nothing was stored",
                    plugin.manifest.id,
                    describe_call_error(&e)
                ));
            }
        };
        record.profile = Profile {
            id: profile.id,
            name: profile.name,
            handle: profile.handle,
            picture: profile.picture,
            url: profile.url,
        };
        let (store2, new) = (store.clone(), record.clone());
        let before = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let _lease = store2.lease(&new.id)?;
            // Someone may have added it while the platform was asked.
            if existing == Existing::Refuse {
                refuse_existing(&*store2, &new.id)?;
            }
            let before = store2.load(&new.id).ok().map(|r| r.health.state);
            // A token exchange of the credential being replaced may still
            // be in flight: wait for it, and drop its answer, so it never
            // lands on the new credential.
            if crate::escrow::settle(&*store2, &new.id)?.is_some() {
                store2.clear_answer(&new.id)?;
            }
            store2.save(&new)?;
            Ok(before)
        })
        .await??;
        if let Some(from) = before
            && from != AccountState::Healthy
        {
            crate::schedule::Notifier::new(self)
                .changed(&id, from, AccountState::Healthy, "reconnected")
                .await;
        }
        Ok(record)
    }

    /// Add (or replace) an account from a pasted credential: check the
    /// settings, ask the platform who it is, then store it encrypted.
    pub async fn add_account(
        &self,
        platform: &str,
        account: &str,
        token: Secret,
        settings: BTreeMap<String, String>,
    ) -> anyhow::Result<Record> {
        self.add_account_as(platform, account, token, settings, Existing::Replace)
            .await
    }

    /// [`App::add_account`], doing with an account that exists already
    /// what `existing` says.
    pub async fn add_account_as(
        &self,
        platform: &str,
        account: &str,
        token: Secret,
        settings: BTreeMap<String, String>,
        existing: Existing,
    ) -> anyhow::Result<Record> {
        let id = AccountId::new(platform, account)?;
        let plugin = self.platform(platform)?;
        if token.expose().trim().is_empty() {
            return Err(bad!(
                "no credential was given for {id}; paste it on standard input"
            ));
        }
        let settings = self.check_settings(&plugin, settings)?;
        let lifetime = plugin.manifest.auth.access_token_lifetime;
        let now = Utc::now();
        let tokens = crate::auth::Tokens {
            access: Secret::new(token.expose().trim()),
            refresh: None,
            expires_in: (lifetime > 0).then_some(lifetime),
            expires_at: (lifetime > 0).then(|| now + chrono::Duration::seconds(lifetime as i64)),
            scope: None,
        };
        self.store_verified_as(&plugin, id, tokens, settings, existing)
            .await
    }

    /// Every stored account, each with its record or why it cannot be read.
    pub fn accounts(&self) -> anyhow::Result<Vec<(AccountId, anyhow::Result<Record>)>> {
        let store = self.store()?;
        Ok(store
            .list()?
            .into_iter()
            .map(|id| {
                let r = store.load(&id).map_err(anyhow::Error::from);
                (id, r)
            })
            .collect())
    }

    /// Resolve a target such as `x`, `linkedin/company` or `mastodon/*`
    /// to stored accounts.
    pub fn resolve_target(&self, target: &str) -> anyhow::Result<Vec<AccountId>> {
        self.resolve_target_in(target, &self.store()?.list()?)
    }

    /// [`App::resolve_target`] among `stored` (the store's accounts, listed
    /// once for a whole post).
    pub fn resolve_target_in(
        &self,
        target: &str,
        stored: &[AccountId],
    ) -> anyhow::Result<Vec<AccountId>> {
        let (platform, account) = match target.split_once('/') {
            Some((p, a)) => (p, Some(a)),
            None => (target, None),
        };
        self.platform(platform)?;
        let all: Vec<AccountId> = stored
            .iter()
            .filter(|id| id.platform == platform)
            .cloned()
            .collect();
        match account {
            Some("*") => {
                if all.is_empty() {
                    return Err(bad!(
                        "there are no {platform} accounts; add one with `outreach accounts add {platform}`"
                    ));
                }
                Ok(all)
            }
            Some(a) => {
                let id = AccountId::new(platform, a)?;
                if !all.contains(&id) {
                    return Err(bad!(
                        "there is no account {id}; add it with `outreach accounts add {platform} --account {a}`"
                    ));
                }
                Ok(vec![id])
            }
            None => match all.len() {
                0 => Err(bad!(
                    "there is no {platform} account; add one with `outreach accounts add {platform}`"
                )),
                1 => Ok(all),
                _ => {
                    let default = AccountId::new(platform, "default")?;
                    if all.contains(&default) {
                        Ok(vec![default])
                    } else {
                        let names: Vec<String> = all.iter().map(|i| i.to_string()).collect();
                        Err(bad!(
                            "{platform} has several accounts ({}); name one (`{platform}/NAME`) or all (`{platform}/*`)",
                            names.join(", ")
                        ))
                    }
                }
            },
        }
    }
}

/// What storing an account does when one of that name exists already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse, naming the account, since when it exists, and `--replace`.
    Refuse,
    /// Replace it (a reconnect, or `accounts add --replace`).
    Replace,
}

/// A [`BadInput`] if `id` is stored already.
fn refuse_existing(store: &dyn CredentialStore, id: &AccountId) -> anyhow::Result<()> {
    if !store.list()?.contains(id) {
        return Ok(());
    }
    let what = match store.load(id) {
        Ok(r) => format!(
            " as {}, since {}",
            r.profile.label(),
            r.created_at.format("%Y-%m-%d %H:%M UTC")
        ),
        Err(_) => " (its record cannot be read)".to_string(),
    };
    Err(bad!(
        "{id} already exists{what}; nothing was changed. To replace it with this credential, run the same command with --replace"
    ))
}

/// An account as `outreach accounts` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountSummary {
    pub id: String,
    pub platform: String,
    pub account: String,
    pub profile: Option<Profile>,
    pub expires_at: Option<chrono::DateTime<Utc>>,
    pub has_refresh_token: bool,
    pub settings: BTreeMap<String, String>,
    pub created_at: Option<chrono::DateTime<Utc>>,
    pub error: Option<String>,
}

impl AccountSummary {
    pub fn new(id: &AccountId, r: &anyhow::Result<Record>) -> Self {
        match r {
            Ok(rec) => AccountSummary {
                id: id.to_string(),
                platform: id.platform.clone(),
                account: id.account.clone(),
                profile: Some(rec.profile.clone()),
                expires_at: rec.expires_at,
                has_refresh_token: rec.refresh_token.is_some(),
                settings: rec.settings.clone(),
                created_at: Some(rec.created_at),
                error: None,
            },
            Err(e) => AccountSummary {
                id: id.to_string(),
                platform: id.platform.clone(),
                account: id.account.clone(),
                profile: None,
                expires_at: None,
                has_refresh_token: false,
                settings: BTreeMap::new(),
                created_at: None,
                error: Some(format!("{e:#}")),
            },
        }
    }
}

/// A call error as one line for people.
pub fn describe_call_error(e: &CallError) -> String {
    match e {
        CallError::AuthExpired(m) => format!("access token expired or invalid: {m}"),
        CallError::NeedsReconnect(m) => format!("needs reconnect: {m}"),
        CallError::RateLimited(r) => match r.retry_after_seconds {
            Some(s) => format!("rate limited, retry in {s} s: {}", r.message),
            None => format!("rate limited: {}", r.message),
        },
        CallError::Rejected(m) => format!("rejected: {m}"),
        CallError::Transient(m) => format!("temporary failure: {m}"),
        CallError::OutcomeUnknown(m) => {
            format!("outcome unknown (the post may or may not exist): {m}")
        }
    }
}

/// The short kind name of a call error, for `--json`.
pub fn call_error_kind(e: &CallError) -> &'static str {
    match e {
        CallError::AuthExpired(_) => "auth-expired",
        CallError::NeedsReconnect(_) => "needs-reconnect",
        CallError::RateLimited(_) => "rate-limited",
        CallError::Rejected(_) => "rejected",
        CallError::Transient(_) => "transient",
        CallError::OutcomeUnknown(_) => "outcome-unknown",
    }
}
