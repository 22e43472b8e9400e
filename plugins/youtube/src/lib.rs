//! YouTube: one video per post (community posts have no API), uploaded
//! with YouTube's resumable protocol. `POST {upload}/videos?uploadType=
//! resumable` with the video's snippet (title, the text as description,
//! tags, category) and status (privacy, a scheduled time, made for kids)
//! opens a session whose URL comes back in `Location`; the file then goes
//! up in 32 MiB pieces (`PUT` with `Content-Range`), each answered `308`
//! with how much YouTube holds (`Range: bytes=0-K`), until the answer to
//! the last is the video (`200`/`201`).
//!
//! Owns: YouTube's rules (one video, a title without `<` or `>`, tags of
//! at most 500 characters as YouTube counts them, a scheduled time only
//! for a private video); the session and where it stands, kept with the
//! host's checkpoint, so that a dropped connection or a killed process
//! resumes the upload where YouTube says it stopped instead of starting
//! it over (and a session YouTube has let go of is started again); reading
//! Google's errors, the daily quota that resets at midnight Pacific time
//! among them.
//!
//! Never: holds more than one piece of the file (the host streams each
//! piece from it; memory stays the same for any size), counts bytes for
//! progress (the host does), or puts the session URL anywhere but the
//! checkpoint: it is a capability, which the host keeps encrypted.

use outreach_sdk::prelude::*;
use outreach_sdk::serde_json::{self, Value};
use outreach_sdk::upload::{self, MIB};

struct YouTube;

/// The platform fields (`[override.youtube]`) this plugin reads.
const FIELDS: &[&str] = &[
    "tags",
    "category_id",
    "privacy",
    "publish_at",
    "made_for_kids",
];

/// Bytes per `PUT`. YouTube wants every piece but the last to be a
/// multiple of 256 KiB. The host streams each piece from disk, so its size
/// costs no memory; larger pieces mean fewer round trips (measured with
/// `cargo bench --bench upload`: 8 MiB pieces reached 0.59 of a plain
/// streaming upload's throughput), and a cut loses nothing either way —
/// YouTube keeps what arrived and says so.
const CHUNK: u64 = 32 * MIB;
const _: () = assert!(CHUNK.is_multiple_of(256 * 1024));

/// Sends in a row that fail on the way (or move the upload no further)
/// before the upload is left to the host's retry, which resumes it.
const MAX_FAILURES: u32 = 5;

/// YouTube's limit on a video's tags together.
const MAX_TAGS_LENGTH: usize = 500;

/// Reasons Google gives when YouTube's daily quota is used up.
const DAILY_QUOTA: &[&str] = &["quotaExceeded", "dailyLimitExceeded", "uploadLimitExceeded"];

/// Reasons Google gives for requests that come too fast.
const THROTTLED: &[&str] = &["rateLimitExceeded", "userRateLimitExceeded"];

