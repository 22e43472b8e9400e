//! Discord through a channel webhook: the webhook URL is the credential
//! (the host substitutes it; the plugin only names it), messages go to
//! `POST {webhook}?wait=true` (without `wait` Discord answers 204 and no
//! message id), attachments as `multipart/form-data` with `payload_json`,
//! mentions off unless the post asks for them, and a `DiscordBot` user
//! agent (Discord's edge refuses others).

use outreach_sdk::prelude::*;
use outreach_sdk::serde_json::Value;

struct Discord;

/// The whole webhook URL, substituted by the host.
const WEBHOOK: &str = "{{access_token}}";

/// The longest message Discord takes.
const MAX_CONTENT: usize = 2000;

/// The platform fields (`[override.discord]`) this plugin reads.
const FIELDS: &[&str] = &["mentions", "thread_id", "username"];

/// Which mentions may ping (see [`mentions`]).
const MENTIONS: &[&str] = &["none", "users", "roles", "everyone", "all"];

/// A name a webhook message may be posted under: 1 to 80 characters, and
/// Discord refuses webhook names that contain "clyde" or "discord" in any
/// case.
fn check_username(name: &str) -> Result<(), String> {
    let length = name.trim().chars().count();
    if !(1..=80).contains(&length) {
        return Err(format!(
            "a name is 1 to 80 characters long (this one is {length})"
        ));
    }
    let lower = name.to_lowercase();
    match ["clyde", "discord"].into_iter().find(|w| lower.contains(w)) {
        Some(word) => Err(format!(
            "Discord refuses webhook names that contain \"{word}\" (in any case)"
        )),
        None => Ok(()),
    }
}

fn user_agent() -> String {
    format!("DiscordBot (outreach, {})", env!("CARGO_PKG_VERSION"))
}

impl Platform for Discord {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        let mut f = Fields::new(&m.id, post, account, FIELDS);
        f.check("mentions", fields::one_of(MENTIONS));
        f.check_or_setting(
            "thread_id",
            fields::shape(
                "a Discord thread id, digits only (in Discord: right-click the thread, Copy Thread ID)",
                fields::is_digits,
            ),
        );
        f.check_or_setting("username", Box::new(check_username));
        problems.extend(f.finish());
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let mut payload = json!({
            "content": content(post),
            "allowed_mentions": {"parse": mentions(post.extra("mentions"))},
        });
        if let Some(name) = post.extra("username").or(ctx.setting("username")) {
            payload["username"] = json!(name);
        }
        let mut query = vec![("wait", "true")];
        if let Some(thread) = post.extra("thread_id").or(ctx.setting("thread_id")) {
            query.push(("thread_id", thread));
        }
        // The webhook URL is the credential: the host writes it into the
        // first part; the query is text.
        let to =
            || Request::to_parts(HttpMethod::Post, template(WEBHOOK)).then(query_url("", &query));
        let request = if post.media.is_empty() {
            to().json(&payload)
        } else {
            payload["attachments"] = Value::Array(
                post.media
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        json!({"id": i, "filename": m.file_name, "description": m.alt_text})
                    })
                    .collect(),
            );
            let mut form = Multipart::new().text("payload_json", &payload.to_string());
            for (i, m) in post.media.iter().enumerate() {
                form = form.file(&format!("files[{i}]"), m);
            }
            to().multipart(form)
        };
        let res = request
            .header("user-agent", user_agent())
            .class("webhook")
            .send()?;
        let message = check(&res)?;
        let id = message["id"].as_str().ok_or_else(|| {
            CallError::OutcomeUnknown(format!("no message id in: {}", res.snippet()))
        })?;
        // The message's address needs the guild, which only the webhook knows.
        let url = webhook().ok().and_then(|w| {
            let guild = w["guild_id"].as_str()?;
            let channel = message["channel_id"]
                .as_str()
                .or(w["channel_id"].as_str())?;
            Some(format!(
                "https://discord.com/channels/{guild}/{channel}/{id}"
            ))
        });
        Ok(Receipt {
            state: ReceiptState::Published,
            id: id.into(),
            url,
        })
    }

    fn profile(_ctx: &Context) -> Result<Profile, CallError> {
        let w = webhook()?;
        let id = w["id"]
            .as_str()
            .ok_or_else(|| CallError::Rejected(format!("no webhook id in: {w}")))?;
        let channel = w["channel_id"].as_str().unwrap_or_default();
        Ok(Profile {
            id: id.into(),
            name: w["name"].as_str().unwrap_or(id).into(),
            handle: Some(format!("#{channel}")),
            picture: w["avatar"]
                .as_str()
                .map(|a| format!("https://cdn.discordapp.com/avatars/{id}/{a}.png")),
            url: w["guild_id"]
                .as_str()
                .map(|g| format!("https://discord.com/channels/{g}/{channel}")),
        })
    }
}

