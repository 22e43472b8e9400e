//! Meta's Graph APIs — Instagram (with Instagram Login), Facebook Pages and
//! Threads — as the three plugins share them, so that each plugin holds
//! only its own edges and fields.
//!
//! Owns: reading a Graph answer and classifying its failures
//! (`{"error":{"message","type","code","error_subcode","fbtrace_id"}}`:
//! code 190 is a token that is gone, 4/17/32/613/80001–80014 are
//! throttling, 1 and 2 are Meta's own trouble), with the difference
//! between a request sent before the post exists and the one that makes
//! it live ([`Stage`]); the publishing quota Instagram and Threads report
//! (`…_publishing_limit`); the container flow of Instagram and Threads
//! (create → poll until `FINISHED` → publish → permalink); finding a post
//! whose answer was lost among the account's latest.
//!
//! Never: chooses a platform's edges or fields (the plugin names them in
//! [`Graph`] and [`Containers`]) or puts a token anywhere — every request
//! asks for the credential with [`Request::authed`], and the manifest's
//! placement puts it in the query (with Facebook's `appsecret_proof`).

use serde_json::Value;

use crate::{CallError, Context, Level, Media, Profile, RateLimited, Receipt, Request, Response};
use crate::{encode_component, log, sleep_millis};

/// Whether a request comes before the post exists or makes it live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Quotas, containers, uploads, look-ups: whatever goes wrong, nothing
    /// is published, so a server error or a timeout is worth a retry.
    Before,
    /// `media_publish`, `threads_publish`, a Page's `feed`, a published
    /// photo, a video's `finish`: once it is sent, a server error, a
    /// timeout or an unreadable answer may hide a post that is live.
    Live,
}

impl Stage {
    /// The rate-limit class of a request at this stage: `media` before the
    /// post exists, `publish` for the request that makes it live.
    pub fn class(self) -> &'static str {
        match self {
            Stage::Before => "media",
            Stage::Live => "publish",
        }
    }
}

/// Graph error codes that mean "slow down": application, user, page and
/// custom-rate limits, and the business use case limits
/// (80001–80014, one per kind of app).
fn throttling(code: i64) -> bool {
    matches!(code, 4 | 17 | 32 | 613 | 80001..=80014)
}

/// One of Meta's Graph APIs, by the name its messages use. Every path is
/// below the `api` endpoint, whose URL holds the Graph version.
#[derive(Clone, Copy, Debug)]
pub struct Graph {
    /// `Instagram`, `Facebook`, `Threads`.
    pub name: &'static str,
}

impl Graph {
    /// GET `path` (with its query: `/me?fields=id,name`) below the `api`
    /// endpoint, with the account's credential: its JSON.
    pub fn get(&self, ctx: &Context, path: &str) -> Result<Value, CallError> {
        self.call(Request::get(ctx.url("api", path)?).authed(), Stage::Before)
    }

    /// POST `form` to `path` below the `api` endpoint.
    pub fn post(
        &self,
        ctx: &Context,
        path: &str,
        form: &[(&str, &str)],
        stage: Stage,
    ) -> Result<Value, CallError> {
        let req = Request::post(ctx.url("api", path)?).form(form).authed();
        self.call(req.class(stage.class()), stage)
    }

    /// Send `req` and read its answer for `stage`. A connection that broke
    /// before the post exists is only a reason to try again.
    pub fn call(&self, req: Request, stage: Stage) -> Result<Value, CallError> {
        match req.send() {
            Ok(res) => self.answer(&res, stage),
            Err(CallError::OutcomeUnknown(m)) if stage == Stage::Before => Err(
                CallError::Transient(format!("{} did not answer: {m}", self.name)),
            ),
            Err(e) => Err(e),
        }
    }

    /// A successful answer's JSON, or what went wrong (see [`Graph::error`]).
    pub fn answer(&self, res: &Response, stage: Stage) -> Result<Value, CallError> {
        match serde_json::from_slice::<Value>(&res.body) {
            Ok(v) if res.is_success() && !v["error"].is_object() => Ok(v),
            _ => Err(self.error(res, stage)),
        }
    }

