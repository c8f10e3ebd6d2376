//! The apply algorithm: how committed log entries change the database. The `Applier` actor
//! calls it on its writer connection, and `tests/determinism.rs` calls it on fresh databases to
//! show that the same log gives the same database.
//!
//! A run of entries is one SQLite transaction: each entry's statements (with the entry's seed
//! for SQLite's PRNG, so that anything not rewritten is still deterministic), then the applied
//! log id and the membership into the meta table, then COMMIT (docs/DESIGN.md §5, invariant 2).
//! Entries at or below the recorded applied id are skipped, so nothing is applied twice. A
//! statement that runs past its deterministic step budget is interrupted, which makes SQLite
//! roll the whole transaction back: the batch is then run again from the start with that
//! statement answered by the interrupt error, on every replica alike. A database load
//! (`Command::Load`) replaces the whole database on its own, between runs.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use openraft::EntryPayload;

use crate::raft::{Entry, LogId, StoredMembership};
use crate::store::codec;
use crate::store::command::{Command, ExecOptions, Response, Statement};
use crate::store::db::{Db, Hooks, Mode};
use crate::store::{KEY_APPLIED, KEY_MEMBERSHIP};

/// Counters the applier shares with `/status`.
#[derive(Default, Debug)]
pub struct ApplierStats {
    /// Entries applied since this process started.
    pub applied_since_start: AtomicU64,
    /// Entries applied since start whose index was already in the log at start (replay).
    pub replayed_at_start: AtomicU64,
    /// Entries offered again at or below the applied index and skipped (must stay 0).
    pub reapplied_skipped: AtomicU64,
    /// One past the last log index present at start (0: the log was empty).
    pub replay_bound: AtomicU64,
    /// Applied index found in the database at start.
    pub applied_at_start: AtomicU64,
    /// Current applied index.
    pub applied_index: AtomicU64,
    pub batches: AtomicU64,
    /// When the leader proposed the last applied entry (Unix ms; 0 = unknown).
    pub last_applied_proposed_ms: AtomicI64,
}

