//! The durable outbox: what was sent where, so a post goes out exactly once
//! per platform.
//!
//! Owns: the journal, behind one [`Journal`] trait with two databases —
//! SQLite beside the credential store ([`SqliteJournal`], the default) or
//! the PostgreSQL database of `[store] backend = "postgres"`
//! ([`PgJournal`], shared by several daemons). A post is registered with
//! one row per target and thread item; an attempt is written as `sending`
//! *before* the request leaves — committed (and in SQLite fsynced), all
//! targets of a fan-out in one transaction — and settled *after* it
//! returns, so after a crash an attempt whose outcome is unknown is
//! visible as such and never silently re-sent. The claim is the row: two
//! processes never both move one delivery to `sending`.
//!
//! Also owns which deliveries are *final* — never sent again unless the
//! user asks ([`Journal::reopen`], `outreach posts retry`): published ones,
//! ones the platform rejected, failures whose automatic attempts
//! ([`AUTOMATIC_ATTEMPTS`]) have run out, ones the user cancelled, and
//! unknown outcomes. Re-registering a post (a re-run, the daemon re-reading
//! its file) never reopens them; claiming one for sending is refused.
//!
//! Never: talks to a platform, or stores a secret (post text and ids only).

mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{StoreBackend, StoreConfig};
pub use postgres::PgJournal;
pub use sqlite::SqliteJournal;

/// Where one (post, target, thread item) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waiting for its schedule.
    Queued,
    /// Due, not yet sent (or failed before sending and may be retried).
    Pending,
    /// A request is (or was, if the process died) in flight.
    Sending,
    Published,
    /// The platform refused it, or it could not be sent. A re-run tries
    /// again only while automatic attempts remain and the platform did not
    /// reject it (see [`Delivery::final_`]).
    Failed,
    /// The request may or may not have taken effect.
    Unknown,
    Cancelled,
    /// The platform accepted it and is still working on it (TikTok
    /// moderation, Reddit media); `platform_id` is what to ask about. The
    /// daemon asks until it is published or refused.
    Processing,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Pending => "pending",
            State::Sending => "sending",
            State::Published => "published",
            State::Failed => "failed",
            State::Unknown => "unknown",
            State::Cancelled => "cancelled",
            State::Processing => "processing",
        }
    }
    /// A state as the journal spells it; `None` for one this version does
    /// not know (never guessed: see [`JournalError::UnknownState`]).
    fn parse(s: &str) -> Option<State> {
        Some(match s {
            "queued" => State::Queued,
            "pending" => State::Pending,
            "sending" => State::Sending,
            "published" => State::Published,
            "failed" => State::Failed,
            "unknown" => State::Unknown,
            "cancelled" => State::Cancelled,
            "processing" => State::Processing,
            _ => return None,
        })
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The journal format this version reads and writes (`PRAGMA
/// user_version`): 2 added user retries, 3 the `meta` table that records
/// which outreach set the format. A journal of a higher format is never
/// touched.
pub const FORMAT: i64 = 3;

/// A journal that cannot be used. Each says which file, what is wrong,
/// that nothing was changed, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "the outbox {path} (outreach's publishing journal) is not a SQLite database, or it is damaged ({detail}); nothing was changed. Restore it from a backup (`outreach restore FILE`), or move it aside (`mv {path} {path}.damaged`) and outreach starts a new, empty journal — which does not know what was published before, so re-running an old post file would publish it again"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "the outbox {path} was written by {writer} (journal format {found}); this is outreach {ours}, which knows journal formats up to {FORMAT}, so it left the journal untouched — use that version of outreach (or a newer one)",
        ours = env!("CARGO_PKG_VERSION")
    )]
    Newer {
        path: PathBuf,
        found: i64,
        /// `outreach 1.2.0`, or "a newer version of outreach" when the
        /// journal does not say.
        writer: String,
    },
    #[error(
        "the outbox {path} has the delivery of post `{post}` to {target} in state `{state}`, which this version of outreach does not know (was the journal written by a newer version?); nothing was changed — use the outreach that wrote it, or a newer one"
    )]
    UnknownState {
        path: PathBuf,
        post: String,
        target: String,
        state: String,
    },
    #[error("the outbox {path} cannot be used: {detail}")]
    Unusable { path: PathBuf, detail: String },
}

