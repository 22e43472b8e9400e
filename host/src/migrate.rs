//! Moving between store backends: `outreach store migrate --to postgres`
//! (and `--to files`).
//!
//! Owns the copy: every account record, every aux secret and the whole
//! publishing journal (posts, deliveries, attempts) from the backend the
//! user leaves to the one they go to, then a check that reads everything
//! back from the destination and compares it with the source. Records go
//! through the store API, so the destination seals them its own way with
//! the same identity (and its own extra recipients).
//!
//! Safe to run again: records and aux secrets are overwritten, and the
//! journal's posts are replaced whole, in one transaction, so an
//! interrupted run leaves at worst a partial copy that the next run
//! completes. The source is only read.
//!
//! Never: writes to the source, copies a half-finished token exchange (an
//! escrowed answer waiting to be applied is refused with what to do), or
//! prints a secret (records are compared as bytes, never shown).

use std::collections::HashSet;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::config::StoreBackend;
use crate::error::bad;
use crate::services::Services;
use crate::store::{AccountId, Record};

/// What a migration copied.
#[derive(Debug, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub accounts: usize,
    pub aux: usize,
    pub posts: usize,
    pub deliveries: usize,
    pub attempts: usize,
    /// Accounts the destination already had that the source does not:
    /// left as they are.
    pub kept_in_destination: Vec<String>,
}

fn name(b: StoreBackend) -> &'static str {
    match b {
        StoreBackend::Files => "files",
        StoreBackend::Postgres => "postgres",
    }
}

/// A record as the bytes it is sealed from, for comparing.
fn plain(r: &Record) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(serde_json::to_vec(r).expect("records always serialise"))
}

/// Copy everything from the other backend to `to`, then check the copy.
pub fn migrate(svc: &Services, to: StoreBackend) -> anyhow::Result<Report> {
    let from = match to {
        StoreBackend::Files => StoreBackend::Postgres,
        StoreBackend::Postgres => StoreBackend::Files,
    };
    let (src, src_journal) = svc
        .backend(from)
        .map_err(|e| anyhow::anyhow!("cannot open the source ({} backend): {e:#}", name(from)))?;
    let (dst, mut dst_journal) = svc.backend(to).map_err(|e| {
        anyhow::anyhow!("cannot open the destination ({} backend): {e:#}", name(to))
    })?;

    // Read everything first: an unreadable source stops the copy before
    // anything is written.
    let ids = src.list()?;
    let mut records = Vec::with_capacity(ids.len());
    for id in &ids {
        if src.read_answer(id)?.is_some() {
            return Err(bad!(
                "{id} has a token answer waiting to be applied (a refresh was interrupted); run `outreach refresh {id}` so it is applied, then migrate again; nothing was copied"
            ));
        }
        let record = src.load(id).map_err(|e| {
            anyhow::anyhow!("cannot read {id} from the source: {e}; nothing was copied")
        })?;
        records.push(record);
    }
    let aux_names = src.aux_names()?;
    let mut aux = Vec::with_capacity(aux_names.len());
    for n in &aux_names {
        if let Some(bytes) = src.load_aux(n)? {
            aux.push((n.clone(), Zeroizing::new(bytes)));
        }
    }
    let journal = src_journal.dump()?;

    // Copy.
    for r in &records {
        dst.save(r)
            .map_err(|e| anyhow::anyhow!("cannot write {} to the destination: {e}", r.id))?;
    }
    for (n, bytes) in &aux {
        dst.save_aux(n, bytes)?;
    }
    dst_journal.restore_dump(&journal)?;

    // Check: everything reads back as it was.
    for r in &records {
        let back = dst.load(&r.id).map_err(|e| {
            anyhow::anyhow!(
                "the copy of {} cannot be read back: {e}; run the migration again",
                r.id
            )
        })?;
        if plain(&back) != plain(r) {
            return Err(anyhow::anyhow!(
                "the copy of {} differs from the source; run the migration again (the source is unchanged)",
                r.id
            ));
        }
    }
    for (n, bytes) in &aux {
        if dst.load_aux(n)?.as_deref() != Some(bytes.as_slice()) {
            return Err(anyhow::anyhow!(
                "the copy of the store entry {n} differs from the source; run the migration again"
            ));
        }
    }
    let keep: HashSet<&str> = journal.posts.iter().map(|p| p.id.as_str()).collect();
    if dst_journal.dump()?.only(&keep) != journal {
        return Err(anyhow::anyhow!(
            "the copy of the publishing journal differs from the source; run the migration again (the source is unchanged)"
        ));
    }
    let copied: HashSet<&AccountId> = ids.iter().collect();
    let kept_in_destination = dst
        .list()?
        .into_iter()
        .filter(|id| !copied.contains(id))
        .map(|id| id.to_string())
        .collect();
    Ok(Report {
        from: name(from).into(),
        to: name(to).into(),
        accounts: records.len(),
        aux: aux.len(),
        posts: journal.posts.len(),
        deliveries: journal.deliveries.len(),
        attempts: journal.attempts.len(),
        kept_in_destination,
    })
}
