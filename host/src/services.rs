//! The shared parts every layer above the plugin host works with: the
//! configuration (swapped in place when the daemon reloads it), the plugin
//! host, the credential store and the publishing journal (each opened on
//! first use, so commands that need neither never ask for the identity),
//! the escrow for exchanges that must survive this process, and the
//! in-process locks that keep one refresh per account and one delivery per
//! post.
//!
//! Owns: those handles, and the small questions every layer asks of them
//! (which plugin serves a platform, an account's call context and network
//! scope, the hosts its credential is pinned to, checking an account's settings, which stored accounts a target
//! names).
//!
//! Never: builds itself from a config (that is [`crate::app`]), runs a flow,
//! a refresh or a delivery, or imports anything above the plugin host.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;
use arc_swap::ArcSwap;

use crate::config::{Loaded, StoreBackend};
use crate::contract::wit::types::{
    Account, Context, CredentialPlacement, Endpoint, Manifest, Pair,
};
use crate::error::bad;
use crate::escrow::Escrow;
use crate::http::{AllowedHost, Credentials, Scope};
use crate::outbox::Outbox;
use crate::plugin::manifest::{declared_hosts, effective_endpoints};
use crate::plugin::{Host, LoadedPlugin};
use crate::store::{AccountId, AgeDirStore, CredentialStore, Identity, PgStore, Profile, Record};

/// One async lock per key, made on first use: whoever holds a key's lock
/// is the only task in this process working on it.
pub struct KeyedLocks<K>(Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>);

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// The lock for `key` (locks nobody holds or waits for are dropped).
    pub fn get(&self, key: &K) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().expect("keyed locks");
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key.clone()).or_default().clone()
    }
}

/// The shared parts (see the module docs).
pub struct Services {
    cfg: Arc<ArcSwap<Loaded>>,
    pub host: Host,
    store: OnceLock<Arc<dyn CredentialStore>>,
    files: OnceLock<Arc<AgeDirStore>>,
    outbox: OnceLock<Arc<Mutex<Outbox>>>,
    /// One refresh per account in this process, whichever task (scheduler,
    /// publish, API) asks.
    pub refresh_locks: KeyedLocks<AccountId>,
    /// One delivery of a post at a time in this process (the daemon's due
    /// loop and its post-file watcher may reach the same post together).
    pub post_locks: KeyedLocks<String>,
    /// Sends token exchanges that must survive this process.
    pub escrow: Arc<Escrow>,
    /// Attachments served to platforms that fetch media themselves.
    pub public_media: Arc<crate::public_media::PublicMedia>,
    /// Uploads in progress in this process, by post and target: what the
    /// call has sent and the media's total size.
    pub uploads: Mutex<BTreeMap<(String, String), (Arc<crate::http::Uploads>, u64)>>,
    /// Asks for the passphrase of a passphrase-protected identity file
    /// (the front end decides how; `None` if there is nobody to ask).
    passphrase: Passphrase,
}

/// How the passphrase of an identity file is asked for.
pub type Passphrase = Box<dyn Fn(&std::path::Path) -> Option<String> + Send + Sync>;

impl Services {
    /// The parts, from a configuration and a plugin host already loaded.
    pub fn new(cfg: Loaded, host: Host, escrow: Escrow, passphrase: Passphrase) -> Self {
        Services {
            passphrase,
            escrow: Arc::new(escrow),
            cfg: Arc::new(ArcSwap::from_pointee(cfg)),
            host,
            store: OnceLock::new(),
            files: OnceLock::new(),
            outbox: OnceLock::new(),
            refresh_locks: Default::default(),
            post_locks: Default::default(),
            public_media: Default::default(),
            uploads: Default::default(),
        }
    }

    /// Bytes sent and total of each upload of `post` in progress here, by
    /// target.
    pub fn upload_progress(&self, post: &str) -> BTreeMap<String, (u64, u64)> {
        self.uploads
            .lock()
            .expect("uploads")
            .iter()
            .filter(|((p, _), _)| p == post)
            .map(|((_, t), (u, total))| {
                (
                    t.clone(),
                    (u.sent.load(std::sync::atomic::Ordering::Relaxed), *total),
                )
            })
            .collect()
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
        if old.config.store != new.config.store {
            restart.push("store");
        }
        // What needs a restart keeps its running value until then.
        new.plugins_dir = old.plugins_dir.clone();
        new.store_dir = old.store_dir.clone();
        new.identity = old.identity.clone();
        new.identity_plugin = old.identity_plugin.clone();
        new.cache_dir = old.cache_dir.clone();
        new.outbox = old.outbox.clone();
        new.posts_dir = old.posts_dir.clone();
        new.config.paths = old.config.paths.clone();
        new.config.limits = old.config.limits.clone();
        new.config.http = old.config.http.clone();
        new.config.daemon = old.config.daemon.clone();
        new.config.store = old.config.store.clone();
        self.cfg.store(Arc::new(new));
        restart
    }

