//! Getting and renewing tokens: OAuth connect flows, token exchanges,
//! refresh in every style a manifest can declare, revocation.
//!
//! Owns: the OAuth client credentials (from config or the environment, never
//! the command line), the authorization-code flow with PKCE through a
//! loopback redirect listener, dynamic client registration (Mastodon),
//! logins for app passwords, and every token-endpoint request — parsed here,
//! per the manifest's token shape, so tokens never enter a plugin.
//!
//! Never: stores anything (callers do, through [`crate::store`]), prints a
//! token, or lets a refresh response without a refresh token erase the
//! stored one.
//!
//! The `oauth2` crate builds the authorization URL, the PKCE pair and the
//! CSRF state. Token-endpoint requests are hand-rolled on reqwest because
//! their shapes are declared by plugins at run time (field names,
//! `expires_at` vs `expires_in`, HTTP 200 carrying `{"error": …}`, GET
//! exchanges), which `oauth2`'s static response types cannot express. The
//! loopback listener is hand-rolled too: it answers exactly one GET on
//! 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::accounts::{App, bad};
use crate::config::Loaded;
use crate::escrow::{Escrow, Exchange};
use crate::http::{Credentials, fill_exchange_template};
use crate::plugin::wit::types::{
    AuthKind, ClientAuth, CustomExchange, Endpoint, ExchangeBody, ExpiryFormat, HttpMethod,
    Manifest, Pair, RefreshStyle, TokenShape,
};
use crate::secret::{Secret, scrub};
use crate::store::{AccountId, EscrowSlot, Health, Profile, Record};

/// An OAuth client: the app registered with the platform.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Client {
    pub id: String,
    pub secret: Option<Secret>,
}

/// Fresh tokens from a token endpoint.
#[derive(Debug)]
pub struct Tokens {
    pub access: Secret,
    pub refresh: Option<Secret>,
    pub expires_in: Option<u64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scope: Option<String>,
}

/// Why a token request failed, classified for the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The grant is gone: the user must reconnect.
    #[error("the platform refused the grant ({0}); reconnect the account")]
    InvalidGrant(String),
    /// Network trouble, 5xx or 429: try again later.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// Anything else: configuration or a request the platform rejects.
    #[error("{0}")]
    Rejected(String),
}

/// The client credentials for `platform` from config and the environment.
pub fn client_for(cfg: &Loaded, platform: &str) -> Result<Client, String> {
    let p = cfg.platform(platform);
    let id = match (&p.client_id, &p.client_id_env) {
        (Some(id), _) => id.clone(),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            format!(
                "the environment variable {var} (platforms.{platform}.client_id_env) is not set"
            )
        })?,
        (None, None) => {
            return Err(format!(
                "no OAuth client for {platform}: set platforms.{platform}.client_id (and client_secret_env) in the config"
            ));
        }
    };
    let secret = match &p.client_secret_env {
        Some(var) => Some(Secret::new(std::env::var(var).map_err(|_| {
            format!(
                "the environment variable {var} (platforms.{platform}.client_secret_env) is not set"
            )
        })?)),
        None => None,
    };
    Ok(Client { id, secret })
}

