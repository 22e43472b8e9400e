//! DEV (dev.to, or any Forem instance): an API key in the `api-key`
//! header, articles by `POST /api/articles` with the v1 `Accept` header,
//! the post's text as the Markdown body, its title as the article title
//! and its link as the canonical URL. Articles cannot carry uploaded
//! media (the API has no upload), so media is refused by validation.

use outreach_sdk::prelude::*;
use outreach_sdk::serde_json::Value;

struct Devto;

/// The platform fields (`[override.devto]`) this plugin reads.
const FIELDS: &[&str] = &[
    "published",
    "tags",
    "description",
    "series",
    "main_image",
    "organization_id",
];

/// An article takes at most this many tags.
const MAX_TAGS: usize = 4;

/// A tag is letters and digits, at most this long.
const MAX_TAG_LENGTH: usize = 30;

/// `tags = "rust, webdev"`: at most four, comma-separated, each letters
/// and digits only (Forem refuses others: no spaces, `-` or `#`).
fn check_tags(tags: &str) -> Result<(), String> {
    let list: Vec<&str> = tags
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if list.len() > MAX_TAGS {
        return Err(format!(
            "that is {} tags; DEV takes at most {MAX_TAGS}, separated by commas",
            list.len()
        ));
    }
    for tag in list {
        if !tag.chars().all(char::is_alphanumeric) {
            return Err(format!(
                "the tag {} is not letters and digits only; DEV tags are like \"rust, webdev\" (no spaces, - or #)",
                fields::quote(tag)
            ));
        }
        if tag.chars().count() > MAX_TAG_LENGTH {
            return Err(format!(
                "the tag {} is longer than {MAX_TAG_LENGTH} characters",
                fields::quote(tag)
            ));
        }
    }
    Ok(())
}

/// Forem's API version 1 is chosen by this media type.
const V1: &str = "application/vnd.forem.api-v1+json";

impl Platform for Devto {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        let mut f = Fields::new(&m.id, post, account, FIELDS);
        f.check("published", fields::one_of(&["true", "false"]));
        f.check("tags", Box::new(check_tags));
        f.check(
            "main_image",
            fields::shape(
                "the cover image's https:// URL (DEV has no upload)",
                fields::is_https_url,
            ),
        );
        f.check_or_setting(
            "organization_id",
            fields::shape(
                "the organization's numeric id, such as 1234",
                fields::is_digits,
            ),
        );
        problems.extend(f.finish());
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let published = post.extra("published") != Some("false");
        let mut article = json!({
            "title": post.title.clone().unwrap_or_default(),
            "body_markdown": post.text,
            "published": published,
        });
        if let Some(link) = &post.link {
            article["canonical_url"] = json!(link);
        }
        for field in ["tags", "description", "series", "main_image"] {
            if let Some(v) = post.extra(field) {
                article[field] = json!(v);
            }
        }
        if let Some(org) = post
            .extra("organization_id")
            .or(ctx.setting("organization_id"))
        {
            let id: u64 = org.trim().parse().map_err(|_| {
                CallError::Rejected(format!("organization_id `{org}` is not a number"))
            })?;
            article["organization_id"] = json!(id);
        }
        let res = Request::post(ctx.url("api", "/api/articles")?)
            .header("accept", V1)
            .json(&json!({ "article": article }))
            .authed()
            .class("publish")
            .send()?;
        let v = check(&res)?;
        if v["published"].as_bool() == Some(false) && published {
            log(
                Level::Warn,
                "DEV saved the article as a draft although it was asked to publish it",
            );
        }
        receipt(&v).ok_or_else(|| {
            CallError::OutcomeUnknown(format!("no article id in: {}", res.snippet()))
        })
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let res = Request::get(ctx.url("api", "/api/users/me")?)
            .header("accept", V1)
            .authed()
            .send()?;
        let v = check(&res)?;
        let id = match &v["id"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => {
                return Err(CallError::Rejected(format!(
                    "no user id in: {}",
                    res.snippet()
                )));
            }
        };
        let username = v["username"].as_str().map(String::from);
        Ok(Profile {
            name: v["name"]
                .as_str()
                .or(username.as_deref())
                .unwrap_or(&id)
                .into(),
            url: username
                .as_ref()
                .and_then(|u| Some(format!("{}/{u}", ctx.setting("instance")?))),
            picture: v["profile_image"].as_str().map(String::from),
            handle: username,
            id,
        })
    }

    /// A publish whose outcome is unknown: the account's latest articles
    /// (drafts included) with the same title.
    fn find_post(ctx: &Context, post: &Post) -> Result<Option<Receipt>, CallError> {
        let Some(title) = post.title.as_deref() else {
            return Ok(None);
        };
        let url = query_url(
            &ctx.url("api", "/api/articles/me/all")?,
            &[("per_page", "30")],
        );
        let res = Request::get(url).header("accept", V1).authed().send()?;
        let v = check(&res)?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .find(|a| a["title"] == title)
            .and_then(receipt))
    }
}

fn receipt(article: &Value) -> Option<Receipt> {
    let id = match &article["id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    Some(Receipt {
        state: ReceiptState::Published,
        id,
        url: article["url"].as_str().map(String::from),
    })
}

/// A successful answer's JSON, or what went wrong. Forem answers every
/// bad key with 401 (a key does not expire: it was revoked); 422 says what
/// it refused ("Canonical url has already been taken").
fn check(res: &Response) -> Result<Value, CallError> {
    if res.is_success() {
        return res.json();
    }
    let v = res.json().unwrap_or(Value::Null);
    let message = v["error"].as_str().unwrap_or_default();
    match res.status {
        401 => Err(CallError::NeedsReconnect(format!(
            "the API key was refused ({message}); make a new one in your DEV settings (Extensions) and add it again"
        ))),
        422 => Err(CallError::Rejected(format!("HTTP 422: {message}"))),
        429 => Err(CallError::RateLimited(RateLimited {
            retry_after_seconds: res.retry_after().or_else(|| seconds_in(message)),
            message: format!("HTTP 429: {message}"),
        })),
        _ => Err(res.error()),
    }
}

/// N from "Rate limit reached, try again in N seconds".
fn seconds_in(message: &str) -> Option<u64> {
    let rest = &message[message.find("try again in ")? + "try again in ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

outreach_sdk::export_platform!(Devto);

#[cfg(test)]
mod tests {
    use super::check_tags;

    #[test]
    fn tags_are_at_most_four_words_of_letters_and_digits() {
        assert!(check_tags("rust, webdev,selfhosted ,a").is_ok());
        assert!(check_tags("rust,, webdev,").is_ok());
        assert!(check_tags("café, 日本語").is_ok());
        let five = check_tags("a, b, c, d, e").unwrap_err();
        assert!(
            five.contains("5 tags") && five.contains("at most 4"),
            "{five}"
        );
        for bad in ["web dev", "#rust", "web-dev", "c++"] {
            assert!(
                check_tags(bad).unwrap_err().contains("letters and digits"),
                "{bad}"
            );
        }
        assert!(
            check_tags(&"a".repeat(31))
                .unwrap_err()
                .contains("longer than 30")
        );
    }
}
