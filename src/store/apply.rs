//! The apply algorithm: how committed log entries change the database. The `Applier` actor
//! calls it on its writer connection, and `tests/determinism.rs` calls it on fresh databases to
//! show that the same log gives the same database.
//!
//! A run of entries is one SQLite transaction: each entry's statements (with the entry's seed
//! for SQLite's PRNG, so that anything not rewritten is still deterministic), then the stamp of
//! the last entry's index in the header (`store::position`), then COMMIT; the caller's
//! [`Applied`] then moves to the last entry (docs/DESIGN.md §5, invariant 2). Entries at or
//! below [`Applied`] are skipped, so nothing is applied twice. A
//! statement that runs past its deterministic step budget is interrupted, which makes SQLite
//! roll the whole transaction back: the batch is then run again from the start with that
//! statement answered by the interrupt error, on every replica alike. A database load
//! (`Command::Load`) replaces the whole database on its own, between runs.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use openraft::EntryPayload;

use crate::raft::{Entry, LogId, StoredMembership};
use crate::store::command::{Command, ExecOptions, Response, Statement, StmtResult};
use crate::store::db::{Db, Hooks, Mode};
use crate::store::position;

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
    /// Index of the last applied entry that carried a command (a write, a load): what an
    /// automatic backup is identified by (blank and membership entries change no data).
    pub last_change_index: AtomicU64,
    pub batches: AtomicU64,
    /// When the leader proposed the last applied entry (Unix ms; 0 = unknown).
    pub last_applied_proposed_ms: AtomicI64,
}

/// Where the database stands: the last log entry applied to it and the membership that entry
/// (or an earlier one) set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    pub log_id: Option<LogId>,
    pub membership: StoredMembership,
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
        if let EntryPayload::Normal(cmd) = &e.payload {
            db.cdc_entry(index, proposed_at_ms(cmd).saturating_mul(1_000_000));
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

/// When the leader proposed a command (Unix ms; 0 if it carries none), the same on every
/// replica: what `freshness_strict` reads compare and the commit time CDC reports.
fn proposed_at_ms(cmd: &Command) -> i64 {
    let first = match cmd {
        Command::Batch(cmds) => cmds.first(),
        c => Some(c),
    };
    first.and_then(parts_of).map_or(0, |(_, opts, _, _)| opts.proposed_at_ms)
}

/// The statements, options, seed and mode of a command that runs SQL.
fn parts_of(cmd: &Command) -> Option<(&[Statement], &ExecOptions, u64, Mode)> {
    match cmd {
        Command::Execute { stmts, opts, seed } => Some((stmts, opts, *seed, Mode::Write)),
        Command::Query { stmts, opts, seed } => Some((stmts, opts, *seed, Mode::Query)),
        Command::Request { stmts, opts, seed } => Some((stmts, opts, *seed, Mode::Request)),
        Command::Load { .. } | Command::Batch(_) | Command::CdcHighWater(_) => None,
    }
}

/// A load or `VACUUM` changed no rows the way CDC reports them: the queue only learns how far
/// the database is (a failure is logged; at worst a restart replays from the last checkpoint).
fn nothing_captured_to(hooks: &Hooks, index: u64) {
    if let Some(cdc) = hooks.cdc() {
        if let Err(e) = cdc.queue.captured_to(index) {
            tracing::error!(error = %e, index, "CDC: cannot record the position in the queue");
        }
    }
}

/// The highest CDC high-water mark the new entries of a batch carry.
fn high_water_mark(entries: &[Entry], applied: Option<LogId>) -> Option<u64> {
    entries
        .iter()
        .filter(|e| Some(e.log_id) > applied)
        .filter_map(|e| match &e.payload {
            EntryPayload::Normal(Command::CdcHighWater(i)) => Some(*i),
            _ => None,
        })
        .max()
}

fn storage_error(msg: &str) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(msg.into())
}

/// An entry that is one `VACUUM` (`-auto-vacuum-int`, or a client's): SQLite refuses it inside a
/// transaction, so it runs on its own between runs.
fn is_vacuum(e: &Entry) -> bool {
    matches!(&e.payload, EntryPayload::Normal(Command::Execute { stmts, .. })
        if stmts.len() == 1 && stmts[0].params.is_empty() && crate::store::sql::is_vacuum(&stmts[0].sql))
}

/// Run a `VACUUM` entry outside any transaction. It rewrites the file without changing what it
/// holds, so running it again after a crash (the position moves after it) changes nothing.
fn vacuum(c: &rusqlite::Connection, hooks: &Hooks, e: Entry, stats: &ApplierStats, at: &mut Applied) -> Response {
    let index = e.log_id.index;
    if Some(e.log_id) <= at.log_id {
        stats.reapplied_skipped.fetch_add(1, Ordering::Relaxed);
        return Response { raft_index: index, ..Default::default() };
    }
    let started = std::time::Instant::now();
    let db = Db::new(c, hooks);
    // VACUUM cannot share a transaction with the stamp; run again after a crash in between, it
    // changes nothing.
    let done = db.vacuum().and_then(|()| db.internal(|c| position::set_stamp(c, index)));
    let result = match done {
        Ok(()) => StmtResult::Write { last_insert_id: 0, rows_affected: 0, time: started.elapsed().as_secs_f64() },
        Err(err) => StmtResult::Error { error: err.to_string(), time: started.elapsed().as_secs_f64() },
    };
    at.log_id = Some(e.log_id);
    stats.applied_since_start.fetch_add(1, Ordering::Relaxed);
    stats.applied_index.store(index, Ordering::Relaxed);
    stats.last_change_index.store(index, Ordering::Relaxed);
    nothing_captured_to(hooks, index);
    Response { results: vec![result], raft_index: index, ..Default::default() }
}

