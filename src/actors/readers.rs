//! The read pool: `Reader` actors, each owning one read-only SQLite connection on a thread of its
//! own (`start_on_own_thread`), serving `/db/query` and the read-only case of `/db/request`.
//! `Readers` is the handle the HTTP front holds: it hands each request to the reader with the
//! fewest requests in flight, so a long query does not hold up the short ones behind it.
//! In WAL mode readers never block the writer, and each read sees one consistent snapshot.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;

use crate::actors::supervise::{guard, guarded, note_restart, settle, start_on_own_thread, stop_on_fault, Fault};
use crate::store::command::{ExecOptions, Statement, StmtResult};
use crate::store::db::{self, Db, Hooks, Mode};

const ACTOR: &str = "readers";

/// One read connection and the actor that owns it.
pub struct Reader {
    path: PathBuf,
    settings: db::ConnSettings,
    conn: Option<(rusqlite::Connection, Hooks)>,
}

impl Reader {
    fn new(path: PathBuf, settings: db::ConnSettings) -> Self {
        Reader { path, settings, conn: None }
    }

    fn open(&mut self) {
        let opened = guarded(ACTOR, || {
            let c = rusqlite::Connection::open_with_flags(&self.path, db::reader_flags())?;
            let h = db::setup_reader(&c, &self.settings)?;
            Ok::<_, rusqlite::Error>((c, h))
        });
        match settle(ACTOR, opened) {
            Ok(c) => self.conn = Some(c),
            Err(e) => tracing::error!(error = %e, "cannot open a read connection"),
        }
    }

    /// Run `f` on this reader's connection; a panic or storage error restarts the reader.
    fn with_conn<T>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&rusqlite::Connection, &Hooks) -> T,
    ) -> Result<T, Fault> {
        if self.conn.is_none() {
            self.open();
        }
        let res = match &self.conn {
            Some((c, hooks)) => guarded(ACTOR, || f(c, hooks)),
            None => Err(Fault::Unavailable(ACTOR)),
        };
        stop_on_fault(ctx, ACTOR, res)
    }
}

impl Actor for Reader {
    type Context = Context<Self>;
    fn started(&mut self, _ctx: &mut Context<Self>) {
        self.open();
    }
}

impl Supervised for Reader {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.conn = None;
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
    /// Set when the asker stops waiting (its client went away): the statements are interrupted.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Are all these statements read-only? (`/db/request` routing.)
#[derive(Message)]
#[rtype(result = "Result<bool, Fault>")]
pub struct Classify(pub Vec<Statement>);

/// Reopen the connection (after the database file was replaced).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Reopen;

impl Handler<Query> for Reader {
    type Result = Result<Vec<StmtResult>, Fault>;

    fn handle(&mut self, q: Query, ctx: &mut Context<Self>) -> Self::Result {
        let ran = self.with_conn(ctx, |c, hooks| {
            fail::fail_point!("readers::query");
            let db = Db::new(c, hooks);
            db.cancellable(q.cancel.clone());
            let out = db.run(&q.stmts, &q.opts, q.mode, q.deadline);
            db.uncancellable();
            db.end_read();
            Ok::<_, rusqlite::Error>(out)
        });
        settle(ACTOR, ran)
    }
}

impl Handler<Classify> for Reader {
    type Result = Result<bool, Fault>;

    fn handle(&mut self, q: Classify, ctx: &mut Context<Self>) -> Self::Result {
        self.with_conn(ctx, |c, hooks| Db::new(c, hooks).all_readonly(&q.0))
    }
}

impl Handler<Reopen> for Reader {
    type Result = ();
    fn handle(&mut self, _msg: Reopen, ctx: &mut Context<Self>) {
        let _ = guard(ctx, ACTOR, |_| {
            self.conn = None;
            self.open();
            Ok(())
        });
    }
}

/// The pool's handle: cheap to clone, shared by the HTTP front and the state machine.
#[derive(Clone)]
pub struct Readers {
    members: Arc<Vec<(Addr<Reader>, AtomicUsize)>>,
    next: Arc<AtomicUsize>,
}

/// Counts a request in flight on one reader until it is answered or dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Readers {
    /// Start `size` readers (at least one), each on its own thread.
    pub fn start(path: PathBuf, settings: db::ConnSettings, size: usize) -> std::io::Result<Readers> {
        let mut members = Vec::with_capacity(size.max(1));
        for _ in 0..size.max(1) {
            let (p, settings) = (path.clone(), settings.clone());
            members.push((start_on_own_thread(move |_| Reader::new(p, settings))?, AtomicUsize::new(0)));
        }
        Ok(Readers { members: Arc::new(members), next: Arc::new(AtomicUsize::new(0)) })
    }

    /// Send `msg` to the reader with the fewest requests in flight (ties go round the pool).
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Reader: Handler<M>,
        <Reader as Actor>::Context: ToEnvelope<Reader, M>,
    {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let pick =
            (0..n).map(|k| (start + k) % n).min_by_key(|&i| self.members[i].1.load(Ordering::Relaxed)).unwrap_or(0);
        let (addr, busy) = &self.members[pick];
        busy.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(busy);
        addr.send(msg).await
    }

    /// Reopen every connection (after the database file was replaced); returns once all have.
    pub async fn reopen(&self) {
        for (addr, _) in self.members.iter() {
            let _ = addr.send(Reopen).await;
        }
    }
}
