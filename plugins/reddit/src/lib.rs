//! Reddit: OAuth 2.0 with a permanent refresh token, `POST /api/submit` as
//! a form (`kind=self` with the text, `kind=link` with the link,
//! `kind=image` with an image, `kind=video` with a video and its poster
//! image, uploaded through Reddit's media lease — its
//! post id comes later, so it is pending until the user's submitted
//! listing shows it), after
//! checking the subreddit's rules (`/api/v1/{sr}/post_requirements`) and
//! resolving a flair given by its text (`/r/{sr}/api/link_flair_v2`).
//! Reddit answers many refusals with HTTP 200 and `json.errors` (a
//! `RATELIMIT` among them, which is a wait, not a failure), and
//! `validate_on_submit` refusals with HTTP 400 naming the field. The
//! User-Agent Reddit requires (`<platform>:<app id>:<version> (by
//! /u/<user>)`) comes from the config (`platforms.reddit.user_agent`): the
//! host puts it on every request, token requests included.

use outreach_sdk::form_encode;
use outreach_sdk::prelude::*;
use outreach_sdk::serde_json::Value;

struct Reddit;

/// The platform fields (`[override.reddit]`) this plugin reads.
const FIELDS: &[&str] = &[
    "subreddit",
    "flair_id",
    "flair_text",
    "nsfw",
    "spoiler",
    "sendreplies",
];

impl Platform for Reddit {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        let mut f = Fields::new(&m.id, post, account, FIELDS);
        f.check(
            "subreddit",
            fields::shape("a subreddit name without r/, such as rust", is_subreddit),
        );
        problems.extend(f.finish());
        let has = |k: MediaKind| post.media.iter().any(|m| m.kind == k);
        if has(MediaKind::Video) && !has(MediaKind::Image) {
            problems.push(Problem {
                field: "media".into(),
                message: "Reddit shows a video with a poster image: add an image to the post (it becomes the poster)".into(),
            });
        }
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let sr = subreddit(post)?;
        let title = post.title.clone().unwrap_or_default();
        let video = post.media.iter().find(|m| m.kind == MediaKind::Video);
        let image = post.media.iter().find(|m| m.kind != MediaKind::Video);
        let kind = if video.is_some() {
            "video"
        } else if image.is_some() {
            "image"
        } else if post.link.is_some() {
            "link"
        } else {
            "self"
        };
        check_requirements(ctx, &sr, &title, post, kind)?;
        let flair_id = match (post.extra("flair_id"), post.extra("flair_text")) {
            (Some(id), _) => Some(id.to_string()),
            (None, Some(text)) => find_flair(ctx, &sr, text)?,
            (None, None) => None,
        };
        let mut form: Vec<(&str, String)> = vec![
            ("api_type", "json".into()),
            ("sr", sr.clone()),
            ("title", title),
            ("kind", kind.into()),
            ("nsfw", post.extra("nsfw").unwrap_or("false").into()),
            ("spoiler", post.extra("spoiler").unwrap_or("false").into()),
            (
                "sendreplies",
                post.extra("sendreplies").unwrap_or("true").into(),
            ),
            ("validate_on_submit", "true".into()),
            ("resubmit", "true".into()),
        ];
        match (video, image, &post.link) {
            (Some(v), poster, _) => {
                form.push(("url", upload(ctx, v)?));
                if let Some(p) = poster {
                    form.push(("video_poster_url", upload(ctx, p)?));
                }
            }
            (None, Some(m), _) => form.push(("url", upload(ctx, m)?)),
            (None, None, Some(link)) => form.push(("url", link.clone())),
            (None, None, None) => form.push(("text", post.text.clone())),
        }
        if let Some(id) = flair_id {
            form.push(("flair_id", id));
        }
        if let Some(text) = post.extra("flair_text") {
            form.push(("flair_text", text.into()));
        }
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = Request::post(ctx.url("api", "/api/submit")?)
            .form(&pairs)
            .authed()
            .class("publish")
            .send()?;
        let v = answer(&res)?;
        let data = &v["json"]["data"];
        // A media post's id is known only once Reddit has processed it.
        if matches!(kind, "image" | "video") && data["id"].as_str().is_none() {
            return Ok(Receipt {
                state: ReceiptState::Pending,
                id: form_encode(&[("sr", &sr), ("t", post.title.as_deref().unwrap_or(""))]),
                url: None,
            });
        }
        match (data["id"].as_str(), data["name"].as_str()) {
            (Some(id), _) if !id.is_empty() => Ok(Receipt::published(
                id,
                data["url"].as_str().map(String::from),
            )),
            _ => Err(CallError::OutcomeUnknown(format!(
                "Reddit answered without the post's id: {}",
                res.snippet()
            ))),
        }
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let res = Request::get(ctx.url("api", "/api/v1/me")?)
            .authed()
            .send()?;
        let v = answer(&res)?;
        let name = v["name"].as_str().unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(CallError::Rejected(format!(
                "no user name in: {}",
                res.snippet()
            )));
        }
        Ok(Profile {
            id: v["id"].as_str().unwrap_or(&name).to_string(),
            picture: v["icon_img"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(|u| u.replace("&amp;", "&")),
            url: Some(format!("https://www.reddit.com/user/{name}")),
            handle: Some(name.clone()),
            name,
        })
    }

    /// A media post Reddit is processing: found in the user's submitted
    /// listing once it is there.
    fn check_receipt(ctx: &Context, receipt: &Receipt) -> Result<Receipt, CallError> {
        let mut sr = String::new();
        let mut title = String::new();
        for (k, v) in form_urlencoded::parse(receipt.id.as_bytes()) {
            match &*k {
                "sr" => sr = v.into_owned(),
                "t" => title = v.into_owned(),
                _ => {}
            }
        }
        if title.is_empty() {
            return Ok(receipt.clone());
        }
        Ok(submitted(ctx, &sr, &title)?.unwrap_or_else(|| receipt.clone()))
    }

    /// A submit whose answer was lost: the user's latest submissions with
    /// the same title in the same subreddit (needs the `history` scope).
    fn find_post(ctx: &Context, post: &Post) -> Result<Option<Receipt>, CallError> {
        let Some(title) = post.title.clone() else {
            return Ok(None);
        };
        submitted(ctx, &subreddit(post)?, &title)
    }
}

