//! Hacker News. There is no write API, and automated posting is against
//! the site's wishes, so by default (`mode = link`) a publish hands the
//! user the prefilled submit page (`submitlink?u=…&t=…`) and the host
//! watches the official read API (`/v0/user/{user}.json` → `submitted`,
//! then `/v0/item/{id}.json`) until the submission appears. In session
//! mode (`mode = session`, opt-in) the account logs in with the site's
//! form (the `user` cookie) and submits the form itself (`GET /submit` for
//! its one-time `fnid`, `POST /r`); the new item's id is found the same
//! way, since the site answers with a redirect to `newest`.

use outreach_sdk::form_encode;
use outreach_sdk::prelude::*;
use outreach_sdk::serde_json::Value;

struct HackerNews;

/// How far back an item may be from when the post was handed over or
/// sent and still be taken for it (clocks differ).
const SLACK_SECS: u64 = 300;

/// The newest submissions of the user looked at for the post.
const LOOK_AT: usize = 10;

impl Platform for HackerNews {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        let mut f = Fields::new(&m.id, post, account, &[]);
        f.check_setting("mode", fields::one_of(&["link", "session"]));
        problems.extend(f.finish());
        if post.reply_to.is_some() {
            problems.push(Problem {
                field: "thread".into(),
                message: "Hacker News submissions have no threads; comment on the site instead"
                    .into(),
            });
        }
        if !post.media.is_empty() {
            problems.push(Problem {
                field: "media[0]".into(),
                message:
                    "Hacker News takes no media: a submission is a title with a link or a text"
                        .into(),
            });
        }
        if post.link.is_some() && !post.text.trim().is_empty() {
            problems.push(Problem {
                field: "text".into(),
                message: "a Hacker News submission is a link or a text, not both; move the text into [override.hackernews] text = \"\" or drop the link".into(),
            });
        }
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let title = post.title.clone().unwrap_or_default();
        let link = post.link.clone().unwrap_or_default();
        let watch = Watch {
            title: title.clone(),
            link: link.clone(),
            since: now_millis() / 1000,
        };
        if ctx.setting("mode") != Some("session") {
            let site = ctx.url("site", "/submitlink")?;
            let mut q = vec![("t", title.as_str())];
            if !link.is_empty() {
                q.insert(0, ("u", link.as_str()));
            }
            return Ok(Receipt {
                state: ReceiptState::HandedToUser,
                id: watch.key(),
                url: Some(query_url(&site, &q)),
            });
        }
        // Session mode: the form, as a browser fills it in.
        let page = Request::get(ctx.url("site", "/submit")?).authed().send()?;
        if page.status == 429 {
            return Err(page.error());
        }
        let html = page.text();
        let fnid = match html.split("name=\"fnid\" value=\"").nth(1) {
            Some(rest) if page.status == 200 => rest.split('"').next().unwrap_or_default(),
            _ => {
                return Err(CallError::AuthExpired(
                    "Hacker News did not show the submit form (the session ended, or the account may not submit)".into(),
                ));
            }
        }
        .to_string();
        let res = Request::post(ctx.url("site", "/r")?)
            .form(&[
                ("fnid", fnid.as_str()),
                ("fnop", "submit-page"),
                ("title", title.as_str()),
                ("url", link.as_str()),
                ("text", post.text.as_str()),
            ])
            .authed()
            .class("publish")
            .send()?;
        if res.status == 429 {
            return Err(res.error());
        }
        let to = res.header("location").unwrap_or_default().to_string();
        if res.status == 302 || res.status == 301 {
            // A link submitted lately: the site shows that item instead.
            if let Some(id) = to.strip_prefix("item?id=") {
                return Err(CallError::Rejected(format!(
                    "Hacker News already has this link as item {id} ({}); it sent you there instead of posting it again",
                    item_url(ctx, id)?
                )));
            }
            if to.contains("login") {
                return Err(CallError::AuthExpired("the session ended".into()));
            }
            // Posted ("newest"): the read API tells which item it is, maybe
            // only after a while.
            return match find(ctx, &watch)? {
                Some(r) => Ok(r),
                None => Ok(Receipt {
                    state: ReceiptState::Pending,
                    id: watch.key(),
                    url: None,
                }),
            };
        }
        let said = page_text(&res.text());
        if said.to_lowercase().contains("too fast") {
            return Err(CallError::RateLimited(RateLimited {
                retry_after_seconds: None,
                message: format!("Hacker News: {said}"),
            }));
        }
        Err(CallError::Rejected(format!(
            "Hacker News did not take the submission (HTTP {}): {said}",
            res.status
        )))
    }

    /// Whether the handed-over or pending submission has appeared.
    fn check_receipt(ctx: &Context, receipt: &Receipt) -> Result<Receipt, CallError> {
        let Some(watch) = Watch::parse(&receipt.id) else {
            return Ok(receipt.clone());
        };
        Ok(find(ctx, &watch)?.unwrap_or_else(|| receipt.clone()))
    }

    fn find_post(ctx: &Context, post: &Post) -> Result<Option<Receipt>, CallError> {
        let Some(title) = post.title.clone() else {
            return Ok(None);
        };
        let watch = Watch {
            title,
            link: post.link.clone().unwrap_or_default(),
            since: (now_millis() / 1000).saturating_sub(86_400),
        };
        find(ctx, &watch)
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let user = user(ctx)?;
        let v = read(ctx, &format!("/user/{}.json", encode_component(&user)))?;
        if v.is_null() {
            return Err(CallError::Rejected(format!(
                "Hacker News has no user `{user}` (names are case-sensitive, and only users with public activity are in its API)"
            )));
        }
        if ctx.setting("mode") == Some("session") {
            let res = Request::get(ctx.url("site", "/submit")?).authed().send()?;
            if res.status != 200 {
                return Err(CallError::AuthExpired(
                    "the Hacker News login did not hold (no submit form)".into(),
                ));
            }
        }
        let id = v["id"].as_str().unwrap_or(&user).to_string();
        Ok(Profile {
            name: id.clone(),
            handle: Some(id.clone()),
            picture: None,
            url: Some(format!(
                "{}?id={}",
                ctx.url("site", "/user")?,
                encode_component(&id)
            )),
            id,
        })
    }
}

