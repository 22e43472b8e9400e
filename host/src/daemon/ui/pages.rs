//! The web UI's pages, as `maud` templates: markup only. What each page
//! shows is gathered by the handlers in [`super`] from the same functions
//! the CLI and the JSON API use; nothing here reads a file or the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::asset_url;
use crate::accounts::AccountStatus;
use crate::contract::wit::types::{AuthKind, FieldType};
use crate::daemon::Problem;
use crate::outbox::{Attempt, Delivery, PostRow, State};
use crate::plugin::LoadedPlugin;
use crate::plugin::manifest::Platforms;
use crate::store::{AccountId, AccountState};

/// What the dashboard shows.
pub struct Dashboard {
    /// The page of accounts shown, with their last posts.
    pub accounts: Vec<AccountStatus>,
    /// Every account stored.
    pub total: usize,
    /// The accounts the query matches.
    pub matching: usize,
    pub page: usize,
    pub pages: usize,
    /// Accounts per health word (only words some account has), most in
    /// need of the user first.
    pub counts: Vec<(&'static str, usize)>,
    /// Accounts per platform.
    pub by_platform: BTreeMap<String, usize>,
    pub query: super::AccountsQuery,
    pub platforms: Platforms,
    pub problems: Vec<Problem>,
}

fn layout(
    title: &str,
    csrf: Option<&str>,
    active: &str,
    flash: Option<(bool, String)>,
    body: Markup,
) -> Markup {
    let nav = [
        ("/ui/", "Dashboard"),
        ("/ui/connect", "Connect"),
        ("/ui/compose", "Compose"),
        ("/ui/posts", "Posts"),
        ("/ui/calendar", "Calendar"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // Under the `no-referrer` header a browser sends `Origin:
                // null` with every POST (forms and fetch), which the Origin
                // check refuses; same-origin keeps the referrer off other
                // sites and lets the daemon see its own origin.
                meta name="referrer" content="same-origin";
                @if let Some(t) = csrf { meta name="csrf-token" content=(t); }
                title { (title) " · outreach" }
                link rel="icon" href=(asset_url("favicon.svg")) type="image/svg+xml";
                link rel="stylesheet" href=(asset_url("app.css"));
                script src=(asset_url("app.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                @if let Some(t) = csrf {
                    header.top {
                        span.brand { "outreach" }
                        nav aria-label="Main" {
                            ul {
                                @for (href, label) in nav {
                                    li {
                                        @if label == active {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form.signout method="post" action="/ui/signout" {
                            input type="hidden" name="_csrf" value=(t);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    @if let Some((ok, msg)) = &flash {
                        p.flash.(if *ok { "ok" } else { "bad" }) role="status" { (msg) }
                    }
                    (body)
                }
            }
        }
    }
}

fn time(t: &DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M UTC")) } }
}

fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="_csrf" value=(csrf); }
}

pub fn signed_out() -> Markup {
    layout(
        "Signed out",
        None,
        "",
        None,
        html! {
            h1 { "Sign in to outreach" }
            p { "You are not signed in. On the daemon's machine, run " code { "outreach ui" } " and open the one-time link it prints." }
        },
    )
}

pub fn link_spent() -> Markup {
    layout(
        "Sign-in link not valid",
        None,
        "",
        None,
        html! {
            h1 { "This sign-in link does not work" }
            p { "Each link works once, for two minutes. Run " code { "outreach ui" } " again for a new one." }
        },
    )
}

pub fn callback_unknown() -> Markup {
    layout(
        "Unknown connection",
        None,
        "",
        None,
        html! {
            h1 { "No connection is waiting for this answer" }
            p { "The platform sent the browser back, but no connection started here is waiting for it: it was already used, it is too old, or it was not started by this daemon. Nothing was stored. Start the connection again from the dashboard's Connect page." }
            p { a href="/ui/" { "Back to the dashboard" } }
        },
    )
}

pub fn error_page(csrf: &str, msg: &str) -> Markup {
    layout(
        "Error",
        Some(csrf),
        "",
        None,
        html! {
            h1 { "Something went wrong" }
            p.flash.bad role="alert" { (msg) }
            p { a href="/ui/" { "Back to the dashboard" } }
        },
    )
}

/// The dashboard: live part (accounts, problems, plugins).
pub fn dashboard(csrf: &str, flash: Option<(bool, String)>, data: &Dashboard) -> Markup {
    layout(
        "Dashboard",
        Some(csrf),
        "Dashboard",
        flash,
        html! {
            h1 { "Accounts" }
            form.filter.accounts method="get" action="/ui/" {
                label for="f-platform" { "Platform" }
                select #f-platform name="platform" {
                    option value="" { "all" }
                    @for (p, n) in &data.by_platform {
                        option value=(p) selected[data.query.platform.as_deref() == Some(p.as_str())] { (p) " (" (n) ")" }
                    }
                }
                label for="f-q" { "Name" }
                input #f-q type="search" name="q" value=(data.query.q.as_deref().unwrap_or("")) maxlength="200";
                @if let Some(h) = data.query.health.as_deref().filter(|h| !h.is_empty()) {
                    input type="hidden" name="health" value=(h);
                }
                button type="submit" { "Show" }
            }
            div #live data-poll=(format!("/ui/live/accounts?{}", data.query.to_query(data.page))) {
                (live(csrf, data))
            }
        },
    )
}

/// One word for an account's health, and a sentence.
pub fn health_of(a: &AccountStatus) -> (&'static str, String) {
    if let Some(e) = &a.summary.error {
        return ("unreadable", e.clone());
    }
    if a.plugin_missing {
        return (
            "plugin-missing",
            "no loaded plugin provides this platform; its credential is kept".into(),
        );
    }
    let Some(h) = &a.token_health else {
        return ("unknown", String::new());
    };
    if !h.awaiting_approval.is_empty() {
        return (
            "awaiting-approval",
            format!(
                "its plugin now also calls {}; approve to let the credential go there",
                h.awaiting_approval.join(", ")
            ),
        );
    }
    match h.state {
        AccountState::NeedsReconnect => (
            "needs-reconnect",
            h.error
                .clone()
                .unwrap_or_else(|| "the grant is gone".into()),
        ),
        AccountState::Failing => (
            "failing",
            h.error
                .clone()
                .unwrap_or_else(|| "refreshes are failing".into()),
        ),
        AccountState::Healthy if !h.is_valid => ("expired", "the token has expired".into()),
        AccountState::Healthy if h.needs_refresh => {
            ("expiring", "the token is due for a refresh".into())
        }
        AccountState::Healthy => ("valid", String::new()),
    }
}

fn human_secs(s: i64) -> String {
    let a = s.unsigned_abs();
    let text = if a >= 2 * 86400 {
        format!("{} days", a / 86400)
    } else if a >= 2 * 3600 {
        format!("{} hours", a / 3600)
    } else if a >= 120 {
        format!("{} minutes", a / 60)
    } else {
        format!("{a} seconds")
    };
    if s < 0 {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

fn initials(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .collect::<String>()
        .to_uppercase()
}

fn account_card(csrf: &str, a: &AccountStatus, names: &BTreeMap<String, String>) -> Markup {
    let s = &a.summary;
    let (health, why) = health_of(a);
    let platform_name = names
        .get(&s.platform)
        .cloned()
        .unwrap_or_else(|| s.platform.clone());
    let label = a
        .profile_name
        .clone()
        .or_else(|| s.profile.as_ref().map(|p| p.label()))
        .unwrap_or_else(|| s.account.clone());
    let base = format!("/ui/accounts/{}/{}", s.platform, s.account);
    let h = a.token_health.as_ref();
    html! {
        article.card data-account=(s.id) data-health=(health) aria-labelledby=(format!("acct-{}-{}", s.platform, s.account)) {
            header {
                span.avatar aria-hidden="true" { (initials(&label)) }
                div {
                    h2 id=(format!("acct-{}-{}", s.platform, s.account)) { (platform_name) " · " (s.account) }
                    p.profile {
                        @if let Some(url) = s.profile.as_ref().and_then(|p| p.url.as_deref()).filter(|u| u.starts_with("https://")) {
                            a href=(url) rel="noreferrer noopener" target="_blank" { (label) }
                        } @else { (label) }
                    }
                }
                span.badge.(health) { (health.replace('-', " ")) }
            }
            dl {
                dt { "Connected" } dd { @if a.connected { "yes" } @else { "no" } }
                @if let Some(h) = h {
                    dt { "Expires" }
                    dd { @match h.expires_in { Some(s) => (human_secs(s)), None => "never" } }
                    @if let Some(n) = &h.next_refresh { dt { "Next refresh" } dd { (time(n)) } }
                    @if let Some(n) = &h.last_refreshed { dt { "Last refreshed" } dd { (time(n)) } }
                }
            }
            @if !why.is_empty() { p.why { (why) } }
            @if let Some(p) = &a.last_post {
                div.lastpost {
                    h3 { "Last post" }
                    p.excerpt { (excerpt(&p.content, 140)) }
                    p {
                        span.state.(p.state.to_string()) { (p.state.to_string()) } " · " (time(&p.timestamp))
                        @if let Some(u) = p.url.as_deref().filter(|u| u.starts_with("http")) {
                            " · " a href=(u) rel="noreferrer noopener" target="_blank" { "open" }
                        }
                    }
                    @if let Some(e) = &p.error { p.why { (excerpt(e, 200)) } }
                }
            }
            div.actions {
                form method="post" action=(format!("{base}/refresh")) {
                    (csrf_field(csrf))
                    button type="submit" data-action="refresh" { "Refresh now" }
                }
                a.button href=(format!("/ui/connect?platform={}&account={}#c-{}", s.platform, s.account, s.platform)) data-action="reconnect" { "Reconnect" }
                @if health == "awaiting-approval" {
                    form method="post" action=(format!("/ui/platforms/{}/approve", s.platform)) {
                        (csrf_field(csrf))
                        button type="submit" data-action="approve" { "Approve new hosts" }
                    }
                }
                a.button.danger href=(format!("{base}/disconnect")) data-action="disconnect" { "Disconnect…" }
            }
        }
    }
}

fn excerpt(text: &str, max: usize) -> String {
    let mut s: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        s.push('…');
    }
    s
}

/// The part of the dashboard that updates live.
pub fn live(csrf: &str, data: &Dashboard) -> Markup {
    let names: BTreeMap<String, String> = data
        .platforms
        .plugins
        .iter()
        .map(|p| (p.id.clone(), p.name.clone()))
        .collect();
    let q = &data.query;
    let with_health = |h: Option<&str>| {
        let q = super::AccountsQuery {
            health: h.map(str::to_string),
            page: None,
            ..q.clone()
        };
        format!("/ui/?{}", q.to_query(1))
    };
    let on_page = |n: usize| format!("/ui/?{}", q.to_query(n));
    let health_now = q.health.as_deref().filter(|h| !h.is_empty());
    html! {
        @if data.total == 0 {
            p { "No accounts yet. " a href="/ui/connect" { "Connect one" } "." }
        } @else {
            nav.health aria-label="Accounts by health" {
                ul {
                    li { a href=(with_health(None)) aria-current=[health_now.is_none().then_some("true")] { "all " span.count { (data.total) } } }
                    @for (word, n) in &data.counts {
                        li { a.badge.(word) href=(with_health(Some(word))) aria-current=[(health_now == Some(*word)).then_some("true")] data-health-count=(word) { (word.replace('-', " ")) " " span.count { (n) } } }
                    }
                }
            }
            p.muted #accounts-shown {
                (data.matching) " of " (data.total) " accounts"
                @if data.pages > 1 { " · page " (data.page) " of " (data.pages) }
                " · those needing attention first"
            }
        }
        div.cards {
            @for a in &data.accounts { (account_card(csrf, a, &names)) }
        }
        @if data.pages > 1 {
            nav.pager aria-label="Account pages" {
                @if data.page > 1 { a href=(on_page(data.page - 1)) rel="prev" { "Previous" } }
                @if data.page < data.pages { a href=(on_page(data.page + 1)) rel="next" { "Next" } }
            }
        }
        section aria-labelledby="problems-h" {
            h2 #problems-h { "Problems" }
            @if data.problems.is_empty() && data.platforms.rejected.is_empty() {
                p #no-problems { "None." }
            }
            ul.problems {
                @for p in &data.problems {
                    li data-problem=(p.kind) { strong { (p.kind) } " · " code { (p.path) } ": " (p.message) }
                }
                @for r in &data.platforms.rejected {
                    li data-problem="plugin" { strong { "plugin not loaded" } " · " code { (r.path) } ": " (r.error) }
                }
            }
        }
        section aria-labelledby="plugins-h" {
            h2 #plugins-h { "Platforms loaded" }
            ul.plugins {
                @for p in &data.platforms.plugins {
                    li data-plugin=(p.id) {
                        (p.name) " " span.muted { (p.version) " · " (p.source) @if p.shadows_built_in { " (in place of the built-in one)" } }
                        @if !p.awaiting_approval.is_empty() {
                            form.inline method="post" action=(format!("/ui/platforms/{}/approve", p.id)) {
                                (csrf_field(csrf))
                                " needs approval for " (p.awaiting_approval.join(", ")) " "
                                button type="submit" { "Approve" }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn disconnect_confirm(csrf: &str, id: &AccountId) -> Markup {
    layout(
        "Disconnect",
        Some(csrf),
        "Dashboard",
        None,
        html! {
            h1 { "Disconnect " (id.to_string()) "?" }
            p { "outreach revokes the account's token at the platform (where it can), then removes the account and its credential. Scheduled posts to it will fail until it is connected again." }
            form method="post" action=(format!("/ui/accounts/{}/{}/disconnect", id.platform, id.account)) {
                (csrf_field(csrf))
                div.actions {
                    button.danger type="submit" #confirm-disconnect { "Disconnect " (id.to_string()) }
                    a.button href="/ui/" { "Cancel" }
                }
            }
        },
    )
}

pub fn disconnect_refused(csrf: &str, id: &AccountId, why: &str) -> Markup {
    layout(
        "Disconnect",
        Some(csrf),
        "Dashboard",
        None,
        html! {
            h1 { "The account was kept" }
            p.flash.bad role="alert" { (why) }
            form method="post" action=(format!("/ui/accounts/{}/{}/disconnect", id.platform, id.account)) {
                (csrf_field(csrf))
                input type="hidden" name="force" value="1";
                p { "Remove it anyway, then revoke outreach's access in the platform's settings:" }
                div.actions {
                    button.danger type="submit" { "Remove " (id.to_string()) " anyway" }
                    a.button href="/ui/" { "Cancel" }
                }
            }
        },
    )
}

fn auth_words(kind: AuthKind) -> (&'static str, &'static str) {
    match kind {
        AuthKind::Oauth2 | AuthKind::Oauth2Pkce | AuthKind::Oidc => {
            ("oauth", "Sign in with the platform")
        }
        AuthKind::ApiKey => ("key", "API key"),
        AuthKind::BotToken => ("key", "Bot token"),
        AuthKind::WebhookUrl => ("key", "Webhook URL"),
        AuthKind::AppPassword => ("login", "App password"),
        AuthKind::SessionLogin => ("login", "Password"),
        AuthKind::None => ("none", ""),
    }
}

/// Connect: one form per platform.
pub fn connect(
    csrf: &str,
    flash: Option<(bool, String)>,
    plugins: &[Arc<LoadedPlugin>],
    platform: Option<&str>,
    account: Option<&str>,
) -> Markup {
    let mut plugins: Vec<&Arc<LoadedPlugin>> = plugins.iter().collect();
    plugins.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
    html! {
        (layout("Connect", Some(csrf), "Connect", flash, html! {
            h1 { "Connect an account" }
            p { "OAuth platforms send you to the platform and back to " code { "/callback" } " on this daemon. Keys and passwords are checked with the platform before they are stored, and are never shown again." }
            div.cards {
                @for p in plugins {
                    @let m = &p.manifest;
                    @let (kind, secret_label) = auth_words(m.auth.kind);
                    @let chosen = platform == Some(m.id.as_str());
                    @let f = format!("c-{}", m.id);
                    section.card.connect id=(f) data-platform=(m.id) aria-labelledby=(format!("{f}-h")) {
                        h2 id=(format!("{f}-h")) { (m.name) }
                        form method="post" action=(format!("/ui/connect/{}", m.id)) data-connect=(m.id) {
                            (csrf_field(csrf))
                            label for=(format!("{f}-account")) { "Account name" }
                            input id=(format!("{f}-account")) name="account" value=(if chosen { account.unwrap_or("default") } else { "default" }) pattern="[A-Za-z0-9_.\\-]+" required;
                            @for s in &m.settings {
                                label for=(format!("{f}-set-{}", s.name)) { (s.description) @if s.required { span.req aria-hidden="true" { " *" } } }
                                input id=(format!("{f}-set-{}", s.name)) name=(format!("set.{}", s.name)) value=(s.default_value.clone().unwrap_or_default()) required[s.required];
                            }
                            @if kind == "login" {
                                label for=(format!("{f}-user")) { "Username" }
                                input id=(format!("{f}-user")) name="username" autocomplete="username" required;
                            }
                            @if kind == "key" || kind == "login" {
                                label for=(format!("{f}-secret")) { (secret_label) }
                                input id=(format!("{f}-secret")) name="secret" type="password" autocomplete="off" required;
                            }
                            @if kind == "login" && m.auth.kind == AuthKind::SessionLogin {
                                div.check {
                                    input id=(format!("{f}-remember")) name="remember_password" type="checkbox" value="1";
                                    label for=(format!("{f}-remember")) { "Keep the password (encrypted) to log in again when the session ends" }
                                }
                            }
                            @if kind == "oauth" && m.auth.identities.is_some() {
                                label for=(format!("{f}-as")) { "Connect as (page or organization ids, comma-separated; empty if there is one)" }
                                input id=(format!("{f}-as")) name="as";
                            }
                            @if kind == "oauth" {
                                div.check {
                                    input id=(format!("{f}-scopes")) name="approve_scopes" type="checkbox" value="1";
                                    label for=(format!("{f}-scopes")) { "Reconnecting: grant new permissions the plugin asks for" }
                                }
                            }
                            button type="submit" {
                                @if kind == "oauth" { "Connect with " (m.name) } @else { "Connect " (m.name) }
                            }
                        }
                    }
                }
            }
        }))
    }
}

/// The composer.
pub fn compose(
    csrf: &str,
    plugins: &[Arc<LoadedPlugin>],
    accounts: &[AccountId],
    draft: Option<&serde_json::Value>,
    drafts: &[String],
) -> Markup {
    let mut by_platform: BTreeMap<&str, Vec<&AccountId>> = BTreeMap::new();
    for a in accounts {
        by_platform.entry(a.platform.as_str()).or_default().push(a);
    }
    let names: BTreeMap<&str, &LoadedPlugin> = plugins
        .iter()
        .map(|p| (p.manifest.id.as_str(), p.as_ref()))
        .collect();
    let draft_json = draft.map(|d| d.to_string()).unwrap_or_default();
    html! {
        (layout("Compose", Some(csrf), "Compose", None, html! {
            h1 { "Compose" }
            form #composer novalidate data-draft=(draft_json) {
                div.compose-grid {
                    div.compose-main {
                        label for="text" { "Text" }
                        textarea #text name="text" rows="7" aria-describedby="counters-h" {}
                        div.row {
                            div {
                                label for="title" { "Title " span.muted { "(platforms with titles)" } }
                                input #title name="title";
                            }
                            div {
                                label for="link" { "Link" }
                                input #link name="link" type="url" placeholder="https://";
                            }
                        }
                        fieldset #media-box {
                            legend { "Media" }
                            div #dropzone tabindex="0" aria-describedby="drop-help" {
                                p #drop-help { "Drop files here, or " }
                                label for="media-file" { "choose files" }
                                input #media-file type="file" multiple accept="image/*,video/*";
                            }
                            ul #media-list aria-live="polite" {}
                        }
                        fieldset #thread-box {
                            legend { "Thread " span.muted { "(replies, in order, where the platform has threads)" } }
                            ol #thread {}
                            button type="button" #add-thread { "Add a reply" }
                        }
                        fieldset #variants {
                            legend { "Per-platform versions" }
                            p.muted { "Override the text, and fill in the fields a platform asks for." }
                            div role="tablist" #variant-tabs aria-label="Platforms" {}
                            div #variant-panels {
                                @for (platform, _) in &by_platform {
                                    @if let Some(p) = names.get(platform) {
                                        @let m = &p.manifest;
                                        section.variant role="tabpanel" hidden data-variant=(m.id) id=(format!("panel-{}", m.id)) aria-labelledby=(format!("tab-{}", m.id)) data-name=(m.name) {
                                            label for=(format!("v-{}-text", m.id)) { (m.name) " text " span.muted { "(empty: the common text)" } }
                                            textarea id=(format!("v-{}-text", m.id)) data-field="text" rows="4" {}
                                            @for pf in &m.post_fields {
                                                @let id = format!("v-{}-{}", m.id, pf.name);
                                                label for=(id) { (pf.description) " " code { (pf.name) } @if pf.required { span.req { " (required)" } } }
                                                @match pf.kind {
                                                    FieldType::Choice => {
                                                        select id=(id) data-field=(pf.name) required[pf.required] {
                                                            option value="" { "—" }
                                                            @for v in &pf.allowed {
                                                                option value=(v) selected[pf.default_value.as_deref() == Some(v.as_str())] { (v) }
                                                            }
                                                        }
                                                    }
                                                    FieldType::Boolean => {
                                                        select id=(id) data-field=(pf.name) data-type="bool" {
                                                            option value="" { "—" }
                                                            option value="true" { "yes" }
                                                            option value="false" { "no" }
                                                        }
                                                    }
                                                    FieldType::Integer => {
                                                        input id=(id) data-field=(pf.name) data-type="int" type="number" step="1" required[pf.required] value=(pf.default_value.clone().unwrap_or_default());
                                                    }
                                                    _ => {
                                                        input id=(id) data-field=(pf.name) required[pf.required] value=(pf.default_value.clone().unwrap_or_default());
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    div.compose-side {
                        fieldset #targets {
                            legend { "Post to" }
                            @if accounts.is_empty() { p { "No accounts. " a href="/ui/connect" { "Connect one" } "." } }
                            @for (platform, list) in &by_platform {
                                @let name = names.get(platform).map(|p| p.manifest.name.as_str()).unwrap_or(platform);
                                fieldset.group {
                                    legend { (name) }
                                    @for a in list {
                                        @let id = format!("to-{}-{}", a.platform, a.account);
                                        div.check {
                                            input type="checkbox" name="to" id=(id) value=(a.to_string()) data-platform=(a.platform);
                                            label for=(id) { (a.account) }
                                        }
                                    }
                                }
                            }
                        }
                        section aria-labelledby="counters-h" {
                            h2 #counters-h { "Length and problems" }
                            div #counters aria-live="polite" { p.muted { "Pick where to post." } }
                        }
                        fieldset #when {
                            legend { "When" }
                            label for="at" { "Schedule for " span #tz.muted {} }
                            input #at type="datetime-local";
                        }
                        div.actions {
                            button type="button" #publish { "Publish now" }
                            button type="button" #schedule { "Schedule" }
                            button type="button" #save-draft { "Save draft" }
                        }
                        label for="draft-name" { "Draft name" }
                        input #draft-name pattern="[A-Za-z0-9_\\-]+" placeholder="(a new name)";
                        @if !drafts.is_empty() {
                            nav aria-label="Drafts" {
                                h2 { "Drafts" }
                                ul { @for d in drafts { li { a href=(format!("/ui/compose?draft={d}")) { (d) } } } }
                            }
                        }
                        div #results aria-live="polite" {}
                    }
                }
            }
        }))
    }
}

/// A post in the outbox, for the posts page and the calendar.
pub struct PostView {
    pub post: PostRow,
    pub deliveries: Vec<Delivery>,
}

impl PostView {
    pub fn new(post: PostRow, deliveries: Vec<Delivery>) -> Self {
        PostView { post, deliveries }
    }

    /// Its text (read from its source when shown: a page shows 50 of
    /// thousands).
    pub fn text(&self) -> String {
        self.post
            .source
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("text").and_then(|v| v.as_str()).map(str::to_string))
            .unwrap_or_default()
    }

    /// When it is (or was) meant to go out.
    pub fn when(&self) -> DateTime<Utc> {
        self.post.scheduled_at.unwrap_or(self.post.created_at)
    }

    /// One word for the whole post: the least settled of its deliveries.
    pub fn state(&self) -> &'static str {
        let has = |s: State| self.deliveries.iter().any(|d| d.state == s);
        if has(State::Unknown) {
            "unknown"
        } else if has(State::Failed) {
            "failed"
        } else if has(State::Sending) {
            "sending"
        } else if has(State::Pending) {
            "pending"
        } else if has(State::Queued) {
            if self.post.scheduled_at.is_some() {
                "scheduled"
            } else {
                "queued"
            }
        } else if has(State::Processing) {
            "processing"
        } else if self.handed_to_user() {
            "handed-to-user"
        } else if has(State::Published) {
            "published"
        } else if has(State::Cancelled) {
            "cancelled"
        } else {
            "empty"
        }
    }

    fn handed_to_user(&self) -> bool {
        self.deliveries
            .iter()
            .any(|d| d.error_kind.as_deref() == Some("handed-to-user"))
    }
}

const PAGE: usize = 50;

/// The outbox, newest first, 50 posts a page.
pub fn posts(
    csrf: &str,
    flash: Option<(bool, String)>,
    posts: &[PostView],
    state: Option<&str>,
    page_no: usize,
) -> Markup {
    let shown: Vec<&PostView> = posts
        .iter()
        .filter(|p| state.is_none_or(|s| s.is_empty() || p.state() == s))
        .collect();
    let pages = shown.len().div_ceil(PAGE).max(1);
    let page_no = page_no.clamp(1, pages);
    let states = [
        "queued",
        "scheduled",
        "pending",
        "sending",
        "processing",
        "published",
        "failed",
        "unknown",
        "handed-to-user",
        "cancelled",
    ];
    let q = |n: usize| {
        format!(
            "/ui/posts?page={n}{}",
            state.map(|s| format!("&state={s}")).unwrap_or_default()
        )
    };
    html! {
        (layout("Posts", Some(csrf), "Posts", flash, html! {
            h1 { "Posts" }
            form.filter method="get" action="/ui/posts" {
                label for="state" { "Show" }
                select #state name="state" {
                    option value="" { "all" }
                    @for s in states { option value=(s) selected[state == Some(s)] { (s.replace('-', " ")) } }
                }
                button type="submit" { "Filter" }
            }
            p.muted { (shown.len()) " posts" @if pages > 1 { " · page " (page_no) " of " (pages) } }
            table.posts {
                thead { tr { th scope="col" { "When" } th scope="col" { "Post" } th scope="col" { "State" } th scope="col" { "Targets" } } }
                tbody {
                    @for p in shown.iter().skip((page_no - 1) * PAGE).take(PAGE) {
                        tr data-post=(p.post.id) {
                            td { (time(&p.when())) @if p.post.scheduled_at.is_some() { br; span.muted { "scheduled" } } }
                            td { a href=(super::post_url(&p.post.id)) { (excerpt(&Some(p.text()).filter(|t| !t.is_empty()).unwrap_or_else(|| p.post.id.clone()), 90)) } }
                            td { span.state.(p.state()) { (p.state().replace('-', " ")) } }
                            td {
                                ul.targets {
                                    @for d in p.deliveries.iter().filter(|d| d.index == 0) {
                                        li {
                                            (d.target) " "
                                            span.state.(d.state.to_string()) { (d.state.to_string()) }
                                            @if let Some(u) = d.url.as_deref().filter(|u| u.starts_with("http")) {
                                                " " a href=(u) rel="noreferrer noopener" target="_blank" data-link=(d.target) { "open" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav.pager aria-label="Pages" {
                    @if page_no > 1 { a href=(q(page_no - 1)) rel="prev" { "Newer" } }
                    @if page_no < pages { a href=(q(page_no + 1)) rel="next" { "Older" } }
                }
            }
        }))
    }
}

/// One post: its deliveries with their actions, and its attempts.
pub fn post(
    csrf: &str,
    flash: Option<(bool, String)>,
    p: &PostView,
    attempts: &[Attempt],
) -> Markup {
    let base = super::post_url(&p.post.id);
    let cancellable = p
        .deliveries
        .iter()
        .any(|d| matches!(d.state, State::Queued | State::Pending | State::Failed));
    html! {
        (layout("Post", Some(csrf), "Posts", flash, html! {
            h1 { "Post " code { (p.post.id) } }
            p { span.state.(p.state()) { (p.state().replace('-', " ")) } " · "
                @if let Some(t) = &p.post.scheduled_at { "scheduled for " (time(t)) } @else { "created " (time(&p.post.created_at)) } }
            blockquote.text { (p.text()) }
            @if cancellable {
                form method="post" action=(format!("{base}/cancel")) {
                    (csrf_field(csrf))
                    button.danger type="submit" #cancel-post { "Cancel what has not gone out" }
                }
            }
            h2 { "Deliveries" }
            table.deliveries {
                thead { tr { th scope="col" { "Target" } th scope="col" { "Item" } th scope="col" { "State" } th scope="col" { "Details" } th scope="col" { "Actions" } } }
                tbody {
                    @for d in &p.deliveries {
                        tr data-delivery=(format!("{}#{}", d.target, d.index)) {
                            td { (d.target) }
                            td { @if d.index == 0 { "post" } @else { "reply " (d.index) } }
                            td { span.state.(d.state.to_string()) { (d.state.to_string()) } }
                            td {
                                @if let Some(u) = d.url.as_deref().filter(|u| u.starts_with("http")) {
                                    a href=(u) rel="noreferrer noopener" target="_blank" data-link=(d.target) { (u) } br;
                                }
                                @if let Some(e) = &d.error { span.why { (excerpt(e, 300)) } br; }
                                span.muted { "updated " (time(&d.updated_at)) }
                            }
                            td.actions {
                                @if d.index == 0 && matches!(d.state, State::Failed | State::Cancelled) {
                                    form method="post" action=(format!("{base}/retry")) {
                                        (csrf_field(csrf))
                                        input type="hidden" name="target" value=(d.target);
                                        button type="submit" { "Retry" }
                                    }
                                }
                                @if d.state == State::Unknown {
                                    form method="post" action=(format!("{base}/resolve")) {
                                        (csrf_field(csrf))
                                        input type="hidden" name="target" value=(d.target);
                                        input type="hidden" name="index" value=(d.index);
                                        @let uid = format!("url-{}-{}", d.target.replace('/', "-"), d.index);
                                        label for=(uid) { "It went out; its address:" }
                                        input id=(uid) name="url" type="url" placeholder="https://" required;
                                        button type="submit" { "Mark published" }
                                    }
                                    @if d.index == 0 {
                                        form method="post" action=(format!("{base}/retry")) {
                                            (csrf_field(csrf))
                                            input type="hidden" name="target" value=(d.target);
                                            input type="hidden" name="force" value="1";
                                            button type="submit" { "It did not: send again" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Attempts" }
            table {
                thead { tr { th scope="col" { "Target" } th scope="col" { "Started" } th scope="col" { "Outcome" } th scope="col" { "Detail" } } }
                tbody {
                    @for a in attempts {
                        tr {
                            td { (a.target) @if a.index > 0 { " (reply " (a.index) ")" } }
                            td { (time(&a.started_at)) }
                            td { (a.outcome.clone().unwrap_or_else(|| "—".into())) @if let Some(u) = &a.user_retry { " (retry from " (u) ")" } }
                            td { (excerpt(a.detail.as_deref().unwrap_or(""), 300)) }
                        }
                    }
                }
            }
        }))
    }
}

/// A month (weeks from Monday) or a week of posts, by when they go out.
pub fn calendar(csrf: &str, posts: &[PostView], month: bool, day: NaiveDate) -> Markup {
    let (start, days, prev, next, heading) = if month {
        let first = day.with_day(1).unwrap_or(day);
        let start = first - Duration::days(first.weekday().num_days_from_monday() as i64);
        let next_month = if first.month() == 12 {
            NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
        }
        .unwrap_or(first);
        let prev_month = (first - Duration::days(1)).with_day(1).unwrap_or(first);
        let span = (next_month - start).num_days();
        let weeks = (span + 6) / 7;
        (
            start,
            weeks * 7,
            prev_month,
            next_month,
            first.format("%B %Y").to_string(),
        )
    } else {
        let start = day - Duration::days(day.weekday().num_days_from_monday() as i64);
        (
            start,
            7,
            start - Duration::days(7),
            start + Duration::days(7),
            format!("Week of {}", start.format("%-d %B %Y")),
        )
    };
    let end = start + Duration::days(days);
    let mut by_day: BTreeMap<NaiveDate, Vec<&PostView>> = BTreeMap::new();
    for p in posts {
        let d = p.when().date_naive();
        if d >= start && d < end {
            by_day.entry(d).or_default().push(p);
        }
    }
    for list in by_day.values_mut() {
        list.sort_by_key(|p| p.when());
    }
    let view = if month { "month" } else { "week" };
    let today = Utc::now().date_naive();
    html! {
        (layout("Calendar", Some(csrf), "Calendar", None, html! {
            h1 { "Calendar" }
            nav.calnav aria-label="Calendar" {
                a href=(format!("/ui/calendar?view={view}&date={prev}")) rel="prev" { "← Earlier" }
                h2 { (heading) " " span.muted { "(UTC)" } }
                a href=(format!("/ui/calendar?view={view}&date={next}")) rel="next" { "Later →" }
                span.views {
                    @if month { a href=(format!("/ui/calendar?view=week&date={day}")) { "Week" } } @else { a href=(format!("/ui/calendar?view=month&date={day}")) { "Month" } }
                }
            }
            ol.calendar.(view) {
                @for i in 0..days {
                    @let d = start + Duration::days(i);
                    li.day.today[d == today].other[month && d.month() != day.month()] data-date=(d.to_string()) {
                        h3 { span.wd { (d.format("%a")) } " " (d.format("%-d %b")) }
                        @if let Some(list) = by_day.get(&d) {
                            ul {
                                @for p in list {
                                    li data-post=(p.post.id) {
                                        a href=(super::post_url(&p.post.id)) {
                                            span.state.(p.state()) { (p.when().format("%H:%M")) } " " (excerpt(&Some(p.text()).filter(|t| !t.is_empty()).unwrap_or_else(|| p.post.id.clone()), 40))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (PreEscaped(""))
        }))
    }
}
