//! The journal in SQLite (WAL), beside the credential store: the default,
//! for one machine. Several processes on that machine may share it
//! (SQLite's locking, with a busy timeout); a delivery left `sending` is
//! settled as `unknown` once the process that claimed it (its pid and
//! start time) no longer runs.
//!
//! Never: talks to a platform, or stores a secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Attempt, DROPPED, Delivery, Dump, FORMAT, Journal, JournalError, PostRow, Reopened, State,
    StoredAttempt, StoredDelivery, is_final, shown_state,
};

/// Whether `e` is SQLite saying another connection holds the file.
fn busy(e: &anyhow::Error) -> bool {
    e.downcast_ref::<rusqlite::Error>().is_some_and(|db| {
        matches!(
            db.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    })
}

/// `e` as a [`JournalError`] that names the journal at `path`: a damaged
/// file is said to be one, and SQLite's own error is shown once (its
/// `source` repeats it as "Error code N: …").
fn explain(path: &Path, e: anyhow::Error) -> anyhow::Error {
    if e.is::<JournalError>() {
        return e;
    }
    let Some(db) = e.downcast_ref::<rusqlite::Error>() else {
        return e;
    };
    let detail = db.to_string();
    let damaged = matches!(
        db.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    );
    let path = path.to_path_buf();
    anyhow::Error::new(if damaged {
        JournalError::Damaged { path, detail }
    } else {
        JournalError::Unusable { path, detail }
    })
}

/// Attempts at one delivery since the user last re-opened it (that
/// attempt included), or since the start.
fn attempts_since_request(
    conn: &Connection,
    post: &str,
    target: &str,
    idx: u32,
) -> rusqlite::Result<u32> {
    conn.prepare_cached(
        "SELECT COUNT(*) FROM attempts WHERE post = ?1 AND target = ?2 AND idx = ?3
         AND id >= COALESCE((SELECT MAX(id) FROM attempts
                             WHERE post = ?1 AND target = ?2 AND idx = ?3 AND user_retry IS NOT NULL), 0)",
    )?
    .query_row(params![post, target, idx], |r| r.get(0))
}

/// The SQLite journal (see the module docs of [`crate::outbox`]).
pub struct SqliteJournal {
    conn: Connection,
    path: PathBuf,
    /// The connection's current `synchronous` setting (FULL = true).
    full: std::cell::Cell<bool>,
}

fn row_to_post(r: &rusqlite::Row) -> rusqlite::Result<PostRow> {
    Ok(PostRow {
        id: r.get(0)?,
        path: r.get(1)?,
        content_hash: r.get(2)?,
        source: r.get(3)?,
        scheduled_at: r.get::<_, Option<String>>(4)?.map(|s| parse_ts(&s)),
        created_at: parse_ts(&r.get::<_, String>(5)?),
    })
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default()
}

impl SqliteJournal {
    /// Open (creating if needed) the journal at `path`. A file that is not
    /// a journal, is damaged, or was written by a newer version is refused
    /// untouched.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| JournalError::Unusable {
                path: path.to_path_buf(),
                detail: format!("cannot create its folder {}: {e}", dir.display()),
            })?;
        }
        if path.is_dir() {
            return Err(JournalError::Unusable {
                path: path.to_path_buf(),
                detail: "it is a folder; paths.outbox must name a file".into(),
            }
            .into());
        }
        // Processes that start together on a new journal race to create it;
        // switching it to WAL is refused while another one has it open, and
        // SQLite's busy timeout does not cover that: try again for a while.
        let mut tries: u64 = 0;
        loop {
            match Self::open_checked(path) {
                Err(e) if tries < 100 && busy(&e) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10 + 5 * tries.min(20)));
                }
                r => return r.map_err(|e| explain(path, e)),
            }
        }
    }

    fn open_checked(path: &Path) -> anyhow::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // Reading the format reads the file's header: a file that is not
        // a database fails here, before anything is written.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > FORMAT {
            return Err(newer(&conn, path, version).into());
        }
        // Post texts and ids are private too: owner only.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Up to 32 MiB of pages in memory (SQLite's default is 2 MiB): the
        // posts page and the due-post scan read every delivery, and with
        // the default a journal of 10,000 deliveries was read from the
        // file again on every look.
        conn.pragma_update(None, "cache_size", -32768)?;
        if version == FORMAT {
            return Ok(SqliteJournal {
                conn,
                path: path.to_path_buf(),
                full: std::cell::Cell::new(true),
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS posts (
                id TEXT PRIMARY KEY,
                path TEXT NOT NULL,
                content_hash TEXT NOT NULL,
                source TEXT NOT NULL,
                scheduled_at TEXT,
                created_at TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS deliveries (
                post TEXT NOT NULL REFERENCES posts(id),
                target TEXT NOT NULL,
                idx INTEGER NOT NULL,
                state TEXT NOT NULL,
                platform_id TEXT,
                url TEXT,
                error_kind TEXT,
                error TEXT,
                updated_at TEXT NOT NULL,
                owner TEXT,
                PRIMARY KEY (post, target, idx)
             );
             CREATE TABLE IF NOT EXISTS attempts (
                id INTEGER PRIMARY KEY,
                post TEXT NOT NULL,
                target TEXT NOT NULL,
                idx INTEGER NOT NULL,
                started_at TEXT NOT NULL,
                finished_at TEXT,
                outcome TEXT,
                detail TEXT
             );
             CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries(state);",
        )?;
        migrate(&conn, path)?;
        Ok(SqliteJournal {
            conn,
            path: path.to_path_buf(),
            full: std::cell::Cell::new(true),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A delivery whose state this version knows, or an error that names
    /// it: never a guess.
    fn known_state(&self, (mut d, state): (Delivery, String)) -> anyhow::Result<Delivery> {
        d.state = State::parse(&state).ok_or_else(|| JournalError::UnknownState {
            path: self.path.clone(),
            post: d.post.clone(),
            target: d.target.clone(),
            state: shown_state(&state),
        })?;
        Ok(d)
    }

    /// Fill in [`Delivery::final_`].
    fn with_finality(&self, mut d: Delivery) -> anyhow::Result<Delivery> {
        let attempts = if d.state == State::Failed {
            attempts_since_request(&self.conn, &d.post, &d.target, d.index)?
        } else {
            0
        };
        d.final_ = is_final(d.state, d.error_kind.as_deref(), attempts);
        Ok(d)
    }

    /// Whether the next commits are fsynced (`synchronous = FULL`) or only
    /// written to the log (`NORMAL`: safe against a crashed process, and
    /// made durable by the next FULL commit or checkpoint). Claims before a
    /// send are FULL; registering and settling are NORMAL — losing one to a
    /// power cut can turn a result into `unknown`, never into a second post.
    fn durable(&self, full: bool) -> anyhow::Result<()> {
        if self.full.get() != full {
            self.conn
                .pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })?;
            self.full.set(full);
        }
        Ok(())
    }
}

impl Journal for SqliteJournal {
    fn post(&self, id: &str) -> anyhow::Result<Option<PostRow>> {
        let r = (|| -> anyhow::Result<Option<PostRow>> {
            Ok(self
                .conn
                .prepare_cached(
                    "SELECT id, path, content_hash, source, scheduled_at, created_at FROM posts WHERE id = ?1",
                )?
                .query_row([id], row_to_post)
                .optional()?)
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn register(&mut self, post: &PostRow, deliveries: &[(String, u32)]) -> anyhow::Result<()> {
        let r = (|| -> anyhow::Result<()> {
            self.durable(false)?;
            let now = Utc::now();
            let due = post.scheduled_at.is_none_or(|t| t <= now);
            let tx = self.conn.transaction()?;
            tx.prepare_cached("INSERT INTO posts (id, path, content_hash, source, scheduled_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET path = excluded.path, content_hash = excluded.content_hash,
                    source = excluded.source, scheduled_at = excluded.scheduled_at")?.execute(params![
                    post.id,
                    post.path,
                    post.content_hash,
                    post.source,
                    post.scheduled_at.map(ts),
                    ts(post.created_at)
                ])?;
            for (target, idx) in deliveries {
                tx.prepare_cached("INSERT INTO deliveries (post, target, idx, state, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(post, target, idx) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at,
                        error_kind = CASE WHEN deliveries.state = 'cancelled' THEN NULL ELSE deliveries.error_kind END,
                        error = CASE WHEN deliveries.state = 'cancelled' THEN NULL ELSE deliveries.error END
                     WHERE deliveries.state IN ('queued', 'pending')
                        OR (deliveries.state = 'cancelled' AND deliveries.error_kind = 'dropped')")?.execute(params![
                        post.id,
                        target,
                        idx,
                        if due { State::Pending } else { State::Queued }.as_str(),
                        ts(now)
                    ])?;
            }
            // An edited file that no longer names a target (or has a shorter
            // thread): what had not gone out there is cancelled.
            let waiting: Vec<(String, u32)> = tx
                .prepare(
                    "SELECT target, idx FROM deliveries WHERE post = ?1 AND state IN ('queued', 'pending')",
                )?
                .query_map([&post.id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (target, idx) in waiting {
                if !deliveries.iter().any(|(t, i)| *t == target && *i == idx) {
                    tx.prepare_cached(
                        "UPDATE deliveries SET state = 'cancelled', updated_at = ?4, error_kind = ?5,
                            error = 'the post file no longer names this target (or thread item)'
                         WHERE post = ?1 AND target = ?2 AND idx = ?3",
                    )?
                    .execute(params![post.id, target, idx, ts(now), DROPPED])?;
                }
            }
            tx.commit()?;
            Ok(())
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn deliveries(&self, post: &str) -> anyhow::Result<Vec<Delivery>> {
        let r = (|| -> anyhow::Result<Vec<Delivery>> {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE post = ?1 ORDER BY target, idx"
            ))?;
            let rows = stmt
                .query_map([post], row_to_delivery)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|row| self.with_finality(self.known_state(row)?))
                .collect()
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn processing(&self) -> anyhow::Result<Vec<(Delivery, DateTime<Utc>)>> {
        let r = (|| -> anyhow::Result<Vec<(Delivery, DateTime<Utc>)>> {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE state = 'processing' ORDER BY updated_at"
            ))?;
            let rows = stmt
                .query_map([], row_to_delivery)?
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = Vec::new();
            for row in rows {
                let d = self.known_state(row)?;
                let since: Option<String> = self
                    .conn
                    .prepare_cached(
                        "SELECT MAX(started_at) FROM attempts WHERE post = ?1 AND target = ?2 AND idx = ?3",
                    )?
                    .query_row(params![d.post, d.target, d.index], |r| r.get(0))?;
                let since = since.map(|s| parse_ts(&s)).unwrap_or(d.updated_at);
                out.push((d, since));
            }
            Ok(out)
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn touch_processing(
        &self,
        post: &str,
        target: &str,
        idx: u32,
        platform_id: &str,
        url: Option<&str>,
    ) -> anyhow::Result<()> {
        let r = (|| -> anyhow::Result<()> {
            self.conn.prepare_cached(
                "UPDATE deliveries SET platform_id = ?4, url = COALESCE(?5, url), updated_at = ?6
                 WHERE post = ?1 AND target = ?2 AND idx = ?3 AND state = 'processing'",
            )?
            .execute(params![post, target, idx, platform_id, url, ts(Utc::now())])?;
            Ok(())
        })();
        r.map_err(|e| explain(&self.path, e))
    }

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
    ) -> anyhow::Result<bool> {
        let r = (|| -> anyhow::Result<bool> {
            self.durable(false)?;
            let n = self.conn.prepare_cached(
                "UPDATE deliveries SET state = ?4, platform_id = COALESCE(?5, platform_id), url = COALESCE(?6, url),
                    error_kind = ?7, error = ?8, updated_at = ?9
                 WHERE post = ?1 AND target = ?2 AND idx = ?3 AND state = 'processing'",
            )?
            .execute(params![post, target, idx, state.as_str(), platform_id, url, error_kind, error, ts(Utc::now())])?;
            Ok(n == 1)
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn all(&self) -> anyhow::Result<Vec<(PostRow, Vec<Delivery>)>> {
        let r = (|| -> anyhow::Result<Vec<(PostRow, Vec<Delivery>)>> {
            let mut stmt = self.conn.prepare(
                "SELECT id, path, content_hash, source, scheduled_at, created_at FROM posts ORDER BY created_at DESC",
            )?;
            let posts = stmt
                .query_map([], row_to_post)?
                .collect::<Result<Vec<_>, _>>()?;
            // Every delivery in one query (not one per post), grouped.
            let mut by_post: std::collections::HashMap<String, Vec<Delivery>> =
                std::collections::HashMap::with_capacity(posts.len());
            // With each failed delivery's attempts since the user last
            // retried it, in the same statement (a statement per failed
            // delivery cost more than the rest of the page).
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS},
                   CASE WHEN d.state = 'failed' THEN
                     (SELECT COUNT(*) FROM attempts a
                      WHERE a.post = d.post AND a.target = d.target AND a.idx = d.idx
                        AND a.id >= COALESCE((SELECT MAX(b.id) FROM attempts b
                                              WHERE b.post = d.post AND b.target = d.target
                                                AND b.idx = d.idx AND b.user_retry IS NOT NULL), 0))
                   ELSE 0 END
                 FROM deliveries d ORDER BY post, target, idx"
            ))?;
            let rows = stmt
                .query_map([], |r| Ok((row_to_delivery(r)?, r.get::<_, u32>(10)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            for (row, attempts) in rows {
                let mut d = self.known_state(row)?;
                d.final_ = is_final(d.state, d.error_kind.as_deref(), attempts);
                by_post.entry(d.post.clone()).or_default().push(d);
            }
            Ok(posts
                .into_iter()
                .map(|p| {
                    let d = by_post.remove(&p.id).unwrap_or_default();
                    (p, d)
                })
                .collect())
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn next_due(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let r = (|| -> anyhow::Result<Option<DateTime<Utc>>> {
            let mut stmt = self.conn.prepare(
                "SELECT DISTINCT p.scheduled_at FROM posts p JOIN deliveries d ON d.post = p.id
                 WHERE d.state = 'queued' AND p.scheduled_at IS NOT NULL",
            )?;
            let times = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(times.iter().map(|s| parse_ts(s)).min())
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn last_delivery(&self, target: &str) -> anyhow::Result<Option<Delivery>> {
        let r = (|| -> anyhow::Result<Option<Delivery>> {
            self.conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS}
                     FROM deliveries WHERE target = ?1 AND idx = 0 AND state NOT IN ('queued', 'pending', 'cancelled')
                     ORDER BY updated_at DESC LIMIT 1"
                ))?
                .query_row([target], row_to_delivery)
                .optional()?
                .map(|row| self.with_finality(self.known_state(row)?))
                .transpose()
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn checkpoint(&self) -> anyhow::Result<()> {
        let r = (|| -> anyhow::Result<()> {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn release(&self, post: &str) -> anyhow::Result<()> {
        let r = (|| -> anyhow::Result<()> {
            self.conn.execute(
                "UPDATE deliveries SET state = 'pending', updated_at = ?2 WHERE post = ?1 AND state = 'queued'",
                params![post, ts(Utc::now())],
            )?;
            Ok(())
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn cancel(&self, post: &str) -> anyhow::Result<usize> {
        let r = (|| -> anyhow::Result<usize> {
            self.durable(true)?;
            Ok(self.conn.execute(
                "UPDATE deliveries SET state = 'cancelled', updated_at = ?2, reopened = NULL,
                    error_kind = 'cancelled', error = 'cancelled by the user'
                 WHERE post = ?1 AND state IN ('queued', 'pending', 'failed')",
                params![post, ts(Utc::now())],
            )?)
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn mark_published(
        &self,
        post: &str,
        target: &str,
        idx: u32,
        url: &str,
    ) -> anyhow::Result<usize> {
        let r = (|| -> anyhow::Result<usize> {
            self.durable(true)?;
            Ok(self.conn.execute(
                "UPDATE deliveries SET state = 'published', url = ?4, updated_at = ?5,
                    error_kind = NULL, error = 'marked published by the user'
                 WHERE post = ?1 AND target = ?2 AND idx = ?3 AND state = 'unknown'",
                params![post, target, idx, url, ts(Utc::now())],
            )?)
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn reopen(
        &mut self,
        post: &PostRow,
        items: &[(String, u32, State)],
    ) -> anyhow::Result<Vec<Reopened>> {
        let r = (|| -> anyhow::Result<Vec<Reopened>> {
            self.durable(true)?;
            let now = Utc::now();
            let to = if post.scheduled_at.is_none_or(|t| t <= now) {
                State::Pending
            } else {
                State::Queued
            };
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut out = Vec::new();
            for (target, idx, from) in items {
                if !matches!(from, State::Failed | State::Cancelled | State::Unknown) {
                    continue;
                }
                let n = tx
                    .prepare_cached(
                        "UPDATE deliveries SET state = ?5, reopened = ?4, user_retries = user_retries + 1,
                            error_kind = NULL, error = NULL, updated_at = ?6
                         WHERE post = ?1 AND target = ?2 AND idx = ?3 AND state = ?4",
                    )?
                    .execute(params![
                        post.id,
                        target,
                        idx,
                        from.as_str(),
                        to.as_str(),
                        ts(now)
                    ])?;
                if n == 1 {
                    out.push(Reopened {
                        target: target.clone(),
                        index: *idx,
                        from: *from,
                        to,
                    });
                }
            }
            tx.commit()?;
            Ok(out)
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn begin_many(
        &mut self,
        post: &str,
        items: &[(String, u32, Vec<State>)],
    ) -> anyhow::Result<Vec<Option<i64>>> {
        let r = (|| -> anyhow::Result<Vec<Option<i64>>> {
            self.durable(true)?;
            let now = ts(Utc::now());
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(items.len());
            for (target, idx, from) in items {
                let current: Option<(String, Option<String>, Option<String>)> = tx
                    .prepare_cached(
                        "SELECT state, error_kind, reopened FROM deliveries WHERE post = ?1 AND target = ?2 AND idx = ?3",
                    )?
                    .query_row(params![post, target, idx], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                let Some((state, kind, reopened)) = current else {
                    out.push(None);
                    continue;
                };
                let state = State::parse(&state).ok_or_else(|| JournalError::UnknownState {
                    path: self.path.clone(),
                    post: post.to_string(),
                    target: target.clone(),
                    state: shown_state(&state),
                })?;
                let settled = state == State::Failed
                    && is_final(
                        state,
                        kind.as_deref(),
                        attempts_since_request(&tx, post, target, *idx)?,
                    );
                if !from.contains(&state) || settled {
                    out.push(None);
                    continue;
                }
                tx.prepare_cached(
                    "UPDATE deliveries SET state = 'sending', owner = ?4, updated_at = ?5, reopened = NULL
                     WHERE post = ?1 AND target = ?2 AND idx = ?3",
                )?
                .execute(params![post, target, idx, process_token(), now])?;
                tx.prepare_cached(
                    "INSERT INTO attempts (post, target, idx, started_at, user_retry) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![post, target, idx, now, reopened])?;
                out.push(Some(tx.last_insert_rowid()));
            }
            tx.commit()?;
            Ok(out)
        })();
        r.map_err(|e| explain(&self.path, e))
    }

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
    ) -> anyhow::Result<()> {
        let r = (|| -> anyhow::Result<()> {
            self.durable(false)?;
            let now = ts(Utc::now());
            let tx = self.conn.transaction()?;
            tx.prepare_cached("UPDATE deliveries SET state = ?4, platform_id = COALESCE(?5, platform_id), url = COALESCE(?6, url),
                    error_kind = ?7, error = ?8, updated_at = ?9
                 WHERE post = ?1 AND target = ?2 AND idx = ?3")?.execute(params![post, target, idx, state.as_str(), platform_id, url, error_kind, error, now])?;
            tx.prepare_cached(
                "UPDATE attempts SET finished_at = ?2, outcome = ?3, detail = ?4 WHERE id = ?1",
            )?
            .execute(params![attempt, now, state.as_str(), error.or(platform_id)])?;
            tx.commit()?;
            Ok(())
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn settle_interrupted(&self) -> anyhow::Result<usize> {
        let r = (|| -> anyhow::Result<usize> {
            let now = ts(Utc::now());
            let mut stmt = self.conn.prepare(
                "SELECT post, target, idx, owner FROM deliveries WHERE state = 'sending'",
            )?;
            let stale: Vec<(String, String, u32)> = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })?
                .filter_map(Result::ok)
                .filter(|(.., owner)| !owner.as_deref().is_some_and(process_alive))
                .map(|(p, t, i, _)| (p, t, i))
                .collect();
            for (post, target, idx) in &stale {
                self.conn.execute(
                    "UPDATE deliveries SET state = 'unknown', error_kind = 'outcome-unknown',
                        error = 'outreach stopped while this was being sent; it may or may not have been published',
                        updated_at = ?4
                     WHERE post = ?1 AND target = ?2 AND idx = ?3 AND state = 'sending'",
                    params![post, target, idx, now],
                )?;
                self.conn.execute(
                    "UPDATE attempts SET finished_at = ?4, outcome = 'unknown', detail = 'interrupted'
                     WHERE post = ?1 AND target = ?2 AND idx = ?3 AND finished_at IS NULL",
                    params![post, target, idx, now],
                )?;
            }
            Ok(stale.len())
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn dump(&self) -> anyhow::Result<Dump> {
        let r = (|| -> anyhow::Result<Dump> {
            let posts = self
                .conn
                .prepare(
                    "SELECT id, path, content_hash, source, scheduled_at, created_at FROM posts
                     ORDER BY created_at, id",
                )?
                .query_map([], row_to_post)?
                .collect::<Result<Vec<_>, _>>()?;
            let deliveries = self
                .conn
                .prepare(
                    "SELECT post, target, idx, state, platform_id, url, error_kind, error, updated_at,
                        owner, user_retries, reopened
                     FROM deliveries ORDER BY post, target, idx",
                )?
                .query_map([], |r| {
                    Ok(StoredDelivery {
                        post: r.get(0)?,
                        target: r.get(1)?,
                        index: r.get(2)?,
                        state: r.get(3)?,
                        platform_id: r.get(4)?,
                        url: r.get(5)?,
                        error_kind: r.get(6)?,
                        error: r.get(7)?,
                        updated_at: parse_ts(&r.get::<_, String>(8)?),
                        owner: r.get(9)?,
                        user_retries: r.get(10)?,
                        reopened: r.get(11)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let attempts = self
                .conn
                .prepare(
                    "SELECT post, target, idx, started_at, finished_at, outcome, detail, user_retry
                     FROM attempts ORDER BY id",
                )?
                .query_map([], |r| {
                    Ok(StoredAttempt {
                        post: r.get(0)?,
                        target: r.get(1)?,
                        index: r.get(2)?,
                        started_at: parse_ts(&r.get::<_, String>(3)?),
                        finished_at: r.get::<_, Option<String>>(4)?.map(|s| parse_ts(&s)),
                        outcome: r.get(5)?,
                        detail: r.get(6)?,
                        user_retry: r.get(7)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Dump {
                posts,
                deliveries,
                attempts,
            })
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn restore_dump(&mut self, dump: &Dump) -> anyhow::Result<()> {
        let r = (|| -> anyhow::Result<()> {
            self.durable(true)?;
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for p in &dump.posts {
                tx.prepare_cached("DELETE FROM attempts WHERE post = ?1")?
                    .execute([&p.id])?;
                tx.prepare_cached("DELETE FROM deliveries WHERE post = ?1")?
                    .execute([&p.id])?;
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO posts (id, path, content_hash, source, scheduled_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    p.id,
                    p.path,
                    p.content_hash,
                    p.source,
                    p.scheduled_at.map(ts),
                    ts(p.created_at)
                ])?;
            }
            for d in &dump.deliveries {
                tx.prepare_cached(
                    "INSERT INTO deliveries (post, target, idx, state, platform_id, url, error_kind, error,
                        updated_at, owner, user_retries, reopened)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?
                .execute(params![
                    d.post,
                    d.target,
                    d.index,
                    d.state,
                    d.platform_id,
                    d.url,
                    d.error_kind,
                    d.error,
                    ts(d.updated_at),
                    d.owner,
                    d.user_retries,
                    d.reopened
                ])?;
            }
            for a in &dump.attempts {
                tx.prepare_cached(
                    "INSERT INTO attempts (post, target, idx, started_at, finished_at, outcome, detail, user_retry)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    a.post,
                    a.target,
                    a.index,
                    ts(a.started_at),
                    a.finished_at.map(ts),
                    a.outcome,
                    a.detail,
                    a.user_retry
                ])?;
            }
            tx.commit()?;
            Ok(())
        })();
        r.map_err(|e| explain(&self.path, e))
    }

    fn attempts(&self, post: &str) -> anyhow::Result<Vec<Attempt>> {
        let r = (|| -> anyhow::Result<Vec<Attempt>> {
            let mut stmt = self.conn.prepare(
                "SELECT target, idx, started_at, finished_at, outcome, detail, user_retry FROM attempts WHERE post = ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map([post], |r| {
                    Ok(Attempt {
                        target: r.get(0)?,
                        index: r.get(1)?,
                        started_at: parse_ts(&r.get::<_, String>(2)?),
                        finished_at: r.get::<_, Option<String>>(3)?.map(|s| parse_ts(&s)),
                        outcome: r.get(4)?,
                        detail: r.get(5)?,
                        user_retry: r.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })();
        r.map_err(|e| explain(&self.path, e))
    }
}

/// Bring a journal up to [`FORMAT`]. Version 2: user retries
/// (`deliveries.user_retries`, the pending `deliveries.reopened` marker,
/// `attempts.user_retry`). Version 3: the `meta` table, whose `writer` row
/// names the outreach that set the format (so an older outreach can say
/// which version it would need). Columns are added only where missing, in
/// one immediate transaction, so processes opening the journal together do
/// no harm; one that a newer outreach upgraded meanwhile is left alone.
fn migrate(conn: &Connection, path: &Path) -> anyhow::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| -> anyhow::Result<()> {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > FORMAT {
            return Err(newer(conn, path, version).into());
        }
        for (table, column, decl) in [
            ("deliveries", "user_retries", "INTEGER NOT NULL DEFAULT 0"),
            ("deliveries", "reopened", "TEXT"),
            ("attempts", "user_retry", "TEXT"),
        ] {
            let present: bool = conn.query_row(
                &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get(0),
            )?;
            if !present {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
            }
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             -- An account's last delivery (the dashboard) and one delivery's
             -- attempts (whether a failure is final): a scan of the whole
             -- table each without these.
             CREATE INDEX IF NOT EXISTS deliveries_target ON deliveries(target, idx, updated_at);
             CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts(post, target, idx);",
        )?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('writer', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [writer()],
        )?;
        conn.execute_batch(&format!("PRAGMA user_version = {FORMAT}"))?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// This outreach, as a journal's `meta.writer` names it.
fn writer() -> String {
    format!("outreach {}", env!("CARGO_PKG_VERSION"))
}

/// The refusal of a journal of format `found` (higher than [`FORMAT`]),
/// naming the outreach that wrote it when the journal says.
fn newer(conn: &Connection, path: &Path, found: i64) -> JournalError {
    let writer = conn
        .query_row("SELECT value FROM meta WHERE key = 'writer'", [], |r| {
            r.get::<_, String>(0)
        })
        .ok()
        .filter(|w| !w.trim().is_empty() && w.len() <= 100 && !w.contains(char::is_control))
        .unwrap_or_else(|| "a newer version of outreach".into());
    JournalError::Newer {
        path: path.to_path_buf(),
        found,
        writer,
    }
}

/// The columns [`row_to_delivery`] reads, in order.
const DELIVERY_COLUMNS: &str =
    "post, target, idx, state, platform_id, url, error_kind, error, updated_at, user_retries";

/// A delivery row, with its state as the journal spells it (checked by
/// [`SqliteJournal::known_state`]).
fn row_to_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Delivery, String)> {
    let state: String = r.get(3)?;
    let d = Delivery {
        post: r.get(0)?,
        target: r.get(1)?,
        index: r.get(2)?,
        state: State::Pending,
        platform_id: r.get(4)?,
        url: r.get(5)?,
        error_kind: r.get(6)?,
        error: r.get(7)?,
        updated_at: parse_ts(&r.get::<_, String>(8)?),
        user_retries: r.get(9)?,
        final_: false,
    };
    Ok((d, state))
}

/// This process, as `pid:start-time` (the start time guards against a
/// reused pid).
/// This process as `pid:start-time` (read once).
fn process_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let pid = std::process::id();
        format!("{pid}:{}", start_time(pid).unwrap_or_default())
    })
}

fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19).map(str::to_string)
}

/// Whether the process that wrote `token` still runs.
fn process_alive(token: &str) -> bool {
    let Some((pid, start)) = token.split_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    start_time(pid).is_some_and(|s| s == start)
}
