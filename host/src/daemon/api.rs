//! The control API: JSON over HTTP (axum) on the daemon's loopback address.
//!
//! Owns: the routes (`/health`, `/platforms`, `/accounts`,
//! `/accounts/{id}/refresh`, `/publish`, `/posts`, `/posts/{id}`,
//! `/posts/{id}/retry[/{target}]`, `/problems`, `/metrics`, and
//! `/signin-links`, which mints the web UI's one-time links), bearer-token
//! authentication of every request, and mapping errors to status codes
//! (400 bad input, 401 no or wrong token, 404 unknown, 409 nothing to
//! retry, 503 shutting down, 500 anything else).
//!
//! Never: returns a secret (responses are built from types that carry
//! none), or accepts a request without the token — `/health` included.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::Daemon;
use crate::accounts::AccountStatus;
use crate::error::BadInput;
use crate::schedule::Need;
use crate::store::AccountId;

#[derive(Clone)]
struct Ctx {
    d: Arc<Daemon>,
    token: Arc<String>,
}

/// The control API's routes, behind the token check.
pub fn router(d: Arc<Daemon>, token: Arc<String>) -> Router {
    let ctx = Ctx { d, token };
    Router::new()
        .route("/health", get(health))
        .route("/platforms", get(platforms))
        .route("/platforms/{id}/approve", post(approve))
        .route("/connect", post(connect))
        .route("/connect/{id}", get(connect_state))
        .route("/accounts", get(accounts))
        .route("/accounts/{id}/refresh", post(refresh_one))
        .route("/accounts/{platform}/{account}/refresh", post(refresh_two))
        .route("/publish", post(publish))
        .route("/posts", get(posts))
        .route("/posts/{id}", get(post_show))
        .route("/posts/{id}/retry", post(retry_post))
        .route("/posts/{id}/retry/{target}", post(retry_target))
        .route(
            "/posts/{id}/retry/{platform}/{account}",
            post(retry_account),
        )
        .route("/problems", get(problems))
        .route("/signin-links", post(signin_link))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), auth))
        .with_state(ctx)
}

