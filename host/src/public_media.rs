//! Public media: attachments served to platforms that fetch media
//! themselves (Instagram and Threads take an `image_url`, not bytes), for
//! as long as a delivery needs them.
//!
//! Owns: the media listener (`[media] listen`) — a listener of its own,
//! apart from the control API, that a reverse proxy or tunnel exposes
//! under `[media] public_base_url` — and the shares it serves. A share is
//! one attachment at an unguessable path (`/<256-bit token>/<file name>`)
//! that works until the [`Share`] is dropped (its delivery settled) or its
//! time (`[media] ttl_secs`) is up, whichever comes first. It answers
//! `GET` and `HEAD` with the type and length of the file and single byte
//! ranges (video fetchers resume with them); everything else is 404 or
//! 405.
//!
//! The file is served from the descriptor opened when it was shared (after
//! the post's media checks), never reopened by path, so replacing the file
//! or a folder on its path with a symlink afterwards cannot make the
//! listener serve anything else. That is also why the range handling is
//! written here rather than taken from `tower-http`'s `ServeFile`, which
//! opens its path on every request; platforms' fetchers send one range at a
//! time, and a request for several gets the whole file, as RFC 9110 allows.
//!
//! Never: lists shares, serves a path that was not shared or has expired,
//! answers a control API route, or follows a path outside the share.

use std::collections::HashMap;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;

use crate::config::MediaServing;

/// Bytes read from disk per piece of a response body.
const PIECE: u64 = 256 * 1024;

struct Entry {
    file: Arc<std::fs::File>,
    size: u64,
    mime: String,
    /// The last path segment, as it appears in the URL.
    name: String,
    /// The path of `public_base_url`, which a proxy may pass on as it is.
    prefix: String,
    until: Instant,
}

/// The shares of this process and its media listener.
#[derive(Default)]
pub struct PublicMedia {
    shares: Mutex<HashMap<String, Entry>>,
    /// The address the listener is bound to, once it is.
    bound: tokio::sync::Mutex<Option<std::net::SocketAddr>>,
}

/// One attachment served while this value lives.
pub struct Share {
    pub url: String,
    token: String,
    owner: Weak<PublicMedia>,
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.upgrade() {
            owner.shares.lock().expect("shares").remove(&self.token);
        }
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is a capability: whoever has it can fetch the file.
        f.write_str("Share { .. }")
    }
}

/// A path segment as it goes into a URL.
fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        .replace("%2E", ".")
        .replace("%2D", "-")
        .replace("%5F", "_")
}

/// 256 random bits, hex.
fn token() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let mut h = sha2::Sha256::default();
    sha2::Digest::update(&mut h, a.as_bytes());
    sha2::Digest::update(&mut h, b.as_bytes());
    hex::encode(sha2::Digest::finalize(h))
}

/// The address a share of `name` would have under `base`, for checks and
/// dry runs that share nothing.
pub fn placeholder_url(base: &str, name: &str) -> String {
    format!(
        "{}/{}/{}",
        base.trim_end_matches('/'),
        "0".repeat(64),
        segment(name)
    )
}