/// Read a token response per `shape`. `lifetime` is the manifest's default
/// when the response says nothing about expiry.
pub fn parse_tokens(
    status: u16,
    body: &[u8],
    shape: &TokenShape,
    lifetime: u64,
    secrets: &[&Secret],
) -> Result<Tokens, TokenError> {
    let text = String::from_utf8_lossy(body);
    let shown = || {
        let t = scrub(&text, secrets);
        let t: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
        if t.len() > 200 {
            format!("{}…", &t[..t.floor_char_boundary(200)])
        } else {
            t
        }
    };
    if status == 429 || status >= 500 {
        return Err(TokenError::Transient(format!("HTTP {status}: {}", shown())));
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        if (200..300).contains(&status) {
            TokenError::Transient(format!(
                "HTTP {status} with a body that is not JSON: {}",
                shown()
            ))
        } else {
            TokenError::Rejected(format!("HTTP {status}: {}", shown()))
        }
    })?;
    let field = |name: &str| -> Option<&serde_json::Value> {
        if name.is_empty() {
            None
        } else {
            v.get(name).filter(|x| !x.is_null())
        }
    };
    // Some platforms (Reddit) answer 200 with an error body.
    if let Some(err) = field(&shape.error) {
        // `{"error": "code", "error_description"|"message": …}` (OAuth,
        // atproto) or `{"error": {"message", "type", "code"}}` (Meta).
        let code = match err {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o
                .get("type")
                .or_else(|| o.get("code"))
                .map(|c| {
                    c.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| c.to_string())
                })
                .unwrap_or_default(),
            other => other.to_string(),
        };
        let desc = v
            .get("error_description")
            .or_else(|| v.get("message"))
            .or_else(|| err.get("message"))
            .and_then(|d| d.as_str())
            .unwrap_or("");
        let what = if desc.is_empty() {
            code.clone()
        } else {
            format!("{code}: {desc}")
        };
        let what = scrub(&what, secrets);
        // OAuth's `invalid_grant`/`invalid_token`, and atproto's
        // `InvalidToken`/`ExpiredToken` (a refresh JWT that is spent).
        let normal: String = code
            .to_ascii_lowercase()
            .chars()
            .filter(|c| *c != '_')
            .collect();
        let token_gone = matches!(
            normal.as_str(),
            "invalidgrant" | "invalidtoken" | "expiredtoken"
        ) || (code == "invalid_request"
            && desc.to_ascii_lowercase().contains("token"));
        return Err(if token_gone {
            TokenError::InvalidGrant(what)
        } else if matches!(code.as_str(), "temporarily_unavailable" | "server_error") {
            TokenError::Transient(what)
        } else {
            TokenError::Rejected(what)
        });
    }
    if !(200..300).contains(&status) {
        return Err(if status == 401 {
            TokenError::InvalidGrant(format!("HTTP 401: {}", shown()))
        } else {
            TokenError::Rejected(format!("HTTP {status}: {}", shown()))
        });
    }
    let access = field(&shape.access_token)
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            TokenError::Rejected(format!(
                "the token response has no `{}` field",
                shape.access_token
            ))
        })?;
    let refresh = field(&shape.refresh_token)
        .and_then(|r| r.as_str())
        .filter(|r| !r.is_empty())
        .map(Secret::new);
    let number = |x: &serde_json::Value| x.as_u64().or_else(|| x.as_str()?.trim().parse().ok());
    let now = Utc::now();
    let (expires_in, expires_at) =
        match (shape.expiry_format, field(&shape.expiry).and_then(number)) {
            (ExpiryFormat::Never, _) => (None, None),
            (ExpiryFormat::SecondsFromNow, Some(s)) => {
                (Some(s), Some(now + chrono::Duration::seconds(s as i64)))
            }
            (ExpiryFormat::UnixSeconds, Some(at)) => {
                let at = DateTime::from_timestamp(at as i64, 0).unwrap_or(now);
                (Some((at - now).num_seconds().max(0) as u64), Some(at))
            }
            (ExpiryFormat::UnixMillis, Some(at)) => {
                let at = DateTime::from_timestamp_millis(at as i64).unwrap_or(now);
                (Some((at - now).num_seconds().max(0) as u64), Some(at))
            }
            // No expiry in the response: assume the manifest's lifetime (zero
            // means the platform's tokens do not expire).
            (_, None) if lifetime > 0 => (
                Some(lifetime),
                Some(now + chrono::Duration::seconds(lifetime as i64)),
            ),
            (_, None) => (None, None),
        };
    Ok(Tokens {
        access: Secret::new(access),
        refresh,
        expires_in,
        expires_at,
        scope: field(&shape.scope)
            .and_then(|s| s.as_str())
            .map(str::to_string),
    })
}

/// Performs token-endpoint requests. Cheap to clone.
#[derive(Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    escrow: Arc<Escrow>,
}

