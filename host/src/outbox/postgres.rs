//! The journal in PostgreSQL (`[store] backend = "postgres"`): the same
//! rows as the SQLite journal, in the database the credential store uses,
//! shared by every daemon and command on it.
//!
//! Owns:
//! - the claim: a delivery goes to `sending` in one transaction that
//!   locks its row (`FOR UPDATE SKIP LOCKED`: a row another process is
//!   claiming is skipped, never waited for and sent twice) and checks its
//!   state, so of all the daemons on the database one sends it, once;
//! - the owner of a claim: each process names itself (host, pid, a random
//!   part) and holds a session advisory lock on that name for as long as
//!   it runs, on a connection of its own. A delivery left `sending` by an
//!   owner whose lock is free — the process died, or lost its connection
//!   and with it the lock — is settled as `unknown`
//!   ([`Journal::settle_interrupted`], which every daemon runs every few
//!   seconds), never sent again on its own;
//! - the instance lock's health: a process whose lock connection broke
//!   takes the lock again at its next settle round.
//!
//! The connection, pools, retries, TLS, messages and the schema's
//! migrations are the credential store's (`crate::store::postgres`): one
//! database, one migrator. A write whose connection broke is retried only
//! where that is safe: a claim that did commit before the connection broke
//! is not claimed again (its row is `sending` already), so the delivery is
//! left to settle as `unknown` rather than sent twice.
//!
//! Never: talks to a platform, stores a secret, or waits on a row another
//! daemon holds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx_core::Error as SqlError;
use sqlx_core::query::query;
use sqlx_core::query_scalar::query_scalar;
use sqlx_core::row::Row;
use sqlx_postgres::{PgPool, PgRow};

use super::{
    Attempt, DROPPED, Delivery, Dump, Journal, JournalError, PostRow, Reopened, State,
    StoredAttempt, StoredDelivery, is_final, shown_state,
};
use crate::config::StoreConfig;
use crate::store::postgres::{Db, HeldLock};

/// This process as the journal names a claim's owner, and the advisory
/// lock it holds while it runs.
struct Instance {
    name: String,
    held: Mutex<Option<HeldLock>>,
}

fn instance_key(name: &str) -> i64 {
    let h = Sha256::digest(format!("outreach/instance/{name}"));
    i64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

fn instance() -> &'static Instance {
    static ME: OnceLock<Instance> = OnceLock::new();
    ME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let random = uuid::Uuid::new_v4().simple().to_string();
        let random = &random[..12];
        Instance {
            name: format!("{host}:{}:{random}", std::process::id()),
            held: Mutex::new(None),
        }
    })
}

/// The PostgreSQL journal (see the module docs).
pub struct PgJournal {
    db: Arc<Db>,
    /// How messages name the journal: the database, never its password.
    place: PathBuf,
}

/// The columns [`delivery`] reads, then the attempts a failed delivery has
/// made since the user last asked (what makes it final).
const DELIVERY: &str =
    "d.post, d.target, d.idx, d.state, d.platform_id, d.url, d.error_kind, d.error,
    d.updated_at, d.user_retries,
    CASE WHEN d.state = 'failed' THEN
      (SELECT count(*) FROM outreach_attempts a
       WHERE a.post = d.post AND a.target = d.target AND a.idx = d.idx
         AND a.id >= COALESCE((SELECT max(b.id) FROM outreach_attempts b
                               WHERE b.post = d.post AND b.target = d.target AND b.idx = d.idx
                                 AND b.user_retry IS NOT NULL), 0))
    ELSE 0 END AS tries";

const POST: &str = "id, path, content_hash, source, scheduled_at, created_at";

