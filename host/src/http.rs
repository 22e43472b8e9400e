//! The HTTP broker: the one way any plugin reaches the network.
//!
//! Owns, in this order for every request: the allow-list check (scheme,
//! host, port — from the plugin's manifest, the user's endpoint overrides
//! and the account's host settings), writing credentials where the request's
//! structure says (a `secret` part of its URL, a header value or its body,
//! and the manifest's placements: bearer, header, query parameter, Meta's
//! `appsecret_proof` computed here — see [`render`] and [`proof`]),
//! declared, learned and plugin-reported rate limits, timeouts, request and
//! response size caps, redirects (followed only when the request asks, each
//! hop re-checked, credentials never carried to another origin), and
//! scrubbing every form of every stored secret out of the response before
//! a plugin sees it.
//!
//! Credentials and post content: a plugin builds its requests from post
//! text, file names and platform answers, so the broker never looks for a
//! credential inside text — a `{{access_token}}` in a post stays text. A
//! contract 0.1.0 plugin marks credentials with such placeholders; its
//! requests are turned into parts ([`legacy_url`], [`legacy_header`]) only
//! where a 0.1.0 template may name a credential (the very start of the URL,
//! a whole header value), and refused when the placeholder's own text
//! appears in the call's content or in an answer it received ([`Taint`]).
//!
//! Never: retries a request (a publish is not idempotent; the caller
//! decides), lets a plugin pick a target through a header, or puts a secret
//! into an error message or log line.
//!
//! Rate limiting is a sliding window per (platform, account or app, class)
//! plus "blocked until" times learned from `Retry-After` and the manifest's
//! rate-limit headers. It is hand-rolled because it must key on plugin
//! declarations and on learned resets, which `governor`'s fixed quotas do
//! not model; when a limit would be exceeded the broker answers with a
//! synthetic 429 (nothing sent) rather than sleeping past the call deadline.
//!
//! Cookies (session logins) live in a jar per plugin call ([`Jar`]): what a
//! response sets is sent back on that call's later requests to the same
//! host and never shown to the plugin. It is hand-rolled because reqwest's
//! cookie store lives as long as its client, which is shared by every call
//! and account.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use url::Url;

use crate::config::{Http, Limits};
use crate::contract::wit::host::{Body, BodyPart, HttpError, MediaSlice, Request, Response};
use crate::contract::wit::types::{
    CredentialPlacement, Field, HttpMethod, LimitScope, Pair, RateLimit, RateLimitHeaders,
    ResetFormat, SecretEncoding, TextPart,
};
use crate::secret::{Scrubber, Secret};

/// One allowed origin pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllowedHost {
    pub scheme: String,
    /// A host name, or `*.example.com` for any subdomain.
    pub host: String,
    pub port: u16,
}

