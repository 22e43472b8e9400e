//! Fakes of the two video platforms, following
//! shared/reference/platform-apis.md:
//!
//! - YouTube: Google OAuth; `channels?mine=true`; the resumable upload
//!   protocol — `POST /upload/youtube/v3/videos?uploadType=resumable`
//!   answers a session URL in `Location`; chunks are `PUT` with
//!   `Content-Range` (multiples of 256 KiB but the last) and answered
//!   `308 Resume Incomplete` with `Range: bytes=0-K`; `Content-Range:
//!   bytes */N` asks where an upload stands; a connection can be cut in the
//!   middle of a chunk (the server keeps part of it); quota errors
//!   (`quotaExceeded`) in Google's error shape.
//! - TikTok: OAuth with `client_key` and a hex PKCE challenge, rotating
//!   refresh tokens; `creator_info/query`; `video/init` whose chunk rules
//!   (5–64 MB chunks, the last up to 128 MB, the count) are checked;
//!   chunks `PUT` to the upload URL with `Content-Range`, 206 until the
//!   last (201); `status/fetch` through `PROCESSING_UPLOAD` to
//!   `PUBLISH_COMPLETE` (the id in `publicaly_available_post_id`) or
//!   `FAILED` with a reason; photo posts pulled from URLs.
//!
//! Uploaded bytes are not kept: each upload keeps its length and an FNV-1a
//! hash of its bytes in order, which the tests compare with the file's.

use std::collections::HashMap;

use axum::response::Response;
use serde_json::{Value, json};

use super::oauth::{self, Flavor};
use super::{Fake, FakeState, Home, Mode, Seen, json_response, respond, start};

