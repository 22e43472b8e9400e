//! Stage 2, plan: a parsed post becomes the list of deliveries to make —
//! every target resolved to stored accounts, each platform's variant of
//! every item built and validated by its plugin — or the problems that stop
//! it, all of them at once, before anything is sent.
//!
//! Never: sends, or writes to the journal. An account whose record cannot
//! be read is planned as a delivery that fails on its own, so the post
//! still goes to the others.

use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;

use super::parse::ParsedPost;
use super::settle::TargetResult;
use crate::contract::wit::types::{FieldType, Pair, Post, PostField, Problem};
use crate::plugin::LoadedPlugin;
use crate::services::{Services, account_view};
use crate::store::{AccountId, Record};

/// A problem found by validation, with where.
#[derive(Debug, Clone, Serialize)]
pub struct TargetProblem {
    pub target: String,
    pub field: String,
    pub message: String,
}

/// A target resolved and validated.
pub struct Job {
    pub id: AccountId,
    pub plugin: Arc<LoadedPlugin>,
    /// The account's record, or why it cannot be read (that target fails,
    /// the others go out).
    pub record: Result<Record, String>,
}

/// What a user needs to know when the record of `id`, a target of a post,
/// cannot be read: which account, what is wrong, what to do.
fn unreadable(id: &AccountId, e: &crate::store::StoreError) -> String {
    use crate::store::StoreError as E;
    let again = format!(
        "store the account again (`outreach accounts add {p} --account {a} --replace`, with its --set settings, or `outreach connect {p} --account {a}`)",
        p = id.platform,
        a = id.account
    );
    let (cause, fix) = match e {
        E::WrongKey { .. } => (
            " Its file was encrypted for another identity (another machine's, or a key since replaced).",
            format!("put back the identity file it was written with (from a backup), or {again}"),
        ),
        E::Corrupt { .. } => ("", format!("restore its file from a backup, or {again}")),
        _ => ("", again),
    };
    format!(
        "nothing was sent to {id}: its stored account cannot be read ({e}).{cause} To send the post there too, {fix}, then publish the post again: what already went out is not sent twice. The post's other targets are not held back by it"
    )
}

/// `[override.PLATFORM]` tables for platforms the post does not go to, as
/// problems that name the platforms it does go to.
fn stray_problems(svc: &Services, post: &ParsedPost, targets: &[AccountId]) -> Vec<TargetProblem> {
    let mut platforms: Vec<&str> = Vec::new();
    for t in targets {
        if !platforms.contains(&t.platform.as_str()) {
            platforms.push(&t.platform);
        }
    }
    let goes_to = platforms.join(", ");
    let cfg = svc.cfg();
    let known = svc
        .host
        .known_ids(&cfg.plugins_dir, cfg.config.plugins.built_in);
    post.stray_overrides
        .iter()
        .map(|(field, platform)| {
            let guess = nearest(platform, platforms.iter().copied())
                .or_else(|| nearest(platform, known.iter().map(String::as_str)))
                .map(|g| format!(" (did you mean `{g}`?)"))
                .unwrap_or_default();
            let message = if known.contains(platform) {
                format!(
                    "this post does not go to {platform}{guess}, so these fields would be ignored; it goes to {goes_to}. Add {platform} to `to`, or remove or rename the table"
                )
            } else {
                format!(
                    "there is no platform `{platform}`{guess}, so these fields would be ignored; this post goes to {goes_to}. Name one of those"
                )
            };
            TargetProblem {
                target: "post".into(),
                field: field.clone(),
                message,
            }
        })
        .collect()
}