/// An error as the API returns it: `{"error": "…"}` with a status.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        let bad = e.chain().any(|c| {
            c.is::<BadInput>()
                || c.is::<crate::config::ConfigError>()
                || c.is::<crate::plugin::PluginError>()
        });
        let code = if bad {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError(code, format!("{e:#}"))
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn same(a: &[u8], b: &[u8]) -> bool {
    // Length leaks nothing useful (tokens are fixed-length); the bytes are
    // compared without an early exit.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer TOKEN` header. The scheme is
/// matched without regard to case (RFC 9110 §11.1: `bearer` and `BEARER`
/// are `Bearer`), and may be followed by more than one space.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn auth(State(ctx): State<Ctx>, headers: HeaderMap, req: Request, next: Next) -> Response {
    tracing::debug!(method = %req.method(), path = %req.uri().path(), "control API request");
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match given {
        Some(t) if same(t.as_bytes(), ctx.token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token; it is in the daemon's token file (daemon.token beside the config)".into(),
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

async fn health(State(ctx): State<Ctx>) -> Json<serde_json::Value> {
    let d = &ctx.d;
    Json(serde_json::json!({
        "status": if d.shutting_down() { "shutting-down" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_secs": d.uptime().as_secs(),
        "plugins": d.app.host.plugins().len(),
        "problems": d.problems().len(),
    }))
}

async fn platforms(State(ctx): State<Ctx>) -> ApiResult<Json<crate::plugin::manifest::Platforms>> {
    let d = ctx.d.clone();
    let out = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut p = crate::plugin::manifest::Platforms::of(&d.app.host, &d.app.cfg());
        crate::accounts::with_approvals(&d.app, &mut p)?;
        Ok(p)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))??;
    Ok(Json(out))
}

/// A connection started through `POST /connect`.
#[derive(Clone, Debug, Serialize)]
pub struct Connecting {
    pub platform: String,
    /// `waiting` (for the browser), `connected` or `failed`.
    pub state: &'static str,
    pub authorize_url: Option<String>,
    /// The accounts stored (one per identity picked).
    pub accounts: Vec<String>,
    pub error: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectRequest {
    platform: String,
    #[serde(default = "default_account")]
    account: String,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    /// Identities to connect as (pages, organizations), as `--as`.
    #[serde(default, rename = "as")]
    identities: Vec<String>,
    #[serde(default)]
    approve_scopes: bool,
}

fn default_account() -> String {
    "default".into()
}

/// `POST /connect`: start a browser connection (OAuth platforms) and
/// answer with the address to open; the platform sends the browser back
/// to this daemon's loopback listener. `GET /connect/{id}` says how it
/// went. Credentials that are pasted or typed (keys, passwords) are not
/// taken over the API: `outreach accounts add` / `connect` take them on a
/// terminal.
async fn connect(State(ctx): State<Ctx>, Json(req): Json<ConnectRequest>) -> ApiResult<Response> {
    use crate::contract::wit::types::AuthKind;
    let plugin = ctx.d.app.platform(&req.platform)?;
    if !matches!(
        plugin.manifest.auth.kind,
        AuthKind::Oauth2 | AuthKind::Oauth2Pkce | AuthKind::Oidc
    ) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "{} is connected with a credential you type or paste, which the API does not take; run `outreach connect {}` or `outreach accounts add {}` on the daemon's machine",
                plugin.manifest.name, req.platform, req.platform
            ),
        ));
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<String>();
    let url_tx = std::sync::Mutex::new(Some(url_tx));
    let opts = crate::accounts::ConnectOptions {
        platform: req.platform.clone(),
        account: req.account,
        settings: req.settings,
        open_browser: false,
        username: None,
        approve_scopes: req.approve_scopes,
        remember_password: false,
        identities: req.identities,
        paste: false,
        prompt: Box::new(|what: &str| {
            Err(crate::error::bad!(
                "the control API cannot ask for {what}; connect on a terminal"
            ))
        }),
        choose: Box::new(|list: &[crate::contract::wit::types::Identity]| {
            let names: Vec<String> = list
                .iter()
                .map(|i| format!("{} ({})", i.id, i.name))
                .collect();
            Err(crate::error::bad!(
                "this grant can act as several: {}; start again with \"as\": [ids]",
                names.join(", ")
            ))
        }),
        // The browser comes back to this daemon's own `/callback`.
        via: Some(crate::auth::Via {
            base: ctx.d.ui.sessions.base.clone(),
            callbacks: ctx.d.ui.callbacks.clone(),
            back: format!("{}/ui/", ctx.d.ui.sessions.base),
        }),
        announce: Box::new(move |url: &str| {
            if let Some(tx) = url_tx.lock().expect("connect channel").take() {
                let _ = tx.send(url.to_string());
            }
        }),
    };
    let entry = |state, url: Option<String>, accounts, error| Connecting {
        platform: req.platform.clone(),
        state,
        authorize_url: url,
        accounts,
        error,
    };
    ctx.d
        .connects
        .lock()
        .expect("connects")
        .insert(id.clone(), entry("waiting", None, vec![], None));
    let d = ctx.d.clone();
    let key = id.clone();
    let Some(job) = ctx.d.spawn(async move {
        // A browser that has not come back does not hold up a shutdown.
        let outcome = tokio::select! {
            outcome = crate::accounts::connect(&d.app, opts) => outcome,
            _ = d.shutdown.cancelled() => Err(anyhow::anyhow!(
                "the daemon stopped before the browser came back; start the connection again"
            )),
        };
        let mut all = d.connects.lock().expect("connects");
        if let Some(c) = all.get_mut(&key) {
            match outcome {
                Ok(records) => {
                    c.state = "connected";
                    c.accounts = records.iter().map(|r| r.id.to_string()).collect();
                    // The scheduler learns of them (and plans their refresh).
                    for r in &records {
                        let _ = d.accounts_changed.send(r.id.clone());
                    }
                }
                Err(e) => {
                    c.state = "failed";
                    c.error = Some(format!("{e:#}"));
                }
            }
        }
    }) else {
        return Err(shutting_down());
    };
    // The address, or why the flow stopped before there was one.
    match url_rx.await {
        Ok(url) => {
            if let Some(c) = ctx.d.connects.lock().expect("connects").get_mut(&id) {
                c.authorize_url = Some(url.clone());
            }
            Ok((
                StatusCode::ACCEPTED,
                Json(
                    serde_json::json!({ "connect": id, "authorize_url": url, "state": "waiting" }),
                ),
            )
                .into_response())
        }
        Err(_) => {
            let _ = job.await;
            let c = ctx.d.connects.lock().expect("connects").get(&id).cloned();
            let why = c
                .and_then(|c| c.error)
                .unwrap_or_else(|| "the connection stopped before it began".into());
            Err(ApiError(StatusCode::BAD_REQUEST, why))
        }
    }
}

/// `GET /connect/{id}`: where a connection started by `POST /connect` stands.
async fn connect_state(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Json<Connecting>> {
    ctx.d
        .connects
        .lock()
        .expect("connects")
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no connection `{id}`")))
}

/// `POST /platforms/{id}/approve`: what `outreach plugins approve ID` does.
async fn approve(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Json<crate::accounts::Approved>> {
    if ctx.d.app.host.get(&id).is_err() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no plugin with id `{id}` is loaded"),
        ));
    }
    Ok(Json(
        crate::accounts::approve_plugin(&ctx.d.app, &id).await?,
    ))
}

