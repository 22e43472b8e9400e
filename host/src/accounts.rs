//! Accounts: the link between a plugin, the user's settings and a stored
//! credential.
//!
//! Owns: connecting an account end to end (the flow its manifest declares,
//! run by [`crate::auth`], then stored here), adding an account from a
//! pasted credential (verified with one profile request before anything is
//! stored; an existing account is replaced only when asked, atomically, and
//! one that comes back from *failing* or *needs reconnect* is announced),
//! listing accounts with their health and last post (the seed's
//! `PlatformStatus`, shared by every front end).
//!
//! Never: stores a credential the platform has not accepted, or shows one;
//! talks to a terminal (a front end passes its prompt in). Token exchanges
//! live in [`crate::auth`], refresh in [`crate::schedule`].

use std::collections::BTreeMap;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::auth::{TokenClient, browser_flow};
use crate::contract::describe_call_error;
use crate::contract::wit::types::{AuthKind, Identity, IdentityChoice};
use crate::error::bad;
use crate::http::Credentials;
use crate::outbox::Delivery;
use crate::plugin::LoadedPlugin;
use crate::plugin::manifest::effective_endpoints;
use crate::schedule::TokenHealth;
use crate::secret::Secret;
use crate::services::{Services, account_view_of};
use crate::store::{AccountId, AccountState, CredentialStore, Profile, Record, SavedLogin};

/// Ask the platform who a new credential belongs to; store the account
/// only if it answers. An account stored before is replaced (a
/// reconnect); see [`store_verified_as`].
pub async fn store_verified(
    svc: &Services,
    plugin: &LoadedPlugin,
    id: AccountId,
    tokens: crate::auth::Tokens,
    settings: BTreeMap<String, String>,
) -> anyhow::Result<Record> {
    store_verified_as(svc, plugin, id, tokens, settings, Existing::Replace).await
}

/// [`store_verified`], doing with an account that exists already
/// what `existing` says. The platform is asked first; only then, under
/// the account's refresh lease (so no refresh of the old credential
/// lands on top), is the old record replaced, in one atomic write. An
/// account that comes back from *failing* or *needs reconnect* is
/// announced healthy again.
pub async fn store_verified_as(
    svc: &Services,
    plugin: &LoadedPlugin,
    id: AccountId,
    tokens: crate::auth::Tokens,
    settings: BTreeMap<String, String>,
    existing: Existing,
) -> anyhow::Result<Record> {
    let store = svc.store()?;
    if existing == Existing::Refuse {
        refuse_existing(&*store, &id)?;
    }
    let mut record = crate::auth::new_record(id.clone(), tokens, settings);
    // Connecting is the user's approval of every host the plugin declares
    // now; a later plugin version's new hosts wait for `plugins approve`.
    record.hosts = Some(crate::services::approvable_hosts(&plugin.manifest));
    record.scopes_asked = Some(plugin.manifest.auth.scopes.clone());
    if record.scope.is_empty() {
        let m = &plugin.manifest;
        record.scope = m.auth.scopes.join(&m.auth.scope_separator);
    }
    let (ctx, scope) = svc.call_env(plugin, &record);
    let profile = match svc.host.profile(plugin, scope, &ctx).await? {
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
        crate::schedule::Notifier::new(svc)
            .changed(&id, from, AccountState::Healthy, "reconnected")
            .await;
    }
    Ok(record)
}

/// Add (or replace) an account from a pasted credential: check the
/// settings, ask the platform who it is, then store it encrypted.
pub async fn add_account(
    svc: &Services,
    platform: &str,
    account: &str,
    token: Secret,
    settings: BTreeMap<String, String>,
) -> anyhow::Result<Record> {
    add_account_as(svc, platform, account, token, settings, Existing::Replace).await
}

