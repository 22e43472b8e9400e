//! Bluesky (AT Protocol): an app password exchanged for a session
//! (`createSession`; the refresh JWT is sent as a bearer token to
//! `refreshSession` and rotates), posts as `app.bsky.feed.post` records
//! (`createRecord`), links and hashtags as facets with UTF-8 byte offsets
//! (Bluesky does not detect them), images uploaded as blobs, replies with
//! strong references to the thread's root and parent.

use outreach_sdk::prelude::*;
use outreach_sdk::serde_json::Value;

struct Bluesky;

const POST: &str = "app.bsky.feed.post";

impl Platform for Bluesky {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        let mut f = Fields::new(&m.id, post, account, &["language"]);
        f.check(
            "language",
            fields::shape(
                "a BCP 47 language tag such as en, pt-BR or zh-Hant",
                fields::is_bcp47,
            ),
        );
        problems.extend(f.finish());
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let did = ctx.user_id()?;
        let mut record = json!({
            "$type": POST,
            "text": post.text,
            "createdAt": rfc3339_millis(now_millis()),
        });
        let facets = facets(&post.text);
        if !facets.is_empty() {
            record["facets"] = Value::Array(facets);
        }
        if let Some(lang) = post.extra("language") {
            record["langs"] = json!([lang]);
        }
        if let Some(parent) = &post.reply_to {
            let root = post.thread_root.as_deref().unwrap_or(parent);
            let parent_ref = strong_ref(ctx, parent)?;
            let root_ref = if root == parent {
                parent_ref.clone()
            } else {
                strong_ref(ctx, root)?
            };
            record["reply"] = json!({"root": root_ref, "parent": parent_ref});
        }
        if !post.media.is_empty() {
            let images = post
                .media
                .iter()
                .map(|m| {
                    Ok(json!({
                        "image": upload(ctx, m)?,
                        "alt": m.alt_text.clone().unwrap_or_default(),
                    }))
                })
                .collect::<Result<Vec<_>, CallError>>()?;
            record["embed"] = json!({"$type": "app.bsky.embed.images", "images": images});
        } else if let Some(link) = post.link.as_deref().filter(|l| !post.text.contains(l)) {
            record["embed"] = json!({
                "$type": "app.bsky.embed.external",
                "external": {
                    "uri": link,
                    "title": post.title.as_deref().unwrap_or(link),
                    "description": "",
                },
            });
        }
        let res = Request::post(ctx.url("api", "/xrpc/com.atproto.repo.createRecord")?)
            .json(&json!({"repo": did, "collection": POST, "record": record}))
            .authed()
            .class("write")
            .send()?;
        let v = xrpc(&res)?;
        let uri = v["uri"].as_str().ok_or_else(|| {
            CallError::OutcomeUnknown(format!("no record uri in: {}", res.snippet()))
        })?;
        Ok(receipt(ctx, uri))
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let res = Request::get(ctx.url("api", "/xrpc/com.atproto.server.getSession")?)
            .authed()
            .send()?;
        let session = xrpc(&res)?;
        let did = session["did"]
            .as_str()
            .ok_or_else(|| CallError::Rejected(format!("no did in: {}", res.snippet())))?;
        let handle = session["handle"].as_str().map(String::from);
        let url = query_url(
            &ctx.url("api", "/xrpc/app.bsky.actor.getProfile")?,
            &[("actor", did)],
        );
        let p = xrpc(&Request::get(url).authed().send()?)?;
        let name = p["displayName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .or(handle.as_deref())
            .unwrap_or(did);
        Ok(Profile {
            id: did.into(),
            name: name.into(),
            url: handle
                .as_ref()
                .map(|h| format!("https://bsky.app/profile/{h}")),
            handle,
            picture: p["avatar"].as_str().map(String::from),
        })
    }

    /// A post whose outcome is unknown: look for it among the account's
    /// latest records (same text, same parent).
    fn find_post(ctx: &Context, post: &Post) -> Result<Option<Receipt>, CallError> {
        let did = ctx.user_id()?;
        let url = query_url(
            &ctx.url("api", "/xrpc/com.atproto.repo.listRecords")?,
            &[("repo", did), ("collection", POST), ("limit", "25")],
        );
        let v = xrpc(&Request::get(url).authed().send()?)?;
        let found = v["records"].as_array().into_iter().flatten().find(|r| {
            r["value"]["text"] == post.text.as_str()
                && r["value"]["reply"]["parent"]["uri"].as_str() == post.reply_to.as_deref()
        });
        Ok(found
            .and_then(|r| r["uri"].as_str())
            .map(|uri| receipt(ctx, uri)))
    }
}

/// The receipt for record `uri` (`at://did/app.bsky.feed.post/rkey`): the
/// web address uses the handle when the account has one.
fn receipt(ctx: &Context, uri: &str) -> Receipt {
    let rkey = uri.rsplit('/').next().unwrap_or_default();
    let who = ctx
        .account
        .handle
        .as_deref()
        .or(ctx.account.user_id.as_deref())
        .unwrap_or_default();
    Receipt {
        state: ReceiptState::Published,
        id: uri.into(),
        url: Some(format!("https://bsky.app/profile/{who}/post/{rkey}")),
    }
}

