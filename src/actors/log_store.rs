//! The `LogStore` actor: owns the Raft log file and its SQLite connection thread. Requests are
//! handled one at a time, in arrival order (openraft requires log and vote IO to complete in the
//! order it was submitted), and an append is acknowledged only after its transaction committed
//! with `synchronous=FULL`, i.e. after fsync.

use std::path::PathBuf;

use actix::prelude::*;

use crate::actors::supervise::{flatten, guarded, note_restart, Fault};
use crate::store::log_db::{LogDb, LogDbError};

const ACTOR: &str = "log_store";

pub struct LogStore {
    path: PathBuf,
    conn: Option<tokio_rusqlite::Connection>,
}

impl LogStore {
    pub fn new(path: PathBuf) -> Self {
        LogStore { path, conn: None }
    }
}

/// One log operation.
#[derive(Debug)]
pub enum LogRequest {
    Append(Vec<(u64, Vec<u8>)>),
    Truncate(u64),
    Purge { upto: u64, purged_id: Vec<u8> },
    PutMeta(&'static str, Vec<u8>),
    GetMeta(&'static str),
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

    fn started(&mut self, ctx: &mut Context<Self>) {
        let path = self.path.clone();
        // Block the mailbox until the log is open: nothing may run against a half-open store.
        ctx.wait(
            async move {
                let conn = tokio_rusqlite::Connection::open(&path).await.map_err(|e| e.to_string())?;
                let p = path.display().to_string();
                let r = conn.call_raw(move |c| guarded(ACTOR, || LogDb::init(c, &p))).await;
                flatten(ACTOR, r).map_err(|e| e.to_string())?;
                Ok::<_, String>(conn)
            }
            .into_actor(self)
            .map(|res, act, _ctx| match res {
                Ok(c) => act.conn = Some(c),
                Err(e) => tracing::error!(error = %e, "cannot open the raft log"),
            }),
        );
    }
}

impl Supervised for LogStore {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.conn = None;
        note_restart(ACTOR);
    }
}

fn run(c: &mut rusqlite::Connection, req: LogRequest, path: &std::path::Path) -> Result<LogReply, LogDbError> {
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
        LogRequest::Range(a, b) => LogReply::Entries(LogDb::range(c, a, b)?),
        LogRequest::Last => LogReply::Entries(LogDb::last(c)?.into_iter().collect()),
        LogRequest::SizeBytes => LogReply::Size(LogDb::size_bytes(path)),
    })
}

impl Handler<LogRequest> for LogStore {
    type Result = AtomicResponse<Self, Result<LogReply, Fault>>;

    fn handle(&mut self, req: LogRequest, _ctx: &mut Context<Self>) -> Self::Result {
        let conn = self.conn.clone();
        let path = self.path.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let conn = conn.ok_or(Fault::Unavailable(ACTOR))?;
                flatten(ACTOR, conn.call_raw(move |c| guarded(ACTOR, || run(c, req, &path))).await)
            }
            .into_actor(self)
            .map(|res, _act, ctx| {
                if let Err(f) = &res {
                    if f.needs_restart() {
                        tracing::error!(fault = %f, "log store failed; restarting it");
                        ctx.stop();
                    }
                }
                res
            }),
        ))
    }
}