impl Platform for YouTube {
    fn manifest() -> Manifest {
        outreach_sdk::platform!("platform.toml")
    }

    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        let m = Self::manifest();
        let mut problems = check_content(&m.content, post, account);
        let mut f = Fields::new(&m.id, post, account, FIELDS);
        f.check(
            "category_id",
            fields::shape("a video category id such as 22", fields::is_digits),
        );
        f.check(
            "publish_at",
            fields::shape(
                "an RFC 3339 time such as 2026-05-01T09:00:00Z or 2026-05-01T11:00:00+02:00",
                is_rfc3339,
            ),
        );
        if let Some(tags) = f.value("tags") {
            let length = tags_length(&tags_of(tags));
            if length > MAX_TAGS_LENGTH {
                f.problem(
                    "tags",
                    format!(
                        "are {length} characters long as YouTube counts them (a comma between two tags, quotes around a tag with a space); the limit is {MAX_TAGS_LENGTH}"
                    ),
                );
            }
        }
        if f.value("publish_at").is_some() && privacy(post) != "private" {
            f.problem(
                "publish_at",
                format!(
                    "is only for a private video (YouTube makes it public at that time), and privacy is {:?}; set privacy = \"private\"",
                    privacy(post)
                ),
            );
        }
        problems.extend(f.finish());
        if post
            .title
            .as_deref()
            .is_some_and(|t| t.contains(['<', '>']))
        {
            problems.push(Problem {
                field: "title".into(),
                message: "contains < or >, which YouTube does not allow in a title".into(),
            });
        }
        // Said in YouTube's words rather than the generic rule's.
        if !post.media.iter().any(|m| m.kind == MediaKind::Video) {
            problems.retain(|p| p.field != "media");
            problems.push(Problem {
                field: "media".into(),
                message: "a YouTube post is one video; attach one".into(),
            });
        }
        problems
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        let Some(video) = post.media.iter().find(|m| m.kind == MediaKind::Video) else {
            return Err(CallError::Rejected(
                "a YouTube post is one video; attach one".into(),
            ));
        };
        let id = upload::settle(upload_video(ctx, post, video))?;
        Ok(watch(&id))
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let v = get(ctx, "/channels?part=snippet&mine=true")?;
        let channel = &v["items"][0];
        let Some(id) = channel["id"].as_str().filter(|id| !id.is_empty()) else {
            return Err(CallError::Rejected(
                "this Google account has no YouTube channel; create one (https://www.youtube.com/create_channel) and connect again".into(),
            ));
        };
        let snippet = &channel["snippet"];
        Ok(Profile {
            id: id.into(),
            name: snippet["title"].as_str().unwrap_or(id).into(),
            handle: snippet["customUrl"]
                .as_str()
                .filter(|h| !h.is_empty())
                .map(String::from),
            picture: snippet["thumbnails"]["default"]["url"]
                .as_str()
                .map(String::from),
            url: Some(format!(
                "https://www.youtube.com/channel/{}",
                encode_component(id)
            )),
        })
    }

    /// An upload whose answer was lost: among the channel's latest uploads
    /// (its `uploads` playlist), the video with the post's title.
    fn find_post(ctx: &Context, post: &Post) -> Result<Option<Receipt>, CallError> {
        let Some(title) = post.title.as_deref() else {
            return Ok(None);
        };
        let v = get(ctx, "/channels?part=contentDetails&mine=true")?;
        let Some(uploads) = v["items"][0]["contentDetails"]["relatedPlaylists"]["uploads"].as_str()
        else {
            return Ok(None);
        };
        let path = format!(
            "/playlistItems?part=snippet&playlistId={}&maxResults=10",
            encode_component(uploads)
        );
        let v = get(ctx, &path)?;
        Ok(v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| &item["snippet"])
            .find(|s| s["title"].as_str().map(str::trim) == Some(title.trim()))
            .and_then(|s| s["resourceId"]["videoId"].as_str())
            .map(watch))
    }
}

/// A live video as a receipt.
fn watch(id: &str) -> Receipt {
    let url = format!("https://www.youtube.com/watch?v={}", encode_component(id));
    Receipt::published(id, Some(url))
}

/// The post's privacy (the manifest's default: private).
fn privacy(post: &Post) -> &str {
    post.extra("privacy").unwrap_or("private")
}

/// Where a session stands, from YouTube's answer to a piece or to the
/// question where it stopped.
enum Stand {
    /// It holds the file's first bytes, this many.
    At(u64),
    /// The upload is complete: the video's id.
    Done(String),
    /// The session has expired or was never YouTube's (404, 410).
    Gone,
}