impl PublicMedia {
    /// Start the listener on `cfg.listen` if it is not running yet; its
    /// address.
    pub async fn listen(
        self: &Arc<Self>,
        cfg: &MediaServing,
    ) -> anyhow::Result<std::net::SocketAddr> {
        let mut bound = self.bound.lock().await;
        if let Some(a) = *bound {
            return Ok(a);
        }
        let listener = tokio::net::TcpListener::bind(&cfg.listen).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot serve media on media.listen = {} ({e}); if the daemon is running it serves media itself: publish through it (drop the post in the posts folder or use `POST /publish`), or choose another address",
                cfg.listen
            )
        })?;
        let addr = listener.local_addr()?;
        let weak = Arc::downgrade(self);
        let app =
            axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
                let weak = weak.clone();
                async move {
                    match weak.upgrade() {
                        Some(me) => me.answer(&method, uri.path(), &headers).await,
                        None => status(StatusCode::SERVICE_UNAVAILABLE),
                    }
                }
            });
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("the media listener stopped: {e}");
            }
        });
        tracing::info!(%addr, "serving shared media");
        *bound = Some(addr);
        Ok(addr)
    }

    /// Share the file at `path` (already checked by the post's media
    /// checks) under `cfg.public_base_url`, starting the listener if needed.
    pub async fn share(
        self: &Arc<Self>,
        cfg: &MediaServing,
        path: &Path,
        mime: &str,
        file_name: &str,
    ) -> anyhow::Result<Share> {
        let base = cfg
            .public_base_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("media.public_base_url is not set"))?;
        self.listen(cfg).await?;
        let file = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {} to serve it: {e}", path.display()))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            anyhow::bail!("{} is not a regular file", path.display());
        }
        let name = segment(file_name);
        let prefix = url::Url::parse(base)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let token = token();
        let url = format!("{}/{token}/{name}", base.trim_end_matches('/'));
        let until = Instant::now() + Duration::from_secs(cfg.ttl_secs);
        let mut shares = self.shares.lock().expect("shares");
        let now = Instant::now();
        shares.retain(|_, e| e.until > now);
        shares.insert(
            token.clone(),
            Entry {
                file: Arc::new(file),
                size: meta.len(),
                mime: mime.to_string(),
                name,
                prefix,
                until,
            },
        );
        Ok(Share {
            url,
            token,
            owner: Arc::downgrade(self),
        })
    }

    /// How many shares are live (for tests and metrics).
    pub fn live(&self) -> usize {
        let now = Instant::now();
        self.shares
            .lock()
            .expect("shares")
            .values()
            .filter(|e| e.until > now)
            .count()
    }

    async fn answer(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response {
        let found = {
            let shares = self.shares.lock().expect("shares");
            // `/<token>/<name>`, or that below the base URL's path when a
            // proxy passes it on.
            let mut parts = path.rsplitn(3, '/');
            let (name, token, before) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next(),
            );
            shares
                .get(token)
                .filter(|e| {
                    e.name == name
                        && e.until > Instant::now()
                        && (before == Some("") || before == Some(e.prefix.as_str()))
                })
                .map(|e| (e.file.clone(), e.size, e.mime.clone()))
        };
        let Some((file, size, mime)) = found else {
            return status(StatusCode::NOT_FOUND);
        };
        if method != Method::GET && method != Method::HEAD {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let range = match headers
            .get(header::RANGE)
            .map(|v| parse_range(v.as_bytes(), size))
        {
            None | Some(Range::Ignore) => None,
            Some(Range::Unsatisfiable) => {
                let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    header::HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                );
                return r;
            }
            Some(Range::Bytes(a, b)) => Some((a, b)),
        };
        let (start, end) = range.unwrap_or((0, size));
        let mut b = Response::builder()
            .header(header::CONTENT_TYPE, mime)
            .header(header::CONTENT_LENGTH, end - start)
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CACHE_CONTROL, "no-store")
            .header("x-content-type-options", "nosniff");
        b = match range {
            Some((a, e)) => b
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {a}-{}/{size}", e - 1)),
            None => b.status(StatusCode::OK),
        };
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from_stream(futures::stream::unfold(start, move |at| {
                let file = file.clone();
                async move {
                    if at >= end {
                        return None;
                    }
                    let n = PIECE.min(end - at);
                    let read = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; n as usize];
                        file.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf))
                    })
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                    Some((read, at + n))
                }
            }))
        };
        b.body(body)
            .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR))
    }
}

fn status(s: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = s;
    r
}

#[derive(Debug, PartialEq)]
enum Range {
    /// `[start, end)`.
    Bytes(u64, u64),
    Unsatisfiable,
    /// Not a single byte range: the whole file is sent.
    Ignore,
}

/// A `Range` header for a file of `size` bytes (RFC 9110 §14.1.2): one
/// `bytes=a-b`, `bytes=a-` or `bytes=-n`.
fn parse_range(v: &[u8], size: u64) -> Range {
    let Some(spec) = std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().strip_prefix("bytes="))
    else {
        return Range::Ignore;
    };
    if spec.contains(',') {
        return Range::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Ignore;
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), b.trim().is_empty()) {
        // The last n bytes.
        (true, false) => match num(b) {
            Some(0) => Range::Unsatisfiable,
            Some(n) if size > 0 => Range::Bytes(size.saturating_sub(n), size),
            Some(_) => Range::Unsatisfiable,
            None => Range::Ignore,
        },
        (false, _) => {
            let Some(start) = num(a) else {
                return Range::Ignore;
            };
            let last = if b.trim().is_empty() {
                size.saturating_sub(1)
            } else {
                match num(b) {
                    Some(l) if l >= start => l.min(size.saturating_sub(1)),
                    _ => return Range::Ignore,
                }
            };
            if start >= size {
                Range::Unsatisfiable
            } else {
                Range::Bytes(start, last + 1)
            }
        }
        (true, true) => Range::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(b"bytes=0-9", 100), Range::Bytes(0, 10));
        assert_eq!(parse_range(b"bytes=90-", 100), Range::Bytes(90, 100));
        assert_eq!(parse_range(b"bytes=-10", 100), Range::Bytes(90, 100));
        assert_eq!(parse_range(b"bytes=-200", 100), Range::Bytes(0, 100));
        assert_eq!(parse_range(b"bytes=50-1000", 100), Range::Bytes(50, 100));
        assert_eq!(parse_range(b"bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-1,5-6", 100), Range::Ignore);
        assert_eq!(parse_range(b"bytes=9-2", 100), Range::Ignore);
        assert_eq!(parse_range(b"items=0-9", 100), Range::Ignore);
        assert_eq!(parse_range(b"bytes=x-", 100), Range::Ignore);
    }

    #[test]
    fn names_are_one_segment() {
        assert_eq!(segment("a b/../c.jpg"), "a%20b%2F..%2Fc.jpg");
        assert_eq!(segment("photo-1_x.JPG"), "photo-1_x.JPG");
    }
}
