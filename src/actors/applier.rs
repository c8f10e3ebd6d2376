//! The `Applier` actor: owns the single writer connection to the SQLite database, on a thread of
//! its own where it calls SQLite inline (`start_on_own_thread`), and applies committed log
//! entries with the apply algorithm of `store::apply`: a batch of entries is one SQLite
//! transaction that also records the applied log id and membership (docs/DESIGN.md §5,
//! invariant 2), so after any crash the database and its applied index agree and nothing is
//! applied twice. Every handler runs under the panic guard; a panic or storage error restarts
//! the actor, which reopens the database.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;

use crate::actors::supervise::{guard, guarded, note_restart, settle, stop_on_fault, Fault};
use crate::raft::{Entry, LogId, StoredMembership};
pub use crate::store::apply::ApplierStats;
use crate::store::apply::{apply_entries, read_state};
use crate::store::command::Response;
use crate::store::db::{self, swap_in, Db, Hooks};

const ACTOR: &str = "applier";

pub struct Applier {
    path: PathBuf,
    fk: bool,
    conn: Option<(rusqlite::Connection, Hooks)>,
    stats: Arc<ApplierStats>,
}

impl Applier {
    pub fn new(path: PathBuf, fk: bool, stats: Arc<ApplierStats>) -> Self {
        Applier { path, fk, conn: None, stats }
    }

    /// Open the writer connection. A failure is logged and retried by the next request.
    fn open(&mut self) {
        match settle(ACTOR, guarded(ACTOR, || db::open_writer(&self.path, self.fk))) {
            Ok(c) => self.conn = Some(c),
            Err(e) => tracing::error!(error = %e, "cannot open the database"),
        }
    }

    /// Run `f` on the writer connection, here on the actor's own thread. A panic or storage error
    /// stops the actor, and its supervisor restarts it with the database reopened.
    fn with_conn<T, E: std::fmt::Display>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut rusqlite::Connection, &Hooks) -> Result<T, E>,
    ) -> Result<T, Fault> {
        if self.conn.is_none() {
            self.open();
        }
        let res = match self.conn.as_mut() {
            Some((c, hooks)) => settle(ACTOR, guarded(ACTOR, || f(c, hooks))),
            None => Err(Fault::Unavailable(ACTOR)),
        };
        stop_on_fault(ctx, ACTOR, res)
    }
}

impl Actor for Applier {
    type Context = Context<Self>;
    fn started(&mut self, _ctx: &mut Context<Self>) {
        self.open();
    }
}

impl Supervised for Applier {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Dropping the connection rolls back any transaction a failed batch left open.
        self.conn = None;
        note_restart(ACTOR);
    }
}

/// Apply committed entries.
#[derive(Message)]
#[rtype(result = "Result<Vec<Response>, Fault>")]
pub struct Apply(pub Vec<Entry>);

/// The applied log id and membership recorded in the database.
#[derive(Message)]
#[rtype(result = "Result<(Option<LogId>, StoredMembership), Fault>")]
pub struct AppliedState;

/// Compaction: make everything applied so far durable (a checkpoint fsyncs the WAL first) and say
/// which log position and membership that covers, so the log up to there may be purged
/// (docs/DESIGN.md §5, invariant 4). Cost: the WAL written since the last checkpoint, not the database.
#[derive(Message)]
#[rtype(result = "Result<(Option<LogId>, StoredMembership), Fault>")]
pub struct Compact;

/// Checkpoint the WAL (`TRUNCATE`: reset it to zero bytes when no reader needs it). Returns
/// SQLite's (busy, log frames, checkpointed frames).
#[derive(Message)]
#[rtype(result = "Result<(i64, i64, i64), Fault>")]
pub struct Checkpoint;

/// Replace the database with a verified snapshot copy and reopen.
#[derive(Message)]
#[rtype(result = "Result<(), Fault>")]
pub struct ReplaceDb(pub PathBuf);

impl Handler<Apply> for Applier {
    type Result = Result<Vec<Response>, Fault>;
    fn handle(&mut self, msg: Apply, ctx: &mut Context<Self>) -> Self::Result {
        let stats = self.stats.clone();
        self.with_conn(ctx, move |c, h| apply_entries(c, h, msg.0, &stats))
    }
}

impl Handler<AppliedState> for Applier {
    type Result = Result<(Option<LogId>, StoredMembership), Fault>;
    fn handle(&mut self, _msg: AppliedState, ctx: &mut Context<Self>) -> Self::Result {
        self.with_conn(ctx, |c, h| read_state(&Db::new(c, h)))
    }
}

impl Handler<Checkpoint> for Applier {
    type Result = Result<(i64, i64, i64), Fault>;
    fn handle(&mut self, _msg: Checkpoint, ctx: &mut Context<Self>) -> Self::Result {
        self.with_conn(ctx, |c, h| {
            Db::new(c, h).internal(|c| {
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            })
        })
    }
}

impl Handler<Compact> for Applier {
    type Result = Result<(Option<LogId>, StoredMembership), Fault>;
    fn handle(&mut self, _msg: Compact, ctx: &mut Context<Self>) -> Self::Result {
        self.with_conn(ctx, |c, h| {
            let db = Db::new(c, h);
            let state = read_state(&db)?;
            // With synchronous=NORMAL a checkpoint syncs the WAL before copying it back, so
            // everything committed so far (and so `state`) is durable once it returns.
            db.internal(|c| c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())))?;
            Ok::<_, rusqlite::Error>(state)
        })
    }
}

impl Handler<ReplaceDb> for Applier {
    type Result = Result<(), Fault>;
    fn handle(&mut self, msg: ReplaceDb, ctx: &mut Context<Self>) -> Self::Result {
        // Close the writer before the file under it changes.
        self.conn = None;
        let (path, fk) = (&self.path, self.fk);
        let replaced = guard(ctx, ACTOR, |_| {
            swap_in(&msg.0, path)
                .map_err(|e| e.to_string())
                .and_then(|()| db::open_writer(path, fk).map_err(|e| e.to_string()))
                .map_err(|msg| Fault::Storage { actor: ACTOR, msg })
        })?;
        self.conn = Some(replaced);
        Ok(())
    }
}