/// Upload `video` with the post's snippet and status, resuming the
/// session an earlier attempt of this delivery saved if there is one:
/// the new video's id.
fn upload_video(ctx: &Context, post: &Post, video: &Media) -> Result<String, CallError> {
    let size = video.size;
    let saved = upload::resume(size).and_then(|s| s["session"].as_str().map(String::from));
    // Without a saved session, a new one holds nothing yet; a saved one is
    // asked where it stands first (`at` unknown).
    let (mut session, mut at) = match saved {
        Some(session) => (session, None),
        None => (start(ctx, post, video)?, Some(0)),
    };
    let mut fresh = at.is_some();
    let mut failures = 0;
    let mut best: Option<u64> = None;
    loop {
        let put = Request::put(session.clone()).authed().class("upload");
        // The next piece from where YouTube stands; when that is unknown
        // (or YouTube holds the whole file without having answered with
        // the video), ask where it stands instead.
        let piece = at.filter(|&offset| offset < size);
        let sent = match piece {
            Some(offset) => {
                let len = CHUNK.min(size - offset);
                put.header("Content-Range", upload::content_range(offset, len, size))
                    .media(video.handle, offset, len)
                    .send()
            }
            None => put
                .header("Content-Range", upload::status_range(size))
                .send(),
        };
        // A send that failed on the way: where did it stop? The next
        // round asks. An answer is read as it is (a server error is
        // left to the host's retry, which resumes).
        let res = match sent {
            Ok(res) => Ok(res),
            Err(e) if upload::lost(&e) => Err(format!("{e:?}")),
            Err(e) => return Err(e),
        };
        let failure = match res.map(|res| stand(&res, size)) {
            Err(lost) => {
                at = None;
                lost
            }
            Ok(Ok(Stand::Done(id))) => return Ok(id),
            Ok(Ok(Stand::At(held))) => {
                if at.is_none() && best.is_none() && held > 0 {
                    log(
                        Level::Info,
                        &format!("resuming the upload to YouTube at byte {held} of {size}"),
                    );
                }
                // The server may keep less than was sent: carry on from
                // what it holds.
                at = Some(held);
                let progress = best.is_none_or(|b| held > b);
                if progress {
                    best = Some(held);
                    failures = 0;
                }
                // Where it stopped after a send that failed (counted
                // already), or a piece that moved it on: carry on. A
                // piece it kept nothing of, or the whole file without the
                // video, is a failure too, so that a stuck session cannot
                // loop for ever.
                if progress || (piece.is_none() && held < size) {
                    continue;
                }
                if held < size {
                    format!("YouTube kept none of the bytes sent at {held}")
                } else {
                    format!("YouTube holds all {size} bytes but did not answer with the video")
                }
            }
            Ok(Ok(Stand::Gone)) if !fresh => {
                log(
                    Level::Info,
                    "YouTube no longer knows the saved upload session; starting the upload again",
                );
                upload::forget();
                session = start(ctx, post, video)?;
                (at, fresh, failures, best) = (Some(0), true, 0, None);
                continue;
            }
            Ok(Ok(Stand::Gone)) => {
                upload::forget();
                return Err(CallError::Transient(
                    "YouTube let go of the upload session it had just opened; the next attempt starts the upload again".into(),
                ));
            }
            Ok(Err(e)) => return Err(e),
        };
        failures += 1;
        if failures >= MAX_FAILURES {
            return Err(CallError::Transient(format!(
                "the upload to YouTube failed {MAX_FAILURES} times in a row (last: {failure}); the next attempt resumes where YouTube says it stopped"
            )));
        }
    }
}

/// Open an upload session for `video` with the post's snippet and status
/// and save its URL at once: YouTube's answer is the session's
/// `Location`. No video exists until the whole file is up, so a session
/// whose answer was lost is only a reason to try again.
fn start(ctx: &Context, post: &Post, video: &Media) -> Result<String, CallError> {
    let url = ctx.url("upload", "/videos?uploadType=resumable&part=snippet,status")?;
    let res = upload::json_utf8(Request::post(url), &metadata(post))
        .header("X-Upload-Content-Type", video.mime_type.clone())
        .header("X-Upload-Content-Length", video.size.to_string())
        .authed()
        .class("publish")
        .send()
        .map_err(|e| match e {
            CallError::OutcomeUnknown(m) => {
                CallError::Transient(format!("YouTube did not answer the upload's start: {m}"))
            }
            e => e,
        })?;
    if !res.is_success() {
        return Err(error(&res));
    }
    let session = res
        .header("location")
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            CallError::Transient(format!(
                "YouTube opened no upload session (no Location header): {}",
                res.snippet()
            ))
        })?
        .to_string();
    upload::save(video.size, json!({ "session": session }));
    Ok(session)
}

