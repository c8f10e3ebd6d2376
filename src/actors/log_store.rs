//! The `LogStore` actor: owns the Raft log file and its SQLite connection, on a thread of its own
//! (`start_on_own_thread`), where it calls SQLite inline. Requests are handled one at a time, in
//! arrival order (openraft requires log and vote IO to complete in the order it was submitted),
//! and an append is acknowledged only after its transaction committed with `synchronous=FULL`,
//! i.e. after fsync.
//!
//! An append that fails (an fsync error, a full disk, a panic) was not acknowledged, so whatever
//! it may have left in the file must not count as logged: the store remembers the first index it
//! failed to append and refuses further appends until [`LogRequest::Recover`], which the rebuilt
//! Raft sends before it reads the log, deletes everything from that index on. Raft may drop an
//! unacknowledged tail at any time; keeping it could make this node vote or replicate on data
//! that was never durable (fsyncgate: a second fsync can "succeed" after a failed one).

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

    fn serve(&mut self, req: LogRequest, appending: bool, recovering: bool) -> Result<LogReply, Fault> {
        if self.conn.is_none() {
            self.open();
        }
        let conn = self.conn.as_mut().ok_or(Fault::Unavailable(ACTOR))?;
        if appending && self.failed_from.is_some() {
            return Err(Fault::Refused { actor: ACTOR, msg: "an earlier append failed; waiting for raft to rebuild" });
        }
        if let (true, Some(from)) = (recovering, self.failed_from) {
            tracing::warn!(from, "dropping log entries a failed append may have left");
            return settle(ACTOR, guarded(ACTOR, || LogDb::truncate(conn, from))).map(|_| LogReply::Done);
        }
        let path = &self.path;
        settle(ACTOR, guarded(ACTOR, || run(conn, req, path)))
    }
}

/// One log operation.
#[derive(Debug)]
pub enum LogRequest {
    Append(Vec<(u64, Vec<u8>)>),
    Truncate(u64),
    Purge {
        upto: u64,
        purged_id: Vec<u8>,
    },
    PutMeta(&'static str, Vec<u8>),
    GetMeta(&'static str),
    /// Before a (re)built Raft reads the log: drop what a failed append may have left.
    Recover,
    Range(u64, u64),
    Last,
    SizeBytes,
}

#[derive(Debug)]
pub enum LogReply {
    Done,
    Meta(Option<Vec<u8>>),
    Entries(Vec<(u64, Vec<u8>)>),
    Size(u64),
}

impl Message for LogRequest {
    type Result = Result<LogReply, Fault>;
}

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

fn run(c: &mut rusqlite::Connection, req: LogRequest, path: &Path) -> Result<LogReply, LogDbError> {
    Ok(match req {
        LogRequest::Append(entries) => {
            let t = std::time::Instant::now();
            fail::fail_point!("log_store::append_before_fsync");
            LogDb::append(c, &entries)?;
            fail::fail_point!("log_store::append_after_fsync");
            metrics::histogram!("raftlite_log_fsync_seconds").record(t.elapsed().as_secs_f64());
            metrics::histogram!("raftlite_log_append_entries").record(entries.len() as f64);
            metrics::counter!("raftlite_log_appends_total").increment(1);
            LogReply::Done
        }
        LogRequest::Truncate(from) => {
            LogDb::truncate(c, from)?;
            LogReply::Done
        }
        LogRequest::Purge { upto, purged_id } => {
            LogDb::purge(c, upto, &purged_id)?;
            LogReply::Done
        }
        LogRequest::PutMeta(k, v) => {
            fail::fail_point!("log_store::save_meta");
            LogDb::put_meta(c, k, &v)?;
            LogReply::Done
        }
        LogRequest::GetMeta(k) => LogReply::Meta(LogDb::get_meta(c, k)?),
        // Answered in the handler when nothing failed.
        LogRequest::Recover => LogReply::Done,
        LogRequest::Range(a, b) => LogReply::Entries(LogDb::range(c, a, b)?),
        LogRequest::Last => LogReply::Entries(LogDb::last(c)?.into_iter().collect()),
        LogRequest::SizeBytes => LogReply::Size(LogDb::size_bytes(path)),
    })
}

impl Handler<LogRequest> for LogStore {
    type Result = Result<LogReply, Fault>;

    fn handle(&mut self, req: LogRequest, ctx: &mut Context<Self>) -> Self::Result {
        let appending = match &req {
            LogRequest::Append(e) => e.first().map(|(i, _)| *i),
            _ => None,
        };
        let recovering = matches!(req, LogRequest::Recover);
        let res = self.serve(req, appending.is_some(), recovering);
        match (&res, appending) {
            (Err(_), Some(first)) => {
                self.failed_from = Some(self.failed_from.map_or(first, |f| f.min(first)));
            }
            (Ok(_), _) if recovering => self.failed_from = None,
            _ => {}
        }
        stop_on_fault(ctx, ACTOR, res)
    }
}