/// [`add_account`], doing with an account that exists already
/// what `existing` says.
pub async fn add_account_as(
    svc: &Services,
    platform: &str,
    account: &str,
    token: Secret,
    settings: BTreeMap<String, String>,
    existing: Existing,
) -> anyhow::Result<Record> {
    let id = AccountId::new(platform, account)?;
    let plugin = svc.platform(platform)?;
    if token.expose().trim().is_empty() {
        return Err(bad!(
            "no credential was given for {id}; paste it on standard input"
        ));
    }
    let settings = svc.check_settings(&plugin, settings)?;
    let lifetime = plugin.manifest.auth.access_token_lifetime;
    let now = Utc::now();
    let tokens = crate::auth::Tokens {
        access: Secret::new(token.expose().trim()),
        refresh: None,
        expires_in: (lifetime > 0).then_some(lifetime),
        expires_at: (lifetime > 0).then(|| now + chrono::Duration::seconds(lifetime as i64)),
        refresh_expires_at: None,
        scope: None,
    };
    store_verified_as(svc, &plugin, id, tokens, settings, existing).await
}

/// Every stored account, each with its record — secrets blanked
/// ([`Record::redacted`]): this is for looking, not for calling the
/// platform — or why it cannot be read.
pub fn list(svc: &Services) -> anyhow::Result<Vec<(AccountId, anyhow::Result<Record>)>> {
    Ok(svc
        .store()?
        .views()?
        .into_iter()
        .map(|(id, r)| (id, r.map_err(anyhow::Error::from)))
        .collect())
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
    if !store.contains(id)? {
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

/// Options of `outreach connect`.
pub struct ConnectOptions {
    pub platform: String,
    pub account: String,
    pub settings: BTreeMap<String, String>,
    pub open_browser: bool,
    pub username: Option<String>,
    /// Do not listen for the browser: the user pastes the address it lands
    /// on (a headless server, or a redirect URI that is not this machine).
    pub paste: bool,
    /// Reconnecting an account whose plugin now asks for scopes it was not
    /// granted before: go ahead (otherwise refused, naming them).
    pub approve_scopes: bool,
    /// Session and app-password logins: keep the username and password
    /// (encrypted, with the account) to log in again when the session ends.
    pub remember_password: bool,
    /// For a grant that acts as pages or organizations: the ids (or exact
    /// names) to connect; `me` for the user themselves where the plugin
    /// allows it. Empty: one identity is taken as it is, several are put
    /// to `choose`.
    pub identities: Vec<String>,
    /// Asks the person connecting which identities to connect (indexes
    /// into the list); the front end decides how.
    pub choose: Box<dyn Fn(&[Identity]) -> anyhow::Result<Vec<usize>> + Send + Sync>,
    /// Shows the person connecting the platform's authorize address (a
    /// terminal prints it; the control API answers with it).
    pub announce: Box<dyn Fn(&str) + Send + Sync>,
    /// Asks the person connecting for a secret (an app password, a pasted
    /// key), named by what it asks for; the front end decides how.
    pub prompt: Box<dyn Fn(&str) -> anyhow::Result<Secret> + Send + Sync>,
    /// Started in the daemon's web UI: the browser comes back to the
    /// daemon's own `/callback`, and its page links to the dashboard.
    pub via: Option<crate::auth::Via>,
}

impl ConnectOptions {
    /// The command that runs this connect again (for messages).
    fn again(&self) -> String {
        let mut cmd = format!("outreach connect {}", self.platform);
        if self.account != "default" {
            cmd.push_str(&format!(" --account {}", self.account));
        }
        for (k, v) in &self.settings {
            cmd.push_str(&format!(" --set {k}={v}"));
        }
        cmd
    }
}

/// Connect an account end to end: run the flow the manifest declares, ask
/// the platform who the account is, store the record — one per identity
/// picked when the grant acts as pages or organizations.
pub async fn connect(svc: &Services, opts: ConnectOptions) -> anyhow::Result<Vec<Record>> {
    let id = AccountId::new(&opts.platform, &opts.account)?;
    let plugin = svc.platform(&opts.platform)?;
    let m = &plugin.manifest;
    let again = opts.again();
    let settings = svc.check_settings(&plugin, opts.settings.clone())?;
    let account_view = account_view_of(&id, &settings, &Profile::default());
    let overrides = svc.cfg().platform(&m.id).endpoints;
    let endpoints = effective_endpoints(m, &overrides, Some(&account_view));
    let tokens_client = TokenClient::new(svc)?;

    let tokens = match m.auth.kind {
        AuthKind::Oauth2 | AuthKind::Oauth2Pkce | AuthKind::Oidc => {
            if !opts.approve_scopes {
                refuse_new_scopes(svc, m, &id)?;
            }
            let (browser, tokens) = browser_flow(
                svc,
                m,
                &endpoints,
                &tokens_client,
                &id,
                opts.open_browser,
                opts.paste,
                &*opts.prompt,
                &*opts.announce,
                opts.via.as_ref(),
            )
            .await?;
            // The browser waits for its page until the account is stored
            // (or the attempt failed), so it never claims a connection
            // that did not happen.
            let outcome = match tokens {
                Ok(tokens) => {
                    // The steps after connect (a long-lived token, a page
                    // token), then the account.
                    let client = crate::auth::client_for(&svc.cfg(), &m.id).ok();
                    match tokens_client
                        .after_connect(
                            m,
                            &endpoints,
                            client.as_ref(),
                            &crate::auth::pairs(&settings),
                            tokens,
                        )
                        .await
                    {
                        Ok(tokens) => match &m.auth.identities {
                            None => store_verified(svc, &plugin, id.clone(), tokens, settings)
                                .await
                                .map(|r| vec![r]),
                            Some(choice) => {
                                connect_identities(
                                    svc, &plugin, &opts, &endpoints, choice, tokens, settings,
                                )
                                .await
                            }
                        },
                        Err(e) => Err(anyhow::anyhow!(
                            "the steps after connecting {id} failed ({e}); nothing was stored"
                        )),
                    }
                }
                Err(e) => Err(e),
            };
            let first = match &outcome {
                Ok(records) => Ok(records[0].clone()),
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            };
            browser.finish(&id, &again, &first).await;
            return outcome;
        }
        // A platform that needs nothing may still offer a login (Hacker
        // News' opt-in session mode): taken when a username is given.
        AuthKind::None if opts.username.is_none() || m.auth.login.is_none() => {
            // Nothing to hold: the account is its settings and profile.
            let tokens = crate::auth::Tokens {
                access: Secret::new(""),
                refresh: None,
                expires_in: None,
                expires_at: None,
                refresh_expires_at: None,
                scope: None,
            };
            return Ok(vec![
                store_verified(svc, &plugin, id, tokens, settings).await?,
            ]);
        }
        AuthKind::AppPassword | AuthKind::SessionLogin | AuthKind::None => {
            let login = m.auth.login.as_ref().ok_or_else(|| {
                bad!("the {} plugin declares a login but no login exchange", m.id)
            })?;
            let username = match opts.username.clone() {
                Some(u) => u,
                None => return Err(bad!("pass --username for {}", m.id)),
            };
            let what = if m.auth.kind == AuthKind::AppPassword {
                "app password"
            } else {
                "password"
            };
            let password = (opts.prompt)(&format!("the {} {what}", m.name))?;
            let creds = Credentials::new()
                .with("username", Secret::new(username.clone()))
                .with("password", password.clone());
            let tokens = tokens_client
                .exchange(
                    login,
                    &endpoints,
                    &creds,
                    &crate::auth::pairs(&settings),
                    m.auth.access_token_lifetime,
                    &[&password],
                    None,
                )
                .await
                .map_err(|e| anyhow::anyhow!("logging in to {} failed: {e}", m.name))?;
            let saved = opts.remember_password.then(|| SavedLogin {
                username: Secret::new(username),
                password,
            });
            (tokens, saved)
        }
        AuthKind::ApiKey | AuthKind::BotToken | AuthKind::WebhookUrl => {
            let value = (opts.prompt)(&format!("the {} credential", m.name))?;
            return Ok(vec![
                add_account(svc, &opts.platform, &opts.account, value, settings).await?,
            ]);
        }
    };
    let (tokens, saved) = tokens;
    let record = store_verified(svc, &plugin, id.clone(), tokens, settings).await?;
    let Some(saved) = saved else {
        return Ok(vec![record]);
    };
    // Kept only once the platform accepted the login.
    let record = rewrite(svc, &id, move |r| {
        r.saved_login = Some(saved);
        r.clone()
    })
    .await?
    .unwrap_or(record);
    Ok(vec![record])
}

/// The identities (pages, organizations) a new grant acts as that the user
/// picks, each stored as its own account with the identity's id in
/// `choice.setting` and, where the plugin declares one, its own credential
/// derived from the grant.
async fn connect_identities(
    svc: &Services,
    plugin: &LoadedPlugin,
    opts: &ConnectOptions,
    endpoints: &[crate::contract::wit::types::Endpoint],
    choice: &IdentityChoice,
    grant: crate::auth::Tokens,
    settings: BTreeMap<String, String>,
) -> anyhow::Result<Vec<Record>> {
    let m = &plugin.manifest;
    let id = AccountId::new(&opts.platform, &opts.account)?;
    // Ask the plugin, with the grant, who it can act as.
    let mut probe = crate::auth::new_record(id.clone(), grant.clone(), settings.clone());
    probe.hosts = Some(crate::services::approvable_hosts(m));
    let (ctx, scope) = svc.call_env(plugin, &probe);
    let list = svc
        .host
        .list_identities(plugin, scope, &ctx)
        .await?
        .map_err(|e| {
            anyhow::anyhow!(
                "{} could not list what this grant can act as ({}); nothing was stored",
                m.name,
                describe_call_error(&e)
            )
        })?;
    let names = || {
        list.iter()
            .map(|i| format!("{} ({})", i.id, i.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Which ones: named, the only one, or asked.
    let mut picked: Vec<Option<&Identity>> = Vec::new();
    if !opts.identities.is_empty() {
        for want in &opts.identities {
            if want == "me" && choice.self_allowed {
                picked.push(None);
                continue;
            }
            match list.iter().find(|i| &i.id == want || &i.name == want) {
                Some(i) => picked.push(Some(i)),
                None => {
                    return Err(bad!(
                        "this grant cannot act as `{want}`; it can act as: {}{}",
                        if list.is_empty() {
                            "nothing".to_string()
                        } else {
                            names()
                        },
                        if choice.self_allowed { ", me" } else { "" }
                    ));
                }
            }
        }
    } else if list.len() == 1 && !choice.self_allowed {
        picked.push(Some(&list[0]));
    } else if list.is_empty() {
        if !choice.self_allowed {
            return Err(bad!(
                "this {} grant can act as no page or organization; check that the account manages one and granted it to the app, then connect again",
                m.name
            ));
        }
        picked.push(None);
    } else {
        for n in (opts.choose)(&list)? {
            let i = list
                .get(n)
                .ok_or_else(|| bad!("there is no choice {}", n + 1))?;
            picked.push(Some(i));
        }
        if picked.is_empty() {
            return Err(bad!("nothing was picked; nothing was stored"));
        }
    }
    let client = crate::auth::client_for(&svc.cfg(), &m.id).ok();
    let tokens_client = TokenClient::new(svc)?;
    let single = picked.len() == 1;
    let mut out = Vec::new();
    for identity in picked {
        let Some(identity) = identity else {
            out.push(
                store_verified(svc, plugin, id.clone(), grant.clone(), settings.clone()).await?,
            );
            continue;
        };
        // One pick takes the account name asked for; several are named
        // after themselves.
        let account = if single {
            opts.account.clone()
        } else {
            account_name_for(identity)
        };
        let aid = AccountId::new(&opts.platform, &account)?;
        let mut these = settings.clone();
        these.insert(choice.setting.clone(), identity.id.clone());
        let tokens = match &choice.exchange {
            None => grant.clone(),
            Some(x) => {
                let mut creds = Credentials::new().with("access_token", grant.access.clone());
                if let Some(r) = &grant.refresh {
                    creds = creds.with("refresh_token", r.clone());
                }
                if let Some(c) = &client {
                    creds = creds.with("client_id", Secret::new(c.id.clone()));
                    if let Some(s) = &c.secret {
                        creds = creds.with("client_secret", s.clone());
                    }
                }
                let mut secrets = vec![&grant.access];
                if let Some(s) = client.as_ref().and_then(|c| c.secret.as_ref()) {
                    secrets.push(s);
                }
                tokens_client
                    .pinned(crate::services::pinned_hosts(m, &probe, endpoints))
                    .exchange(
                        x,
                        endpoints,
                        &creds,
                        &crate::auth::pairs(&these),
                        m.auth.access_token_lifetime,
                        &secrets,
                        None,
                    )
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "deriving the credential of {} ({}) failed: {e}; nothing was stored for it",
                            identity.name,
                            identity.id
                        )
                    })?
            }
        };
        out.push(store_verified(svc, plugin, aid, tokens, these).await?);
    }
    Ok(out)
}

/// An account name for an identity: its name in lower case, letters,
/// digits and `-`; its id when that leaves nothing usable.
pub fn account_name_for(identity: &Identity) -> String {
    let mut name = String::new();
    for c in identity.name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.ends_with('-') && !name.is_empty() {
            name.push('-');
        }
    }
    let name = name
        .trim_end_matches('-')
        .chars()
        .take(40)
        .collect::<String>();
    if name.is_empty() || AccountId::new("x", &name).is_err() {
        identity
            .id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(64)
            .collect()
    } else {
        name
    }
}

/// Refuse to reconnect `id` when its plugin now asks for scopes the
/// account was not granted before (a plugin update widened them), naming
/// them and how to grant them.
fn refuse_new_scopes(
    svc: &Services,
    m: &crate::contract::wit::types::Manifest,
    id: &AccountId,
) -> anyhow::Result<()> {
    let store = svc.store()?;
    if !store.contains(id)? {
        return Ok(());
    }
    let Ok(before) = store.load(id) else {
        return Ok(());
    };
    // What it asked for before; unknown for accounts stored by an earlier
    // version (those record it now).
    let Some(asked) = &before.scopes_asked else {
        return Ok(());
    };
    let granted: Vec<&str> = asked.iter().map(String::as_str).collect();
    let new: Vec<&str> = m
        .auth
        .scopes
        .iter()
        .map(String::as_str)
        .filter(|s| !granted.contains(s))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    Err(bad!(
        "the {} plugin now asks for scopes {id} was not asked for before: {} (asked before: {}). Nothing was changed; to grant them, run the same command with --approve-scopes",
        m.id,
        new.join(", "),
        if granted.is_empty() {
            "none".to_string()
        } else {
            granted.join(", ")
        }
    ))
}

/// The seed's `PlatformStatus`, per account, with the account summary.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccountStatus {
    #[serde(flatten)]
    pub summary: AccountSummary,
    /// The token is valid and the platform's plugin is loaded.
    pub connected: bool,
    pub profile_name: Option<String>,
    pub profile_image: Option<String>,
    /// No loaded plugin provides this account's platform (its credential
    /// is kept).
    pub plugin_missing: bool,
    pub token_health: Option<TokenHealth>,
    pub last_post: Option<LastPost>,
}