    /// The credential store the config chooses (`[store] backend`),
    /// opening it (and creating the identity on first run) if needed.
    pub fn store(&self) -> anyhow::Result<Arc<dyn CredentialStore>> {
        if let Some(s) = self.store.get() {
            return Ok(s.clone());
        }
        let cfg = self.cfg();
        let store: Arc<dyn CredentialStore> = match cfg.config.store.backend {
            StoreBackend::Files => self.store_dir()?,
            // A wrapped identity file runs its age plugin here, once per
            // process.
            StoreBackend::Postgres => Arc::new(PgStore::open(
                &cfg.config.store,
                &cfg.identity,
                &cfg.identity_plugin,
                || (self.passphrase)(&cfg.identity),
            )?),
        };
        Ok(self.store.get_or_init(|| store).clone())
    }

    /// Where the credentials are, for people: the store folder, or the
    /// database (`user@host:port/db`, never its password).
    pub fn store_location(&self) -> String {
        let cfg = self.cfg();
        match cfg.config.store.backend {
            StoreBackend::Files => cfg.store_dir.display().to_string(),
            StoreBackend::Postgres => format!(
                "the PostgreSQL database named by {}",
                cfg.config.store.url_env
            ),
        }
    }

    /// The publishing journal, opened once per process: opening SQLite
    /// (and recreating its WAL) per post costs more than the post.
    pub fn outbox(&self) -> anyhow::Result<Arc<Mutex<Outbox>>> {
        if let Some(o) = self.outbox.get() {
            return Ok(o.clone());
        }
        let cfg = self.cfg();
        let o = Arc::new(Mutex::new(Outbox::for_store(
            &cfg.config.store,
            &cfg.outbox,
        )?));
        Ok(self.outbox.get_or_init(|| o).clone())
    }

    /// The store and journal of `backend`, whichever the config chooses,
    /// opened anew (`store migrate` copies from one backend to the other;
    /// both use the config's identity).
    pub fn backend(
        &self,
        backend: StoreBackend,
    ) -> anyhow::Result<(Arc<dyn CredentialStore>, Outbox)> {
        let cfg = self.cfg();
        let store: Arc<dyn CredentialStore> = match backend {
            StoreBackend::Files => Arc::new(self.open_files()?),
            StoreBackend::Postgres => Arc::new(PgStore::open(
                &cfg.config.store,
                &cfg.identity,
                &cfg.identity_plugin,
                || (self.passphrase)(&cfg.identity),
            )?),
        };
        let store_cfg = crate::config::StoreConfig {
            backend,
            ..cfg.config.store.clone()
        };
        Ok((store, Outbox::for_store(&store_cfg, &cfg.outbox)?))
    }

    /// The default store backend itself (for operations only it has,
    /// such as `store rekey`): an error when the config chooses another.
    pub fn store_dir(&self) -> anyhow::Result<Arc<AgeDirStore>> {
        if let Some(s) = self.files.get() {
            return Ok(s.clone());
        }
        let cfg = self.cfg();
        if cfg.config.store.backend != StoreBackend::Files {
            return Err(bad!(
                "this works on the files credential store only, and the config chooses the PostgreSQL backend ([store] backend = \"postgres\"); nothing was changed — on PostgreSQL it is not supported yet"
            ));
        }
        // A wrapped identity file runs its age plugin here, once per process.
        let store = Arc::new(self.open_files()?);
        Ok(self.files.get_or_init(|| store).clone())
    }

