//! The `Applier` actor: owns the single writer connection to the SQLite database, on a thread of
//! its own where it calls SQLite inline (`start_on_own_thread`), and applies committed log
//! entries with the apply algorithm of `store::apply`: a batch of entries is one SQLite
//! transaction, and the applied position moves when it commits (docs/DESIGN.md §5, invariant 2).
//! It is also the only one to checkpoint the WAL into the main file and to replace the database,
//! each time recording where the main file then stands (`store::position`, docs/DESIGN.md §6).
//! Every handler runs under the panic guard; a panic or storage error restarts the actor, which
//! reopens the database. The applied position is a field of the actor, so it survives restarts;
//! after a batch failed, the database's stamp says whether its commit happened after all (a
//! commit can fail after it became durable), and the position follows the stamp.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;

use crate::actors::supervise::{guard, guarded, note_restart, settle, stop_on_fault, Fault};
use crate::cdc::Cdc;
use crate::raft::{Entry, LogId, StoredMembership};
pub use crate::store::apply::ApplierStats;
use crate::store::apply::{apply_entries, Applied};
use crate::store::command::Response;
use crate::store::db::{self, Db, Hooks};
use crate::store::position::{self, Meta};

const ACTOR: &str = "applier";

pub struct Applier {
    path: PathBuf,
    snap_dir: PathBuf,
    settings: db::ConnSettings,
    conn: Option<(rusqlite::Connection, Hooks)>,
    stats: Arc<ApplierStats>,
    /// Where the database (main file and WAL) stands.
    at: Applied,
    /// Where the batch being applied ends, until it is known to have committed or not.
    in_flight: Option<Applied>,
    /// Change data capture (`-cdc-config`): hooked onto every writer connection opened.
    cdc: Option<Arc<Cdc>>,
}

impl Applier {
    /// `at`: where the database stands as opened (`position::open_at_start`).
    pub fn new(
        path: PathBuf,
        snap_dir: PathBuf,
        settings: db::ConnSettings,
        stats: Arc<ApplierStats>,
        at: Option<Meta>,
        cdc: Option<Arc<Cdc>>,
    ) -> Self {
        let at = at.map(|m| Applied { log_id: m.last_log_id, membership: m.last_membership }).unwrap_or_default();
        Applier { path, snap_dir, settings, conn: None, stats, at, in_flight: None, cdc }
    }

    /// Open the writer connection, with change data capture hooked on when configured.
    fn open_writer(&self) -> rusqlite::Result<(rusqlite::Connection, Hooks)> {
        let (conn, hooks) = db::open_writer(&self.path, &self.settings)?;
        match &self.cdc {
            Some(cdc) => {
                cdc.capture.install(&conn);
                Ok((conn, hooks.with_cdc(cdc.clone())))
            }
            None => Ok((conn, hooks)),
        }
    }

