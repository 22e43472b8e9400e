//! Stage 4, deliver: every claimed delivery of a post is sent — targets
//! concurrently (at most `publish.per_platform` per platform), each thread
//! item in order with explicit parent ids — through the plugin and the
//! broker: a token about to expire refreshed first, one refused token
//! refreshed and tried again, a short 429 waited out for that target only,
//! a send that never left the host retried. `--dry-run` runs the same calls
//! with the broker recording requests instead of sending them.
//!
//! Never: re-sends an item the journal has settled, lets one failing
//! target stop the others, or shows a secret in what it reports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::journal::{self, claim_first_items};
use super::parse::ParsedPost;
use super::plan::{Job, UNREADABLE};
use super::settle::{self, Item, Report, TargetResult, item_name};
use crate::contract::wit::types::{CallError, Post, Receipt, ReceiptState, RefreshStyle};
use crate::contract::{call_error_kind, describe_call_error};
use crate::http::RecordedRequest;
use crate::outbox::{Outbox, PostRow, State};
use crate::plugin::LoadedPlugin;
use crate::schedule::{Need, RefreshError, Refresher};
use crate::secret::scrub;
use crate::services::Services;
use crate::store::{AccountId, Record};

/// What every delivery of one post shares.
struct Run<'a> {
    svc: &'a Services,
    refresher: &'a Refresher,
    outbox: &'a Mutex<Outbox>,
    row: &'a PostRow,
    post: &'a ParsedPost,
    media_paths: Arc<Vec<PathBuf>>,
}

/// Send every pending delivery of `row`: targets concurrently (at most
/// `publish.per_platform` per platform), each thread in order. A post
/// scheduled for later is only reported as queued.
pub async fn deliver(
    svc: &Arc<Services>,
    row: &PostRow,
    post: &ParsedPost,
    jobs: Vec<Job>,
    outbox: Arc<Mutex<Outbox>>,
) -> anyhow::Result<Report> {
    let now = Utc::now();
    let cfg = svc.cfg().config.publish.clone();
    let due = row.scheduled_at.is_none_or(|t| t <= now);
    let late = row
        .scheduled_at
        .is_some_and(|t| now - t > chrono::Duration::seconds(cfg.late_after_secs as i64));
    let report = |results| Report {
        post: row.id.clone(),
        scheduled_at: row.scheduled_at,
        late: late && due,
        results,
    };
    if !due {
        return Ok(report(settle::scheduled_results(&outbox, row)?));
    }
    // One delivery of a post at a time in this process (the daemon's due
    // loop and its post-file watcher may reach the same post together);
    // the outbox's claims keep other processes out.
    let lock = svc.post_locks.get(&row.id);
    let _one_at_a_time = lock.lock().await;
    let refresher = Refresher::new(svc.clone())?;
    let per_platform = cfg.per_platform.max(1) as usize;
    let mut slots: BTreeMap<String, Arc<tokio::sync::Semaphore>> = BTreeMap::new();
    for j in &jobs {
        slots
            .entry(j.id.platform.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(per_platform)));
    }
    let run = Run {
        svc,
        refresher: &refresher,
        outbox: &outbox,
        row,
        post,
        media_paths: Arc::new(post.media_paths.clone()),
    };
    let claimed = claim_first_items(&outbox, row, &jobs, per_platform);
    let run = &run;
    let futures = jobs.into_iter().zip(claimed).map(|(job, claimed)| {
        let slot = slots[&job.id.platform].clone();
        async move {
            let _permit = slot.acquire_owned().await.expect("semaphore open");
            deliver_target(run, job, claimed).await
        }
    });
    Ok(report(futures::future::join_all(futures).await))
}