impl JournalError {
    /// The journal was refused as it is (damaged, newer, an unknown state):
    /// nothing was read as something else, changed or sent because of it.
    pub fn refused(&self) -> bool {
        !matches!(self, JournalError::Unusable { .. })
    }
}

/// One row of the journal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    pub post: String,
    pub target: String,
    /// 0 for the post itself, 1… for the thread's follow-ups.
    pub index: u32,
    pub state: State,
    pub platform_id: Option<String>,
    pub url: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// How many times the user re-opened it (`outreach posts retry`).
    #[serde(default)]
    pub user_retries: u32,
    /// Settled for good: outreach does not send it again on its own —
    /// re-running the post or the daemon re-reading its file leaves it as
    /// it is; only `outreach posts retry` (or `publish --new`) sends it.
    /// Published, rejected, failed with no automatic attempts left,
    /// cancelled by the user, or unknown (re-sent automatically only where
    /// the platform de-duplicates by idempotency key).
    #[serde(default, rename = "final")]
    pub final_: bool,
}

/// Automatic attempts per delivery: a failure that the platform did not
/// reject is tried again when the post is re-run (or its file re-read),
/// until this many attempts have been made since the post was registered
/// or the user last asked for a retry. Each attempt itself retries a send
/// that never left the host `publish.retries` times, with backoff.
pub const AUTOMATIC_ATTEMPTS: u32 = 3;

/// `error_kind` of a delivery cancelled because an edited post file no
/// longer names its target (or thread item): the file naming it again
/// brings it back, unlike a cancel by the user.
pub const DROPPED: &str = "dropped";

/// Whether a delivery in `state` is settled for good (see
/// [`Delivery::final_`]), given the automatic attempts made since the user
/// last asked.
fn is_final(state: State, error_kind: Option<&str>, attempts: u32) -> bool {
    match state {
        State::Published | State::Unknown | State::Processing => true,
        State::Cancelled => error_kind != Some(DROPPED),
        State::Failed => error_kind == Some("rejected") || attempts >= AUTOMATIC_ATTEMPTS,
        State::Queued | State::Pending | State::Sending => false,
    }
}

/// A delivery the user re-opened ([`Journal::reopen`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reopened {
    pub target: String,
    pub index: u32,
    /// The state it was in.
    pub from: State,
    /// What it is now: `pending` (sent now) or `queued` (for its schedule).
    pub to: State,
}

/// A registered post.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostRow {
    pub id: String,
    pub path: String,
    pub content_hash: String,
    #[serde(skip, default)]
    pub source: String,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// One attempt, for `posts show`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    pub target: String,
    pub index: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub detail: Option<String>,
    /// Set when the user asked for this attempt (`outreach posts retry`):
    /// the state the delivery was re-opened from (`failed`, `cancelled`,
    /// or `unknown` with `--force`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_retry: Option<String>,
}

/// A state string from the journal, fit to quote in a message.
fn shown_state(s: &str) -> String {
    let escaped: String = s.escape_debug().collect();
    if escaped.chars().count() > 40 {
        format!("{}…", escaped.chars().take(40).collect::<String>())
    } else {
        escaped
    }
}

/// A journal's rows as stored, for copying one journal into another.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dump {
    /// Oldest first.
    pub posts: Vec<PostRow>,
    /// By post, target and thread item.
    pub deliveries: Vec<StoredDelivery>,
    /// In the order they were made.
    pub attempts: Vec<StoredAttempt>,
}