async fn accounts(State(ctx): State<Ctx>) -> ApiResult<Json<Vec<AccountStatus>>> {
    let d = ctx.d.clone();
    let list = tokio::task::spawn_blocking(move || crate::accounts::statuses(&d.app))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))??;
    Ok(Json(list))
}

async fn refresh_one(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Response> {
    refresh(ctx, &id).await
}

async fn refresh_two(
    State(ctx): State<Ctx>,
    Path((platform, account)): Path<(String, String)>,
) -> ApiResult<Response> {
    refresh(ctx, &format!("{platform}/{account}")).await
}

async fn refresh(ctx: Ctx, id: &str) -> ApiResult<Response> {
    let id = AccountId::parse(id).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let d = ctx.d.clone();
    let store = d.app.store()?;
    if !store.contains(&id).map_err(anyhow::Error::from)? {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("there is no account {id}"),
        ));
    }
    let r = d.refresher.clone();
    let id2 = id.clone();
    let Some(job) = d.spawn(async move { r.ensure(&id2, Need::Now).await }) else {
        return Err(shutting_down());
    };
    let outcome = job.await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let rec = store.load(&id).map_err(anyhow::Error::from)?;
    let health = crate::schedule::health(&d.app, &rec);
    let (code, error) = match outcome {
        Ok(_) => (StatusCode::OK, None),
        Err(e) => (StatusCode::BAD_GATEWAY, Some(e.to_string())),
    };
    Ok((
        code,
        Json(serde_json::json!({ "account": id.to_string(), "refreshed": error.is_none(), "error": error, "health": health })),
    )
        .into_response())
}

fn shutting_down() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the daemon is shutting down; nothing was done, send it again after the restart".into(),
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PublishQuery {
    dry_run: bool,
    check: bool,
    new: bool,
}

async fn publish(
    State(ctx): State<Ctx>,
    Query(q): Query<PublishQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let post: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body is not a JSON post: {e}"),
        )
    })?;
    if !post.is_object() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object with the fields of a post file (text, to, …)".into(),
        ));
    }
    let d = ctx.d.clone();
    let base = d.app.cfg().posts_dir.clone();
    let opts = crate::publish::Options {
        dry_run: q.dry_run,
        new: q.new,
    };
    let app = d.app.clone();
    let d2 = d.clone();
    let check = q.check;
    let Some(job) = d.spawn(async move {
        let r = if check {
            crate::publish::check_and_measure_json(&app, &post, base.as_deref())
                .await
                .map(|(r, measures)| {
                    r.map(|rows| serde_json::json!({ "results": rows, "measures": measures }))
                        .map_err(|problems| (problems, measures))
                })
        } else {
            crate::publish::publish_json(app.services(), &post, base.as_deref(), opts)
                .await
                .map(|r| {
                    r.map(|rep| serde_json::to_value(rep).unwrap_or_default())
                        .map_err(|problems| (problems, Vec::new()))
                })
        };
        d2.wake_due();
        r
    }) else {
        return Err(shutting_down());
    };
    match job.await.map_err(|e| anyhow::anyhow!("{e}"))?? {
        Ok(report) => {
            let failed = report["results"]
                .as_array()
                .is_some_and(|r| r.iter().any(|t| t["ok"] == false));
            let code = if failed {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::OK
            };
            Ok((code, Json(report)).into_response())
        }
        Err((problems, measures)) => {
            let mut body =
                serde_json::json!({ "error": "the post does not validate", "problems": problems });
            if check {
                body["measures"] = serde_json::to_value(measures).unwrap_or_default();
            }
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response())
        }
    }
}