/// Deliver one target: the post, then its thread, each once, each item
/// going through the journal (what is settled is not sent again), the
/// credential (refreshed first if it is about to expire), the plugin and
/// the broker, and back to the journal. `claimed`: the first item's
/// attempt, if [`claim_first_items`] already claimed it.
async fn deliver_target(run: &Run<'_>, job: Job, mut claimed: Option<i64>) -> TargetResult {
    let Job { id, plugin, record } = job;
    let (row, outbox) = (run.row, run.outbox);
    let mut result = TargetResult::new(&id);
    let target = id.to_string();
    let idempotent = plugin.manifest.idempotent_publish;
    let mut parent: Option<String> = None;
    let mut root: Option<String> = None;
    let mut record = record;
    let mut all_already = true;
    for index in 0..1 + run.post.file.thread.len() {
        let item = Item {
            outbox,
            row,
            target: &target,
            index,
        };
        // Stage 3 again: what the journal says about this item.
        let pre = if index == 0 { claimed.take() } else { None };
        // An upload that kept a checkpoint resumes its own session: sending
        // it again cannot make a second post.
        let resumable = || {
            crate::http::Checkpoint::load(&journal::StoredCheckpoint::new(
                run.svc,
                &run.row.id,
                &target,
                index,
            ))
            .is_some()
        };
        let from = match pre {
            Some(_) => journal::Next::Send(&[]),
            None => journal::next(
                outbox,
                row,
                &target,
                index,
                idempotent || resumable(),
                &plugin.manifest.name,
            ),
        };
        let from = match from {
            journal::Next::Done { platform_id, url } => {
                result.succeeded(index, &platform_id, url);
                root.get_or_insert(platform_id.clone());
                parent = Some(platform_id);
                continue;
            }
            journal::Next::Stop(stop) => {
                // An earlier attempt's outcome is unknown: the platform may
                // know by now. Found, it is settled as published.
                let found = match &record {
                    Ok(rec) if stop.state == "unknown" => {
                        find_earlier(run, &plugin, rec, index, &parent, &root).await
                    }
                    _ => None,
                };
                // Claimed in its own statement: the journal's lock must not
                // be held while the outcome is recorded.
                let attempt = match &found {
                    Some(_) => outbox
                        .lock()
                        .expect("outbox")
                        .begin(&row.id, &target, index as u32, &[State::Unknown])
                        .ok()
                        .flatten(),
                    None => None,
                };
                if let (Some(found), Some(attempt)) = (found, attempt) {
                    item.finish(
                        attempt,
                        &settle::Outcome {
                            state: State::Published,
                            platform_id: Some(&found.id),
                            url: found.url.as_deref(),
                            error_kind: None,
                            error: None,
                        },
                    );
                    tracing::info!(post = %row.id, %target, "an earlier attempt whose outcome was unknown is on the platform");
                    result.succeeded(index, &found.id, found.url.clone());
                    root.get_or_insert(found.id.clone());
                    parent = Some(found.id);
                    all_already = false;
                    continue;
                }
                stop.apply(&mut result);
                return result;
            }
            journal::Next::Send(from) => from,
        };
        all_already = false;
        let record = match &mut record {
            Ok(r) => r,
            Err(msg) => {
                // Nothing can be sent without the account: one failed
                // attempt, so the journal and `posts show` say why.
                let attempt =
                    outbox
                        .lock()
                        .expect("outbox")
                        .begin(&row.id, &target, index as u32, from);
                if let Ok(Some(a)) = attempt {
                    item.abandon(a, UNREADABLE, msg);
                }
                run.refresher
                    .notifier
                    .publish_ended(&row.id, &id, "failed", msg)
                    .await;
                crate::metrics::publish(&id.platform, "failed");
                result.fail("failed", UNREADABLE, msg.to_string());
                return result;
            }
        };
        // A token that has expired (or is about to) is refreshed first,
        // once, however many publishes want it.
        if crate::schedule::about_to_expire(record) {
            match run.refresher.ensure(&id, Need::Usable).await {
                Ok(fresh) => *record = fresh,
                Err(e) => {
                    let msg = scrub(&e.to_string(), &record.secrets());
                    if let Some(a) = pre {
                        item.abandon(a, refresh_error_kind(&e), &msg);
                    }
                    result.fail("failed", refresh_error_kind(&e), msg);
                    return result;
                }
            }
        }
        let mut variant = match item_variant(run, &plugin, &id, index, &parent, &root) {
            Ok(v) => v,
            Err(e) => {
                if let Some(a) = pre {
                    item.abandon(a, "post", &e.to_string());
                }
                result.fail("failed", "post", e.to_string());
                return result;
            }
        };
        // Attachments the platform fetches itself are served while this
        // item is delivered, and no longer.
        let _shared =
            match super::plan::share_public_media(run.svc, &plugin, &mut variant, &run.media_paths)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    let msg = format!("{e:#}");
                    if let Some(a) = pre {
                        item.abandon(a, "media", &msg);
                    }
                    result.fail("failed", "media", msg);
                    return result;
                }
            };
        let attempt = match pre {
            Some(a) => a,
            None => match outbox
                .lock()
                .expect("outbox")
                .begin(&row.id, &target, index as u32, from)
            {
                Ok(Some(a)) => a,
                Ok(None) => {
                    result.fail(
                        "sending",
                        "in-progress",
                        "another outreach process claimed this delivery".into(),
                    );
                    return result;
                }
                Err(e) => {
                    result.fail("failed", "outbox", format!("{e:#}"));
                    return result;
                }
            },
        };
        let checkpoint = Arc::new(journal::StoredCheckpoint::new(
            run.svc,
            &run.row.id,
            &target,
            index,
        ));
        let (mut state, mut outcome) =
            send_with_retries(run, &plugin, &id, record, &variant, &checkpoint).await;
        // A settled item has nothing to resume; an unknown one keeps its
        // checkpoint for the retry.
        if matches!(state, State::Published | State::Failed | State::Processing) {
            let _ = crate::http::Checkpoint::save(&*checkpoint, "");
        }
        // Accepted but still processing (TikTok moderation, Reddit media):
        // recorded as such at once (a restart keeps asking), then asked
        // again here for a while.
        if let Ok(r) = &outcome
            && r.state == ReceiptState::Pending
        {
            item.finish(attempt, &processing(r));
            let wait = Duration::from_secs(run.svc.cfg().config.publish.pending_wait_secs);
            match settle_pending(run, &plugin, record, r.clone(), wait).await {
                Some((settled, end)) => {
                    let (pid, url, kind, error) = split(&end);
                    record_settled(
                        run.svc,
                        &row.id,
                        &target,
                        index as u32,
                        settled,
                        pid,
                        url,
                        kind,
                        error,
                    );
                    (state, outcome) = (settled, end);
                }
                None => {
                    result.processing(index, &r.id, r.url.clone(), format!(
                        "{} accepted it and is still processing it after {} s; the daemon keeps asking until it is published or refused (`outreach posts` shows it)",
                        plugin.manifest.name,
                        wait.as_secs()
                    ));
                    return result;
                }
            }
            if state == State::Published
                && let Ok(r) = &outcome
            {
                result.succeeded(index, &r.id, r.url.clone());
                root.get_or_insert(r.id.clone());
                parent = Some(r.id.clone());
                continue;
            }
            let (kind, error) = match &outcome {
                Err((k, m)) => (k.clone(), m.clone()),
                Ok(_) => ("error".into(), String::new()),
            };
            result.fail(state.as_str_public(), &kind, error);
            return result;
        }
        // Handed to the user with something to watch for (a Hacker News
        // submit page): recorded as processing, and the daemon asks the
        // plugin until the post appears.
        if let Ok(r) = &outcome
            && r.state == ReceiptState::HandedToUser
            && !r.id.is_empty()
        {
            item.finish(attempt, &processing(r));
            let note = format!(
                "outreach watches {} for it and records it once it appears",
                plugin.manifest.name
            );
            // Announced like an ended publish: the user has a step to take.
            run.refresher
                .notifier
                .publish_ended(
                    &row.id,
                    &id,
                    "handed-to-user",
                    &format!("finish it at {} ({note})", r.url.as_deref().unwrap_or("?")),
                )
                .await;
            result.handed(r.url.clone(), note);
            return result;
        }
        // An outcome that is unknown may be known to the platform: ask
        // before reporting it (the post may be there after all).
        if state == State::Unknown
            && let Some(receipt) = find_post(run, &plugin, record, &variant).await
        {
            tracing::info!(post = %row.id, %target, "the platform has the post whose outcome was unknown");
            state = State::Published;
            outcome = Ok(receipt);
        }
        let handed = matches!(&outcome, Ok(r) if r.state == ReceiptState::HandedToUser);
        // Stage 5: the outcome, recorded and reported.
        let secrets = record.secrets();
        let (pid, url, kind, error) = match outcome {
            Ok(r) => (Some(r.id), r.url, None, None),
            Err((kind, msg)) => (None, None, Some(kind), Some(scrub(&msg, &secrets))),
        };
        item.finish(
            attempt,
            &settle::Outcome {
                state,
                platform_id: pid.as_deref(),
                url: url.as_deref(),
                error_kind: kind.as_deref(),
                error: error.as_deref(),
            },
        );
        crate::metrics::publish(&id.platform, state.as_str_public());
        if matches!(state, State::Failed | State::Unknown) {
            run.refresher
                .notifier
                .publish_ended(
                    &row.id,
                    &id,
                    state.as_str_public(),
                    error.as_deref().unwrap_or_default(),
                )
                .await;
        }
        match (state, pid) {
            (State::Published, Some(pid)) => {
                result.succeeded(index, &pid, url);
                result.handed_to_user |= handed;
                root.get_or_insert(pid.clone());
                parent = Some(pid);
            }
            _ => {
                result.fail(
                    state.as_str_public(),
                    kind.as_deref().unwrap_or("error"),
                    error.unwrap_or_default(),
                );
                return result;
            }
        }
    }
    result.ok = true;
    result.state = if result.handed_to_user {
        "handed-to-user".into()
    } else {
        "published".into()
    };
    result.already = all_already;
    result
}

