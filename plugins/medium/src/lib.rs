//! Medium: an integration token as a bearer token, `GET /v1/me` for the
//! author id, `POST /v1/users/{id}/posts` (or a publication's posts) with
//! the title, the text as Markdown or HTML, tags, the link as the
//! canonical URL and the publish status. Images go up one by one
//! (`POST /v1/images`, multipart field `image`) and are put into the
//! content. Medium no longer supports its API and takes no new
//! integrations: a refused token says so.

use outreach_sdk::prelude::*;
use outreach_sdk::serde_json::Value;

struct Medium;

/// The platform fields (`[override.medium]`) this plugin reads.
const FIELDS: &[&str] = &[
    "format",
    "status",
    "tags",
    "notify_followers",
    "publication_id",
];

/// Medium accepts this many tags and shows the first three.
const MAX_TAGS: usize = 5;

/// Longer tags are ignored by Medium: refused here instead.
const MAX_TAG_LENGTH: usize = 25;

/// `tags = "rust, self hosting"`: at most five, each at most 25 characters.
fn check_tags(tags: &str) -> Result<(), String> {
    let list = split_tags(tags);
    if list.len() > MAX_TAGS {
        return Err(format!(
            "that is {} tags; Medium takes at most {MAX_TAGS} (and shows the first 3), separated by commas",
            list.len()
        ));
    }
    match list.iter().find(|t| t.chars().count() > MAX_TAG_LENGTH) {
        Some(t) => Err(format!(
            "the tag {} is longer than {MAX_TAG_LENGTH} characters, which Medium ignores",
            fields::quote(t)
        )),
        None => Ok(()),
    }
}

fn split_tags(tags: &str) -> Vec<&str> {
    tags.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

impl Platform for Medium {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        let mut f = Fields::new(&m.id, post, account, FIELDS);
        f.check("tags", Box::new(check_tags));
        f.check_or_setting(
            "publication_id",
            fields::shape("a publication id such as b45573563f5a", is_id),
        );
        problems.extend(f.finish());
        if post.reply_to.is_some() {
            problems.push(Problem {
                field: "thread".into(),
                message: "Medium has no threads; publish the follow-ups as posts of their own"
                    .into(),
            });
        }
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let html = post.extra("format") == Some("html");
        let title = post.title.clone().unwrap_or_default();
        // Medium shows the title only if the content has it too.
        let mut content = if html {
            format!("<h1>{}</h1>\n{}", escape_html(&title), post.text)
        } else {
            format!("# {title}\n\n{}", post.text)
        };
        for m in &post.media {
            let url = upload(ctx, m)?;
            let alt = m.alt_text.as_deref().unwrap_or("");
            content.push_str(&if html {
                format!(
                    "\n<figure><img src=\"{}\" alt=\"{}\"></figure>",
                    escape_html(&url),
                    escape_html(alt)
                )
            } else {
                format!("\n\n![{}]({url})", alt.replace(['[', ']'], ""))
            });
        }
        let mut body = json!({
            "title": title,
            "contentFormat": if html { "html" } else { "markdown" },
            "content": content,
            "publishStatus": post.extra("status").unwrap_or("public"),
            "notifyFollowers": post.extra("notify_followers") == Some("true"),
        });
        if let Some(tags) = post.extra("tags") {
            body["tags"] = json!(split_tags(tags));
        }
        if let Some(link) = &post.link {
            body["canonicalUrl"] = json!(link);
        }
        let path = match post
            .extra("publication_id")
            .or(ctx.setting("publication_id"))
        {
            Some(p) => format!("/v1/publications/{}/posts", encode_component(p)),
            None => format!("/v1/users/{}/posts", encode_component(&author(ctx)?)),
        };
        let res = Request::post(ctx.url("api", &path)?)
            .json(&body)
            .authed()
            .class("publish")
            .send()?;
        let v = check(&res)?;
        let data = &v["data"];
        match data["id"].as_str() {
            Some(id) if !id.is_empty() => Ok(Receipt::published(
                id,
                data["url"].as_str().map(String::from),
            )),
            _ => Err(CallError::OutcomeUnknown(format!(
                "Medium answered without a post id: {}",
                res.snippet()
            ))),
        }
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let res = Request::get(ctx.url("api", "/v1/me")?).authed().send()?;
        let v = check(&res)?;
        let d = &v["data"];
        let id = d["id"].as_str().unwrap_or_default().to_string();
        if id.is_empty() {
            return Err(CallError::Rejected(format!(
                "no user id in: {}",
                res.snippet()
            )));
        }
        Ok(Profile {
            name: d["name"]
                .as_str()
                .or(d["username"].as_str())
                .unwrap_or(&id)
                .into(),
            handle: d["username"].as_str().map(String::from),
            picture: d["imageUrl"].as_str().map(String::from),
            url: d["url"].as_str().map(String::from),
            id,
        })
    }
}

/// The author id posts go under: the account's, as stored at connect,
/// or asked of Medium.
fn author(ctx: &Context) -> Result<String, CallError> {
    if let Some(id) = ctx.account.user_id.clone() {
        return Ok(id);
    }
    Ok(<Medium as Platform>::profile(ctx)?.id)
}

/// Upload one image; its URL on Medium's CDN.
fn upload(ctx: &Context, m: &Media) -> Result<String, CallError> {
    let res = Request::post(ctx.url("api", "/v1/images")?)
        .multipart(Multipart::new().file("image", m))
        .authed()
        .class("media")
        .send()?;
    let v = check(&res)?;
    v["data"]["url"].as_str().map(String::from).ok_or_else(|| {
        CallError::Transient(format!(
            "Medium answered the image upload without a URL: {}",
            res.snippet()
        ))
    })
}

/// A successful answer's JSON, or what went wrong
/// (`{"errors":[{"message","code"}]}`).
fn check(res: &Response) -> Result<Value, CallError> {
    if res.is_success() {
        return res.json();
    }
    let v = res.json().unwrap_or(Value::Null);
    let message = v["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match res.status {
        401 => Err(CallError::NeedsReconnect(format!(
            "Medium refused the integration token ({message}); it was revoked or mistyped. Medium no longer supports its API and issues no new tokens to most users: if your settings page (Security and apps → Integration tokens) has none, Medium's support is the only way to get one"
        ))),
        403 => Err(CallError::Rejected(format!(
            "Medium says this token may not do that ({message}): a publication needs you as a writer or editor"
        ))),
        400 => Err(CallError::Rejected(format!(
            "Medium refused the post: {message}"
        ))),
        _ => Err(res.error()),
    }
}

fn is_id(v: &str) -> bool {
    !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric())
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

outreach_sdk::export_platform!(Medium);

#[cfg(test)]
mod tests {
    use super::check_tags;

    #[test]
    fn tags_are_at_most_five_of_at_most_25_characters() {
        assert!(check_tags("rust, self hosting, a,b ,c").is_ok());
        assert!(check_tags("a,b,c,d,e,f").unwrap_err().contains("6 tags"));
        assert!(
            check_tags(&"x".repeat(26))
                .unwrap_err()
                .contains("longer than 25")
        );
    }
}
