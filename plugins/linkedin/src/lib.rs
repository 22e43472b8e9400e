//! LinkedIn: OpenID Connect sign-in, `POST /rest/posts` with the versioned
//! headers, "little text format" escaping, post URN from `x-restli-id`;
//! images (`initializeUpload` + one PUT) and video (`initializeUpload` →
//! one PUT per part, collecting ETags → `finalizeUpload` → wait until
//! AVAILABLE).

use outreach_sdk::prelude::*;

struct LinkedIn;

/// The `LinkedIn-Version` sent unless the account's `api_version` setting
/// says otherwise (each version lives about a year, then HTTP 426).
const API_VERSION: &str = "202601";

/// Who sees a post (`[override.linkedin] visibility`): anyone, the
/// member's connections, or signed-in members.
const VISIBILITY: &[&str] = &["PUBLIC", "CONNECTIONS", "LOGGED_IN"];

/// A `LinkedIn-Version`: `YYYYMM`, or `YYYYMM.RR` for a revision.
fn is_api_version(v: &str) -> bool {
    let (month, revision) = v.split_once('.').unwrap_or((v, "00"));
    month.len() == 6
        && revision.len() == 2
        && fields::is_digits(month)
        && fields::is_digits(revision)
        && (1..=12).contains(&month[4..].parse::<u32>().unwrap_or(0))
}

/// Characters the commentary's "little text format" reserves.
const RESERVED: &[char] = &[
    '\\', '<', '>', '#', '~', '_', '|', '[', ']', '*', '(', ')', '{', '}', '@',
];

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if RESERVED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Platform for LinkedIn {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        let mut f = Fields::new(&m.id, post, account, &["visibility"]);
        f.check("visibility", fields::one_of(VISIBILITY));
        f.check_setting(
            "organization",
            fields::shape(
                "the organization's numeric id (the digits of urn:li:organization:…)",
                fields::is_digits,
            ),
        );
        f.check_setting(
            "api_version",
            fields::shape(
                "a LinkedIn API version such as 202601 (YYYYMM)",
                is_api_version,
            ),
        );
        problems.extend(f.finish());
        let videos = post
            .media
            .iter()
            .filter(|m| m.kind == MediaKind::Video)
            .count();
        if videos > 0 && post.media.len() > videos {
            problems.push(Problem {
                field: "media".into(),
                message: "LinkedIn posts carry either images or one video, not both".into(),
            });
        }
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let author = match ctx.setting("organization") {
            Some(org) => format!("urn:li:organization:{org}"),
            None => format!("urn:li:person:{}", ctx.user_id()?),
        };
        let visibility = post.extra("visibility").unwrap_or("PUBLIC");
        let version = ctx.setting("api_version").unwrap_or(API_VERSION);
        let mut body = json!({
            "author": author,
            "commentary": escape(&post.text),
            "visibility": visibility,
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": []
            },
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": false
        });
        let mut images = Vec::new();
        for m in &post.media {
            if m.kind == MediaKind::Video {
                let id = upload_video(ctx, &author, version, m)?;
                body["content"] = json!({ "media": { "id": id, "title": post.title.clone().unwrap_or_default() } });
                continue;
            }
            let id = upload_image(ctx, &author, version, m)?;
            images.push(json!({ "id": id, "altText": m.alt_text.clone().unwrap_or_default() }));
        }
        match images.len() {
            0 => {}
            1 => body["content"] = json!({ "media": images.remove(0) }),
            _ => body["content"] = json!({ "multiImage": { "images": images } }),
        }
        let res = Request::post(ctx.url("api", "/rest/posts")?)
            .header("LinkedIn-Version", version)
            .header("X-Restli-Protocol-Version", "2.0.0")
            .json(&body)
            .authed()
            .class("publish")
            .send()?;
        if res.status == 426 {
            return Err(CallError::Rejected(format!(
                "LinkedIn no longer accepts API version {} ({}); set a newer `api_version` on the account",
                ctx.setting("api_version").unwrap_or(API_VERSION),
                res.snippet()
            )));
        }
        if !res.is_success() {
            return Err(res.error());
        }
        let urn = res.header("x-restli-id").ok_or_else(|| {
            CallError::OutcomeUnknown(
                "LinkedIn accepted the post but sent no x-restli-id header".into(),
            )
        })?;
        Ok(Receipt {
            state: ReceiptState::Published,
            id: urn.into(),
            url: Some(format!("https://www.linkedin.com/feed/update/{urn}/")),
        })
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let res = Request::get(ctx.url("userinfo", "")?)
            .authed()
            .class("profile")
            .send()?;
        let v = res.json_ok()?;
        let sub = v["sub"]
            .as_str()
            .ok_or_else(|| CallError::Rejected(format!("no `sub` in: {}", res.snippet())))?;
        Ok(Profile {
            id: sub.into(),
            name: v["name"].as_str().unwrap_or(sub).into(),
            handle: None,
            picture: v["picture"].as_str().map(String::from),
            url: None,
        })
    }
}