/// How an item the platform still has to finish (`r`: pending, or handed
/// to the user with something to watch for) is recorded.
fn processing(r: &Receipt) -> settle::Outcome<'_> {
    settle::Outcome {
        state: State::Processing,
        platform_id: Some(&r.id),
        url: r.url.as_deref(),
        error_kind: None,
        error: None,
    }
}

/// A settled outcome as the journal records it: platform id and URL, or
/// error kind and message.
#[allow(clippy::type_complexity)]
fn split(
    end: &Result<Receipt, (String, String)>,
) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
    match end {
        Ok(r) => (Some(r.id.as_str()), r.url.as_deref(), None, None),
        Err((k, m)) => (None, None, Some(k.as_str()), Some(m.as_str())),
    }
}

/// What asking about a pending post found.
enum Asked {
    /// It settled: published, or refused (kind, message).
    Settled(State, Result<Receipt, (String, String)>),
    /// Still processing (the receipt as the platform now has it).
    Still(Receipt),
    /// No answer this time (a temporary failure, a plugin that crashed).
    NoAnswer,
}

/// Ask `plugin` once, with `check-receipt`, where `receipt` stands.
async fn ask(svc: &Services, plugin: &LoadedPlugin, record: &Record, receipt: &Receipt) -> Asked {
    let (ctx, scope) = svc.call_env(plugin, record);
    match svc.host.check_receipt(plugin, scope, &ctx, receipt).await {
        // Still processing, or still the user's to finish.
        Ok(Ok(r)) if matches!(r.state, ReceiptState::Pending | ReceiptState::HandedToUser) => {
            Asked::Still(r)
        }
        Ok(Ok(r)) => Asked::Settled(State::Published, Ok(r)),
        Ok(Err(CallError::Transient(_) | CallError::RateLimited(_))) => Asked::NoAnswer,
        // Refused after all (moderation), or the grant is gone.
        Ok(Err(e)) => Asked::Settled(
            State::Failed,
            Err((call_error_kind(&e).into(), describe_call_error(&e))),
        ),
        Err(e) => {
            tracing::warn!(plugin = %plugin.manifest.id, "asking about a pending post failed: {e}");
            Asked::NoAnswer
        }
    }
}

