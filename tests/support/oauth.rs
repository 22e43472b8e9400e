//! Fake OAuth servers that behave like the platforms' own, quirks included
//! (shared/reference/platform-apis.md):
//!
//! - X: PKCE S256 required, codes valid 30 s, HTTP Basic client auth,
//!   rotating single-use refresh tokens (reuse → `invalid_grant`).
//! - Reddit: HTTP Basic, `duration=permanent` required, errors as HTTP 200
//!   with an `error` body.
//! - Mastodon: app registration per instance (several redirect URIs, and a
//!   loopback one matches on any port, as Doorkeeper does per RFC 8252
//!   §7.3), no expiry, no refresh token, revocation only by the app the
//!   token was issued to (Doorkeeper's `unauthorized_client`).
//! - Instagram: no refresh token; the access token itself is renewed with
//!   `GET /refresh_access_token?grant_type=ig_refresh_token`.
//! - Bluesky: an app password exchanged for JWTs (`createSession`, JSON);
//!   `refreshSession` takes the refresh JWT as a bearer token and rotates
//!   it; a spent one fails with HTTP 400 `ExpiredToken`.
//! - LinkedIn: client credentials in the body, no PKCE, 60-day tokens and
//!   no refresh token (refresh is for approved partners only).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use axum::response::Response;
use base64::Engine as _;
use serde_json::json;
use sha2::Digest;

use super::{FakeState, Mode, Seen, json_response, respond};

pub const CLIENT_ID: &str = "outreach-test-client";
pub const CLIENT_SECRET: &str = "client-secret-PLANTED-51f0";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Flavor {
    X,
    Reddit,
    Mastodon,
    Instagram,
    /// Instagram's flow with Threads' grant names (`th_exchange_token`,
    /// `th_refresh_token`).
    Threads,
    LinkedIn,
    Bluesky,
    /// Google: `access_type=offline` and `prompt=consent` for a refresh
    /// token, credentials in the body, refresh answers without a new
    /// refresh token.
    Google,
    /// TikTok: `client_key` for the client id, PKCE with a hex challenge
    /// (its desktop flow), rotating refresh tokens with their own
    /// `refresh_expires_in`.
    TikTok,
}

struct Code {
    challenge: Option<String>,
    redirect_uri: String,
    issued: Instant,
    used: bool,
}

/// What an OAuth fake remembers.
pub struct OAuth {
    codes: HashMap<String, Code>,
    pub access: HashMap<String, Instant>,
    pub refresh: HashSet<String>,
    /// Refresh tokens that were valid once (reuse is detected).
    pub spent: HashSet<String>,
    /// Refresh requests that presented a spent refresh token.
    pub reused: u64,
    pub refresh_calls: u64,
    pub code_calls: u64,
    /// Lifetime of issued access tokens.
    pub lifetime: Duration,
    /// How old a token must be before Instagram and Threads renew it
    /// (24 hours on the real platforms).
    pub min_age: Duration,
    /// Renewals refused because the token was too young.
    pub too_young: u64,
    /// How the token endpoint answers (Normal, ServerError, RateLimited).
    pub token_mode: Mode,
    pub registrations: u64,
    pub revoked: Vec<String>,
    /// Registered clients (Mastodon): id → (secret, redirect URIs, one a
    /// line as Mastodon keeps them).
    pub apps: HashMap<String, (String, String)>,
    /// Access tokens → the client they were issued to.
    pub issued_to: HashMap<String, String>,
    /// When set, token answers carry this `token_type` instead of the
    /// platform's own.
    pub token_type: Option<String>,
    counter: u64,
}

impl Default for OAuth {
    fn default() -> Self {
        OAuth {
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashSet::new(),
            spent: HashSet::new(),
            reused: 0,
            refresh_calls: 0,
            code_calls: 0,
            lifetime: Duration::from_secs(7200),
            min_age: Duration::ZERO,
            too_young: 0,
            token_mode: Mode::Normal,
            registrations: 0,
            revoked: Vec::new(),
            apps: HashMap::new(),
            issued_to: HashMap::new(),
            token_type: None,
            counter: 0,
        }
    }
}

impl OAuth {
    fn mint(&mut self, kind: &str) -> String {
        self.counter += 1;
        format!("{kind}-{}-PLANTED-{:08x}", self.counter, rand_u32())
    }

