//! Building requests and reading responses. Every request goes through the
//! host broker (`host::send`); this module only shapes it.

use crate::bindings::outreach::platform::host::{self, Body, BodyPart, HttpError};
use crate::{CallError, Field, HttpMethod, Pair, RateLimited, TextPart};

/// A request under construction.
#[must_use = "a request does nothing until `.send()`"]
pub struct Request {
    inner: host::Request,
}

impl Request {
    /// A request to `url`, which is text: whatever it holds — post
    /// content, an id from the platform — is sent as it is.
    pub fn new(method: HttpMethod, url: impl Into<String>) -> Self {
        Self::to_parts(method, vec![TextPart::Text(url.into())])
    }

    /// A request to a URL in parts (see [`crate::template`]), for a URL
    /// that is or holds a credential: a Discord webhook
    /// (`template("{{access_token}}")`), Telegram's `/bot{{access_token}}/`.
    pub fn to_parts(method: HttpMethod, url: Vec<TextPart>) -> Self {
        Request {
            inner: host::Request {
                method,
                url,
                headers: Vec::new(),
                body: Body::Empty,
                credential: false,
                class: String::new(),
                follow_redirects: false,
            },
        }
    }

    /// Text appended to the URL (a path, a query string).
    pub fn then(mut self, text: impl Into<String>) -> Self {
        self.inner.url.push(TextPart::Text(text.into()));
        self
    }
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(HttpMethod::Get, url)
    }
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(HttpMethod::Post, url)
    }
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(HttpMethod::Put, url)
    }

    /// Add a header whose value is text.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.inner.headers.push(Field {
            name: name.into(),
            value: vec![TextPart::Text(value.into())],
        });
        self
    }

    /// Add a header whose value holds a secret (see [`crate::template`]).
    pub fn header_parts(mut self, name: &str, value: Vec<TextPart>) -> Self {
        self.inner.headers.push(Field {
            name: name.into(),
            value,
        });
        self
    }

    /// Follow redirects (each to an allowed host; the credential stays
    /// with the first origin). Off unless asked.
    pub fn follow_redirects(mut self) -> Self {
        self.inner.follow_redirects = true;
        self
    }

    /// A JSON body (sets `Content-Type: application/json`).
    pub fn json(self, value: &serde_json::Value) -> Self {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.header("content-type", "application/json").bytes(bytes)
    }

    /// A form body (sets `Content-Type: application/x-www-form-urlencoded`).
    pub fn form(self, fields: &[(&str, &str)]) -> Self {
        let body = form_encode(fields);
        self.header("content-type", "application/x-www-form-urlencoded")
            .bytes(body.into_bytes())
    }

    /// Raw body bytes.
    pub fn bytes(mut self, bytes: Vec<u8>) -> Self {
        self.inner.body = Body::Bytes(bytes);
        self
    }

    /// Stream part of a media attachment, read by the host.
    pub fn media(mut self, handle: u32, offset: u64, length: u64) -> Self {
        self.inner.body = Body::Media(crate::MediaSlice {
            handle,
            offset,
            length,
        });
        self
    }

    /// A `multipart/form-data` body whose files the host streams from the
    /// post's media.
    pub fn multipart(mut self, form: Multipart) -> Self {
        let boundary = form.boundary.clone();
        self.inner.body = Body::Parts(form.finish());
        self.header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
    }

    /// Ask the host to attach the account's credential (as the manifest's
    /// `placement` says).
    pub fn authed(mut self) -> Self {
        self.inner.credential = true;
        self
    }

    /// The rate-limit class this request counts against.
    pub fn class(mut self, class: &str) -> Self {
        self.inner.class = class.to_string();
        self
    }

    /// Send through the host. Broker failures are classified: a denied or
    /// unsent request is `transient`/`rejected`, a dropped connection is
    /// `outcome-unknown`.
    pub fn send(self) -> Result<Response, CallError> {
        match host::send(&self.inner) {
            Ok(r) => Ok(Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
                final_url: r.final_url,
            }),
            Err(HttpError::Denied(m)) => Err(CallError::Rejected(format!("request denied: {m}"))),
            Err(HttpError::NotSent(m)) => Err(CallError::Transient(m)),
            Err(HttpError::Timeout(m)) | Err(HttpError::UnknownOutcome(m)) => {
                Err(CallError::OutcomeUnknown(m))
            }
            Err(HttpError::TooLarge(m)) => Err(CallError::Rejected(m)),
        }
    }
}

/// A response from the platform (secrets already scrubbed by the host).
pub struct Response {
    pub status: u16,
    pub headers: Vec<Pair>,
    pub body: Vec<u8>,
    /// Where the request ended after redirects.
    pub final_url: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Parse a successful response's JSON body; a non-2xx status is turned
    /// into a classified error with [`Response::error`].
    pub fn json_ok(&self) -> Result<serde_json::Value, CallError> {
        if !self.is_success() {
            return Err(self.error());
        }
        self.json()
    }

