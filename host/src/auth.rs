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

use crate::contract::wit::types::{
    AuthKind, ClientAuth, CustomExchange, Endpoint, ExchangeBody, ExpiryFormat, Field, HttpMethod,
    Manifest, Pair, PkceMethod, RefreshStyle, TextPart, TokenShape,
};
use crate::error::bad;
use crate::escrow::{Escrow, Exchange};
use crate::http::{AllowedHost, Credentials, render};
use crate::secret::{Secret, scrub};
use crate::services::Services;
use crate::store::{AccountId, EscrowSlot, Health, Profile, Record};

pub use crate::config::{Client, client_for};

/// Fresh tokens from a token endpoint.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access: Secret,
    pub refresh: Option<Secret>,
    pub expires_in: Option<u64>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When the refresh token expires, if the platform says.
    pub refresh_expires_at: Option<DateTime<Utc>>,
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
    // A field name of the top-level object, or a JSON pointer from the
    // root (`/data/0/access_token`).
    let field = |name: &str| -> Option<&serde_json::Value> {
        if name.is_empty() {
            None
        } else if name.starts_with('/') {
            v.pointer(name).filter(|x| !x.is_null())
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
    check_token_type(v.get("token_type"), secrets)?;
    let refresh = field(&shape.refresh_token)
        .and_then(|r| r.as_str())
        .filter(|r| !r.is_empty())
        .map(Secret::new);
    // Whole or decimal seconds, as a JSON number or a string.
    let number = |x: &serde_json::Value| -> Option<u64> {
        let f = x
            .as_f64()
            .or_else(|| x.as_str()?.trim().parse::<f64>().ok())?;
        (f.is_finite() && f >= 0.0).then_some(f as u64)
    };
    let now = Utc::now();
    let at = |format: ExpiryFormat, n: u64| -> Option<DateTime<Utc>> {
        match format {
            ExpiryFormat::Never => None,
            ExpiryFormat::SecondsFromNow => Some(now + chrono::Duration::seconds(n as i64)),
            ExpiryFormat::UnixSeconds => Some(DateTime::from_timestamp(n as i64, 0).unwrap_or(now)),
            ExpiryFormat::UnixMillis => {
                Some(DateTime::from_timestamp_millis(n as i64).unwrap_or(now))
            }
        }
    };
    let refresh_expires_at = field(&shape.refresh_expiry)
        .and_then(number)
        .and_then(|n| at(shape.expiry_format, n));
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
        refresh_expires_at,
        scope: field(&shape.scope)
            .and_then(|s| s.as_str())
            .map(str::to_string),
    })
}

/// Read a session login's answer: its token is the cookie `name` the
/// answer sets (the body may be HTML or a redirect). No such cookie means
/// the platform refused the login.
pub fn parse_session(
    status: u16,
    body: &[u8],
    cookies: &[(String, String)],
    name: &str,
    lifetime: u64,
    secrets: &[&Secret],
) -> Result<Tokens, TokenError> {
    if status == 429 || status >= 500 {
        let text = scrub(&String::from_utf8_lossy(body), secrets);
        return Err(TokenError::Transient(format!(
            "HTTP {status}: {}",
            printable(&text, 200)
        )));
    }
    let Some((_, value)) = cookies.iter().find(|(n, v)| n == name && !v.is_empty()) else {
        // What the page says (`Bad login.`), without markup or secrets.
        let text = scrub(&String::from_utf8_lossy(body), secrets);
        let said: String = strip_tags(&text)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        return Err(TokenError::InvalidGrant(format!(
            "the login was refused (HTTP {status}, no `{name}` cookie{}); check the username and password",
            if said.is_empty() {
                String::new()
            } else {
                format!("; the page says: {}", printable(&said, 120))
            }
        )));
    };
    let now = Utc::now();
    Ok(Tokens {
        access: Secret::new(value.clone()),
        refresh: None,
        expires_in: (lifetime > 0).then_some(lifetime),
        expires_at: (lifetime > 0).then(|| now + chrono::Duration::seconds(lifetime as i64)),
        refresh_expires_at: None,
        scope: None,
    })
}