/// The user's latest submission titled `title` in r/`sr`, if any.
fn submitted(ctx: &Context, sr: &str, title: &str) -> Result<Option<Receipt>, CallError> {
    {
        let Some(user) = ctx.account.handle.clone() else {
            return Ok(None);
        };
        let url = query_url(
            &ctx.url(
                "api",
                &format!("/user/{}/submitted", encode_component(&user)),
            )?,
            &[("limit", "25"), ("sort", "new"), ("raw_json", "1")],
        );
        let res = Request::get(url).authed().send()?;
        let v = answer(&res)?;
        Ok(v["data"]["children"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| &c["data"])
            .find(|d| {
                d["title"] == title
                    && d["subreddit"]
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(sr))
            })
            .and_then(|d| {
                let id = d["id"].as_str()?;
                let link = d["permalink"]
                    .as_str()
                    .map(|p| format!("https://www.reddit.com{p}"));
                Some(Receipt::published(id, link))
            }))
    }
}

/// Upload `m` through Reddit's media lease: ask for the lease, post the
/// file to the storage it names with the lease's fields, and return the
/// uploaded file's URL for the submit.
fn upload(ctx: &Context, m: &Media) -> Result<String, CallError> {
    let res = Request::post(ctx.url("api", "/api/media/asset.json")?)
        .form(&[
            ("filepath", m.file_name.as_str()),
            ("mimetype", m.mime_type.as_str()),
        ])
        .authed()
        .class("media")
        .send()?;
    let v = answer(&res)?;
    let action = v["args"]["action"].as_str().unwrap_or_default();
    if action.is_empty() {
        return Err(CallError::Transient(format!(
            "Reddit's upload lease has no action: {}",
            res.snippet()
        )));
    }
    // The action is protocol-relative (`//bucket.s3…`): the API's scheme.
    let api = ctx.url("api", "")?;
    let scheme = api.split("://").next().unwrap_or("https");
    let target = if action.starts_with("//") {
        format!("{scheme}:{action}")
    } else {
        action.to_string()
    };
    let mut form = Multipart::new();
    for f in v["args"]["fields"].as_array().into_iter().flatten() {
        form = form.text(
            f["name"].as_str().unwrap_or_default(),
            f["value"].as_str().unwrap_or_default(),
        );
    }
    // The storage is not Reddit's API: no credential goes there.
    let stored = Request::post(target)
        .multipart(form.file("file", m))
        .class("media")
        .send()?;
    if !stored.is_success() {
        return Err(CallError::Transient(format!(
            "the upload to Reddit's storage failed (HTTP {}): {}",
            stored.status,
            stored.snippet()
        )));
    }
    // S3 answers XML: `<Location>https://…/key</Location>`.
    let xml = stored.text();
    xml.split("<Location>")
        .nth(1)
        .and_then(|r| r.split("</Location>").next())
        .map(|l| l.replace("%2F", "/"))
        .ok_or_else(|| {
            CallError::Transient(format!(
                "Reddit's storage did not say where the file went: {}",
                stored.snippet()
            ))
        })
}

