//! The `LogStore` actor: owns the Raft log file and its SQLite connection, on a thread of its own
//! (`start_on_own_thread`), where it calls SQLite inline. Requests are handled one at a time, in
//! arrival order (openraft requires log and vote IO to complete in the order it was submitted),
//! and an append is acknowledged only after its transaction committed with `synchronous=FULL`,
//! i.e. after fsync.
//!
//! An append that fails (an fsync error, a full disk, a panic) was not acknowledged, so whatever
//! it may have left in the file must not count as logged: the store remembers the first index it
//! failed to append and refuses further appends until [`Recover`], which the rebuilt
//! Raft sends before it reads the log, deletes everything from that index on. Raft may drop an
//! unacknowledged tail at any time; keeping it could make this node vote or replicate on data
//! that was never durable (fsyncgate: a second fsync can "succeed" after a failed one).
//!
//! Each operation is a message of its own with its own reply type. Every handler runs under the
//! panic guard: a panic or storage error stops the actor, and its supervisor restarts it with
//! the log reopened.

use std::path::{Path, PathBuf};

use actix::prelude::*;

use crate::actors::supervise::{guarded, note_restart, settle, stop_on_fault, Fault};
use crate::store::log_db::{LogDb, LogDbError};

const ACTOR: &str = "log_store";

pub struct LogStore {
    path: PathBuf,
    conn: Option<rusqlite::Connection>,
    /// The first index of an append that failed; kept across actor restarts.
    failed_from: Option<u64>,
}

impl LogStore {
    pub fn new(path: PathBuf) -> Self {
        LogStore { path, conn: None, failed_from: None }
    }

    /// Open the log (verifying every record). A failure is logged and retried by the next request.
    fn open(&mut self) {
        match settle(ACTOR, guarded(ACTOR, || LogDb::open(&self.path))) {
            Ok(c) => self.conn = Some(c),
            Err(e) => tracing::error!(error = %e, "cannot open the raft log"),
        }
    }

    /// Run `f` on the log under the panic guard; a fault stops the actor (its supervisor restarts
    /// it with the log reopened).
    fn serve<T>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut rusqlite::Connection, &Path) -> Result<T, LogDbError>,
    ) -> Result<T, Fault> {
        if self.conn.is_none() {
            self.open();
        }
        let res = match self.conn.as_mut() {
            Some(conn) => {
                let path = &self.path;
                settle(ACTOR, guarded(ACTOR, || f(conn, path)))
            }
            None => Err(Fault::Unavailable(ACTOR)),
        };
        stop_on_fault(ctx, ACTOR, res)
    }
}

/// Append entries (index, encoded entry); the reply comes after fsync.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), Fault>")]
pub struct Append(pub Vec<(u64, Vec<u8>)>);

/// Delete the entries from this index on.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), Fault>")]
pub struct Truncate(pub u64);

/// Delete the entries up to `upto` and record the purged log id.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), Fault>")]
pub struct Purge {
    pub upto: u64,
    pub purged_id: Vec<u8>,
}

/// Store a meta value (the vote, the purged id), fsynced before the reply.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), Fault>")]
pub struct PutMeta(pub &'static str, pub Vec<u8>);

#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Option<Vec<u8>>, Fault>")]
pub struct GetMeta(pub &'static str);

/// Before a (re)built Raft reads the log: drop what a failed append may have left.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), Fault>")]
pub struct Recover;

/// Entries with index in `[start, end)`.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Vec<(u64, Vec<u8>)>, Fault>")]
pub struct Range(pub u64, pub u64);

/// The last entry, if any.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Option<(u64, Vec<u8>)>, Fault>")]
pub struct Last;

/// Bytes the log takes on disk.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<u64, Fault>")]
pub struct SizeBytes;

impl Actor for LogStore {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        // Nothing else runs on this thread: opening inline keeps the mailbox shut until the log is
        // open, so nothing runs against a half-open store.
        self.open();
    }
}

impl Supervised for LogStore {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Dropping the connection rolls back whatever a failed request left open.
        self.conn = None;
        note_restart(ACTOR);
    }
}

