//! The `Readers` actor: owns the pool of read-only SQLite connections (each on its own
//! tokio-rusqlite thread) that serve `/db/query` and the read-only case of `/db/request`.
//! In WAL mode readers never block the writer, and each read sees one consistent snapshot.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::supervise::{flatten, guarded, note_restart, Fault};
use crate::store::command::{ExecOptions, Statement, StmtResult};
use crate::store::db::{self, Db, Hooks, Mode};

const ACTOR: &str = "readers";

type Pool = Arc<Vec<(tokio_rusqlite::Connection, Hooks)>>;

pub struct Readers {
    path: PathBuf,
    fk: bool,
    size: usize,
    pool: Option<Pool>,
    next: Arc<AtomicUsize>,
}

impl Readers {
    pub fn new(path: PathBuf, fk: bool, size: usize) -> Self {
        Readers { path, fk, size: size.max(1), pool: None, next: Arc::new(AtomicUsize::new(0)) }
    }

    fn open(&mut self, ctx: &mut Context<Self>) {
        let (path, fk, size) = (self.path.clone(), self.fk, self.size);
        ctx.wait(
            async move {
                let mut pool = Vec::with_capacity(size);
                for _ in 0..size {
                    let c = tokio_rusqlite::Connection::open_with_flags(&path, db::reader_flags())
                        .await
                        .map_err(|e| e.to_string())?;
                    let h = flatten(ACTOR, c.call_raw(move |c| guarded(ACTOR, || db::setup_reader(c, fk))).await)
                        .map_err(|e| e.to_string())?;
                    pool.push((c, h));
                }
                Ok::<_, String>(Arc::new(pool))
            }
            .into_actor(self)
            .map(|res, act, _| match res {
                Ok(p) => act.pool = Some(p),
                Err(e) => tracing::error!(error = %e, "cannot open read connections"),
            }),
        );
    }
}

impl Actor for Readers {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.open(ctx);
    }
}

impl Supervised for Readers {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.pool = None;
        note_restart(ACTOR);
    }
}

/// Run read statements on one pooled connection.
#[derive(Message)]
#[rtype(result = "Result<Vec<StmtResult>, Fault>")]
pub struct Query {
    pub stmts: Vec<Statement>,
    pub opts: ExecOptions,
    pub mode: Mode,
    pub deadline: Option<Duration>,
}

/// Are all these statements read-only? (`/db/request` routing.)
#[derive(Message)]
#[rtype(result = "Result<bool, Fault>")]
pub struct Classify(pub Vec<Statement>);

/// Reopen every connection (after the database file was replaced).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reopen;

impl Handler<Query> for Readers {
    type Result = ResponseActFuture<Self, Result<Vec<StmtResult>, Fault>>;

    fn handle(&mut self, q: Query, _ctx: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        let next = self.next.clone();
        Box::pin(
            async move {
                let pool = pool.ok_or(Fault::Unavailable(ACTOR))?;
                let (conn, hooks) = &pool[next.fetch_add(1, Ordering::Relaxed) % pool.len()];
                let hooks = hooks.clone();
                let r = conn
                    .call_raw(move |c| {
                        guarded(ACTOR, || {
                            fail::fail_point!("readers::query");
                            let db = Db::new(c, &hooks);
                            let out = db.run(&q.stmts, &q.opts, q.mode, q.deadline);
                            db.end_read();
                            Ok::<_, rusqlite::Error>(out)
                        })
                    })
                    .await;
                flatten(ACTOR, r)
            }
            .into_actor(self)
            .map(|res, _act, ctx| {
                if let Err(f) = &res {
                    if f.needs_restart() {
                        ctx.stop();
                    }
                }
                res
            }),
        )
    }
}

impl Handler<Classify> for Readers {
    type Result = ResponseFuture<Result<bool, Fault>>;

    fn handle(&mut self, q: Classify, _ctx: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        let next = self.next.clone();
        Box::pin(async move {
            let pool = pool.ok_or(Fault::Unavailable(ACTOR))?;
            let (conn, hooks) = &pool[next.fetch_add(1, Ordering::Relaxed) % pool.len()];
            let hooks = hooks.clone();
            let r = conn
                .call_raw(move |c| guarded(ACTOR, || Ok::<_, rusqlite::Error>(Db::new(c, &hooks).all_readonly(&q.0))))
                .await;
            flatten(ACTOR, r)
        })
    }
}

impl Handler<Reopen> for Readers {
    type Result = ();
    fn handle(&mut self, _msg: Reopen, ctx: &mut Context<Self>) {
        self.pool = None;
        self.open(ctx);
    }
}