/// Every post with its deliveries, newest first (as `outreach posts --json`).
async fn posts(State(ctx): State<Ctx>) -> ApiResult<Json<serde_json::Value>> {
    let d = ctx.d.clone();
    let v = tokio::task::spawn_blocking(move || crate::publish::journal::list(&*d.app.outbox()?))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))??;
    Ok(Json(v))
}

async fn post_show(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Response> {
    let outbox = ctx.d.app.outbox()?;
    let outbox = outbox.lock().expect("outbox");
    let Some(post) = outbox.post(&id)? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("there is no post `{id}`"),
        ));
    };
    // Uploads running now, by target: bytes sent of the media's total.
    let uploads: serde_json::Map<String, serde_json::Value> = ctx
        .d
        .app
        .services()
        .upload_progress(&id)
        .into_iter()
        .map(|(target, (sent, total))| {
            (
                target,
                serde_json::json!({ "sent_bytes": sent, "total_bytes": total }),
            )
        })
        .collect();
    let v = serde_json::json!({
        "post": post,
        "deliveries": outbox.deliveries(&id)?,
        "attempts": outbox.attempts(&id)?,
        "uploads": uploads,
    });
    Ok(Json(v).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RetryQuery {
    /// Also re-send deliveries whose outcome is unknown (the platform may
    /// then show the post twice).
    force: bool,
}

async fn retry_post(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<RetryQuery>,
) -> ApiResult<Response> {
    retry(ctx, id, None, q.force).await
}

async fn retry_target(
    State(ctx): State<Ctx>,
    Path((id, target)): Path<(String, String)>,
    Query(q): Query<RetryQuery>,
) -> ApiResult<Response> {
    retry(ctx, id, Some(target), q.force).await
}

async fn retry_account(
    State(ctx): State<Ctx>,
    Path((id, platform, account)): Path<(String, String, String)>,
    Query(q): Query<RetryQuery>,
) -> ApiResult<Response> {
    retry(ctx, id, Some(format!("{platform}/{account}")), q.force).await
}

/// `outreach posts retry`: re-open a post's failed, rejected and cancelled
/// deliveries (unknown ones with `force`) and send them now, or queue them
/// for the post's schedule. 200 with the results, 502 if a platform failed
/// again, 404 for an unknown post or target, 409 when there is nothing to
/// retry (published, queued, or unknown without `force`), 422 if the post
/// no longer validates.
async fn retry(ctx: Ctx, id: String, target: Option<String>, force: bool) -> ApiResult<Response> {
    let d = ctx.d.clone();
    let app = d.app.clone();
    let d2 = d.clone();
    let Some(job) = d.spawn(async move {
        let r = crate::publish::retry(app.services(), &id, target.as_deref(), force).await;
        d2.wake_due();
        r
    }) else {
        return Err(shutting_down());
    };
    match job.await.map_err(|e| anyhow::anyhow!("{e}"))? {
        Ok(Ok(done)) => {
            let code = if done.report.results.iter().all(|t| t.ok) {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            };
            Ok((code, Json(done)).into_response())
        }
        Ok(Err(problems)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                serde_json::json!({ "error": "the post does not validate", "problems": problems }),
            ),
        )
            .into_response()),
        Err(e) => match e.downcast_ref::<crate::publish::RetryRefused>() {
            Some(crate::publish::RetryRefused::NotFound(m)) => {
                Err(ApiError(StatusCode::NOT_FOUND, m.clone()))
            }
            Some(crate::publish::RetryRefused::Nothing(m)) => {
                Err(ApiError(StatusCode::CONFLICT, m.clone()))
            }
            None => Err(e.into()),
        },
    }
}

async fn problems(State(ctx): State<Ctx>) -> Json<Vec<super::Problem>> {
    Json(ctx.d.problems())
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// `POST /signin-links`: a one-time link that signs a browser in to the
/// web UI (what `outreach ui` prints). It works once, for two minutes.
async fn signin_link(State(ctx): State<Ctx>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "url": ctx.d.ui.sessions.link(),
        "expires_in_secs": ctx.d.ui.sessions.link_ttl.as_secs(),
    }))
}