    /// Classify a failed answer: a token that is gone (code 190, HTTP 401)
    /// needs the account connected again; throttling (codes 4, 17, 32,
    /// 613, 80001–80014, HTTP 429) waits, as long as a
    /// `X-Business-Use-Case-Usage` header says; Meta's own trouble (codes 1
    /// and 2, HTTP 5xx) and an answer that is not JSON (a proxy's HTML
    /// page) are worth a retry before the post exists and an unknown
    /// outcome once it may be live; anything else is a refusal.
    pub fn error(&self, res: &Response, stage: Stage) -> CallError {
        let name = self.name;
        let body: Option<Value> = serde_json::from_slice(&res.body).ok();
        let e = body.as_ref().map(|v| &v["error"]).filter(|e| e.is_object());
        let code = e.and_then(|e| number(&e["code"])).unwrap_or(0);
        let said = match e {
            Some(e) => {
                let message = e["message"].as_str().unwrap_or("no message");
                match number(&e["error_subcode"]) {
                    Some(sub) => format!("{message} (code {code}, subcode {sub})"),
                    None => format!("{message} (code {code})"),
                }
            }
            // Not Meta's error object: an HTML page from a proxy, a
            // truncated body, or nothing at all.
            None => format!("HTTP {} with {}", res.status, res.snippet()),
        };
        if code == 190 || res.status == 401 {
            return CallError::NeedsReconnect(format!(
                "{name} no longer accepts the account's token: {said}; connect the account again"
            ));
        }
        if throttling(code) || res.status == 429 {
            return CallError::RateLimited(RateLimited {
                retry_after_seconds: regain_access(res),
                message: format!("{name} is throttling requests: {said}"),
            });
        }
        let trouble =
            matches!(code, 1 | 2) || res.status >= 500 || (e.is_none() && res.is_success());
        match (trouble, stage) {
            (true, Stage::Before) => {
                CallError::Transient(format!("{name} could not answer for now: {said}"))
            }
            (true, Stage::Live) => CallError::OutcomeUnknown(format!(
                "{name} failed while making the post live, so it may or may not be published: {said}"
            )),
            (false, _) => CallError::Rejected(format!("{name} refused it: {said}")),
        }
    }

    /// The `key` of object `id` (`permalink`, `permalink_url`), asked with
    /// `fields`. The post is live whatever happens here: a failure is
    /// logged and the receipt goes without a URL.
    pub fn permalink(&self, ctx: &Context, id: &str, fields: &str, key: &str) -> Option<String> {
        let path = format!("/{}?fields={fields}", encode_component(id));
        match self.get(ctx, &path) {
            Ok(v) => link(&v[key]),
            Err(e) => {
                log(
                    Level::Warn,
                    &format!("{}: post {id} is live, but its link: {e:?}", self.name),
                );
                None
            }
        }
    }