/// The applied log id and membership recorded in the database.
pub fn read_state(db: &Db<'_>) -> rusqlite::Result<(Option<LogId>, StoredMembership)> {
    let applied = match db.meta_get(KEY_APPLIED)? {
        Some(b) => codec::decode::<Option<LogId>>(&b).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?,
        None => None,
    };
    let membership = match db.meta_get(KEY_MEMBERSHIP)? {
        Some(b) => {
            codec::decode::<StoredMembership>(&b).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?
        }
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// What one pass over a batch produced, or which statement forced a re-run.
enum Pass {
    Done(Vec<Response>, Option<LogId>, StoredMembership),
    /// Statement `stmt` of the entry at position `entry` was interrupted and SQLite rolled the
    /// whole transaction back.
    Rerun {
        entry: usize,
        stmt: usize,
    },
}

fn apply_pass(
    db: &Db<'_>,
    entries: &[Entry],
    applied: Option<LogId>,
    mut membership: StoredMembership,
    timed_out: &[(usize, usize)],
) -> Pass {
    let mut out = Vec::with_capacity(entries.len());
    let mut last = applied;
    for (pos, e) in entries.iter().enumerate() {
        let index = e.log_id.index;
        if Some(e.log_id) <= applied {
            out.push(Response { raft_index: index, ..Default::default() });
            continue;
        }
        let resp = match &e.payload {
            EntryPayload::Blank => Response { raft_index: index, ..Default::default() },
            EntryPayload::Membership(m) => {
                membership = StoredMembership::new(Some(e.log_id), m.clone());
                Response { raft_index: index, ..Default::default() }
            }
            EntryPayload::Normal(Command::Load { .. }) => {
                // `apply_entries` hands loads to `load_image`, never to a batch.
                Response { raft_index: index, error: Some("load inside a batch".into()), ..Default::default() }
            }
            EntryPayload::Normal(Command::Batch(cmds)) => {
                // Statement positions count through the whole batch, so a deterministic re-run
                // after an interrupt skips exactly the statement that timed out.
                let skip: Vec<usize> = timed_out.iter().filter(|(p, _)| *p == pos).map(|(_, s)| *s).collect();
                let mut parts = Vec::with_capacity(cmds.len());
                let mut offset = 0;
                for (k, cmd) in cmds.iter().enumerate() {
                    let Some((stmts, opts, seed, mode)) = parts_of(cmd) else {
                        parts.push(Response {
                            raft_index: index,
                            error: Some("not batchable".into()),
                            ..Default::default()
                        });
                        continue;
                    };
                    db.seed(seed ^ index ^ ((k as u64) << 48));
                    let local: Vec<usize> = skip
                        .iter()
                        .filter(|s| (offset..offset + stmts.len()).contains(*s))
                        .map(|s| s - offset)
                        .collect();
                    match db.run_in_batch(stmts, opts, mode, &local) {
                        Ok(results) => {
                            parts.push(Response { results, error: None, raft_index: index, parts: Vec::new() })
                        }
                        Err(stmt) => return Pass::Rerun { entry: pos, stmt: offset + stmt },
                    }
                    offset += stmts.len();
                }
                Response { raft_index: index, parts, ..Default::default() }
            }
            EntryPayload::Normal(cmd) => {
                let Some((stmts, opts, seed, mode)) = parts_of(cmd) else {
                    out.push(Response { raft_index: index, ..Default::default() });
                    last = Some(e.log_id);
                    continue;
                };
                db.seed(seed ^ index);
                let skip: Vec<usize> = timed_out.iter().filter(|(p, _)| *p == pos).map(|(_, s)| *s).collect();
                match db.run_in_batch(stmts, opts, mode, &skip) {
                    Ok(results) => Response { results, error: None, raft_index: index, parts: Vec::new() },
                    Err(stmt) => return Pass::Rerun { entry: pos, stmt },
                }
            }
        };
        out.push(resp);
        last = Some(e.log_id);
    }
    Pass::Done(out, last, membership)
}

/// The statements, options, seed and mode of a command that runs SQL.
fn parts_of(cmd: &Command) -> Option<(&[Statement], &ExecOptions, u64, Mode)> {
    match cmd {
        Command::Execute { stmts, opts, seed } => Some((stmts, opts, *seed, Mode::Write)),
        Command::Query { stmts, opts, seed } => Some((stmts, opts, *seed, Mode::Query)),
        Command::Request { stmts, opts, seed } => Some((stmts, opts, *seed, Mode::Request)),
        Command::Load { .. } | Command::Batch(_) => None,
    }
}

fn storage_error(msg: &str) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(msg.into())
}

fn is_load(e: &Entry) -> bool {
    matches!(&e.payload, EntryPayload::Normal(Command::Load { .. }))
}

/// Apply committed entries: runs of ordinary entries as one transaction each, and each database
/// load on its own (it replaces the whole database).
pub fn apply_entries(
    c: &mut rusqlite::Connection,
    hooks: &Hooks,
    entries: Vec<Entry>,
    stats: &ApplierStats,
) -> rusqlite::Result<Vec<Response>> {
    if !entries.iter().any(is_load) {
        return apply_batch(c, hooks, entries, stats);
    }
    let mut out = Vec::with_capacity(entries.len());
    let mut run = Vec::new();
    for e in entries {
        if is_load(&e) {
            out.extend(apply_batch(c, hooks, std::mem::take(&mut run), stats)?);
            out.push(load_image(c, hooks, e, stats)?);
        } else {
            run.push(e);
        }
    }
    out.extend(apply_batch(c, hooks, run, stats)?);
    Ok(out)
}

/// Replace the whole database with a loaded image, atomically: the image is checked, brought to
/// this database's page size, given this entry's applied index and the current membership, and
/// copied in with the backup API (one write transaction). An invalid image changes nothing but
/// the applied index, and the response says why.
fn load_image(
    c: &mut rusqlite::Connection,
    hooks: &Hooks,
    e: Entry,
    stats: &ApplierStats,
) -> rusqlite::Result<Response> {
    let index = e.log_id.index;
    let (applied, membership) = read_state(&Db::new(c, hooks))?;
    if Some(e.log_id) <= applied {
        stats.reapplied_skipped.fetch_add(1, Ordering::Relaxed);
        return Ok(Response { raft_index: index, ..Default::default() });
    }
    let EntryPayload::Normal(Command::Load { image }) = e.payload else {
        return Ok(Response { raft_index: index, ..Default::default() });
    };
    let enc = |r: Result<Vec<u8>, codec::CodecError>| r.map_err(|e| storage_error(&e.to_string()));
    let applied_now = enc(codec::encode(&Some(e.log_id)))?;
    let members = enc(codec::encode(&membership))?;
    let db_path = c.path().map(std::path::PathBuf::from).unwrap_or_default();
    let tmp = db_path.with_extension("sqlite.loading");
    let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let prepared = std::fs::write(&tmp, &image).map_err(|e| e.to_string()).and_then(|_| {
        crate::store::dump::prepare_image(
            &tmp,
            page_size,
            &[(KEY_APPLIED, applied_now.clone()), (KEY_MEMBERSHIP, members.clone())],
        )
    });
    let resp = match prepared {
        Ok(()) => {
            let src = rusqlite::Connection::open(&tmp)?;
            let b = rusqlite::backup::Backup::new(&src, c)?;
            loop {
                match b.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    _ => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
            tracing::info!(index, bytes = image.len(), "database replaced by a loaded image");
            Response { raft_index: index, ..Default::default() }
        }
        Err(msg) => {
            let db = Db::new(c, hooks);
            db.internal(|c| c.execute_batch("BEGIN IMMEDIATE"))?;
            db.meta_put(KEY_APPLIED, &applied_now)?;
            db.internal(|c| c.execute_batch("COMMIT"))?;
            Response { raft_index: index, error: Some(msg), ..Default::default() }
        }
    };
    let _ = std::fs::remove_file(&tmp);
    stats.applied_since_start.fetch_add(1, Ordering::Relaxed);
    stats.applied_index.store(index, Ordering::Relaxed);
    Ok(resp)
}

fn apply_batch(
    c: &rusqlite::Connection,
    hooks: &Hooks,
    entries: Vec<Entry>,
    stats: &ApplierStats,
) -> rusqlite::Result<Vec<Response>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let started = std::time::Instant::now();
    let db = Db::new(c, hooks);
    let (applied, membership) = read_state(&db)?;
    let changes_at_start = db.reported_changes();
    let mut timed_out: Vec<(usize, usize)> = Vec::new();
    loop {
        db.internal(|c| c.execute_batch("BEGIN IMMEDIATE"))?;
        match apply_pass(&db, &entries, applied, membership.clone(), &timed_out) {
            Pass::Rerun { entry, stmt } => {
                // SQLite already rolled the transaction back; start the batch over.
                if !c.is_autocommit() {
                    let _ = db.internal(|c| c.execute_batch("ROLLBACK"));
                }
                db.set_reported_changes(changes_at_start);
                timed_out.push((entry, stmt));
            }
            Pass::Done(out, last, membership) => {
                let result = (|| {
                    fail::fail_point!("applier::before_commit");
                    // The effects and the applied index must commit together (invariant 2).
                    if c.is_autocommit() {
                        return Err(storage_error("the batch transaction was rolled back unexpectedly"));
                    }
                    if last != applied {
                        let enc = |r: Result<Vec<u8>, codec::CodecError>| r.map_err(|e| storage_error(&e.to_string()));
                        db.meta_put(KEY_APPLIED, &enc(codec::encode(&last))?)?;
                        db.meta_put(KEY_MEMBERSHIP, &enc(codec::encode(&membership))?)?;
                    }
                    db.internal(|c| c.execute_batch("COMMIT"))
                })();
                if let Err(e) = result {
                    let _ = db.internal(|c| c.execute_batch("ROLLBACK"));
                    return Err(e);
                }
                let replay_bound = stats.replay_bound.load(Ordering::Relaxed);
                for e in &entries {
                    if Some(e.log_id) <= applied {
                        stats.reapplied_skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if e.log_id.index < replay_bound {
                        stats.replayed_at_start.fetch_add(1, Ordering::Relaxed);
                    }
                    if let EntryPayload::Normal(cmd) = &e.payload {
                        let first = match cmd {
                            Command::Batch(cmds) => cmds.first(),
                            c => Some(c),
                        };
                        if let Some((_, opts, _, _)) = first.and_then(parts_of) {
                            if opts.proposed_at_ms > 0 {
                                stats.last_applied_proposed_ms.store(opts.proposed_at_ms, Ordering::Relaxed);
                            }
                        }
                    }
                    stats.applied_since_start.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(l) = last {
                    stats.applied_index.store(l.index, Ordering::Relaxed);
                }
                stats.batches.fetch_add(1, Ordering::Relaxed);
                metrics::histogram!("raftlite_apply_batch_entries").record(entries.len() as f64);
                metrics::histogram!("raftlite_apply_seconds").record(started.elapsed().as_secs_f64());
                metrics::counter!("raftlite_applied_entries_total").increment(entries.len() as u64);
                return Ok(out);
            }
        }
    }
}
