//! Stage 1, parse: a post file (TOML) or an API post (JSON) becomes a
//! [`ParsedPost`]: its fields checked, its schedule read, its media
//! resolved, confined to the folders media may come from and recognised by
//! their contents.
//!
//! Never: looks at accounts, plugins or the journal (that is [`super::plan`]
//! and after), or opens anything but a regular file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::contract::wit::types::{Media, MediaKind, Pair, Post};
use crate::error::bad;

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
pub struct ParsedPost {
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
    pub fn load(path: &Path, media_root: Option<&Path>) -> anyhow::Result<ParsedPost> {
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
    pub fn parse(
        path: &Path,
        source: String,
        media_root: Option<&Path>,
    ) -> anyhow::Result<ParsedPost> {
        let label = format!("the post file {}", path.display());
        Self::parse_as(path, &label, source, media_root)
    }

    /// [`PostFile::parse`], with messages that call the post `label`.
    pub fn parse_as(
        path: &Path,
        label: &str,
        source: String,
        media_root: Option<&Path>,
    ) -> anyhow::Result<ParsedPost> {
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
            if let Some(u) = &m.public_url {
                let ok = url::Url::parse(u).is_ok_and(|u| {
                    u.scheme() == "https"
                        && u.host_str().is_some()
                        && u.username().is_empty()
                        && u.password().is_none()
                });
                if !ok {
                    return Err(bad!(
                        "{}: public_url must be an https address the platform can fetch the file from",
                        at()
                    ));
                }
            }
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
        Ok(ParsedPost {
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
    pub fn inherits(&self, platform: &str, index: usize, key: &str) -> bool {
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
) -> anyhow::Result<ParsedPost> {
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