impl Handler<Append> for LogStore {
    type Result = Result<(), Fault>;
    fn handle(&mut self, msg: Append, ctx: &mut Context<Self>) -> Self::Result {
        let Some(first) = msg.0.first().map(|(i, _)| *i) else { return Ok(()) };
        if self.failed_from.is_some() {
            return Err(Fault::Refused { actor: ACTOR, msg: "an earlier append failed; waiting for raft to rebuild" });
        }
        let res = self.serve(ctx, |c, _| {
            let t = std::time::Instant::now();
            fail::fail_point!("log_store::append_before_fsync");
            LogDb::append(c, &msg.0)?;
            fail::fail_point!("log_store::append_after_fsync");
            metrics::histogram!("raftlite_log_fsync_seconds").record(t.elapsed().as_secs_f64());
            metrics::histogram!("raftlite_log_append_entries").record(msg.0.len() as f64);
            metrics::counter!("raftlite_log_appends_total").increment(1);
            Ok(())
        });
        if res.is_err() {
            self.failed_from = Some(self.failed_from.map_or(first, |f| f.min(first)));
        }
        res
    }
}

impl Handler<Recover> for LogStore {
    type Result = Result<(), Fault>;
    fn handle(&mut self, _msg: Recover, ctx: &mut Context<Self>) -> Self::Result {
        let Some(from) = self.failed_from else {
            // Open the log now, so that a log that cannot be opened fails the build.
            return self.serve(ctx, |_, _| Ok(()));
        };
        tracing::warn!(from, "dropping log entries a failed append may have left");
        self.serve(ctx, |c, _| LogDb::truncate(c, from))?;
        self.failed_from = None;
        Ok(())
    }
}

impl Handler<Truncate> for LogStore {
    type Result = Result<(), Fault>;
    fn handle(&mut self, msg: Truncate, ctx: &mut Context<Self>) -> Self::Result {
        self.serve(ctx, |c, _| LogDb::truncate(c, msg.0))
    }
}

impl Handler<Purge> for LogStore {
    type Result = Result<(), Fault>;
    fn handle(&mut self, msg: Purge, ctx: &mut Context<Self>) -> Self::Result {
        self.serve(ctx, |c, _| LogDb::purge(c, msg.upto, &msg.purged_id))
    }
}

impl Handler<PutMeta> for LogStore {
    type Result = Result<(), Fault>;
    fn handle(&mut self, msg: PutMeta, ctx: &mut Context<Self>) -> Self::Result {
        self.serve(ctx, |c, _| {
            fail::fail_point!("log_store::save_meta");
            LogDb::put_meta(c, msg.0, &msg.1)
        })
    }
}

impl Handler<GetMeta> for LogStore {
    type Result = Result<Option<Vec<u8>>, Fault>;
    fn handle(&mut self, msg: GetMeta, ctx: &mut Context<Self>) -> Self::Result {
        self.serve(ctx, |c, _| LogDb::get_meta(c, msg.0))
    }
}

impl Handler<Range> for LogStore {
    type Result = Result<Vec<(u64, Vec<u8>)>, Fault>;
    fn handle(&mut self, msg: Range, ctx: &mut Context<Self>) -> Self::Result {
        self.serve(ctx, |c, _| LogDb::range(c, msg.0, msg.1))
    }
}

impl Handler<Last> for LogStore {
    type Result = Result<Option<(u64, Vec<u8>)>, Fault>;
    fn handle(&mut self, _msg: Last, ctx: &mut Context<Self>) -> Self::Result {
        self.serve(ctx, |c, _| LogDb::last(c))
    }
}

impl Handler<SizeBytes> for LogStore {
    type Result = Result<u64, Fault>;
    fn handle(&mut self, _msg: SizeBytes, ctx: &mut Context<Self>) -> Self::Result {
        self.serve(ctx, |_, path| Ok(LogDb::size_bytes(path)))
    }
}