    /// Whether `token` is a live access token.
    pub fn valid(&self, token: &str) -> bool {
        self.access
            .get(token)
            .is_some_and(|exp| *exp > Instant::now())
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

fn form(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

/// Whether `presented` matches one of `registered` (one a line), as
/// Doorkeeper matches them: exactly, except that the port of a loopback IP
/// redirect is ignored (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, presented: &str) -> bool {
    let Ok(p) = url::Url::parse(presented) else {
        return false;
    };
    let loopback = |u: &url::Url| match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    registered.split_whitespace().any(|r| {
        let Ok(mut r) = url::Url::parse(r) else {
            return false;
        };
        if loopback(&r) && loopback(&p) {
            let mut p = p.clone();
            let _ = r.set_port(None);
            let _ = p.set_port(None);
            return r == p;
        }
        r == p
    })
}

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// Client authentication as each platform expects it: `(id, secret)`.
fn client_of(seen: &Seen, f: &HashMap<String, String>) -> Option<(String, String)> {
    if let Some(b) = seen
        .headers
        .get("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
    {
        let raw =
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).ok()?).ok()?;
        let (id, secret) = raw.split_once(':')?;
        return Some((id.to_string(), secret.to_string()));
    }
    Some((
        f.get("client_id")?.clone(),
        f.get("client_secret").cloned().unwrap_or_default(),
    ))
}

/// Answer an OAuth request, or `None` if `seen` is not one.
pub fn route(st: &FakeState, seen: &Seen, flavor: Flavor) -> Option<Response> {
    let (authorize, token, revoke, apps, ig_refresh) = match flavor {
        Flavor::X => (
            "/i/oauth2/authorize",
            "/2/oauth2/token",
            "/2/oauth2/revoke",
            "",
            "",
        ),
        Flavor::Reddit => (
            "/api/v1/authorize",
            "/api/v1/access_token",
            "/api/v1/revoke_token",
            "",
            "",
        ),
        Flavor::Mastodon => (
            "/oauth/authorize",
            "/oauth/token",
            "/oauth/revoke",
            "/api/v1/apps",
            "",
        ),
        Flavor::Instagram | Flavor::Threads => (
            "/oauth/authorize",
            "/oauth/access_token",
            "",
            "",
            "/refresh_access_token",
        ),
        Flavor::LinkedIn => (
            "/oauth/v2/authorization",
            "/oauth/v2/accessToken",
            "",
            "",
            "",
        ),
        Flavor::Google => ("/o/oauth2/v2/auth", "/token", "/revoke", "", ""),
        Flavor::TikTok => (
            "/v2/auth/authorize/",
            "/v2/oauth/token/",
            "/v2/oauth/revoke/",
            "",
            "",
        ),
        Flavor::Bluesky => return bluesky(st, seen),
    };
    let path = seen.path.as_str();
    let mut o = st.oauth.lock().unwrap();
    // An error in Reddit's style is HTTP 200; everyone else uses 400.
    let error = |code: &str, desc: &str| {
        let status = if flavor == Flavor::Reddit { 200 } else { 400 };
        Some(json_response(
            status,
            &[],
            json!({"error": code, "error_description": desc}),
        ))
    };
    if !apps.is_empty() && path == apps && seen.method == "POST" {
        let f = form(&seen.body);
        let Some(redirect) = f.get("redirect_uris") else {
            return Some(json_response(
                422,
                &[],
                json!({"error": "Validation failed: Redirect URI can't be blank"}),
            ));
        };
        o.registrations += 1;
        let id = format!("app-{}", o.registrations);
        let secret = o.mint("app-secret");
        o.apps
            .insert(id.clone(), (secret.clone(), redirect.clone()));
        return Some(json_response(
            200,
            &[],
            json!({
                "id": "563419", "name": f.get("client_name"), "website": f.get("website"),
                "scopes": f.get("scopes").map(|s| s.split(' ').collect::<Vec<_>>()),
                "redirect_uris": redirect.split_whitespace().collect::<Vec<_>>(), "redirect_uri": redirect, "client_id": id,
                "client_secret": secret, "client_secret_expires_at": 0
            }),
        ));
    }
    if path == authorize && seen.method == "GET" {
        let q: HashMap<String, String> = url::form_urlencoded::parse(seen.query.as_bytes())
            .into_owned()
            .collect();
        let client_ok = match flavor {
            Flavor::Mastodon => {
                q.get("client_id")
                    .and_then(|c| o.apps.get(c))
                    .is_some_and(|(_, r)| {
                        q.get("redirect_uri")
                            .is_some_and(|p| redirect_matches(r, p))
                    })
            }
            _ => q.get("client_id").map(String::as_str) == Some(CLIENT_ID),
        };
        if !client_ok || q.get("response_type").map(String::as_str) != Some("code") {
            return Some(respond(400, &[], "invalid client or response type"));
        }
        let challenge = q.get("code_challenge").cloned();
        if flavor == Flavor::X
            && (challenge.is_none()
                || q.get("code_challenge_method").map(String::as_str) != Some("S256"))
        {
            return Some(respond(400, &[], "PKCE with S256 is required"));
        }
        if flavor == Flavor::Reddit && q.get("duration").map(String::as_str) != Some("permanent") {
            return Some(respond(400, &[], "this test expects duration=permanent"));
        }
        if flavor == Flavor::Google
            && (q.get("access_type").map(String::as_str) != Some("offline")
                || q.get("prompt").map(String::as_str) != Some("consent"))
        {
            return Some(respond(
                400,
                &[],
                "this test expects access_type=offline and prompt=consent",
            ));
        }
        if flavor == Flavor::TikTok
            && (q.get("client_key").map(String::as_str) != Some(CLIENT_ID)
                || challenge.is_none()
                || q.get("code_challenge_method").map(String::as_str) != Some("S256"))
        {
            return Some(respond(
                400,
                &[],
                "TikTok wants client_key and a PKCE challenge",
            ));
        }
        let code = o.mint("code");
        let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
        o.codes.insert(
            code.clone(),
            Code {
                challenge,
                redirect_uri: redirect.clone(),
                issued: Instant::now(),
                used: false,
            },
        );
        let mut to = url::Url::parse(&redirect).unwrap();
        to.query_pairs_mut()
            .append_pair("state", q.get("state").map(String::as_str).unwrap_or(""))
            .append_pair("code", &code);
        let mut location = to.to_string();
        if matches!(flavor, Flavor::Instagram | Flavor::Threads) {
            location.push_str("#_");
        }
        return Some(respond(302, &[("location", location.as_str())], ""));
    }
    if !revoke.is_empty() && path == revoke && seen.method == "POST" {
        let f = form(&seen.body);
        let t = f.get("token").cloned().unwrap_or_default();
        // Doorkeeper: a token issued to a confidential app is revoked only
        // by that app, authenticated.
        if flavor == Flavor::Mastodon
            && let Some(owner) = o.issued_to.get(&t)
        {
            let presented = client_of(seen, &f);
            let secret = o.apps.get(owner).map(|(s, _)| s.clone());
            if presented.as_ref().map(|(id, s)| (id, Some(s.clone()))) != Some((owner, secret)) {
                return Some(json_response(
                    403,
                    &[],
                    json!({"error": "unauthorized_client", "error_description": "You are not authorized to revoke this token"}),
                ));
            }
        }
        o.access.remove(&t);
        o.refresh.remove(&t);
        o.revoked.push(t);
        return Some(json_response(200, &[], json!({})));
    }
    // Instagram's step after connect: the short-lived token for a
    // long-lived one, with the app secret.
    let (exchange_grant, refresh_grant, prefix) = if flavor == Flavor::Threads {
        ("th_exchange_token", "th_refresh_token", "th")
    } else {
        ("ig_exchange_token", "ig_refresh_token", "ig")
    };
    if matches!(flavor, Flavor::Instagram | Flavor::Threads)
        && path == "/access_token"
        && seen.method == "GET"
    {
        let q: HashMap<String, String> = url::form_urlencoded::parse(seen.query.as_bytes())
            .into_owned()
            .collect();
        let short = q.get("access_token").cloned().unwrap_or_default();
        if q.get("grant_type").map(String::as_str) != Some(exchange_grant)
            || q.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
            || !o.valid(&short)
        {
            return Some(json_response(
                400,
                &[],
                json!({"error": {"message": "Invalid OAuth access token", "type": "OAuthException", "code": 190}}),
            ));
        }
        let long = o.mint(&format!("{prefix}-long"));
        let life = o.lifetime;
        o.access.insert(long.clone(), Instant::now() + life);
        return Some(json_response(
            200,
            &[],
            json!({"access_token": long, "token_type": "bearer", "expires_in": life.as_secs()}),
        ));
    }
    if !ig_refresh.is_empty() && path == ig_refresh && seen.method == "GET" {
        let q: HashMap<String, String> = url::form_urlencoded::parse(seen.query.as_bytes())
            .into_owned()
            .collect();
        o.refresh_calls += 1;
        if q.get("grant_type").map(String::as_str) != Some(refresh_grant) {
            return Some(json_response(
                400,
                &[],
                json!({"error": {"message": "Unsupported grant_type", "type": "OAuthException", "code": 100}}),
            ));
        }
        let old = q.get("access_token").cloned().unwrap_or_default();
        if !o.valid(&old) {
            return Some(json_response(
                400,
                &[],
                json!({"error": {"message": "Error validating access token", "type": "OAuthException", "code": 190}}),
            ));
        }
        // A token renews only once it has lived `min_age`; the real
        // platforms refuse younger ones.
        let young = o.access[&old]
            .checked_sub(o.lifetime)
            .is_some_and(|issued| issued + o.min_age > Instant::now());
        if young {
            o.too_young += 1;
            return Some(json_response(
                400,
                &[],
                json!({"error": {"message": "The access token must be at least 24 hours old to be refreshed", "type": "OAuthException", "code": 190}}),
            ));
        }
        let new = o.mint(&format!("{prefix}-access"));
        let life = o.lifetime;
        o.access.insert(new.clone(), Instant::now() + life);
        return Some(json_response(
            200,
            &[],
            json!({"access_token": new, "token_type": "bearer", "expires_in": life.as_secs()}),
        ));
    }
    if path != token || seen.method != "POST" {
        return None;
    }
    match o.token_mode {
        Mode::ServerError => {
            return Some(json_response(
                503,
                &[],
                json!({"error": "temporarily down"}),
            ));
        }
        Mode::RateLimited => {
            return Some(json_response(
                429,
                &[("retry-after", "60")],
                json!({"error": "Too Many Requests"}),
            ));
        }
        _ => {}
    }
    let f = form(&seen.body);
    let Some((client, secret)) = client_of(seen, &f) else {
        return error("invalid_client", "no client authentication");
    };
    // TikTok names the client `client_key`, in the body.
    if flavor == Flavor::TikTok && f.get("client_key").map(String::as_str) != Some(CLIENT_ID) {
        return error("invalid_client", "client_key is missing or wrong");
    }
    // X and Reddit want HTTP Basic; Mastodon and Instagram take the body.
    let basic = seen
        .headers
        .get("authorization")
        .is_some_and(|h| h.starts_with("Basic "));
    let expected_secret = match flavor {
        Flavor::Mastodon => o.apps.get(&client).map(|(s, _)| s.clone()),
        _ => (client == CLIENT_ID).then(|| CLIENT_SECRET.to_string()),
    };
    if matches!(flavor, Flavor::X | Flavor::Reddit) && !basic
        || expected_secret.as_deref() != Some(secret.as_str())
    {
        return Some(json_response(
            401,
            &[],
            json!({"error": "invalid_client", "error_description": "Client authentication failed"}),
        ));
    }
    let life = o.lifetime;
    let issue = |o: &mut OAuth, with_refresh: bool| {
        let access = o.mint(&format!("{flavor:?}-access").to_lowercase());
        o.access.insert(access.clone(), Instant::now() + life);
        o.issued_to.insert(access.clone(), client.clone());
        let mut body = json!({"access_token": access, "token_type": "bearer", "scope": f.get("scope").cloned().unwrap_or_else(|| "tweet.read tweet.write users.read offline.access".into())});
        match flavor {
            Flavor::Mastodon => {
                body["token_type"] = json!("Bearer");
                body["created_at"] = json!(1_700_000_000);
            }
            // Instagram's short-lived token answer has no `token_type`.
            Flavor::Instagram | Flavor::Threads => {
                body.as_object_mut().unwrap().remove("token_type");
                body["user_id"] = json!(super::meta::USER_ID);
                body["expires_in"] = json!(life.as_secs());
            }
            Flavor::TikTok => {
                body["expires_in"] = json!(life.as_secs());
                body["refresh_expires_in"] = json!(15_552_000);
                body["open_id"] = json!("tt-open-id-1");
                body["scope"] = json!("user.info.basic,user.info.profile,video.publish");
            }
            _ => body["expires_in"] = json!(life.as_secs()),
        }
        if let Some(t) = &o.token_type {
            body["token_type"] = json!(t);
        }
        if with_refresh {
            let r = o.mint(&format!("{flavor:?}-refresh").to_lowercase());
            o.refresh.insert(r.clone());
            body["refresh_token"] = json!(r);
        }
        json_response(200, &[], body)
    };
    match f.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            o.code_calls += 1;
            let code = f.get("code").cloned().unwrap_or_default();
            let verifier = f.get("code_verifier").cloned();
            let Some(c) = o.codes.get_mut(&code) else {
                return error(
                    "invalid_grant",
                    "Value passed for the authorization code was invalid.",
                );
            };
            if c.used || c.issued.elapsed() > Duration::from_secs(30) {
                return error(
                    "invalid_grant",
                    "Value passed for the authorization code was invalid.",
                );
            }
            if Some(&c.redirect_uri) != f.get("redirect_uri") {
                return error("invalid_grant", "redirect_uri does not match");
            }
            // TikTok's desktop flow: the challenge is the hex of the hash.
            let computed = verifier.as_deref().map(|v| {
                if flavor == Flavor::TikTok {
                    hex::encode(sha2::Sha256::digest(v.as_bytes()))
                } else {
                    s256(v)
                }
            });
            if let Some(ch) = &c.challenge
                && computed.as_deref() != Some(ch.as_str())
            {
                return error(
                    "invalid_grant",
                    "code_verifier does not match the challenge",
                );
            }
            c.used = true;
            let with_refresh = matches!(
                flavor,
                Flavor::X | Flavor::Reddit | Flavor::Google | Flavor::TikTok
            );
            Some(issue(&mut o, with_refresh))
        }
        Some("refresh_token")
            if matches!(
                flavor,
                Flavor::X | Flavor::Reddit | Flavor::Google | Flavor::TikTok
            ) =>
        {
            o.refresh_calls += 1;
            let r = f.get("refresh_token").cloned().unwrap_or_default();
            if !o.refresh.contains(&r) {
                if o.spent.contains(&r) {
                    o.reused += 1;
                }
                return error("invalid_grant", "Value passed for the token was invalid.");
            }
            if matches!(flavor, Flavor::X | Flavor::TikTok) {
                // Single use: the old refresh token dies now.
                o.refresh.remove(&r);
                o.spent.insert(r);
                Some(issue(&mut o, true))
            } else {
                // Reddit keeps the refresh token and omits it from the answer.
                Some(issue(&mut o, false))
            }
        }
        _ => error("unsupported_grant_type", "unsupported grant type"),
    }
}