/// FNV-1a, 64 bits, continued from `h` (start with [`FNV_START`]).
pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A file of `size` bytes that media checks take for an MP4 (a real `ftyp`
/// box), the rest text so that fakes can read it losslessly; its FNV.
pub fn write_video(path: &std::path::Path, size: u64) -> u64 {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let head = super::meta::MP4;
    f.write_all(head).unwrap();
    let mut h = fnv(FNV_START, head);
    let block: Vec<u8> = (0..65_536u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut left = size - head.len() as u64;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        h = fnv(h, &block[..n]);
        left -= n as u64;
    }
    f.flush().unwrap();
    h
}

fn kv_get(st: &FakeState, key: &str) -> Option<Value> {
    st.kv.lock().unwrap().get(key).cloned()
}

fn kv_put(st: &FakeState, key: &str, v: Value) {
    st.kv.lock().unwrap().insert(key.to_string(), v);
}

fn bump(st: &FakeState, key: &str) -> u64 {
    let mut kv = st.kv.lock().unwrap();
    let n = kv.get(key).and_then(Value::as_u64).unwrap_or(0) + 1;
    kv.insert(key.into(), json!(n));
    n
}

fn query(seen: &Seen) -> HashMap<String, String> {
    url::form_urlencoded::parse(seen.query.as_bytes())
        .into_owned()
        .collect()
}

fn bearer_valid(st: &FakeState, seen: &Seen) -> bool {
    let t = seen
        .headers
        .get("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    *st.mode.lock().unwrap() != Mode::Expired && st.oauth.lock().unwrap().valid(t)
}

/// `bytes a-b/N` → (a, b, N); `bytes */N` → (None, N).
fn content_range(seen: &Seen) -> Option<(Option<(u64, u64)>, u64)> {
    let v = seen.headers.get("content-range")?.strip_prefix("bytes ")?;
    let (span, total) = v.split_once('/')?;
    let total = total.parse().ok()?;
    if span == "*" {
        return Some((None, total));
    }
    let (a, b) = span.split_once('-')?;
    Some((Some((a.parse().ok()?, b.parse().ok()?)), total))
}

impl Fake {
    /// An upload's `(bytes stored, FNV of them, chunks accepted)`.
    pub fn upload(&self, id: &str) -> Option<(u64, u64, u64)> {
        let v = self.kv(&format!("up/{id}"))?;
        Some((
            v["received"].as_u64()?,
            v["fnv"].as_u64()?,
            v["chunks"].as_u64()?,
        ))
    }
    /// Every upload session so far expires (YouTube keeps them a week).
    pub fn expire_sessions(&self) {
        for (k, v) in self.state.kv.lock().unwrap().iter_mut() {
            if k.starts_with("up/") {
                v["gone"] = json!(true);
            }
        }
    }
    /// Every upload's id.
    pub fn uploads(&self) -> Vec<String> {
        self.state
            .kv
            .lock()
            .unwrap()
            .keys()
            .filter_map(|k| k.strip_prefix("up/").map(str::to_string))
            .collect()
    }
}

// ------------------------------------------------------------ YouTube

/// A home whose YouTube account (a pasted token) talks to `yt`.
pub fn youtube_home(yt: &Fake) -> Home {
    let mut home = Home::new();
    home.endpoint("youtube", "api", &format!("{}/youtube/v3", yt.url()));
    home.endpoint(
        "youtube",
        "upload",
        &format!("{}/upload/youtube/v3", yt.url()),
    );
    home.limits = vec![("publish_timeout_ms", 60_000), ("http_timeout_ms", 20_000)];
    yt.grant("yt-pasted-PLANTED-token");
    let r = home.run(
        &["accounts", "add", "youtube"],
        Some("yt-pasted-PLANTED-token"),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Acme Bakery"), "{}", r.stdout);
    home
}

fn google_error(status: u16, reason: &str, message: &str) -> Response {
    json_response(
        status,
        &[],
        json!({"error": {"code": status, "message": message, "errors": [{"message": message, "domain": "youtube.quota", "reason": reason}]}}),
    )
}

/// A fake of www.googleapis.com (YouTube Data API and its upload host)
/// with Google's OAuth endpoints on the same address.
pub fn fake_youtube() -> Fake {
    fn handle(st: &FakeState, seen: &Seen) -> Response {
        if let Some(r) = oauth::route(st, seen, Flavor::Google) {
            return r;
        }
        if !bearer_valid(st, seen) {
            return google_error(
                401,
                "authError",
                "Request had invalid authentication credentials.",
            );
        }
        let q = query(seen);
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/youtube/v3/channels") => {
                if q.get("mine").map(String::as_str) != Some("true") {
                    return google_error(400, "invalidParameter", "mine=true expected");
                }
                json_response(
                    200,
                    &[],
                    json!({"kind": "youtube#channelListResponse", "items": [{"id": "UCacme0000000000000000", "snippet": {"title": "Acme Bakery", "customUrl": "@acmebakery", "thumbnails": {"default": {"url": "https://yt3.ggpht.com/acme"}}}, "contentDetails": {"relatedPlaylists": {"uploads": "UUacme"}}}]}),
                )
            }
            ("GET", "/youtube/v3/playlistItems") => {
                let items: Vec<Value> = st
                    .posts
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .map(|(id, v)| json!({"snippet": {"title": v["snippet"]["title"], "resourceId": {"kind": "youtube#video", "videoId": id}}}))
                    .collect();
                json_response(200, &[], json!({"items": items}))
            }
            ("POST", "/upload/youtube/v3/videos") => youtube_start(st, seen, &q),
            ("PUT", "/upload/youtube/v3/videos") => youtube_chunk(st, seen, &q),
            _ => google_error(404, "notFound", "Not Found"),
        }
    }
    start(handle)
}

fn youtube_start(st: &FakeState, seen: &Seen, q: &HashMap<String, String>) -> Response {
    if q.get("uploadType").map(String::as_str) != Some("resumable")
        || q.get("part").map(String::as_str) != Some("snippet,status")
    {
        return google_error(
            400,
            "invalidParameter",
            "uploadType=resumable&part=snippet,status expected",
        );
    }
    if let Some(v) = kv_get(st, "quota_error") {
        return google_error(
            403,
            v.as_str().unwrap(),
            "The request cannot be completed because you have exceeded your quota.",
        );
    }
    let Ok(meta) = serde_json::from_str::<Value>(&seen.body) else {
        return google_error(400, "parseError", "Parse Error");
    };
    let title = meta["snippet"]["title"].as_str().unwrap_or("");
    if title.is_empty() || title.chars().count() > 100 {
        return google_error(
            400,
            "invalidTitle",
            "The request metadata specifies an invalid or empty video title.",
        );
    }
    let privacy = meta["status"]["privacyStatus"].as_str().unwrap_or("");
    if !["private", "unlisted", "public"].contains(&privacy) {
        return google_error(400, "invalidVideoMetadata", "privacyStatus is not valid");
    }
    let Some(size) = seen
        .headers
        .get("x-upload-content-length")
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return google_error(
            400,
            "invalidParameter",
            "X-Upload-Content-Length is required",
        );
    };
    if !seen
        .headers
        .get("x-upload-content-type")
        .is_some_and(|t| t.starts_with("video/"))
    {
        return google_error(
            400,
            "invalidParameter",
            "X-Upload-Content-Type must be video/*",
        );
    }
    // The session URL is a capability, like a token: planted, so a test
    // sees it if it is ever printed.
    let n = bump(st, "sessions");
    let id = format!("yt-session-PLANTED-{n}");
    kv_put(
        st,
        &format!("up/{id}"),
        json!({"size": size, "received": 0, "fnv": FNV_START, "chunks": 0, "meta": meta, "done": false, "n": n}),
    );
    let base = st.base.lock().unwrap().clone();
    let location = format!("{base}/upload/youtube/v3/videos?uploadType=resumable&upload_id={id}");
    respond(200, &[("location", location.as_str())], "")
}