/// `text` without anything between `<` and `>`.
fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        match c {
            '<' => inside = true,
            '>' if inside => {
                inside = false;
                out.push(' ');
            }
            _ if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// RFC 6749 §7.1: a client must not use a token whose type it does not
/// understand. Outreach sends tokens as bearer tokens (RFC 6750; the name
/// is case-insensitive); an answer without `token_type` is taken as one
/// (Instagram's short-lived token answer has none). Contract 0.1.0 gives a
/// manifest no way to declare another type, so any other is refused.
fn check_token_type(
    token_type: Option<&serde_json::Value>,
    secrets: &[&Secret],
) -> Result<(), TokenError> {
    let what = match token_type {
        None | Some(serde_json::Value::Null) => return Ok(()),
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("bearer") => return Ok(()),
        Some(serde_json::Value::String(t)) if t.trim().is_empty() => "an empty type".to_string(),
        Some(serde_json::Value::String(t)) => {
            let t = printable(&scrub(t, secrets), 40);
            format!("type `{t}`")
        }
        Some(_) => "a `token_type` that is not a string".to_string(),
    };
    Err(TokenError::Rejected(format!(
        "the platform issued a token of {what}, which outreach cannot use: it sends tokens as \
         bearer tokens only (RFC 6749 §7.1 forbids using a token of a type the client does not \
         understand), and a plugin on contract 0.1.0 cannot declare another type"
    )))
}

/// `text` without control characters (a terminal or page shows it as
/// text), cut to `max` characters.
fn printable(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match clean.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None => clean,
    }
}

/// Text made safe to put inside HTML.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Performs token-endpoint requests. Cheap to clone.
#[derive(Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    escrow: Arc<Escrow>,
    /// With an account: the hosts its credential may go to (see
    /// [`crate::services::pinned_hosts`]); a token request elsewhere is
    /// refused before it is sent.
    pins: Option<Arc<Vec<AllowedHost>>>,
    /// Per platform, the User-Agent its token requests carry
    /// (`platforms.ID.user_agent`).
    user_agents: Arc<BTreeMap<String, String>>,
}

impl TokenClient {
    /// Shares the broker's connection pool (no redirects, the configured
    /// user agent and timeouts); building a client per use costs more than
    /// the requests it sends.
    pub fn new(app: &Services) -> anyhow::Result<Self> {
        Ok(TokenClient {
            http: app.host.broker.client(),
            escrow: app.escrow.clone(),
            pins: None,
            user_agents: Arc::new(
                app.cfg()
                    .config
                    .platforms
                    .iter()
                    .filter_map(|(id, p)| Some((id.clone(), p.user_agent.clone()?)))
                    .collect(),
            ),
        })
    }