    /// Parse the body as JSON, whatever the status. A body that is not JSON
    /// (an HTML error page, a truncated body) is a transient error that
    /// says what arrived.
    pub fn json(&self) -> Result<serde_json::Value, CallError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CallError::OutcomeUnknown(format!(
                "HTTP {} with a body that is not JSON ({e}): {}",
                self.status,
                self.snippet()
            ))
        })
    }

    /// The start of the body, for error messages.
    pub fn snippet(&self) -> String {
        let text = self.text();
        let trimmed = text.trim_start();
        if trimmed.starts_with('<') {
            let lower = trimmed.to_ascii_lowercase();
            let title = lower.find("<title>").and_then(|s| {
                lower[s + 7..]
                    .find("</title>")
                    .map(|e| trimmed[s + 7..s + 7 + e].trim().to_string())
            });
            return match title {
                Some(t) if !t.is_empty() => {
                    format!("an HTML page titled {t:?} instead of an API response")
                }
                _ => "an HTML page instead of an API response".into(),
            };
        }
        let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() > 160 {
            format!("{}…", one_line.chars().take(160).collect::<String>())
        } else if one_line.is_empty() {
            "(empty body)".into()
        } else {
            one_line
        }
    }

    /// Seconds to wait before retrying, from `Retry-After` or an
    /// `x-rate-limit-reset` epoch.
    pub fn retry_after(&self) -> Option<u64> {
        if let Some(s) = self
            .header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(s);
        }
        let reset = self
            .header("x-rate-limit-reset")
            .or_else(|| self.header("x-ratelimit-reset"))?;
        let reset: u64 = reset.trim().parse::<f64>().ok()? as u64;
        let now = crate::now_millis() / 1000;
        // Small values are "seconds until", large ones are epoch seconds.
        Some(if reset > 1_000_000_000 {
            reset.saturating_sub(now)
        } else {
            reset
        })
    }

    /// The usual classification of a failed response: 401 → auth expired
    /// for a credential that expires, needs reconnect for one that never
    /// does (an API key, a bot token: refreshing cannot help), 429 → rate
    /// limited, 5xx → transient, other 4xx → rejected. Plugins with
    /// platform quirks check for them first and fall back to this.
    pub fn error(&self) -> CallError {
        let what = format!("HTTP {}: {}", self.status, self.snippet());
        match self.status {
            401 if !crate::credential_expires() => CallError::NeedsReconnect(format!(
                "{what} (the credential does not expire, so it was revoked or replaced)"
            )),
            401 => CallError::AuthExpired(what),
            403 => CallError::Rejected(what),
            429 => CallError::RateLimited(RateLimited {
                retry_after_seconds: self.retry_after(),
                message: what,
            }),
            500..=599 => CallError::Transient(what),
            _ => CallError::Rejected(what),
        }
    }
}

/// `application/x-www-form-urlencoded` encoding of `fields`.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// `s` percent-encoded for use as one URL path segment or query value
/// (`urn:li:video:1` → `urn%3Ali%3Avideo%3A1`).
pub fn encode_component(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `base` with `fields` appended as a query string.
pub fn query_url(base: &str, fields: &[(&str, &str)]) -> String {
    if fields.is_empty() {
        return base.to_string();
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", form_encode(fields))
}

/// A `multipart/form-data` body. Text fields are framed here; file fields
/// name a media attachment whose bytes the host reads at send time, so
/// large files never pass through plugin memory.
pub struct Multipart {
    boundary: String,
    parts: Vec<BodyPart>,
}

impl Default for Multipart {
    fn default() -> Self {
        Self::new()
    }
}

impl Multipart {
    pub fn new() -> Self {
        Multipart {
            boundary: format!(
                "outreach-{:016x}",
                crate::now_millis().wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ),
            parts: Vec::new(),
        }
    }

    fn push(&mut self, bytes: String) {
        self.parts.push(BodyPart::Bytes(bytes.into_bytes()));
    }

    /// A text field.
    pub fn text(mut self, name: &str, value: &str) -> Self {
        let head = format!(
            "--{}\r\ncontent-disposition: form-data; name=\"{}\"\r\n\r\n{}\r\n",
            self.boundary,
            escape(name),
            value
        );
        self.push(head);
        self
    }

    /// A file field with the whole of `media`.
    pub fn file(self, name: &str, media: &crate::Media) -> Self {
        self.file_slice(name, media, 0, media.size)
    }

    /// A file field with bytes `[offset, offset+length)` of `media`
    /// (chunked uploads).
    pub fn file_slice(
        mut self,
        name: &str,
        media: &crate::Media,
        offset: u64,
        length: u64,
    ) -> Self {
        let head = format!(
            "--{}\r\ncontent-disposition: form-data; name=\"{}\"; filename=\"{}\"\r\ncontent-type: {}\r\n\r\n",
            self.boundary,
            escape(name),
            escape(&media.file_name),
            media.mime_type
        );
        self.push(head);
        self.parts.push(BodyPart::Media(crate::MediaSlice {
            handle: media.handle,
            offset,
            length,
        }));
        self.push("\r\n".into());
        self
    }

    fn finish(mut self) -> Vec<BodyPart> {
        let end = format!("--{}--\r\n", self.boundary);
        self.push(end);
        self.parts
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(['\r', '\n'], " ")
}
