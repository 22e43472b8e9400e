//! Publishing post files: exactly once per platform.
//!
//! Owns: the post file format (TOML: text, targets, per-platform overrides,
//! media, a link, a schedule, a thread), turning it into each platform's
//! variant, validating every target and thread item before anything is
//! sent, and delivery through the [`crate::outbox`]: every target
//! concurrently (bounded per platform), each thread item in order with
//! explicit parent ids, a 429 waited out for that target only, sends that
//! never left the host retried, and anything whose outcome is unknown
//! reported — re-sent only where the platform honours an idempotency key.
//! `--dry-run` runs the same path with the broker recording requests
//! instead of sending them.
//!
//! Never: lets one failing platform stop the others, re-sends a post a
//! platform has confirmed, or prints a secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accounts::{App, bad, call_error_kind, describe_call_error};
use crate::http::RecordedRequest;
use crate::outbox::{Outbox, PostRow, State};
use crate::plugin::LoadedPlugin;
use crate::plugin::wit::types::{CallError, Media, MediaKind, Pair, Post, RefreshStyle};
use crate::schedule::{Need, RefreshError, Refresher};
use crate::secret::scrub;
use crate::store::{AccountId, Record};

/// A post file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostFile {
    /// A stable id; defaults to the file's path.
    pub id: Option<String>,
    pub text: String,
    pub title: Option<String>,
    pub link: Option<String>,
    /// Targets: `x`, `linkedin/company`, `mastodon/*`.
    pub to: Vec<String>,
    /// When to publish, as an RFC 3339 instant (stored in UTC).
    pub schedule: Option<String>,
    /// Attachments by local path (relative to the post file).
    #[serde(default)]
    pub media: Vec<MediaEntry>,
    /// Follow-up posts, published in order as replies.
    #[serde(default)]
    pub thread: Vec<ThreadItem>,
    /// Per-platform overrides: `[override.x] text = "…"`. Keys other than
    /// `text`, `title` and `link` are platform-specific fields (`subreddit`,
    /// `visibility`) handed to the plugin.
    #[serde(default, rename = "override")]
    pub overrides: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaEntry {
    pub path: PathBuf,
    pub alt: Option<String>,
    /// Where platforms that fetch media themselves can find it.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadItem {
    pub text: String,
    #[serde(default, rename = "override")]
    pub overrides: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

/// A post file, read and checked.
pub struct Loaded {
    pub file: PostFile,
    pub source: String,
    pub path: PathBuf,
    pub schedule: Option<DateTime<Utc>>,
    pub media: Vec<Media>,
    pub media_paths: Vec<PathBuf>,
    /// `[override.PLATFORM]` tables (`override.mastodn`,
    /// `thread[0].override.linkedin`) for a platform the file's `to` does
    /// not name, with that platform: typos, reported before anything is
    /// sent rather than silently ignored.
    pub stray_overrides: Vec<(String, String)>,
}

impl PostFile {
    /// Read and check a post file: syntax, targets, schedule, media files.
    /// Media may live in the post file's folder or in `media_root`.
    pub fn load(path: &Path, media_root: Option<&Path>) -> anyhow::Result<Loaded> {
        let source = crate::config::read_regular_text(path).map_err(|e| {
            bad!(
                "cannot read the post file {}: {}",
                path.display(),
                io_reason(&e)
            )
        })?;
        Self::parse(path, source, media_root)
    }

    /// Check a post given as text. `path` is where it came from (a post
    /// file, or an API post's place in the posts folder): relative media
    /// paths are relative to its folder, and media must be inside that
    /// folder or `media_root`.
    pub fn parse(path: &Path, source: String, media_root: Option<&Path>) -> anyhow::Result<Loaded> {
        let label = format!("the post file {}", path.display());
        Self::parse_as(path, &label, source, media_root)
    }

    /// [`PostFile::parse`], with messages that call the post `label`.
    fn parse_as(
        path: &Path,
        label: &str,
        source: String,
        media_root: Option<&Path>,
    ) -> anyhow::Result<Loaded> {
        let file: PostFile = toml::from_str(&source).map_err(|e| {
            bad!(
                "{label} is not valid: {}",
                crate::config::describe_toml_error(&source, &e)
            )
        })?;
        if file.to.is_empty() {
            return Err(bad!("{label} has no targets; add `to = [\"x\", …]`"));
        }
        let schedule = match &file.schedule {
            None => None,
            Some(s) => Some(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|e| {
                        bad!(
                            "in {label}, schedule = {s:?} is not an RFC 3339 instant such as 2026-12-01T09:00:00+01:00 ({e})"
                        )
                    })?
                    .with_timezone(&Utc),
            ),
        };
        let base = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let roots: Vec<PathBuf> = std::iter::once(base)
            .chain(media_root)
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .collect();
        let mut media = Vec::new();
        let mut media_paths = Vec::new();
        for (i, m) in file.media.iter().enumerate() {
            let full = if m.path.is_absolute() {
                m.path.clone()
            } else {
                base.join(&m.path)
            };
            let at = || format!("in {label}, media[{i}] {}", m.path.display());
            let (real, size, kind, mime) =
                check_media(&full, &roots).map_err(|e| bad!("{}: {e}", at()))?;
            media.push(Media {
                handle: i as u32,
                kind,
                mime_type: mime.into(),
                size,
                alt_text: m.alt.clone(),
                public_url: m.public_url.clone(),
                file_name: full
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            });
            media_paths.push(real);
        }
        let stray_overrides = stray_overrides(&file);
        Ok(Loaded {
            file,
            source,
            path: path.to_path_buf(),
            schedule,
            media,
            media_paths,
            stray_overrides,
        })
    }

    /// Item `index` of this post (0 the post itself, 1… the thread) as
    /// platform `platform` sees it. A thread item takes the platform
    /// fields of the post's `[override.PLATFORM]` (a Mastodon thread
    /// posted `unlisted` is unlisted throughout) unless its own
    /// `[thread.override.PLATFORM]` sets them; the post's `text`, `title`
    /// and `link` overrides are the post's own and stay with it.
    pub fn variant(
        &self,
        platform: &str,
        index: usize,
        key: &str,
        media: &[Media],
    ) -> anyhow::Result<Post> {
        let (text, overrides) = if index == 0 {
            (&self.text, self.overrides.get(platform).cloned())
        } else {
            let t = &self.thread[index - 1];
            (&t.text, self.item_overrides(platform, index))
        };
        let mut post = Post {
            text: text.clone(),
            title: if index == 0 { self.title.clone() } else { None },
            link: if index == 0 { self.link.clone() } else { None },
            media: if index == 0 {
                media.to_vec()
            } else {
                Vec::new()
            },
            reply_to: None,
            thread_root: None,
            extra: Vec::new(),
            idempotency_key: key.to_string(),
        };
        if let Some(o) = &overrides {
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

    /// The `[override.PLATFORM]` fields thread item `index` (1…) goes out
    /// with: the post's platform fields (not its `text`, `title`, `link`),
    /// then the item's own on top.
    fn item_overrides(
        &self,
        platform: &str,
        index: usize,
    ) -> Option<BTreeMap<String, toml::Value>> {
        let mut merged: BTreeMap<String, toml::Value> = self
            .overrides
            .get(platform)
            .into_iter()
            .flatten()
            .filter(|(k, _)| !POST_ONLY.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let own = self.thread[index - 1].overrides.get(platform);
        merged.extend(
            own.into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        (own.is_some() || !merged.is_empty()).then_some(merged)
    }

    /// Whether thread item `index` (1…) has field `key` of `platform` from
    /// the post's `[override.PLATFORM]` rather than from its own.
    fn inherits(&self, platform: &str, index: usize, key: &str) -> bool {
        index > 0
            && !POST_ONLY.contains(&key)
            && self
                .overrides
                .get(platform)
                .is_some_and(|o| o.contains_key(key))
            && !self.thread[index - 1]
                .overrides
                .get(platform)
                .is_some_and(|o| o.contains_key(key))
    }
}

/// The override tables of `file` whose platform its `to` does not name.
fn stray_overrides(file: &PostFile) -> Vec<(String, String)> {
    let named: Vec<&str> = file
        .to
        .iter()
        .map(|t| t.split_once('/').map_or(t.as_str(), |(p, _)| p))
        .collect();
    let items = std::iter::once((String::new(), &file.overrides)).chain(
        file.thread
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("thread[{i}]."), &t.overrides)),
    );
    let mut out = Vec::new();
    for (prefix, overrides) in items {
        for platform in overrides.keys() {
            if !named.contains(&platform.as_str()) {
                out.push((format!("{prefix}override.{platform}"), platform.clone()));
            }
        }
    }
    out
}

/// Keys of `[override.PLATFORM]` that change the post itself and so stay
/// with it; every other key is a platform field that its thread shares.
const POST_ONLY: [&str; 3] = ["text", "title", "link"];

/// Check one attachment: after resolving symlinks it must be a regular,
/// non-empty file inside one of `roots`, and its bytes must be a kind of
/// media outreach knows. Returns its real path, size, kind and MIME type.
/// The type comes from the file's first bytes (its magic number), never
/// from its name: a text file named `.png` is not an image.
fn check_media(
    full: &Path,
    roots: &[PathBuf],
) -> Result<(PathBuf, u64, MediaKind, &'static str), String> {
    let real = std::fs::canonicalize(full).map_err(|e| io_reason(&e))?;
    if !roots.iter().any(|r| real.starts_with(r)) {
        return Err(format!(
            "is outside the folders media may come from ({}){}; move it there or set paths.media in the config",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if std::fs::symlink_metadata(full).is_ok_and(|m| m.file_type().is_symlink()) {
                " (it is a symlink that leads out of them)"
            } else {
                ""
            }
        ));
    }
    // `canonicalize` resolved every link, so this is the file itself; a
    // FIFO or device is refused here, before anything opens it.
    let meta = std::fs::metadata(&real).map_err(|e| io_reason(&e))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() == 0 {
        return Err("is empty".into());
    }
    let mut head = [0u8; 8192];
    let n = {
        use std::io::Read;
        let f = std::fs::File::open(&real).map_err(|e| io_reason(&e))?;
        let mut n = 0;
        let mut f = f.take(head.len() as u64);
        loop {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_reason(&e)),
            }
        }
        n
    };
    let (kind, mime) = media_kind(&head[..n]).ok_or_else(|| {
        format!(
            "is not an image, video or document outreach can post (its contents are {}; supported: JPEG, PNG, WebP, GIF, MP4, QuickTime, WebM, PDF — recognised by their contents, not their names)",
            infer::get(&head[..n])
                .map(|t| t.mime_type().to_string())
                .unwrap_or_else(|| if head[..n].iter().all(|b| b.is_ascii() && *b != 0) { "text".into() } else { "unrecognised".into() })
        )
    })?;
    Ok((real, meta.len(), kind, mime))
}