impl TokenClient {
    /// Shares the broker's connection pool (no redirects, the configured
    /// user agent and timeouts); building a client per use costs more than
    /// the requests it sends.
    pub fn new(app: &App) -> anyhow::Result<Self> {
        Ok(TokenClient {
            http: app.host.broker.client(),
            escrow: app.escrow.clone(),
        })
    }

    /// Send one token request and classify what comes back. With `slot`,
    /// the request goes through the escrow helper (see [`crate::escrow`]).
    #[allow(clippy::too_many_arguments)]
    async fn request(
        &self,
        method: HttpMethod,
        url: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Option<(&str, String)>,
        basic: Option<&Client>,
        shape: &TokenShape,
        lifetime: u64,
        secrets: &[&Secret],
        slot: Option<&EscrowSlot>,
    ) -> Result<Tokens, TokenError> {
        let mut u = url::Url::parse(url)
            .map_err(|e| TokenError::Rejected(format!("invalid token URL {url}: {e}")))?;
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        let method = match method {
            HttpMethod::Get => "GET",
            HttpMethod::Put => "PUT",
            _ => "POST",
        };
        let mut all = vec![("accept".to_string(), "application/json".to_string())];
        all.extend(headers.iter().cloned());
        if let Some(client) = basic {
            let raw = format!(
                "{}:{}",
                form_escape(&client.id),
                form_escape(client.secret.as_ref().map(Secret::expose).unwrap_or(""))
            );
            let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
            all.push(("authorization".into(), format!("Basic {b64}")));
        }
        let body = body.map(|(content_type, b)| {
            all.push(("content-type".into(), content_type.to_string()));
            base64::engine::general_purpose::STANDARD.encode(b)
        });
        let exchange = Exchange {
            method: method.into(),
            url: u.to_string(),
            headers: all,
            body,
        };
        let escrowed = match slot {
            Some(slot) => self.escrow.send(slot, &exchange).await,
            None => None,
        };
        let (status, bytes) = match escrowed {
            Some(r) => r,
            None => exchange.send(&self.http).await,
        }
        .map_err(|e| TokenError::Transient(scrub(&e, secrets)))?;
        parse_tokens(status, &bytes, shape, lifetime, secrets)
    }

    /// A form POST to a standard OAuth token endpoint with the manifest's
    /// client authentication.
    async fn token_form(
        &self,
        url: &str,
        mut form: Vec<(String, String)>,
        client: &Client,
        m: &Manifest,
        secrets: &[&Secret],
        slot: Option<&EscrowSlot>,
    ) -> Result<Tokens, TokenError> {
        let basic = match m.auth.client_auth {
            ClientAuth::Basic => Some(client),
            ClientAuth::Body => {
                form.push(("client_id".into(), client.id.clone()));
                if let Some(s) = &client.secret {
                    form.push(("client_secret".into(), s.expose().to_string()));
                }
                None
            }
            ClientAuth::None => {
                form.push(("client_id".into(), client.id.clone()));
                None
            }
        };
        let creds = client_credentials(client);
        for p in &m.auth.token_params {
            let v = fill_exchange_template(&p.value, Some(&creds), false)
                .map_err(TokenError::Rejected)?;
            form.push((p.name.clone(), v));
        }
        let body = serde_urlencoded(&form);
        self.request(
            HttpMethod::Post,
            url,
            &[],
            &[],
            Some(("application/x-www-form-urlencoded", body)),
            basic,
            &m.auth.token_response,
            m.auth.access_token_lifetime,
            secrets,
            slot,
        )
        .await
    }