/// The seed's `lastPost`, with the outbox's details.
#[derive(Debug, Serialize, Deserialize)]
pub struct LastPost {
    /// The post's id in the outbox.
    pub post: String,
    /// Its text (as this platform got it, before per-platform overrides).
    pub content: String,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub success: bool,
    pub state: crate::outbox::State,
    pub url: Option<String>,
    pub error: Option<String>,
}

impl LastPost {
    fn of(d: Delivery, source: Option<String>) -> Self {
        let content = source
            .and_then(|s| s.parse::<toml::Table>().ok())
            .and_then(|t| t.get("text").and_then(|v| v.as_str()).map(str::to_string))
            .unwrap_or_default();
        LastPost {
            post: d.post,
            content,
            timestamp: d.updated_at,
            success: d.state == crate::outbox::State::Published,
            state: d.state,
            url: d.url,
            error: d.error,
        }
    }
}

/// Every account's status (also what `outreach status` and `outreach
/// accounts` show when a daemon runs).
pub fn statuses(svc: &Services) -> anyhow::Result<Vec<AccountStatus>> {
    let mut out = statuses_without_posts(svc)?;
    with_last_posts(svc, &mut out)?;
    Ok(out)
}

/// [`statuses`] without `last_post` (the dashboard fills it in for the
/// accounts it shows).
pub fn statuses_without_posts(svc: &Services) -> anyhow::Result<Vec<AccountStatus>> {
    let mut out = Vec::new();
    for (id, r) in list(svc)? {
        let summary = AccountSummary::new(&id, &r);
        let plugin_missing = svc.host.get(&id.platform).is_err();
        let token_health = r.as_ref().ok().map(|rec| crate::schedule::health(svc, rec));
        out.push(AccountStatus {
            connected: !plugin_missing && token_health.as_ref().is_some_and(|h| h.is_valid),
            profile_name: summary.profile.as_ref().map(|p| p.name.clone()),
            profile_image: summary.profile.as_ref().and_then(|p| p.picture.clone()),
            plugin_missing,
            token_health,
            last_post: None,
            summary,
        });
    }
    Ok(out)
}

