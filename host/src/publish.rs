//! Publishing a post file to its targets.
//!
//! Owns: the post file format (TOML), turning it into each platform's
//! variant, validating every target before anything is sent, and the
//! concurrent fan-out with one classified result per target. `--dry-run`
//! runs the same path with the broker recording requests instead of sending.
//!
//! Never: lets one failing platform stop the others, or prints a secret.
//! The durable exactly-once outbox, media, threads and scheduling are the
//! publishing issue (#4).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accounts::{App, bad, call_error_kind, describe_call_error};
use crate::http::RecordedRequest;
use crate::plugin::LoadedPlugin;
use crate::plugin::wit::types::{CallError, RefreshStyle};
use crate::plugin::wit::types::{Pair, Post};
use crate::schedule::{Need, RefreshError, Refresher};
use crate::secret::scrub;
use crate::store::{AccountId, Record};

/// A post file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostFile {
    /// A stable id; defaults to a hash of the file's path.
    pub id: Option<String>,
    pub text: String,
    pub title: Option<String>,
    pub link: Option<String>,
    /// Targets: `x`, `linkedin/company`, `mastodon/*`.
    pub to: Vec<String>,
    /// Per-platform overrides: `[override.x] text = "…"`. Keys other than
    /// `text`, `title` and `link` are platform-specific fields (`subreddit`,
    /// `visibility`) handed to the plugin.
    #[serde(default, rename = "override")]
    pub overrides: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

impl PostFile {
    pub fn read(path: &Path) -> anyhow::Result<(Self, String)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the post file {}", path.display()))?;
        let post: PostFile = toml::from_str(&text).map_err(|e| {
            bad!(
                "the post file {} is not valid: {}",
                path.display(),
                e.to_string()
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })?;
        if post.to.is_empty() {
            return Err(bad!(
                "the post file {} has no targets; add `to = [\"x\", …]`",
                path.display()
            ));
        }
        Ok((post, text))
    }

    /// This post as platform `platform` sees it.
    pub fn variant(&self, platform: &str, key: &str) -> anyhow::Result<Post> {
        let mut post = Post {
            text: self.text.clone(),
            title: self.title.clone(),
            link: self.link.clone(),
            media: Vec::new(),
            reply_to: None,
            thread_root: None,
            extra: Vec::new(),
            idempotency_key: key.to_string(),
        };
        if let Some(o) = self.overrides.get(platform) {
            for (k, v) in o {
                let s = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                        v.to_string()
                    }
                    _ => {
                        return Err(bad!(
                            "override.{platform}.{k} must be a string, number or boolean"
                        ));
                    }
                };
                match k.as_str() {
                    "text" => post.text = s,
                    "title" => post.title = Some(s),
                    "link" => post.link = Some(s),
                    _ => post.extra.push(Pair {
                        name: k.clone(),
                        value: s,
                    }),
                }
            }
        }
        Ok(post)
    }
}

/// One target's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub target: String,
    pub ok: bool,
    pub post_id: Option<String>,
    pub url: Option<String>,
    /// `auth-expired`, `rate-limited`, `rejected`, …, or `plugin` for a
    /// plugin that crashed.
    pub error_kind: Option<String>,
    pub error: Option<String>,
    /// With `--dry-run`: the requests the plugin would send.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RecordedRequest>,
}

/// A problem found by validation, with where.
#[derive(Debug, Clone, Serialize)]
pub struct TargetProblem {
    pub target: String,
    pub field: String,
    pub message: String,
}

type Job = (AccountId, Arc<LoadedPlugin>, Record, Post);

/// Only validate `file` against every target (`publish --check`).
pub async fn check_file(
    app: &App,
    path: &Path,
) -> anyhow::Result<Result<Vec<TargetResult>, Vec<TargetProblem>>> {
    Ok(prepare(app, path).await?.map(|jobs| {
        jobs.into_iter()
            .map(|(id, ..)| TargetResult {
                target: id.to_string(),
                ok: true,
                post_id: None,
                url: None,
                error_kind: None,
                error: None,
                requests: Vec::new(),
            })
            .collect()
    }))
}

