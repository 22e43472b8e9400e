//! Stage 3, journal: a planned post is registered in the
//! [`crate::outbox`] (keyed so that the same post is never registered
//! twice, and changed content under a settled post is refused unless it is
//! published as new), its deliveries are claimed before they are sent, and
//! a retry re-opens only what may be sent again.
//!
//! Never: sends anything, or holds the journal's lock across a send.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::parse::ParsedPost;
use super::plan::Job;
use super::settle::{Skipped, TargetResult};
use crate::error::bad;
use crate::outbox::{Delivery, Outbox, PostRow, State};

/// Register `post` and its deliveries (every item of every planned
/// target) in the journal; the journal is locked only while registering,
/// never across a send. The post is keyed by its `id`, else its file's real
/// path. Changed content under a post whose deliveries have settled is
/// refused, unless `new`: then it is registered as a new post beside it.
pub fn register(
    outbox: &Mutex<Outbox>,
    post: &ParsedPost,
    jobs: &[Job],
    new: bool,
) -> anyhow::Result<PostRow> {
    let path = post.path.as_path();
    let mut outbox = outbox.lock().expect("outbox");
    outbox.settle_interrupted()?;
    let stable = post.file.id.clone().unwrap_or_else(|| {
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string()
    });
    let hash = hex::encode(Sha256::digest(post.source.as_bytes()));
    let mut key = stable.clone();
    if let Some(existing) = outbox.post(&key)?
        && existing.content_hash != hash
    {
        // Settled deliveries (published, unknown, rejected, out of
        // attempts, cancelled by the user) are never sent again with
        // other content under the same post.
        let mut settled: Vec<String> = Vec::new();
        for d in outbox.deliveries(&key)? {
            let word = format!("{} {}", d.target, settled_word(&d));
            if (d.final_ || d.state == State::Sending) && !settled.contains(&word) {
                settled.push(word);
            }
        }
        let sent = !settled.is_empty();
        if sent && !new {
            return Err(bad!(
                "{} changed since it went out as post `{key}` ({}); re-running it will not send it again. To publish the new text as a new post, run with --new",
                path.display(),
                settled.join(", ")
            ));
        }
        if sent {
            key = format!("{stable}#{}", &hash[..12]);
        }
    }
    let row = PostRow {
        id: key.clone(),
        path: path.display().to_string(),
        content_hash: hash,
        source: post.source.clone(),
        scheduled_at: post.schedule,
        created_at: Utc::now(),
    };
    let items = 1 + post.file.thread.len() as u32;
    let deliveries: Vec<(String, u32)> = jobs
        .iter()
        .flat_map(|j| (0..items).map(move |i| (j.id.to_string(), i)))
        .collect();
    outbox.register(&row, &deliveries)?;
    Ok(row)
}

/// The scheduled posts whose time has come (after settling what a killed
/// process left `sending`).
pub fn due(outbox: &Mutex<Outbox>) -> anyhow::Result<Vec<PostRow>> {
    let outbox = outbox.lock().expect("outbox");
    outbox.settle_interrupted()?;
    Ok(outbox.due(Utc::now())?)
}

/// Every post with its deliveries, as `outreach posts` and `GET /posts`
/// list them.
pub fn list(outbox: &Mutex<Outbox>) -> anyhow::Result<serde_json::Value> {
    let outbox = outbox.lock().expect("outbox");
    Ok(serde_json::Value::Array(
        outbox
            .all()?
            .iter()
            .map(|(p, d)| serde_json::json!({ "post": p, "deliveries": d }))
            .collect(),
    ))
}

/// Post `id` and its deliveries (those of `target` only, if given), for a
/// retry.
pub fn find_for_retry(
    outbox: &Mutex<Outbox>,
    id: &str,
    target: Option<&str>,
) -> anyhow::Result<(PostRow, Vec<Delivery>)> {
    let outbox = outbox.lock().expect("outbox");
    outbox.settle_interrupted()?;
    let Some(row) = outbox.post(id)? else {
        return Err(RetryRefused::NotFound(format!(
            "there is no post `{id}`; `outreach posts` lists them"
        ))
        .into());
    };
    let target = match target {
        Some(t) => Some(retry_target(&outbox, id, t)??),
        None => None,
    };
    let deliveries: Vec<_> = outbox
        .deliveries(id)?
        .into_iter()
        .filter(|d| target.as_ref().is_none_or(|t| *t == d.target))
        .collect();
    Ok((row, deliveries))
}

/// What a retry of a post will do with each of its deliveries.
pub struct RetryChoice {
    /// Re-opened and sent again: `(target, item, state before)`.
    pub reopen: Vec<(String, u32, State)>,
    /// Left as they are, and why.
    pub skipped: Vec<Skipped>,
    /// The targets that will be sent to.
    pub targets: Vec<String>,
}

