//! Fakes of Meta's Graph APIs — Instagram (API with Instagram Login),
//! Threads and Facebook Pages — as shared/reference/platform-apis.md
//! describes them: the token in the `access_token` query parameter (with
//! `appsecret_proof` for Facebook), Graph error objects (`code` 190 for a
//! token that is gone, 4 for the application's rate limit), media
//! containers the platform fills by fetching `image_url` / `video_url`
//! itself, polled until `FINISHED`, then published; the publishing quota
//! read from `content_publishing_limit` / `threads_publishing_limit`.
//!
//! Like the real platforms, the fakes fetch media over HTTP from the URL
//! they are given — here the daemon's media listener — videos in two byte
//! ranges, and fail the container (`ERROR`) when the bytes differ from what
//! the test expects.

use std::collections::HashMap;
use std::io::{Read, Write};

use axum::response::Response;
use serde_json::{Value, json};
use sha2::Digest;

use super::oauth::{self, Flavor};
use super::{Fake, FakeState, Home, Mode, Seen, json_response, start};

/// A JPEG (its magic bytes, then text, so multipart bodies stay readable).
pub fn jpeg(tag: &str) -> Vec<u8> {
    [
        &b"\xff\xd8\xff\xe0\0\x10JFIF\0"[..],
        tag.as_bytes(),
        &[b'j'; 300],
    ]
    .concat()
}

/// An MP4 of `size` bytes (a real `ftyp` box, then text).
pub fn mp4(size: usize) -> Vec<u8> {
    let mut v = vec![b'v'; size];
    v[..MP4.len()].copy_from_slice(MP4);
    v
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A home whose `platform` (Instagram or Threads) talks to `fake`, with an
/// account of a pasted token, and outreach serving media on a listener of
/// its own (`[media]`, plain http on this machine); the media base URL.
pub fn meta_home(platform: &str, fake: &Fake) -> (Home, String) {
    let mut home = Home::new();
    home.endpoint(platform, "api", &fake.url());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/media");
    home.extra_config.push_str(&format!(
        "\n[media]\npublic_base_url = \"{base}\"\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let token = format!("{platform}-pasted-PLANTED-token");
    fake.grant(&token);
    let r = home.run(&["accounts", "add", platform], Some(&token));
    assert_eq!(r.code, 0, "{}", r.all());
    (home, base)
}

/// The smallest `ftyp` box a file is recognised as MP4 by.
pub const MP4: &[u8] = b"\0\0\0\x18ftypisom\0\0\x02\0isommp41";

/// The Instagram and Threads user id of the fakes' account.
pub const USER_ID: &str = "17841400000000042";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Instagram,
    Threads,
}

impl Kind {
    fn create_edge(self) -> &'static str {
        match self {
            Kind::Instagram => "media",
            Kind::Threads => "threads",
        }
    }
    fn publish_edge(self) -> &'static str {
        match self {
            Kind::Instagram => "media_publish",
            Kind::Threads => "threads_publish",
        }
    }
    fn limit_edge(self) -> &'static str {
        match self {
            Kind::Instagram => "content_publishing_limit",
            Kind::Threads => "threads_publishing_limit",
        }
    }
    fn quota_total(self) -> u64 {
        match self {
            Kind::Instagram => 50,
            Kind::Threads => 250,
        }
    }
    fn max_text(self) -> usize {
        match self {
            Kind::Instagram => 2200,
            Kind::Threads => 500,
        }
    }
    fn text_field(self) -> &'static str {
        match self {
            Kind::Instagram => "caption",
            Kind::Threads => "text",
        }
    }
}

pub fn graph_error(status: u16, message: &str, code: u32) -> Response {
    json_response(
        status,
        &[],
        json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEf123"}}),
    )
}

/// The query and the form body of a request, merged (Graph takes either).
fn params(seen: &Seen) -> HashMap<String, String> {
    let mut p: HashMap<String, String> = url::form_urlencoded::parse(seen.query.as_bytes())
        .into_owned()
        .collect();
    let form = seen
        .headers
        .get("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        p.extend(url::form_urlencoded::parse(seen.body.as_bytes()).into_owned());
    }
    p
}