impl AllowedHost {
    /// From a URL: exactly its scheme, host and port.
    pub fn from_url(url: &Url) -> Option<Self> {
        Some(AllowedHost {
            scheme: url.scheme().to_string(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }

    /// From a manifest `hosts` entry: `api.x.com`, `*.cdn.example`,
    /// `host:8443`; always https.
    pub fn from_pattern(p: &str) -> Result<Self, String> {
        let (host, port) = match p.rsplit_once(':') {
            Some((h, port)) => (
                h,
                port.parse::<u16>()
                    .map_err(|_| format!("host `{p}` has an invalid port"))?,
            ),
            None => (p, 443),
        };
        let bare = host.strip_prefix("*.").unwrap_or(host);
        let ok = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok || port == 0 {
            return Err(format!("host `{p}` is not a well-formed host name"));
        }
        Ok(AllowedHost {
            scheme: "https".into(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// As it is recorded beside an account's credential and shown to
    /// people: `https://api.x.com:443`, `https://*.cdn.example:443`.
    pub fn origin(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }

    /// Read back what [`AllowedHost::origin`] wrote.
    pub fn from_origin(s: &str) -> Option<Self> {
        let (scheme, rest) = s.split_once("://")?;
        let (host, port) = rest.rsplit_once(':')?;
        (!scheme.is_empty() && !host.is_empty()).then_some(())?;
        Some(AllowedHost {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port: port.parse().ok().filter(|&p| p != 0)?,
        })
    }

    /// Whether `url` is on this origin (a subdomain of it, for `*.`).
    pub fn matches(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        };
        host_ok && url.scheme() == self.scheme && url.port_or_known_default() == Some(self.port)
    }
}

/// Named credential values for one account. Never leaves the host.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    values: Vec<(String, Secret)>,
    scrubber: std::sync::OnceLock<Scrubber>,
}

impl Credentials {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with(mut self, name: &str, value: Secret) -> Self {
        if !value.is_empty() {
            self.values.push((name.to_string(), value));
        }
        self
    }
    fn get(&self, name: &str) -> Option<&Secret> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    fn all(&self) -> Vec<&Secret> {
        self.values.iter().map(|(_, v)| v).collect()
    }
    /// What removes every form of these credentials from text or bytes.
    pub fn scrubber(&self) -> &Scrubber {
        self.scrubber.get_or_init(|| Scrubber::new(&self.all()))
    }
}

/// Placeholder names (`access_token` in `{{access_token}}`) that appeared
/// in what a plugin call was given (the post, the account) or received
/// (platform answers). A placeholder whose text is tainted is never filled:
/// that text may have come from someone other than the plugin's author.
#[derive(Debug, Default)]
pub struct Taint {
    names: Mutex<Vec<String>>,
}

impl Taint {
    /// Remember every `{{name}}` in `text`.
    pub fn mark(&self, text: &str) {
        if !text.contains("{{") {
            return;
        }
        let mut names = self.names.lock().expect("taint");
        for name in placeholder_names(text) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    pub fn mark_bytes(&self, bytes: &[u8]) {
        if memchr_pair(bytes) {
            self.mark(&String::from_utf8_lossy(bytes));
        }
    }
    fn holds(&self, name: &str) -> bool {
        self.names.lock().expect("taint").iter().any(|n| n == name)
    }
}

fn memchr_pair(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"{{")
}

/// The trimmed names of every `{{…}}` in `text`.
fn placeholder_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                out.push(after[..end].trim().to_string());
                rest = &after[end + 2..];
            }
            None => break,
        }
    }
    out
}

/// A request as `--dry-run` shows it: secrets replaced by `[redacted]`.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    /// The post item it belongs to: 0 the post itself, 1… its thread.
    pub item: u32,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// What in it stands for a value only an earlier answer would give.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What one plugin call may do on the network, for one account.
#[derive(Clone)]
pub struct Scope {
    pub plugin: String,
    pub account: Option<String>,
    pub allow: Arc<Vec<AllowedHost>>,
    pub credentials: Option<Arc<Credentials>>,
    /// Where the account's credential goes when a request asks for it.
    pub placement: Arc<Vec<CredentialPlacement>>,
    /// The account's settings, for `setting` parts.
    pub settings: Arc<Vec<Pair>>,
    pub rate_limits: Arc<Vec<RateLimit>>,
    pub rate_headers: Option<RateLimitHeaders>,
    /// Set for `--dry-run`: requests are recorded here, not sent.
    pub dry_run: Option<Arc<Mutex<Vec<RecordedRequest>>>>,
    /// Requests that left the host: zero means nothing reached the
    /// platform, so a failed publish is safe to retry.
    pub dispatched: Arc<std::sync::atomic::AtomicU32>,
    /// Placeholder texts seen in this call's content and answers.
    pub taint: Arc<Taint>,
    /// The only hosts a request carrying a secret may go to: the account's
    /// approved hosts and the ones the user configured. `None`: no pinning
    /// (calls without an account).
    pub pinned: Option<Arc<Vec<AllowedHost>>>,
    /// Cookies responses set during this call.
    pub jar: Arc<Jar>,
    /// The User-Agent for this platform's requests, unless a request sets
    /// its own (`platforms.ID.user_agent`).
    pub user_agent: Option<String>,
    /// This call's uploads: the plugin's checkpoint, bytes sent, and texts
    /// never to be shown.
    pub uploads: Arc<Uploads>,
}

/// Where a plugin keeps how far a long upload of one delivery got, so a
/// later attempt of the same delivery resumes there (the publishing
/// journal's side, encrypted; see `publish::deliver`).
pub trait Checkpoint: Send + Sync {
    fn load(&self) -> Option<String>;
    /// Keep `state`; an empty one forgets.
    fn save(&self, state: &str) -> Result<(), String>;
}

/// Opens media attachment `handle` of the call (checked to be a regular
/// file) for the broker to read slices of.
pub type MediaOpen = dyn Fn(u32) -> Result<std::fs::File, String> + Send + Sync;

/// A piece of a request body.
enum Piece {
    Bytes(axum::body::Bytes),
    /// Bytes `[offset, offset+len)` of an open media file.
    Media {
        file: Arc<std::fs::File>,
        offset: u64,
        len: u64,
    },
}

/// How much of a media slice is read from disk at a time: about the most
/// of it in memory per request, whatever the slice's size.
const READ_PIECE: u64 = 256 << 10;

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::Media { len, .. } => *len,
        }
    }

    /// The whole body in memory (bodies without media; dry runs).
    fn concat(pieces: &[Piece]) -> axum::body::Bytes {
        let mut out = Vec::new();
        for p in pieces {
            if let Piece::Bytes(b) = p {
                out.extend_from_slice(b);
            }
        }
        out.into()
    }

    /// The body as a stream: bytes as they are, media read from disk in
    /// small buffers as the connection takes it (tokio's file reads run
    /// off the async workers).
    fn stream(
        pieces: Arc<Vec<Piece>>,
    ) -> impl futures::Stream<Item = Result<axum::body::Bytes, std::io::Error>> + Send {
        use futures::StreamExt as _;
        let parts: Vec<_> = (0..pieces.len())
            .map(|i| {
                let pieces = pieces.clone();
                futures::stream::once(async move {
                    match &pieces[i] {
                        Piece::Bytes(b) => {
                            futures::stream::once(futures::future::ready(Ok(b.clone()))).boxed()
                        }
                        Piece::Media { file, offset, len } => {
                            use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
                            let opened = async {
                                let mut f = tokio::fs::File::from_std(file.try_clone()?);
                                f.seek(std::io::SeekFrom::Start(*offset)).await?;
                                Ok::<_, std::io::Error>(f.take(*len))
                            }
                            .await;
                            match opened {
                                Ok(r) => tokio_util::io::ReaderStream::with_capacity(
                                    r,
                                    READ_PIECE as usize,
                                )
                                .boxed(),
                                Err(e) => {
                                    futures::stream::once(futures::future::ready(Err(e))).boxed()
                                }
                            }
                        }
                    }
                })
                .flatten()
            })
            .collect();
        futures::stream::iter(parts).flatten()
    }
}

/// What one plugin call keeps about its uploads.
#[derive(Default)]
pub struct Uploads {
    /// The delivery's checkpoint, when the call publishes one.
    pub checkpoint: Option<Arc<dyn Checkpoint>>,
    /// Media bytes sent so far (progress).
    pub sent: std::sync::atomic::AtomicU64,
    /// Texts never shown in messages, logs or dry runs: the values a
    /// checkpoint holds (a resumable session URL is a capability: whoever
    /// has it can write to the upload).
    hidden: std::sync::RwLock<Vec<String>>,
}

