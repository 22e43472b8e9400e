//! Facebook Pages: one account per Page, acting with the Page's own token
//! (derived at connect from the user's long-lived token, so it does not
//! expire). A text or link post is `POST /{page}/feed`; one photo is
//! `POST /{page}/photos` with `published=true`; several are uploaded
//! unpublished and attached to one feed post (`attached_media[i]`); a
//! video goes to the video host in the chunks Facebook names
//! (`upload_phase` start → transfer… → finish).
//!
//! Owns: which requests a post becomes, the Page it posts as (the
//! `page_id` setting, else the account's id) and listing the Pages a
//! user may pick. Graph errors and the permalink lookup are the SDK's
//! `meta` module, shared with Instagram and Threads. Photos go up as bytes
//! (`source`) unless they have a public URL (`url`); a link cannot go with
//! photos or a video (Facebook would show the media, not the link), so
//! only a text post carries `post.link`.

use outreach_sdk::meta::{self, Graph, Stage};
use outreach_sdk::prelude::*;
use outreach_sdk::serde_json::Value;

struct Facebook;

const GRAPH: Graph = Graph { name: "Facebook" };

/// Photos in one post, GIFs included.
const MAX_PHOTOS: usize = 10;

/// Pages of `/me/accounts` read when listing a user's Pages (100 each).
const MAX_LIST_PAGES: usize = 20;

/// More chunks than this and the video upload is taken to be stuck.
const MAX_CHUNKS: u32 = 10_000;

impl Platform for Facebook {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        let mut f = Fields::new(&m.id, post, account, &[]);
        f.check_setting(
            "page_id",
            fields::shape("the Page's numeric id", fields::is_digits),
        );
        problems.extend(f.finish());
        let videos = post
            .media
            .iter()
            .filter(|m| m.kind == MediaKind::Video)
            .count();
        let photos = post.media.len() - videos;
        if videos > 0 && photos > 0 {
            problems.push(Problem {
                field: "media".into(),
                message: "a Facebook post carries photos or one video, not both".into(),
            });
        }
        if photos > MAX_PHOTOS {
            problems.push(Problem {
                field: "media".into(),
                message: format!(
                    "has {photos} images and GIFs; a Facebook post holds at most {MAX_PHOTOS}"
                ),
            });
        }
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let page = page(ctx)?;
        if let Some(video) = post.media.iter().find(|m| m.kind == MediaKind::Video) {
            return upload_video(ctx, &page, video, post);
        }
        let feed = format!("/{page}/feed");
        match post.media.as_slice() {
            [] => {
                let mut form = vec![("message", post.text.as_str())];
                if let Some(link) = post.link.as_deref() {
                    form.push(("link", link));
                }
                let v = GRAPH.post(ctx, &feed, &form, Stage::Live)?;
                live(ctx, meta::id_of(&v["id"]), &v)
            }
            // A published photo is a post of its own: `post_id` is the
            // post, `id` the photo.
            [one] => {
                let v = photo(ctx, &page, one, Some(&post.text))?;
                live(
                    ctx,
                    meta::id_of(&v["post_id"]).or_else(|| meta::id_of(&v["id"])),
                    &v,
                )
            }
            many => {
                let mut attached = Vec::with_capacity(many.len());
                for (i, m) in many.iter().enumerate() {
                    let v = photo(ctx, &page, m, None)?;
                    let id = meta::id_of(&v["id"]).ok_or_else(|| {
                        CallError::Transient(format!(
                            "Facebook answered the upload of media[{i}] without its id: {v}"
                        ))
                    })?;
                    let value = json!({ "media_fbid": id }).to_string();
                    attached.push((format!("attached_media[{i}]"), value));
                }
                let mut form = vec![("message", post.text.as_str())];
                form.extend(attached.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let v = GRAPH.post(ctx, &feed, &form, Stage::Live)?;
                live(ctx, meta::id_of(&v["id"]), &v)
            }
        }
    }

    /// The Page the account's token belongs to.
    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let v = GRAPH.get(ctx, "/me?fields=id,name,picture")?;
        let id = meta::id_of(&v["id"])
            .ok_or_else(|| CallError::Rejected(format!("Facebook sent no Page id: {v}")))?;
        Ok(Profile {
            name: v["name"].as_str().unwrap_or(&id).into(),
            handle: None,
            picture: v["picture"]["data"]["url"].as_str().map(String::from),
            url: Some(format!("https://www.facebook.com/{id}")),
            id,
        })
    }

    /// A publish whose answer was lost: the Page's latest posts with the
    /// same text.
    fn find_post(ctx: &Context, post: &Post) -> Result<Option<Receipt>, CallError> {
        let page = page(ctx)?;
        GRAPH.find(
            ctx,
            &format!("/{page}/feed?fields=id,message,permalink_url&limit=25"),
            "message",
            "permalink_url",
            &post.text,
        )
    }

    /// The Pages the user's grant may post as, 100 at a time. Each page of
    /// the list names the next with a URL that carries the token; only its
    /// `after` cursor is taken, and the next request is built here.
    fn list_identities(ctx: &Context) -> Result<Vec<Identity>, CallError> {
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut path = "/me/accounts?fields=id,name,picture&limit=100".to_string();
            if let Some(cursor) = &after {
                path.push_str(&format!("&after={}", encode_component(cursor)));
            }
            let v = GRAPH.get(ctx, &path)?;
            for p in v["data"].as_array().into_iter().flatten() {
                let Some(id) = meta::id_of(&p["id"]) else {
                    continue;
                };
                pages.push(Identity {
                    name: p["name"].as_str().unwrap_or(&id).into(),
                    picture: p["picture"]["data"]["url"].as_str().map(String::from),
                    kind: "page".into(),
                    extra_scopes: vec![],
                    id,
                });
            }
            let paging = &v["paging"];
            after = match (paging["next"].as_str(), paging["cursors"]["after"].as_str()) {
                (Some(_), Some(cursor)) if !cursor.is_empty() => Some(cursor.into()),
                _ => break,
            };
        }
        Ok(pages)
    }
}