/// Choose what a retry of `row` re-opens among `deliveries` (its failed and
/// cancelled ones; unknown ones only with `force` or when their upload can
/// resume; never a published one),
/// or why nothing can be retried.
pub fn choose_retry(
    row: &PostRow,
    deliveries: &[Delivery],
    force: bool,
    resumable: &dyn Fn(&str, u32) -> bool,
) -> Result<RetryChoice, RetryRefused> {
    let due = row.scheduled_at.is_none_or(|t| t <= Utc::now());
    let mut reopen = Vec::new();
    let mut skipped = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    for d in deliveries {
        let skip = |reason: String| Skipped {
            target: d.target.clone(),
            index: d.index,
            state: d.state,
            reason,
        };
        let dropped =
            d.state == State::Cancelled && d.error_kind.as_deref() == Some(crate::outbox::DROPPED);
        match d.state {
            _ if dropped => {
                skipped.push(skip("the post file no longer names it".into()));
                continue;
            }
            // An upload that kept a checkpoint resumes its own session:
            // sending it again cannot make a second post.
            State::Unknown if !force && !resumable(&d.target, d.index) => {
                skipped.push(skip(format!(
                    "an earlier attempt may or may not have been published ({}); check the account, and if the post is not there, retry with --force (if it was published after all, it will then show twice)",
                    d.error.as_deref().unwrap_or("outcome unknown")
                )));
                continue;
            }
            State::Failed | State::Cancelled | State::Unknown => {
                reopen.push((d.target.clone(), d.index, d.state));
            }
            State::Published => {
                skipped.push(skip(format!(
                    "already published{}",
                    d.url
                        .as_deref()
                        .or(d.platform_id.as_deref())
                        .map(|u| format!(" ({u})"))
                        .unwrap_or_default()
                )));
                continue;
            }
            // Not sent yet: a due post's pending items go out with the rest.
            State::Pending if due => {}
            State::Pending | State::Queued => {
                skipped.push(skip("queued for its schedule; nothing to retry yet".into()));
                continue;
            }
            State::Sending => {
                skipped.push(skip("being sent right now".into()));
                continue;
            }
            State::Processing => {
                skipped.push(skip(format!(
                    "the platform accepted it ({}) and is still processing it; outreach keeps asking",
                    d.platform_id.as_deref().unwrap_or("?")
                )));
                continue;
            }
        }
        if !targets.contains(&d.target) {
            targets.push(d.target.clone());
        }
    }
    if reopen.is_empty() && targets.is_empty() {
        let why = skipped
            .iter()
            .map(|s| {
                let item = if s.index > 0 {
                    format!(" thread[{}]", s.index - 1)
                } else {
                    String::new()
                };
                format!("{}{item}: {}", s.target, s.reason)
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(RetryRefused::Nothing(format!(
            "nothing to retry in post `{}`: {why}",
            row.id
        )));
    }
    Ok(RetryChoice {
        reopen,
        skipped,
        targets,
    })
}

/// How a settled delivery ended, for messages.
fn settled_word(d: &crate::outbox::Delivery) -> &'static str {
    match (d.state, d.error_kind.as_deref()) {
        (State::Failed, Some("rejected")) => "rejected",
        (State::Cancelled, _) => "cancelled",
        (State::Published, _) => "published",
        (State::Unknown, _) => "unknown",
        (State::Sending, _) => "being sent",
        (State::Processing, _) => "processing",
        _ => "failed",
    }
}

/// Why `outreach posts retry` (or `POST /posts/{id}/retry`) did nothing.
#[derive(Debug, thiserror::Error)]
pub enum RetryRefused {
    /// No such post, or no such target in it.
    #[error("{0}")]
    NotFound(String),
    /// Nothing in it can be retried (published, queued, being sent, or an
    /// unknown outcome without `force`).
    #[error("{0}")]
    Nothing(String),
}

/// The target of post `post` that `t` names: `platform/account` exactly,
/// or `platform` when the post has one account there.
pub fn retry_target(
    outbox: &Outbox,
    post: &str,
    t: &str,
) -> anyhow::Result<Result<String, RetryRefused>> {
    let mut targets: Vec<String> = outbox
        .deliveries(post)?
        .into_iter()
        .map(|d| d.target)
        .collect();
    targets.dedup();
    let matching: Vec<&String> = targets
        .iter()
        .filter(|x| {
            *x == t
                || (!t.contains('/')
                    && x.split_once('/').is_some_and(|(platform, _)| platform == t))
        })
        .collect();
    Ok(match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(RetryRefused::NotFound(format!(
            "post `{post}` has no target `{t}`; its targets are {}",
            targets.join(", ")
        ))),
        several => Err(RetryRefused::NotFound(format!(
            "post `{post}` has several `{t}` accounts ({}); name one as {t}/ACCOUNT",
            several
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    })
}

/// Split `ID[/TARGET]` (as `outreach posts retry` takes it) into a post id
/// and a target. Post ids may contain `/` (by default a post is keyed by
/// its file's path), so the whole text is tried as an id first, then
/// without a trailing `platform/account`, then without a trailing
/// `platform`.
pub fn parse_retry_spec(
    outbox: &Outbox,
    spec: &str,
) -> anyhow::Result<Result<(String, Option<String>), RetryRefused>> {
    if outbox.post(spec)?.is_some() {
        return Ok(Ok((spec.to_string(), None)));
    }
    let segments: Vec<&str> = spec.split('/').collect();
    let mut refused = None;
    for take in [2, 1] {
        if segments.len() <= take {
            continue;
        }
        let (id, target) = segments.split_at(segments.len() - take);
        let (id, target) = (id.join("/"), target.join("/"));
        if id.is_empty() || outbox.post(&id)?.is_none() {
            continue;
        }
        match retry_target(outbox, &id, &target)? {
            Ok(target) => return Ok(Ok((id, Some(target)))),
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    Ok(Err(refused.unwrap_or_else(|| {
        RetryRefused::NotFound(format!(
            "there is no post `{spec}`; `outreach posts` lists them"
        ))
    })))
}

/// What the journal says to do with one item of one target.
pub enum Next {
    /// Published by an earlier run: its receipt; nothing is sent.
    Done {
        platform_id: String,
        url: Option<String>,
    },
    /// Send it, claiming it from these states.
    Send(&'static [State]),
    /// Do not send it, and stop this target here.
    Stop(Stop),
}

/// Why a target stops at an item, as its result shows it.
pub struct Stop {
    /// `queued`, `cancelled`, `failed`, `sending`, `unknown`.
    pub state: &'static str,
    /// The error kind; none for a queued item (not an error).
    pub kind: Option<String>,
    pub message: String,
}

impl Stop {
    fn new(state: &'static str, kind: &str, message: String) -> Self {
        Stop {
            state,
            kind: Some(kind.into()),
            message,
        }
    }

    /// Show the stop in `r`.
    pub fn apply(self, r: &mut TargetResult) {
        match self.kind {
            Some(kind) => r.fail(self.state, &kind, self.message),
            None => {
                r.ok = true;
                r.state = self.state.into();
                if !self.message.is_empty() {
                    r.error = Some(self.message);
                }
            }
        }
    }
}

/// What to do with item `index` of `target` of post `row`, from its state
/// in the journal. Settled items are never sent again unless the user asks
/// (`posts retry`); an unknown outcome is re-sent only where the platform
/// (`platform`, by name in messages) honours an idempotency key.
pub fn next(
    outbox: &Mutex<Outbox>,
    row: &PostRow,
    target: &str,
    index: usize,
    idempotent: bool,
    platform: &str,
) -> Next {
    let current = outbox
        .lock()
        .expect("outbox")
        .deliveries(&row.id)
        .ok()
        .and_then(|d| {
            d.into_iter()
                .find(|d| d.target == target && d.index == index as u32)
        });
    let Some(current) = current else {
        return Next::Stop(Stop::new(
            "failed",
            "outbox",
            "the outbox has no record of this target".into(),
        ));
    };
    let details = || current.error.as_deref().unwrap_or("no details").to_string();
    match current.state {
        State::Published => Next::Done {
            platform_id: current.platform_id.clone().unwrap_or_default(),
            url: current.url.clone(),
        },
        State::Cancelled => Next::Stop(Stop::new(
            "cancelled",
            "cancelled",
            format!(
                "not sent: {}; `outreach posts retry {}/{target}` sends it after all",
                current.error.as_deref().unwrap_or("the post was cancelled"),
                row.id
            ),
        )),
        State::Failed if current.final_ => {
            let rejected = current.error_kind.as_deref() == Some("rejected");
            let why = if rejected {
                format!("{platform} rejected it")
            } else {
                format!(
                    "it failed and its {} automatic attempts are used up",
                    crate::outbox::AUTOMATIC_ATTEMPTS
                )
            };
            Next::Stop(Stop::new(
                "failed",
                current.error_kind.as_deref().unwrap_or("error"),
                format!(
                    "not sent again: {why} ({}). To send it again as it is: `outreach posts retry {}/{target}`{}",
                    details(),
                    row.id,
                    if rejected {
                        "; or change the post and publish it with --new"
                    } else {
                        ""
                    }
                ),
            ))
        }
        State::Queued => Next::Stop(Stop {
            state: "queued",
            kind: None,
            message: String::new(),
        }),
        State::Sending => Next::Stop(Stop::new(
            "sending",
            "in-progress",
            "another outreach process is sending this right now".into(),
        )),
        State::Processing => Next::Stop(Stop {
            state: "processing",
            kind: None,
            message: format!(
                "not sent again: {} — the daemon keeps asking {platform} until it is published or refused",
                match &current.url {
                    Some(u) => format!("it waits to be finished or processed ({u})"),
                    None => format!(
                        "{platform} accepted it ({}) and is still processing it",
                        current.platform_id.as_deref().unwrap_or("?")
                    ),
                }
            ),
        }),
        State::Unknown if idempotent => Next::Send(&[State::Unknown]),
        State::Unknown => Next::Stop(Stop::new(
            "unknown",
            "outcome-unknown",
            format!(
                "not re-sent: an earlier attempt may or may not have been published ({}) and {platform} honours no idempotency key; check the account, then `outreach posts cancel` or publish it again with --new",
                details()
            ),
        )),
        State::Pending | State::Failed => Next::Send(&[State::Pending, State::Failed]),
    }
}

/// Claim the first item of every target that can be sent right away (a
/// free per-platform slot, a token that needs no refresh) in one outbox
/// transaction: one fsync for the whole fan-out instead of one per target.
/// The others are claimed one by one when their turn comes.
pub fn claim_first_items(
    outbox: &Mutex<Outbox>,
    row: &PostRow,
    jobs: &[Job],
    per_platform: usize,
) -> Vec<Option<i64>> {
    let mut claimed = vec![None; jobs.len()];
    let mut started: BTreeMap<&str, usize> = BTreeMap::new();
    let mut items = Vec::new();
    let mut which = Vec::new();
    for (k, j) in jobs.iter().enumerate() {
        let n = started.entry(j.id.platform.as_str()).or_default();
        // An unreadable record is settled when its turn comes.
        let ready = j
            .record
            .as_ref()
            .is_ok_and(|r| !crate::schedule::about_to_expire(r));
        if *n >= per_platform || !ready {
            continue;
        }
        *n += 1;
        let mut from = vec![State::Pending, State::Failed];
        if j.plugin.manifest.idempotent_publish {
            from.push(State::Unknown);
        }
        items.push((j.id.to_string(), 0, from));
        which.push(k);
    }
    if items.is_empty() {
        return claimed;
    }
    match outbox.lock().expect("outbox").begin_many(&row.id, &items) {
        Ok(ids) => {
            for (k, id) in which.into_iter().zip(ids) {
                claimed[k] = id;
            }
        }
        Err(e) => {
            tracing::warn!(post = %row.id, "claiming deliveries together failed ({e:#}); claiming one by one")
        }
    }
    claimed
}

/// Where a plugin keeps how far a long upload of one delivery item got: an
/// entry of the credential store (age-encrypted like the accounts), named
/// after the delivery by a hash, so neither the post nor the target shows
/// in its name. `None` inside when the store cannot be opened: uploads
/// then simply do not resume.
pub struct StoredCheckpoint(Option<(std::sync::Arc<dyn crate::store::CredentialStore>, String)>);

impl StoredCheckpoint {
    pub fn new(svc: &crate::services::Services, post: &str, target: &str, index: usize) -> Self {
        let mut h = Sha256::new();
        h.update(post.as_bytes());
        h.update([0]);
        h.update(target.as_bytes());
        h.update([0]);
        h.update(index.to_string().as_bytes());
        let name = format!("checkpoint-{}", &hex::encode(h.finalize())[..40]);
        StoredCheckpoint(svc.store().ok().map(|s| (s, name)))
    }
}

impl StoredCheckpoint {
    /// Whether a checkpoint is kept (an upload that can resume).
    pub fn exists(&self) -> bool {
        crate::http::Checkpoint::load(self).is_some()
    }
}

impl crate::http::Checkpoint for StoredCheckpoint {
    fn load(&self) -> Option<String> {
        let (store, name) = self.0.as_ref()?;
        match store.load_aux(name) {
            Ok(b) => b.and_then(|b| String::from_utf8(b).ok()),
            Err(e) => {
                tracing::warn!(
                    "could not read an upload's checkpoint; the upload starts over: {e}"
                );
                None
            }
        }
    }

    fn save(&self, state: &str) -> Result<(), String> {
        let Some((store, name)) = self.0.as_ref() else {
            return Ok(());
        };
        if state.is_empty() {
            store.remove_aux(name)
        } else {
            store.save_aux(name, state.as_bytes())
        }
        .map_err(|e| e.to_string())
    }
}