/// What to look for in the user's submissions, kept in the receipt's id
/// while the host waits (`t=…&u=…&since=…`, form-encoded).
struct Watch {
    title: String,
    link: String,
    since: u64,
}

impl Watch {
    fn key(&self) -> String {
        form_encode(&[
            ("t", self.title.as_str()),
            ("u", self.link.as_str()),
            ("since", &self.since.to_string()),
        ])
    }

    fn parse(key: &str) -> Option<Self> {
        let mut w = Watch {
            title: String::new(),
            link: String::new(),
            since: 0,
        };
        for (k, v) in form_urlencoded::parse(key.as_bytes()) {
            match &*k {
                "t" => w.title = v.into_owned(),
                "u" => w.link = v.into_owned(),
                "since" => w.since = v.parse().ok()?,
                _ => return None,
            }
        }
        (!w.title.is_empty()).then_some(w)
    }
}

/// The account's Hacker News name.
fn user(ctx: &Context) -> Result<String, CallError> {
    ctx.setting("user")
        .map(str::to_string)
        .ok_or_else(|| CallError::Rejected("the account has no `user` setting".into()))
}

/// GET a read-API path: its JSON (`null` for what does not exist).
fn read(ctx: &Context, path: &str) -> Result<Value, CallError> {
    let res = Request::get(ctx.url("read", path)?).class("read").send()?;
    if !res.is_success() {
        return Err(res.error());
    }
    res.json()
}

/// The user's submission matching `w`, if the read API shows it yet.
fn find(ctx: &Context, w: &Watch) -> Result<Option<Receipt>, CallError> {
    let user = user(ctx)?;
    let v = read(ctx, &format!("/user/{}.json", encode_component(&user)))?;
    let ids: Vec<u64> = v["submitted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .take(LOOK_AT)
        .collect();
    for id in ids {
        let item = read(ctx, &format!("/item/{id}.json"))?;
        let time = item["time"].as_u64().unwrap_or(0);
        if time + SLACK_SECS < w.since {
            // Submissions come newest first: the rest are older still.
            break;
        }
        let same_title = item["title"].as_str() == Some(w.title.as_str());
        let same_link = w.link.is_empty() || item["url"].as_str() == Some(w.link.as_str());
        if item["type"] == "story" && same_title && same_link {
            let id = id.to_string();
            return Ok(Some(Receipt::published(
                id.clone(),
                Some(item_url(ctx, &id)?),
            )));
        }
    }
    Ok(None)
}

fn item_url(ctx: &Context, id: &str) -> Result<String, CallError> {
    Ok(format!("{}?id={id}", ctx.url("site", "/item")?))
}

/// What an HTML page says, without its markup, shortened.
fn page_text(html: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in html.chars() {
        match c {
            '<' => inside = true,
            '>' => {
                inside = false;
                out.push(' ');
            }
            _ if !inside => out.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    let text = words.join(" ");
    text.chars().take(200).collect()
}

outreach_sdk::export_platform!(HackerNews);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_key_round_trips_and_refuses_junk() {
        let w = Watch {
            title: "Show HN: a & b = c".into(),
            link: "https://example.org/?a=1&b=2".into(),
            since: 1_700_000_000,
        };
        let back = Watch::parse(&w.key()).unwrap();
        assert_eq!(back.title, w.title);
        assert_eq!(back.link, w.link);
        assert_eq!(back.since, w.since);
        assert!(Watch::parse("x=1").is_none());
        assert!(Watch::parse("").is_none());
    }

    #[test]
    fn page_text_drops_markup() {
        assert_eq!(
            page_text("<html><body>You're <b>posting</b> too fast.</body></html>"),
            "You're posting too fast."
        );
    }
}