    /// The files backend under `paths.store`, opened anew with the
    /// config's identity.
    fn open_files(&self) -> anyhow::Result<AgeDirStore> {
        let cfg = self.cfg();
        let identity = Identity::open_for_store_with(
            &cfg.identity,
            &cfg.store_dir,
            || (self.passphrase)(&cfg.identity),
            &cfg.identity_plugin,
        )?;
        Ok(AgeDirStore::open(&cfg.store_dir, identity)?)
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
        let account = account_view(record);
        let settings = self.cfg().platform(&plugin.manifest.id);
        let endpoints = effective_endpoints(&plugin.manifest, &settings.endpoints, Some(&account));
        let mut creds = Credentials::new().with("access_token", record.access_token.clone());
        if let Some(r) = &record.refresh_token {
            creds = creds.with("refresh_token", r.clone());
        }
        // A proof placement (Meta's `appsecret_proof`) is made with the
        // client secret from the config.
        if plugin
            .manifest
            .auth
            .placement
            .iter()
            .any(|p| matches!(p, CredentialPlacement::Proof(_)))
            && let Ok(client) = crate::config::client_for(&self.cfg(), &plugin.manifest.id)
            && let Some(secret) = client.secret
        {
            creds = creds.with("client_secret", secret);
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
        scope.pinned = Some(Arc::new(pinned_hosts(&plugin.manifest, record, &endpoints)));
        scope.user_agent = settings.user_agent.clone();
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

    /// Resolve a target such as `x`, `linkedin/company` or `mastodon/*`
    /// to stored accounts.
    pub fn resolve_target(&self, target: &str) -> anyhow::Result<Vec<AccountId>> {
        self.resolve_target_in(target, &self.store()?.list()?)
    }

    /// The stored accounts that `targets` (a post's `to`) can name, for
    /// [`Services::resolve_target_in`]: a named account is looked up
    /// alone, a platform's accounts are listed once; the rest of the
    /// store is not read (a post to 5 accounts in a store of 1,000 must
    /// not list 1,000 files).
    pub fn stored_for(&self, targets: &[String]) -> anyhow::Result<Vec<AccountId>> {
        let store = self.store()?;
        let mut listed: Vec<&str> = Vec::new();
        let mut out: Vec<AccountId> = Vec::new();
        let mut seen: std::collections::HashSet<AccountId> = Default::default();
        for t in targets {
            let (platform, account) = match t.split_once('/') {
                Some((p, a)) => (p, Some(a)),
                None => (t.as_str(), None),
            };
            if listed.contains(&platform) {
                continue;
            }
            match account
                .filter(|a| *a != "*")
                .map(|a| AccountId::new(platform, a))
            {
                Some(Ok(id)) => {
                    if !seen.contains(&id) && store.contains(&id)? {
                        seen.insert(id.clone());
                        out.push(id);
                    }
                }
                // A bad name: resolving it says what is wrong.
                Some(Err(_)) => {}
                None => {
                    listed.push(platform);
                    for id in store.list_platform(platform)? {
                        if seen.insert(id.clone()) {
                            out.push(id);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// [`Services::resolve_target`] among `stored` (the store's accounts, listed
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

/// The hosts `record`'s credential may be sent to: the plugin-declared
/// hosts approved for it (see [`Record::hosts`]) and the hosts the user gave
/// — an endpoint whose effective URL (`endpoints`) is not the manifest's
/// comes from a config override or an account setting.
pub fn pinned_hosts(m: &Manifest, record: &Record, endpoints: &[Endpoint]) -> Vec<AllowedHost> {
    let mut out: Vec<AllowedHost> = match &record.hosts {
        Some(hosts) => hosts
            .iter()
            .filter_map(|h| AllowedHost::from_origin(h))
            .collect(),
        None => declared_hosts(m),
    };
    for e in endpoints {
        let declared = m.endpoints.iter().find(|d| d.name == e.name);
        if declared.is_some_and(|d| d.url == e.url) {
            continue;
        }
        if let Ok(u) = url::Url::parse(&e.url)
            && let Some(a) = AllowedHost::from_url(&u)
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

/// The hosts plugin `m` declares that `record`'s credential may not go to
/// yet (added by a plugin update since the account was connected or last
/// approved), as origins.
pub fn unapproved_hosts(m: &Manifest, record: &Record) -> Vec<String> {
    unapproved_hosts_in(&approvable_hosts(m), record)
}

/// Which of `declared` (origins) `record` has not approved.
pub fn unapproved_hosts_in(declared: &[String], record: &Record) -> Vec<String> {
    let Some(approved) = &record.hosts else {
        return Vec::new();
    };
    declared
        .iter()
        .filter(|o| !approved.contains(o))
        .cloned()
        .collect()
}

/// What to record as `record.hosts` when the user connects an account of
/// `m` or approves its plugin: every host it declares now.
pub fn approvable_hosts(m: &Manifest) -> Vec<String> {
    declared_hosts(m).iter().map(AllowedHost::origin).collect()
}

/// The account as a plugin sees it (no secrets).
pub fn account_view(record: &Record) -> Account {
    account_view_of(&record.id, &record.settings, &record.profile)
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