/// The video resource's snippet and status, from the post.
fn metadata(post: &Post) -> Value {
    let mut status = json!({
        "privacyStatus": privacy(post),
        "selfDeclaredMadeForKids": post.extra("made_for_kids") == Some("true"),
    });
    if let Some(at) = post.extra("publish_at") {
        status["publishAt"] = at.into();
    }
    json!({
        "snippet": {
            "title": post.title.as_deref().unwrap_or_default(),
            "description": post.text,
            "tags": tags_of(post.extra("tags").unwrap_or_default()),
            "categoryId": post.extra("category_id").unwrap_or("22"),
        },
        "status": status,
    })
}

/// Read YouTube's answer to a piece of the file or to the question where
/// the upload stopped.
fn stand(res: &Response, size: u64) -> Result<Stand, CallError> {
    match res.status {
        308 => match upload::received(res) {
            Some(held) if held <= size => Ok(Stand::At(held)),
            _ => Err(CallError::Transient(format!(
                "YouTube says it holds {:?} of a {size}-byte file",
                res.header("range").unwrap_or_default()
            ))),
        },
        200 | 201 => {
            let video: Value = serde_json::from_slice(&res.body).unwrap_or_default();
            match video["id"].as_str().filter(|id| !id.is_empty()) {
                Some(id) => Ok(Stand::Done(id.into())),
                // The video may exist: the saved session still answers
                // with it, so the checkpoint stays.
                None => Err(CallError::OutcomeUnknown(format!(
                    "YouTube finished the upload but did not answer with the video (HTTP {}: {})",
                    res.status,
                    res.snippet()
                ))),
            }
        }
        404 | 410 => Ok(Stand::Gone),
        _ => Err(error(res)),
    }
}

/// GET `path` below the `api` endpoint: its JSON.
fn get(ctx: &Context, path: &str) -> Result<Value, CallError> {
    let res = Request::get(ctx.url("api", path)?).authed().send()?;
    if !res.is_success() {
        return Err(error(&res));
    }
    serde_json::from_slice(&res.body).map_err(|_| {
        CallError::Transient(format!(
            "YouTube answered HTTP {} with {}",
            res.status,
            res.snippet()
        ))
    })
}

/// Classify Google's error answer:
/// `{"error":{"code":403,"message":"…","errors":[{"reason":"quotaExceeded","domain":"youtube.quota"}]}}`.
/// The daily quota waits until it resets (midnight Pacific time); being
/// too fast waits; a 401 is a token to refresh; Google's own trouble is
/// worth another attempt; anything else is a refusal.
fn error(res: &Response) -> CallError {
    let body: Option<Value> = serde_json::from_slice(&res.body).ok();
    let Some(e) = body.as_ref().map(|v| &v["error"]).filter(|e| e.is_object()) else {
        // An HTML page from a proxy or Google's front end, or nothing.
        let what = format!(
            "YouTube answered HTTP {} with {}",
            res.status,
            res.snippet()
        );
        return match res.status {
            401 => CallError::AuthExpired(what),
            429 => CallError::RateLimited(RateLimited {
                retry_after_seconds: res.retry_after(),
                message: what,
            }),
            500..=599 => CallError::Transient(what),
            _ => CallError::Rejected(what),
        };
    };
    let message = e["message"].as_str().unwrap_or("no message");
    let reasons: Vec<&str> = e["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    let said = if reasons.is_empty() {
        format!("{message} (HTTP {})", res.status)
    } else {
        format!("{message} ({})", reasons.join(", "))
    };
    let any = |of: &[&str]| reasons.iter().any(|r| of.contains(r));
    if any(DAILY_QUOTA) {
        return CallError::RateLimited(RateLimited {
            retry_after_seconds: Some(until_pacific_midnight(now_millis())),
            message: format!(
                "YouTube's daily quota is used up: {said}; it resets at midnight Pacific time"
            ),
        });
    }
    if any(THROTTLED) || res.status == 429 {
        return CallError::RateLimited(RateLimited {
            retry_after_seconds: None,
            message: format!("YouTube is throttling requests: {said}"),
        });
    }
    match res.status {
        // A Google account without a channel cannot upload: no new token
        // changes that.
        401 if any(&["youtubeSignupRequired"]) => CallError::Rejected(format!(
            "this Google account has no YouTube channel; create one (https://www.youtube.com/create_channel): {said}"
        )),
        401 => CallError::AuthExpired(format!("YouTube refused the access token: {said}")),
        500..=599 => CallError::Transient(format!("YouTube could not answer for now: {said}")),
        _ => CallError::Rejected(format!("YouTube refused it: {said}")),
    }
}