/// Where an upload stands, as YouTube says it: 308 with the bytes it has.
fn resume_incomplete(received: u64) -> Response {
    if received == 0 {
        respond(308, &[], "")
    } else {
        let range = format!("bytes=0-{}", received - 1);
        respond(308, &[("range", range.as_str())], "")
    }
}

fn youtube_chunk(st: &FakeState, seen: &Seen, q: &HashMap<String, String>) -> Response {
    let id = q.get("upload_id").cloned().unwrap_or_default();
    let key = format!("up/{id}");
    let Some(mut up) = kv_get(st, &key) else {
        return google_error(404, "notFound", "The upload session does not exist.");
    };
    if up["gone"] == json!(true) {
        return google_error(410, "gone", "The upload session has expired.");
    }
    bump(st, "session_puts");
    let size = up["size"].as_u64().unwrap();
    let received = up["received"].as_u64().unwrap();
    let video = |st: &FakeState, up: &Value| {
        let vid = format!("vid{}", up["n"]);
        let exists = st.posts.lock().unwrap().iter().any(|(p, _)| *p == vid);
        if !exists {
            st.posts
                .lock()
                .unwrap()
                .push((vid.clone(), up["meta"].clone()));
        }
        json_response(
            201,
            &[],
            json!({"kind": "youtube#video", "id": vid, "snippet": up["meta"]["snippet"], "status": up["meta"]["status"]}),
        )
    };
    match content_range(seen) {
        Some((None, total)) if total == size => {
            bump(st, "status_queries");
            if up["done"] == json!(true) {
                video(st, &up)
            } else {
                resume_incomplete(received)
            }
        }
        Some((Some((a, b)), total)) if total == size && b >= a && b < size => {
            let len = b - a + 1;
            let data = seen.body.as_bytes();
            if data.len() as u64 != len || a != received {
                return google_error(
                    400,
                    "badContent",
                    &format!(
                        "chunk {a}-{b} ({} bytes) does not continue at {received}",
                        data.len()
                    ),
                );
            }
            if b + 1 < size && len % (256 * 1024) != 0 {
                return google_error(
                    400,
                    "badContent",
                    "chunks other than the last must be multiples of 256 KiB",
                );
            }
            if let Some(ms) = kv_get(st, "chunk_delay_ms").and_then(|v| v.as_u64()) {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            // A connection cut in the middle of this chunk: part of it
            // arrived, the answer never does.
            let cut = kv_get(st, "cut_at").and_then(|v| v.as_u64());
            let (kept, cut_now) = match cut {
                Some(c) if c > a && c <= b => {
                    st.kv.lock().unwrap().remove("cut_at");
                    ((c - a) / (256 * 1024) * (256 * 1024), true)
                }
                _ => (len, false),
            };
            let h = fnv(up["fnv"].as_u64().unwrap(), &data[..kept as usize]);
            up["fnv"] = json!(h);
            up["received"] = json!(received + kept);
            up["chunks"] = json!(up["chunks"].as_u64().unwrap() + 1);
            if received + kept == size {
                up["done"] = json!(true);
            }
            kv_put(st, &key, up.clone());
            if cut_now {
                return super::truncated();
            }
            if received + kept == size {
                video(st, &up)
            } else {
                resume_incomplete(received + kept)
            }
        }
        _ => google_error(
            400,
            "badContent",
            "a Content-Range header of this upload is required",
        ),
    }
}

// ------------------------------------------------------------ TikTok

fn tiktok(status: u16, code: &str, message: &str, data: Value) -> Response {
    json_response(
        status,
        &[],
        json!({"data": data, "error": {"code": code, "message": message, "log_id": "202612010000000001"}}),
    )
}

const MIB: u64 = 1 << 20;

/// A fake of open.tiktokapis.com (and its upload host, on the same
/// address), with TikTok's OAuth endpoints.
pub fn fake_tiktok() -> Fake {
    fn handle(st: &FakeState, seen: &Seen) -> Response {
        if let Some(r) = oauth::route(st, seen, Flavor::TikTok) {
            return r;
        }
        // The upload URL is the capability: no token on it.
        if seen.path == "/upload/" && seen.method == "PUT" {
            return tiktok_chunk(st, seen);
        }
        if !bearer_valid(st, seen) {
            return tiktok(
                401,
                "access_token_invalid",
                "The access token is invalid or not found in the request.",
                json!({}),
            );
        }
        let body: Value = serde_json::from_str(&seen.body).unwrap_or(Value::Null);
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/v2/user/info/") => tiktok(
                200,
                "ok",
                "",
                json!({"user": {"open_id": "tt-open-id-1", "union_id": "tt-union-1", "avatar_url": "https://p16.tiktokcdn.com/acme.jpeg", "display_name": "Acme Bakery", "username": "acmebakery"}}),
            ),
            ("POST", "/v2/post/publish/creator_info/query/") => {
                let options = kv_get(st, "privacy_options").unwrap_or_else(|| {
                    json!(["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"])
                });
                tiktok(
                    200,
                    "ok",
                    "",
                    json!({"creator_avatar_url": "https://p16.tiktokcdn.com/acme.jpeg", "creator_username": "acmebakery", "creator_nickname": "Acme Bakery", "privacy_level_options": options, "comment_disabled": false, "duet_disabled": false, "stitch_disabled": true, "max_video_post_duration_sec": 600}),
                )
            }
            ("POST", "/v2/post/publish/video/init/") => tiktok_init(st, &body),
            ("POST", "/v2/post/publish/content/init/") => tiktok_photos(st, &body),
            ("POST", "/v2/post/publish/status/fetch/") => tiktok_status(st, &body),
            _ => tiktok(404, "invalid_params", "no such endpoint", json!({})),
        }
    }
    start(handle)
}