    /// This client, sending token requests only to `pins`.
    pub fn pinned(&self, pins: Vec<AllowedHost>) -> Self {
        TokenClient {
            pins: Some(Arc::new(pins)),
            ..self.clone()
        }
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
        if let Some(pins) = &self.pins
            && !pins.iter().any(|a| a.matches(&u))
        {
            return Err(TokenError::Rejected(format!(
                "the token endpoint {}://{}:{} was added by a plugin update after this account was connected; approve the plugin's new hosts with `outreach plugins approve` before its credential is sent there (nothing was sent)",
                u.scheme(),
                u.host_str().unwrap_or("?"),
                u.port_or_known_default().unwrap_or(0)
            )));
        }
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
        // A session login: the token is a cookie; logins are not single-use,
        // so never escrowed.
        if let Some(name) = shape.access_token.strip_prefix("cookie:") {
            let (status, cookies, bytes) = exchange
                .send_keeping_cookies(&self.http)
                .await
                .map_err(|e| TokenError::Transient(scrub(&e, secrets)))?;
            return parse_session(status, &bytes, &cookies, name, lifetime, secrets);
        }
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
            let v = render(&p.value, Some(&creds), &[]).map_err(TokenError::Rejected)?;
            form.push((p.name.clone(), v));
        }
        let body = serde_urlencoded(&form);
        let ua: Vec<(String, String)> = self
            .user_agents
            .get(&m.id)
            .map(|ua| ("user-agent".to_string(), ua.clone()))
            .into_iter()
            .collect();
        self.request(
            HttpMethod::Post,
            url,
            &[],
            &ua,
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
            RefreshStyle::Relogin => {
                let (Some(login), Some(saved)) = (&m.auth.login, &record.saved_login) else {
                    return Err(TokenError::InvalidGrant(
                        "the session ended and no password is kept to log in again; reconnect"
                            .into(),
                    ));
                };
                let creds = Credentials::new()
                    .with("username", saved.username.clone())
                    .with("password", saved.password.clone());
                self.exchange(
                    login,
                    endpoints,
                    &creds,
                    &pairs(&record.settings),
                    m.auth.access_token_lifetime,
                    &secrets,
                    None,
                )
                .await
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
                    &pairs(&record.settings),
                    m.auth.access_token_lifetime,
                    &secrets,
                    slot,
                )
                .await
            }
        }
    }

    /// A declared exchange (custom refresh, login, a step after connect);
    /// through the escrow helper with `slot`. `settings` are the account's,
    /// for `setting` parts.
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange(
        &self,
        x: &CustomExchange,
        endpoints: &[Endpoint],
        creds: &Credentials,
        settings: &[Pair],
        lifetime: u64,
        secrets: &[&Secret],
        slot: Option<&EscrowSlot>,
    ) -> Result<Tokens, TokenError> {
        let fill = |parts: &[TextPart]| render(parts, Some(creds), settings);
        // An endpoint name as the first text part stands for its URL
        // (`refresh`, or `api/…` for a path below it).
        let url = match x.url.split_first() {
            Some((TextPart::Text(first), rest)) if !first.contains("://") => {
                let (name, path) = match first.split_once('/') {
                    Some((name, path)) => (name, format!("/{path}")),
                    None => (first.as_str(), String::new()),
                };
                let base = endpoint(endpoints, name).map_err(TokenError::Rejected)?;
                format!("{base}{path}{}", fill(rest).map_err(TokenError::Rejected)?)
            }
            _ => fill(&x.url).map_err(TokenError::Rejected)?,
        };
        let sub = |f: &[Field]| -> Result<Vec<(String, String)>, TokenError> {
            f.iter()
                .map(|f| {
                    Ok((
                        f.name.clone(),
                        fill(&f.value).map_err(TokenError::Rejected)?,
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
            ExchangeBody::Json(t) => {
                Some(("application/json", fill(t).map_err(TokenError::Rejected)?))
            }
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

    /// The manifest's steps after connect (Instagram's long-lived token,
    /// Facebook's page token), each fed by the tokens of the step before;
    /// what a step's answer lacks keeps the value it had.
    pub async fn after_connect(
        &self,
        m: &Manifest,
        endpoints: &[Endpoint],
        client: Option<&Client>,
        settings: &[Pair],
        mut tokens: Tokens,
    ) -> Result<Tokens, TokenError> {
        for step in &m.auth.after_connect {
            let mut creds = match client {
                Some(c) => client_credentials(c),
                None => Credentials::new(),
            }
            .with("access_token", tokens.access.clone());
            if let Some(r) = &tokens.refresh {
                creds = creds.with("refresh_token", r.clone());
            }
            let mut secrets: Vec<&Secret> = vec![&tokens.access];
            secrets.extend(tokens.refresh.as_ref());
            secrets.extend(client.and_then(|c| c.secret.as_ref()));
            let next = self
                .exchange(
                    step,
                    endpoints,
                    &creds,
                    settings,
                    m.auth.access_token_lifetime,
                    &secrets,
                    None,
                )
                .await?;
            tokens = Tokens {
                access: next.access,
                refresh: next.refresh.or(tokens.refresh),
                expires_in: next.expires_in.or(tokens.expires_in),
                expires_at: next.expires_at.or(tokens.expires_at),
                refresh_expires_at: next.refresh_expires_at.or(tokens.refresh_expires_at),
                scope: next.scope.or(tokens.scope),
            };
        }
        Ok(tokens)
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

/// Settings as the contract's pairs.
pub fn pairs(settings: &BTreeMap<String, String>) -> Vec<Pair> {
    settings
        .iter()
        .map(|(name, value)| Pair {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
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
    if t.refresh_expires_at.is_some() {
        record.refresh_expires_at = t.refresh_expires_at;
    }
    if let Some(s) = t.scope {
        record.scope = s;
    }
    record.last_refreshed = Some(Utc::now());
    record.health = Health::default();
}

/// What the browser brought back to the loopback listener, unchecked.
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The browser's request to the loopback listener, held open until the
/// account is stored or the attempt has failed, so that its page tells
/// the truth.
pub struct Browser {
    /// `None` in paste mode: the browser landed elsewhere.
    sock: Option<Box<dyn Conn>>,
    /// The daemon's `/callback` handler waiting for the page to answer
    /// with (status, HTML), when the browser came back to the daemon.
    reply: Option<tokio::sync::oneshot::Sender<(u16, String)>>,
    /// Where the page links back to (the web UI's dashboard), if anywhere.
    back: Option<String>,
    /// What the page must never show (the code, the state, the client
    /// secret), in case an error message quotes it.
    hide: Vec<Secret>,
    /// The status of a failure page: the redirect itself was wrong (400)
    /// or what came after it failed (502).
    failed: &'static str,
}

impl Browser {
    /// Answer the browser: which account is connected, or what failed and
    /// what to do about it. `again` is the command to run again.
    pub async fn finish(mut self, id: &AccountId, again: &str, outcome: &anyhow::Result<Record>) {
        let hide: Vec<&Secret> = self.hide.iter().collect();
        let (status, heading, lines) = match outcome {
            Ok(rec) => (
                "200 OK",
                "outreach is connected".to_string(),
                vec![format!(
                    "{id} is connected as {}. You can close this window.",
                    rec.profile.label()
                )],
            ),
            Err(e) => {
                let what = format!("{e:#}");
                let stored = if what.to_lowercase().contains("nothing was stored") {
                    ""
                } else {
                    "Nothing was stored. "
                };
                (
                    self.failed,
                    format!("outreach could not connect {id}"),
                    vec![
                        what,
                        format!(
                            "{stored}Run `{again}` again and open the new address it prints; the terminal shows this message too."
                        ),
                    ],
                )
            }
        };
        let mut body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><link rel=\"icon\" href=\"data:,\"><title>outreach</title></head><body><h1>{}</h1>",
            html_escape(&heading)
        );
        for line in lines {
            let line = printable(&scrub(&line, &hide), 1000);
            body.push_str(&format!("<p>{}</p>", html_escape(&line)));
        }
        if let Some(back) = &self.back {
            body.push_str(&format!(
                "<p><a href=\"{}\">Back to the outreach dashboard</a></p>",
                html_escape(back)
            ));
        }
        body.push_str("</body></html>");
        if let Some(reply) = self.reply.take() {
            let code = status
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(200);
            let _ = reply.send((code, body));
            return;
        }
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        if let Some(sock) = &mut self.sock {
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    }
}

/// A connection from the browser: plain TCP, or TLS over it.
pub trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

/// What an authorization redirect carries.
fn callback_of(url: &url::Url) -> Callback {
    let mut q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    Callback {
        // Instagram and Threads append `#_` to the code.
        code: q
            .remove("code")
            .map(|c| c.trim_end_matches("#_").to_string()),
        state: q.remove("state"),
        error: q.remove("error"),
        error_description: q.remove("error_description"),
    }
}

/// What a page must never show of a callback: its code and state.
fn hidden(cb: &Callback) -> Vec<Secret> {
    [&cb.code, &cb.state]
        .into_iter()
        .flatten()
        .filter(|v| !v.is_empty())
        .map(Secret::new)
        .collect()
}

/// The loopback listener's certificate and key (PEM), made once per store
/// and kept in it, for redirects that must be https.
fn loopback_tls(app: &Services) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    #[derive(Serialize, Deserialize)]
    struct Pem {
        cert: String,
        key: Secret,
    }
    let store = app.store()?;
    let pem = match store
        .load_aux("loopback-tls")?
        .and_then(|b| serde_json::from_slice::<Pem>(&b).ok())
    {
        Some(p) => p,
        None => {
            let made = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .context("cannot make a certificate for the loopback redirect")?;
            let p = Pem {
                cert: made.cert.pem(),
                key: Secret::new(made.key_pair.serialize_pem()),
            };
            store.save_aux("loopback-tls", &serde_json::to_vec(&p)?)?;
            p
        }
    };
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the stored loopback certificate is unreadable")?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.key.expose().as_bytes())
        .context("the stored loopback key is unreadable")?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS set-up")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the stored loopback certificate does not match its key")?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// Wait for the browser to come back to `listener` on `/callback`. Other
/// paths (favicon) get a 404 and the wait goes on; the callback request is
/// returned unanswered, with what it carried.
async fn await_callback(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<(Browser, Callback), String> {
    loop {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut sock: Box<dyn Conn> = match &tls {
            // A browser that refused the certificate closes the connection
            // and may come back once the user accepts it.
            Some(acceptor) => match acceptor.accept(tcp).await {
                Ok(s) => Box::new(s),
                Err(_) => continue,
            },
            None => Box::new(tcp),
        };
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
        let url = url::Url::parse(&format!("http://127.0.0.1{target}")).ok();
        let Some(url) = url.filter(|u| u.path() == "/callback") else {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let cb = callback_of(&url);
        let hide = hidden(&cb);
        return Ok((
            Browser {
                sock: Some(sock),
                reply: None,
                back: None,
                hide,
                failed: "400 Bad Request",
            },
            cb,
        ));
    }
}

/// Browsers that come back to the daemon's own listener on `/callback`
/// (connections started in the web UI), handed to the flow waiting for
/// their `state`. One registered redirect URI then serves the CLI and the
/// daemon: `http://127.0.0.1:PORT/callback`, the daemon's port.
#[derive(Default)]
pub struct Callbacks {
    /// By SHA-256 of the state (the state itself is not kept).
    waiting: std::sync::Mutex<BTreeMap<[u8; 32], tokio::sync::oneshot::Sender<Landed>>>,
}

/// A browser that came back: the address it came to, and where the flow
/// sends the page to show it.
pub struct Landed {
    url: url::Url,
    page: tokio::sync::oneshot::Sender<(u16, String)>,
}

fn state_key(state: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(state.as_bytes()).into()
}

impl Callbacks {
    fn wait(&self, state: &str) -> tokio::sync::oneshot::Receiver<Landed> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut w = self.waiting.lock().expect("callbacks");
        w.retain(|_, tx| !tx.is_closed());
        w.insert(state_key(state), tx);
        rx
    }

    /// A browser came to `/callback` with `url`: the page to answer it
    /// with, once its flow has finished; `None` when no flow waits for
    /// its state (stale, forged or spent: each state is used once).
    pub fn land(&self, url: url::Url) -> Option<tokio::sync::oneshot::Receiver<(u16, String)>> {
        let state = url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())?;
        let tx = self
            .waiting
            .lock()
            .expect("callbacks")
            .remove(&state_key(&state))?;
        let (page, rx) = tokio::sync::oneshot::channel();
        tx.send(Landed { url, page }).ok()?;
        Some(rx)
    }
}

/// A connection started in the daemon's web UI: the browser comes back to
/// the daemon (`base` + `/callback`) and its page links to `back`.
#[derive(Clone)]
pub struct Via {
    pub base: String,
    pub callbacks: Arc<Callbacks>,
    pub back: String,
}

fn loopback_redirect(port: u16) -> String {
    format!("http://127.0.0.1:{port}/callback")
}

/// The loopback listener: on `preferred` when the configured port is 0
/// and `preferred` is free (the port a registered client was registered
/// with), else on the configured port.
async fn listen(
    configured: u16,
    preferred: Option<u16>,
) -> anyhow::Result<tokio::net::TcpListener> {
    if configured == 0
        && let Some(p) = preferred
        && let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", p)).await
    {
        return Ok(l);
    }
    tokio::net::TcpListener::bind(("127.0.0.1", configured))
        .await
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                " (if outreach's daemon listens there, it takes the redirect itself: connect from its web UI, `outreach ui`)"
            } else {
                ""
            };
            anyhow::anyhow!("cannot listen on 127.0.0.1:{configured} for the redirect: {e}{hint}")
        })
}

/// The authorization-code flow through a loopback redirect listener.
/// Fails before the browser comes back; from then on the browser's request
/// is returned, held open, with the tokens or why there are none.
#[allow(clippy::too_many_arguments)]
pub async fn browser_flow(
    app: &Services,
    m: &Manifest,
    endpoints: &[Endpoint],
    tokens: &TokenClient,
    id: &AccountId,
    open_browser: bool,
    paste: bool,
    ask: &(dyn Fn(&str) -> anyhow::Result<Secret> + Send + Sync),
    announce: &(dyn Fn(&str) + Send + Sync),
    via: Option<&Via>,
) -> anyhow::Result<(Browser, anyhow::Result<Tokens>)> {
    let auth_cfg = app.cfg().config.auth.clone();
    let platform_cfg = app.cfg().platform(&m.id);
    let configured = match &platform_cfg.redirect_uri {
        Some(u) => Some(
            url::Url::parse(u)
                .map_err(|e| bad!("platforms.{}.redirect_uri = {u:?} is not a URL ({e})", m.id))?,
        ),
        None => None,
    };
    // A registered address on this machine is served here; anywhere else
    // (an https page of yours), the user pastes where the browser landed.
    let loopback_port = configured.as_ref().and_then(|u| {
        let local = matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        local.then(|| u.port_or_known_default()).flatten()
    });
    let paste_mode = paste || (configured.is_some() && loopback_port.is_none());
    let tls = configured
        .as_ref()
        .map(|u| u.scheme() == "https")
        .unwrap_or(platform_cfg.redirect_tls.unwrap_or(auth_cfg.redirect_tls));
    let scopes = m.auth.scopes.join(&m.auth.scope_separator);
    let registration = if m.auth.dynamic_registration {
        let apps = endpoint(endpoints, "apps").map_err(|e| bad!("{e}"))?;
        let known = load_registration(app, m, &apps, &scopes, auth_cfg.redirect_port)?;
        Some((apps, known))
    } else {
        None
    };
    let preferred = registration
        .as_ref()
        .and_then(|(_, r)| r.as_ref())
        .and_then(Registration::port);
    // Started in the web UI, with a plain loopback redirect (or the
    // daemon's own callback address registered): the browser comes back to
    // the daemon. An https or remote redirect keeps its own listener.
    let daemon_callback = format!("{}/callback", via.map(|v| v.base.as_str()).unwrap_or(""));
    let via_daemon = via.filter(|_| {
        !paste
            && !tls
            && configured
                .as_ref()
                .is_none_or(|u| u.as_str() == daemon_callback)
    });
    let (listener, redirect_uri) = if via_daemon.is_some() {
        (None, daemon_callback.clone())
    } else if paste_mode {
        let uri = match (&configured, auth_cfg.redirect_port) {
            (Some(u), _) => u.to_string(),
            (None, 0) => {
                return Err(bad!(
                    "pasting needs the redirect address registered with {}: set platforms.{}.redirect_uri (or auth.redirect_port for a loopback one) in the config",
                    m.name,
                    m.id
                ));
            }
            (None, port) => loopback_redirect(port),
        };
        (None, uri)
    } else {
        let listener = listen(loopback_port.unwrap_or(auth_cfg.redirect_port), preferred).await?;
        let port = listener.local_addr()?.port();
        let uri = match &configured {
            Some(u) => u.to_string(),
            None if tls => format!("https://localhost:{port}/callback"),
            None => loopback_redirect(port),
        };
        (Some(listener), uri)
    };
    let acceptor = if tls && listener.is_some() {
        Some(loopback_tls(app)?)
    } else {
        None
    };

    let client = match registration {
        // One app per server: the loopback redirect it was registered with
        // matches on any port (RFC 8252 §7.3, which Mastodon follows).
        Some((_, Some(known))) => known.client(),
        Some((apps, None)) => register_app(app, m, tokens, &apps, &redirect_uri, &scopes).await?,
        None => client_for(&app.cfg(), &m.id).map_err(|e| bad!("{e}"))?,
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
    let client_creds = client_credentials(&client);
    for p in &m.auth.authorize_params {
        let value = render(&p.value, Some(&client_creds), &[]).map_err(|e| bad!("{e}"))?;
        req = req.add_extra_param(p.name.clone(), value);
    }
    let verifier = if matches!(m.auth.kind, AuthKind::Oauth2Pkce) {
        let verifier =
            oauth2::PkceCodeVerifier::new(oauth2::CsrfToken::new_random_len(64).into_secret());
        match m.auth.pkce {
            PkceMethod::S256 => {
                req = req.set_pkce_challenge(oauth2::PkceCodeChallenge::from_code_verifier_sha256(
                    &verifier,
                ));
            }
            // TikTok's desktop flow: the SHA-256 in lowercase hex.
            PkceMethod::S256Hex => {
                use sha2::Digest as _;
                let challenge = hex::encode(sha2::Sha256::digest(verifier.secret().as_bytes()));
                req = req
                    .add_extra_param("code_challenge", challenge)
                    .add_extra_param("code_challenge_method", "S256");
            }
            PkceMethod::Plain => {
                req = req
                    .add_extra_param("code_challenge", verifier.secret().clone())
                    .add_extra_param("code_challenge_method", "plain");
            }
        }
        Some(verifier)
    } else {
        None
    };
    let (url, state) = req.url();
    let landing = via_daemon.map(|v| v.callbacks.wait(state.secret()));
    announce(url.as_str());
    if open_browser {
        open_in_browser(url.as_str());
    }
    if acceptor.is_some() {
        eprintln!(
            "The browser comes back to {redirect_uri} over https with a certificate outreach made for this machine: it will warn that it is not trusted; accept it to finish.\n"
        );
    }
    let (mut browser, cb) = match (listener, landing) {
        (_, Some(landing)) => {
            let wait = Duration::from_secs(auth_cfg.connect_timeout_secs);
            let landed = tokio::time::timeout(wait, landing)
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no answer from the browser within {} s; start the connection again",
                        wait.as_secs()
                    )
                })?
                .map_err(|_| anyhow::anyhow!("connecting {id}: the daemon stopped waiting"))?;
            let cb = callback_of(&landed.url);
            let hide = hidden(&cb);
            (
                Browser {
                    sock: None,
                    reply: Some(landed.page),
                    back: via.map(|v| v.back.clone()),
                    hide,
                    failed: "400 Bad Request",
                },
                cb,
            )
        }
        (Some(listener), None) => {
            let wait = Duration::from_secs(auth_cfg.connect_timeout_secs);
            tokio::time::timeout(wait, await_callback(listener, acceptor))
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no answer from the browser within {} s; run `outreach connect` again",
                        wait.as_secs()
                    )
                })?
                .map_err(|e| anyhow::anyhow!("connecting {id}: {e}"))?
        }
        (None, None) => {
            eprintln!(
                "After you approve, the browser goes to {redirect_uri}…; that page may fail to load, which is fine. Copy the whole address from the address bar."
            );
            let pasted = ask("the address the browser ended on (it holds a one-time code)")?;
            let landed = url::Url::parse(pasted.expose().trim()).map_err(|_| {
                bad!("connecting {id}: what was pasted is not an address (copy the whole address bar, starting with http); nothing was stored")
            })?;
            let cb = callback_of(&landed);
            let hide = hidden(&cb);
            (
                Browser {
                    sock: None,
                    reply: None,
                    back: None,
                    hide,
                    failed: "400 Bad Request",
                },
                cb,
            )
        }
    };
    browser.hide.extend(client.secret.clone());
    if browser.back.is_none() {
        browser.back = via.map(|v| v.back.clone());
    }

    // The state first: an answer that does not carry this request's state
    // (a stale or forged redirect) is not believed, not even its error.
    let state_ok = cb.state.as_deref() == Some(state.secret().as_str());
    let code = match (cb.code, cb.error) {
        _ if cb.state.is_some() && !state_ok => Err(anyhow::anyhow!(
            "connecting {id}: the redirect's state does not match this request (a stale or forged redirect); nothing was stored"
        )),
        (_, Some(err)) => Err(anyhow::anyhow!(
            "connecting {id}: {} refused the authorization: {}{}; nothing was stored",
            m.name,
            printable(&err, 100),
            cb.error_description
                .map(|d| format!(" ({})", printable(&d, 300)))
                .unwrap_or_default()
        )),
        (Some(_), None) if !state_ok => Err(anyhow::anyhow!(
            "connecting {id}: the redirect carries no state, so it cannot be told from a forged one; nothing was stored"
        )),
        (Some(code), None) => Ok(code),
        (None, None) => Err(anyhow::anyhow!(
            "connecting {id}: the redirect carried neither a code nor an error, so it is not an authorization response; nothing was stored"
        )),
    };
    let code = match code {
        Ok(code) => code,
        Err(e) => return Ok((browser, Err(e))),
    };
    browser.failed = "502 Bad Gateway";
    let tokens = tokens
        .exchange_code(
            m,
            endpoints,
            &client,
            &code,
            &redirect_uri,
            verifier.as_ref().map(|v| v.secret().as_str()),
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "exchanging the authorization code for {id} failed: {e}; nothing was stored"
            )
        });
    Ok((browser, tokens))
}