/// `{uri, cid}` of an existing record, as replies need.
fn strong_ref(ctx: &Context, uri: &str) -> Result<Value, CallError> {
    let parts: Vec<&str> = uri
        .strip_prefix("at://")
        .map(|r| r.split('/').collect())
        .unwrap_or_default();
    let [repo, collection, rkey] = parts[..] else {
        return Err(CallError::Rejected(format!(
            "`{uri}` is not a Bluesky post address (at://did/{POST}/key)"
        )));
    };
    let url = query_url(
        &ctx.url("api", "/xrpc/com.atproto.repo.getRecord")?,
        &[("repo", repo), ("collection", collection), ("rkey", rkey)],
    );
    let res = Request::get(url).authed().send()?;
    let v = xrpc(&res)?;
    let cid = v["cid"]
        .as_str()
        .ok_or_else(|| CallError::Rejected(format!("no cid for {uri} in: {}", res.snippet())))?;
    Ok(json!({"uri": uri, "cid": cid}))
}

/// Upload one image as a blob; the blob reference goes into the embed.
fn upload(ctx: &Context, m: &Media) -> Result<Value, CallError> {
    let res = Request::post(ctx.url("api", "/xrpc/com.atproto.repo.uploadBlob")?)
        .header("content-type", m.mime_type.clone())
        .media(m.handle, 0, m.size)
        .authed()
        .send()?;
    let v = xrpc(&res)?;
    v.get("blob")
        .filter(|b| b.is_object())
        .cloned()
        .ok_or_else(|| CallError::Rejected(format!("no blob in: {}", res.snippet())))
}

/// A successful XRPC answer's JSON, or the error it names. An expired
/// access token is HTTP **400** `ExpiredToken` (not 401): the host
/// refreshes the session and retries.
fn xrpc(res: &Response) -> Result<Value, CallError> {
    if res.is_success() {
        return res.json();
    }
    let v = res.json().unwrap_or(Value::Null);
    let name = v["error"].as_str().unwrap_or_default();
    let what = format!(
        "HTTP {} {}: {}",
        res.status,
        name,
        v["message"].as_str().unwrap_or_default()
    );
    match name {
        "ExpiredToken" | "InvalidToken" => Err(CallError::AuthExpired(what)),
        "AccountTakedown" | "AccountDeactivated" => Err(CallError::NeedsReconnect(what)),
        _ if res.status == 429 || res.status >= 500 || name.is_empty() => Err(res.error()),
        _ => Err(CallError::Rejected(what)),
    }
}

/// Link and hashtag facets of `text`, with UTF-8 byte offsets.
fn facets(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !text[..i].ends_with(|c: char| c.is_alphanumeric());
        let rest = &text[i..];
        let word_end = |from: usize| {
            let len = text[from..]
                .find(char::is_whitespace)
                .unwrap_or(text.len() - from);
            // Sentence punctuation after a link or tag is not part of it.
            let word = text[from..from + len]
                .trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '"', '\'']);
            from + word.len()
        };
        if at_word_start && (rest.starts_with("https://") || rest.starts_with("http://")) {
            let end = word_end(i);
            out.push(json!({
                "index": {"byteStart": i, "byteEnd": end},
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": &text[i..end]}],
            }));
            i = end;
            continue;
        }
        if at_word_start && rest.starts_with('#') {
            let end = word_end(i);
            let tag = &text[i + 1..end];
            if !tag.is_empty()
                && tag.chars().count() <= 64
                && !tag.chars().all(|c| c.is_ascii_digit())
                && !tag.starts_with('#')
            {
                out.push(json!({
                    "index": {"byteStart": i, "byteEnd": end},
                    "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": tag}],
                }));
            }
            i = end.max(i + 1);
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out
}

outreach_sdk::export_platform!(Bluesky);

#[cfg(test)]
mod tests {
    use super::facets;

    fn spans(text: &str) -> Vec<(String, String)> {
        facets(text)
            .iter()
            .map(|f| {
                let (a, b) = (
                    f["index"]["byteStart"].as_u64().unwrap() as usize,
                    f["index"]["byteEnd"].as_u64().unwrap() as usize,
                );
                let kind = f["features"][0]["$type"].as_str().unwrap();
                (
                    kind.rsplit('#').next().unwrap().to_string(),
                    text[a..b].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn links_and_tags_by_byte_offsets() {
        assert_eq!(
            spans(
                "🚀 see https://a.example/x?y=1, then (https://b.example). #rust #1 and#not ##no"
            ),
            [
                ("link".into(), "https://a.example/x?y=1".into()),
                ("link".into(), "https://b.example".into()),
                ("tag".into(), "#rust".into()),
            ]
        );
        assert!(facets("no links here: example.org, mail#x").is_empty());
        assert_eq!(spans("ünïcödé #café!"), [("tag".into(), "#café".into())]);
    }
}