/// Ask about a pending post with backoff (2 s, doubling, at most a minute
/// apart) for up to `wait`: how it settled, or `None` if it is still
/// processing (the journal keeps it `processing`; the daemon asks on).
async fn settle_pending(
    run: &Run<'_>,
    plugin: &LoadedPlugin,
    record: &Record,
    mut receipt: Receipt,
    wait: Duration,
) -> Option<(State, Result<Receipt, (String, String)>)> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_secs(2);
    while start.elapsed() + pause <= wait {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(60));
        match ask(run.svc, plugin, record, &receipt).await {
            Asked::Settled(state, end) => return Some((state, end)),
            Asked::Still(r) => receipt = r,
            Asked::NoAnswer => {}
        }
    }
    None
}

/// Record how a `processing` delivery settled (only if it still is).
#[allow(clippy::too_many_arguments)]
fn record_settled(
    svc: &Services,
    post: &str,
    target: &str,
    index: u32,
    state: State,
    platform_id: Option<&str>,
    url: Option<&str>,
    kind: Option<&str>,
    error: Option<&str>,
) {
    let outbox = match svc.outbox() {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(
                post,
                target,
                "cannot record how a processing post settled: {e:#}"
            );
            return;
        }
    };
    let done = outbox.lock().expect("outbox").settle_processing(
        post,
        target,
        index,
        state,
        platform_id,
        url,
        kind,
        error,
    );
    if let Err(e) = done {
        tracing::error!(
            post,
            target,
            "cannot record how a processing post settled: {e:#}"
        );
    }
}