    /// Trade an authorization code for tokens.
    pub async fn exchange_code(
        &self,
        m: &Manifest,
        endpoints: &[Endpoint],
        client: &Client,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Result<Tokens, TokenError> {
        let url = endpoint(endpoints, "token").map_err(TokenError::Rejected)?;
        let mut form = vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.to_string()),
            ("redirect_uri".to_string(), redirect_uri.to_string()),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier".into(), v.into()));
        }
        let secret = Secret::new(code);
        self.token_form(&url, form, client, m, &[&secret], None)
            .await
    }

    /// Renew `record`'s tokens as the manifest's refresh style says; through
    /// the escrow helper when `slot` is given (callers give one when
    /// [`spends_refresh_token`]).
    pub async fn refresh(
        &self,
        m: &Manifest,
        endpoints: &[Endpoint],
        client: Option<&Client>,
        record: &Record,
        slot: Option<&EscrowSlot>,
    ) -> Result<Tokens, TokenError> {
        let mut secrets = record.secrets();
        if let Some(s) = client.and_then(|c| c.secret.as_ref()) {
            secrets.push(s);
        }
        match &m.auth.refresh {
            RefreshStyle::None => Err(TokenError::Rejected(format!(
                "{} tokens cannot be refreshed; reconnect with `outreach connect {}` before they expire",
                m.name, m.id
            ))),
            RefreshStyle::Standard | RefreshStyle::Rotating => {
                let refresh = record.refresh_token.as_ref().ok_or_else(|| {
                    TokenError::InvalidGrant("the account has no refresh token".into())
                })?;
                let client = client.ok_or_else(|| {
                    TokenError::Rejected(format!("no OAuth client configured for {}", m.id))
                })?;
                let url = endpoint(endpoints, "refresh")
                    .or_else(|_| endpoint(endpoints, "token"))
                    .map_err(TokenError::Rejected)?;
                let form = vec![
                    ("grant_type".to_string(), "refresh_token".to_string()),
                    ("refresh_token".to_string(), refresh.expose().to_string()),
                ];
                self.token_form(&url, form, client, m, &secrets, slot).await
            }
            RefreshStyle::Custom(x) => {
                let mut creds =
                    Credentials::new().with("access_token", record.access_token.clone());
                if let Some(r) = &record.refresh_token {
                    creds = creds.with("refresh_token", r.clone());
                }
                if let Some(c) = client {
                    creds = creds.with("client_id", Secret::new(c.id.clone()));
                    if let Some(s) = &c.secret {
                        creds = creds.with("client_secret", s.clone());
                    }
                }
                self.exchange(
                    x,
                    endpoints,
                    &creds,
                    m.auth.access_token_lifetime,
                    &secrets,
                    slot,
                )
                .await
            }
        }
    }

    /// A declared exchange (custom refresh or login); through the escrow
    /// helper with `slot`.
    pub async fn exchange(
        &self,
        x: &CustomExchange,
        endpoints: &[Endpoint],
        creds: &Credentials,
        lifetime: u64,
        secrets: &[&Secret],
        slot: Option<&EscrowSlot>,
    ) -> Result<Tokens, TokenError> {
        let url = if x.url.contains("://") {
            x.url.clone()
        } else {
            endpoint(endpoints, &x.url).map_err(TokenError::Rejected)?
        };
        let sub = |p: &[Pair]| -> Result<Vec<(String, String)>, TokenError> {
            p.iter()
                .map(|p| {
                    Ok((
                        p.name.clone(),
                        fill_exchange_template(&p.value, Some(creds), false)
                            .map_err(TokenError::Rejected)?,
                    ))
                })
                .collect()
        };
        let query = sub(&x.query)?;
        let headers = sub(&x.headers)?;
        let body = match &x.body {
            ExchangeBody::None => None,
            ExchangeBody::Form(f) => Some((
                "application/x-www-form-urlencoded",
                serde_urlencoded(&sub(f)?),
            )),
            ExchangeBody::Json(t) => Some((
                "application/json",
                fill_exchange_template(t, Some(creds), true).map_err(TokenError::Rejected)?,
            )),
        };
        self.request(
            x.method,
            &url,
            &query,
            &headers,
            body,
            None,
            &x.response,
            lifetime,
            secrets,
            slot,
        )
        .await
    }

    /// Revoke `token` at the platform's revoke endpoint (RFC 7009 form).
    pub async fn revoke(
        &self,
        m: &Manifest,
        url: &str,
        client: Option<&Client>,
        token: &Secret,
    ) -> Result<(), String> {
        let mut form = vec![("token".to_string(), token.expose().to_string())];
        let mut rb = self.http.post(url);
        match (m.auth.client_auth, client) {
            (ClientAuth::Basic, Some(c)) => {
                let raw = format!(
                    "{}:{}",
                    form_escape(&c.id),
                    form_escape(c.secret.as_ref().map(Secret::expose).unwrap_or(""))
                );
                rb = rb.header(
                    "authorization",
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(raw)
                    ),
                );
            }
            (_, Some(c)) => {
                form.push(("client_id".into(), c.id.clone()));
                if let Some(s) = &c.secret {
                    form.push(("client_secret".into(), s.expose().to_string()));
                }
            }
            (_, None) => {}
        }
        let resp = rb
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded(&form))
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {}", scrub(&e.to_string(), &[token])))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            Err(format!("HTTP {status}: {}", scrub(&text, &[token]).trim()))
        }
    }

    /// Register an OAuth client with one instance (Mastodon `POST /api/v1/apps`).
    pub async fn register(
        &self,
        url: &str,
        redirect_uri: &str,
        scopes: &str,
        user_agent: &str,
    ) -> Result<Client, String> {
        let form = vec![
            ("client_name".to_string(), "outreach".to_string()),
            ("redirect_uris".to_string(), redirect_uri.to_string()),
            ("scopes".to_string(), scopes.to_string()),
            (
                "website".to_string(),
                "https://github.com/outreach-social/outreach".to_string(),
            ),
        ];
        let resp = self
            .http
            .post(url)
            .header("user-agent", user_agent)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded(&form))
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("registering at {url}: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            format!("registering at {url}: HTTP {status} with a body that is not JSON ({e})")
        })?;
        let id = v["client_id"]
            .as_str()
            .filter(|_| status.is_success())
            .ok_or_else(|| {
                format!(
                    "registering at {url} failed: HTTP {status}: {}",
                    v.get("error").unwrap_or(&v)
                )
            })?;
        Ok(Client {
            id: id.to_string(),
            secret: v["client_secret"].as_str().map(Secret::new),
        })
    }
}