/// The tags of `[override.youtube] tags`: comma-separated, trimmed.
fn tags_of(tags: &str) -> Vec<&str> {
    tags.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// The length YouTube counts for `tags`: their characters, a comma
/// between two, and two quotes around a tag with a space in it (YouTube
/// stores such a tag quoted).
fn tags_length(tags: &[&str]) -> usize {
    let chars: usize = tags
        .iter()
        .map(|t| t.chars().count() + if t.contains(' ') { 2 } else { 0 })
        .sum();
    chars + tags.len().saturating_sub(1)
}

/// An RFC 3339 time by its shape: `YYYY-MM-DDTHH:MM:SS`, an optional
/// fraction of a second, then `Z` or an offset `±HH:MM`.
fn is_rfc3339(value: &str) -> bool {
    let b = value.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |from: usize, to: usize| b[from..to].iter().all(u8::is_ascii_digit);
    let number = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let shape = digits(0, 4)
        && b[4] == b'-'
        && digits(5, 7)
        && b[7] == b'-'
        && digits(8, 10)
        && matches!(b[10], b'T' | b't')
        && digits(11, 13)
        && b[13] == b':'
        && digits(14, 16)
        && b[16] == b':'
        && digits(17, 19);
    if !shape
        || !(1..=12).contains(&number(5, 7))
        || !(1..=31).contains(&number(8, 10))
        || number(11, 13) > 23
        || number(14, 16) > 59
        || number(17, 19) > 60
    {
        return false;
    }
    let mut zone = &b[19..];
    if let Some(fraction) = zone.strip_prefix(b".") {
        let n = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        zone = &fraction[n..];
    }
    match zone {
        b"Z" | b"z" => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let all = [h1, h2, m1, m2];
            all.iter().all(|d| d.is_ascii_digit())
                && (h1 - b'0') * 10 + (h2 - b'0') <= 23
                && (m1 - b'0') * 10 + (m2 - b'0') <= 59
        }
        _ => false,
    }
}

const DAY: i64 = 86_400;

/// Seconds from `now_ms` (Unix milliseconds) until the next midnight in
/// America/Los_Angeles, when YouTube's daily quotas reset. US rule: PDT
/// (UTC−7) from the second Sunday of March, 02:00 local, to the first
/// Sunday of November, 02:00 local; PST (UTC−8) the rest of the year.
fn until_pacific_midnight(now_ms: u64) -> u64 {
    let now = (now_ms / 1000) as i64;
    let (start, end) = summer_time(year_of(now.div_euclid(DAY)));
    // The switches: 02:00 PST is 10:00 UTC, 02:00 PDT is 09:00 UTC.
    let summer_now = (start * DAY + 10 * 3600..end * DAY + 9 * 3600).contains(&now);
    let offset = if summer_now { -7 * 3600 } else { -8 * 3600 };
    let tomorrow = (now + offset).div_euclid(DAY) + 1;
    // Midnight comes before 02:00: summer time holds at the midnight of
    // the day after it starts through that of the day it ends.
    let (start, end) = summer_time(year_of(tomorrow));
    let offset = if (start + 1..=end).contains(&tomorrow) {
        -7 * 3600
    } else {
        -8 * 3600
    };
    (tomorrow * DAY - offset - now).max(1) as u64
}