impl Uploads {
    /// The uploads of a call that publishes one delivery item.
    pub fn with_checkpoint(checkpoint: Arc<dyn Checkpoint>) -> Self {
        Uploads {
            checkpoint: Some(checkpoint),
            ..Default::default()
        }
    }

    /// Hide the values of a checkpoint's `state` from everything shown: its
    /// JSON strings (and their URL query values), or the whole text.
    pub fn hide_state(&self, state: &str) {
        let mut found = Vec::new();
        match serde_json::from_str::<serde_json::Value>(state) {
            Ok(v) => collect_strings(&v, &mut found),
            Err(_) => found.push(state.to_string()),
        }
        let mut more = Vec::new();
        for s in &found {
            if let Ok(u) = Url::parse(s) {
                more.extend(u.query_pairs().map(|(_, v)| v.into_owned()));
                if let Some(q) = u.query() {
                    more.push(q.to_string());
                }
            }
        }
        found.extend(more);
        // Short values (a chunk index, a size) are not secrets and would
        // hide ordinary text.
        found.retain(|s| s.len() >= 8);
        let mut hidden = self.hidden.write().expect("hidden");
        for s in found {
            if !hidden.contains(&s) {
                hidden.push(s);
            }
        }
        // Longest first, so a URL goes before its parts.
        hidden.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `text` with every hidden value replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let hidden = self.hidden.read().expect("hidden");
        let mut out = text.to_string();
        for h in hidden.iter() {
            if out.contains(h.as_str()) {
                out = out.replace(h.as_str(), "[redacted]");
            }
        }
        out
    }
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// The cookies of one plugin call: per host, by name, as responses set
/// them (`Set-Cookie`: the name and value; attributes other than an
/// expiry in the past are not needed within one call).
#[derive(Debug, Default)]
pub struct Jar(Mutex<Vec<(String, String, String)>>);

impl Jar {
    /// Keep what `headers` (a response from `url`) sets.
    fn absorb(&self, url: &Url, headers: &reqwest::header::HeaderMap) {
        let Some(host) = url.host_str() else { return };
        let mut jar = self.0.lock().expect("cookie jar");
        for v in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            let mut attrs = v.split(';');
            let Some((name, value)) = attrs.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim().trim_matches('"'));
            if name.is_empty() {
                continue;
            }
            let gone = value.is_empty()
                || attrs.any(|a| {
                    let a = a.trim().to_ascii_lowercase();
                    a == "max-age=0" || a.starts_with("max-age=-")
                });
            jar.retain(|(h, n, _)| !(h == host && n == name));
            if !gone {
                jar.push((host.to_string(), name.to_string(), value.to_string()));
            }
        }
    }

    /// The `Cookie` header value for a request to `url`, if any.
    fn header_for(&self, url: &Url) -> Option<String> {
        let host = url.host_str()?;
        let jar = self.0.lock().expect("cookie jar");
        let pairs: Vec<String> = jar
            .iter()
            .filter(|(h, _, _)| h == host)
            .map(|(_, n, v)| format!("{n}={v}"))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }
}

/// Whether `req` carries anything secret: the account's credential, or a
/// secret part in its URL, headers or body.
fn carries_secret(req: &Request) -> bool {
    let in_text = |parts: &[TextPart]| {
        parts
            .iter()
            .any(|p| matches!(p, TextPart::Secret(_) | TextPart::AppsecretProof))
    };
    req.credential
        || in_text(&req.url)
        || req.headers.iter().any(|h| in_text(&h.value))
        || matches!(&req.body, Body::Parts(parts) if parts.iter().any(|p| matches!(p, BodyPart::Secret(_))))
}

#[derive(Default)]
struct Window {
    sent: VecDeque<Instant>,
}

/// The process-wide broker. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    client: reqwest::Client,
    limits: Limits,
    windows: Arc<Mutex<HashMap<String, Window>>>,
    blocked: Arc<Mutex<HashMap<String, Instant>>>,
    /// Budgets plugins reported (`report-limit`): requests left until when,
    /// per plugin, account and class (`*` for every class).
    reported: Arc<Mutex<HashMap<String, (u32, Instant)>>>,
}