/// The app password the Bluesky fake accepts.
pub const APP_PASSWORD: &str = "app-password-PLANTED-7c2e";

fn bluesky(st: &FakeState, seen: &Seen) -> Option<Response> {
    let mut o = st.oauth.lock().unwrap();
    let life = o.lifetime;
    let session = |o: &mut OAuth| {
        let access = o.mint("bsky-access");
        let refresh = o.mint("bsky-refresh");
        o.access.insert(access.clone(), Instant::now() + life);
        o.refresh.insert(refresh.clone());
        json_response(
            200,
            &[],
            json!({"accessJwt": access, "refreshJwt": refresh, "handle": "alice.test", "did": "did:plc:lab", "active": true}),
        )
    };
    match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/xrpc/com.atproto.server.createSession") => {
            let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap_or_default();
            if seen.headers.get("content-type").map(String::as_str) != Some("application/json") {
                return Some(json_response(
                    400,
                    &[],
                    json!({"error": "InvalidRequest", "message": "Expected application/json"}),
                ));
            }
            if body["identifier"] != "alice.test" || body["password"] != APP_PASSWORD {
                return Some(json_response(
                    401,
                    &[],
                    json!({"error": "AuthenticationRequired", "message": "Invalid identifier or password"}),
                ));
            }
            o.code_calls += 1;
            Some(session(&mut o))
        }
        ("POST", "/xrpc/com.atproto.server.refreshSession") => {
            o.refresh_calls += 1;
            match o.token_mode {
                Mode::ServerError => {
                    return Some(json_response(502, &[], json!({"error": "UpstreamFailure"})));
                }
                Mode::RateLimited => {
                    return Some(json_response(
                        429,
                        &[("ratelimit-reset", "60")],
                        json!({"error": "RateLimitExceeded"}),
                    ));
                }
                _ => {}
            }
            let presented = seen
                .headers
                .get("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_string();
            if !o.refresh.remove(&presented) {
                return Some(json_response(
                    400,
                    &[],
                    json!({"error": "ExpiredToken", "message": "Token has been revoked"}),
                ));
            }
            o.spent.insert(presented);
            Some(session(&mut o))
        }
        _ => None,
    }
}