fn client_credentials(c: &Client) -> Credentials {
    let mut creds = Credentials::new().with("client_id", Secret::new(c.id.clone()));
    if let Some(s) = &c.secret {
        creds = creds.with("client_secret", s.clone());
    }
    creds
}

/// `application/x-www-form-urlencoded` of name/value pairs.
fn serde_urlencoded(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// RFC 6749 §2.3.1: client id and secret are form-encoded before Basic.
fn form_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The URL of endpoint `name`.
pub fn endpoint(endpoints: &[Endpoint], name: &str) -> Result<String, String> {
    endpoints
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.url.clone())
        .ok_or_else(|| format!("the plugin declares no `{name}` endpoint"))
}

/// Whether `m`'s refresh may spend the refresh token it sends (rotating
/// or a declared exchange): such refreshes go through [`crate::escrow`].
pub fn spends_refresh_token(m: &Manifest) -> bool {
    matches!(
        m.auth.refresh,
        RefreshStyle::Rotating | RefreshStyle::Custom(_)
    )
}

/// Apply fresh tokens to a record. A response without a refresh token
/// keeps the stored one.
pub fn apply(record: &mut Record, t: Tokens) {
    record.access_token = t.access;
    if let Some(r) = t.refresh {
        record.refresh_token = Some(r);
    }
    record.expires_in = t.expires_in;
    record.expires_at = t.expires_at;
    if let Some(s) = t.scope {
        record.scope = s;
    }
    record.last_refreshed = Some(Utc::now());
    record.health = Health::default();
}

/// What the loopback listener received.
struct Callback {
    code: String,
    state: String,
}