fn post_row(r: &PgRow) -> Result<PostRow, SqlError> {
    Ok(PostRow {
        id: r.try_get(0)?,
        path: r.try_get(1)?,
        content_hash: r.try_get(2)?,
        source: r.try_get(3)?,
        scheduled_at: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

/// An outcome's optional fields (platform id, URL, error kind, error),
/// owned to go into a query. A NUL, which PostgreSQL's text refuses (and
/// SQLite keeps), becomes U+FFFD: a platform's answer holding one must not
/// leave its delivery unrecorded.
fn owned(fields: [Option<&str>; 4]) -> [Option<String>; 4] {
    fields.map(|f| f.map(|s| s.replace('\0', "\u{FFFD}")))
}

/// A delivery row as read: the delivery, its state as spelled, and its
/// attempts since the user last asked.
type RawDelivery = (Delivery, String, i64);

fn delivery(r: &PgRow) -> Result<RawDelivery, SqlError> {
    let d = Delivery {
        post: r.try_get(0)?,
        target: r.try_get(1)?,
        index: r.try_get::<i32, _>(2)? as u32,
        state: State::Pending,
        platform_id: r.try_get(4)?,
        url: r.try_get(5)?,
        error_kind: r.try_get(6)?,
        error: r.try_get(7)?,
        updated_at: r.try_get(8)?,
        user_retries: r.try_get::<i32, _>(9)? as u32,
        final_: false,
    };
    Ok((d, r.try_get(3)?, r.try_get(10)?))
}

impl PgJournal {
    /// The journal in the database `store` names: its schema brought up
    /// to date, and this process's instance lock taken.
    pub fn open(store: &StoreConfig) -> anyhow::Result<Self> {
        let retry = std::time::Duration::from_secs(store.connect_retry_secs);
        let db = Db::shared(&store.url_env, retry, store.pool_size)?;
        db.migrate()?;
        let journal = PgJournal {
            place: PathBuf::from(format!("in the PostgreSQL database {}", db.target)),
            db,
        };
        journal.hold_instance()?;
        Ok(journal)
    }

    /// Take this process's instance lock if it is not held (first use, or
    /// its connection broke and the server released it).
    fn hold_instance(&self) -> anyhow::Result<()> {
        let me = instance();
        let mut held = me.held.lock().expect("instance lock");
        if held.as_ref().is_some_and(HeldLock::alive) {
            return Ok(());
        }
        if held.take().is_some() {
            tracing::warn!(
                "the connection holding this process's journal lock broke; taking the lock again"
            );
        }
        *held = Some(self.db.hold(instance_key(&me.name), || {
            "cannot take this process's journal lock".to_string()
        })?);
        Ok(())
    }

    /// Run `op` on the pool (retrying transient failures); a failure says
    /// `what` failed.
    fn run<T, F, Fut>(&self, what: &str, op: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: Fn(PgPool) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, SqlError>> + Send + 'static,
    {
        let what = format!("the journal: {what}");
        Ok(self.db.run(|| what, op)?)
    }

    /// A delivery whose state this version knows, with its finality.
    fn known(&self, (mut d, state, tries): RawDelivery) -> anyhow::Result<Delivery> {
        d.state = State::parse(&state).ok_or_else(|| JournalError::UnknownState {
            path: self.place.clone(),
            post: d.post.clone(),
            target: d.target.clone(),
            state: shown_state(&state),
        })?;
        d.final_ = is_final(d.state, d.error_kind.as_deref(), tries as u32);
        Ok(d)
    }

    fn deliveries_where(
        &self,
        what: &str,
        filter: &'static str,
        arg: Option<String>,
    ) -> anyhow::Result<Vec<Delivery>> {
        let rows = self.run(what, move |pool| {
            let arg = arg.clone();
            async move {
                let sql = format!("SELECT {DELIVERY} FROM outreach_deliveries d {filter}");
                let mut q = query(sqlx_core::sql_str::AssertSqlSafe(sql));
                if let Some(a) = arg {
                    q = q.bind(a);
                }
                q.fetch_all(&pool)
                    .await?
                    .iter()
                    .map(delivery)
                    .collect::<Result<Vec<_>, _>>()
            }
        })?;
        rows.into_iter().map(|r| self.known(r)).collect()
    }
}

impl Journal for PgJournal {
    fn post(&self, id: &str) -> anyhow::Result<Option<PostRow>> {
        let id = id.to_string();
        self.run("cannot read a post", move |pool| {
            let id = id.clone();
            async move {
                query(sqlx_core::sql_str::AssertSqlSafe(format!(
                    "SELECT {POST} FROM outreach_posts WHERE id = $1"
                )))
                .bind(id)
                .fetch_optional(&pool)
                .await?
                .as_ref()
                .map(post_row)
                .transpose()
            }
        })
    }

    fn register(&mut self, post: &PostRow, deliveries: &[(String, u32)]) -> anyhow::Result<()> {
        let (post, deliveries) = (post.clone(), deliveries.to_vec());
        self.run("cannot register a post", move |pool| {
            let (post, deliveries) = (post.clone(), deliveries.clone());
            async move {
                let now = Utc::now();
                let due = post.scheduled_at.is_none_or(|t| t <= now);
                let initial = if due { State::Pending } else { State::Queued };
                let mut tx = pool.begin().await?;
                query(
                    "INSERT INTO outreach_posts (id, path, content_hash, source, scheduled_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (id) DO UPDATE SET path = EXCLUDED.path,
                        content_hash = EXCLUDED.content_hash, source = EXCLUDED.source,
                        scheduled_at = EXCLUDED.scheduled_at",
                )
                .bind(&post.id)
                .bind(&post.path)
                .bind(&post.content_hash)
                .bind(&post.source)
                .bind(post.scheduled_at)
                .bind(post.created_at)
                .execute(&mut *tx)
                .await?;
                for (target, idx) in &deliveries {
                    query(
                        "INSERT INTO outreach_deliveries (post, target, idx, state, updated_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (post, target, idx) DO UPDATE SET state = EXCLUDED.state,
                            updated_at = EXCLUDED.updated_at,
                            error_kind = CASE WHEN outreach_deliveries.state = 'cancelled'
                                         THEN NULL ELSE outreach_deliveries.error_kind END,
                            error = CASE WHEN outreach_deliveries.state = 'cancelled'
                                    THEN NULL ELSE outreach_deliveries.error END
                         WHERE outreach_deliveries.state IN ('queued', 'pending')
                            OR (outreach_deliveries.state = 'cancelled'
                                AND outreach_deliveries.error_kind = 'dropped')",
                    )
                    .bind(&post.id)
                    .bind(target)
                    .bind(*idx as i32)
                    .bind(initial.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                // An edited file that no longer names a target (or has a
                // shorter thread): what had not gone out there is cancelled.
                let waiting: Vec<(String, i32)> = query(
                    "SELECT target, idx FROM outreach_deliveries
                     WHERE post = $1 AND state IN ('queued', 'pending') FOR UPDATE",
                )
                .bind(&post.id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, SqlError>>()?;
                for (target, idx) in waiting {
                    if !deliveries
                        .iter()
                        .any(|(t, i)| *t == target && *i as i32 == idx)
                    {
                        query(
                            "UPDATE outreach_deliveries SET state = 'cancelled', updated_at = $4,
                                error_kind = $5,
                                error = 'the post file no longer names this target (or thread item)'
                             WHERE post = $1 AND target = $2 AND idx = $3",
                        )
                        .bind(&post.id)
                        .bind(target)
                        .bind(idx)
                        .bind(now)
                        .bind(DROPPED)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await
            }
        })
    }

    fn deliveries(&self, post: &str) -> anyhow::Result<Vec<Delivery>> {
        self.deliveries_where(
            "cannot read a post's deliveries",
            "WHERE d.post = $1 ORDER BY d.target, d.idx",
            Some(post.to_string()),
        )
    }

    fn processing(&self) -> anyhow::Result<Vec<(Delivery, DateTime<Utc>)>> {
        let rows = self.run(
            "cannot read the posts still processing",
            |pool| async move {
                query(sqlx_core::sql_str::AssertSqlSafe(format!(
                    "SELECT {DELIVERY},
                    (SELECT max(started_at) FROM outreach_attempts a
                     WHERE a.post = d.post AND a.target = d.target AND a.idx = d.idx) AS since
                 FROM outreach_deliveries d WHERE d.state = 'processing' ORDER BY d.updated_at"
                )))
                .fetch_all(&pool)
                .await?
                .iter()
                .map(|r| Ok((delivery(r)?, r.try_get::<Option<DateTime<Utc>>, _>(11)?)))
                .collect::<Result<Vec<_>, SqlError>>()
            },
        )?;
        rows.into_iter()
            .map(|(raw, since)| {
                let d = self.known(raw)?;
                let since = since.unwrap_or(d.updated_at);
                Ok((d, since))
            })
            .collect()
    }

    fn touch_processing(
        &self,
        post: &str,
        target: &str,
        idx: u32,
        platform_id: &str,
        url: Option<&str>,
    ) -> anyhow::Result<()> {
        let key = (post.to_string(), target.to_string(), idx as i32);
        let [platform_id, url, ..] = owned([Some(platform_id), url, None, None]);
        self.run("cannot note a processing post", move |pool| {
            let (key, platform_id, url) = (key.clone(), platform_id.clone(), url.clone());
            async move {
                query(
                    "UPDATE outreach_deliveries SET platform_id = $4, url = COALESCE($5, url),
                        updated_at = now()
                     WHERE post = $1 AND target = $2 AND idx = $3 AND state = 'processing'",
                )
                .bind(key.0)
                .bind(key.1)
                .bind(key.2)
                .bind(platform_id)
                .bind(url)
                .execute(&pool)
                .await
                .map(drop)
            }
        })
    }

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
        let key = (post.to_string(), target.to_string(), idx as i32);
        let fields = owned([platform_id, url, error_kind, error]);
        self.run("cannot record how a processing post settled", move |pool| {
            let (key, [id, url, kind, error]) = (key.clone(), fields.clone());
            async move {
                let n = query(
                    "UPDATE outreach_deliveries SET state = $4,
                        platform_id = COALESCE($5, platform_id), url = COALESCE($6, url),
                        error_kind = $7, error = $8, updated_at = now()
                     WHERE post = $1 AND target = $2 AND idx = $3 AND state = 'processing'",
                )
                .bind(key.0)
                .bind(key.1)
                .bind(key.2)
                .bind(state.as_str())
                .bind(id)
                .bind(url)
                .bind(kind)
                .bind(error)
                .execute(&pool)
                .await?;
                Ok(n.rows_affected() == 1)
            }
        })
    }

    fn all(&self) -> anyhow::Result<Vec<(PostRow, Vec<Delivery>)>> {
        let posts = self.run("cannot list the posts", |pool| async move {
            query(sqlx_core::sql_str::AssertSqlSafe(format!(
                "SELECT {POST} FROM outreach_posts ORDER BY created_at DESC"
            )))
            .fetch_all(&pool)
            .await?
            .iter()
            .map(post_row)
            .collect::<Result<Vec<_>, _>>()
        })?;
        let mut by_post: std::collections::HashMap<String, Vec<Delivery>> =
            std::collections::HashMap::with_capacity(posts.len());
        for d in self.deliveries_where(
            "cannot list the deliveries",
            "ORDER BY d.post, d.target, d.idx",
            None,
        )? {
            by_post.entry(d.post.clone()).or_default().push(d);
        }
        Ok(posts
            .into_iter()
            .map(|p| {
                let d = by_post.remove(&p.id).unwrap_or_default();
                (p, d)
            })
            .collect())
    }

    fn due(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<PostRow>> {
        self.run("cannot list the posts due", move |pool| async move {
            query(sqlx_core::sql_str::AssertSqlSafe(format!(
                "SELECT {POST} FROM outreach_posts p
                 WHERE p.scheduled_at <= $1 AND EXISTS (
                    SELECT 1 FROM outreach_deliveries d WHERE d.post = p.id AND d.state = 'queued')
                 ORDER BY p.created_at"
            )))
            .bind(now)
            .fetch_all(&pool)
            .await?
            .iter()
            .map(post_row)
            .collect()
        })
    }

    fn next_due(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        self.run("cannot read the next schedule", |pool| async move {
            query_scalar(
                "SELECT min(p.scheduled_at) FROM outreach_posts p
                 WHERE EXISTS (SELECT 1 FROM outreach_deliveries d
                               WHERE d.post = p.id AND d.state = 'queued')",
            )
            .fetch_one(&pool)
            .await
        })
    }

    fn last_delivery(&self, target: &str) -> anyhow::Result<Option<Delivery>> {
        Ok(self
            .deliveries_where(
                "cannot read an account's last post",
                "WHERE d.target = $1 AND d.idx = 0
                   AND d.state NOT IN ('queued', 'pending', 'cancelled')
                 ORDER BY d.updated_at DESC LIMIT 1",
                Some(target.to_string()),
            )?
            .pop())
    }

    fn checkpoint(&self) -> anyhow::Result<()> {
        // The server keeps its own write-ahead log.
        Ok(())
    }

    fn release(&self, post: &str) -> anyhow::Result<()> {
        let post = post.to_string();
        self.run("cannot release a due post", move |pool| {
            let post = post.clone();
            async move {
                query(
                    "UPDATE outreach_deliveries SET state = 'pending', updated_at = now()
                     WHERE post = $1 AND state = 'queued'",
                )
                .bind(post)
                .execute(&pool)
                .await
                .map(drop)
            }
        })
    }

    fn cancel(&self, post: &str) -> anyhow::Result<usize> {
        let post = post.to_string();
        self.run("cannot cancel a post", move |pool| {
            let post = post.clone();
            async move {
                let n = query(
                    "UPDATE outreach_deliveries SET state = 'cancelled', updated_at = now(),
                        reopened = NULL, error_kind = 'cancelled', error = 'cancelled by the user'
                     WHERE post = $1 AND state IN ('queued', 'pending', 'failed')",
                )
                .bind(post)
                .execute(&pool)
                .await?;
                Ok(n.rows_affected() as usize)
            }
        })
    }

    fn mark_published(
        &self,
        post: &str,
        target: &str,
        idx: u32,
        url: &str,
    ) -> anyhow::Result<usize> {
        let key = (post.to_string(), target.to_string(), idx as i32);
        let url = url.to_string();
        self.run("cannot mark a post published", move |pool| {
            let (key, url) = (key.clone(), url.clone());
            async move {
                let n = query(
                    "UPDATE outreach_deliveries SET state = 'published', url = $4, updated_at = now(),
                        error_kind = NULL, error = 'marked published by the user'
                     WHERE post = $1 AND target = $2 AND idx = $3 AND state = 'unknown'",
                )
                .bind(key.0)
                .bind(key.1)
                .bind(key.2)
                .bind(url)
                .execute(&pool)
                .await?;
                Ok(n.rows_affected() as usize)
            }
        })
    }

    fn reopen(
        &mut self,
        post: &PostRow,
        items: &[(String, u32, State)],
    ) -> anyhow::Result<Vec<Reopened>> {
        let now = Utc::now();
        let to = if post.scheduled_at.is_none_or(|t| t <= now) {
            State::Pending
        } else {
            State::Queued
        };
        let (id, items) = (post.id.clone(), items.to_vec());
        self.run("cannot re-open deliveries", move |pool| {
            let (id, items) = (id.clone(), items.clone());
            async move {
                let mut tx = pool.begin().await?;
                let mut out = Vec::new();
                for (target, idx, from) in items {
                    if !matches!(from, State::Failed | State::Cancelled | State::Unknown) {
                        continue;
                    }
                    let n = query(
                        "UPDATE outreach_deliveries SET state = $5, reopened = $4,
                            user_retries = user_retries + 1, error_kind = NULL, error = NULL,
                            updated_at = $6
                         WHERE post = $1 AND target = $2 AND idx = $3 AND state = $4",
                    )
                    .bind(&id)
                    .bind(&target)
                    .bind(idx as i32)
                    .bind(from.as_str())
                    .bind(to.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if n.rows_affected() == 1 {
                        out.push(Reopened {
                            target,
                            index: idx,
                            from,
                            to,
                        });
                    }
                }
                tx.commit().await?;
                Ok(out)
            }
        })
    }

    fn begin_many(
        &mut self,
        post: &str,
        items: &[(String, u32, Vec<State>)],
    ) -> anyhow::Result<Vec<Option<i64>>> {
        let (post, items) = (post.to_string(), items.to_vec());
        let owner = instance().name.clone();
        let place = self.place.clone();
        let claimed = self.run("cannot claim deliveries for sending", move |pool| {
            let (post, items, owner, place) =
                (post.clone(), items.clone(), owner.clone(), place.clone());
            async move {
                let mut tx = pool.begin().await?;
                let mut out = Vec::with_capacity(items.len());
                for (target, idx, from) in items {
                    // Another daemon claiming this row right now: skipped,
                    // not waited for (it sends it).
                    let row = query(sqlx_core::sql_str::AssertSqlSafe(format!(
                        "SELECT {DELIVERY}, d.reopened FROM outreach_deliveries d
                         WHERE d.post = $1 AND d.target = $2 AND d.idx = $3
                         FOR UPDATE OF d SKIP LOCKED"
                    )))
                    .bind(&post)
                    .bind(&target)
                    .bind(idx as i32)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        out.push(Ok(None));
                        continue;
                    };
                    let (d, state, tries) = delivery(&row)?;
                    let reopened: Option<String> = row.try_get(11)?;
                    let Some(state) = State::parse(&state) else {
                        out.push(Err(JournalError::UnknownState {
                            path: place.clone(),
                            post: d.post,
                            target: d.target,
                            state: shown_state(&state),
                        }));
                        break;
                    };
                    let settled = state == State::Failed
                        && is_final(state, d.error_kind.as_deref(), tries as u32);
                    if !from.contains(&state) || settled {
                        out.push(Ok(None));
                        continue;
                    }
                    query(
                        "UPDATE outreach_deliveries SET state = 'sending', owner = $4,
                            updated_at = now(), reopened = NULL
                         WHERE post = $1 AND target = $2 AND idx = $3",
                    )
                    .bind(&post)
                    .bind(&target)
                    .bind(idx as i32)
                    .bind(&owner)
                    .execute(&mut *tx)
                    .await?;
                    let id: i64 = query_scalar(
                        "INSERT INTO outreach_attempts (post, target, idx, started_at, user_retry)
                         VALUES ($1, $2, $3, now(), $4) RETURNING id",
                    )
                    .bind(&post)
                    .bind(&target)
                    .bind(idx as i32)
                    .bind(reopened)
                    .fetch_one(&mut *tx)
                    .await?;
                    out.push(Ok(Some(id)));
                }
                if out.iter().any(Result::is_err) {
                    tx.rollback().await?;
                } else {
                    tx.commit().await?;
                }
                Ok(out)
            }
        })?;
        Ok(claimed.into_iter().collect::<Result<_, _>>()?)
    }

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
        let key = (post.to_string(), target.to_string(), idx as i32);
        let fields = owned([platform_id, url, error_kind, error]);
        self.run("cannot record how a delivery went", move |pool| {
            let (key, [f_id, f_url, f_kind, f_error]) = (key.clone(), fields.clone());
            async move {
                let mut tx = pool.begin().await?;
                query(
                    "UPDATE outreach_deliveries SET state = $4,
                        platform_id = COALESCE($5, platform_id), url = COALESCE($6, url),
                        error_kind = $7, error = $8, updated_at = now(), owner = NULL
                     WHERE post = $1 AND target = $2 AND idx = $3",
                )
                .bind(&key.0)
                .bind(&key.1)
                .bind(key.2)
                .bind(state.as_str())
                .bind(&f_id)
                .bind(&f_url)
                .bind(&f_kind)
                .bind(&f_error)
                .execute(&mut *tx)
                .await?;
                query(
                    "UPDATE outreach_attempts SET finished_at = now(), outcome = $2, detail = $3
                     WHERE id = $1",
                )
                .bind(attempt)
                .bind(state.as_str())
                .bind(f_error.or(f_id))
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }
        })
    }

    fn settle_interrupted(&self) -> anyhow::Result<usize> {
        self.hold_instance()?;
        let me = instance().name.clone();
        self.run("cannot settle interrupted deliveries", move |pool| {
            let me = me.clone();
            async move {
                let owners: Vec<Option<String>> = query_scalar(
                    "SELECT DISTINCT owner FROM outreach_deliveries WHERE state = 'sending'",
                )
                .fetch_all(&pool)
                .await?;
                let mut settled = 0;
                for owner in owners {
                    if owner.as_deref() == Some(me.as_str()) {
                        continue;
                    }
                    // The owner's instance lock is free: it is gone. Taken
                    // and released on one connection.
                    if let Some(o) = &owner {
                        let mut conn = pool.acquire().await?;
                        let key = instance_key(o);
                        let free: bool = query_scalar("SELECT pg_try_advisory_lock($1)")
                            .bind(key)
                            .fetch_one(&mut *conn)
                            .await?;
                        if !free {
                            continue;
                        }
                        query("SELECT pg_advisory_unlock($1)")
                            .bind(key)
                            .execute(&mut *conn)
                            .await?;
                    }
                    let mut tx = pool.begin().await?;
                    let stale: Vec<(String, String, i32)> = query(
                        "SELECT post, target, idx FROM outreach_deliveries
                         WHERE state = 'sending' AND owner IS NOT DISTINCT FROM $1
                         FOR UPDATE SKIP LOCKED",
                    )
                    .bind(&owner)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                    .collect::<Result<_, SqlError>>()?;
                    for (post, target, idx) in &stale {
                        query(
                            "UPDATE outreach_deliveries SET state = 'unknown',
                                error_kind = 'outcome-unknown',
                                error = 'outreach stopped while this was being sent; it may or may not have been published',
                                updated_at = now(), owner = NULL
                             WHERE post = $1 AND target = $2 AND idx = $3 AND state = 'sending'",
                        )
                        .bind(post)
                        .bind(target)
                        .bind(idx)
                        .execute(&mut *tx)
                        .await?;
                        query(
                            "UPDATE outreach_attempts SET finished_at = now(), outcome = 'unknown',
                                detail = 'interrupted'
                             WHERE post = $1 AND target = $2 AND idx = $3 AND finished_at IS NULL",
                        )
                        .bind(post)
                        .bind(target)
                        .bind(idx)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    settled += stale.len();
                }
                Ok(settled)
            }
        })
    }

    fn dump(&self) -> anyhow::Result<Dump> {
        self.run("cannot read every row", |pool| async move {
            let mut tx = pool.begin().await?;
            // One snapshot of all three tables.
            query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
            let posts = query(sqlx_core::sql_str::AssertSqlSafe(format!(
                "SELECT {POST} FROM outreach_posts ORDER BY created_at, id"
            )))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(post_row)
            .collect::<Result<Vec<_>, _>>()?;
            let deliveries = query(
                "SELECT post, target, idx, state, platform_id, url, error_kind, error, updated_at,
                    owner, user_retries, reopened
                 FROM outreach_deliveries ORDER BY post, target, idx",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok(StoredDelivery {
                    post: r.try_get(0)?,
                    target: r.try_get(1)?,
                    index: r.try_get::<i32, _>(2)? as u32,
                    state: r.try_get(3)?,
                    platform_id: r.try_get(4)?,
                    url: r.try_get(5)?,
                    error_kind: r.try_get(6)?,
                    error: r.try_get(7)?,
                    updated_at: r.try_get(8)?,
                    owner: r.try_get(9)?,
                    user_retries: r.try_get::<i32, _>(10)? as u32,
                    reopened: r.try_get(11)?,
                })
            })
            .collect::<Result<Vec<_>, SqlError>>()?;
            let attempts = query(
                "SELECT post, target, idx, started_at, finished_at, outcome, detail, user_retry
                 FROM outreach_attempts ORDER BY id",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok(StoredAttempt {
                    post: r.try_get(0)?,
                    target: r.try_get(1)?,
                    index: r.try_get::<i32, _>(2)? as u32,
                    started_at: r.try_get(3)?,
                    finished_at: r.try_get(4)?,
                    outcome: r.try_get(5)?,
                    detail: r.try_get(6)?,
                    user_retry: r.try_get(7)?,
                })
            })
            .collect::<Result<Vec<_>, SqlError>>()?;
            tx.commit().await?;
            Ok(Dump {
                posts,
                deliveries,
                attempts,
            })
        })
    }

    fn restore_dump(&mut self, dump: &Dump) -> anyhow::Result<()> {
        let dump = Arc::new(dump.clone());
        self.run("cannot copy rows in", move |pool| {
            let dump = dump.clone();
            async move {
                let ids: Vec<String> = dump.posts.iter().map(|p| p.id.clone()).collect();
                let mut tx = pool.begin().await?;
                query("DELETE FROM outreach_attempts WHERE post = ANY($1)")
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
                query("DELETE FROM outreach_deliveries WHERE post = ANY($1)")
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
                query("DELETE FROM outreach_posts WHERE id = ANY($1)")
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
                // Column by column, each table in one statement.
                let col = |f: fn(&PostRow) -> String| dump.posts.iter().map(f).collect::<Vec<_>>();
                query(
                    "INSERT INTO outreach_posts (id, path, content_hash, source, scheduled_at, created_at)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[],
                                          $5::timestamptz[], $6::timestamptz[])",
                )
                .bind(&ids)
                .bind(col(|p| p.path.clone()))
                .bind(col(|p| p.content_hash.clone()))
                .bind(col(|p| p.source.clone()))
                .bind(dump.posts.iter().map(|p| p.scheduled_at).collect::<Vec<_>>())
                .bind(dump.posts.iter().map(|p| p.created_at).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
                let d = &dump.deliveries;
                let text = |f: fn(&StoredDelivery) -> Option<String>| d.iter().map(f).collect::<Vec<_>>();
                query(
                    "INSERT INTO outreach_deliveries (post, target, idx, state, platform_id, url,
                        error_kind, error, updated_at, owner, user_retries, reopened)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[], $4::text[], $5::text[],
                        $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::text[],
                        $11::int[], $12::text[])",
                )
                .bind(text(|d| Some(d.post.clone())))
                .bind(text(|d| Some(d.target.clone())))
                .bind(d.iter().map(|d| d.index as i32).collect::<Vec<_>>())
                .bind(text(|d| Some(d.state.clone())))
                .bind(text(|d| d.platform_id.clone()))
                .bind(text(|d| d.url.clone()))
                .bind(text(|d| d.error_kind.clone()))
                .bind(text(|d| d.error.clone()))
                .bind(d.iter().map(|d| d.updated_at).collect::<Vec<_>>())
                .bind(text(|d| d.owner.clone()))
                .bind(d.iter().map(|d| d.user_retries as i32).collect::<Vec<_>>())
                .bind(text(|d| d.reopened.clone()))
                .execute(&mut *tx)
                .await?;
                let a = &dump.attempts;
                let text = |f: fn(&StoredAttempt) -> Option<String>| a.iter().map(f).collect::<Vec<_>>();
                // WITH ORDINALITY keeps their order in the new ids.
                query(
                    "INSERT INTO outreach_attempts (post, target, idx, started_at, finished_at,
                        outcome, detail, user_retry)
                     SELECT post, target, idx, started_at, finished_at, outcome, detail, user_retry
                     FROM UNNEST($1::text[], $2::text[], $3::int[], $4::timestamptz[],
                        $5::timestamptz[], $6::text[], $7::text[], $8::text[])
                        WITH ORDINALITY AS t(post, target, idx, started_at, finished_at, outcome,
                                             detail, user_retry, n)
                     ORDER BY n",
                )
                .bind(text(|a| Some(a.post.clone())))
                .bind(text(|a| Some(a.target.clone())))
                .bind(a.iter().map(|a| a.index as i32).collect::<Vec<_>>())
                .bind(a.iter().map(|a| a.started_at).collect::<Vec<_>>())
                .bind(a.iter().map(|a| a.finished_at).collect::<Vec<_>>())
                .bind(text(|a| a.outcome.clone()))
                .bind(text(|a| a.detail.clone()))
                .bind(text(|a| a.user_retry.clone()))
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }
        })
    }

    fn attempts(&self, post: &str) -> anyhow::Result<Vec<Attempt>> {
        let post = post.to_string();
        self.run("cannot read a post's attempts", move |pool| {
            let post = post.clone();
            async move {
                query(
                    "SELECT target, idx, started_at, finished_at, outcome, detail, user_retry
                     FROM outreach_attempts WHERE post = $1 ORDER BY id",
                )
                .bind(post)
                .fetch_all(&pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(Attempt {
                        target: r.try_get(0)?,
                        index: r.try_get::<i32, _>(1)? as u32,
                        started_at: r.try_get(2)?,
                        finished_at: r.try_get(3)?,
                        outcome: r.try_get(4)?,
                        detail: r.try_get(5)?,
                        user_retry: r.try_get(6)?,
                    })
                })
                .collect()
            }
        })
    }
}