/// What went wrong with a file, in words, without the OS error's code
/// (callers say which file).
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "does not exist".into(),
        K::PermissionDenied => "cannot be read (permission denied)".into(),
        K::IsADirectory => "is a folder, not a file".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}

/// A media kind and MIME type from a file's first bytes.
fn media_kind(head: &[u8]) -> Option<(MediaKind, &'static str)> {
    Some(match infer::get(head)?.mime_type() {
        "image/jpeg" => (MediaKind::Image, "image/jpeg"),
        "image/png" => (MediaKind::Image, "image/png"),
        "image/webp" => (MediaKind::Image, "image/webp"),
        "image/gif" => (MediaKind::Gif, "image/gif"),
        "video/mp4" | "video/x-m4v" => (MediaKind::Video, "video/mp4"),
        "video/quicktime" => (MediaKind::Video, "video/quicktime"),
        "video/webm" => (MediaKind::Video, "video/webm"),
        "application/pdf" => (MediaKind::Document, "application/pdf"),
        _ => return None,
    })
}

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
    fn new(target: &AccountId) -> Self {
        TargetResult {
            target: target.to_string(),
            ok: false,
            state: String::new(),
            post_id: None,
            url: None,
            thread: Vec::new(),
            error_kind: None,
            error: None,
            already: false,
            requests: Vec::new(),
            not_shown: Vec::new(),
        }
    }
}