/// Wait for the browser to come back to `listener` with a code, answering
/// the one request it makes. Other paths (favicon) get a 404 and the wait
/// goes on.
async fn await_callback(listener: tokio::net::TcpListener) -> Result<Callback, String> {
    loop {
        let (mut sock, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 8192];
        let mut n = 0;
        while n < buf.len() {
            let read = sock.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
            if read == 0 {
                break;
            }
            n += read;
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buf[..n]);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("");
        let url =
            url::Url::parse(&format!("http://127.0.0.1{target}")).map_err(|e| e.to_string())?;
        if url.path() != "/callback" {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let (status, page, result) = match (q.get("code"), q.get("state"), q.get("error")) {
            (_, _, Some(err)) => (
                "400 Bad Request",
                format!("The platform said: {err}. You can close this window."),
                Err(format!(
                    "the platform refused the authorization: {err}{}",
                    q.get("error_description")
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )),
            ),
            (Some(code), Some(state), None) => (
                "200 OK",
                "outreach is connected. You can close this window.".to_string(),
                // Instagram and Threads append `#_` to the code.
                Ok(Callback {
                    code: code.trim_end_matches("#_").to_string(),
                    state: state.clone(),
                }),
            ),
            _ => (
                "400 Bad Request",
                "This is not an authorization response.".to_string(),
                Err("the redirect carried neither a code nor an error".to_string()),
            ),
        };
        let body = format!("<!doctype html><title>outreach</title><p>{page}</p>");
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.shutdown().await;
        return result;
    }
}

/// Options of `outreach connect`.
pub struct ConnectOptions {
    pub platform: String,
    pub account: String,
    pub settings: BTreeMap<String, String>,
    pub open_browser: bool,
    pub username: Option<String>,
}

/// Connect an account end to end: run the flow the manifest declares, ask
/// the platform who the account is, store the record.
pub async fn connect(app: &App, opts: ConnectOptions) -> anyhow::Result<Record> {
    let id = AccountId::new(&opts.platform, &opts.account)?;
    let plugin = app.platform(&opts.platform)?;
    let m = &plugin.manifest;
    let settings = app.check_settings(&plugin, opts.settings)?;
    let account_view = App::account_view_of(&id, &settings, &Profile::default());
    let overrides = app.cfg().platform(&m.id).endpoints;
    let endpoints =
        crate::plugin::manifest::effective_endpoints(m, &overrides, Some(&account_view));
    let tokens_client = TokenClient::new(app)?;

    let tokens = match m.auth.kind {
        AuthKind::Oauth2 | AuthKind::Oauth2Pkce | AuthKind::Oidc => {
            browser_flow(app, m, &endpoints, &tokens_client, &id, opts.open_browser).await?
        }
        AuthKind::AppPassword => {
            let login = m.auth.login.as_ref().ok_or_else(|| {
                bad!(
                    "the {} plugin declares app-password auth but no login exchange",
                    m.id
                )
            })?;
            let username = match opts.username {
                Some(u) => u,
                None => return Err(bad!("pass --username for {}", m.id)),
            };
            let password = crate::cli::read_secret(&format!("the {} app password", m.name))?;
            let creds = Credentials::new()
                .with("username", Secret::new(username))
                .with("password", password.clone());
            tokens_client
                .exchange(
                    login,
                    &endpoints,
                    &creds,
                    m.auth.access_token_lifetime,
                    &[&password],
                    None,
                )
                .await
                .map_err(|e| anyhow::anyhow!("logging in to {} failed: {e}", m.name))?
        }
        AuthKind::SessionLogin => {
            return Err(bad!(
                "{} uses a session login, which outreach does not automate yet",
                m.name
            ));
        }
        AuthKind::ApiKey | AuthKind::BotToken | AuthKind::WebhookUrl => {
            let value = crate::cli::read_secret(&format!("the {} credential", m.name))?;
            return app
                .add_account(&opts.platform, &opts.account, value, settings)
                .await;
        }
    };
    app.store_verified(&plugin, id, tokens, settings).await
}

/// The authorization-code flow through a loopback redirect listener.
async fn browser_flow(
    app: &App,
    m: &Manifest,
    endpoints: &[Endpoint],
    tokens: &TokenClient,
    id: &AccountId,
    open_browser: bool,
) -> anyhow::Result<Tokens> {
    let auth_cfg = &app.cfg().config.auth;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", auth_cfg.redirect_port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{} for the redirect",
                auth_cfg.redirect_port
            )
        })?;
    let port = listener.local_addr()?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let scopes = m.auth.scopes.join(&m.auth.scope_separator);

    let client = if m.auth.dynamic_registration {
        registered_client(app, m, endpoints, tokens, &redirect_uri, &scopes).await?
    } else {
        client_for(&app.cfg(), &m.id).map_err(|e| bad!("{e}"))?
    };
    let authorize = endpoint(endpoints, "authorize").map_err(|e| bad!("{e}"))?;
    let oauth = oauth2::basic::BasicClient::new(oauth2::ClientId::new(client.id.clone()))
        .set_auth_uri(
            oauth2::AuthUrl::new(authorize.clone())
                .map_err(|e| bad!("authorize endpoint {authorize}: {e}"))?,
        )
        .set_redirect_uri(oauth2::RedirectUrl::new(redirect_uri.clone())?);
    let mut req = oauth.authorize_url(oauth2::CsrfToken::new_random);
    if !scopes.is_empty() {
        req = req.add_scope(oauth2::Scope::new(scopes.clone()));
    }
    for p in &m.auth.authorize_params {
        req = req.add_extra_param(p.name.clone(), p.value.clone());
    }
    let verifier = if matches!(m.auth.kind, AuthKind::Oauth2Pkce) {
        let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
        req = req.set_pkce_challenge(challenge);
        Some(verifier)
    } else {
        None
    };
    let (url, state) = req.url();
    eprintln!("To connect {id}, open this address and approve access:\n\n  {url}\n");
    if open_browser {
        open_in_browser(url.as_str());
    }
    let wait = Duration::from_secs(auth_cfg.connect_timeout_secs);
    let cb = tokio::time::timeout(wait, await_callback(listener))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer from the browser within {} s; run `outreach connect` again",
                wait.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("connecting {id}: {e}"))?;
    if cb.state != *state.secret() {
        anyhow::bail!(
            "connecting {id}: the redirect's state does not match this request (a stale or forged redirect); nothing was stored"
        );
    }
    tokens
        .exchange_code(
            m,
            endpoints,
            &client,
            &cb.code,
            &redirect_uri,
            verifier.as_ref().map(|v| v.secret().as_str()),
        )
        .await
        .map_err(|e| anyhow::anyhow!("exchanging the authorization code for {id} failed: {e}"))
}

