//! TikTok, through the Content Posting API's Direct Post: one video (sent
//! in chunks, `FILE_UPLOAD`, or fetched by TikTok from its public URL,
//! `PULL_FROM_URL`) or up to 35 photos (always fetched), the text as the
//! caption. Every post starts with the creator's settings
//! (`creator_info/query`): the privacy levels they may post with now and
//! whether they have comments, duets or stitches off. TikTok then
//! processes and moderates the post, and names its public id only then
//! (`status/fetch`, in the field it spells `publicaly_available_post_id`):
//! a post still processing after a few polls is pending, and
//! `check_receipt` asks again.
//!
//! Owns: TikTok's rules (a video or photos, not both), the privacy level
//! checked against the creator's options, the chunked upload and where it
//! stands — kept with the host's checkpoint, so that a later attempt of
//! the same delivery (after a dropped connection or a killed process)
//! continues at the next chunk instead of starting over — and reading
//! TikTok's answers, which all carry `{"data":{…},"error":{"code":"ok"|…,
//! "message","log_id"}}`.
//!
//! Never: sends the access token to the upload URL (the URL itself is the
//! capability), holds more than one chunk (the host streams each from the
//! file), counts bytes for progress (the host does), or lists the
//! account's posts (that needs a scope outreach does not ask for).

use outreach_sdk::meta;
use outreach_sdk::prelude::*;
use outreach_sdk::serde_json::{self, Value};
use outreach_sdk::upload::{self, Chunks, MIB};

struct TikTok;

/// The platform fields (`[override.tiktok]`) this plugin reads.
const FIELDS: &[&str] = &[
    "privacy_level",
    "disable_comment",
    "disable_duet",
    "disable_stitch",
    "video_cover_timestamp_ms",
];

/// Bytes per chunk. TikTok takes chunks of 5 to 64 MB, the last one (which
/// takes the remainder) up to 128 MB, and a video smaller than 5 MB as one
/// chunk of its own size.
const CHUNK: u64 = 10 * MIB;

/// Sends of a chunk again after one fails on the way, before the upload
/// is left to the host's retry (which continues at that chunk).
const CHUNK_RETRIES: u32 = 3;

/// Status polls right after publishing, this far apart, before the post
/// is left pending for `check_receipt`.
const POLLS: u32 = 6;
const POLL_MILLIS: u64 = 2_000;

/// Whether a request comes before the post exists or may be the one that
/// makes it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Creator settings, a chunked upload's init and chunks, look-ups:
    /// whatever goes wrong, nothing is posted.
    Before,
    /// A `PULL_FROM_URL` init: TikTok fetches the media and posts it, so
    /// a lost answer may hide a post.
    Live,
}

/// What the creator's settings and the post's fields make of a post.
struct Settings<'p> {
    privacy: &'p str,
    disable_comment: bool,
    disable_duet: bool,
    disable_stitch: bool,
}