impl Broker {
    pub fn new(limits: &Limits, http: &Http) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(http.user_agent.clone())
            .timeout(Duration::from_millis(limits.http_timeout_ms))
            .connect_timeout(Duration::from_millis(limits.http_timeout_ms.min(10_000)))
            .build()?;
        Ok(Broker {
            client,
            limits: limits.clone(),
            windows: Arc::default(),
            blocked: Arc::default(),
            reported: Arc::default(),
        })
    }

    /// The underlying HTTP client, for host-side requests that are not a
    /// plugin's (token endpoints, notifications). Cheap to clone.
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Send `req` for the plugin call `scope`. Every path out of the host
    /// goes through here.
    pub async fn send(
        &self,
        scope: &Scope,
        req: Request,
        media: &MediaOpen,
    ) -> Result<Response, HttpError> {
        let no_secrets = Scrubber::default();
        let scrubber = scope
            .credentials
            .as_ref()
            .map(|c| c.scrubber())
            .unwrap_or(&no_secrets);
        let redact = |s: &str| scope.uploads.redact(&scrubber.text(s));

        // Build the real request: secrets written where its parts say.
        let creds = scope.credentials.as_deref();
        let fill = |parts: &[TextPart]| render(parts, creds, &scope.settings);
        let mut url_text = fill(&req.url).map_err(HttpError::NotSent)?;
        // What messages show for this request: the real URL, scrubbed.
        let template = shown_url(&url_text, scrubber);
        let mut headers: Vec<(String, String)> = Vec::new();
        for Field { name, value } in &req.headers {
            check_header_name(name).map_err(HttpError::NotSent)?;
            headers.push((name.clone(), fill(value).map_err(HttpError::NotSent)?));
        }
        // What a dry run shows of the body: media as its size, never its
        // bytes.
        let mut shown_body: Option<String> = None;
        // The body in pieces: bytes, and slices of media files read from
        // disk as they are sent.
        let mut pieces: Vec<Piece> = Vec::new();
        let slice = |m: &MediaSlice| -> Result<Piece, HttpError> {
            let file = media(m.handle).map_err(HttpError::NotSent)?;
            let size = file
                .metadata()
                .map_err(|e| HttpError::NotSent(format!("media attachment {}: {e}", m.handle)))?
                .len();
            if m.offset.checked_add(m.length).is_none_or(|end| end > size) {
                return Err(HttpError::NotSent(format!(
                    "the plugin asked for bytes {}..{} of media attachment {}, which has {size}",
                    m.offset,
                    m.offset.saturating_add(m.length),
                    m.handle
                )));
            }
            Ok(Piece::Media {
                file: Arc::new(file),
                offset: m.offset,
                len: m.length,
            })
        };
        match &req.body {
            Body::Empty => {}
            Body::Bytes(b) => pieces.push(Piece::Bytes(b.clone().into())),
            Body::Media(m) => {
                shown_body = Some(format!(
                    "(media attachment {}: {} bytes from offset {})",
                    m.handle, m.length, m.offset
                ));
                pieces.push(slice(m)?);
            }
            Body::Parts(parts) => {
                let mut shown = String::new();
                for p in parts {
                    match p {
                        BodyPart::Bytes(b) => {
                            shown.push_str(&String::from_utf8_lossy(b));
                            pieces.push(Piece::Bytes(b.clone().into()));
                        }
                        BodyPart::Media(m) => {
                            shown.push_str(&format!(
                                "(media attachment {}: {} bytes)",
                                m.handle, m.length
                            ));
                            pieces.push(slice(m)?);
                        }
                        BodyPart::Secret(part) => {
                            let value =
                                fill(&[TextPart::Secret(*part)]).map_err(HttpError::NotSent)?;
                            shown.push_str(&value);
                            pieces.push(Piece::Bytes(value.into_bytes().into()));
                        }
                    }
                }
                shown_body = Some(shown);
            }
        }
        let body_len: u64 = pieces.iter().map(Piece::len).sum();
        // Media bytes in this body (upload progress).
        let mut media_bytes: u64 = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Media { .. }))
            .map(Piece::len)
            .sum();
        if body_len > self.limits.max_request_bytes {
            return Err(HttpError::NotSent(format!(
                "the request body is {body_len} bytes; the host's cap is {}",
                self.limits.max_request_bytes
            )));
        }
        let pieces = Arc::new(pieces);
        if req.credential {
            let secret = |name: &str| {
                creds.and_then(|c| c.get(name)).ok_or_else(|| {
                    HttpError::NotSent(format!(
                        "this call has no {}",
                        if name == "client_secret" {
                            "OAuth client secret (the plugin asks for a proof made with it; set platforms.<id>.client_secret_env in the config)"
                        } else {
                            "account credential"
                        }
                    ))
                })
            };
            let mut query: Vec<(String, String)> = Vec::new();
            let mut cookies: Vec<(String, String)> = Vec::new();
            for placement in scope.placement.iter() {
                let token = secret("access_token")?;
                match placement {
                    CredentialPlacement::Bearer => {
                        headers.push(("authorization".into(), format!("Bearer {}", token.expose())))
                    }
                    CredentialPlacement::Header(h) => {
                        headers.push((h.name.clone(), format!("{}{}", h.prefix, token.expose())))
                    }
                    CredentialPlacement::Query(param) => {
                        query.push((param.clone(), token.expose().to_string()))
                    }
                    CredentialPlacement::Proof(param) => {
                        let key = secret("client_secret")?;
                        query.push((param.clone(), proof(key, token)));
                    }
                    CredentialPlacement::Cookie(name) => {
                        cookies.push((name.clone(), token.expose().to_string()))
                    }
                }
            }
            if !query.is_empty() {
                let mut u = Url::parse(&url_text)
                    .map_err(|e| HttpError::NotSent(format!("invalid URL `{template}`: {e}")))?;
                u.query_pairs_mut().extend_pairs(&query);
                url_text = u.to_string();
            }
            if !cookies.is_empty() {
                let value: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
                headers.push(("cookie".into(), value.join("; ")));
            }
        }
        let mut url = Url::parse(&url_text)
            .map_err(|e| HttpError::NotSent(format!("invalid URL `{}`: {e}", redact(&template))))?;
        self.check_allowed(scope, &url, &redact(&template))?;
        if let Some(ua) = &scope.user_agent
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
        {
            headers.push(("user-agent".into(), ua.clone()));
        }
        if let Some(pinned) = &scope.pinned
            && carries_secret(&req)
            && !pinned.iter().any(|a| a.matches(&url))
        {
            return Err(HttpError::Denied(format!(
                "{}://{}:{} was added by plugin `{}` after account {}/{} was connected, and its credential goes there only once you approve it: run `outreach plugins approve {}` (nothing was sent)",
                url.scheme(),
                url.host_str().unwrap_or("?"),
                url.port_or_known_default().unwrap_or(0),
                scope.plugin,
                scope.plugin,
                scope.account.as_deref().unwrap_or("?"),
                scope.plugin,
            )));
        }

        if let Some(rec) = &scope.dry_run {
            rec.lock().expect("dry-run log").push(RecordedRequest {
                item: 0,
                note: None,
                method: method_name(req.method).into(),
                url: redact(url.as_str()),
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.clone(), redact(v)))
                    .collect(),
                body: match &shown_body {
                    Some(shown) => redact(shown),
                    None => {
                        let bytes = Piece::concat(&pieces);
                        match std::str::from_utf8(&bytes) {
                            Ok(text) => redact(text),
                            Err(_) => format!("({} bytes, not text)", bytes.len()),
                        }
                    }
                },
            });
            return Err(HttpError::NotSent("dry run: not sent".into()));
        }

        let class = if req.class.is_empty() {
            "default"
        } else {
            req.class.as_str()
        };
        if let Some(wait) = self.rate_check(scope, class) {
            let secs = wait.as_secs().max(1);
            return Ok(Response {
                status: 429,
                headers: vec![Pair {
                    name: "retry-after".into(),
                    value: secs.to_string(),
                }],
                body: format!(
                    "{{\"error\":\"outreach held this request back: the {} rate limit allows more in {secs} s (nothing was sent)\"}}",
                    scope.plugin
                )
                .into_bytes(),
                final_url: redact(url.as_str()),
            });
        }

        let mut method = to_reqwest(req.method);
        // Bytes are shared, not copied, by each hop's request; media is
        // read from disk as it is sent (a new read for each hop).
        let streamed = pieces.iter().any(|p| matches!(p, Piece::Media { .. }));
        let whole = (!streamed).then(|| Piece::concat(&pieces));
        let mut with_body = true;
        for hop in 0..=self.limits.max_redirects {
            let mut rb = self.client.request(method.clone(), url.clone());
            // One Cookie header: the request's own (with the credential)
            // and what this call's answers set for this host.
            let mut jarred = scope.jar.header_for(&url);
            for (n, v) in &headers {
                if n.eq_ignore_ascii_case("cookie")
                    && let Some(j) = jarred.take()
                {
                    rb = rb.header(n.as_str(), format!("{v}; {j}"));
                } else {
                    rb = rb.header(n.as_str(), v.as_str());
                }
            }
            if let Some(j) = jarred {
                rb = rb.header("cookie", j);
            }
            if with_body {
                rb = match &whole {
                    Some(b) => rb.body(b.clone()),
                    None => rb
                        .header("content-length", body_len)
                        .body(reqwest::Body::wrap_stream(Piece::stream(pieces.clone()))),
                };
            }
            scope
                .dispatched
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let resp = rb.send().await.map_err(|e| {
                if e.is_connect() {
                    // No connection, so nothing reached the platform.
                    scope
                        .dispatched
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
                classify_send_error(&e, &redact(&template))
            })?;
            let status = resp.status();
            // The platform has answered: the body's media went out.
            let went = std::mem::take(&mut media_bytes);
            scope
                .uploads
                .sent
                .fetch_add(went, std::sync::atomic::Ordering::Relaxed);
            crate::metrics::uploaded(&scope.plugin, went);
            scope.jar.absorb(&url, resp.headers());
            if req.follow_redirects
                && status.is_redirection()
                && let Some(loc) = resp.headers().get(reqwest::header::LOCATION)
            {
                if hop == self.limits.max_redirects {
                    return Err(HttpError::NotSent(format!(
                        "more than {} redirects from {}",
                        self.limits.max_redirects,
                        redact(&template)
                    )));
                }
                let loc = loc.to_str().unwrap_or_default();
                let next = url
                    .join(loc)
                    .map_err(|e| HttpError::NotSent(format!("bad redirect location: {e}")))?;
                self.check_allowed(scope, &next, &redact(next.as_str()))?;
                // Credentials go only to the origin the plugin addressed.
                if next.origin() != url.origin() {
                    headers.retain(|(n, v)| {
                        !n.eq_ignore_ascii_case("authorization") && !scrubber.finds(v.as_bytes())
                    });
                }
                if status == reqwest::StatusCode::SEE_OTHER
                    || (matches!(status.as_u16(), 301 | 302) && method == reqwest::Method::POST)
                {
                    method = reqwest::Method::GET;
                    with_body = false;
                }
                url = next;
                continue;
            }
            let mut out = self.read_response(resp, scrubber, &template).await?;
            out.final_url = redact(url.as_str());
            scope.taint.mark_bytes(&out.body);
            for h in &out.headers {
                scope.taint.mark(&h.value);
            }
            self.learn(scope, class, &out);
            return Ok(out);
        }
        unreachable!("the redirect loop always returns")
    }

    fn check_allowed(&self, scope: &Scope, url: &Url, shown: &str) -> Result<(), HttpError> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(HttpError::Denied(format!(
                "{shown}: URLs with user info are not allowed"
            )));
        }
        if scope.allow.iter().any(|a| a.matches(url)) {
            Ok(())
        } else {
            Err(HttpError::Denied(format!(
                "{}://{}:{} is not among the hosts plugin `{}` declared or the config allows",
                url.scheme(),
                url.host_str().unwrap_or("?"),
                url.port_or_known_default().unwrap_or(0),
                scope.plugin
            )))
        }
    }

    async fn read_response(
        &self,
        mut resp: reqwest::Response,
        scrubber: &Scrubber,
        shown: &str,
    ) -> Result<Response, HttpError> {
        let cap = self.limits.max_response_bytes;
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(HttpError::TooLarge(format!(
                "the response from {shown} is larger than the host's cap of {cap} bytes"
            )));
        }
        let status = resp.status().as_u16();
        // Cookies stay in the call's jar, never in the plugin.
        let headers = resp
            .headers()
            .iter()
            .filter(|(n, _)| *n != reqwest::header::SET_COOKIE)
            .map(|(n, v)| Pair {
                name: n.as_str().to_string(),
                value: scrubber.text(&String::from_utf8_lossy(v.as_bytes())),
            })
            .collect();
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > cap {
                        return Err(HttpError::TooLarge(format!(
                            "the response from {shown} is larger than the host's cap of {cap} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(HttpError::UnknownOutcome(format!(
                        "the response from {shown} was cut off: {}",
                        root_cause(&e)
                    )));
                }
            }
        }
        let body = scrubber.bytes(body);
        Ok(Response {
            status,
            headers,
            body,
            final_url: String::new(),
        })
    }

    fn key(scope: &Scope, class: &str, limit_scope: LimitScope) -> String {
        match limit_scope {
            LimitScope::App => format!("{}|app|{class}", scope.plugin),
            LimitScope::Account => format!(
                "{}|{}|{class}",
                scope.plugin,
                scope.account.as_deref().unwrap_or("-")
            ),
        }
    }

    /// A limit the plugin read from a response body: at most `remaining`
    /// more requests of `class` (empty: every class) for this call's account
    /// until `reset_seconds` from now.
    pub fn report_limit(&self, scope: &Scope, class: &str, remaining: u32, reset_seconds: u64) {
        let class = if class.is_empty() { "*" } else { class };
        let until = Instant::now() + Duration::from_secs(reset_seconds.min(24 * 3600));
        tracing::debug!(plugin = %scope.plugin, class, remaining, reset_seconds, "plugin reported a rate limit");
        self.reported.lock().expect("rate table").insert(
            Self::key(scope, class, LimitScope::Account),
            (remaining, until),
        );
    }

    /// `None` if the request may go now (and it is counted); otherwise how
    /// long until it may.
    fn rate_check(&self, scope: &Scope, class: &str) -> Option<Duration> {
        let now = Instant::now();
        let account_key = Self::key(scope, class, LimitScope::Account);
        if let Some(until) = self.blocked.lock().expect("rate table").get(&account_key)
            && *until > now
        {
            return Some(*until - now);
        }
        {
            let mut reported = self.reported.lock().expect("rate table");
            reported.retain(|_, (_, until)| *until > now);
            let keys = [
                account_key.clone(),
                Self::key(scope, "*", LimitScope::Account),
            ];
            for k in &keys {
                if let Some((0, until)) = reported.get(k) {
                    return Some(*until - now);
                }
            }
            for k in &keys {
                if let Some((left, _)) = reported.get_mut(k) {
                    *left -= 1;
                }
            }
        }
        let mut windows = self.windows.lock().expect("rate table");
        let applicable: Vec<&RateLimit> = scope
            .rate_limits
            .iter()
            .filter(|l| l.class == class)
            .collect();
        for l in &applicable {
            let w = windows.entry(Self::key(scope, class, l.scope)).or_default();
            let window = Duration::from_secs(u64::from(l.window_seconds));
            while w
                .sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                w.sent.pop_front();
            }
            if w.sent.len() >= l.requests as usize {
                let oldest = *w.sent.front().expect("non-empty window");
                return Some(window.saturating_sub(now.duration_since(oldest)));
            }
        }
        for l in applicable {
            windows
                .entry(Self::key(scope, class, l.scope))
                .or_default()
                .sent
                .push_back(now);
        }
        None
    }

    /// Learn "blocked until" from a 429's `Retry-After` or the manifest's
    /// rate-limit headers reporting nothing remaining.
    fn learn(&self, scope: &Scope, class: &str, resp: &Response) {
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(name))
                .map(|p| p.value.trim().to_string())
        };
        let mut wait: Option<Duration> = None;
        if resp.status == 429
            && let Some(s) = header("retry-after").and_then(|v| v.parse::<u64>().ok())
        {
            wait = Some(Duration::from_secs(s));
        }
        if let Some(h) = &scope.rate_headers {
            let remaining = h
                .remaining
                .as_deref()
                .and_then(header)
                .and_then(|v| v.parse::<f64>().ok());
            let exhausted = resp.status == 429 || remaining == Some(0.0);
            if exhausted
                && wait.is_none()
                && let Some(reset) = h.reset.as_deref().and_then(header)
            {
                wait = reset_delay(&reset, h.reset_format);
            }
        }
        if let Some(w) = wait {
            let w = w.min(Duration::from_secs(24 * 3600));
            tracing::info!(plugin = %scope.plugin, class, wait_s = w.as_secs(), "platform rate limit reached; holding requests");
            self.blocked.lock().expect("rate table").insert(
                Self::key(scope, class, LimitScope::Account),
                Instant::now() + w,
            );
        }
    }
}