/// Fill in each status's `last_post` from the outbox.
pub fn with_last_posts(svc: &Services, statuses: &mut [AccountStatus]) -> anyhow::Result<()> {
    let outbox = svc.outbox()?;
    let ob = outbox.lock().expect("outbox");
    for s in statuses {
        s.last_post = match ob.last_delivery(&s.summary.id)? {
            Some(d) => {
                let source = ob.post(&d.post)?.map(|p| p.source);
                Some(LastPost::of(d, source))
            }
            None => None,
        };
    }
    Ok(())
}

/// What awaits approval, per platform, from statuses already gathered
/// (see [`awaiting_approval`]).
pub fn awaiting_in(statuses: &[AccountStatus]) -> BTreeMap<String, Awaiting> {
    let mut out: BTreeMap<String, Awaiting> = BTreeMap::new();
    for s in statuses {
        let Some(h) = s
            .token_health
            .as_ref()
            .filter(|h| !h.awaiting_approval.is_empty())
        else {
            continue;
        };
        let entry = out.entry(s.summary.platform.clone()).or_default();
        for host in &h.awaiting_approval {
            if !entry.hosts.contains(host) {
                entry.hosts.push(host.clone());
            }
        }
        entry.accounts.push(s.summary.id.clone());
    }
    out
}