/// The daemon's round over `processing` deliveries: each one due is asked
/// about once (more often while it is young: a tenth of its age apart,
/// between 5 s and 30 min), and recorded when it settles. One gone
/// `processing` longer than `publish.processing_limit_hours` becomes
/// unknown. Returns how many settled.
pub async fn recheck_processing(svc: &Services, refresher: &Refresher) -> anyhow::Result<usize> {
    let list = svc.outbox()?.lock().expect("outbox").processing()?;
    let now = chrono::Utc::now();
    let limit = chrono::Duration::hours(svc.cfg().config.publish.processing_limit_hours as i64);
    let mut settled = 0;
    for (d, since) in list {
        let age = now - since;
        let every = (age / 10).clamp(chrono::Duration::seconds(5), chrono::Duration::minutes(30));
        if now - d.updated_at < every {
            continue;
        }
        let _lock = svc.post_locks.get(&d.post).lock_owned().await;
        let id = match AccountId::parse(&d.target) {
            Ok(id) => id,
            Err(_) => continue,
        };
        let (Ok(plugin), Ok(record)) = (
            svc.platform(&id.platform),
            svc.store().and_then(|s| Ok(s.load(&id)?)),
        ) else {
            continue;
        };
        let receipt = Receipt {
            id: d.platform_id.clone().unwrap_or_default(),
            url: d.url.clone(),
            state: ReceiptState::Pending,
        };
        let (state, end) = match ask(svc, &plugin, &record, &receipt).await {
            Asked::Settled(state, end) => (state, end),
            _ if age > limit => (
                State::Unknown,
                Err((
                    "pending".into(),
                    format!(
                        "{} had not shown it {} hours after it was sent or handed to you ({}); it may yet appear — check the account",
                        plugin.manifest.name,
                        limit.num_hours(),
                        receipt.url.as_deref().unwrap_or(&receipt.id)
                    ),
                )),
            ),
            Asked::Still(r) => {
                svc.outbox()?.lock().expect("outbox").touch_processing(
                    &d.post,
                    &d.target,
                    d.index,
                    &r.id,
                    r.url.as_deref(),
                )?;
                continue;
            }
            Asked::NoAnswer => {
                svc.outbox()?.lock().expect("outbox").touch_processing(
                    &d.post,
                    &d.target,
                    d.index,
                    &receipt.id,
                    receipt.url.as_deref(),
                )?;
                continue;
            }
        };
        let (pid, url, kind, error) = split(&end);
        let error = error.map(|m| scrub(m, &record.secrets()));
        record_settled(
            svc,
            &d.post,
            &d.target,
            d.index,
            state,
            pid,
            url,
            kind,
            error.as_deref(),
        );
        crate::metrics::publish(&id.platform, state.as_str_public());
        tracing::info!(post = %d.post, target = %d.target, state = state.as_str_public(), "a post the platform was processing settled");
        if state != State::Published {
            refresher
                .notifier
                .publish_ended(
                    &d.post,
                    &id,
                    state.as_str_public(),
                    error.as_deref().unwrap_or_default(),
                )
                .await;
        }
        settled += 1;
    }
    Ok(settled)
}