/// The Page to post as (percent-encoded for a path): the account's
/// `page_id` setting, else the account's own id (the Page's, learned at
/// connect).
fn page(ctx: &Context) -> Result<String, CallError> {
    let id = match ctx.setting("page_id") {
        Some(id) => id,
        None => ctx.user_id()?,
    };
    Ok(encode_component(id))
}

/// A live post as a receipt, its URL asked of Facebook.
fn live(ctx: &Context, id: Option<String>, answer: &Value) -> Result<Receipt, CallError> {
    let id = id.ok_or_else(|| {
        CallError::OutcomeUnknown(format!("Facebook answered without the post's id: {answer}"))
    })?;
    let url = GRAPH.permalink(ctx, &id, "permalink_url", "permalink_url");
    Ok(Receipt::published(id, url))
}

/// Upload one photo to the Page: published with `message` as a post of
/// its own, or unpublished (no message) to be attached to one. Its bytes
/// go as `source`, or Facebook fetches it from its public URL.
fn photo(ctx: &Context, page: &str, m: &Media, message: Option<&str>) -> Result<Value, CallError> {
    let path = format!("/{page}/photos");
    let (stage, published) = match message {
        Some(_) => (Stage::Live, "true"),
        None => (Stage::Before, "false"),
    };
    if let Some(url) = m.public_url.as_deref() {
        let mut form = vec![("url", url)];
        if let Some(text) = message {
            form.push(("message", text));
        }
        form.push(("published", published));
        return GRAPH.post(ctx, &path, &form, stage);
    }
    let mut form = Multipart::new().file("source", m);
    if let Some(text) = message {
        form = form.text("message", text);
    }
    let form = form.text("published", published);
    let req = Request::post(ctx.url("api", &path)?)
        .multipart(form)
        .authed()
        .class(stage.class());
    GRAPH.call(req, stage)
}

/// Upload a video in the chunks Facebook asks for (`upload_phase=start`
/// with its size; `transfer` of bytes `[start_offset, end_offset)` until
/// the two meet; `finish` with the text, which publishes it).
fn upload_video(ctx: &Context, page: &str, m: &Media, post: &Post) -> Result<Receipt, CallError> {
    let url = ctx.url("video", &format!("/{page}/videos"))?;
    let step = |req: Request, stage: Stage| GRAPH.call(req.authed().class(stage.class()), stage);
    let size = m.size.to_string();
    let v = step(
        Request::post(url.clone()).form(&[("upload_phase", "start"), ("file_size", &size)]),
        Stage::Before,
    )?;
    let (Some(video), Some(session)) = (
        meta::id_of(&v["video_id"]),
        meta::id_of(&v["upload_session_id"]),
    ) else {
        return Err(CallError::Transient(format!(
            "Facebook started no video upload (no video_id or upload_session_id): {v}"
        )));
    };
    let (mut start, mut end) = offsets(&v)?;
    let mut chunks = 0;
    while start != end {
        chunks += 1;
        if start > end || end > m.size || chunks > MAX_CHUNKS {
            return Err(CallError::Transient(format!(
                "Facebook asked for bytes {start} to {end} of a {}-byte video (chunk {chunks}); the upload is given up",
                m.size
            )));
        }
        let form = Multipart::new()
            .text("upload_phase", "transfer")
            .text("upload_session_id", &session)
            .text("start_offset", &start.to_string())
            .file_slice("video_file_chunk", m, start, end - start);
        let v = step(Request::post(url.clone()).multipart(form), Stage::Before)?;
        (start, end) = offsets(&v)?;
    }
    let mut form = vec![
        ("upload_phase", "finish"),
        ("upload_session_id", session.as_str()),
        ("description", post.text.as_str()),
    ];
    if let Some(title) = post.title.as_deref() {
        form.push(("title", title));
    }
    let v = step(Request::post(url).form(&form), Stage::Live)?;
    if v["success"] != true {
        return Err(CallError::OutcomeUnknown(format!(
            "Facebook answered the video's finish without success: {v}"
        )));
    }
    let url = format!("https://www.facebook.com/{}", encode_component(&video));
    Ok(Receipt::published(video, Some(url)))
}

/// The next chunk Facebook asks for: `start_offset` and `end_offset`,
/// which come as strings.
fn offsets(v: &Value) -> Result<(u64, u64), CallError> {
    let offset = |k: &str| meta::number(&v[k]).and_then(|n| u64::try_from(n).ok());
    match (offset("start_offset"), offset("end_offset")) {
        (Some(start), Some(end)) => Ok((start, end)),
        _ => Err(CallError::Transient(format!(
            "Facebook's video upload answer has no start_offset and end_offset: {v}"
        ))),
    }
}

outreach_sdk::export_platform!(Facebook);