/// The message text: the title in bold above it, and a link that is not
/// in the text below it (Discord embeds it), while it fits.
fn content(post: &Post) -> String {
    let mut text = post.text.clone();
    if let Some(title) = post.title.as_deref().filter(|t| !t.is_empty()) {
        let with = format!("**{title}**\n{text}");
        if with.chars().count() <= MAX_CONTENT {
            text = with;
        }
    }
    if let Some(link) = post.link.as_deref().filter(|l| !text.contains(l)) {
        let with = format!("{text}\n{link}");
        if with.chars().count() <= MAX_CONTENT {
            text = with;
        }
    }
    text
}

/// Which mentions may ping: none unless the post says `mentions = "users"`,
/// `"roles"`, `"everyone"` or `"all"` (`validate` refuses anything else but
/// `"none"`).
fn mentions(asked: Option<&str>) -> Value {
    match asked {
        Some("all") => json!(["users", "roles", "everyone"]),
        Some(kind @ ("users" | "roles" | "everyone")) => json!([kind]),
        _ => json!([]),
    }
}

/// The webhook object (`GET {webhook}`): name, channel, guild.
fn webhook() -> Result<Value, CallError> {
    let res = Request::to_parts(HttpMethod::Get, template(WEBHOOK))
        .header("user-agent", user_agent())
        .class("webhook")
        .send()?;
    check(&res)
}

/// A successful answer's JSON, or what went wrong. A webhook that is gone
/// (deleted, or its token reset) cannot be refreshed: it must be added
/// again.
fn check(res: &Response) -> Result<Value, CallError> {
    if res.is_success() {
        return res.json();
    }
    let v = res.json().unwrap_or(Value::Null);
    let message = v["message"].as_str().unwrap_or_default();
    match (res.status, v["code"].as_u64()) {
        (401, _) | (404, Some(10015)) => Err(CallError::NeedsReconnect(format!(
            "Discord no longer knows this webhook ({message}); create a new one and add it with `outreach accounts add discord`"
        ))),
        (400, Some(code)) => Err(CallError::Rejected(format!(
            "HTTP 400 (code {code}) {message}: {}",
            v["errors"]
        ))),
        _ => Err(res.error()),
    }
}

outreach_sdk::export_platform!(Discord);

#[cfg(test)]
mod tests {
    use super::check_username;

    #[test]
    fn webhook_names() {
        assert!(check_username("Release notes").is_ok());
        assert!(check_username(&"n".repeat(80)).is_ok());
        assert!(
            check_username(&"n".repeat(81))
                .unwrap_err()
                .contains("1 to 80")
        );
        assert!(check_username("  ").unwrap_err().contains("1 to 80"));
        assert!(
            check_username("My DISCORD bot")
                .unwrap_err()
                .contains("\"discord\"")
        );
        assert!(check_username("Clyde").unwrap_err().contains("\"clyde\""));
    }
}