fn is_subreddit(s: &str) -> bool {
    let s = s.trim_start_matches("r/");
    (2..=21).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn subreddit(post: &Post) -> Result<String, CallError> {
    post.extra("subreddit")
        .map(|s| s.trim_start_matches("r/").to_string())
        .ok_or_else(|| CallError::Rejected("no subreddit: set [override.reddit] subreddit".into()))
}

/// Check what the subreddit requires before anything is posted: a flair,
/// a title length, whether a text body is required or not allowed.
fn check_requirements(
    ctx: &Context,
    sr: &str,
    title: &str,
    post: &Post,
    kind: &str,
) -> Result<(), CallError> {
    let res = Request::get(ctx.url(
        "api",
        &format!("/api/v1/{}/post_requirements", encode_component(sr)),
    )?)
    .authed()
    .send()?;
    if res.status == 404 || res.status == 403 {
        return Err(CallError::Rejected(format!(
            "r/{sr} does not exist or is private (HTTP {})",
            res.status
        )));
    }
    let rules = answer(&res)?;
    let mut broken = Vec::new();
    let has_flair = post.extra("flair_id").is_some() || post.extra("flair_text").is_some();
    if rules["is_flair_required"].as_bool() == Some(true) && !has_flair {
        broken.push("flair: r/{sr} requires a flair; set flair_text (or flair_id)".to_string());
    }
    let len = title.chars().count() as u64;
    if let Some(min) = rules["title_text_min_length"].as_u64()
        && len < min
    {
        broken.push(format!("title: r/{sr} wants at least {min} characters"));
    }
    if let Some(max) = rules["title_text_max_length"].as_u64()
        && len > max
    {
        broken.push(format!("title: r/{sr} allows at most {max} characters"));
    }
    match (rules["body_restriction_policy"].as_str(), kind) {
        (Some("required"), _) if post.text.trim().is_empty() || kind == "link" => {
            broken.push(format!("text: r/{sr} requires a text body (a self post)"))
        }
        (Some("notAllowed"), "self") if !post.text.trim().is_empty() => {
            broken.push(format!("text: r/{sr} allows no text body"))
        }
        _ => {}
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(CallError::Rejected(broken.join("; ").replace("{sr}", sr)))
    }
}

/// The id of the subreddit's flair whose text is `text`.
fn find_flair(ctx: &Context, sr: &str, text: &str) -> Result<Option<String>, CallError> {
    let res = Request::get(ctx.url(
        "api",
        &format!("/r/{}/api/link_flair_v2", encode_component(sr)),
    )?)
    .authed()
    .send()?;
    let v = answer(&res)?;
    let flairs: Vec<&Value> = v.as_array().into_iter().flatten().collect();
    if let Some(f) = flairs.iter().find(|f| f["text"] == text) {
        return Ok(f["id"].as_str().map(String::from));
    }
    let known: Vec<&str> = flairs.iter().filter_map(|f| f["text"].as_str()).collect();
    Err(CallError::Rejected(format!(
        "flair_text: r/{sr} has no flair {}; its flairs: {}",
        fields::quote(text),
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )))
}

/// A successful answer's JSON, or what went wrong. Reddit reports many
/// refusals as HTTP 200 (or 400 for `validate_on_submit`) with
/// `json.errors = [[CODE, message, field], …]`.
fn answer(res: &Response) -> Result<Value, CallError> {
    if res.status == 401 {
        return Err(CallError::AuthExpired(
            "Reddit refused the access token (invalid_token)".into(),
        ));
    }
    if res.status == 403 && res.text().contains("Blocked") {
        return Err(CallError::Rejected(
            "Reddit blocked the request for its User-Agent; set platforms.reddit.user_agent".into(),
        ));
    }
    if !res.is_success() && res.status != 400 {
        return Err(res.error());
    }
    let v = res.json()?;
    let errors = v["json"]["errors"].as_array().cloned().unwrap_or_default();
    if errors.is_empty() {
        if res.status == 400 {
            return Err(res.error());
        }
        return Ok(v);
    }
    let mut wait = None;
    let mut said = Vec::new();
    for e in &errors {
        let code = e[0].as_str().unwrap_or("ERROR");
        let message = e[1].as_str().unwrap_or("");
        let field = e[2].as_str().unwrap_or("");
        if code == "RATELIMIT" {
            wait = Some(wait_in(message).unwrap_or(600));
        }
        said.push(if field.is_empty() {
            format!("{code}: {message}")
        } else {
            format!("{field}: {message} ({code})")
        });
    }
    let message = said.join("; ");
    Err(match wait {
        Some(secs) => CallError::RateLimited(RateLimited {
            retry_after_seconds: Some(secs),
            message: format!("Reddit: {message}"),
        }),
        None => CallError::Rejected(format!("Reddit refused it: {message}")),
    })
}

/// Seconds from "… try again in 9 minutes." / "… in 40 seconds."
fn wait_in(message: &str) -> Option<u64> {
    let rest = &message[message.find(" in ")? + 4..];
    let mut words = rest.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    let unit = words.next()?;
    Some(if unit.starts_with("minute") {
        n * 60
    } else if unit.starts_with("hour") {
        n * 3600
    } else {
        n
    })
}

outreach_sdk::export_platform!(Reddit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_waits_are_read_from_the_message() {
        assert_eq!(
            wait_in("you are doing that too much. try again in 9 minutes."),
            Some(540)
        );
        assert_eq!(wait_in("try again in 40 seconds."), Some(40));
        assert_eq!(wait_in("slow down"), None);
    }

    #[test]
    fn subreddit_names() {
        assert!(is_subreddit("rust"));
        assert!(is_subreddit("r/self_hosted"));
        assert!(!is_subreddit("r"));
        assert!(!is_subreddit("no spaces"));
    }
}