/// Hosts a plugin declares that some of its accounts' credentials may not
/// go to yet, and which accounts wait (`outreach plugins`, `GET
/// /platforms`, the dashboard).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Awaiting {
    pub hosts: Vec<String>,
    pub accounts: Vec<String>,
}

/// Per platform, what awaits the user's approval (platforms with nothing
/// waiting are left out).
pub fn awaiting_approval(svc: &Services) -> anyhow::Result<BTreeMap<String, Awaiting>> {
    let mut out: BTreeMap<String, Awaiting> = BTreeMap::new();
    for (id, r) in list(svc)? {
        let (Ok(record), Ok(plugin)) = (r, svc.host.get(&id.platform)) else {
            continue;
        };
        let hosts = crate::services::unapproved_hosts(&plugin.manifest, &record);
        if hosts.is_empty() {
            continue;
        }
        let entry = out.entry(id.platform.clone()).or_default();
        for h in hosts {
            if !entry.hosts.contains(&h) {
                entry.hosts.push(h);
            }
        }
        entry.accounts.push(id.to_string());
    }
    Ok(out)
}

/// Fill in what awaits approval in `platforms` (see [`Awaiting`]).
pub fn with_approvals(
    svc: &Services,
    platforms: &mut crate::plugin::manifest::Platforms,
) -> anyhow::Result<()> {
    fill_approvals(platforms, awaiting_approval(svc)?);
    Ok(())
}