/// Resolve and validate every target of `path`.
async fn prepare(app: &App, path: &Path) -> anyhow::Result<Result<Vec<Job>, Vec<TargetProblem>>> {
    let (post, raw) = PostFile::read(path)?;
    let stable = post.id.clone().unwrap_or_else(|| {
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string()
    });
    let content_hash = hex::encode(Sha256::digest(raw.as_bytes()));

    // Resolve every target first: an unknown platform or missing account
    // fails the whole file before anything is sent.
    let mut targets: Vec<AccountId> = Vec::new();
    for t in &post.to {
        for id in app
            .resolve_target(t)
            .with_context(|| format!("in {}, target `{t}`", path.display()))?
        {
            if !targets.contains(&id) {
                targets.push(id);
            }
        }
    }

    let store = app.store()?;
    let mut jobs = Vec::new();
    let mut problems = Vec::new();
    for id in targets {
        let plugin = app.host.get(&id.platform)?;
        let record = store.load(&id)?;
        let key = idempotency_key(&stable, &content_hash, &id);
        let variant = post.variant(&id.platform, &key)?;
        let account = App::account_view(&record);
        match app.host.validate(&plugin, &variant, Some(&account)).await {
            Ok(found) => problems.extend(found.into_iter().map(|p| TargetProblem {
                target: id.to_string(),
                field: p.field,
                message: p.message,
            })),
            Err(e) => problems.push(TargetProblem {
                target: id.to_string(),
                field: "plugin".into(),
                message: e.to_string(),
            }),
        }
        jobs.push((id, plugin, record, variant));
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    Ok(Ok(jobs))
}

/// Validate `file` against every target; publish only if all pass.
pub async fn publish_file(
    app: &Arc<App>,
    path: &Path,
    dry_run: bool,
) -> anyhow::Result<Result<Vec<TargetResult>, Vec<TargetProblem>>> {
    let jobs = match prepare(app, path).await? {
        Ok(jobs) => jobs,
        Err(problems) => return Ok(Err(problems)),
    };
    let refresher = Refresher::new(app.clone())?;
    let (app_ref, refresher) = (&**app, &refresher);
    let futures = jobs
        .into_iter()
        .map(|(id, plugin, record, variant)| async move {
            let mut r = TargetResult {
                target: id.to_string(),
                ok: false,
                post_id: None,
                url: None,
                error_kind: None,
                error: None,
                requests: Vec::new(),
            };
            // A token that has expired is refreshed first (once, however
            // many publishes want it).
            let mut record = if dry_run {
                record
            } else {
                match refresher.ensure(&id, Need::Usable).await {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        r.error_kind = Some(refresh_error_kind(&e).into());
                        r.error = Some(scrub(&e.to_string(), &record.secrets()));
                        return r;
                    }
                }
            };
            let mut retried = false;
            let outcome = loop {
                let (ctx, mut scope) = app_ref.call_env(&plugin, &record);
                let recorder = dry_run.then(|| Arc::new(Mutex::new(Vec::new())));
                scope.dry_run = recorder.clone();
                let outcome = app_ref.host.publish(&plugin, scope, &ctx, &variant).await;
                r.requests = recorder
                    .map(|r| r.lock().expect("dry-run log").clone())
                    .unwrap_or_default();
                // The platform said the token is no longer good, so nothing
                // was posted: refresh and try once more.
                if let Ok(Err(CallError::AuthExpired(_))) = &outcome
                    && !dry_run
                    && !retried
                    && !matches!(plugin.manifest.auth.refresh, RefreshStyle::None)
                {
                    retried = true;
                    match refresher
                        .ensure(&id, Need::Replace(record.access_token.clone()))
                        .await
                    {
                        Ok(fresh) => {
                            record = fresh;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(account = %id, "{e}");
                        }
                    }
                }
                break outcome;
            };
            let secrets = record.secrets();
            let clean = |s: String| scrub(&s, &secrets);
            match outcome {
                Ok(Ok(receipt)) => {
                    r.ok = true;
                    r.post_id = Some(receipt.id);
                    r.url = receipt.url;
                }
                Ok(Err(e)) if dry_run => {
                    // The broker refused to send; what matters is what would
                    // have been sent.
                    r.ok = !r.requests.is_empty();
                    if !r.ok {
                        r.error_kind = Some(call_error_kind(&e).into());
                        r.error = Some(clean(describe_call_error(&e)));
                    }
                }
                Ok(Err(e)) => {
                    r.error_kind = Some(call_error_kind(&e).into());
                    r.error = Some(clean(describe_call_error(&e)));
                }
                Err(e) => {
                    r.error_kind = Some("plugin".into());
                    r.error = Some(clean(e.to_string()));
                }
            }
            r
        });
    Ok(Ok(futures::future::join_all(futures).await))
}

fn refresh_error_kind(e: &RefreshError) -> &'static str {
    match e {
        RefreshError::NeedsReconnect { .. } => "needs-reconnect",
        RefreshError::Transient { .. } => "auth-expired",
        _ => "store",
    }
}

/// A stable per-post, per-target key in UUID form (Mastodon wants a UUID).
fn idempotency_key(stable: &str, content: &str, id: &AccountId) -> String {
    let h = Sha256::digest(format!("{stable}\n{content}\n{id}").as_bytes());
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