/// How long until a rate-limit reset written in `format`.
pub fn reset_delay(value: &str, format: ResetFormat) -> Option<Duration> {
    let now = chrono::Utc::now();
    match format {
        ResetFormat::SecondsUntil => value
            .parse::<f64>()
            .ok()
            .map(|s| Duration::from_secs_f64(s.max(0.0))),
        ResetFormat::UnixSeconds => {
            let at = value.parse::<f64>().ok()?;
            Some(Duration::from_secs_f64(
                (at - now.timestamp() as f64).max(0.0),
            ))
        }
        ResetFormat::Timestamp => {
            let at = chrono::DateTime::parse_from_rfc3339(value).ok()?;
            Some(
                (at.with_timezone(&chrono::Utc) - now)
                    .to_std()
                    .unwrap_or_default(),
            )
        }
    }
}

/// A request's address as messages show it: scheme, host and port as
/// they are (they name the platform), the rest scrubbed of credentials.
fn shown_url(url: &str, scrubber: &Scrubber) -> String {
    match Url::parse(url) {
        Ok(u) if u.host_str().is_some() => {
            // Never user info: it would be a credential.
            let host = &u[url::Position::BeforeHost..url::Position::AfterPort];
            format!(
                "{}://{host}{}",
                u.scheme(),
                scrubber.text(&u[url::Position::BeforePath..])
            )
        }
        _ => scrubber.text(url),
    }
}

