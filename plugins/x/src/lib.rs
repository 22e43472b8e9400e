//! X (Twitter): OAuth 2.0 with PKCE, `POST /2/tweets`, weighted
//! 280-character count, rate limits from `x-rate-limit-*`.

use outreach_sdk::prelude::*;

struct X;

impl Platform for X {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    /// X reads no platform fields: any `[override.x]` key besides text,
    /// title and link is a mistake.
    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        problems.extend(Fields::new(&m.id, post, account, &[]).finish());
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let mut body = json!({ "text": post.text });
        if !post.media.is_empty() {
            let ids = post
                .media
                .iter()
                .map(|m| upload(ctx, m))
                .collect::<Result<Vec<_>, _>>()?;
            body["media"] = json!({ "media_ids": ids });
        }
        if let Some(parent) = &post.reply_to {
            body["reply"] = json!({ "in_reply_to_tweet_id": parent });
        }
        let res = Request::post(ctx.url("api", "/2/tweets")?)
            .json(&body)
            .authed()
            .class("publish")
            .send()?;
        let v = res.json_ok()?;
        // A 2xx can carry `errors` without `data` (partial-error shape).
        let Some(id) = v["data"]["id"].as_str() else {
            return Err(CallError::Rejected(format!(
                "X answered without a post id: {}",
                res.snippet()
            )));
        };
        let user = ctx.account.handle.as_deref().unwrap_or("i/web");
        Ok(Receipt {
            state: ReceiptState::Published,
            id: id.into(),
            url: Some(format!("https://x.com/{user}/status/{id}")),
        })
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let res = Request::get(ctx.url("api", "/2/users/me?user.fields=profile_image_url")?)
            .authed()
            .class("profile")
            .send()?;
        let v = res.json_ok()?;
        let d = &v["data"];
        let id = d["id"]
            .as_str()
            .ok_or_else(|| CallError::Rejected(format!("no user id in: {}", res.snippet())))?;
        let handle = d["username"].as_str().map(String::from);
        Ok(Profile {
            id: id.into(),
            name: d["name"].as_str().unwrap_or(id).into(),
            url: handle.as_ref().map(|h| format!("https://x.com/{h}")),
            handle,
            picture: d["profile_image_url"].as_str().map(String::from),
        })
    }
}

/// Bytes per `append` segment (X accepts up to 5 MB).
const CHUNK: u64 = 4 << 20;

/// Upload a video in chunks and wait until X has processed it.
fn upload_video(ctx: &Context, m: &Media) -> Result<String, CallError> {
    let res = Request::post(ctx.url("api", "/2/media/upload/initialize")?)
        .json(&json!({ "media_type": m.mime_type, "total_bytes": m.size, "media_category": "tweet_video" }))
        .authed()
        .class("media")
        .send()?;
    let v = res.json_ok()?;
    let id = v["data"]["id"]
        .as_str()
        .ok_or_else(|| {
            CallError::Rejected(format!(
                "X answered initialize without a media id: {}",
                res.snippet()
            ))
        })?
        .to_string();
    let (mut offset, mut segment) = (0u64, 0u32);
    while offset < m.size {
        let len = CHUNK.min(m.size - offset);
        let form = Multipart::new()
            .file_slice("media", m, offset, len)
            .text("segment_index", &segment.to_string());
        let res = Request::post(ctx.url("api", &format!("/2/media/upload/{id}/append"))?)
            .multipart(form)
            .authed()
            .class("media")
            .send()?;
        if !res.is_success() {
            return Err(res.error());
        }
        offset += len;
        segment += 1;
    }
    let res = Request::post(ctx.url("api", &format!("/2/media/upload/{id}/finalize"))?)
        .authed()
        .class("media")
        .send()?;
    let mut info = res.json_ok()?["data"]["processing_info"].clone();
    for _ in 0..600 {
        match info["state"].as_str() {
            None | Some("succeeded") => return Ok(id),
            Some("failed") => {
                return Err(CallError::Rejected(format!(
                    "X could not process the video: {}",
                    info["error"]
                )));
            }
            _ => {}
        }
        sleep_millis(info["check_after_secs"].as_u64().unwrap_or(1).max(1) * 1000);
        let res = Request::get(ctx.url(
            "api",
            &format!("/2/media/upload?command=STATUS&media_id={id}"),
        )?)
        .authed()
        .class("media")
        .send()?;
        info = res.json_ok()?["data"]["processing_info"].clone();
    }
    Err(CallError::Transient(format!(
        "video {id} was still processing after ten minutes"
    )))
}

/// Upload one image or GIF: `POST /2/media/upload` (multipart); videos go
/// through the chunked upload.
fn upload(ctx: &Context, m: &Media) -> Result<String, CallError> {
    if m.kind == MediaKind::Video {
        return upload_video(ctx, m);
    }
    let category = if m.kind == MediaKind::Gif {
        "tweet_gif"
    } else {
        "tweet_image"
    };
    let res = Request::post(ctx.url("api", "/2/media/upload")?)
        .multipart(
            Multipart::new()
                .file("media", m)
                .text("media_category", category),
        )
        .authed()
        .class("media")
        .send()?;
    let v = res.json_ok()?;
    v["data"]["id"].as_str().map(String::from).ok_or_else(|| {
        CallError::Rejected(format!(
            "X answered the upload without a media id: {}",
            res.snippet()
        ))
    })
}

outreach_sdk::export_platform!(X);