/// Fill in `waiting` (from [`awaiting_approval`] or [`awaiting_in`]) in
/// `platforms`.
pub fn fill_approvals(
    platforms: &mut crate::plugin::manifest::Platforms,
    mut waiting: BTreeMap<String, Awaiting>,
) {
    for p in &mut platforms.plugins {
        if let Some(w) = waiting.remove(&p.id) {
            p.awaiting_approval = w.hosts;
            p.awaiting_accounts = w.accounts;
        }
    }
}

/// What approving a plugin changed.
#[derive(Debug, Default, Serialize)]
pub struct Approved {
    pub platform: String,
    /// Hosts the accounts' credentials may now go to that they could not.
    pub hosts: Vec<String>,
    /// The accounts whose approval changed.
    pub accounts: Vec<String>,
}

/// `outreach plugins approve ID`: every host plugin `platform` declares
/// now becomes one its accounts' credentials may go to.
pub async fn approve_plugin(svc: &Services, platform: &str) -> anyhow::Result<Approved> {
    let plugin = svc.host.get(platform)?;
    let mut out = Approved {
        platform: platform.to_string(),
        ..Default::default()
    };
    for id in accounts_of(svc, platform)? {
        let now = crate::services::approvable_hosts(&plugin.manifest);
        let changed = rewrite(svc, &id, move |record| {
            let new = crate::services::unapproved_hosts_in(&now, record);
            record.hosts = Some(now.clone());
            new
        })
        .await?;
        if let Some(hosts) = changed.filter(|h| !h.is_empty()) {
            for h in hosts {
                if !out.hosts.contains(&h) {
                    out.hosts.push(h);
                }
            }
            out.accounts.push(id.to_string());
        }
    }
    if !out.accounts.is_empty() {
        tracing::info!(
            platform,
            hosts = ?out.hosts,
            "approved the {platform} plugin's hosts for {}",
            out.accounts.join(", ")
        );
    }
    Ok(out)
}