/// Six inits a minute per token, as TikTok allows.
fn init_allowed(st: &FakeState) -> bool {
    let now = std::time::Instant::now();
    let mut kv = st.kv.lock().unwrap();
    let list = kv.entry("init_times".into()).or_insert_with(|| json!([]));
    // Stored as milliseconds since the first init of this fake.
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    let ms = now.duration_since(origin).as_millis() as u64;
    let arr = list.as_array_mut().unwrap();
    arr.retain(|t| ms - t.as_u64().unwrap() < 60_000);
    if arr.len() >= 6 {
        return false;
    }
    arr.push(json!(ms));
    true
}
static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn privacy_ok(st: &FakeState, info: &Value) -> Option<Response> {
    let options = kv_get(st, "privacy_options")
        .unwrap_or_else(|| json!(["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]));
    let level = info["privacy_level"].as_str().unwrap_or("");
    if !options.as_array().unwrap().iter().any(|o| o == level) {
        return Some(tiktok(
            400,
            "privacy_level_option_mismatch",
            "privacy_level is not one of the creator's options",
            json!({}),
        ));
    }
    None
}

fn tiktok_init(st: &FakeState, body: &Value) -> Response {
    if !init_allowed(st) {
        return tiktok(429, "rate_limit_exceeded", "Too many requests", json!({}));
    }
    if let Some(r) = privacy_ok(st, &body["post_info"]) {
        return r;
    }
    let src = &body["source_info"];
    let n = bump(st, "publishes");
    let publish_id = format!("v_pub_file~v2-1.{n}");
    match src["source"].as_str() {
        Some("FILE_UPLOAD") => {
            let (Some(size), Some(chunk), Some(count)) = (
                src["video_size"].as_u64(),
                src["chunk_size"].as_u64(),
                src["total_chunk_count"].as_u64(),
            ) else {
                return tiktok(
                    400,
                    "invalid_params",
                    "video_size, chunk_size and total_chunk_count are required",
                    json!({}),
                );
            };
            // Chunks of 5 to 64 MB, the last up to 128 MB; a video under
            // 5 MB is one chunk of its size.
            let ok = if size < 5 * MIB {
                chunk == size && count == 1
            } else {
                (5 * MIB..=64_000_000).contains(&chunk)
                    && count == (size / chunk).max(1)
                    && size - chunk * (count - 1) <= 128_000_000
            };
            if !ok {
                return tiktok(
                    400,
                    "invalid_params",
                    &format!("chunk rules: size {size}, chunk {chunk}, count {count}"),
                    json!({}),
                );
            }
            kv_put(
                st,
                &format!("up/{publish_id}"),
                json!({"size": size, "chunk": chunk, "count": count, "received": 0, "fnv": FNV_START, "chunks": 0, "post": body["post_info"]}),
            );
            kv_put(
                st,
                &format!("status/{publish_id}"),
                json!({"status": "PROCESSING_UPLOAD", "polls": 0, "post": body["post_info"]}),
            );
            let base = st.base.lock().unwrap().clone();
            tiktok(
                200,
                "ok",
                "",
                json!({"publish_id": publish_id, "upload_url": format!("{base}/upload/?upload_id={publish_id}&upload_token=tt-upload-PLANTED")}),
            )
        }
        Some("PULL_FROM_URL") => {
            let url = src["video_url"].as_str().unwrap_or("");
            let fetched = super::meta::fetch(url, &[]);
            let ok = matches!(&fetched, Ok((200, _, b)) if !b.is_empty());
            kv_put(
                st,
                &format!("status/{publish_id}"),
                json!({"status": if ok { "PROCESSING_DOWNLOAD" } else { "FAILED" }, "polls": 0, "fail_reason": if ok { Value::Null } else { json!("file_format_check_failed") }, "post": body["post_info"]}),
            );
            tiktok(200, "ok", "", json!({"publish_id": publish_id}))
        }
        _ => tiktok(
            400,
            "invalid_params",
            "source must be FILE_UPLOAD or PULL_FROM_URL",
            json!({}),
        ),
    }
}

fn tiktok_photos(st: &FakeState, body: &Value) -> Response {
    if !init_allowed(st) {
        return tiktok(429, "rate_limit_exceeded", "Too many requests", json!({}));
    }
    if let Some(r) = privacy_ok(st, &body["post_info"]) {
        return r;
    }
    if body["media_type"] != "PHOTO" || body["post_mode"] != "DIRECT_POST" {
        return tiktok(
            400,
            "invalid_params",
            "media_type PHOTO and post_mode DIRECT_POST expected",
            json!({}),
        );
    }
    let urls: Vec<String> = body["source_info"]["photo_images"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if urls.is_empty() || body["source_info"]["source"] != "PULL_FROM_URL" {
        return tiktok(
            400,
            "invalid_params",
            "photo_images pulled from URLs expected",
            json!({}),
        );
    }
    let all_ok = urls
        .iter()
        .all(|u| matches!(super::meta::fetch(u, &[]), Ok((200, _, b)) if !b.is_empty()));
    let n = bump(st, "publishes");
    let publish_id = format!("p_pub_url~v2.{n}");
    kv_put(
        st,
        &format!("status/{publish_id}"),
        json!({"status": if all_ok { "PROCESSING_DOWNLOAD" } else { "FAILED" }, "polls": 0, "fail_reason": if all_ok { Value::Null } else { json!("picture_size_check_failed") }, "post": body["post_info"], "photos": urls.len()}),
    );
    tiktok(200, "ok", "", json!({"publish_id": publish_id}))
}

fn tiktok_chunk(st: &FakeState, seen: &Seen) -> Response {
    let q = query(seen);
    let id = q.get("upload_id").cloned().unwrap_or_default();
    let key = format!("up/{id}");
    let Some(mut up) = kv_get(st, &key) else {
        return respond(404, &[], "");
    };
    let (size, chunk, count, received) = (
        up["size"].as_u64().unwrap(),
        up["chunk"].as_u64().unwrap(),
        up["count"].as_u64().unwrap(),
        up["received"].as_u64().unwrap(),
    );
    let index = received / chunk;
    let last = index + 1 == count;
    let expect_len = if last { size - received } else { chunk };
    let data = seen.body.as_bytes();
    match content_range(seen) {
        Some((Some((a, b)), total))
            if total == size
                && a == received
                && b + 1 - a == expect_len
                && data.len() as u64 == expect_len => {}
        other => {
            return tiktok(
                400,
                "invalid_file_upload",
                &format!(
                    "chunk {other:?} of {} bytes; expected {expect_len} bytes at {received} of {size}",
                    data.len()
                ),
                json!({}),
            );
        }
    }
    if let Some(ms) = kv_get(st, "chunk_delay_ms").and_then(|v| v.as_u64()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    up["fnv"] = json!(fnv(up["fnv"].as_u64().unwrap(), data));
    up["received"] = json!(received + expect_len);
    up["chunks"] = json!(up["chunks"].as_u64().unwrap() + 1);
    kv_put(st, &key, up);
    if kv_get(st, "cut_after_chunk") == Some(json!(index)) {
        st.kv.lock().unwrap().remove("cut_after_chunk");
        return super::truncated();
    }
    if last {
        respond(201, &[], "")
    } else {
        respond(206, &[], "")
    }
}

fn tiktok_status(st: &FakeState, body: &Value) -> Response {
    let id = body["publish_id"].as_str().unwrap_or("").to_string();
    let key = format!("status/{id}");
    let Some(mut s) = kv_get(st, &key) else {
        return tiktok(400, "invalid_params", "publish_id not found", json!({}));
    };
    // The upload has to be complete before TikTok processes it.
    if let Some(up) = kv_get(st, &format!("up/{id}"))
        && up["received"] != up["size"]
    {
        return tiktok(
            200,
            "ok",
            "",
            json!({"status": "PROCESSING_UPLOAD", "uploaded_bytes": up["received"]}),
        );
    }
    let polls = s["polls"].as_u64().unwrap_or(0) + 1;
    s["polls"] = json!(polls);
    let moderation = kv_get(st, "moderation_polls")
        .and_then(|v| v.as_u64())
        .unwrap_or(1);
    if s["status"] != "FAILED" {
        if let Some(reason) = kv_get(st, "fail_reason") {
            s["status"] = json!("FAILED");
            s["fail_reason"] = reason;
        } else if polls > moderation {
            s["status"] = json!("PUBLISH_COMPLETE");
            if s["post_id"].is_null() {
                let n = bump(st, "public_ids");
                let post_id = format!("73000000000000000{n:02}");
                s["post_id"] = json!(post_id);
                st.posts.lock().unwrap().push((post_id, s["post"].clone()));
            }
        } else {
            s["status"] = json!("PROCESSING_DOWNLOAD");
        }
    }
    kv_put(st, &key, s.clone());
    let mut data = json!({"status": s["status"]});
    if s["status"] == "FAILED" {
        data["fail_reason"] = s["fail_reason"].clone();
    }
    // Spelled as TikTok spells it; a private post never gets one.
    if s["status"] == "PUBLISH_COMPLETE" && s["post"]["privacy_level"] != "SELF_ONLY" {
        data["publicaly_available_post_id"] =
            json!([s["post_id"].as_str().unwrap().parse::<u64>().unwrap()]);
    }
    tiktok(200, "ok", "", data)
}