impl Dump {
    /// Only the rows of the posts `keep` names (in this dump's order).
    pub fn only(&self, keep: &std::collections::HashSet<&str>) -> Dump {
        Dump {
            posts: self
                .posts
                .iter()
                .filter(|p| keep.contains(p.id.as_str()))
                .cloned()
                .collect(),
            deliveries: self
                .deliveries
                .iter()
                .filter(|d| keep.contains(d.post.as_str()))
                .cloned()
                .collect(),
            attempts: self
                .attempts
                .iter()
                .filter(|a| keep.contains(a.post.as_str()))
                .cloned()
                .collect(),
        }
    }
}

/// One delivery row as stored, its state as spelled.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDelivery {
    pub post: String,
    pub target: String,
    pub index: u32,
    pub state: String,
    pub platform_id: Option<String>,
    pub url: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub owner: Option<String>,
    pub user_retries: u32,
    pub reopened: Option<String>,
}

/// One attempt row as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredAttempt {
    pub post: String,
    pub target: String,
    pub index: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub detail: Option<String>,
    pub user_retry: Option<String>,
}

/// What a journal does, whichever database holds it: the SQLite file
/// beside the credential store ([`SqliteJournal`]) or the PostgreSQL
/// database the store uses ([`PgJournal`]).
pub trait Journal: Send {
    /// The post registered as `id`.
    fn post(&self, id: &str) -> anyhow::Result<Option<PostRow>>;

    /// Register a post and its deliveries (existing rows are kept as they
    /// are: what was published stays published, what failed or was
    /// cancelled stays so — only a delivery dropped by an earlier edit of
    /// the file comes back when the file names it again).
    fn register(&mut self, post: &PostRow, deliveries: &[(String, u32)]) -> anyhow::Result<()>;

    /// Every delivery of `post`, by target and thread item.
    fn deliveries(&self, post: &str) -> anyhow::Result<Vec<Delivery>>;

    /// Every delivery the platform is still processing, with when it
    /// entered that state (its last attempt's start).
    fn processing(&self) -> anyhow::Result<Vec<(Delivery, DateTime<Utc>)>>;

    /// A `processing` delivery was asked about and is still processing.
    fn touch_processing(
        &self,
        post: &str,
        target: &str,
        idx: u32,
        platform_id: &str,
        url: Option<&str>,
    ) -> anyhow::Result<()>;

    /// How a `processing` delivery settled; a no-op (false) if it is no
    /// longer processing (settled by someone else, or re-opened).
    #[allow(clippy::too_many_arguments)]
    fn settle_processing(
        &mut self,
        post: &str,
        target: &str,
        idx: u32,
        state: State,
        platform_id: Option<&str>,
        url: Option<&str>,
        error_kind: Option<&str>,
        error: Option<&str>,
    ) -> anyhow::Result<bool>;

    /// Every post, newest first, with its deliveries.
    fn all(&self) -> anyhow::Result<Vec<(PostRow, Vec<Delivery>)>>;