/// Item `index` of the post as `id`'s platform gets it, the same on every
/// attempt: its idempotency key, the defaults of fields it does not set
/// (checked at plan), and its place in the thread.
fn item_variant(
    run: &Run<'_>,
    plugin: &LoadedPlugin,
    id: &AccountId,
    index: usize,
    parent: &Option<String>,
    root: &Option<String>,
) -> anyhow::Result<Post> {
    let key = idempotency_key(&run.row.id, &id.to_string(), index);
    let mut variant = run
        .post
        .file
        .variant(&id.platform, index, &key, &run.post.media)?;
    super::plan::post_fields(plugin, &mut variant);
    variant.reply_to = parent.clone();
    variant.thread_root = root.clone();
    Ok(variant)
}

/// [`find_post`] for item `index` of the post as it was sent before.
async fn find_earlier(
    run: &Run<'_>,
    plugin: &LoadedPlugin,
    record: &Record,
    index: usize,
    parent: &Option<String>,
    root: &Option<String>,
) -> Option<Receipt> {
    let variant = item_variant(run, plugin, &record.id, index, parent, root).ok()?;
    find_post(run, plugin, record, &variant).await
}

/// Whether the platform has `variant` already, per the plugin's
/// `find-post` (`None` when it cannot tell or the question fails).
async fn find_post(
    run: &Run<'_>,
    plugin: &LoadedPlugin,
    record: &Record,
    variant: &Post,
) -> Option<Receipt> {
    let (ctx, scope) = run.svc.call_env(plugin, record);
    match run.svc.host.find_post(plugin, scope, &ctx, variant).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::info!(plugin = %plugin.manifest.id, "could not tell whether the post exists: {}", describe_call_error(&e));
            None
        }
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    }
}