/// `parts` as text: literal text as it is, each secret from `creds`
/// written with its encoding, each setting from `settings`. A secret the
/// call does not hold, or a setting the account lacks, is an error naming
/// it.
pub fn render(
    parts: &[TextPart],
    creds: Option<&Credentials>,
    settings: &[Pair],
) -> Result<String, String> {
    let mut out = String::new();
    for part in parts {
        match part {
            TextPart::Text(t) => out.push_str(t),
            TextPart::Setting(name) => {
                let v = settings.iter().find(|p| &p.name == name).ok_or_else(|| {
                    format!(
                        "the request needs the account setting `{name}`, which it does not have"
                    )
                })?;
                out.push_str(&v.value);
            }
            TextPart::Secret(s) => {
                let key = crate::contract::secret_key(s.name);
                let value = creds.and_then(|c| c.get(key)).ok_or_else(|| {
                    format!("the request needs `{key}`, which this call does not have")
                })?;
                match s.encoding {
                    SecretEncoding::Raw => out.push_str(value.expose()),
                    SecretEncoding::Percent => out.extend(percent_encoding::utf8_percent_encode(
                        value.expose(),
                        UNRESERVED_KEPT,
                    )),
                    SecretEncoding::JsonString => {
                        let quoted = serde_json::to_string(value.expose()).unwrap_or_default();
                        out.push_str(&quoted[1..quoted.len() - 1]);
                    }
                }
            }
            TextPart::AppsecretProof => {
                let get = |key: &str| {
                    creds.and_then(|c| c.get(key)).ok_or_else(|| {
                        format!("an appsecret_proof needs `{key}`, which this call does not have (for the client secret: set platforms.<id>.client_secret_env in the config)")
                    })
                };
                out.push_str(&proof(get("client_secret")?, get("access_token")?));
            }
        }
    }
    Ok(out)
}