    /// Among the posts listed at `path` (`/{id}/media?fields=…&limit=25`,
    /// newest first), the one whose `text_key` is `text`, as a receipt
    /// with its `link_key` as the URL.
    pub fn find(
        &self,
        ctx: &Context,
        path: &str,
        text_key: &str,
        link_key: &str,
        text: &str,
    ) -> Result<Option<Receipt>, CallError> {
        let v = self.get(ctx, path)?;
        let found = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p[text_key].as_str().map(str::trim) == Some(text.trim()));
        Ok(found.and_then(|p| Some(Receipt::published(id_of(&p["id"])?, link(&p[link_key])))))
    }

    /// Refuse to start a post the account's publishing quota has no room
    /// for: `GET /{user}/{edge}?fields=quota_usage,config` →
    /// `{"data":[{"quota_usage":2,"config":{"quota_total":50,"quota_duration":86400}}]}`.
    /// The figures are the platform's (they have changed before). A quota
    /// the platform will not tell is no reason to hold the post back.
    pub fn check_quota(&self, ctx: &Context, edge: &str) -> Result<(), CallError> {
        let user = encode_component(ctx.user_id()?);
        let path = format!("/{user}/{edge}?fields=quota_usage,config");
        let v = match self.get(ctx, &path) {
            Ok(v) => v,
            Err(CallError::Rejected(m)) => {
                log(Level::Warn, &format!("publishing quota unknown: {m}"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let q = &v["data"][0];
        let (Some(used), Some(total)) = (
            number(&q["quota_usage"]),
            number(&q["config"]["quota_total"]),
        ) else {
            return Ok(());
        };
        if total <= 0 || used < total {
            return Ok(());
        }
        let window = number(&q["config"]["quota_duration"])
            .unwrap_or(86_400)
            .max(0) as u64;
        Err(CallError::RateLimited(RateLimited {
            retry_after_seconds: Some(window),
            message: format!(
                "{}'s publishing limit of {total} posts in {} is used up",
                self.name,
                span(window)
            ),
        }))
    }
}

/// How Instagram and Threads make a post: a container is created from the
/// media's public URLs (`POST /{user}/{create_edge}`), Meta fetches and
/// processes it (polled until `FINISHED`), and publishing it
/// (`POST /{user}/{publish_edge}` with `creation_id`) makes the post.
#[derive(Clone, Copy, Debug)]
pub struct Containers {
    pub graph: Graph,
    /// `media`, `threads`.
    pub create_edge: &'static str,
    /// `media_publish`, `threads_publish`.
    pub publish_edge: &'static str,
    /// The fields a status poll asks for: `status_code,status`.
    pub status_fields: &'static str,
    /// The field holding IN_PROGRESS, FINISHED, PUBLISHED, ERROR, EXPIRED.
    pub state: &'static str,
    /// The field holding why a container failed.
    pub reason: &'static str,
    /// The fields the permalink lookup asks for (`permalink`, or Threads'
    /// `id,permalink`); the answer's `permalink` is the post's URL.
    pub permalink_fields: &'static str,
}

/// Time between two polls of a container.
const POLL_MILLIS: u64 = 1_500;

/// Polls before a container still processing is given up for now (three
/// minutes: a long video takes that; the call's deadline may end it first).
const MAX_POLLS: u32 = 120;

impl Containers {
    /// Create a container from `form` and wait until Meta has processed
    /// it: its id, ready to publish (or to be a carousel's child).
    pub fn create(&self, ctx: &Context, form: &[(&str, &str)]) -> Result<String, CallError> {
        let user = encode_component(ctx.user_id()?);
        let path = format!("/{user}/{}", self.create_edge);
        let v = self.graph.post(ctx, &path, form, Stage::Before)?;
        let id = id_of(&v["id"]).ok_or_else(|| {
            CallError::Transient(format!(
                "{} created no container (no id in its answer: {v})",
                self.graph.name
            ))
        })?;
        self.wait(ctx, &id)?;
        Ok(id)
    }

    /// Poll container `id` until it is ready. `ERROR` and `EXPIRED` are
    /// refusals with the platform's reason; `PUBLISHED` (already live)
    /// counts as ready.
    pub fn wait(&self, ctx: &Context, id: &str) -> Result<(), CallError> {
        let name = self.graph.name;
        let path = format!("/{}?fields={}", encode_component(id), self.status_fields);
        for poll in 0..MAX_POLLS {
            if poll > 0 {
                sleep_millis(POLL_MILLIS);
            }
            let v = self.graph.get(ctx, &path)?;
            match v[self.state].as_str().unwrap_or_default() {
                "FINISHED" | "PUBLISHED" => return Ok(()),
                state @ ("ERROR" | "EXPIRED") => {
                    let reason = v[self.reason].as_str().unwrap_or_default();
                    return Err(CallError::Rejected(if reason.is_empty() {
                        format!("{name} could not make the post (container {id} is {state})")
                    } else {
                        format!(
                            "{name} could not make the post (container {id} is {state}): {reason}"
                        )
                    }));
                }
                _ => {}
            }
        }
        Err(CallError::Transient(format!(
            "{name} is still processing the post's media (container {id}) after {}; try again later",
            span(u64::from(MAX_POLLS) * POLL_MILLIS / 1000)
        )))
    }

    /// Publish ready container `creation_id`: the post, with its permalink
    /// when the platform tells it.
    pub fn publish(&self, ctx: &Context, creation_id: &str) -> Result<Receipt, CallError> {
        let user = encode_component(ctx.user_id()?);
        let path = format!("/{user}/{}", self.publish_edge);
        let v = self
            .graph
            .post(ctx, &path, &[("creation_id", creation_id)], Stage::Live)?;
        let id = id_of(&v["id"]).ok_or_else(|| {
            CallError::OutcomeUnknown(format!(
                "{} answered the publish without the post's id: {v}",
                self.graph.name
            ))
        })?;
        let url = self
            .graph
            .permalink(ctx, &id, self.permalink_fields, "permalink");
        Ok(Receipt::published(id, url))
    }
}

/// The public URL of each media item, for a platform that fetches media
/// itself; an item without one is refused before anything is created.
pub fn public_urls<'m>(media: &'m [Media], platform: &str) -> Result<Vec<&'m str>, CallError> {
    media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.public_url.as_deref().ok_or_else(|| {
                CallError::Rejected(format!(
                    "media[{i}] ({}) needs a public URL: {platform} fetches every file itself (outreach serves it when `public_base_url` is set under [media] in the config; or give its [[media]] entry `public_url`)",
                    m.file_name
                ))
            })
        })
        .collect()
}

/// A Graph id, which comes as a string (or, from some edges, a number).
pub fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A post's address as the platform gives it, if it is one (a receipt's
/// URL must parse).
fn link(v: &Value) -> Option<String> {
    v.as_str()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(String::from)
}