    /// Posts whose schedule has come and that still have work to do.
    fn due(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<PostRow>> {
        let mut out = Vec::new();
        for (p, d) in self.all()? {
            let waiting = d.iter().any(|d| d.state == State::Queued);
            if waiting && p.scheduled_at.is_some_and(|t| t <= now) {
                out.push(p);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The earliest schedule among posts still waiting for it.
    fn next_due(&self) -> anyhow::Result<Option<DateTime<Utc>>>;

    /// The most recent delivery of a post (not a thread reply) to `target`.
    fn last_delivery(&self, target: &str) -> anyhow::Result<Option<Delivery>>;

    /// Fold the write-ahead log into the database file (on shutdown).
    fn checkpoint(&self) -> anyhow::Result<()>;

    /// Move a due post's queued deliveries to pending.
    fn release(&self, post: &str) -> anyhow::Result<()>;

    /// Cancel every delivery of `post` that has not gone out. It stays
    /// cancelled — re-running the post or re-reading its file does not
    /// bring it back; [`Journal::reopen`] does.
    fn cancel(&self, post: &str) -> anyhow::Result<usize>;

    /// The user looked at the platform and found that an `unknown`
    /// delivery did go out: it becomes `published` with the address they
    /// found, and is never sent again. Only `unknown` deliveries move;
    /// returns how many did (0: not unknown, or no such delivery).
    fn mark_published(
        &self,
        post: &str,
        target: &str,
        idx: u32,
        url: &str,
    ) -> anyhow::Result<usize>;

    /// The user asks for these deliveries of `post` to be sent again
    /// (`outreach posts retry`): each `(target, index, from)` still in state
    /// `from` — `failed`, `cancelled` or `unknown`, never `published` —
    /// moves to `pending` if the post is due, or `queued` for its schedule,
    /// and its next attempt is marked as asked for by the user (which also
    /// gives it [`AUTOMATIC_ATTEMPTS`] again). Returns what was re-opened.
    fn reopen(
        &mut self,
        post: &PostRow,
        items: &[(String, u32, State)],
    ) -> anyhow::Result<Vec<Reopened>>;

    /// Claim a delivery for sending: it moves to `sending` only if it is in
    /// one of `from` (so two processes never send the same thing) and is
    /// not final (a `failed` one the platform rejected, or with no
    /// automatic attempts left, is never claimed), and the attempt is
    /// committed (fsynced) before the caller sends anything. `None`:
    /// someone else has it, or it is not in a sendable state.
    fn begin(
        &mut self,
        post: &str,
        target: &str,
        idx: u32,
        from: &[State],
    ) -> anyhow::Result<Option<i64>> {
        Ok(self
            .begin_many(post, &[(target.to_string(), idx, from.to_vec())])?
            .pop()
            .flatten())
    }

    /// [`Journal::begin`] for several deliveries of one post in one
    /// transaction — one fsync for a whole fan-out.
    fn begin_many(
        &mut self,
        post: &str,
        items: &[(String, u32, Vec<State>)],
    ) -> anyhow::Result<Vec<Option<i64>>>;

    /// Settle an attempt.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        attempt: i64,
        post: &str,
        target: &str,
        idx: u32,
        state: State,
        platform_id: Option<&str>,
        url: Option<&str>,
        error_kind: Option<&str>,
        error: Option<&str>,
    ) -> anyhow::Result<()>;

    /// After a crash: attempts left `sending` by a process that no longer
    /// runs become `unknown`. Returns how many.
    fn settle_interrupted(&self) -> anyhow::Result<usize>;

    /// Every attempt at `post`, oldest first.
    fn attempts(&self, post: &str) -> anyhow::Result<Vec<Attempt>>;

    /// Every row, as stored (`outreach store migrate`).
    fn dump(&self) -> anyhow::Result<Dump>;

    /// Make this journal hold `dump`'s posts exactly as `dump` has them
    /// (their earlier rows here replaced), in one transaction; posts not
    /// in `dump` are left alone. Run twice, the result is the same.
    fn restore_dump(&mut self, dump: &Dump) -> anyhow::Result<()>;
}

/// The journal the config chooses: SQLite at `paths.outbox` with the files
/// store, the store's own database with `[store] backend = "postgres"`.
/// Every [`Journal`] method is called on it directly.
pub struct Outbox(Box<dyn Journal>);

impl Outbox {
    /// The SQLite journal at `path` (created if needed).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Outbox(Box::new(SqliteJournal::open(path)?)))
    }

    /// The journal `[store]` chooses; `path` is `paths.outbox`.
    pub fn for_store(store: &StoreConfig, path: &Path) -> anyhow::Result<Self> {
        match store.backend {
            StoreBackend::Files => Self::open(path),
            StoreBackend::Postgres => Ok(Outbox(Box::new(PgJournal::open(store)?))),
        }
    }
}

impl std::ops::Deref for Outbox {
    type Target = dyn Journal;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::ops::DerefMut for Outbox {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.0
    }
}