/// Upload one image: `initializeUpload`, then `PUT` the bytes to the URL
/// LinkedIn hands out. Returns the image URN.
fn upload_image(ctx: &Context, owner: &str, version: &str, m: &Media) -> Result<String, CallError> {
    let res = Request::post(ctx.url("api", "/rest/images?action=initializeUpload")?)
        .header("LinkedIn-Version", version)
        .header("X-Restli-Protocol-Version", "2.0.0")
        .json(&json!({ "initializeUploadRequest": { "owner": owner } }))
        .authed()
        .class("media")
        .send()?;
    let v = res.json_ok()?;
    let (Some(url), Some(image)) = (
        v["value"]["uploadUrl"].as_str(),
        v["value"]["image"].as_str(),
    ) else {
        return Err(CallError::Rejected(format!(
            "LinkedIn's initializeUpload answer lacks uploadUrl or image: {}",
            res.snippet()
        )));
    };
    let put = Request::put(url)
        .header("content-type", m.mime_type.clone())
        .media(m.handle, 0, m.size)
        .authed()
        .class("media")
        .send()?;
    if !put.is_success() {
        return Err(put.error());
    }
    Ok(image.to_string())
}

/// Upload one video: `initializeUpload` with its size, one `PUT` per part
/// LinkedIn asks for (each part's `ETag` kept), `finalizeUpload` with the
/// ETags in order, then poll until LinkedIn has processed it. Returns the
/// video URN.
fn upload_video(ctx: &Context, owner: &str, version: &str, m: &Media) -> Result<String, CallError> {
    let rest = |r: Request| {
        r.header("LinkedIn-Version", version)
            .header("X-Restli-Protocol-Version", "2.0.0")
            .authed()
            .class("media")
    };
    let res = rest(Request::post(
        ctx.url("api", "/rest/videos?action=initializeUpload")?,
    ))
    .json(&json!({ "initializeUploadRequest": {
        "owner": owner,
        "fileSizeBytes": m.size,
        "uploadCaptions": false,
        "uploadThumbnail": false
    }}))
    .send()?;
    let v = res.json_ok()?;
    let value = &v["value"];
    let (Some(video), Some(parts)) = (
        value["video"].as_str(),
        value["uploadInstructions"].as_array(),
    ) else {
        return Err(CallError::Rejected(format!(
            "LinkedIn's video initializeUpload answer lacks video or uploadInstructions: {}",
            res.snippet()
        )));
    };
    let mut etags = Vec::with_capacity(parts.len());
    for part in parts {
        let (Some(url), Some(first), Some(last)) = (
            part["uploadUrl"].as_str(),
            part["firstByte"].as_u64(),
            part["lastByte"].as_u64(),
        ) else {
            return Err(CallError::Rejected(format!(
                "a LinkedIn upload instruction lacks uploadUrl, firstByte or lastByte: {part}"
            )));
        };
        if last < first || last >= m.size {
            return Err(CallError::Rejected(format!(
                "LinkedIn asked for bytes {first}-{last} of a {}-byte video",
                m.size
            )));
        }
        // Upload URLs are pre-signed: no bearer token on these.
        let put = Request::put(url)
            .header("content-type", "application/octet-stream")
            .media(m.handle, first, last - first + 1)
            .class("media")
            .send()?;
        if !put.is_success() {
            return Err(put.error());
        }
        let etag = put.header("etag").ok_or_else(|| {
            CallError::Rejected(format!("LinkedIn sent no ETag for bytes {first}-{last}"))
        })?;
        etags.push(etag.to_string());
    }
    let fin = rest(Request::post(
        ctx.url("api", "/rest/videos?action=finalizeUpload")?,
    ))
    .json(&json!({ "finalizeUploadRequest": {
        "video": video,
        "uploadToken": value["uploadToken"].as_str().unwrap_or(""),
        "uploadedPartIds": etags
    }}))
    .send()?;
    if !fin.is_success() {
        return Err(fin.error());
    }
    // Processing takes from seconds to minutes; the host's publish deadline
    // bounds the wait.
    let status_url = ctx.url("api", &format!("/rest/videos/{}", encode_component(video)))?;
    loop {
        let res = rest(Request::get(status_url.clone())).send()?;
        let v = res.json_ok()?;
        match v["status"].as_str() {
            Some("AVAILABLE") => return Ok(video.to_string()),
            Some("PROCESSING_FAILED") => {
                return Err(CallError::Rejected(format!(
                    "LinkedIn could not process the video: {}",
                    res.snippet()
                )));
            }
            _ => sleep_millis(1000),
        }
    }
}

outreach_sdk::export_platform!(LinkedIn);

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_reserved() {
        assert_eq!(super::escape("a_b (c) #d @e"), "a\\_b \\(c\\) \\#d \\@e");
    }

    #[test]
    fn api_versions() {
        for good in ["202601", "202412", "202601.01"] {
            assert!(super::is_api_version(good), "{good}");
        }
        for bad in ["2026-01", "202613", "202600", "2026", "202601.1", "v202601"] {
            assert!(!super::is_api_version(bad), "{bad}");
        }
    }
}
