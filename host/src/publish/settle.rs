//! Stage 5, settle: what happened to each delivery is recorded in the
//! journal and reported — per target, per item — in the shapes every front
//! end shows (`publish --json`, the control API, the daemon's log).
//!
//! Never: decides whether to send; a report shows no secret.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::http::RecordedRequest;
use crate::outbox::{Outbox, PostRow, Reopened, State};
use crate::store::AccountId;

/// One target's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub target: String,
    pub ok: bool,
    /// `published`, `queued`, `failed`, `unknown`, `cancelled`.
    pub state: String,
    pub post_id: Option<String>,
    pub url: Option<String>,
    /// Ids of the thread's follow-ups, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub thread: Vec<String>,
    /// `auth-expired`, `rate-limited`, `rejected`, `outcome-unknown`, …, or
    /// `plugin` for a plugin that crashed.
    pub error_kind: Option<String>,
    pub error: Option<String>,
    /// The platform left the last step to the user: open `url` to finish.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub handed_to_user: bool,
    /// Already published by an earlier run; nothing was sent now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub already: bool,
    /// With `--dry-run`: the requests the plugin would send.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RecordedRequest>,
    /// With `--dry-run`: what the plugin would do that `requests` does not
    /// show, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_shown: Vec<String>,
}

impl TargetResult {
    pub fn new(target: &AccountId) -> Self {
        TargetResult {
            target: target.to_string(),
            ok: false,
            state: String::new(),
            post_id: None,
            url: None,
            thread: Vec::new(),
            error_kind: None,
            error: None,
            handed_to_user: false,
            already: false,
            requests: Vec::new(),
            not_shown: Vec::new(),
        }
    }
}

/// What `publish` did with a file.
#[derive(Debug, Serialize)]
pub struct Report {
    pub post: String,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Published after its schedule by more than `publish.late_after_secs`.
    pub late: bool,
    pub results: Vec<TargetResult>,
}

impl TargetResult {
    /// Item `index` went out (or had gone out) as `platform_id`.
    pub fn succeeded(&mut self, index: usize, platform_id: &str, url: Option<String>) {
        if index == 0 {
            self.post_id = Some(platform_id.to_string());
            self.url = url;
        } else {
            self.thread.push(platform_id.to_string());
        }
    }

    /// The platform accepted item `index` and is still processing it (as
    /// `platform_id`); `note` says what happens next.
    pub fn processing(
        &mut self,
        index: usize,
        platform_id: &str,
        url: Option<String>,
        note: String,
    ) {
        self.succeeded(index, platform_id, url);
        self.ok = true;
        self.state = "processing".into();
        self.error = Some(note);
    }

    /// The last step is the user's: open `url`; `note` says what happens
    /// next.
    pub fn handed(&mut self, url: Option<String>, note: String) {
        self.ok = true;
        self.state = "handed-to-user".into();
        self.handed_to_user = true;
        self.url = url;
        self.error = Some(note);
    }

    /// The target stopped: in `state`, for a reason of kind `kind`.
    pub fn fail(&mut self, state: &str, kind: &str, message: String) {
        self.state = state.into();
        self.error_kind = Some(kind.into());
        self.error = Some(message);
    }
}

impl State {
    /// The state as a publish result names it: `published`, `unknown`,
    /// else `failed`.
    pub fn as_str_public(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Published => "published",
            State::Processing => "processing",
            _ => "failed",
        }
    }
}

/// How one attempt ended.
pub struct Outcome<'a> {
    pub state: State,
    pub platform_id: Option<&'a str>,
    pub url: Option<&'a str>,
    pub error_kind: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// One item of one target of a post, as the journal knows it.
pub struct Item<'a> {
    pub outbox: &'a Mutex<Outbox>,
    pub row: &'a PostRow,
    pub target: &'a str,
    pub index: usize,
}

impl Item<'_> {
    /// Record how `attempt` ended. A journal that cannot take it is
    /// logged: the send has happened either way.
    pub fn finish(&self, attempt: i64, o: &Outcome<'_>) {
        let saved = self.outbox.lock().expect("outbox").finish(
            attempt,
            &self.row.id,
            self.target,
            self.index as u32,
            o.state,
            o.platform_id,
            o.url,
            o.error_kind,
            o.error,
        );
        if let Err(e) = saved {
            tracing::error!(post = %self.row.id, target = %self.target, "cannot record the outcome in the outbox: {e:#}");
        }
    }

    /// Settle a claimed attempt that never sent anything.
    pub fn abandon(&self, attempt: i64, kind: &str, message: &str) {
        self.finish(
            attempt,
            &Outcome {
                state: State::Failed,
                platform_id: None,
                url: None,
                error_kind: Some(kind),
                error: Some(message),
            },
        );
    }
}

/// The results of a post scheduled for later: each target as the journal
/// has it (queued), nothing sent.
pub fn scheduled_results(
    outbox: &Mutex<Outbox>,
    row: &PostRow,
) -> anyhow::Result<Vec<TargetResult>> {
    let outbox = outbox.lock().expect("outbox");
    let mut by_target: BTreeMap<String, TargetResult> = BTreeMap::new();
    for d in outbox.deliveries(&row.id)? {
        by_target.entry(d.target.clone()).or_insert_with(|| {
            let mut r = TargetResult::new(&AccountId::parse(&d.target).unwrap_or(AccountId {
                platform: d.target.clone(),
                account: String::new(),
            }));
            r.ok = true;
            r.state = d.state.to_string();
            r
        });
    }
    Ok(by_target.into_values().collect())
}

/// How messages name item `index` of a post: `the post`, `thread[0]`, ….
pub fn item_name(index: usize) -> String {
    if index == 0 {
        "the post".into()
    } else {
        format!("thread[{}]", index - 1)
    }
}

/// What `outreach posts retry` did: the publish report for the targets it
/// retried, what it re-opened, and what it left alone.
#[derive(Debug, Serialize)]
pub struct RetryReport {
    #[serde(flatten)]
    pub report: Report,
    pub reopened: Vec<Reopened>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

/// A delivery a retry left as it was, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub target: String,
    pub index: u32,
    pub state: State,
    pub reason: String,
}