/// Send one item: refresh and retry once on an expired token, wait out a
/// short 429, retry sends that never left the host. Returns the state to
/// record and the receipt or `(kind, message)`.
async fn send_with_retries(
    run: &Run<'_>,
    plugin: &LoadedPlugin,
    id: &AccountId,
    record: &mut Record,
    variant: &Post,
    checkpoint: &Arc<journal::StoredCheckpoint>,
) -> (State, Result<Receipt, (String, String)>) {
    let (svc, refresher) = (run.svc, run.refresher);
    let cfg = svc.cfg().config.publish.clone();
    let mut refreshed = false;
    let mut tries = 0;
    let mut waited = Duration::ZERO;
    let total: u64 = variant.media.iter().map(|m| m.size).sum();
    let key = (run.row.id.clone(), id.to_string());
    loop {
        tries += 1;
        let (ctx, mut scope) = svc.call_env(plugin, record);
        let uploads = Arc::new(crate::http::Uploads::with_checkpoint(checkpoint.clone()));
        scope.uploads = uploads.clone();
        if total > 0 {
            svc.uploads
                .lock()
                .expect("uploads")
                .insert(key.clone(), (uploads.clone(), total));
        }
        let dispatched = scope.dispatched.clone();
        let outcome = svc
            .host
            .publish_with_media(plugin, scope, &ctx, variant, run.media_paths.clone())
            .await;
        if total > 0 {
            svc.uploads.lock().expect("uploads").remove(&key);
        }
        // A message must not show what the checkpoint holds.
        let outcome = outcome.map(|r| r.map_err(|e| hide_in_error(e, &uploads)));
        let sent = dispatched.load(Ordering::SeqCst) > 0;
        match outcome {
            Ok(Ok(receipt)) => return (State::Published, Ok(receipt)),
            Ok(Err(CallError::AuthExpired(m)))
                if !refreshed && !matches!(plugin.manifest.auth.refresh, RefreshStyle::None) =>
            {
                // The platform refused the token, so nothing was posted.
                refreshed = true;
                match refresher
                    .ensure(id, Need::Replace(record.access_token.clone()))
                    .await
                {
                    Ok(fresh) => *record = fresh,
                    Err(e) => {
                        return (
                            State::Failed,
                            Err(("auth-expired".into(), format!("{m}; {e}"))),
                        );
                    }
                }
            }
            Ok(Err(CallError::RateLimited(r)))
                if r.retry_after_seconds.is_some_and(|s| {
                    waited + Duration::from_secs(s)
                        <= Duration::from_secs(cfg.max_rate_limit_wait_secs)
                }) =>
            {
                // A 429 means not posted: wait for this target only.
                let wait = Duration::from_secs(r.retry_after_seconds.unwrap_or(1).max(1));
                tracing::info!(account = %id, wait_s = wait.as_secs(), "rate limited; waiting before retrying");
                waited += wait;
                crate::metrics::rate_limit_wait(&id.platform, wait.as_secs_f64());
                tokio::time::sleep(wait).await;
            }
            Ok(Err(e))
                if !sent
                    && tries <= cfg.retries
                    && matches!(e, CallError::Transient(_) | CallError::OutcomeUnknown(_)) =>
            {
                // Nothing left the host: safe to try again.
                tokio::time::sleep(Duration::from_millis(200 * (1 << tries.min(6)))).await;
            }
            Ok(Err(e)) => {
                let state = match &e {
                    CallError::OutcomeUnknown(_) if sent => State::Unknown,
                    CallError::Transient(_) if sent && !plugin.manifest.idempotent_publish => {
                        State::Unknown
                    }
                    _ => State::Failed,
                };
                return (
                    state,
                    Err((call_error_kind(&e).into(), describe_call_error(&e))),
                );
            }
            Err(e) => {
                let state = if sent { State::Unknown } else { State::Failed };
                return (state, Err(("plugin".into(), e.to_string())));
            }
        }
    }
}