    /// Open the writer connection; after a failed batch, settle where the database stands from
    /// its stamp. A failure is logged and retried by the next request.
    fn open(&mut self) {
        let opened = settle(ACTOR, guarded(ACTOR, || self.open_writer()));
        let (conn, hooks) = match opened {
            Ok(c) => c,
            Err(e) => return tracing::error!(error = %e, "cannot open the database"),
        };
        if let Some(tail) = self.in_flight.take() {
            let stamped = position::read_stamp(&conn).map_err(|e| e.to_string());
            let end = tail.log_id.map(|l| l.index).unwrap_or(0);
            let now = self.at.log_id.map(|l| l.index).unwrap_or(0);
            match stamped {
                Ok(s) if s == position::stamp(end) as u32 => {
                    tracing::warn!(index = end, "a batch reported as failed had committed; the position follows it");
                    self.at = tail;
                }
                Ok(s) if s == position::stamp(now) as u32 => {}
                Ok(s) => {
                    // Neither before nor after the batch: nothing here can say what it holds.
                    self.in_flight = Some(tail);
                    return tracing::error!(
                        stamp = s,
                        before = now,
                        after = end,
                        "the database's stamp matches no known position"
                    );
                }
                Err(e) => {
                    self.in_flight = Some(tail);
                    return tracing::error!(error = %e, "cannot read the database's stamp");
                }
            }
        }
        self.conn = Some((conn, hooks));
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

    /// Make `at` true to the database before it is used: a connection lost with a batch (its
    /// restart could not reopen it) is reopened, which settles the batch against the stamp.
    fn settle(&mut self) {
        if self.conn.is_none() {
            self.open();
        }
    }

    /// The position of the database now, as a snapshot record.
    fn meta(&self) -> Meta {
        Meta {
            last_log_id: self.at.log_id,
            last_membership: self.at.membership.clone(),
            snapshot_id: position::snapshot_id(self.at.log_id),
        }
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

/// The applied log id and membership: where the database stands.
#[derive(Message)]
#[rtype(result = "Result<(Option<LogId>, StoredMembership), Fault>")]
pub struct AppliedState;

/// Compaction: checkpoint the WAL into the main file (syncing both) and record the position it
/// now holds, which the log may be purged up to (docs/DESIGN.md §5, invariant 4; §6). Cost: the
/// WAL written since the last checkpoint, not the database. Returns the recorded position, or
/// `None` when readers of older pages kept the checkpoint from finishing within
/// [`CHECKPOINT_WAIT`] (the caller tries again later; the marker stays meanwhile).
#[derive(Message)]
#[rtype(result = "Result<Option<Meta>, Fault>")]
pub struct Compact;

/// How long a compaction's checkpoint waits for readers of older pages. The applier, and every
/// write behind it, waits with it; a long query or an automatic backup's copy could otherwise
/// hold writes for the whole busy timeout at each compaction.
pub const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Replace the database with a verified file (in the data directory; consumed) and reopen. The
/// file holds the state at `at` (a snapshot install), or at the current position when `None`
/// (`/boot`). `cdc_section`: the CDC changes a snapshot carried (`cdc::queue::Queue::export`;
/// consumed), queued here before the file is swapped in.
#[derive(Message)]
#[rtype(result = "Result<(), Fault>")]
pub struct ReplaceDb {
    pub path: PathBuf,
    pub at: Option<Meta>,
    pub cdc_section: Option<PathBuf>,
}

impl Handler<Apply> for Applier {
    type Result = Result<Vec<Response>, Fault>;
    fn handle(&mut self, msg: Apply, ctx: &mut Context<Self>) -> Self::Result {
        self.settle();
        let stats = self.stats.clone();
        self.in_flight = Some(tail_of(&self.at, &msg.0));
        // Put back whatever happens: on a failure `at` is unchanged (it moves only on commit),
        // and `in_flight` stays for `open` to settle against the stamp.
        let mut at = std::mem::take(&mut self.at);
        let r = self.with_conn(ctx, |c, h| apply_entries(c, h, msg.0, &stats, &mut at));
        self.at = at;
        if r.is_ok() {
            self.in_flight = None;
        }
        r
    }
}

impl Handler<AppliedState> for Applier {
    type Result = Result<(Option<LogId>, StoredMembership), Fault>;
    fn handle(&mut self, _msg: AppliedState, _ctx: &mut Context<Self>) -> Self::Result {
        self.settle();
        Ok((self.at.log_id, self.at.membership.clone()))
    }
}

impl Handler<Compact> for Applier {
    type Result = Result<Option<Meta>, Fault>;
    fn handle(&mut self, _msg: Compact, ctx: &mut Context<Self>) -> Self::Result {
        self.settle();
        let (meta, dir) = (self.meta(), self.snap_dir.clone());
        // The main file may then hold these entries for good: their changes must be on disk
        // first (src/cdc/queue.rs).
        if let Some(cdc) = &self.cdc {
            let synced = cdc.queue.sync().map_err(|e| Fault::Storage { actor: ACTOR, msg: e.to_string() });
            guard(ctx, ACTOR, |_| synced)?;
        }
        self.with_conn(ctx, |c, h| {
            c.busy_timeout(CHECKPOINT_WAIT)?;
            let done = match Db::new(c, h).internal(|c| position::checkpoint(c, &dir, &meta)) {
                Ok(()) => Ok(Some(meta)),
                Err(position::CheckpointError::Incomplete) => Ok(None),
                Err(e) => Err(e),
            };
            c.busy_timeout(db::BUSY_TIMEOUT)?;
            done
        })
    }
}

impl Handler<ReplaceDb> for Applier {
    type Result = Result<(), Fault>;
    fn handle(&mut self, msg: ReplaceDb, ctx: &mut Context<Self>) -> Self::Result {
        self.settle();
        let snapshot = msg.at.is_some();
        let meta = msg.at.unwrap_or_else(|| self.meta());
        // Close the writer before the file under it changes.
        self.conn = None;
        let (path, dir) = (&self.path, &self.snap_dir);
        // The queue learns first (durably) what the snapshot carried of the changes it covers and
        // that nothing below the new position is to be captured here: after a crash it must not
        // look behind the installed file.
        if let Some(cdc) = &self.cdc {
            let to = meta.last_log_id.map_or(0, |l| l.index);
            let imported = match &msg.cdc_section {
                Some(p) => import_section(&cdc.queue, p).map(Some),
                None => Ok(None),
            };
            let imported = guard(ctx, ACTOR, |_| {
                imported.map_err(|e| Fault::Storage { actor: ACTOR, msg: format!("CDC section of a snapshot: {e}") })
            })?;
            if snapshot {
                match imported {
                    Some(groups) => tracing::info!(
                        from = ?self.at.log_id.map(|l| l.index),
                        to,
                        groups,
                        "CDC: installing a snapshot; queued the undelivered changes it carried"
                    ),
                    None => tracing::warn!(
                        from = ?self.at.log_id.map(|l| l.index),
                        to,
                        "CDC: installing a snapshot that carried no changes (its sender had CDC off); the changes of the entries it covers are not captured on this node"
                    ),
                }
            }
            let marked = cdc.queue.captured_to(to).and_then(|()| cdc.queue.sync());
            guard(ctx, ACTOR, |_| marked.map_err(|e| Fault::Storage { actor: ACTOR, msg: e.to_string() }))?;
        }
        if let Some(p) = &msg.cdc_section {
            let _ = std::fs::remove_file(p);
        }
        let swapped = guard(ctx, ACTOR, |_| {
            position::replace(&msg.path, path, dir, &meta)
                .map_err(|e| Fault::Storage { actor: ACTOR, msg: e.to_string() })
        });
        if swapped.is_ok() || position::replaced(path, dir) {
            // The file is the database now, whatever else failed.
            self.in_flight = None;
            self.at = Applied { log_id: meta.last_log_id, membership: meta.last_membership.clone() };
        }
        swapped?;
        let opened =
            guarded(ACTOR, || self.open_writer().map_err(|e| Fault::Storage { actor: ACTOR, msg: e.to_string() }));
        let reopened = guard(ctx, ACTOR, |_| opened.and_then(|r| r))?;
        self.conn = Some(reopened);
        if let Some(l) = self.at.log_id {
            self.stats.applied_index.store(l.index, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Queue the groups of a snapshot's CDC section file: how many.
fn import_section(queue: &crate::cdc::queue::Queue, path: &std::path::Path) -> std::io::Result<u64> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    queue.import(&mut std::io::BufReader::new(f), len)
}

/// Where the database stands once `entries` are applied on top of `at`.
fn tail_of(at: &Applied, entries: &[Entry]) -> Applied {
    let mut tail = at.clone();
    for e in entries.iter().filter(|e| Some(e.log_id) > at.log_id) {
        if let openraft::EntryPayload::Membership(m) = &e.payload {
            tail.membership = StoredMembership::new(Some(e.log_id), m.clone());
        }
        tail.log_id = Some(e.log_id);
    }
    tail
}