/// The days (since 1970-01-01) summer time starts and ends on in year `y`:
/// the second Sunday of March and the first Sunday of November.
fn summer_time(y: i64) -> (i64, i64) {
    (sunday(y, 3, 2), sunday(y, 11, 1))
}

/// The `n`th Sunday of month `m` of year `y`, in days since 1970-01-01
/// (a Thursday).
fn sunday(y: i64, m: i64, n: i64) -> i64 {
    let first = days_from_civil(y, m, 1);
    let weekday = (first + 4).rem_euclid(7);
    first + (7 - weekday) % 7 + 7 * (n - 1)
}

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year day `day` (since 1970-01-01) falls in.
fn year_of(day: i64) -> i64 {
    let date = rfc3339_millis((day.max(0) * DAY * 1000) as u64);
    date[..4].parse().unwrap_or(1970)
}

outreach_sdk::export_platform!(YouTube);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_waits_until_midnight_in_los_angeles() {
        let ms = |s: i64| (s * 1000) as u64;
        let day = |y, m, d| days_from_civil(y, m, d) * DAY;
        // 2026-01-15 12:00 UTC is 04:00 PST: 20 hours to go.
        assert_eq!(
            until_pacific_midnight(ms(day(2026, 1, 15) + 12 * 3600)),
            20 * 3600
        );
        // 2026-07-01 06:59:59 UTC is 23:59:59 PDT.
        assert_eq!(until_pacific_midnight(ms(day(2026, 7, 1) + 25_199)), 1);
        // Summer time starts on 2026-03-08: from 00:30 PST that Sunday,
        // the next midnight (PDT) is 22.5 hours away.
        assert_eq!(
            until_pacific_midnight(ms(day(2026, 3, 8) + 8 * 3600 + 1800)),
            22 * 3600 + 1800
        );
        // It ends on 2026-11-01: from 00:30 PDT, the next midnight (PST)
        // is 24.5 hours away.
        assert_eq!(
            until_pacific_midnight(ms(day(2026, 11, 1) + 7 * 3600 + 1800)),
            24 * 3600 + 1800
        );
        // New Year's Eve, 23:00 PST.
        assert_eq!(until_pacific_midnight(ms(day(2027, 1, 1) + 7 * 3600)), 3600);
    }

    #[test]
    fn summer_time_days() {
        assert_eq!(
            summer_time(2025),
            (days_from_civil(2025, 3, 9), days_from_civil(2025, 11, 2))
        );
        assert_eq!(
            summer_time(2026),
            (days_from_civil(2026, 3, 8), days_from_civil(2026, 11, 1))
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn rfc3339_shapes() {
        for good in [
            "2026-05-01T09:00:00Z",
            "2026-05-01T09:00:00.125Z",
            "2026-05-01T11:00:00+02:00",
            "2026-12-31T23:59:60-08:00",
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "2026-05-01",
            "2026-05-01 09:00:00Z",
            "2026-05-01T09:00:00",
            "2026-13-01T09:00:00Z",
            "2026-05-01T24:00:00Z",
            "2026-05-01T09:00:00+0200",
            "2026-05-01T09:00:00.Z",
            "tomorrow at nine o'clock",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn tags_count_commas_and_quotes() {
        let tags = tags_of(" rust, web assembly ,,video ");
        assert_eq!(tags, ["rust", "web assembly", "video"]);
        assert_eq!(tags_length(&tags), 4 + 14 + 5 + 2);
        assert_eq!(tags_length(&[]), 0);
    }
}