/// `--dry-run`: what each plugin would send, item by item, with nothing
/// sent. The broker records a request instead of sending it, so a plugin
/// never gets an answer: each item shows its first request, a thread item
/// is built with a marked stand-in for the id its parent would get, and
/// `not_shown` says plainly what cannot be shown and why.
pub async fn dry_run(svc: &Services, post: &ParsedPost, jobs: Vec<Job>) -> Report {
    // Media is read as for a real publish (a recorded request shows its
    // size), but nothing leaves.
    let media_paths = Arc::new(post.media_paths.clone());
    let items = 1 + post.file.thread.len();
    let futures = jobs.into_iter().map(|Job { id, plugin, record }| {
        let media_paths = media_paths.clone();
        async move {
            let mut r = TargetResult::new(&id);
            let record = match record {
                Ok(record) => record,
                Err(msg) => {
                    r.state = "failed".into();
                    r.error_kind = Some(UNREADABLE.into());
                    r.error = Some(msg);
                    return r;
                }
            };
            let name = plugin.manifest.name.clone();
            let stand_in = |index: usize| {
                format!("<id of {}, from {name}'s answer>", item_name(index))
            };
            let mut shown_any = false;
            for index in 0..items {
                let mut variant =
                    match post.file.variant(&id.platform, index, "dry-run", &post.media) {
                        Ok(v) => v,
                        Err(e) => {
                            r.error = Some(e.to_string());
                            return r;
                        }
                    };
                super::plan::post_fields(&plugin, &mut variant);
                super::plan::placeholder_public_urls(svc, &plugin, &mut variant);
                if index > 0 {
                    variant.reply_to = Some(stand_in(index - 1));
                    variant.thread_root = Some(stand_in(0));
                }
                let (ctx, mut scope) = svc.call_env(&plugin, &record);
                let recorder = Arc::new(Mutex::new(Vec::new()));
                scope.dry_run = Some(recorder.clone());
                let outcome = svc
                    .host
                    .publish_with_media(&plugin, scope, &ctx, &variant, media_paths.clone())
                    .await;
                let mut requests: Vec<RecordedRequest> =
                    recorder.lock().expect("dry-run log").clone();
                let said = || {
                    let msg = match &outcome {
                        Ok(Err(e)) => describe_call_error(e),
                        Err(e) => e.to_string(),
                        Ok(Ok(_)) => "the plugin sent nothing".into(),
                    };
                    scrub(&msg, &record.secrets())
                };
                if requests.is_empty() {
                    if index == 0 {
                        r.error = Some(said());
                    } else {
                        r.not_shown.push(format!(
                            "{}: not shown: {name} builds it from {name}'s answer for {} (its id), and a dry run gets no answer; with a stand-in for that id it sent nothing ({})",
                            item_name(index),
                            item_name(index - 1),
                            said()
                        ));
                    }
                    continue;
                }
                shown_any = true;
                for q in &mut requests {
                    q.item = index as u32;
                    if index > 0 {
                        q.note = Some(format!(
                            "`{}` stands for the id {name} gives {} when it is sent",
                            stand_in(index - 1),
                            item_name(index - 1)
                        ));
                    }
                }
                r.ok |= index == 0;
                r.requests.extend(requests);
            }
            if shown_any {
                r.not_shown.insert(
                    0,
                    format!(
                        "only the first request of each item is shown: a dry run sends nothing, so {name} gets no answer to build a next step from. Any steps after it — for media uploaded in steps, the rest of the upload and then the post itself — are not shown"
                    ),
                );
            }
            r.state = "dry-run".into();
            r
        }
    });
    Report {
        post: "dry-run".into(),
        scheduled_at: post.schedule,
        late: false,
        results: futures::future::join_all(futures).await,
    }
}

fn refresh_error_kind(e: &RefreshError) -> &'static str {
    match e {
        RefreshError::NeedsReconnect { .. } => "needs-reconnect",
        RefreshError::Transient { .. } => "auth-expired",
        _ => "store",
    }
}

/// A stable per-post, per-target, per-item key in UUID form (Mastodon wants
/// one): the same delivery always sends the same key.
fn idempotency_key(post: &str, target: &str, index: usize) -> String {
    let h = Sha256::digest(format!("{post}\n{target}\n{index}").as_bytes());
    let x = hex::encode(&h[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// `e` with the values of the call's checkpoint hidden.
fn hide_in_error(e: CallError, uploads: &crate::http::Uploads) -> CallError {
    let h = |m: String| uploads.redact(&m);
    match e {
        CallError::AuthExpired(m) => CallError::AuthExpired(h(m)),
        CallError::NeedsReconnect(m) => CallError::NeedsReconnect(h(m)),
        CallError::RateLimited(mut r) => {
            r.message = h(r.message);
            CallError::RateLimited(r)
        }
        CallError::Rejected(m) => CallError::Rejected(h(m)),
        CallError::Transient(m) => CallError::Transient(h(m)),
        CallError::OutcomeUnknown(m) => CallError::OutcomeUnknown(h(m)),
    }
}