/// An OAuth client that outreach registered with one server (Mastodon's
/// `POST /api/v1/apps`), kept in the store: one per server and scope set.
#[derive(Serialize, Deserialize)]
struct Registration {
    id: String,
    secret: Option<Secret>,
    /// The redirect URI it was registered with (absent in registrations
    /// stored before it was kept).
    #[serde(default)]
    redirect_uri: Option<String>,
}

impl Registration {
    fn client(self) -> Client {
        Client {
            id: self.id,
            secret: self.secret,
        }
    }

    fn port(&self) -> Option<u16> {
        url::Url::parse(self.redirect_uri.as_deref()?).ok()?.port()
    }
}

fn short_hash(text: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(text)[..12])
}

/// The stored registration for the server whose `apps` endpoint is `apps`.
/// Registrations stored by earlier versions were keyed by their redirect
/// URI as well; with a fixed `port`, such a one is found and moved to the
/// per-server key.
fn load_registration(
    app: &Services,
    m: &Manifest,
    apps: &str,
    scopes: &str,
    port: u16,
) -> anyhow::Result<Option<Registration>> {
    let store = app.store()?;
    let name = format!("{}-app-{}", m.id, short_hash(&format!("{apps}\n{scopes}")));
    if let Some(bytes) = store.load_aux(&name)?
        && let Ok(r) = serde_json::from_slice::<Registration>(&bytes)
    {
        return Ok(Some(r));
    }
    if port == 0 {
        return Ok(None);
    }
    let redirect = loopback_redirect(port);
    let legacy = format!(
        "{}-client-{}",
        m.id,
        short_hash(&format!("{apps}\n{redirect}\n{scopes}"))
    );
    let Some(bytes) = store.load_aux(&legacy)? else {
        return Ok(None);
    };
    let Ok(mut r) = serde_json::from_slice::<Registration>(&bytes) else {
        return Ok(None);
    };
    r.redirect_uri = Some(redirect);
    store.save_aux(&name, &serde_json::to_vec(&r)?)?;
    Ok(Some(r))
}

