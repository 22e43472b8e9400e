//! Mastodon: one account per instance, `POST /api/v1/statuses` with an
//! `Idempotency-Key`, `verify_credentials` profile, the instance's own
//! character limit (500 unless the account says otherwise).

use outreach_sdk::count::count;
use outreach_sdk::prelude::*;

struct Mastodon;

/// The platform fields (`[override.mastodon]`) this plugin reads.
const FIELDS: &[&str] = &["visibility", "spoiler_text", "language"];

/// Who sees a status.
const VISIBILITY: &[&str] = &["public", "unlisted", "private", "direct"];

/// A post's length limit unless the account's `max_characters` says
/// otherwise.
const MAX_CHARACTERS: u32 = 500;

impl Platform for Mastodon {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        let mut f = Fields::new(&m.id, post, account, FIELDS);
        f.check("visibility", fields::one_of(VISIBILITY));
        f.check(
            "language",
            fields::shape(
                "an ISO 639 language code of two or three lowercase letters, such as en, de or ast",
                fields::is_iso639,
            ),
        );
        f.check_setting(
            "max_characters",
            fields::shape(
                "the instance's character limit as a whole number, such as 500",
                fields::is_positive_number,
            ),
        );
        // Mastodon counts the content warning and the text together.
        if let Some(warning) = f.value("spoiler_text") {
            let max = account
                .and_then(|a| a.setting("max_characters"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(MAX_CHARACTERS) as usize;
            let text = count(&post.text, CountRule::Chars);
            let cw = count(warning, CountRule::Chars);
            // A text that is too long on its own is reported as such.
            if text <= max && text + cw > max {
                f.problem(
                    "spoiler_text",
                    format!(
                        "is {cw} characters long; Mastodon counts it with the text ({text}), {} in all, and the limit is {max}",
                        text + cw
                    ),
                );
            }
        }
        problems.extend(f.finish());
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let media_ids = post
            .media
            .iter()
            .map(|m| upload(ctx, m))
            .collect::<Result<Vec<_>, _>>()?;
        let mut body = json!({
            "status": post.text,
            "visibility": post.extra("visibility").unwrap_or("public"),
        });
        if !media_ids.is_empty() {
            body["media_ids"] = json!(media_ids);
        }
        if let Some(parent) = &post.reply_to {
            body["in_reply_to_id"] = json!(parent);
        }
        if let Some(cw) = post.extra("spoiler_text") {
            body["spoiler_text"] = json!(cw);
        }
        if let Some(lang) = post.extra("language") {
            body["language"] = json!(lang);
        }
        let res = Request::post(ctx.url("api", "/api/v1/statuses")?)
            .header("Idempotency-Key", post.idempotency_key.clone())
            .json(&body)
            .authed()
            .class("default")
            .send()?;
        let v = json(&res)?;
        let id = v["id"].as_str().ok_or_else(|| {
            CallError::OutcomeUnknown(format!("no status id in: {}", res.snippet()))
        })?;
        Ok(Receipt {
            state: ReceiptState::Published,
            id: id.into(),
            url: v["url"].as_str().map(String::from),
        })
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let res = Request::get(ctx.url("api", "/api/v1/accounts/verify_credentials")?)
            .authed()
            .send()?;
        let v = json(&res)?;
        let id = v["id"]
            .as_str()
            .ok_or_else(|| CallError::Rejected(format!("no account id in: {}", res.snippet())))?;
        let display = v["display_name"].as_str().filter(|s| !s.is_empty());
        Ok(Profile {
            id: id.into(),
            name: display.or(v["username"].as_str()).unwrap_or(id).into(),
            handle: v["acct"].as_str().map(String::from),
            picture: v["avatar"].as_str().map(String::from),
            url: v["url"].as_str().map(String::from),
        })
    }
}

/// A successful response's JSON. Mastodon tokens never expire, so a 401
/// means the grant is gone: the account needs reconnecting.
fn json(res: &Response) -> Result<outreach_sdk::serde_json::Value, CallError> {
    if res.status == 401 {
        return Err(CallError::NeedsReconnect(format!(
            "HTTP 401: {}",
            res.snippet()
        )));
    }
    res.json_ok()
}

/// Upload one attachment: `POST /api/v2/media`; images usually come back
/// processed (200), video and GIFs later (202, then poll until 200).
fn upload(ctx: &Context, m: &Media) -> Result<String, CallError> {
    let mut form = Multipart::new().file("file", m);
    if let Some(alt) = &m.alt_text {
        form = form.text("description", alt);
    }
    let res = Request::post(ctx.url("api", "/api/v2/media")?)
        .multipart(form)
        .authed()
        .class("media")
        .send()?;
    let v = json(&res)?;
    let id = v["id"]
        .as_str()
        .ok_or_else(|| CallError::Rejected(format!("no media id in: {}", res.snippet())))?
        .to_string();
    if res.status == 202 {
        for _ in 0..120 {
            sleep_millis(1000);
            let poll = Request::get(ctx.url("api", &format!("/api/v1/media/{id}"))?)
                .authed()
                .class("media")
                .send()?;
            match poll.status {
                200 => return Ok(id),
                206 => continue,
                _ => return Err(poll.error()),
            }
        }
        return Err(CallError::Transient(format!(
            "media {id} was still processing after two minutes"
        )));
    }
    Ok(id)
}

outreach_sdk::export_platform!(Mastodon);