/// A client registered with this instance, from the store or registered now.
async fn registered_client(
    app: &App,
    m: &Manifest,
    endpoints: &[Endpoint],
    tokens: &TokenClient,
    redirect_uri: &str,
    scopes: &str,
) -> anyhow::Result<Client> {
    use sha2::Digest;
    let apps = endpoint(endpoints, "apps").map_err(|e| bad!("{e}"))?;
    let key = hex::encode(&sha2::Sha256::digest(format!("{apps}\n{redirect_uri}\n{scopes}"))[..12]);
    let name = format!("{}-client-{key}", m.id);
    let store = app.store()?;
    if let Some(bytes) = store.load_aux(&name)?
        && let Ok(c) = serde_json::from_slice::<Client>(&bytes)
    {
        return Ok(c);
    }
    let client = tokens
        .register(
            &apps,
            redirect_uri,
            scopes,
            &app.cfg().config.http.user_agent,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.save_aux(&name, &serde_json::to_vec(&client)?)?;
    Ok(client)
}

fn open_in_browser(url: &str) {
    let graphical =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if graphical {
        Some("xdg-open")
    } else {
        None
    };
    if let Some(cmd) = opener {
        let _ = std::process::Command::new(cmd)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// Build a record from fresh tokens (the caller verifies and stores it).
pub fn new_record(id: AccountId, t: Tokens, settings: BTreeMap<String, String>) -> Record {
    let now = Utc::now();
    let mut r = Record {
        version: Record::VERSION,
        id,
        access_token: Secret::new(""),
        refresh_token: None,
        expires_in: None,
        expires_at: None,
        scope: String::new(),
        profile: Profile::default(),
        created_at: now,
        last_refreshed: None,
        settings,
        health: Health::default(),
    };
    apply(&mut r, t);
    r.last_refreshed = None;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> TokenShape {
        TokenShape {
            access_token: "access_token".into(),
            refresh_token: "refresh_token".into(),
            expiry: "expires_in".into(),
            expiry_format: ExpiryFormat::SecondsFromNow,
            scope: "scope".into(),
            error: "error".into(),
        }
    }

    #[test]
    fn standard_response() {
        let t = parse_tokens(
            200,
            br#"{"access_token":"a","refresh_token":"r","expires_in":7200,"scope":"s"}"#,
            &shape(),
            0,
            &[],
        )
        .unwrap();
        assert_eq!(t.access.expose(), "a");
        assert_eq!(t.refresh.unwrap().expose(), "r");
        assert_eq!(t.expires_in, Some(7200));
        assert_eq!(t.scope.as_deref(), Some("s"));
    }

    #[test]
    fn expires_at_and_missing_expiry() {
        let mut s = shape();
        s.expiry = "expires_at".into();
        s.expiry_format = ExpiryFormat::UnixSeconds;
        let at = Utc::now().timestamp() + 3600;
        let body = format!(r#"{{"access_token":"a","expires_at":{at}}}"#);
        let t = parse_tokens(200, body.as_bytes(), &s, 0, &[]).unwrap();
        assert_eq!(t.expires_at.unwrap().timestamp(), at);
        assert!((3590..=3600).contains(&t.expires_in.unwrap()));
        // No expiry in the answer: the manifest's lifetime applies…
        let t = parse_tokens(200, br#"{"access_token":"a"}"#, &shape(), 600, &[]).unwrap();
        assert_eq!(t.expires_in, Some(600));
        // …or none, for platforms whose tokens do not expire.
        let t = parse_tokens(200, br#"{"access_token":"a"}"#, &shape(), 0, &[]).unwrap();
        assert!(t.expires_at.is_none());
    }

    #[test]
    fn errors_are_classified() {
        let s = shape();
        // HTTP 200 carrying an error (Reddit).
        assert!(matches!(
            parse_tokens(200, br#"{"error":"invalid_grant"}"#, &s, 0, &[]),
            Err(TokenError::InvalidGrant(_))
        ));
        // X's answer for a spent refresh token.
        let x = br#"{"error":"invalid_request","error_description":"Value passed for the token was invalid."}"#;
        assert!(matches!(
            parse_tokens(400, x, &s, 0, &[]),
            Err(TokenError::InvalidGrant(_))
        ));
        assert!(matches!(
            parse_tokens(503, b"<html>down</html>", &s, 0, &[]),
            Err(TokenError::Transient(_))
        ));
        assert!(matches!(
            parse_tokens(429, b"{}", &s, 0, &[]),
            Err(TokenError::Transient(_))
        ));
        assert!(matches!(
            parse_tokens(400, br#"{"error":"invalid_client"}"#, &s, 0, &[]),
            Err(TokenError::Rejected(_))
        ));
        assert!(matches!(
            parse_tokens(200, b"<html>", &s, 0, &[]),
            Err(TokenError::Transient(_))
        ));
    }

    #[test]
    fn secrets_are_scrubbed_from_error_text() {
        let secret = Secret::new("refresh-secret-123");
        let e = parse_tokens(
            400,
            br#"{"error":"bad","error_description":"token refresh-secret-123 unknown"}"#,
            &shape(),
            0,
            &[&secret],
        )
        .unwrap_err();
        assert!(!e.to_string().contains("refresh-secret-123"), "{e}");
    }
}