/// The name among `names` closest to `word` by edits, if it is close.
fn nearest<'a>(word: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let here = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb))
                    .min(row[j] + 1)
                    .min(here + 1);
                prev = here;
            }
        }
        row[b.len()]
    }
    names
        .filter(|n| *n != word)
        .map(|n| (distance(word, n), n))
        .filter(|(d, n)| *d <= 2.max(n.chars().count() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Resolve every target and validate every item; nothing is sent. The
/// deliveries to make, or every problem found.
pub async fn plan(
    svc: &Services,
    post: &ParsedPost,
) -> anyhow::Result<Result<Vec<Job>, Vec<TargetProblem>>> {
    let path = &post.path;
    let mut targets: Vec<AccountId> = Vec::new();
    let stored = svc.stored_for(&post.file.to)?;
    for t in &post.file.to {
        for id in svc
            .resolve_target_in(t, &stored)
            .with_context(|| format!("in {}, target `{t}`", path.display()))?
        {
            if !targets.contains(&id) {
                targets.push(id);
            }
        }
    }
    let store = svc.store()?;
    let mut jobs = Vec::new();
    let mut problems = stray_problems(svc, post, &targets);
    let items = 1 + post.file.thread.len();
    for id in targets {
        let plugin = svc.host.get(&id.platform)?;
        // An account whose record cannot be read fails on its own; the
        // post still goes to the others.
        let record = match store.load(&id) {
            Ok(r) => r,
            Err(e) => {
                let record = Err(unreadable(&id, &e));
                jobs.push(Job { id, plugin, record });
                continue;
            }
        };
        let account = account_view(&record);
        let mut first: Vec<(String, String)> = Vec::new();
        for index in 0..items {
            let mut variant = post
                .file
                .variant(&id.platform, index, "check", &post.media)?;
            if index > 0 {
                variant.reply_to = Some("(parent)".into());
            }
            // The manifest's post fields (checked, defaults filled), and
            // the plugin's own rules.
            let declared = post_fields(&plugin, &mut variant);
            placeholder_public_urls(svc, &plugin, &mut variant);
            let found = match svc.host.validate(&plugin, &variant, Some(&account)).await {
                // The plugin's word on a field wins (it knows its rules in
                // detail); the host adds what the plugin did not report.
                Ok(mut found) => {
                    for d in declared {
                        if !found.iter().any(|p| p.field == d.field) {
                            found.push(d);
                        }
                    }
                    found
                }
                Err(e) => {
                    problems.push(TargetProblem {
                        target: id.to_string(),
                        field: "plugin".into(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            for p in found {
                if index == 0 {
                    first.push((p.field.clone(), p.message.clone()));
                    problems.push(TargetProblem {
                        target: id.to_string(),
                        field: p.field,
                        message: p.message,
                    });
                    continue;
                }
                // A field the item takes from the post is reported once,
                // at the post, unless it is wrong only for this item.
                let prefix = format!("override.{}.", id.platform);
                let inherited = p
                    .field
                    .strip_prefix(&prefix)
                    .is_some_and(|k| post.file.inherits(&id.platform, index, k));
                if inherited && first.contains(&(p.field.clone(), p.message.clone())) {
                    continue;
                }
                let message = if inherited {
                    format!(
                        "{} (thread[{}] takes it from the post's [override.{}]; give the item its own value in [thread.override.{}])",
                        p.message,
                        index - 1,
                        id.platform,
                        id.platform
                    )
                } else {
                    p.message
                };
                problems.push(TargetProblem {
                    target: id.to_string(),
                    field: format!("thread[{}].{}", index - 1, p.field),
                    message,
                });
            }
        }
        jobs.push(Job {
            id,
            plugin,
            record: Ok(record),
        });
    }
    if problems.is_empty() {
        Ok(Ok(jobs))
    } else {
        Ok(Err(problems))
    }
}

/// The error kind of a target whose account record cannot be read.
pub const UNREADABLE: &str = "account-unreadable";

/// What `--check` reports for a plan: every target valid, except those
/// whose stored account cannot be read.
pub fn check_results(jobs: &[Job]) -> Vec<TargetResult> {
    jobs.iter()
        .map(|j| {
            let mut r = TargetResult::new(&j.id);
            match &j.record {
                Ok(_) => {
                    r.ok = true;
                    r.state = "valid".into();
                }
                Err(msg) => {
                    r.state = "failed".into();
                    r.error_kind = Some(UNREADABLE.into());
                    r.error = Some(msg.clone());
                }
            }
            r
        })
        .collect()
}

/// Check `post`'s platform fields against the manifest's declared post
/// fields and fill in their defaults. Each problem names the field as the
/// post file does (`override.mastodon.visibility`). A plugin built against
/// contract 0.1.0 declares none and checks its fields itself, so its posts
/// are left as they are.
pub fn post_fields(plugin: &LoadedPlugin, post: &mut Post) -> Vec<Problem> {
    let m = &plugin.manifest;
    if plugin.contract == "0.1.0" {
        return Vec::new();
    }
    let at = |name: &str| format!("override.{}.{name}", m.id);
    let mut problems = Vec::new();
    for p in &post.extra {
        let Some(f) = m.post_fields.iter().find(|f| f.name == p.name) else {
            let known: Vec<&str> = m.post_fields.iter().map(|f| f.name.as_str()).collect();
            problems.push(Problem {
                field: at(&p.name),
                message: format!(
                    "{} has no field `{}` ({})",
                    m.name,
                    p.name,
                    if known.is_empty() {
                        "it takes none besides text, title and link".to_string()
                    } else {
                        format!("its fields: {}", known.join(", "))
                    }
                ),
            });
            continue;
        };
        if let Err(why) = field_value(f, &p.value) {
            problems.push(Problem {
                field: at(&p.name),
                message: why,
            });
        }
    }
    for f in &m.post_fields {
        if post.extra.iter().any(|p| p.name == f.name) {
            continue;
        }
        match &f.default_value {
            Some(d) => post.extra.push(Pair {
                name: f.name.clone(),
                value: d.clone(),
            }),
            None if f.required => problems.push(Problem {
                field: at(&f.name),
                message: format!(
                    "{} needs `{}` ({}); set it in [override.{}]",
                    m.name, f.name, f.description, m.id
                ),
            }),
            None => {}
        }
    }
    problems
}

/// Why `value` does not fit field `f`, if it does not.
fn field_value(f: &PostField, value: &str) -> Result<(), String> {
    let shown: String = value.chars().take(60).collect();
    match f.kind {
        FieldType::Text => Ok(()),
        FieldType::Integer => value
            .trim()
            .parse::<i64>()
            .map(|_| ())
            .map_err(|_| format!("must be a whole number, not {shown:?}")),
        FieldType::Boolean => match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("must be true or false, not {shown:?}")),
        },
        FieldType::Choice => {
            if f.allowed.iter().any(|a| a == value) {
                Ok(())
            } else {
                Err(format!(
                    "must be one of {}, not {shown:?}",
                    f.allowed.join(", ")
                ))
            }
        }
        FieldType::Url => match url::Url::parse(value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
            _ => Err(format!("must be an http(s) URL, not {shown:?}")),
        },
    }
}

/// Whether `plugin`'s platform fetches media of `kind` from a public URL.
fn fetches(plugin: &LoadedPlugin, kind: crate::contract::wit::types::MediaKind) -> bool {
    plugin
        .manifest
        .content
        .media
        .iter()
        .any(|r| r.kind == kind && r.needs_public_url)
}

/// For checks and dry runs: the address each attachment the platform
/// fetches itself would be served at (`[media] public_base_url`), so the
/// plugin sees it has one. Nothing is shared.
pub fn placeholder_public_urls(svc: &Services, plugin: &LoadedPlugin, variant: &mut Post) {
    let Some(base) = svc.cfg().config.media.public_base_url.clone() else {
        return;
    };
    for m in &mut variant.media {
        if m.public_url.is_none() && fetches(plugin, m.kind) {
            m.public_url = Some(crate::public_media::placeholder_url(&base, &m.file_name));
        }
    }
}

/// Share each attachment of `variant` that the platform fetches itself and
/// that has no `public_url` of its own on the media listener; the shares
/// end when the returned values are dropped (the delivery settled).
pub async fn share_public_media(
    svc: &Services,
    plugin: &LoadedPlugin,
    variant: &mut Post,
    paths: &[std::path::PathBuf],
) -> anyhow::Result<Vec<crate::public_media::Share>> {
    let cfg = svc.cfg().config.media.clone();
    let mut shares = Vec::new();
    for m in &mut variant.media {
        if m.public_url.is_some() || !fetches(plugin, m.kind) {
            continue;
        }
        if cfg.public_base_url.is_none() {
            anyhow::bail!(
                "{} fetches {} from a public URL: set `public_url` on it in the post file, or set `[media] public_base_url` so outreach serves it",
                plugin.manifest.name,
                m.file_name
            );
        }
        let path = paths
            .get(m.handle as usize)
            .ok_or_else(|| anyhow::anyhow!("no file for attachment {}", m.handle))?;
        let share = svc
            .public_media
            .share(&cfg, path, &m.mime_type, &m.file_name)
            .await?;
        m.public_url = Some(share.url.clone());
        shares.push(share);
    }
    Ok(shares)
}
