//! `outreach posts`: the outbox, for people.

use super::{EXIT_FAILED, PostsCmd, print_json, print_problems, print_report};
use crate::app::App;
use crate::error::bad;
use crate::outbox::{Delivery, Outbox, PostRow, State};
use crate::publish::RetryRefused;

pub async fn run(
    app: &std::sync::Arc<App>,
    cmd: Option<PostsCmd>,
    json: bool,
) -> anyhow::Result<i32> {
    match cmd {
        None => list(app, json),
        Some(PostsCmd::Show { id, json }) => show(app, &id, json),
        Some(PostsCmd::Cancel { id }) => {
            let outbox = Outbox::for_store(&app.cfg().config.store, &app.cfg().outbox)?;
            if outbox.post(&id)?.is_none() {
                return Err(bad!("there is no post `{id}`; `outreach posts` lists them"));
            }
            let n = outbox.cancel(&id)?;
            println!("cancelled {n} pending deliveries of `{id}`");
            Ok(0)
        }
        Some(PostsCmd::Retry { spec, force, json }) => retry(app, &spec, force, json).await,
        Some(PostsCmd::Due { json }) => {
            let reports = crate::publish::publish_due(app.services()).await?;
            if json {
                print_json(&reports)?;
                return Ok(if reports.iter().all(|r| r.results.iter().all(|t| t.ok)) {
                    0
                } else {
                    EXIT_FAILED
                });
            }
            if reports.is_empty() {
                println!("no posts are due");
            }
            let mut code = 0;
            for r in &reports {
                println!("post `{}`:", r.post);
                code = code.max(print_report(r, false, false)?);
            }
            Ok(code)
        }
    }
}

/// `outreach posts retry ID[/TARGET]`.
async fn retry(
    app: &std::sync::Arc<App>,
    spec: &str,
    force: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let parsed = {
        let shared = app.outbox()?;
        let outbox = shared.lock().expect("outbox");
        crate::publish::parse_retry_spec(&outbox, spec)?
    };
    let (id, target) = parsed.map_err(|e| bad!("{e}"))?;
    let done = match crate::publish::retry(app.services(), &id, target.as_deref(), force).await {
        Ok(Ok(done)) => done,
        Ok(Err(problems)) => {
            return print_problems(std::path::Path::new(&id), &problems, json);
        }
        Err(e) if e.is::<RetryRefused>() => return Err(bad!("{e}")),
        Err(e) => return Err(e),
    };
    if json {
        print_json(&done)?;
        return Ok(if done.report.results.iter().all(|t| t.ok) {
            0
        } else {
            EXIT_FAILED
        });
    }
    let item = |target: &str, index: u32| {
        if index > 0 {
            format!("{target} thread[{}]", index - 1)
        } else {
            target.to_string()
        }
    };
    println!("post `{id}`:");
    for r in &done.reopened {
        println!(
            "  retrying {} (was {}), as you asked",
            item(&r.target, r.index),
            r.from
        );
    }
    for s in &done.skipped {
        println!(
            "  left as it is: {}: {}",
            item(&s.target, s.index),
            s.reason
        );
    }
    print_report(&done.report, false, false)
}

fn list(app: &App, json: bool) -> anyhow::Result<i32> {
    app.outbox()?.lock().expect("outbox").settle_interrupted()?;
    print_list(crate::publish::journal::list(&*app.outbox()?)?, json)
}

/// Print the outbox as `GET /posts` returns it.
pub fn print_list(v: serde_json::Value, json: bool) -> anyhow::Result<i32> {
    if json {
        print_json(&v)?;
        return Ok(0);
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        post: PostRow,
        deliveries: Vec<Delivery>,
    }
    let all: Vec<(PostRow, Vec<Delivery>)> = serde_json::from_value::<Vec<Entry>>(v)?
        .into_iter()
        .map(|e| (e.post, e.deliveries))
        .collect();
    if all.is_empty() {
        println!("no posts yet; publish one with `outreach publish FILE`");
    }
    for (p, deliveries) in &all {
        let when = match p.scheduled_at {
            Some(t) => format!("scheduled {}", t.to_rfc3339()),
            None => format!("created {}", p.created_at.format("%Y-%m-%d %H:%M UTC")),
        };
        println!("{}  ({when})", p.id);
        for d in deliveries.iter().filter(|d| d.index == 0) {
            let thread = deliveries
                .iter()
                .filter(|t| t.target == d.target && t.index > 0)
                .count();
            println!(
                "  {:<24} {:<10} {}{}",
                d.target,
                d.state.to_string(),
                match d.state {
                    State::Published => d.url.clone().or(d.platform_id.clone()).unwrap_or_default(),
                    _ => d.error.clone().unwrap_or_default(),
                },
                if thread > 0 {
                    format!(" (+{thread} in thread)")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(0)
}

fn show(app: &App, id: &str, json: bool) -> anyhow::Result<i32> {
    let outbox = Outbox::for_store(&app.cfg().config.store, &app.cfg().outbox)?;
    let Some(post) = outbox.post(id)? else {
        return Err(bad!("there is no post `{id}`; `outreach posts` lists them"));
    };
    let deliveries = outbox.deliveries(id)?;
    let attempts = outbox.attempts(id)?;
    if json {
        print_json(
            &serde_json::json!({ "post": post, "deliveries": deliveries, "attempts": attempts }),
        )?;
        return Ok(0);
    }
    println!("{} from {}", post.id, post.path);
    for d in &deliveries {
        println!(
            "  {}{}: {} {}{}",
            d.target,
            if d.index > 0 {
                format!(" thread[{}]", d.index - 1)
            } else {
                String::new()
            },
            d.state,
            d.url
                .clone()
                .or(d.platform_id.clone())
                .or(d.error.clone())
                .unwrap_or_default(),
            match d.user_retries {
                0 => String::new(),
                1 => " (retried by the user once)".into(),
                n => format!(" (retried by the user {n} times)"),
            }
        );
        for a in attempts
            .iter()
            .filter(|a| a.target == d.target && a.index == d.index)
        {
            println!(
                "      attempt {} → {}: {} {}{}",
                a.started_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                a.finished_at
                    .map(|t| t.format("%H:%M:%S%.3f").to_string())
                    .unwrap_or_else(|| "…".into()),
                a.outcome.as_deref().unwrap_or("in flight"),
                a.detail.as_deref().unwrap_or(""),
                a.user_retry
                    .as_deref()
                    .map(|from| format!(" (retried by the user; it was {from})"))
                    .unwrap_or_default()
            );
        }
        if d.user_retries > 0 && matches!(d.state, State::Queued | State::Pending) {
            println!("      re-opened by the user; waiting to be sent");
        }
        if d.final_ && matches!(d.state, State::Failed | State::Cancelled) {
            println!(
                "      not sent again unless you ask: `outreach posts retry {}/{}`",
                post.id, d.target
            );
        }
    }
    Ok(0)
}