/// A problem found by validation, with where.
#[derive(Debug, Clone, Serialize)]
pub struct TargetProblem {
    pub target: String,
    pub field: String,
    pub message: String,
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

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub dry_run: bool,
    /// Publish changed content under the same file as a new post.
    pub new: bool,
}

/// A target resolved and validated.
struct Job {
    id: AccountId,
    plugin: Arc<LoadedPlugin>,
    /// The account's record, or why it cannot be read (that target fails,
    /// the others go out).
    record: Result<Record, String>,
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
fn stray_problems(app: &App, post: &Loaded, targets: &[AccountId]) -> Vec<TargetProblem> {
    let mut platforms: Vec<&str> = Vec::new();
    for t in targets {
        if !platforms.contains(&t.platform.as_str()) {
            platforms.push(&t.platform);
        }
    }
    let goes_to = platforms.join(", ");
    let known: Vec<String> = app
        .host
        .plugins()
        .iter()
        .map(|p| p.manifest.id.clone())
        .collect();
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

/// Resolve every target and validate every item; nothing is sent.
async fn prepare(app: &App, post: &Loaded) -> anyhow::Result<Result<Vec<Job>, Vec<TargetProblem>>> {
    let path = &post.path;
    let mut targets: Vec<AccountId> = Vec::new();
    let stored = app.store()?.list()?;
    for t in &post.file.to {
        for id in app
            .resolve_target_in(t, &stored)
            .with_context(|| format!("in {}, target `{t}`", path.display()))?
        {
            if !targets.contains(&id) {
                targets.push(id);
            }
        }
    }
    let store = app.store()?;
    let mut jobs = Vec::new();
    let mut problems = stray_problems(app, post, &targets);
    let items = 1 + post.file.thread.len();
    for id in targets {
        let plugin = app.host.get(&id.platform)?;
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
        let account = App::account_view(&record);
        let mut first: Vec<(String, String)> = Vec::new();
        for index in 0..items {
            let mut variant = post
                .file
                .variant(&id.platform, index, "check", &post.media)?;
            if index > 0 {
                variant.reply_to = Some("(parent)".into());
            }
            let found = match app.host.validate(&plugin, &variant, Some(&account)).await {
                Ok(found) => found,
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

/// Only validate a post file against every target (`publish --check`).
pub async fn check_file(
    app: &App,
    path: &Path,
) -> anyhow::Result<Result<Vec<TargetResult>, Vec<TargetProblem>>> {
    check_loaded(app, &PostFile::load(path, app.cfg().media_dir.as_deref())?).await
}

async fn check_loaded(
    app: &App,
    post: &Loaded,
) -> anyhow::Result<Result<Vec<TargetResult>, Vec<TargetProblem>>> {
    Ok(prepare(app, post).await?.map(|jobs| {
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
    }))
}

/// Validate, register in the outbox, and — unless it is scheduled for
/// later — deliver a post file.
pub async fn publish_file(
    app: &Arc<App>,
    path: &Path,
    opts: Options,
) -> anyhow::Result<Result<Report, Vec<TargetProblem>>> {
    let post = PostFile::load(path, app.cfg().media_dir.as_deref())?;
    publish_loaded(app, post, opts).await
}

/// A post given as JSON (the control API's `POST /publish`): the same
/// fields and rules as a post file. It is keyed by its `id`, or by its
/// content when it has none, so sending the same post twice publishes it
/// once. Relative media paths are relative to `base` (the posts folder),
/// and media must be inside it or `media_root`; with neither, a post with
/// media is refused.
pub fn from_json(
    post: &serde_json::Value,
    base: Option<&Path>,
    media_root: Option<&Path>,
) -> anyhow::Result<Loaded> {
    // Checked as JSON first, so that problems are named by field, not by
    // the line of a TOML text the sender never wrote.
    serde_json::from_value::<PostFile>(post.clone()).map_err(|e| {
        bad!(
            "the post is not valid: {}",
            crate::config::without_quoted_values(&e.to_string())
        )
    })?;
    let source = toml::to_string(post).map_err(|e| {
        bad!("the post is not valid: {e} (nulls are not allowed; leave the field out)")
    })?;
    let key = match post.get("id") {
        Some(serde_json::Value::String(id)) => id.clone(),
        _ => format!(
            "api-{}",
            &hex::encode(Sha256::digest(source.as_bytes()))[..16]
        ),
    };
    let has_media = post
        .get("media")
        .and_then(|m| m.as_array())
        .is_some_and(|m| !m.is_empty());
    let folder = match base.or(media_root) {
        Some(b) => b.to_path_buf(),
        None if has_media => {
            return Err(bad!(
                "the post has media, but the daemon has no folder to take media from; set paths.posts or paths.media in the config and put the files there"
            ));
        }
        None => PathBuf::from("api"),
    };
    // The post's place in that folder, for relative media paths and the
    // journal; its name never comes unfiltered from the sender.
    let name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let mut loaded = PostFile::parse_as(
        &folder.join(format!("{name}.json")),
        "the post",
        source,
        media_root,
    )?;
    loaded.file.id.get_or_insert(key);
    Ok(loaded)
}

/// [`from_json`], then publish.
pub async fn publish_json(
    app: &Arc<App>,
    post: &serde_json::Value,
    base: Option<&Path>,
    opts: Options,
) -> anyhow::Result<Result<Report, Vec<TargetProblem>>> {
    let loaded = from_json(post, base, app.cfg().media_dir.as_deref())?;
    publish_loaded(app, loaded, opts).await
}

/// [`from_json`], then only validate.
pub async fn check_json(
    app: &App,
    post: &serde_json::Value,
    base: Option<&Path>,
) -> anyhow::Result<Result<Vec<TargetResult>, Vec<TargetProblem>>> {
    check_loaded(app, &from_json(post, base, app.cfg().media_dir.as_deref())?).await
}

/// Validate, register and deliver a post that has been read.
pub async fn publish_loaded(
    app: &Arc<App>,
    post: Loaded,
    opts: Options,
) -> anyhow::Result<Result<Report, Vec<TargetProblem>>> {
    let path = post.path.clone();
    let path = path.as_path();
    let jobs = match prepare(app, &post).await? {
        Ok(jobs) => jobs,
        Err(problems) => return Ok(Err(problems)),
    };
    if opts.dry_run {
        return Ok(Ok(dry_run(app, &post, jobs).await));
    }
    let shared = app.outbox()?;
    // The journal is locked only while registering, never across a send.
    let row = {
        let mut outbox = shared.lock().expect("outbox");
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
            if sent && !opts.new {
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
        row
    };
    deliver(app, &row, &post, jobs, shared).await.map(Ok)
}

/// How a settled delivery ended, for messages.
fn settled_word(d: &crate::outbox::Delivery) -> &'static str {
    match (d.state, d.error_kind.as_deref()) {
        (State::Failed, Some("rejected")) => "rejected",
        (State::Cancelled, _) => "cancelled",
        (State::Published, _) => "published",
        (State::Unknown, _) => "unknown",
        (State::Sending, _) => "being sent",
        _ => "failed",
    }
}

/// Publish every scheduled post whose time has come (the daemon calls this
/// on a timer; `outreach posts due` runs it once). Posts that fell due while
/// nothing was running are published now, once, and reported late.
pub async fn publish_due(app: &Arc<App>) -> anyhow::Result<Vec<Report>> {
    publish_due_while(app, || true).await
}

/// [`publish_due`], checking `go_on` before each post (the daemon stops
/// starting new posts when it is asked to shut down).
pub async fn publish_due_while(
    app: &Arc<App>,
    go_on: impl Fn() -> bool,
) -> anyhow::Result<Vec<Report>> {
    let shared = app.outbox()?;
    let due = {
        let outbox = shared.lock().expect("outbox");
        outbox.settle_interrupted()?;
        outbox.due(Utc::now())?
    };
    let mut reports = Vec::new();
    for row in due {
        if !go_on() {
            break;
        }
        let path = PathBuf::from(&row.path);
        let post = PostFile::parse(&path, row.source.clone(), app.cfg().media_dir.as_deref())?;
        let jobs = match prepare(app, &post).await? {
            Ok(j) => j,
            Err(problems) => {
                for p in problems {
                    tracing::error!(post = %row.id, target = %p.target, field = %p.field, "{}", p.message);
                }
                continue;
            }
        };
        shared.lock().expect("outbox").release(&row.id)?;
        reports.push(deliver(app, &row, &post, jobs, shared.clone()).await?);
    }
    Ok(reports)
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

/// A delivery a retry left as it was, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub target: String,
    pub index: u32,
    pub state: State,
    pub reason: String,
}

/// What `outreach posts retry` did: the publish report for the targets it
/// retried, what it re-opened, and what it left alone.
#[derive(Debug, Serialize)]
pub struct RetryReport {
    #[serde(flatten)]
    pub report: Report,
    pub reopened: Vec<crate::outbox::Reopened>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
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

/// The user asks to send post `id` again (`outreach posts retry ID[/TARGET]`,
/// `POST /posts/{id}/retry`): its `failed` and `cancelled` deliveries —
/// on `target` only, if given — are re-opened and sent now, or queued if
/// the post is scheduled for later. A `published` delivery is never sent
/// again; an `unknown` one only with `force` (the platform may then show
/// the post twice). The post is validated again first; nothing is re-opened
/// if that fails.
pub async fn retry(
    app: &Arc<App>,
    id: &str,
    target: Option<&str>,
    force: bool,
) -> anyhow::Result<Result<RetryReport, Vec<TargetProblem>>> {
    let shared = app.outbox()?;
    let (row, deliveries) = {
        let outbox = shared.lock().expect("outbox");
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
        (row, deliveries)
    };
    let due = row.scheduled_at.is_none_or(|t| t <= Utc::now());
    let mut reopen = Vec::new();
    let mut skipped = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    for d in &deliveries {
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
            State::Unknown if !force => {
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
        return Err(
            RetryRefused::Nothing(format!("nothing to retry in post `{id}`: {why}")).into(),
        );
    }
    let mut post = PostFile::parse(
        &PathBuf::from(&row.path),
        row.source.clone(),
        app.cfg().media_dir.as_deref(),
    )?;
    post.file.to = targets.clone();
    let jobs = match prepare(app, &post).await? {
        Ok(jobs) => jobs,
        Err(problems) => return Ok(Err(problems)),
    };
    let reopened = shared.lock().expect("outbox").reopen(&row, &reopen)?;
    let mut report = deliver(app, &row, &post, jobs, shared).await?;
    report.results.retain(|r| targets.contains(&r.target));
    report.late = false;
    Ok(Ok(RetryReport {
        report,
        reopened,
        skipped,
    }))
}

/// Send every pending delivery of `row`: targets concurrently (at most
/// `publish.per_platform` per platform), each thread in order.
async fn deliver(
    app: &Arc<App>,
    row: &PostRow,
    post: &Loaded,
    jobs: Vec<Job>,
    outbox: Arc<Mutex<Outbox>>,
) -> anyhow::Result<Report> {
    // One delivery of a post at a time in this process (the daemon's due
    // loop and its post-file watcher may reach the same post together);
    // the outbox's claims keep other processes out.
    let lock = {
        let mut map = app.post_locks.lock().expect("post locks");
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(row.id.clone()).or_default().clone()
    };
    let _one_at_a_time = lock.lock().await;
    let refresher = Refresher::new(app.clone())?;
    let per_platform = app.cfg().config.publish.per_platform.max(1) as usize;
    let mut limits: BTreeMap<String, Arc<tokio::sync::Semaphore>> = BTreeMap::new();
    for j in &jobs {
        limits
            .entry(j.id.platform.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(per_platform)));
    }
    let now = Utc::now();
    let due = row.scheduled_at.is_none_or(|t| t <= now);
    let late = row.scheduled_at.is_some_and(|t| {
        now - t > chrono::Duration::seconds(app.cfg().config.publish.late_after_secs as i64)
    });
    let media_paths = Arc::new(post.media_paths.clone());
    let claimed = if due {
        claim_first_items(&outbox, row, &jobs, per_platform)
    } else {
        vec![None; jobs.len()]
    };
    let futures = jobs.into_iter().zip(claimed).map(|(job, claimed)| {
        let (refresher, outbox, media_paths) = (&refresher, outbox.clone(), media_paths.clone());
        let slot = limits[&job.id.platform].clone();
        async move {
            let _permit = slot.acquire_owned().await.expect("semaphore open");
            deliver_target(
                app,
                refresher,
                &outbox,
                row,
                post,
                job,
                claimed,
                media_paths,
            )
            .await
        }
    });
    let results = if due {
        futures::future::join_all(futures).await
    } else {
        Vec::new()
    };
    let results = if due {
        results
    } else {
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
        by_target.into_values().collect()
    };
    Ok(Report {
        post: row.id.clone(),
        scheduled_at: row.scheduled_at,
        late: late && due,
        results,
    })
}

/// Claim the first item of every target that can be sent right away (a
/// free per-platform slot, a token that needs no refresh) in one outbox
/// transaction: one fsync for the whole fan-out instead of one per target.
/// The others are claimed one by one when their turn comes.
fn claim_first_items(
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
        let ready = j.record.as_ref().is_ok_and(|r| !needs_refresh(r));
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

/// The error kind of a target whose account record cannot be read.
const UNREADABLE: &str = "account-unreadable";

/// The token has expired or is about to: refresh before sending.
fn needs_refresh(r: &Record) -> bool {
    crate::schedule::about_to_expire(r)
}

/// Deliver one target: the post, then its thread, each once. `claimed`:
/// the first item's attempt, if [`claim_first_items`] already claimed it.
#[allow(clippy::too_many_arguments)]
async fn deliver_target(
    app: &App,
    refresher: &Refresher,
    outbox: &Mutex<Outbox>,
    row: &PostRow,
    post: &Loaded,
    job: Job,
    mut claimed: Option<i64>,
    media_paths: Arc<Vec<PathBuf>>,
) -> TargetResult {
    let Job { id, plugin, record } = job;
    let mut result = TargetResult::new(&id);
    let target = id.to_string();
    let items = 1 + post.file.thread.len();
    let idempotent = plugin.manifest.idempotent_publish;
    let mut parent: Option<String> = None;
    let mut root: Option<String> = None;
    let mut record = record;
    let mut all_already = true;
    let fail = |r: &mut TargetResult, state: &str, kind: &str, msg: String| {
        r.state = state.into();
        r.error_kind = Some(kind.into());
        r.error = Some(msg);
    };
    // Settle a claimed attempt that never sent anything.
    let abandon = |attempt: Option<i64>, index: usize, kind: &str, msg: &str| {
        if let Some(a) = attempt
            && let Err(e) = outbox.lock().expect("outbox").finish(
                a,
                &row.id,
                &target,
                index as u32,
                State::Failed,
                None,
                None,
                Some(kind),
                Some(msg),
            )
        {
            tracing::error!(post = %row.id, %target, "cannot record the outcome in the outbox: {e:#}");
        }
    };
    for index in 0..items {
        let pre = if index == 0 { claimed.take() } else { None };
        let from: &[State] = if pre.is_some() {
            &[]
        } else {
            let current = {
                let ob = outbox.lock().expect("outbox");
                ob.deliveries(&row.id).ok().and_then(|d| {
                    d.into_iter()
                        .find(|d| d.target == target && d.index == index as u32)
                })
            };
            let Some(current) = current else {
                fail(
                    &mut result,
                    "failed",
                    "outbox",
                    "the outbox has no record of this target".into(),
                );
                return result;
            };
            match current.state {
                State::Published => {
                    let pid = current.platform_id.clone().unwrap_or_default();
                    record_success(&mut result, index, &pid, current.url.clone());
                    root.get_or_insert(pid.clone());
                    parent = Some(pid);
                    continue;
                }
                State::Cancelled => {
                    fail(
                        &mut result,
                        "cancelled",
                        "cancelled",
                        format!(
                            "not sent: {}; `outreach posts retry {}/{target}` sends it after all",
                            current.error.as_deref().unwrap_or("the post was cancelled"),
                            row.id
                        ),
                    );
                    return result;
                }
                // Settled for good: never sent again unless the user asks.
                State::Failed if current.final_ => {
                    let rejected = current.error_kind.as_deref() == Some("rejected");
                    let why = if rejected {
                        format!("{} rejected it", plugin.manifest.name)
                    } else {
                        format!(
                            "it failed and its {} automatic attempts are used up",
                            crate::outbox::AUTOMATIC_ATTEMPTS
                        )
                    };
                    fail(
                        &mut result,
                        "failed",
                        current.error_kind.as_deref().unwrap_or("error"),
                        format!(
                            "not sent again: {why} ({}). To send it again as it is: `outreach posts retry {}/{target}`{}",
                            current.error.as_deref().unwrap_or("no details"),
                            row.id,
                            if rejected {
                                "; or change the post and publish it with --new"
                            } else {
                                ""
                            }
                        ),
                    );
                    return result;
                }
                State::Queued => {
                    result.ok = true;
                    result.state = "queued".into();
                    return result;
                }
                State::Sending => {
                    fail(
                        &mut result,
                        "sending",
                        "in-progress",
                        "another outreach process is sending this right now".into(),
                    );
                    return result;
                }
                State::Unknown if idempotent => &[State::Unknown],
                State::Unknown => {
                    fail(
                        &mut result,
                        "unknown",
                        "outcome-unknown",
                        format!(
                            "not re-sent: an earlier attempt may or may not have been published ({}) and {} honours no idempotency key; check the account, then `outreach posts cancel` or publish it again with --new",
                            current.error.as_deref().unwrap_or("no details"),
                            plugin.manifest.name
                        ),
                    );
                    return result;
                }
                State::Pending | State::Failed => &[State::Pending, State::Failed],
            }
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
                    abandon(Some(a), index, UNREADABLE, msg);
                }
                refresher
                    .notifier
                    .publish_ended(&row.id, &id, "failed", msg)
                    .await;
                crate::metrics::publish(&id.platform, "failed");
                fail(&mut result, "failed", UNREADABLE, msg.clone());
                return result;
            }
        };
        // A token that has expired (or is about to) is refreshed first,
        // once, however many publishes want it.
        if needs_refresh(record) {
            match refresher.ensure(&id, Need::Usable).await {
                Ok(fresh) => *record = fresh,
                Err(e) => {
                    let msg = scrub(&e.to_string(), &record.secrets());
                    abandon(pre, index, refresh_error_kind(&e), &msg);
                    fail(&mut result, "failed", refresh_error_kind(&e), msg);
                    return result;
                }
            }
        }
        let key = idempotency_key(&row.id, &target, index);
        let mut variant = match post.file.variant(&id.platform, index, &key, &post.media) {
            Ok(v) => v,
            Err(e) => {
                abandon(pre, index, "post", &e.to_string());
                fail(&mut result, "failed", "post", e.to_string());
                return result;
            }
        };
        variant.reply_to = parent.clone();
        variant.thread_root = root.clone();
        let attempt = if let Some(a) = pre {
            a
        } else {
            let mut ob = outbox.lock().expect("outbox");
            match ob.begin(&row.id, &target, index as u32, from) {
                Ok(Some(a)) => a,
                Ok(None) => {
                    fail(
                        &mut result,
                        "sending",
                        "in-progress",
                        "another outreach process claimed this delivery".into(),
                    );
                    return result;
                }
                Err(e) => {
                    fail(&mut result, "failed", "outbox", format!("{e:#}"));
                    return result;
                }
            }
        };
        let (state, outcome) = send_with_retries(
            app,
            refresher,
            &plugin,
            &id,
            record,
            &variant,
            media_paths.clone(),
        )
        .await;
        let secrets = record.secrets();
        let (pid, url, kind, error) = match &outcome {
            Ok((pid, url)) => (Some(pid.clone()), url.clone(), None, None),
            Err((kind, msg)) => (None, None, Some(kind.clone()), Some(scrub(msg, &secrets))),
        };
        let saved = outbox.lock().expect("outbox").finish(
            attempt,
            &row.id,
            &target,
            index as u32,
            state,
            pid.as_deref(),
            url.as_deref(),
            kind.as_deref(),
            error.as_deref(),
        );
        if let Err(e) = saved {
            tracing::error!(post = %row.id, %target, "cannot record the outcome in the outbox: {e:#}");
        }
        crate::metrics::publish(&id.platform, state.as_str_public());
        if matches!(state, State::Failed | State::Unknown) {
            refresher
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
                record_success(&mut result, index, &pid, url);
                root.get_or_insert(pid.clone());
                parent = Some(pid);
            }
            _ => {
                fail(
                    &mut result,
                    state.as_str_public(),
                    kind.as_deref().unwrap_or("error"),
                    error.unwrap_or_default(),
                );
                return result;
            }
        }
    }
    result.ok = true;
    result.state = "published".into();
    result.already = all_already;
    result
}

fn record_success(r: &mut TargetResult, index: usize, pid: &str, url: Option<String>) {
    if index == 0 {
        r.post_id = Some(pid.to_string());
        r.url = url;
    } else {
        r.thread.push(pid.to_string());
    }
}

impl State {
    fn as_str_public(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Published => "published",
            _ => "failed",
        }
    }
}

/// Send one item: refresh and retry once on an expired token, wait out a
/// short 429, retry sends that never left the host. Returns the state to
/// record and the receipt or `(kind, message)`.
async fn send_with_retries(
    app: &App,
    refresher: &Refresher,
    plugin: &LoadedPlugin,
    id: &AccountId,
    record: &mut Record,
    variant: &Post,
    media_paths: Arc<Vec<PathBuf>>,
) -> (State, Result<(String, Option<String>), (String, String)>) {
    let cfg = app.cfg().config.publish.clone();
    let mut refreshed = false;
    let mut tries = 0;
    let mut waited = Duration::ZERO;
    loop {
        tries += 1;
        let (ctx, scope) = app.call_env(plugin, record);
        let dispatched = scope.dispatched.clone();
        let outcome = app
            .host
            .publish_with_media(plugin, scope, &ctx, variant, media_paths.clone())
            .await;
        let sent = dispatched.load(Ordering::SeqCst) > 0;
        match outcome {
            Ok(Ok(receipt)) => return (State::Published, Ok((receipt.id, receipt.url))),
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
async fn dry_run(app: &App, post: &Loaded, jobs: Vec<Job>) -> Report {
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
                if index > 0 {
                    variant.reply_to = Some(stand_in(index - 1));
                    variant.thread_root = Some(stand_in(0));
                }
                let (ctx, mut scope) = app.call_env(&plugin, &record);
                let recorder = Arc::new(Mutex::new(Vec::new()));
                scope.dry_run = Some(recorder.clone());
                let outcome = app
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

/// How messages name item `index` of a post: `the post`, `thread[0]`, ….
pub fn item_name(index: usize) -> String {
    if index == 0 {
        "the post".into()
    } else {
        format!("thread[{}]", index - 1)
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
