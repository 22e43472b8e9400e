//! Threads: a post is a container (`POST /{user}/threads` with
//! `media_type` TEXT, IMAGE or VIDEO, or a CAROUSEL of up to twenty
//! children made with `is_carousel_item=true`), which Threads processes
//! (`status` until FINISHED, its reason in `error_message`) and
//! `threads_publish` makes live. A thread's later posts are replies to
//! the one before (`reply_to_id`).
//!
//! Owns: which containers a post becomes. The Graph flow itself — errors,
//! the 24-hour publishing quota, polling, publishing, the permalink — is
//! the SDK's `meta` module, shared with Facebook and Instagram. Threads
//! counts replies against a quota of their own (far larger), which it does
//! not report the same way: only a thread's first post checks the quota.

use outreach_sdk::meta::{self, Containers, Graph};
use outreach_sdk::prelude::*;

struct Threads;

const GRAPH: Graph = Graph { name: "Threads" };

const CONTAINERS: Containers = Containers {
    graph: GRAPH,
    create_edge: "threads",
    publish_edge: "threads_publish",
    status_fields: "status,error_message",
    state: "status",
    reason: "error_message",
    permalink_fields: "id,permalink",
};

/// A carousel holds at most this many images and videos.
const MAX_ITEMS: usize = 20;

impl Platform for Threads {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        problems.extend(Fields::new(&m.id, post, account, &[]).finish());
        if post.media.len() > MAX_ITEMS {
            problems.push(Problem {
                field: "media".into(),
                message: format!(
                    "has {} images and videos; a Threads post holds at most {MAX_ITEMS}",
                    post.media.len()
                ),
            });
        }
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let urls = meta::public_urls(&post.media, GRAPH.name)?;
        if post.reply_to.is_none() {
            GRAPH.check_quota(ctx, "threads_publishing_limit")?;
        }
        let children;
        let mut form = match (post.media.as_slice(), urls.as_slice()) {
            ([], _) => vec![("media_type", "TEXT")],
            ([m], [url]) => item(m, url),
            _ => {
                // Each child is processed before the carousel that holds
                // them.
                let mut ids = Vec::with_capacity(urls.len());
                for (m, url) in post.media.iter().zip(&urls) {
                    let mut child = item(m, url);
                    child.push(("is_carousel_item", "true"));
                    ids.push(CONTAINERS.create(ctx, &child)?);
                }
                children = ids.join(",");
                vec![("media_type", "CAROUSEL"), ("children", children.as_str())]
            }
        };
        form.push(("text", post.text.as_str()));
        if let Some(parent) = post.reply_to.as_deref() {
            form.push(("reply_to_id", parent));
        }
        let container = CONTAINERS.create(ctx, &form)?;
        CONTAINERS.publish(ctx, &container)
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let v = GRAPH.get(
            ctx,
            "/me?fields=id,username,name,threads_profile_picture_url",
        )?;
        let id = meta::id_of(&v["id"])
            .ok_or_else(|| CallError::Rejected(format!("Threads sent no user id: {v}")))?;
        Ok(meta::profile(id, &v, "threads_profile_picture_url", |h| {
            format!("https://www.threads.com/@{h}")
        }))
    }

    /// A publish whose answer was lost: the account's latest posts with
    /// the same text.
    fn find_post(ctx: &Context, post: &Post) -> Result<Option<Receipt>, CallError> {
        let user = encode_component(ctx.user_id()?);
        GRAPH.find(
            ctx,
            &format!("/{user}/threads?fields=id,text,permalink&limit=25"),
            "text",
            "permalink",
            &post.text,
        )
    }
}

/// The fields of one image or video: its kind, its public URL and its
/// description for screen readers.
fn item<'a>(m: &'a Media, url: &'a str) -> Vec<(&'static str, &'a str)> {
    let mut form = if m.kind == MediaKind::Video {
        vec![("media_type", "VIDEO"), ("video_url", url)]
    } else {
        vec![("media_type", "IMAGE"), ("image_url", url)]
    };
    if let Some(alt) = m.alt_text.as_deref() {
        form.push(("alt_text", alt));
    }
    form
}

outreach_sdk::export_platform!(Threads);