impl Platform for TikTok {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        let mut f = Fields::new(&m.id, post, account, FIELDS);
        f.check(
            "video_cover_timestamp_ms",
            fields::shape("a whole number of milliseconds", fields::is_digits),
        );
        problems.extend(f.finish());
        // More than 35 photos: the manifest's media rule says so.
        let has = |kind: MediaKind| post.media.iter().any(|m| m.kind == kind);
        if has(MediaKind::Video) && has(MediaKind::Image) {
            problems.push(Problem {
                field: "media".into(),
                message: "a TikTok post is one video or up to 35 photos, not both".into(),
            });
        }
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let creator = call(
            ctx,
            "/post/publish/creator_info/query/",
            &json!({}),
            "",
            Stage::Before,
        )?;
        let privacy = post.extra("privacy_level").unwrap_or("SELF_ONLY");
        if let Some(options) = creator["privacy_level_options"].as_array() {
            let options: Vec<&str> = options.iter().filter_map(Value::as_str).collect();
            if !options.contains(&privacy) {
                return Err(CallError::Rejected(format!(
                    "TikTok does not let this creator post with privacy_level = {privacy:?} now; allowed: {} (an app TikTok has not audited can post only SELF_ONLY)",
                    options.join(", ")
                )));
            }
        }
        // What the creator has turned off stays off, whatever the post says.
        let off = |field: &str, creator_off: &str| {
            post.extra(field) == Some("true") || creator[creator_off] == true
        };
        let settings = Settings {
            privacy,
            disable_comment: off("disable_comment", "comment_disabled"),
            disable_duet: off("disable_duet", "duet_disabled"),
            disable_stitch: off("disable_stitch", "stitch_disabled"),
        };
        // outreach does not read a video's duration: the creator's
        // `max_video_post_duration_sec` is TikTok's to enforce.
        let publish_id = match post.media.iter().find(|m| m.kind == MediaKind::Video) {
            Some(video) => post_video(ctx, post, video, &settings)?,
            None => post_photos(ctx, post, &settings)?,
        };
        let username = creator["creator_username"]
            .as_str()
            .filter(|u| !u.is_empty())
            .or(ctx.account.handle.as_deref());
        poll(ctx, &publish_id, username)
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let url = ctx.url(
            "api",
            "/user/info/?fields=open_id,union_id,avatar_url,display_name,username",
        )?;
        let data = send(Request::get(url).authed(), Stage::Before)?;
        let user = &data["user"];
        let Some(id) = user["open_id"].as_str().filter(|id| !id.is_empty()) else {
            return Err(CallError::Rejected(format!(
                "TikTok sent no open_id for the user: {data}"
            )));
        };
        let handle = user["username"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(String::from);
        Ok(Profile {
            id: id.into(),
            name: user["display_name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .or(handle.as_deref())
                .unwrap_or(id)
                .into(),
            picture: user["avatar_url"].as_str().map(String::from),
            url: handle
                .as_ref()
                .map(|h| format!("https://www.tiktok.com/@{h}")),
            handle,
        })
    }

    /// TikTok lists a user's posts only with the `video.list` scope, which
    /// outreach does not ask for: whether a post went out cannot be told.
    fn find_post(_ctx: &Context, _post: &Post) -> Result<Option<Receipt>, CallError> {
        Ok(None)
    }

    /// One status fetch for the pending post's publish id.
    fn check_receipt(ctx: &Context, receipt: &Receipt) -> Result<Receipt, CallError> {
        let data = status(ctx, &receipt.id)?;
        outcome(&data, &receipt.id, ctx.account.handle.as_deref())
    }
}

/// Post a video: TikTok fetches it from its public URL if it has one, or
/// it goes up in chunks. The post's publish id.
fn post_video(
    ctx: &Context,
    post: &Post,
    video: &Media,
    settings: &Settings,
) -> Result<String, CallError> {
    let mut info = json!({
        "title": post.text,
        "privacy_level": settings.privacy,
        "disable_duet": settings.disable_duet,
        "disable_comment": settings.disable_comment,
        "disable_stitch": settings.disable_stitch,
    });
    if let Some(ms) = post
        .extra("video_cover_timestamp_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        info["video_cover_timestamp_ms"] = ms.into();
    }
    let Some(url) = video.public_url.as_deref() else {
        return upload::settle(upload_video(ctx, video, info));
    };
    let body = json!({
        "post_info": info,
        "source_info": { "source": "PULL_FROM_URL", "video_url": url },
    });
    let data = call(ctx, "/post/publish/video/init/", &body, "init", Stage::Live)?;
    publish_id(&data, Stage::Live)
}

/// Send `video` in chunks (`FILE_UPLOAD`), carrying on at the chunk an
/// earlier attempt of this delivery got to: the post's publish id. The
/// checkpoint holds `{"publish_id","upload_url","size","next"}`.
fn upload_video(ctx: &Context, video: &Media, info: Value) -> Result<String, CallError> {
    let size = video.size;
    let chunks = Chunks::new(size, CHUNK);
    let saved = upload::resume(size).and_then(|s| {
        let id = s["publish_id"].as_str()?.to_string();
        Some((
            id,
            s["upload_url"].as_str()?.to_string(),
            s["next"].as_u64()?,
        ))
    });
    // A chunk sent again — after a send that failed on the way, or the
    // first one after resuming — may be TikTok's already.
    let mut unsure = saved.is_some();
    let (publish_id, upload_url, mut next) = match saved {
        Some((id, url, next)) => {
            log(
                Level::Info,
                &format!(
                    "resuming the upload to TikTok at chunk {} of {}",
                    next + 1,
                    chunks.count
                ),
            );
            (id, url, next)
        }
        None => {
            let body = json!({
                "post_info": info,
                "source_info": {
                    "source": "FILE_UPLOAD",
                    "video_size": size,
                    "chunk_size": chunks.chunk_size,
                    "total_chunk_count": chunks.count,
                },
            });
            let data = call(
                ctx,
                "/post/publish/video/init/",
                &body,
                "init",
                Stage::Before,
            )?;
            let id = publish_id(&data, Stage::Before)?;
            let Some(url) = data["upload_url"].as_str().filter(|u| !u.is_empty()) else {
                return Err(CallError::Transient(format!(
                    "TikTok started the upload without an upload_url: {data}"
                )));
            };
            (id, url.to_string(), 0)
        }
    };
    let save = |next: u64| {
        let state = json!({ "publish_id": publish_id, "upload_url": upload_url, "next": next });
        upload::save(size, state);
    };
    save(next);
    while next < chunks.count {
        let (res, resent) = send_chunk(&upload_url, video, &chunks, next)?;
        match res.status {
            206 => {}
            200 | 201 => break,
            // The upload URL has expired or was never good: a new init
            // gets another.
            401 | 403 | 404 | 410 => {
                upload::forget();
                return Err(CallError::Transient(format!(
                    "TikTok no longer takes this upload (HTTP {} at chunk {} of {}); the next attempt starts it again",
                    res.status,
                    next + 1,
                    chunks.count
                )));
            }
            // A chunk sent again that TikTok refuses arrived the first
            // time (the answer was lost): go on with the next, which
            // TikTok refuses in turn if it did not.
            400 | 416 if unsure || resent => log(
                Level::Info,
                &format!(
                    "TikTok refused chunk {} of {} sent again ({}); taking it as received",
                    next + 1,
                    chunks.count,
                    res.snippet()
                ),
            ),
            _ => return Err(error(&res, Stage::Before)),
        }
        unsure = false;
        next += 1;
        save(next);
    }
    Ok(publish_id)
}

/// `PUT` chunk `i` to the upload URL — no credential: the URL is the
/// capability — sending it again up to [`CHUNK_RETRIES`] times if the
/// send fails on the way. TikTok's answer, and whether it answers a chunk
/// sent again.
fn send_chunk(
    url: &str,
    video: &Media,
    chunks: &Chunks,
    i: u64,
) -> Result<(Response, bool), CallError> {
    let (start, len) = chunks.piece(i);
    let mut failures = 0;
    loop {
        let sent = Request::put(url)
            .header("Content-Type", video.mime_type.clone())
            .header(
                "Content-Range",
                upload::content_range(start, len, video.size),
            )
            .media(video.handle, start, len)
            .class("upload")
            .send();
        match sent {
            Ok(res) => return Ok((res, failures > 0)),
            Err(e) if upload::lost(&e) && failures < CHUNK_RETRIES => failures += 1,
            Err(e) if upload::lost(&e) => {
                return Err(CallError::Transient(format!(
                    "chunk {} of {} did not reach TikTok in {} tries ({e:?}); the next attempt continues at that chunk",
                    i + 1,
                    chunks.count,
                    CHUNK_RETRIES + 1
                )));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Post photos: TikTok fetches each from its public URL (photo posts are
/// pull-only). The post's publish id.
fn post_photos(ctx: &Context, post: &Post, settings: &Settings) -> Result<String, CallError> {
    let urls = meta::public_urls(&post.media, "TikTok")?;
    let body = json!({
        "post_info": {
            "title": post.title.as_deref().unwrap_or_default(),
            "description": post.text,
            "privacy_level": settings.privacy,
            "disable_comment": settings.disable_comment,
            "auto_add_music": true,
        },
        "source_info": {
            "source": "PULL_FROM_URL",
            "photo_cover_index": 0,
            "photo_images": urls,
        },
        "post_mode": "DIRECT_POST",
        "media_type": "PHOTO",
    });
    let data = call(
        ctx,
        "/post/publish/content/init/",
        &body,
        "init",
        Stage::Live,
    )?;
    publish_id(&data, Stage::Live)
}

/// The `publish_id` of an init's answer.
fn publish_id(data: &Value, stage: Stage) -> Result<String, CallError> {
    match data["publish_id"].as_str().filter(|id| !id.is_empty()) {
        Some(id) => Ok(id.into()),
        None => {
            let what = format!("TikTok answered without a publish_id: {data}");
            Err(match stage {
                Stage::Before => CallError::Transient(what),
                Stage::Live => CallError::OutcomeUnknown(what),
            })
        }
    }
}

/// Ask how publish `id` stands a few times, [`POLL_MILLIS`] apart: live,
/// refused, or still pending (for `check_receipt`). The post exists by
/// now, so a status fetch that fails leaves it pending rather than
/// failing the publish (which the host would send again).
fn poll(ctx: &Context, id: &str, username: Option<&str>) -> Result<Receipt, CallError> {
    for i in 0..POLLS {
        if i > 0 {
            sleep_millis(POLL_MILLIS);
        }
        let data = match status(ctx, id) {
            Ok(data) => data,
            Err(e) => {
                log(
                    Level::Warn,
                    &format!("TikTok took post {id}, but asking how it stands failed: {e:?}"),
                );
                break;
            }
        };
        let receipt = outcome(&data, id, username)?;
        if receipt.state != ReceiptState::Pending {
            return Ok(receipt);
        }
    }
    Ok(pending(id))
}

/// `status/fetch` for publish `id`: its `data`.
fn status(ctx: &Context, id: &str) -> Result<Value, CallError> {
    let body = json!({ "publish_id": id });
    call(
        ctx,
        "/post/publish/status/fetch/",
        &body,
        "status",
        Stage::Before,
    )
}

/// What a status answer says of publish `id`: `PUBLISH_COMPLETE` is live
/// — with its public id once moderation gives one, or, for a post TikTok
/// never makes public (`SELF_ONLY`, all an unaudited app may post), under
/// its publish id with the creator's profile as its link; `FAILED` is
/// refused with TikTok's reason; anything else (processing, sent to the
/// user's inbox) is pending.
fn outcome(data: &Value, id: &str, username: Option<&str>) -> Result<Receipt, CallError> {
    match data["status"].as_str().unwrap_or_default() {
        "PUBLISH_COMPLETE" => {
            // Spelled so by TikTok; a list, filled once moderation is done.
            let post = data["publicaly_available_post_id"]
                .as_array()
                .and_then(|ids| ids.iter().find_map(meta::id_of));
            Ok(match post {
                Some(post) => {
                    let url = username.map(|u| format!("https://www.tiktok.com/@{u}/video/{post}"));
                    Receipt::published(post, url)
                }
                None => {
                    Receipt::published(id, username.map(|u| format!("https://www.tiktok.com/@{u}")))
                }
            })
        }
        "FAILED" => Err(CallError::Rejected(format!(
            "TikTok could not publish the post: {}",
            data["fail_reason"].as_str().unwrap_or("no reason given")
        ))),
        _ => Ok(pending(id)),
    }
}

/// A post TikTok is still working on, asked about by its publish id.
fn pending(publish_id: &str) -> Receipt {
    Receipt {
        id: publish_id.into(),
        url: None,
        state: ReceiptState::Pending,
    }
}

/// POST `body` as JSON to `path` below the `api` endpoint, with the
/// account's token, counted as `class`: the answer's `data`.
fn call(
    ctx: &Context,
    path: &str,
    body: &Value,
    class: &str,
    stage: Stage,
) -> Result<Value, CallError> {
    let req = upload::json_utf8(Request::post(ctx.url("api", path)?), body);
    send(req.authed().class(class), stage)
}

/// Send `req` and read its answer. A connection that broke before the
/// post can exist is only a reason to try again.
fn send(req: Request, stage: Stage) -> Result<Value, CallError> {
    match req.send() {
        Ok(res) => answer(&res, stage),
        Err(CallError::OutcomeUnknown(m)) if stage == Stage::Before => {
            Err(CallError::Transient(format!("TikTok did not answer: {m}")))
        }
        Err(e) => Err(e),
    }
}

/// A successful answer's `data`: its `error.code` is `"ok"`.
fn answer(res: &Response, stage: Stage) -> Result<Value, CallError> {
    let v: Value = serde_json::from_slice(&res.body).unwrap_or_default();
    if res.is_success() && v["error"]["code"] == "ok" {
        return Ok(v["data"].clone());
    }
    Err(error(res, stage))
}

/// Classify a failed answer by TikTok's `error.code` (or, without one, by
/// the HTTP status): a token to refresh, a grant without a scope, a wait,
/// a refusal, or TikTok's own trouble — worth another attempt before the
/// post can exist, an unknown outcome once it may.
fn error(res: &Response, stage: Stage) -> CallError {
    let v: Value = serde_json::from_slice(&res.body).unwrap_or_default();
    let e = &v["error"];
    let code = e["code"].as_str().unwrap_or_default();
    let message = e["message"].as_str().unwrap_or_default();
    let mut said = match (code, message) {
        ("", _) => format!("HTTP {} with {}", res.status, res.snippet()),
        (code, "") => format!("{code} (HTTP {})", res.status),
        (code, message) => format!("{message} ({code})"),
    };
    if let Some(log_id) = e["log_id"].as_str().filter(|l| !l.is_empty()) {
        said.push_str(&format!(", log id {log_id}"));
    }
    let trouble = |said: String| match stage {
        Stage::Before => CallError::Transient(format!("TikTok could not answer for now: {said}")),
        Stage::Live => CallError::OutcomeUnknown(format!(
            "TikTok failed while taking the post, so it may or may not be published: {said}"
        )),
    };
    let throttled = |said: String| {
        CallError::RateLimited(RateLimited {
            retry_after_seconds: Some(60),
            message: format!("TikTok is throttling requests: {said}"),
        })
    };
    match code {
        "access_token_invalid" => {
            CallError::AuthExpired(format!("TikTok refused the access token: {said}"))
        }
        "scope_not_authorized" => CallError::NeedsReconnect(format!(
            "the account did not grant outreach every TikTok permission it needs (user.info.basic, user.info.profile, video.publish): {said}; connect it again and allow them all"
        )),
        "rate_limit_exceeded" => throttled(said),
        "unaudited_client_can_only_post_to_private_accounts" => CallError::Rejected(format!(
            "TikTok lets an app it has not audited post only privately: set privacy_level = \"SELF_ONLY\" in [override.tiktok] until the app passes TikTok's audit ({said})"
        )),
        "internal_error" => trouble(said),
        "privacy_level_option_mismatch" | "invalid_params" => {
            CallError::Rejected(format!("TikTok refused it: {said}"))
        }
        c if c.starts_with("spam_risk") => {
            CallError::Rejected(format!("TikTok refused it: {said}"))
        }
        _ => match res.status {
            401 => CallError::AuthExpired(format!("TikTok refused the access token: {said}")),
            429 => throttled(said),
            // A 2xx TikTok's envelope does not say is "ok" is no answer.
            500..=599 | 200..=299 => trouble(said),
            _ => CallError::Rejected(format!("TikTok refused it: {said}")),
        },
    }
}

outreach_sdk::export_platform!(TikTok);
