//! The web UI: a token health dashboard, connection screens, a composer
//! and the outbox with its calendar, served by the daemon under `/ui/`.
//!
//! Owns: the UI's routes, who may use them ([`session`]: one-time sign-in
//! links, `HttpOnly` + `SameSite=Strict` session cookies, a CSRF token on
//! every state-changing request, `Host` and `Origin` checked against the
//! daemon's own addresses), the security headers of every page (a strict
//! Content-Security-Policy: only this daemon's own scripts and styles,
//! no inline script, no framing), the assets embedded in the binary, and
//! the daemon's `/callback`, where browsers come back from a platform's
//! authorization (authenticated by the flow's single-use `state`, since
//! the `SameSite=Strict` cookie is not sent on that cross-site redirect).
//!
//! Never: holds logic of its own — every action calls the functions the
//! CLI and the JSON API call ([`crate::accounts`], [`crate::publish`],
//! [`crate::schedule`]) — shows a secret (pages are built from types that
//! hold none, and a secret field is never echoed back), or loads anything
//! from another origin.
//!
//! Pages are server-rendered with `maud` (checked at compile time); a
//! small script of our own (`assets/app.js`) adds live counters, live
//! updates and uploads. It is hand-written rather than a framework such
//! as htmx because it is short and must run under `script-src 'self'`.

mod pages;
pub mod session;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::daemon::Daemon;
use crate::schedule::Need;
use crate::store::AccountId;

pub use session::Sessions;

/// What the UI shares between requests.
pub struct Ui {
    pub sessions: Sessions,
    /// Browsers coming back from a platform's authorization.
    pub callbacks: Arc<crate::auth::Callbacks>,
}

impl Ui {
    pub fn new(
        bound: std::net::SocketAddr,
        public: Option<&url::Url>,
        link_ttl: std::time::Duration,
    ) -> Self {
        Ui {
            sessions: Sessions::new(bound, public, link_ttl),
            callbacks: Arc::new(crate::auth::Callbacks::default()),
        }
    }
}

#[derive(Clone)]
struct Ctx {
    d: Arc<Daemon>,
}

impl Ctx {
    fn ui(&self) -> &Ui {
        &self.d.ui
    }
}

/// The signed-in session a handler runs for.
#[derive(Clone)]
struct Signed {
    id: String,
    csrf: String,
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes (under `/ui`) and `/callback`. Merged into the
/// daemon's router beside the JSON API, which keeps its bearer token.
pub fn router(d: Arc<Daemon>) -> Router {
    let ctx = Ctx { d };
    let signed_in = Router::new()
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/", get(dashboard))
        .route("/ui/live/accounts", get(live_accounts))
        .route("/ui/signout", post(sign_out))
        .route("/ui/accounts/{platform}/{account}/refresh", post(refresh))
        .route(
            "/ui/accounts/{platform}/{account}/disconnect",
            get(disconnect_confirm).post(disconnect),
        )
        .route("/ui/platforms/{id}/approve", post(approve))
        .route("/ui/connect", get(connect_page))
        .route("/ui/connect/{platform}", post(connect))
        .route("/ui/compose", get(compose_page))
        .route("/ui/compose/check", post(compose_check))
        .route("/ui/compose/publish", post(compose_publish))
        .route("/ui/compose/draft", post(compose_draft))
        .route("/ui/media", post(upload).layer(DefaultBodyLimit::disable()))
        .route("/ui/posts", get(posts_page))
        .route("/ui/posts/{id}", get(post_page))
        .route("/ui/posts/{id}/cancel", post(post_cancel))
        .route("/ui/posts/{id}/retry", post(post_retry))
        .route("/ui/posts/{id}/resolve", post(post_resolve))
        .route("/ui/calendar", get(calendar_page))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), signed));
    Router::new()
        .merge(signed_in)
        .route("/ui/signin/{token}", get(sign_in))
        .route("/ui/assets/{name}", get(asset))
        .route("/callback", get(callback))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

fn page(markup: maud::Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn plain(code: StatusCode, msg: &str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.to_string(),
    )
        .into_response()
}

fn json(code: StatusCode, v: serde_json::Value) -> Response {
    (code, axum::Json(v)).into_response()
}