/// A whole number that may come as a JSON number or a string (Graph sends
/// both: `"start_offset":"0"`, `"code":190`).
pub fn number(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.trim().parse().ok())
}

/// Seconds until a throttled app or page may call again, from the largest
/// `estimated_time_to_regain_access` (minutes) in the JSON-valued
/// `X-Business-Use-Case-Usage` header:
/// `{"<id>":[{"type":"pages","call_count":100,…,"estimated_time_to_regain_access":5}]}`.
fn regain_access(res: &Response) -> Option<u64> {
    let usage: Value = serde_json::from_str(res.header("x-business-use-case-usage")?).ok()?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|u| number(&u["estimated_time_to_regain_access"]))
        .max()?;
    (minutes > 0).then(|| minutes as u64 * 60)
}

/// A duration for people: `24 hours`, `30 minutes`, `90 seconds`.
fn span(secs: u64) -> String {
    let (n, unit) = if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pair;

    const IG: Graph = Graph { name: "Instagram" };

    fn res(status: u16, body: &str, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| Pair {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            body: body.as_bytes().to_vec(),
            final_url: String::new(),
        }
    }

    fn graph_error(code: i64) -> String {
        format!(
            r#"{{"error":{{"message":"boom","type":"OAuthException","code":{code},"fbtrace_id":"x"}}}}"#
        )
    }

    #[test]
    fn graph_errors_are_classified_by_code_and_status() {
        let e = IG.error(&res(400, &graph_error(190), &[]), Stage::Before);
        assert!(
            matches!(e, CallError::NeedsReconnect(ref m) if m.contains("boom")),
            "{e:?}"
        );
        for code in [4, 17, 32, 613, 80001, 80014] {
            let e = IG.error(&res(400, &graph_error(code), &[]), Stage::Before);
            assert!(matches!(e, CallError::RateLimited(_)), "{code}: {e:?}");
        }
        let e = IG.error(&res(500, &graph_error(2), &[]), Stage::Before);
        assert!(matches!(e, CallError::Transient(_)), "{e:?}");
        let e = IG.error(&res(500, &graph_error(2), &[]), Stage::Live);
        assert!(matches!(e, CallError::OutcomeUnknown(_)), "{e:?}");
        let e = IG.error(&res(400, &graph_error(100), &[]), Stage::Live);
        assert!(
            matches!(e, CallError::Rejected(ref m) if m.contains("boom")),
            "{e:?}"
        );
    }

    #[test]
    fn an_html_page_says_so() {
        let page = "<html><title>502 Bad Gateway</title></html>";
        let e = IG.error(&res(502, page, &[]), Stage::Before);
        assert!(
            matches!(e, CallError::Transient(ref m) if m.contains("502 Bad Gateway")),
            "{e:?}"
        );
        let e = IG.answer(&res(200, page, &[]), Stage::Live).unwrap_err();
        assert!(matches!(e, CallError::OutcomeUnknown(_)), "{e:?}");
    }

    #[test]
    fn the_wait_comes_from_the_business_use_case_header() {
        let usage = r#"{"17841":[{"type":"instagram","call_count":100,"estimated_time_to_regain_access":7}]}"#;
        let e = IG.error(
            &res(
                400,
                &graph_error(80002),
                &[("X-Business-Use-Case-Usage", usage)],
            ),
            Stage::Before,
        );
        assert!(
            matches!(e, CallError::RateLimited(ref r) if r.retry_after_seconds == Some(420)),
            "{e:?}"
        );
        let e = IG.error(&res(429, "", &[]), Stage::Before);
        assert!(
            matches!(e, CallError::RateLimited(ref r) if r.retry_after_seconds.is_none()),
            "{e:?}"
        );
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(span(86_400), "24 hours");
        assert_eq!(span(3600), "1 hour");
        assert_eq!(span(180), "3 minutes");
        assert_eq!(span(90), "90 seconds");
    }
}

/// The profile a `/me` answer describes (Instagram, Threads): `name`, or
/// else the `username`, or else `id`; `username` as the handle; the
/// picture from the field `picture`; the profile page `page(handle)`.
pub fn profile(id: String, v: &Value, picture: &str, page: impl Fn(&str) -> String) -> Profile {
    let handle = v["username"].as_str().map(String::from);
    Profile {
        name: v["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .or(handle.as_deref())
            .unwrap_or(&id)
            .into(),
        url: handle.as_deref().map(page),
        picture: v[picture].as_str().map(String::from),
        handle,
        id,
    }
}