/// Register outreach with the server at `apps` and keep the client.
async fn register_app(
    app: &Services,
    m: &Manifest,
    tokens: &TokenClient,
    apps: &str,
    redirect_uri: &str,
    scopes: &str,
) -> anyhow::Result<Client> {
    let client = tokens
        .register(
            apps,
            redirect_uri,
            scopes,
            &app.cfg().config.http.user_agent,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let r = Registration {
        id: client.id.clone(),
        secret: client.secret.clone(),
        redirect_uri: Some(redirect_uri.to_string()),
    };
    let name = format!("{}-app-{}", m.id, short_hash(&format!("{apps}\n{scopes}")));
    app.store()?.save_aux(&name, &serde_json::to_vec(&r)?)?;
    Ok(client)
}

/// The client outreach registered with the server `endpoints` point at, if
/// it did (never registers one). Revoking a token at such a server takes
/// the client that the token was issued to.
pub fn registered_client(
    app: &Services,
    m: &Manifest,
    endpoints: &[Endpoint],
) -> anyhow::Result<Option<Client>> {
    let Ok(apps) = endpoint(endpoints, "apps") else {
        return Ok(None);
    };
    let scopes = m.auth.scopes.join(&m.auth.scope_separator);
    let port = app.cfg().config.auth.redirect_port;
    Ok(load_registration(app, m, &apps, &scopes, port)?.map(Registration::client))
}

pub fn open_in_browser(url: &str) {
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
        refresh_expires_at: None,
        scope: String::new(),
        profile: Profile::default(),
        created_at: now,
        last_refreshed: None,
        settings,
        health: Health::default(),
        hosts: None,
        saved_login: None,
        scopes_asked: None,
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
            refresh_expiry: "refresh_expires_in".into(),
            scope: "scope".into(),
            error: "error".into(),
        }
    }

    #[test]
    fn token_shapes_read_json_pointers_decimal_seconds_and_refresh_expiry() {
        // TikTok-style: wrapped in data[0], decimal and string numbers.
        let wrapped = TokenShape {
            access_token: "/data/0/access_token".into(),
            refresh_token: "/data/0/refresh_token".into(),
            expiry: "/data/0/expires_in".into(),
            refresh_expiry: "/data/0/refresh_expires_in".into(),
            ..shape()
        };
        let body = br#"{"data":[{"access_token":"at","refresh_token":"rt","expires_in":"86400.5","refresh_expires_in":31536000}]}"#;
        let t = parse_tokens(200, body, &wrapped, 0, &[]).unwrap();
        assert_eq!(t.access.expose(), "at");
        assert_eq!(t.refresh.as_ref().unwrap().expose(), "rt");
        assert_eq!(t.expires_in, Some(86400));
        let refresh_left = t.refresh_expires_at.unwrap() - Utc::now();
        assert!(refresh_left.num_days() >= 364, "{refresh_left}");
        let t = parse_tokens(
            200,
            br#"{"access_token":"a","expires_in":3599.9}"#,
            &shape(),
            0,
            &[],
        )
        .unwrap();
        assert_eq!(t.expires_in, Some(3599));
        assert!(t.refresh_expires_at.is_none());
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
    fn only_bearer_tokens_are_used() {
        let with = |t: &str| format!(r#"{{"access_token":"a","token_type":{t}}}"#);
        for ok in [r#""bearer""#, r#""Bearer""#, r#""BEARER""#, "null"] {
            assert!(
                parse_tokens(200, with(ok).as_bytes(), &shape(), 0, &[]).is_ok(),
                "{ok}"
            );
        }
        // No `token_type` at all (Instagram's short-lived token answer).
        assert!(parse_tokens(200, br#"{"access_token":"a"}"#, &shape(), 0, &[]).is_ok());
        for (bad, named) in [
            (r#""mac""#, "type `mac`"),
            (r#""DPoP""#, "type `DPoP`"),
            (r#""""#, "an empty type"),
            ("7", "not a string"),
        ] {
            match parse_tokens(200, with(bad).as_bytes(), &shape(), 0, &[]) {
                Err(TokenError::Rejected(e)) => assert!(e.contains(named), "{e}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        // A type that quotes a secret does not show it.
        let secret = Secret::new("refresh-secret-456");
        let body = with(r#""x refresh-secret-456""#);
        let e = parse_tokens(200, body.as_bytes(), &shape(), 0, &[&secret]).unwrap_err();
        assert!(!e.to_string().contains("refresh-secret-456"), "{e}");
    }

    #[test]
    fn page_text_is_escaped_and_printable() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(printable("a\x1b[31mb\nc", 100), "a [31mb c");
        assert_eq!(printable("abcdef", 3), "abc…");
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