/// Pin the accounts stored before hosts were pinned (`hosts` absent) to
/// the hosts their plugin declares now; the daemon does this when it
/// starts, so that a plugin replaced later cannot widen them. Accounts
/// whose plugin is not loaded wait for it.
pub async fn pin_unpinned(svc: &Services) -> anyhow::Result<Vec<AccountId>> {
    let mut pinned = Vec::new();
    for (id, r) in list(svc)? {
        let (Ok(record), Ok(plugin)) = (r, svc.host.get(&id.platform)) else {
            continue;
        };
        if record.hosts.is_some() {
            continue;
        }
        let now = crate::services::approvable_hosts(&plugin.manifest);
        let changed = rewrite(svc, &id, move |record| {
            if record.hosts.is_none() {
                record.hosts = Some(now.clone());
            }
            Vec::<String>::new()
        })
        .await?;
        if changed.is_some() {
            pinned.push(id);
        }
    }
    Ok(pinned)
}

/// The stored accounts of `platform`.
fn accounts_of(svc: &Services, platform: &str) -> anyhow::Result<Vec<AccountId>> {
    Ok(svc
        .store()?
        .list()?
        .into_iter()
        .filter(|id| id.platform == platform)
        .collect())
}

/// Change `id`'s approved hosts under its refresh lease (so no refresh
/// writes an older copy over it), in one atomic write. `None` if the
/// account is gone or unreadable.
async fn rewrite<T: Send + 'static>(
    svc: &Services,
    id: &AccountId,
    change: impl FnOnce(&mut Record) -> T + Send + 'static,
) -> anyhow::Result<Option<T>> {
    let _in_process = svc.refresh_locks.get(id).lock_owned().await;
    let store = svc.store()?;
    let id = id.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Option<T>> {
        let _lease = store.lease(&id)?;
        let Ok(mut record) = store.load(&id) else {
            return Ok(None);
        };
        let out = change(&mut record);
        store.save(&record)?;
        Ok(Some(out))
    })
    .await?
}

