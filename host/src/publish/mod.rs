//! Publishing posts: exactly once per platform, as a pipeline a reader can
//! follow from top to bottom. One post goes
//!
//! 1. [`parse`]: a post file or an API post → a [`ParsedPost`] (fields,
//!    schedule, media resolved and confined);
//! 2. [`plan`]: → the deliveries to make (targets resolved, every item's
//!    variant validated by its plugin), or every problem at once;
//! 3. [`journal`]: → registered in the outbox, each delivery claimed before
//!    it is sent;
//! 4. [`deliver`]: → sent, one target at a time per platform slot, with
//!    refreshes, retries and rate-limit waits;
//! 5. [`settle`]: → outcomes recorded and reported.
//!
//! This module holds the entry points the front ends call; each is those
//! stages in order.
//!
//! Never: lets one failing platform stop the others, re-sends a post a
//! platform has confirmed, or prints a secret.

pub mod deliver;
pub mod journal;
pub mod measure;
pub mod parse;
pub mod plan;
pub mod settle;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use deliver::recheck_processing;
pub use journal::{RetryRefused, parse_retry_spec, retry_target};
pub use parse::{ParsedPost, PostFile, from_json};
pub use plan::TargetProblem;
pub use settle::{Report, RetryReport, Skipped, TargetResult, item_name};

use crate::services::Services;

/// How to publish.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub dry_run: bool,
    /// Publish changed content under the same file as a new post.
    pub new: bool,
}

/// What validation says: each target's result, or every problem found.
pub type Checked = Result<Vec<TargetResult>, Vec<TargetProblem>>;
/// What publishing says: the report, or every problem that stopped it
/// before anything was sent.
pub type Published = Result<Report, Vec<TargetProblem>>;

/// Only validate a post file against every target (`publish --check`).
pub async fn check_file(svc: &Services, path: &Path) -> anyhow::Result<Checked> {
    let post = PostFile::load(path, svc.cfg().media_dir.as_deref())?;
    check(svc, &post).await
}

/// [`from_json`], then only validate.
pub async fn check_json(
    svc: &Services,
    post: &serde_json::Value,
    base: Option<&Path>,
) -> anyhow::Result<Checked> {
    let post = from_json(post, base, svc.cfg().media_dir.as_deref())?;
    check(svc, &post).await
}

/// [`from_json`], then only validate, and measure every target's text by
/// its platform's counting rule (the composer's live counters).
pub async fn check_and_measure_json(
    svc: &Services,
    post: &serde_json::Value,
    base: Option<&Path>,
) -> anyhow::Result<(Checked, Vec<measure::Measure>)> {
    let post = from_json(post, base, svc.cfg().media_dir.as_deref())?;
    let checked = check(svc, &post).await?;
    Ok((checked, measure::measure(svc, &post)))
}

/// Parse, plan and stop: what `--check` shows.
async fn check(svc: &Services, post: &ParsedPost) -> anyhow::Result<Checked> {
    Ok(plan::plan(svc, post)
        .await?
        .map(|jobs| plan::check_results(&jobs)))
}

/// Validate, register in the outbox, and — unless it is scheduled for
/// later — deliver a post file.
pub async fn publish_file(
    svc: &Arc<Services>,
    path: &Path,
    opts: Options,
) -> anyhow::Result<Published> {
    let post = PostFile::load(path, svc.cfg().media_dir.as_deref())?;
    publish_parsed(svc, post, opts).await
}

/// [`from_json`], then publish.
pub async fn publish_json(
    svc: &Arc<Services>,
    post: &serde_json::Value,
    base: Option<&Path>,
    opts: Options,
) -> anyhow::Result<Published> {
    let post = from_json(post, base, svc.cfg().media_dir.as_deref())?;
    publish_parsed(svc, post, opts).await
}

/// Plan, register and deliver a post that has been parsed.
pub async fn publish_parsed(
    svc: &Arc<Services>,
    post: ParsedPost,
    opts: Options,
) -> anyhow::Result<Published> {
    let jobs = match plan::plan(svc, &post).await? {
        Ok(jobs) => jobs,
        Err(problems) => return Ok(Err(problems)),
    };
    if opts.dry_run {
        return Ok(Ok(deliver::dry_run(svc, &post, jobs).await));
    }
    let outbox = svc.outbox()?;
    let row = journal::register(&outbox, &post, &jobs, opts.new)?;
    Ok(Ok(deliver::deliver(svc, &row, &post, jobs, outbox).await?))
}

/// Publish every scheduled post whose time has come (the daemon calls this
/// on a timer; `outreach posts due` runs it once). Posts that fell due while
/// nothing was running are published now, once, and reported late.
pub async fn publish_due(svc: &Arc<Services>) -> anyhow::Result<Vec<Report>> {
    publish_due_while(svc, || true).await
}

/// [`publish_due`], checking `go_on` before each post (the daemon stops
/// starting new posts when it is asked to shut down).
pub async fn publish_due_while(
    svc: &Arc<Services>,
    go_on: impl Fn() -> bool,
) -> anyhow::Result<Vec<Report>> {
    let outbox = svc.outbox()?;
    let mut reports = Vec::new();
    for row in journal::due(&outbox)? {
        if !go_on() {
            break;
        }
        let path = PathBuf::from(&row.path);
        let post = PostFile::parse(&path, row.source.clone(), svc.cfg().media_dir.as_deref())?;
        let jobs = match plan::plan(svc, &post).await? {
            Ok(j) => j,
            Err(problems) => {
                for p in problems {
                    tracing::error!(post = %row.id, target = %p.target, field = %p.field, "{}", p.message);
                }
                continue;
            }
        };
        outbox.lock().expect("outbox").release(&row.id)?;
        reports.push(deliver::deliver(svc, &row, &post, jobs, outbox.clone()).await?);
    }
    Ok(reports)
}

/// The user asks to send post `id` again (`outreach posts retry ID[/TARGET]`,
/// `POST /posts/{id}/retry`): its `failed` and `cancelled` deliveries —
/// on `target` only, if given — are re-opened and sent now, or queued if
/// the post is scheduled for later. A `published` delivery is never sent
/// again; an `unknown` one only with `force` (the platform may then show
/// the post twice). The post is validated again first; nothing is re-opened
/// if that fails.
pub async fn retry(
    svc: &Arc<Services>,
    id: &str,
    target: Option<&str>,
    force: bool,
) -> anyhow::Result<Result<RetryReport, Vec<TargetProblem>>> {
    let outbox = svc.outbox()?;
    let (row, deliveries) = journal::find_for_retry(&outbox, id, target)?;
    let resumable = |target: &str, index: u32| {
        journal::StoredCheckpoint::new(svc, &row.id, target, index as usize).exists()
    };
    let choice = journal::choose_retry(&row, &deliveries, force, &resumable)?;
    let mut post = PostFile::parse(
        &PathBuf::from(&row.path),
        row.source.clone(),
        svc.cfg().media_dir.as_deref(),
    )?;
    post.file.to = choice.targets.clone();
    let jobs = match plan::plan(svc, &post).await? {
        Ok(jobs) => jobs,
        Err(problems) => return Ok(Err(problems)),
    };
    let reopened = outbox
        .lock()
        .expect("outbox")
        .reopen(&row, &choice.reopen)?;
    let mut report = deliver::deliver(svc, &row, &post, jobs, outbox).await?;
    report
        .results
        .retain(|r| choice.targets.contains(&r.target));
    report.late = false;
    Ok(Ok(RetryReport {
        report,
        reopened,
        skipped: choice.skipped,
    }))
}