/// The path without a Graph version prefix (`/v23.0/me` → `me`), split.
fn segments(path: &str) -> Vec<String> {
    let mut s: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    if s.first()
        .is_some_and(|v| v.starts_with('v') && v[1..].split('.').all(|n| n.parse::<u32>().is_ok()))
    {
        s.remove(0);
    }
    s
}

/// A blocking HTTP/1.1 GET, as a platform's media fetcher makes it:
/// status, headers (lower-case names) and body.
pub fn fetch(
    url: &str,
    extra: &[(&str, &str)],
) -> Result<(u16, HashMap<String, String>, Vec<u8>), String> {
    request("GET", url, extra)
}

/// [`fetch`] with another method.
pub fn request(
    method: &str,
    url: &str,
    extra: &[(&str, &str)],
) -> Result<(u16, HashMap<String, String>, Vec<u8>), String> {
    let u = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = u.host_str().ok_or("no host")?;
    let port = u.port_or_known_default().ok_or("no port")?;
    let mut s = std::net::TcpStream::connect((host, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: facebookexternalhit/1.1\r\nConnection: close\r\n",
        &url[u.origin().ascii_serialization().len()..]
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("bad status line")?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok((status, headers, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        b = &b[eol + 2..];
        out.extend_from_slice(&b[..size.min(b.len())]);
        b = &b[(size + 2).min(b.len())..];
    }
}

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

impl Fake {
    /// The fake fails a container whose media file `name` does not have
    /// these bytes when it fetches it.
    pub fn expect_media(&self, name: &str, bytes: &[u8]) {
        self.kv_set(&format!("expect/{name}"), json!(sha(bytes)));
    }
    pub fn kv(&self, key: &str) -> Option<Value> {
        self.state.kv.lock().unwrap().get(key).cloned()
    }
    pub fn kv_set(&self, key: &str, v: Value) {
        self.state.kv.lock().unwrap().insert(key.to_string(), v);
    }
    /// Make `token` a live access token of this fake (a pasted token).
    pub fn grant(&self, token: &str) {
        self.state.oauth.lock().unwrap().access.insert(
            token.to_string(),
            std::time::Instant::now() + std::time::Duration::from_secs(86_400),
        );
    }
    /// The media URLs the fake fetched, with what came of each.
    pub fn fetches(&self) -> Vec<Value> {
        self.kv("fetches")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

fn kv_get(st: &FakeState, key: &str) -> Option<Value> {
    st.kv.lock().unwrap().get(key).cloned()
}

fn kv_put(st: &FakeState, key: &str, v: Value) {
    st.kv.lock().unwrap().insert(key.to_string(), v);
}

fn next_id(st: &FakeState, prefix: &str) -> String {
    let mut kv = st.kv.lock().unwrap();
    let n = kv.get("counter").and_then(Value::as_u64).unwrap_or(0) + 1;
    kv.insert("counter".into(), json!(n));
    format!("{prefix}{}", 18_000_000_000_000_000u64 + n)
}

/// Fetch a media URL as the platform would (a video in two ranges) and
/// compare it with what the test expects; the error a container gets.
fn fetch_media(st: &FakeState, url: &str, video: bool) -> Result<(), String> {
    let name = url.rsplit('/').next().unwrap_or("").to_string();
    let result = (|| {
        // Offline: only this machine can be reached.
        if url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            != Some("127.0.0.1".into())
        {
            return Err(format!("the media could not be downloaded from {url}"));
        }
        let (status, headers, body) = fetch(url, &[])?;
        if status != 200 {
            return Err(format!("the media URL answered {status}"));
        }
        let mut bytes = body;
        if video {
            // Fetch again in two ranges, as video fetchers resume.
            let size = bytes.len();
            let mid = size / 2;
            let (s1, h1, a) = fetch(url, &[("Range", &format!("bytes=0-{}", mid - 1))])?;
            let (s2, h2, b) = fetch(url, &[("Range", &format!("bytes={mid}-"))])?;
            if s1 != 206 || s2 != 206 {
                return Err(format!("range requests answered {s1} and {s2}"));
            }
            let want1 = format!("bytes 0-{}/{size}", mid - 1);
            let want2 = format!("bytes {mid}-{}/{size}", size - 1);
            if h1.get("content-range") != Some(&want1) || h2.get("content-range") != Some(&want2) {
                return Err(format!("bad Content-Range: {h1:?} {h2:?}"));
            }
            let joined = [a, b].concat();
            if joined != bytes {
                return Err("the ranges do not make up the file".into());
            }
            bytes = joined;
        }
        if headers.get("content-length") != Some(&bytes.len().to_string()) {
            return Err("Content-Length does not match the body".into());
        }
        let ct = headers.get("content-type").cloned().unwrap_or_default();
        let ok_type = if video {
            ct.starts_with("video/")
        } else {
            ct.starts_with("image/")
        };
        if !ok_type {
            return Err(format!("the media URL is served as {ct:?}"));
        }
        if let Some(want) = kv_get(st, &format!("expect/{name}")) {
            if want != json!(sha(&bytes)) {
                return Err("the fetched bytes differ from the file".into());
            }
        }
        Ok(())
    })();
    let mut kv = st.kv.lock().unwrap();
    let list = kv.entry("fetches".to_string()).or_insert_with(|| json!([]));
    list.as_array_mut().unwrap().push(json!({
        "url": url,
        "ok": result.is_ok(),
        "error": result.as_ref().err(),
    }));
    result
}

/// Instagram or Threads, past OAuth: the account's Graph API.
fn graph(st: &FakeState, seen: &Seen, kind: Kind) -> Response {
    let flavor = match kind {
        Kind::Instagram => Flavor::Instagram,
        Kind::Threads => Flavor::Threads,
    };
    if let Some(r) = oauth::route(st, seen, flavor) {
        return r;
    }
    let p = params(seen);
    let arg = |k: &str| p.get(k).cloned().unwrap_or_default();
    let token = arg("access_token");
    let mode = st.mode.lock().unwrap().clone();
    if mode == Mode::Expired || !st.oauth.lock().unwrap().valid(&token) {
        return graph_error(
            400,
            "Error validating access token: Session has expired on Tuesday, 01-Dec-26 10:00:00 PST.",
            190,
        );
    }
    match mode {
        Mode::RateLimited => {
            return graph_error(400, "(#4) Application request limit reached", 4);
        }
        Mode::Html => {
            return super::respond(
                502,
                &[("content-type", "text/html")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            );
        }
        _ => {}
    }
    let seg = segments(&seen.path);
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    let own = |uid: &str| uid == USER_ID || uid == "me";
    match (seen.method.as_str(), seg.as_slice()) {
        ("GET", ["me"]) => match kind {
            Kind::Instagram => json_response(
                200,
                &[],
                json!({"user_id": USER_ID, "id": "9000000042", "username": "acme.bakery", "name": "Acme Bakery", "profile_picture_url": "https://scontent.cdninstagram.com/acme.jpg"}),
            ),
            Kind::Threads => json_response(
                200,
                &[],
                json!({"id": USER_ID, "username": "acme.bakery", "name": "Acme Bakery", "threads_profile_picture_url": "https://scontent.cdninstagram.com/acme.jpg"}),
            ),
        },
        ("GET", [uid, edge]) if own(uid) && *edge == kind.limit_edge() => {
            let used = kv_get(st, "quota_usage")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            json_response(
                200,
                &[],
                json!({"data": [{"quota_usage": used, "config": {"quota_total": kind.quota_total(), "quota_duration": 86400}}]}),
            )
        }
        ("POST", [uid, edge]) if own(uid) && *edge == kind.create_edge() => create(st, &p, kind),
        ("POST", [uid, edge]) if own(uid) && *edge == kind.publish_edge() => {
            publish(st, &arg("creation_id"), kind)
        }
        ("GET", [uid, edge]) if own(uid) && *edge == kind.create_edge() => {
            let data: Vec<Value> = st
                .posts
                .lock()
                .unwrap()
                .iter()
                .rev()
                .map(|(id, v)| json!({"id": id, kind.text_field(): v["text"], "permalink": v["permalink"], "timestamp": "2026-12-01T10:00:00+0000"}))
                .collect();
            json_response(200, &[], json!({"data": data}))
        }
        ("GET", [id]) => object(st, id, &arg("fields"), kind),
        _ => graph_error(
            400,
            &format!(
                "Unsupported {} request. Object with ID '{}' does not exist",
                seen.method.to_lowercase(),
                seg.join("/")
            ),
            100,
        ),
    }
}

/// `POST /{user}/media` or `/threads`: a container, its media fetched now.
fn create(st: &FakeState, p: &HashMap<String, String>, kind: Kind) -> Response {
    let arg = |k: &str| p.get(k).cloned().unwrap_or_default();
    let media_type = arg("media_type");
    let text = arg(kind.text_field());
    if text.chars().count() > kind.max_text() {
        return graph_error(
            400,
            &format!(
                "(#100) The {} is too long (more than {} characters)",
                kind.text_field(),
                kind.max_text()
            ),
            100,
        );
    }
    let child = arg("is_carousel_item") == "true";
    let (image, video) = (arg("image_url"), arg("video_url"));
    let mut error: Option<String> = None;
    let mut children: Vec<String> = Vec::new();
    match (kind, media_type.as_str()) {
        (_, "CAROUSEL") => {
            children = arg("children").split(',').map(str::to_string).collect();
            let max = if kind == Kind::Instagram { 10 } else { 20 };
            if children.len() < 2 || children.len() > max {
                return graph_error(
                    400,
                    &format!("(#100) A carousel has 2 to {max} children"),
                    100,
                );
            }
            for c in &children {
                let ok = kv_get(st, &format!("c/{c}"))
                    .is_some_and(|v| v["child"] == json!(true) && v["status"] == json!("FINISHED"));
                if !ok {
                    return graph_error(
                        400,
                        &format!("(#100) The carousel child {c} is not a finished carousel item"),
                        100,
                    );
                }
            }
        }
        (Kind::Threads, "TEXT") if image.is_empty() && video.is_empty() => {}
        (Kind::Instagram, "") | (Kind::Threads, "IMAGE") if !image.is_empty() => {
            error = fetch_media(st, &image, false).err();
        }
        (Kind::Instagram, "REELS") | (Kind::Threads, "VIDEO") if !video.is_empty() => {
            error = fetch_media(st, &video, true).err();
        }
        (Kind::Instagram, "VIDEO") if child && !video.is_empty() => {
            error = fetch_media(st, &video, true).err();
        }
        (Kind::Instagram, "VIDEO") => {
            return graph_error(
                400,
                "(#100) The VIDEO media type is no longer supported for feed posts; use REELS",
                100,
            );
        }
        _ => {
            return graph_error(
                400,
                &format!("(#100) media_type {media_type:?} with these URLs is not valid"),
                100,
            );
        }
    }
    if kind == Kind::Threads && !arg("reply_to_id").is_empty() {
        let parent = arg("reply_to_id");
        if !st.posts.lock().unwrap().iter().any(|(id, _)| *id == parent) {
            return graph_error(400, "(#100) Invalid reply_to_id", 100);
        }
    }
    if let Some(fail) = kv_get(st, "fail_next_container") {
        st.kv.lock().unwrap().remove("fail_next_container");
        error = Some(fail.as_str().unwrap_or("").to_string());
    }
    // Hold the answer while the test probes the media listener.
    if let Some(ms) = kv_get(st, "hold_ms").and_then(|v| v.as_u64()) {
        kv_put(
            st,
            "held_url",
            json!(if image.is_empty() { &video } else { &image }),
        );
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let id = next_id(st, "c");
    let polls = kv_get(st, "polls").and_then(|v| v.as_u64()).unwrap_or(1);
    kv_put(
        st,
        &format!("c/{id}"),
        json!({
            "status": if error.is_some() { "ERROR" } else { "IN_PROGRESS" },
            "error": error,
            "polls": polls,
            "child": child,
            "text": text,
            "media_type": media_type,
            "children": children,
            "reply_to": arg("reply_to_id"),
            "image_url": image,
            "video_url": video,
        }),
    );
    json_response(200, &[], json!({"id": id}))
}

/// `POST /{user}/media_publish` or `/threads_publish`.
fn publish(st: &FakeState, creation: &str, kind: Kind) -> Response {
    let key = format!("c/{creation}");
    let Some(mut c) = kv_get(st, &key) else {
        return graph_error(400, "(#100) Invalid creation_id", 100);
    };
    if c["status"] != json!("FINISHED") || c["child"] == json!(true) {
        return graph_error(
            400,
            "(#9007) The media is not ready for publishing, please wait for a moment",
            9007,
        );
    }
    let used = kv_get(st, "quota_usage")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if used >= kind.quota_total() {
        return graph_error(
            400,
            "(#9) Application request limit reached: publishing limit",
            9,
        );
    }
    kv_put(st, "quota_usage", json!(used + 1));
    c["status"] = json!("PUBLISHED");
    let id = next_id(st, "m");
    let permalink = match kind {
        Kind::Instagram => format!("https://www.instagram.com/p/C{}/", &id[id.len() - 6..]),
        Kind::Threads => format!(
            "https://www.threads.net/@acme.bakery/post/D{}",
            &id[id.len() - 6..]
        ),
    };
    kv_put(st, &key, c.clone());
    st.posts.lock().unwrap().push((
        id.clone(),
        json!({"text": c["text"], "permalink": permalink, "container": creation, "media_type": c["media_type"], "children": c["children"], "reply_to": c["reply_to"]}),
    ));
    json_response(200, &[], json!({"id": id}))
}

/// `GET /{id}`: a container's status, or a published media's permalink.
fn object(st: &FakeState, id: &str, fields: &str, kind: Kind) -> Response {
    if let Some((_, v)) = st.posts.lock().unwrap().iter().find(|(pid, _)| pid == id) {
        return json_response(200, &[], json!({"id": id, "permalink": v["permalink"]}));
    }
    let key = format!("c/{id}");
    let Some(mut c) = kv_get(st, &key) else {
        return graph_error(
            400,
            &format!("Unsupported get request. Object with ID '{id}' does not exist"),
            100,
        );
    };
    if c["status"] == json!("IN_PROGRESS") {
        let left = c["polls"].as_u64().unwrap_or(0);
        if left == 0 {
            c["status"] = json!("FINISHED");
        } else {
            c["polls"] = json!(left - 1);
        }
        kv_put(st, &key, c.clone());
    }
    let status = c["status"].as_str().unwrap_or("").to_string();
    let reason = c["error"].as_str().unwrap_or("").to_string();
    let _ = fields;
    match kind {
        Kind::Instagram => json_response(
            200,
            &[],
            json!({"id": id, "status_code": status, "status": if status == "ERROR" { format!("Error: {reason}") } else { status.clone() }}),
        ),
        Kind::Threads => {
            let mut v = json!({"id": id, "status": status});
            if status == "ERROR" {
                v["error_message"] = json!(reason);
            }
            json_response(200, &[], v)
        }
    }
}

/// A fake of graph.instagram.com (with the OAuth endpoints of
/// www.instagram.com and api.instagram.com on the same address).
pub fn fake_instagram() -> Fake {
    start(|st, seen| graph(st, seen, Kind::Instagram))
}

/// A fake of graph.threads.net (with the OAuth endpoints on the same
/// address).
pub fn fake_threads() -> Fake {
    start(|st, seen| graph(st, seen, Kind::Threads))
}

/// Facebook Pages publishing, for `fake_facebook` (past its token and
/// `appsecret_proof` checks): `/{page}/feed`, `/{page}/photos` (bytes as
/// multipart `source`, or `url`; unpublished photos attached to a feed
/// post), `/{page}/videos` (the resumable start / transfer / finish
/// protocol, chunk offsets checked), `GET /{post}?fields=permalink_url` and
/// the page's feed. `page` is the page the token was issued for; posting
/// with any other token is refused as Facebook does. `None`: not a
/// publishing route.
pub fn facebook_page(st: &FakeState, seen: &Seen, page: Option<&str>) -> Option<Response> {
    let seg = segments(&seen.path);
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    let p = params(seen);
    let arg = |k: &str| p.get(k).cloned().unwrap_or_default();
    let (target, edge) = match seg.as_slice() {
        [t, e] if matches!(*e, "feed" | "photos" | "videos") => (*t, *e),
        ["me", ..] => return None,
        [id] if arg("fields").contains("permalink_url") => {
            let posts = st.posts.lock().unwrap();
            return Some(match posts.iter().find(|(pid, _)| pid == id) {
                Some((pid, v)) => json_response(
                    200,
                    &[],
                    json!({"id": pid, "permalink_url": v["permalink"]}),
                ),
                None => graph_error(
                    400,
                    &format!("Unsupported get request. Object with ID '{id}' does not exist"),
                    100,
                ),
            });
        }
        _ => return None,
    };
    if page != Some(target) {
        return Some(graph_error(
            403,
            "(#200) The user hasn't authorized the application to perform this action; a Page access token of this Page is required",
            200,
        ));
    }
    let publish_post = |message: &str, extra: Value| {
        let n = next_id(st, "");
        let id = format!("{target}_{n}");
        st.posts.lock().unwrap().push((
            id.clone(),
            json!({"text": message, "permalink": format!("https://www.facebook.com/{target}/posts/{n}"), "extra": extra}),
        ));
        id
    };
    let multipart = super::multipart(seen);
    let field = |name: &str| -> String {
        match &multipart {
            Some(parts) => parts
                .iter()
                .find(|x| x.name == name)
                .map(|x| x.data.clone())
                .unwrap_or_default(),
            None => arg(name),
        }
    };
    Some(match (seen.method.as_str(), edge) {
        ("GET", "feed") => {
            let data: Vec<Value> = st
                .posts
                .lock()
                .unwrap()
                .iter()
                .rev()
                .filter(|(id, _)| id.starts_with(&format!("{target}_")))
                .map(|(id, v)| json!({"id": id, "message": v["text"], "permalink_url": v["permalink"]}))
                .collect();
            json_response(200, &[], json!({"data": data}))
        }
        ("POST", "feed") => {
            let message = arg("message");
            let mut attached = Vec::new();
            for i in 0.. {
                let Some(a) = p.get(&format!("attached_media[{i}]")) else {
                    break;
                };
                let v: Value = match serde_json::from_str(a) {
                    Ok(v) => v,
                    Err(_) => {
                        return Some(graph_error(400, "(#100) attached_media must be JSON", 100));
                    }
                };
                let fbid = v["media_fbid"].as_str().unwrap_or("").to_string();
                let key = format!("photo/{fbid}");
                if kv_get(st, &key) != Some(json!("unpublished")) {
                    return Some(graph_error(
                        400,
                        &format!(
                            "(#100) media_fbid {fbid} is not an unpublished photo of this Page"
                        ),
                        100,
                    ));
                }
                kv_put(st, &key, json!("attached"));
                attached.push(fbid);
            }
            if message.is_empty() && arg("link").is_empty() && attached.is_empty() {
                return Some(graph_error(
                    400,
                    "(#100) Missing message or attachment",
                    100,
                ));
            }
            let id = publish_post(&message, json!({"link": arg("link"), "attached": attached}));
            json_response(200, &[], json!({"id": id}))
        }
        ("POST", "photos") => {
            let (source, url) = (
                multipart
                    .as_ref()
                    .and_then(|parts| parts.iter().find(|x| x.name == "source"))
                    .map(|x| (x.data.len(), x.content_type.clone())),
                arg("url"),
            );
            let size = match (source, url.is_empty()) {
                (Some((n, _)), true) => n,
                (None, false) => match fetch(&url, &[]) {
                    Ok((200, _, b)) => b.len(),
                    _ => {
                        return Some(graph_error(
                            400,
                            "(#324) Missing or invalid image file",
                            324,
                        ));
                    }
                },
                _ => return Some(graph_error(400, "(#324) Requires upload file", 324)),
            };
            if size == 0 {
                return Some(graph_error(
                    400,
                    "(#324) Missing or invalid image file",
                    324,
                ));
            }
            let photo = next_id(st, "");
            if field("published") == "false" {
                kv_put(st, &format!("photo/{photo}"), json!("unpublished"));
                json_response(200, &[], json!({"id": photo}))
            } else {
                let message = {
                    let m = field("message");
                    if m.is_empty() { field("caption") } else { m }
                };
                let post = publish_post(&message, json!({"photo": photo, "bytes": size}));
                json_response(200, &[], json!({"id": photo, "post_id": post}))
            }
        }
        ("POST", "videos") => facebook_video(st, seen, &multipart, &p, target),
        _ => graph_error(400, "(#100) Unsupported request", 100),
    })
}

/// The resumable video upload: `start` (file size) → `transfer` chunks at
/// the offsets the server names → `finish`.
fn facebook_video(
    st: &FakeState,
    seen: &Seen,
    multipart: &Option<Vec<super::Part>>,
    p: &HashMap<String, String>,
    target: &str,
) -> Response {
    let _ = seen;
    let field = |name: &str| -> String {
        match multipart {
            Some(parts) => parts
                .iter()
                .find(|x| x.name == name)
                .map(|x| x.data.clone())
                .unwrap_or_default(),
            None => p.get(name).cloned().unwrap_or_default(),
        }
    };
    let chunk = kv_get(st, "video_chunk")
        .and_then(|v| v.as_u64())
        .unwrap_or(1 << 20);
    match field("upload_phase").as_str() {
        "start" => {
            let Ok(size) = field("file_size").parse::<u64>() else {
                return graph_error(400, "(#100) file_size is required", 100);
            };
            let session = next_id(st, "s");
            let video = next_id(st, "");
            kv_put(
                st,
                &format!("v/{session}"),
                json!({"size": size, "received": 0, "video": video, "chunks": 0}),
            );
            json_response(
                200,
                &[],
                json!({"video_id": video, "upload_session_id": session, "start_offset": "0", "end_offset": chunk.min(size).to_string()}),
            )
        }
        "transfer" => {
            let key = format!("v/{}", field("upload_session_id"));
            let Some(mut v) = kv_get(st, &key) else {
                return graph_error(
                    400,
                    "(#6000) There was a problem uploading your video file",
                    6000,
                );
            };
            let (size, received) = (v["size"].as_u64().unwrap(), v["received"].as_u64().unwrap());
            let start: u64 = field("start_offset").parse().unwrap_or(u64::MAX);
            let data_len = multipart
                .as_ref()
                .and_then(|parts| parts.iter().find(|x| x.name == "video_file_chunk"))
                .map(|x| x.data.len() as u64);
            let expected = chunk.min(size - received);
            if start != received || data_len != Some(expected) {
                return graph_error(
                    400,
                    &format!(
                        "(#6001) chunk at {start} of {data_len:?} bytes; expected {expected} bytes at {received}"
                    ),
                    6001,
                );
            }
            let received = received + expected;
            v["received"] = json!(received);
            v["chunks"] = json!(v["chunks"].as_u64().unwrap() + 1);
            kv_put(st, &key, v);
            json_response(
                200,
                &[],
                json!({"start_offset": received.to_string(), "end_offset": (received + chunk).min(size).to_string()}),
            )
        }
        "finish" => {
            let key = format!("v/{}", field("upload_session_id"));
            let Some(v) = kv_get(st, &key) else {
                return graph_error(
                    400,
                    "(#6000) There was a problem uploading your video file",
                    6000,
                );
            };
            if v["received"] != v["size"] {
                return graph_error(400, "(#6000) The upload is not complete", 6000);
            }
            let video = v["video"].as_str().unwrap().to_string();
            st.posts.lock().unwrap().push((
                video.clone(),
                json!({"text": field("description"), "title": field("title"), "permalink": format!("https://www.facebook.com/{target}/videos/{video}"), "bytes": v["size"], "chunks": v["chunks"]}),
            ));
            json_response(200, &[], json!({"success": true}))
        }
        other => graph_error(
            400,
            &format!("(#100) upload_phase {other:?} is not valid"),
            100,
        ),
    }
}