/// What percent-encoding leaves as it is: RFC 3986's unreserved
/// characters.
const UNRESERVED_KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Meta's `appsecret_proof`: the lowercase hex HMAC-SHA256 of the access
/// token, keyed by the client secret.
pub fn proof(client_secret: &Secret, token: &Secret) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(client_secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(token.expose().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A contract 0.1.0 request's URL in parts: a URL that starts with
/// `{{name}}` (the credential is the URL's base, as a Discord webhook's
/// is) has that placeholder as a secret part; any other `{{…}}` in a URL
/// is text. Refused when the placeholder's text is tainted (see
/// [`Taint`]).
pub fn legacy_url(url: &str, taint: &Taint, plugin: &str) -> Result<Vec<TextPart>, String> {
    let text = || Ok(vec![TextPart::Text(url.to_string())]);
    let Some(after) = url.strip_prefix("{{") else {
        return text();
    };
    let Some(end) = after.find("}}") else {
        return text();
    };
    let name = legacy_secret(after[..end].trim(), taint, plugin)?;
    Ok(vec![name, TextPart::Text(after[end + 2..].to_string())])
}

/// A contract 0.1.0 header value in parts: exactly `{{name}}` or
/// `Scheme {{name}}` has it as a secret part; any other `{{…}}` in a
/// header is text.
pub fn legacy_header(value: &str, taint: &Taint, plugin: &str) -> Result<Vec<TextPart>, String> {
    let text = || Ok(vec![TextPart::Text(value.to_string())]);
    let (prefix, rest) = match value.find("{{") {
        Some(i) => value.split_at(i),
        None => return text(),
    };
    let scheme = prefix.strip_suffix(' ').unwrap_or(prefix);
    let scheme_ok = prefix.is_empty()
        || (prefix.ends_with(' ')
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
    let inner = rest
        .strip_prefix("{{")
        .and_then(|r| r.strip_suffix("}}"))
        .filter(|n| !n.contains("{{") && !n.contains("}}"));
    match inner {
        Some(name) if scheme_ok => {
            let secret = legacy_secret(name.trim(), taint, plugin)?;
            let mut parts = Vec::new();
            if !prefix.is_empty() {
                parts.push(TextPart::Text(prefix.to_string()));
            }
            parts.push(secret);
            Ok(parts)
        }
        _ => text(),
    }
}

fn legacy_secret(name: &str, taint: &Taint, plugin: &str) -> Result<TextPart, String> {
    if taint.holds(name) {
        return Err(format!(
            "`{{{{{name}}}}}` appears in this post or in an answer from the platform, and plugin `{plugin}` (contract 0.1.0) uses the same text to mark where its credential goes; outreach does not send such a request, so the credential cannot end up in the content. Remove the `{{{{{name}}}}}` text from the post"
        ));
    }
    let secret = crate::contract::secret_named(name).ok_or_else(|| {
        format!("plugin `{plugin}` asked for a credential named `{name}`, which this account does not have")
    })?;
    Ok(TextPart::Secret(crate::contract::wit::types::SecretPart {
        name: secret,
        encoding: SecretEncoding::Raw,
    }))
}

fn check_header_name(name: &str) -> Result<(), String> {
    let lower = name.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection"
    ) || lower.starts_with("proxy-")
    {
        return Err(format!("plugins may not set the `{name}` header"));
    }
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("`{name}` is not a valid header name"))
}

fn classify_send_error(e: &reqwest::Error, shown: &str) -> HttpError {
    let cause = root_cause(e);
    if e.is_connect() {
        HttpError::NotSent(format!("cannot connect to {shown}: {cause}"))
    } else if e.is_timeout() {
        HttpError::Timeout(format!("no answer from {shown} in time: {cause}"))
    } else if e.is_builder() {
        HttpError::NotSent(format!(
            "the request to {shown} could not be built: {cause}"
        ))
    } else {
        // The request may have been written before the connection broke.
        HttpError::UnknownOutcome(format!(
            "the connection to {shown} was cut off before a full response arrived: {cause}"
        ))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn to_reqwest(m: HttpMethod) -> reqwest::Method {
    match m {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
        HttpMethod::Head => reqwest::Method::HEAD,
    }
}

pub fn method_name(m: HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Head => "HEAD",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let a = AllowedHost::from_pattern("*.x.com").unwrap();
        assert!(a.matches(&Url::parse("https://api.x.com/2/tweets").unwrap()));
        assert!(!a.matches(&Url::parse("https://x.com/").unwrap()));
        assert!(!a.matches(&Url::parse("https://evilx.com/").unwrap()));
        assert!(!a.matches(&Url::parse("http://api.x.com/").unwrap()));
        assert!(AllowedHost::from_pattern("bad host").is_err());
        assert!(AllowedHost::from_pattern("-x.com").is_err());
        assert!(AllowedHost::from_pattern("x.com:0").is_err());
    }

    #[test]
    fn placeholders_only_where_a_template_names_a_credential() {
        let c = Credentials::new()
            .with("access_token", Secret::new("tok-123456"))
            .with("refresh_token", Secret::new("https://hooks.example/1/abc"));
        let taint = Taint::default();
        let url =
            |u: &str| legacy_url(u, &taint, "p").and_then(|parts| render(&parts, Some(&c), &[]));
        let header =
            |h: &str| legacy_header(h, &taint, "p").and_then(|parts| render(&parts, Some(&c), &[]));
        assert_eq!(
            url("{{refresh_token}}?wait=true").unwrap(),
            "https://hooks.example/1/abc?wait=true"
        );
        assert_eq!(
            url("https://a/?t={{access_token}}").unwrap(),
            "https://a/?t={{access_token}}"
        );
        assert_eq!(
            header("Bearer {{access_token}}").unwrap(),
            "Bearer tok-123456"
        );
        assert_eq!(header("{{ access_token }}").unwrap(), "tok-123456");
        assert_eq!(
            header("say {{access_token}} now").unwrap(),
            "say {{access_token}} now"
        );
        assert_eq!(
            header("a b {{access_token}}").unwrap(),
            "a b {{access_token}}"
        );
        assert!(
            url("{{client_secret}}/x")
                .unwrap_err()
                .contains("client_secret")
        );

        taint.mark("post text with {{ refresh_token }} in it");
        let err = url("{{refresh_token}}?wait=true").unwrap_err();
        assert!(err.contains("appears in this post"), "{err}");
        assert!(header("Bearer {{access_token}}").is_ok());
    }

    #[test]
    fn secrets_go_where_their_parts_say_and_text_stays_text() {
        use crate::contract::wit::types::{SecretName, SecretPart};
        let c = Credentials::new().with("access_token", Secret::new("a b\"/c"));
        let secret = |encoding| {
            TextPart::Secret(SecretPart {
                name: SecretName::AccessToken,
                encoding,
            })
        };
        let parts = [
            TextPart::Text("{{access_token}} ".into()),
            secret(SecretEncoding::Raw),
            TextPart::Text("|".into()),
            secret(SecretEncoding::Percent),
            TextPart::Text("|".into()),
            secret(SecretEncoding::JsonString),
            TextPart::Setting("instance".into()),
        ];
        let settings = [Pair {
            name: "instance".into(),
            value: "!".into(),
        }];
        assert_eq!(
            render(&parts, Some(&c), &settings).unwrap(),
            "{{access_token}} a b\"/c|a%20b%22%2Fc|a b\\\"/c!"
        );
        assert!(render(&parts, None, &settings).is_err());
        // Meta's documented example shape: 64 lowercase hex digits.
        let p = proof(&Secret::new("app-secret"), &Secret::new("token"));
        assert_eq!(p.len(), 64);
        assert!(
            p.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn a_limit_a_plugin_reports_holds_later_requests() {
        let broker = Broker::new(&Limits::default(), &Http::default()).unwrap();
        let scope = Scope {
            plugin: "p".into(),
            account: Some("a".into()),
            allow: Arc::new(vec![]),
            credentials: None,
            placement: Arc::new(vec![]),
            settings: Arc::new(vec![]),
            rate_limits: Arc::new(vec![]),
            rate_headers: None,
            dry_run: None,
            dispatched: Default::default(),
            taint: Default::default(),
            pinned: None,
            jar: Default::default(),
            user_agent: None,
            uploads: Default::default(),
        };
        assert!(broker.rate_check(&scope, "publish").is_none());
        // Two more `publish` requests in the next minute, then none.
        broker.report_limit(&scope, "publish", 2, 60);
        assert!(broker.rate_check(&scope, "publish").is_none());
        assert!(broker.rate_check(&scope, "publish").is_none());
        let wait = broker.rate_check(&scope, "publish").unwrap();
        assert!(wait > Duration::from_secs(50), "{wait:?}");
        // Other classes go on; a report for every class (empty) holds all.
        assert!(broker.rate_check(&scope, "profile").is_none());
        broker.report_limit(&scope, "", 0, 30);
        assert!(broker.rate_check(&scope, "profile").is_some());
    }
}