fn is_load(e: &Entry) -> bool {
    matches!(&e.payload, EntryPayload::Normal(Command::Load { .. }))
}

/// Apply committed entries: runs of ordinary entries as one transaction each, and each database
/// load on its own (it replaces the whole database).
/// `at` is where the database stands; it moves with every run committed.
pub fn apply_entries(
    c: &mut rusqlite::Connection,
    hooks: &Hooks,
    entries: Vec<Entry>,
    stats: &ApplierStats,
    at: &mut Applied,
) -> rusqlite::Result<Vec<Response>> {
    if !entries.iter().any(|e| is_load(e) || is_vacuum(e)) {
        return apply_batch(c, hooks, entries, stats, at);
    }
    let mut out = Vec::with_capacity(entries.len());
    let mut run = Vec::new();
    for e in entries {
        if is_load(&e) {
            out.extend(apply_batch(c, hooks, std::mem::take(&mut run), stats, at)?);
            out.push(load_image(c, hooks, e, stats, at)?);
        } else if is_vacuum(&e) {
            out.extend(apply_batch(c, hooks, std::mem::take(&mut run), stats, at)?);
            out.push(vacuum(c, hooks, e, stats, at));
        } else {
            run.push(e);
        }
    }
    out.extend(apply_batch(c, hooks, run, stats, at)?);
    Ok(out)
}

/// Replace the whole database with a loaded image, atomically: the image is checked, brought to
/// this database's page size and copied in with the backup API (one write transaction). An
/// invalid image changes nothing but the applied position, and the response says why.
fn load_image(
    c: &mut rusqlite::Connection,
    hooks: &Hooks,
    e: Entry,
    stats: &ApplierStats,
    at: &mut Applied,
) -> rusqlite::Result<Response> {
    let index = e.log_id.index;
    if Some(e.log_id) <= at.log_id {
        stats.reapplied_skipped.fetch_add(1, Ordering::Relaxed);
        return Ok(Response { raft_index: index, ..Default::default() });
    }
    let EntryPayload::Normal(Command::Load { image }) = e.payload else {
        return Ok(Response { raft_index: index, ..Default::default() });
    };
    let db_path = c.path().map(std::path::PathBuf::from).unwrap_or_default();
    let tmp = db_path.with_extension("sqlite.loading");
    let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    // The image carries this entry's stamp, so the copy and the stamp land in one transaction.
    let prepared = std::fs::write(&tmp, &image)
        .map_err(|e| e.to_string())
        .and_then(|_| crate::store::dump::prepare_image(&tmp, page_size))
        .and_then(|_| position::stamp_file(&tmp, index).map_err(|e| e.to_string()));
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
            Db::new(c, hooks).internal(|c| position::set_stamp(c, index))?;
            Response { raft_index: index, error: Some(msg), ..Default::default() }
        }
    };
    at.log_id = Some(e.log_id);
    let _ = std::fs::remove_file(&tmp);
    nothing_captured_to(hooks, index);
    stats.applied_since_start.fetch_add(1, Ordering::Relaxed);
    stats.applied_index.store(index, Ordering::Relaxed);
    stats.last_change_index.store(index, Ordering::Relaxed);
    Ok(resp)
}

fn apply_batch(
    c: &rusqlite::Connection,
    hooks: &Hooks,
    entries: Vec<Entry>,
    stats: &ApplierStats,
    at: &mut Applied,
) -> rusqlite::Result<Vec<Response>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let started = std::time::Instant::now();
    let db = Db::new(c, hooks);
    let (applied, membership) = (at.log_id, at.membership.clone());
    let changes_at_start = db.reported_changes();
    let mut timed_out: Vec<(usize, usize)> = Vec::new();
    let cdc = hooks.cdc().cloned();
    loop {
        if let Some(cdc) = &cdc {
            cdc.capture.reset();
        }
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
                    if c.is_autocommit() {
                        return Err(storage_error("the batch transaction was rolled back unexpectedly"));
                    }
                    // The batch's row changes are queued before it commits, so that the queue is
                    // never behind the database (src/cdc/queue.rs, invariant 7).
                    let mut queued = 0;
                    if let Some(cdc) = &cdc {
                        let groups = cdc.capture.take();
                        let hwm = high_water_mark(&entries, applied);
                        let through = last.map_or(0, |l| l.index);
                        queued = cdc.queue.append(&groups, hwm, through).map_err(|e| storage_error(&e.to_string()))?;
                    }
                    // The stamp commits with the effects (invariant 2, `store::position`).
                    if let Some(l) = last.filter(|_| last != applied) {
                        db.internal(|c| position::set_stamp(c, l.index))?;
                    }
                    db.internal(|c| c.execute_batch("COMMIT")).map(|_| queued)
                })();
                let queued = match result {
                    Ok(queued) => queued,
                    Err(e) => {
                        let _ = db.internal(|c| c.execute_batch("ROLLBACK"));
                        return Err(e);
                    }
                };
                if let Some(cdc) = &cdc {
                    cdc.committed(queued);
                }
                // Committed: the position moves with it, before anything else can fail
                // (invariant 2).
                *at = Applied { log_id: last, membership };
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
                        if !matches!(cmd, Command::CdcHighWater(_)) {
                            stats.last_change_index.store(e.log_id.index, Ordering::Relaxed);
                        }
                        let proposed = proposed_at_ms(cmd);
                        if proposed > 0 {
                            stats.last_applied_proposed_ms.store(proposed, Ordering::Relaxed);
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