/// Every UI request: its `Host` (and, when it changes something, its
/// `Origin`) must be this daemon's own; every answer gets the security
/// headers.
async fn guard(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let s = &ctx.ui().sessions;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if !s.host_ok(host) {
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            "this address is not the daemon's own (open the link `outreach ui` prints)",
        );
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if changes {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if !origin.is_some_and(|o| s.origin_ok(o)) {
            return plain(
                StatusCode::FORBIDDEN,
                "refused: the request does not come from the daemon's own pages",
            );
        }
    }
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` Chromium sends
    // `Origin: null` on the page's own POSTs, which the Origin check refuses.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// Signed-in routes: a live session, and on every state-changing request
/// the session's CSRF token (`X-CSRF-Token`, or `_csrf` in a form).
async fn signed(State(ctx): State<Ctx>, mut req: Request, next: Next) -> Response {
    let s = &ctx.ui().sessions;
    let id = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| s.cookie_of(c))
        .map(str::to_string);
    let Some((id, session)) = id.and_then(|id| s.get(&id).map(|sess| (id, sess))) else {
        let mut r = page(pages::signed_out());
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let header_token = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let ok = match header_token {
            Some(t) => session::same(t.as_bytes(), session.csrf.as_bytes()),
            None => {
                // A form: read it, check `_csrf`, and hand it on.
                let (parts, body) = req.into_parts();
                let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
                    return plain(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
                };
                let given = url::form_urlencoded::parse(&bytes)
                    .find(|(k, _)| k == "_csrf")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                req = Request::from_parts(parts, Body::from(bytes));
                session::same(given.as_bytes(), session.csrf.as_bytes())
            }
        };
        if !ok {
            return plain(
                StatusCode::FORBIDDEN,
                "refused: the request carries no valid CSRF token; reload the page and try again",
            );
        }
    }
    req.extensions_mut().insert(Signed {
        id,
        csrf: session.csrf,
    });
    next.run(req).await
}

async fn sign_in(State(ctx): State<Ctx>, Path(token): Path<String>) -> Response {
    let s = &ctx.ui().sessions;
    match s.sign_in(&token) {
        Some(id) => {
            let mut r = redirect("/ui/");
            r.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_str(&s.set_cookie(&id)).expect("cookie"),
            );
            r
        }
        None => {
            let mut r = page(pages::link_spent());
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
    }
}

async fn sign_out(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
) -> Response {
    let s = &ctx.ui().sessions;
    s.sign_out(&me.id);
    let mut r = page(pages::signed_out());
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&s.clear_cookie()).expect("cookie"),
    );
    r
}

/// The assets, embedded in the binary; named by content so they can be
/// cached for good.
pub(crate) const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("assets/favicon.svg"),
    ),
];

/// `/ui/assets/NAME?v=HASH`: the hash changes with the content.
pub(crate) fn asset_url(name: &str) -> String {
    static HASHES: std::sync::OnceLock<BTreeMap<&'static str, String>> = std::sync::OnceLock::new();
    let h = HASHES.get_or_init(|| {
        use sha2::Digest as _;
        ASSETS
            .iter()
            .map(|(n, _, b)| (*n, hex::encode(&sha2::Sha256::digest(b)[..6])))
            .collect()
    });
    format!(
        "/ui/assets/{name}?v={}",
        h.get(name).map(String::as_str).unwrap_or("")
    )
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *bytes,
        )
            .into_response(),
        None => plain(StatusCode::NOT_FOUND, "no such asset"),
    }
}

/// `GET /callback`: a browser back from a platform's authorization page,
/// for a connection started in the UI. Its `state` picks the flow; the
/// page it gets says how the connection went.
async fn callback(State(ctx): State<Ctx>, req: Request) -> Response {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let url = url::Url::parse(&format!("http://127.0.0.1{target}")).ok();
    let Some(rx) = url.and_then(|u| ctx.ui().callbacks.land(u)) else {
        let mut r = page(pages::callback_unknown());
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    match rx.await {
        Ok((code, html)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the connection stopped before it finished; start it again from the dashboard",
        ),
    }
}

fn flash_of(ctx: &Ctx, me: &Signed) -> Option<(bool, String)> {
    ctx.ui().sessions.take_flash(&me.id)
}

fn flash(ctx: &Ctx, me: &Signed, ok: bool, msg: impl Into<String>) {
    ctx.ui().sessions.flash(&me.id, ok, msg.into());
}

/// Which accounts the dashboard shows: `?health=&platform=&q=&page=`.
#[derive(Deserialize, Default, Clone, Debug)]
#[serde(default)]
pub struct AccountsQuery {
    pub health: Option<String>,
    pub platform: Option<String>,
    pub q: Option<String>,
    pub page: Option<usize>,
}

impl AccountsQuery {
    /// The query string that shows the same accounts (on `page`).
    pub fn to_query(&self, page: usize) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("health", &self.health),
            ("platform", &self.platform),
            ("q", &self.q),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.append_pair(k, v);
            }
        }
        if page > 1 {
            q.append_pair("page", &page.to_string());
        }
        q.finish()
    }
}

/// What the dashboard shows, gathered off the async threads: every
/// account's status from the store's secret-free views (no decryption of
/// unchanged records), counted by health, filtered, the ones needing
/// attention first, one page of them with their last posts.
async fn dashboard_data(d: &Arc<Daemon>, q: AccountsQuery) -> anyhow::Result<pages::Dashboard> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<pages::Dashboard> {
        let all = crate::accounts::statuses_without_posts(&d.app)?;
        let mut platforms = crate::plugin::manifest::Platforms::of(&d.app.host, &d.app.cfg());
        crate::accounts::fill_approvals(&mut platforms, crate::accounts::awaiting_in(&all));
        Ok(pages::Dashboard::of(
            &d.app,
            all,
            q,
            platforms,
            d.problems(),
        )?)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?
}

/// Accounts per dashboard page.
const ACCOUNTS_PAGE: usize = 50;

/// Health words, most in need of the user first (the dashboard's order).
const HEALTH_ORDER: [&str; 9] = [
    "unreadable",
    "needs-reconnect",
    "failing",
    "expired",
    "plugin-missing",
    "awaiting-approval",
    "expiring",
    "unknown",
    "valid",
];

impl pages::Dashboard {
    fn of(
        svc: &crate::services::Services,
        mut all: Vec<crate::accounts::AccountStatus>,
        q: AccountsQuery,
        platforms: crate::plugin::manifest::Platforms,
        problems: Vec<crate::daemon::Problem>,
    ) -> anyhow::Result<Self> {
        let rank = |a: &crate::accounts::AccountStatus| {
            let word = pages::health_of(a).0;
            HEALTH_ORDER.iter().position(|w| *w == word).unwrap_or(0)
        };
        let mut counts: Vec<(&'static str, usize)> = HEALTH_ORDER.iter().map(|w| (*w, 0)).collect();
        let mut by_platform: BTreeMap<String, usize> = BTreeMap::new();
        for a in &all {
            counts[rank(a)].1 += 1;
            *by_platform.entry(a.summary.platform.clone()).or_default() += 1;
        }
        let total = all.len();
        let needle =
            q.q.as_deref()
                .map(str::to_lowercase)
                .filter(|n| !n.is_empty());
        all.retain(|a| {
            q.health
                .as_deref()
                .is_none_or(|h| h.is_empty() || pages::health_of(a).0 == h)
                && q.platform
                    .as_deref()
                    .is_none_or(|p| p.is_empty() || a.summary.platform == p)
                && needle.as_deref().is_none_or(|n| {
                    a.summary.id.to_lowercase().contains(n)
                        || a.profile_name
                            .as_deref()
                            .is_some_and(|p| p.to_lowercase().contains(n))
                })
        });
        all.sort_by(|a, b| {
            rank(a)
                .cmp(&rank(b))
                .then_with(|| a.summary.id.cmp(&b.summary.id))
        });
        let matching = all.len();
        let pages_n = matching.div_ceil(ACCOUNTS_PAGE).max(1);
        let page = q.page.unwrap_or(1).clamp(1, pages_n);
        let mut shown: Vec<_> = all
            .into_iter()
            .skip((page - 1) * ACCOUNTS_PAGE)
            .take(ACCOUNTS_PAGE)
            .collect();
        crate::accounts::with_last_posts(svc, &mut shown)?;
        Ok(pages::Dashboard {
            accounts: shown,
            total,
            matching,
            page,
            pages: pages_n,
            counts: counts.into_iter().filter(|(_, n)| *n > 0).collect(),
            by_platform,
            query: q,
            platforms,
            problems,
        })
    }
}

async fn dashboard(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Query(q): Query<AccountsQuery>,
) -> Response {
    let flash = flash_of(&ctx, &me);
    match dashboard_data(&ctx.d, q).await {
        Ok(data) => page(pages::dashboard(&me.csrf, flash, &data)),
        Err(e) => page(pages::error_page(&me.csrf, &format!("{e:#}"))),
    }
}

/// The accounts part of the dashboard, for its live updates: 304 when it
/// has not changed since the `ETag` the page holds.
async fn live_accounts(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Query(q): Query<AccountsQuery>,
    headers: HeaderMap,
) -> Response {
    let data = match dashboard_data(&ctx.d, q).await {
        Ok(d) => d,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    };
    let html = pages::live(&me.csrf, &data).into_string();
    let etag = {
        use sha2::Digest as _;
        format!(
            "\"{}\"",
            hex::encode(&sha2::Sha256::digest(html.as_bytes())[..12])
        )
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::ETAG, etag),
        ],
        html,
    )
        .into_response()
}

fn account_id(platform: &str, account: &str) -> Result<AccountId, Response> {
    AccountId::new(platform, account).map_err(|e| plain(StatusCode::BAD_REQUEST, &e.to_string()))
}

async fn refresh(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Path((platform, account)): Path<(String, String)>,
) -> Response {
    let id = match account_id(&platform, &account) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let r = ctx.d.refresher.clone();
    let id2 = id.clone();
    let Some(job) = ctx.d.spawn(async move { r.ensure(&id2, Need::Now).await }) else {
        flash(
            &ctx,
            &me,
            false,
            "the daemon is shutting down; nothing was done",
        );
        return redirect("/ui/");
    };
    match job.await {
        Ok(Ok(_)) => flash(&ctx, &me, true, format!("refreshed {id}")),
        Ok(Err(e)) => flash(&ctx, &me, false, format!("refreshing {id} failed: {e}")),
        Err(e) => flash(&ctx, &me, false, format!("refreshing {id} failed: {e}")),
    }
    redirect("/ui/")
}

async fn disconnect_confirm(
    axum::Extension(me): axum::Extension<Signed>,
    Path((platform, account)): Path<(String, String)>,
) -> Response {
    match account_id(&platform, &account) {
        Ok(id) => page(pages::disconnect_confirm(&me.csrf, &id)),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DisconnectForm {
    force: Option<String>,
}

async fn disconnect(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Path((platform, account)): Path<(String, String)>,
    axum::Form(f): axum::Form<DisconnectForm>,
) -> Response {
    let id = match account_id(&platform, &account) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match crate::accounts::disconnect(&ctx.d.app, &id, f.force.is_some()).await {
        Ok(Ok(done)) => flash(&ctx, &me, true, done.lines().join("; ")),
        Ok(Err(refused)) => {
            return page(pages::disconnect_refused(&me.csrf, &id, &refused));
        }
        Err(e) => flash(
            &ctx,
            &me,
            false,
            format!("disconnecting {id} failed: {e:#}"),
        ),
    }
    redirect("/ui/")
}

async fn approve(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Path(id): Path<String>,
) -> Response {
    match crate::accounts::approve_plugin(&ctx.d.app, &id).await {
        Ok(a) => flash(
            &ctx,
            &me,
            true,
            format!("approved {id}'s hosts for {} accounts", a.accounts.len()),
        ),
        Err(e) => flash(&ctx, &me, false, format!("approving {id} failed: {e:#}")),
    }
    redirect("/ui/")
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConnectQuery {
    platform: Option<String>,
    account: Option<String>,
}

async fn connect_page(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Query(q): Query<ConnectQuery>,
) -> Response {
    let flash = flash_of(&ctx, &me);
    let plugins = ctx.d.app.host.plugins();
    page(pages::connect(
        &me.csrf,
        flash,
        &plugins,
        q.platform.as_deref(),
        q.account.as_deref(),
    ))
}

/// `POST /ui/connect/PLATFORM`: the connect form. OAuth platforms send the
/// browser to the platform (it comes back to `/callback`); the others are
/// verified with the platform, then stored.
async fn connect(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Path(platform): Path<String>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Response {
    use crate::contract::wit::types::AuthKind;
    let mut account = "default".to_string();
    let mut settings = BTreeMap::new();
    let mut secret = None;
    let mut username = None;
    let mut identities = Vec::new();
    let mut approve_scopes = false;
    let mut remember = false;
    for (k, v) in form {
        match k.as_str() {
            "account" if !v.trim().is_empty() => account = v.trim().to_string(),
            "secret" => secret = Some(crate::secret::Secret::new(v)),
            "username" if !v.trim().is_empty() => username = Some(v.trim().to_string()),
            "as" => identities.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            "approve_scopes" => approve_scopes = true,
            "remember_password" => remember = true,
            _ => {
                if let Some(name) = k.strip_prefix("set.")
                    && !v.trim().is_empty()
                {
                    settings.insert(name.to_string(), v.trim().to_string());
                }
            }
        }
    }
    let back = format!("/ui/connect?platform={platform}");
    let plugin = match ctx.d.app.platform(&platform) {
        Ok(p) => p,
        Err(e) => {
            flash(&ctx, &me, false, format!("{e:#}"));
            return redirect("/ui/connect");
        }
    };
    let oauth = matches!(
        plugin.manifest.auth.kind,
        AuthKind::Oauth2 | AuthKind::Oauth2Pkce | AuthKind::Oidc
    );
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<String>();
    let url_tx = std::sync::Mutex::new(Some(url_tx));
    let secret_given = std::sync::Mutex::new(secret);
    let s = &ctx.ui().sessions;
    let opts = crate::accounts::ConnectOptions {
        platform: platform.clone(),
        account,
        settings,
        open_browser: false,
        username,
        approve_scopes,
        remember_password: remember,
        identities,
        paste: false,
        prompt: Box::new(move |what: &str| {
            secret_given
                .lock()
                .expect("secret")
                .take()
                .filter(|s| !s.expose().trim().is_empty())
                .ok_or_else(|| crate::error::bad!("fill in {what}"))
        }),
        choose: Box::new(|list: &[crate::contract::wit::types::Identity]| {
            let names: Vec<String> = list
                .iter()
                .map(|i| format!("{} ({})", i.id, i.name))
                .collect();
            Err(crate::error::bad!(
                "this grant can act as several: {}; connect again with their ids in \"Connect as\"",
                names.join(", ")
            ))
        }),
        announce: Box::new(move |url: &str| {
            if let Some(tx) = url_tx.lock().expect("connect channel").take() {
                let _ = tx.send(url.to_string());
            }
        }),
        via: Some(crate::auth::Via {
            base: s.base.clone(),
            callbacks: ctx.ui().callbacks.clone(),
            back: format!("{}/ui/", s.base),
        }),
    };
    let d = ctx.d.clone();
    let Some(job) = ctx.d.spawn(async move {
        let outcome = tokio::select! {
            outcome = crate::accounts::connect(&d.app, opts) => outcome,
            _ = d.shutdown_signal() => Err(anyhow::anyhow!(
                "the daemon stopped before the connection finished; start it again"
            )),
        };
        if let Ok(records) = &outcome {
            for r in records {
                let _ = d.accounts_changed.send(r.id.clone());
            }
        }
        outcome
    }) else {
        flash(
            &ctx,
            &me,
            false,
            "the daemon is shutting down; nothing was done",
        );
        return redirect(&back);
    };
    if oauth {
        // The platform's page, or why the flow stopped before there was one.
        return match url_rx.await {
            Ok(url) => redirect(&url),
            Err(_) => {
                let why = match job.await {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => "the connection stopped before it began".into(),
                };
                flash(&ctx, &me, false, why);
                redirect(&back)
            }
        };
    }
    match job.await {
        Ok(Ok(records)) => {
            let names: Vec<String> = records
                .iter()
                .map(|r| format!("{} as {}", r.id, r.profile.label()))
                .collect();
            flash(&ctx, &me, true, format!("connected {}", names.join(", ")));
            redirect("/ui/")
        }
        Ok(Err(e)) => {
            flash(&ctx, &me, false, format!("{e:#}"));
            redirect(&back)
        }
        Err(e) => {
            flash(&ctx, &me, false, format!("{e}"));
            redirect(&back)
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ComposeQuery {
    draft: Option<String>,
}

async fn compose_page(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Query(q): Query<ComposeQuery>,
) -> Response {
    let d = ctx.d.clone();
    let accounts = tokio::task::spawn_blocking(move || {
        let store = d.app.store()?;
        store.list().map_err(anyhow::Error::from)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
    .and_then(|r| r);
    let accounts = match accounts {
        Ok(a) => a,
        Err(e) => return page(pages::error_page(&me.csrf, &format!("{e:#}"))),
    };
    let draft = match q
        .draft
        .as_deref()
        .map(|n| drafts::load(&ctx.d.app.cfg(), n))
    {
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            return page(pages::error_page(&me.csrf, &format!("{e:#}")));
        }
        None => None,
    };
    let plugins = ctx.d.app.host.plugins();
    let listed = drafts::list(&ctx.d.app.cfg());
    page(pages::compose(
        &me.csrf,
        &plugins,
        &accounts,
        draft.as_ref(),
        &listed,
    ))
}

fn post_of(body: &[u8]) -> Result<serde_json::Value, Response> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": format!("the post is not JSON: {e}") }),
        )
    })?;
    if !v.is_object() {
        return Err(json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "the post must be an object" }),
        ));
    }
    Ok(v)
}

/// The composer's live check: every target's count and limit by its
/// platform's rule, and every problem `--check` reports.
async fn compose_check(State(ctx): State<Ctx>, body: axum::body::Bytes) -> Response {
    let post = match post_of(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let app = ctx.d.app.clone();
    let base = app.cfg().posts_dir.clone();
    match crate::publish::check_and_measure_json(&app, &post, base.as_deref()).await {
        Ok((checked, measures)) => {
            let (results, problems) = match checked {
                Ok(rows) => (rows, Vec::new()),
                Err(p) => (Vec::new(), p),
            };
            json(
                StatusCode::OK,
                serde_json::json!({ "results": results, "problems": problems, "measures": measures }),
            )
        }
        Err(e) => json(
            StatusCode::OK,
            serde_json::json!({ "error": format!("{e:#}"), "measures": [], "problems": [] }),
        ),
    }
}

/// Publish (or schedule, with `schedule`) what the composer holds: the
/// same path as `POST /publish`.
async fn compose_publish(State(ctx): State<Ctx>, body: axum::body::Bytes) -> Response {
    // Without an `id`, a post is keyed by its content, as `POST /publish`
    // keys it: pressing Publish twice does not post twice.
    let post = match post_of(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let d = ctx.d.clone();
    let app = d.app.clone();
    let base = app.cfg().posts_dir.clone();
    let d2 = d.clone();
    let Some(job) = d.spawn(async move {
        let r = crate::publish::publish_json(
            app.services(),
            &post,
            base.as_deref(),
            crate::publish::Options::default(),
        )
        .await;
        d2.wake_due();
        r
    }) else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "the daemon is shutting down; nothing was sent" }),
        );
    };
    match job.await {
        Ok(Ok(Ok(report))) => json(
            StatusCode::OK,
            serde_json::to_value(report).unwrap_or_default(),
        ),
        Ok(Ok(Err(problems))) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({ "error": "the post does not validate", "problems": problems }),
        ),
        Ok(Err(e)) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": format!("{e:#}") }),
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": e.to_string() }),
        ),
    }
}

/// Save what the composer holds as a post file in the drafts folder.
async fn compose_draft(State(ctx): State<Ctx>, body: axum::body::Bytes) -> Response {
    let post = match post_of(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match drafts::save(&ctx.d.app.cfg(), &post) {
        Ok(name) => json(StatusCode::OK, serde_json::json!({ "saved": name })),
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": format!("{e:#}") }),
        ),
    }
}

/// `POST /ui/media` with the file as the body and its name in
/// `X-File-Name`: stored in the media folder, answered with the path a
/// post names it by.
async fn upload(State(ctx): State<Ctx>, headers: HeaderMap, body: Body) -> Response {
    let name = headers
        .get("x-file-name")
        .and_then(|v| v.to_str().ok())
        .map(|n| {
            percent_encoding::percent_decode_str(n)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    match media::store(&ctx.d.app.cfg(), &name, body).await {
        Ok((path, size)) => json(
            StatusCode::OK,
            serde_json::json!({ "path": path, "bytes": size }),
        ),
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": format!("{e:#}") }),
        ),
    }
}

/// Run `f` on the outbox (the journal) off the async threads: its reads
/// and writes are SQLite calls that block.
async fn with_outbox<T: Send + 'static>(
    d: &Arc<Daemon>,
    f: impl FnOnce(&crate::outbox::Outbox) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || {
        let outbox = d.app.outbox()?;
        let ob = outbox.lock().expect("outbox");
        f(&ob)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?
}

/// The outbox, newest first.
async fn load_posts(d: &Arc<Daemon>) -> anyhow::Result<Vec<pages::PostView>> {
    with_outbox(d, |ob| {
        Ok(ob
            .all()?
            .into_iter()
            .map(|(post, deliveries)| pages::PostView::new(post, deliveries))
            .collect())
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PostsQuery {
    state: Option<String>,
    page: Option<usize>,
}

async fn posts_page(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Query(q): Query<PostsQuery>,
) -> Response {
    let flash = flash_of(&ctx, &me);
    match load_posts(&ctx.d).await {
        Ok(posts) => page(pages::posts(
            &me.csrf,
            flash,
            &posts,
            q.state.as_deref(),
            q.page.unwrap_or(1),
        )),
        Err(e) => page(pages::error_page(&me.csrf, &format!("{e:#}"))),
    }
}

async fn post_page(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Path(id): Path<String>,
) -> Response {
    let flash = flash_of(&ctx, &me);
    let id2 = id.clone();
    let found = with_outbox(&ctx.d, move |ob| {
        let Some(post) = ob.post(&id2)? else {
            return Ok(None);
        };
        Ok(Some((post, ob.deliveries(&id2)?, ob.attempts(&id2)?)))
    })
    .await;
    match found {
        Ok(Some((post, deliveries, attempts))) => {
            let view = pages::PostView::new(post, deliveries);
            page(pages::post(&me.csrf, flash, &view, &attempts))
        }
        Ok(None) => {
            let mut r = page(pages::error_page(
                &me.csrf,
                &format!("there is no post `{id}`"),
            ));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
        Err(e) => page(pages::error_page(&me.csrf, &format!("{e:#}"))),
    }
}

fn post_url(id: &str) -> String {
    format!(
        "/ui/posts/{}",
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
    )
}

async fn post_cancel(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Path(id): Path<String>,
) -> Response {
    let id2 = id.clone();
    let r = with_outbox(&ctx.d, move |ob| ob.cancel(&id2)).await;
    match r {
        Ok(n) => flash(
            &ctx,
            &me,
            true,
            format!("cancelled {n} deliveries of `{id}` that had not gone out"),
        ),
        Err(e) => flash(&ctx, &me, false, format!("{e:#}")),
    }
    redirect(&post_url(&id))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RetryForm {
    target: Option<String>,
    force: Option<String>,
}

async fn post_retry(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<RetryForm>,
) -> Response {
    let d = ctx.d.clone();
    let app = d.app.clone();
    let d2 = d.clone();
    let id2 = id.clone();
    let target = f.target.filter(|t| !t.is_empty());
    let force = f.force.is_some();
    let Some(job) = d.spawn(async move {
        let r = crate::publish::retry(app.services(), &id2, target.as_deref(), force).await;
        d2.wake_due();
        r
    }) else {
        flash(
            &ctx,
            &me,
            false,
            "the daemon is shutting down; nothing was done",
        );
        return redirect(&post_url(&id));
    };
    match job.await {
        Ok(Ok(Ok(done))) => {
            let lines: Vec<String> = done
                .report
                .results
                .iter()
                .map(|t| format!("{}: {}", t.target, t.state))
                .collect();
            let ok = done.report.results.iter().all(|t| t.ok);
            flash(&ctx, &me, ok, format!("sent again — {}", lines.join(", ")));
        }
        Ok(Ok(Err(problems))) => {
            let msgs: Vec<String> = problems
                .iter()
                .map(|p| format!("{} {}: {}", p.target, p.field, p.message))
                .collect();
            flash(
                &ctx,
                &me,
                false,
                format!("the post no longer validates: {}", msgs.join("; ")),
            );
        }
        Ok(Err(e)) => flash(&ctx, &me, false, format!("{e:#}")),
        Err(e) => flash(&ctx, &me, false, e.to_string()),
    }
    redirect(&post_url(&id))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResolveForm {
    target: String,
    index: u32,
    url: String,
}

/// An `unknown` delivery the user found on the platform: published, with
/// the address they give.
async fn post_resolve(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ResolveForm>,
) -> Response {
    let url = f.url.trim().to_string();
    let parsed = url::Url::parse(&url)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http"));
    if parsed.is_none() {
        flash(
            &ctx,
            &me,
            false,
            "give the address of the post on the platform (https://…) to mark it published",
        );
        return redirect(&post_url(&id));
    }
    let id2 = id.clone();
    let target = f.target.clone();
    let r = with_outbox(&ctx.d, move |ob| {
        ob.mark_published(&id2, &target, f.index, &url)
    })
    .await;
    match r {
        Ok(1) => flash(&ctx, &me, true, format!("marked {} published", f.target)),
        Ok(_) => flash(
            &ctx,
            &me,
            false,
            format!("{} is not unknown any more; nothing was changed", f.target),
        ),
        Err(e) => flash(&ctx, &me, false, format!("{e:#}")),
    }
    redirect(&post_url(&id))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CalendarQuery {
    view: Option<String>,
    date: Option<String>,
}

async fn calendar_page(
    State(ctx): State<Ctx>,
    axum::Extension(me): axum::Extension<Signed>,
    Query(q): Query<CalendarQuery>,
) -> Response {
    let month = q.view.as_deref() != Some("week");
    let day = q
        .date
        .as_deref()
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .unwrap_or_else(|| chrono::Utc::now().date_naive());
    match load_posts(&ctx.d).await {
        Ok(posts) => page(pages::calendar(&me.csrf, &posts, month, day)),
        Err(e) => page(pages::error_page(&me.csrf, &format!("{e:#}"))),
    }
}

/// Drafts: post files (the same TOML the CLI reads) in a folder the
/// daemon does not watch.
mod drafts {
    use std::path::PathBuf;

    use crate::config::Loaded;
    use crate::error::bad;

    fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 80
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }

    fn path_of(cfg: &Loaded, name: &str) -> anyhow::Result<PathBuf> {
        if !valid_name(name) {
            return Err(bad!(
                "a draft's name is letters, digits, `-` and `_` (at most 80)"
            ));
        }
        Ok(cfg.drafts_dir.join(format!("{name}.toml")))
    }

    /// The drafts, by name.
    pub fn list(cfg: &Loaded) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&cfg.drafts_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                let stem = n.strip_suffix(".toml")?;
                valid_name(stem).then(|| stem.to_string())
            })
            .collect();
        out.sort();
        out
    }

    /// Save `post` (the composer's JSON) as a post file; its name is the
    /// post's `draft` field, or a new one. Returns the name.
    pub fn save(cfg: &Loaded, post: &serde_json::Value) -> anyhow::Result<String> {
        let mut post = post.clone();
        let name = match post.get("draft").and_then(|v| v.as_str()) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => format!("draft-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S")),
        };
        let path = path_of(cfg, &name)?;
        if let Some(o) = post.as_object_mut() {
            o.remove("draft");
            o.retain(|_, v| !v.is_null());
        }
        let table: toml::Table = serde_json::from_value(post)
            .map_err(|e| bad!("the draft cannot be written as a post file: {e}"))?;
        let text = toml::to_string_pretty(&table)
            .map_err(|e| bad!("the draft cannot be written as a post file: {e}"))?;
        std::fs::create_dir_all(&cfg.drafts_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", cfg.drafts_dir.display()))?;
        crate::store::write_atomic(&path, text.as_bytes())?;
        Ok(name)
    }

    /// A draft, as the composer's JSON (with its name in `draft`).
    pub fn load(cfg: &Loaded, name: &str) -> anyhow::Result<serde_json::Value> {
        let path = path_of(cfg, name)?;
        let text = crate::config::read_regular_text(&path)
            .map_err(|e| bad!("cannot read the draft `{name}`: {e}"))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| bad!("the draft `{name}` is not a post file: {e}"))?;
        let mut v = serde_json::to_value(table)?;
        v["draft"] = serde_json::json!(name);
        Ok(v)
    }
}

/// Media the composer uploads: kept in the media folder (`paths.media`),
/// or the posts folder's `media` subfolder, where posts may take it from.
mod media {
    use futures::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;

    use crate::config::Loaded;
    use crate::error::bad;

    /// Most bytes one upload may have.
    const MAX_BYTES: u64 = 4 << 30;

    /// A file name that is safe on every file system and never a path:
    /// letters, digits, `.`, `-`, `_`; the rest become `_`.
    fn safe_name(name: &str) -> Option<String> {
        let base = name.rsplit(['/', '\\']).next().unwrap_or("");
        let cleaned: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .take(100)
            .collect();
        let cleaned = cleaned.trim_start_matches('.').to_string();
        (!cleaned.is_empty()).then_some(cleaned)
    }

    pub async fn store(
        cfg: &Loaded,
        name: &str,
        body: axum::body::Body,
    ) -> anyhow::Result<(String, u64)> {
        let dir = match (&cfg.media_dir, &cfg.posts_dir) {
            (Some(m), _) => m.clone(),
            (None, Some(p)) => p.join("media"),
            (None, None) => {
                return Err(bad!(
                    "there is nowhere to keep uploads: set paths.posts (or paths.media) in the config"
                ));
            }
        };
        let Some(clean) = safe_name(name) else {
            return Err(bad!("the upload has no file name (X-File-Name)"));
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        // A fresh name per upload: never over another file.
        let unique = format!(
            "{}-{clean}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let path = dir.join(&unique);
        let part = dir.join(format!(".{unique}.part"));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .await
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", part.display()))?;
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        let outcome: anyhow::Result<()> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| anyhow::anyhow!("the upload broke off: {e}"))?;
                size += chunk.len() as u64;
                if size > MAX_BYTES {
                    return Err(bad!("the upload is larger than {} GiB", MAX_BYTES >> 30));
                }
                file.write_all(&chunk).await?;
            }
            if size == 0 {
                return Err(bad!("the upload is empty"));
            }
            file.sync_all().await?;
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = outcome {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        tokio::fs::rename(&part, &path).await?;
        Ok((path.display().to_string(), size))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn names_are_never_paths() {
            assert_eq!(
                super::safe_name("../../etc/passwd").as_deref(),
                Some("passwd")
            );
            assert_eq!(super::safe_name("a b.png").as_deref(), Some("a_b.png"));
            assert_eq!(super::safe_name("..").as_deref(), None);
            assert_eq!(super::safe_name("").as_deref(), None);
            assert_eq!(super::safe_name("C:\\x\\y.jpg").as_deref(), Some("y.jpg"));
        }
    }
}