/// What disconnecting an account did.
#[derive(Debug, Clone, Serialize)]
pub struct Disconnected {
    pub account: String,
    /// `revoked`, `no-revoke-endpoint` or `revoke-failed` (removed
    /// anyway, as asked).
    pub revoke: &'static str,
    pub platform: String,
    pub detail: Option<String>,
}

impl Disconnected {
    /// For people, one line per step.
    pub fn lines(&self) -> Vec<String> {
        let first = match self.revoke {
            "revoked" => format!("revoked {}'s token at {}", self.account, self.platform),
            "no-revoke-endpoint" => format!(
                "{} has no revoke endpoint; revoke outreach's access in the platform's settings too",
                self.platform
            ),
            _ => format!(
                "could not revoke {}'s token at {} ({}); removing it anyway (--force)",
                self.account,
                self.platform,
                self.detail.as_deref().unwrap_or("")
            ),
        };
        vec![first, format!("removed {}", self.account)]
    }
}

/// Revoke an account's token at the platform (where it has a revoke
/// endpoint), then remove the account. A revoke that fails keeps the
/// account (the inner `Err`, saying why) unless `force`.
pub async fn disconnect(
    svc: &Services,
    id: &AccountId,
    force: bool,
) -> anyhow::Result<Result<Disconnected, String>> {
    use crate::auth::{client_for, endpoint, registered_client};
    let store = svc.store()?;
    let record = store.load(id)?;
    let plugin = svc.host.get(&id.platform)?;
    let m = &plugin.manifest;
    let overrides = svc.cfg().platform(&m.id).endpoints;
    let endpoints =
        effective_endpoints(m, &overrides, Some(&crate::services::account_view(&record)));
    let mut done = Disconnected {
        account: id.to_string(),
        revoke: "no-revoke-endpoint",
        platform: m.name.clone(),
        detail: None,
    };
    if let Ok(url) = endpoint(&endpoints, "revoke") {
        // A server outreach registered with (Mastodon) takes the client the
        // token was issued to: that registration, not the config's client.
        let client = if m.auth.dynamic_registration {
            registered_client(svc, m, &endpoints)?
        } else {
            client_for(&svc.cfg(), &m.id).ok()
        };
        let unregistered = m.auth.dynamic_registration && client.is_none();
        let token: &Secret = record
            .refresh_token
            .as_ref()
            .unwrap_or(&record.access_token);
        match TokenClient::new(svc)?
            .revoke(m, &url, client.as_ref(), token)
            .await
        {
            Ok(()) => done.revoke = "revoked",
            Err(e) if force => {
                done.revoke = "revoke-failed";
                done.detail = Some(e.to_string());
            }
            Err(e) => {
                let why = if unregistered {
                    format!(
                        " outreach did not register the app this token was issued to (it was pasted, not connected), and {} revokes a token only for its own app.",
                        m.name
                    )
                } else {
                    String::new()
                };
                return Ok(Err(format!(
                    "could not revoke {id}'s token at {} ({e}); the account was kept.{why}",
                    m.name
                )));
            }
        }
    }
    store.remove(id)?;
    Ok(Ok(done))
}
