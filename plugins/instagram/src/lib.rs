//! Instagram, through the Instagram API with Instagram Login (a
//! professional account; no Facebook Page needed). A post is one image
//! (`image_url`, with its `alt_text`), one video (published as a reel:
//! Instagram has made every feed video a reel since 2023) or a carousel of
//! up to ten (children with `is_carousel_item=true`, then
//! `media_type=CAROUSEL` with their ids), the text being its caption.
//! Instagram fetches each file from its public URL and processes it in a
//! container (`status_code` until FINISHED, its reason in `status`), and
//! `media_publish` makes the post.
//!
//! Owns: Instagram's rules (at least one image or video, at most 30
//! hashtags, 20 mentions and 10 items) and the containers a post becomes.
//! The Graph flow itself — errors, the 24-hour publishing quota, polling,
//! publishing, the permalink — is the SDK's `meta` module, shared with
//! Facebook and Threads.

use outreach_sdk::meta::{self, Containers, Graph};
use outreach_sdk::prelude::*;

struct Instagram;

const GRAPH: Graph = Graph { name: "Instagram" };

const CONTAINERS: Containers = Containers {
    graph: GRAPH,
    create_edge: "media",
    publish_edge: "media_publish",
    status_fields: "status_code,status",
    state: "status_code",
    reason: "status",
    permalink_fields: "permalink",
};

/// More hashtags or mentions in a caption, or more items in a carousel,
/// and Instagram refuses the post.
const MAX_HASHTAGS: usize = 30;
const MAX_MENTIONS: usize = 20;
const MAX_ITEMS: usize = 10;

impl Platform for Instagram {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        problems.extend(Fields::new(&m.id, post, account, &[]).finish());
        let mut problem = |field: &str, message: String| {
            problems.push(Problem {
                field: field.into(),
                message,
            })
        };
        let hashtags = tags(&post.text, '#');
        if hashtags > MAX_HASHTAGS {
            problem(
                "text",
                format!("has {hashtags} hashtags; Instagram allows at most {MAX_HASHTAGS}"),
            );
        }
        let mentions = tags(&post.text, '@');
        if mentions > MAX_MENTIONS {
            problem(
                "text",
                format!("mentions {mentions} accounts; Instagram allows at most {MAX_MENTIONS}"),
            );
        }
        if post.media.len() > MAX_ITEMS {
            problem(
                "media",
                format!(
                    "has {} images and videos; an Instagram carousel holds at most {MAX_ITEMS}",
                    post.media.len()
                ),
            );
        }
        // Said in Instagram's words rather than the generic rule's.
        if post.media.is_empty() {
            problems.retain(|p| p.field != "media");
            problems.push(Problem {
                field: "media".into(),
                message: "Instagram posts need at least one image or video".into(),
            });
        }
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let urls = meta::public_urls(&post.media, GRAPH.name)?;
        if urls.is_empty() {
            return Err(CallError::Rejected(
                "Instagram posts need at least one image or video".into(),
            ));
        }
        GRAPH.check_quota(ctx, "content_publishing_limit")?;
        let children;
        let mut form = match (post.media.as_slice(), urls.as_slice()) {
            ([m], [url]) if m.kind == MediaKind::Video => {
                vec![("video_url", *url), ("media_type", "REELS")]
            }
            ([m], [url]) => {
                let mut form = vec![("image_url", *url)];
                if let Some(alt) = m.alt_text.as_deref() {
                    form.push(("alt_text", alt));
                }
                form
            }
            _ => {
                // Each child is processed before the carousel that holds
                // them.
                let mut ids = Vec::with_capacity(urls.len());
                for (m, url) in post.media.iter().zip(&urls) {
                    let mut child = if m.kind == MediaKind::Video {
                        vec![("video_url", *url), ("media_type", "VIDEO")]
                    } else {
                        vec![("image_url", *url)]
                    };
                    child.push(("is_carousel_item", "true"));
                    ids.push(CONTAINERS.create(ctx, &child)?);
                }
                children = ids.join(",");
                vec![("media_type", "CAROUSEL"), ("children", children.as_str())]
            }
        };
        form.push(("caption", post.text.as_str()));
        let container = CONTAINERS.create(ctx, &form)?;
        CONTAINERS.publish(ctx, &container)
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let v = GRAPH.get(ctx, "/me?fields=user_id,username,name,profile_picture_url")?;
        // `user_id` is the id publishing goes under (`id` is app-scoped).
        let id = meta::id_of(&v["user_id"])
            .or_else(|| meta::id_of(&v["id"]))
            .ok_or_else(|| CallError::Rejected(format!("Instagram sent no user id: {v}")))?;
        Ok(meta::profile(id, &v, "profile_picture_url", |h| {
            format!("https://www.instagram.com/{h}/")
        }))
    }

    /// A publish whose answer was lost: the account's latest media with
    /// the post's text as caption.
    fn find_post(ctx: &Context, post: &Post) -> Result<Option<Receipt>, CallError> {
        let user = encode_component(ctx.user_id()?);
        GRAPH.find(
            ctx,
            &format!("/{user}/media?fields=id,caption,permalink,timestamp&limit=25"),
            "caption",
            "permalink",
            &post.text,
        )
    }
}

/// How many `#hashtags` (or `@mentions`) `text` has: the mark at the start
/// of a word, followed by a letter, digit or `_` (so `C#` and
/// `me@example.com` are none).
fn tags(text: &str, mark: char) -> usize {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut count = 0;
    let mut before: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == mark
            && !before.is_some_and(|b| word(b) || b == mark)
            && chars.peek().is_some_and(|&n| word(n))
        {
            count += 1;
        }
        before = Some(c);
    }
    count
}

outreach_sdk::export_platform!(Instagram);

#[cfg(test)]
mod tests {
    use super::tags;

    #[test]
    fn hashtags_and_mentions_start_a_word() {
        assert_eq!(tags("#rust and #wasm_32, #日本 # not ##no C#", '#'), 3);
        assert_eq!(tags("@a @b.c mail me@example.com @", '@'), 2);
    }
}
