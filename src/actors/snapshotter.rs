//! The `Snapshotter` actor: snapshot policy (docs/DESIGN.md §2, docs/API.md §15). Every
//! `-raft-snap-int` it checks whether the log holds `-raft-snap` entries since the last snapshot,
//! or the database's WAL has grown past `-raft-snap-wal-size`, and if so asks openraft for a
//! snapshot. A snapshot here is compaction (see `raft::sm_adapter`): cheap whatever the size of
//! the database, so checking often costs nothing.
//!
//! On the leader it also proposes the periodic upkeep rqlite does: `VACUUM` every
//! `-auto-vacuum-int` and `PRAGMA optimize` every `-auto-optimize-int`. Both go through the log,
//! so every replica runs them at the same position: `VACUUM` changes no content, and
//! `PRAGMA optimize=0x10002` decides from the tables' contents alone (not from this connection's
//! query history), so `sqlite_stat1` is the same everywhere.
//!
//! With CDC it also purges the log behind snapshots itself (openraft's own purge is off then):
//! keeping `keep_entries` entries, as openraft would, and never an entry whose changes are still
//! to be delivered (`Cdc::purge_bound`).
//!
//! It also adopts an uploaded database (`/boot`): the file replaces the database under the same
//! lock that snapshot builds and installs take (`SnapshotStats::recording`), so a boot cannot
//! interleave with a snapshot recording the position of the database it replaces.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::applier::{Applier, ReplaceDb};
use crate::actors::consensus::{propose, Consensus};
use crate::actors::readers::Readers;
use crate::actors::supervise::{guard, note_restart, trip, Fault};
use crate::cdc::Cdc;
use crate::raft::sm_adapter::SnapshotStats;
use crate::raft::SharedRaft;
use crate::store::command::{Command, ExecOptions, Statement};
use crate::store::dump;

const ACTOR: &str = "snapshotter";

pub struct Snapshotter {
    raft: SharedRaft,
    applier: Addr<Applier>,
    consensus: Addr<Consensus>,
    upkeep: Upkeep,
    readers: Readers,
    snap_stats: Arc<SnapshotStats>,
    wal_path: PathBuf,
    every: Duration,
    max_entries: u64,
    max_wal: u64,
    keep_entries: u64,
    cdc: Option<Arc<Cdc>>,
}

/// How often the leader proposes upkeep (zero: never): `-auto-vacuum-int`, `-auto-optimize-int`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Upkeep {
    pub vacuum_every: Duration,
    pub optimize_every: Duration,
}

/// The statement `-auto-optimize-int` proposes: analyse the tables whose contents call for it,
/// whatever this connection has queried (0x10000), so that every replica decides alike.
pub const OPTIMIZE: &str = "PRAGMA optimize=0x10002";

/// When to snapshot: `-raft-snap-int`, `-raft-snap`, `-raft-snap-wal-size`.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    pub every: Duration,
    pub max_entries: u64,
    pub max_wal: u64,
    /// Entries the log keeps behind a snapshot.
    pub keep_entries: u64,
}

impl Snapshotter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raft: SharedRaft,
        applier: Addr<Applier>,
        consensus: Addr<Consensus>,
        readers: Readers,
        snap_stats: Arc<SnapshotStats>,
        wal_path: PathBuf,
        policy: SnapshotPolicy,
        upkeep: Upkeep,
        cdc: Option<Arc<Cdc>>,
    ) -> Self {
        let SnapshotPolicy { every, max_entries, max_wal, keep_entries } = policy;
        Snapshotter {
            raft,
            applier,
            consensus,
            upkeep,
            readers,
            snap_stats,
            wal_path,
            every,
            max_entries,
            max_wal,
            keep_entries,
            cdc,
        }
    }

    /// With CDC: how far the log may be purged now, when that is past what is purged.
    fn purge_to(&self) -> Result<Option<u64>, Fault> {
        let Some(cdc) = &self.cdc else { return Ok(None) };
        let m = self.raft.get().metrics().borrow().clone();
        let Some(snapshot) = m.snapshot.map(|s| s.index) else { return Ok(None) };
        let bound = cdc.purge_bound().map_err(|e| Fault::Storage { actor: ACTOR, msg: e.to_string() })?;
        let upto = snapshot.saturating_sub(self.keep_entries).min(bound);
        let purged = m.purged.map(|p| p.index);
        Ok((Some(upto) > purged && upto > 0).then_some(upto))
    }

    /// On the leader, propose `sql` through the log (upkeep); elsewhere nothing.
    fn propose_upkeep(&self, ctx: &mut Context<Self>, what: &'static str, sql: &'static str) {
        let raft = self.raft.get();
        let m = raft.metrics().borrow().clone();
        if m.current_leader != Some(m.id) {
            return;
        }
        let cmd = Command::Execute { stmts: vec![Statement::new(sql)], opts: ExecOptions::default(), seed: 0 };
        let consensus = self.consensus.clone();
        ctx.spawn(
            async move {
                let error = match propose(&consensus, cmd).await {
                    Ok(r) => r.error.or_else(|| r.results.iter().find_map(|x| x.error().map(String::from))),
                    Err(e) => Some(e.to_string()),
                };
                match error {
                    None => {
                        metrics::counter!("raftlite_upkeep_total", "what" => what).increment(1);
                        tracing::info!(what, "upkeep done");
                    }
                    Some(e) => tracing::warn!(what, error = %e, "upkeep failed"),
                }
            }
            .into_actor(self),
        );
    }

    /// Why a snapshot is due now, if it is.
    fn due(&self) -> Option<String> {
        let m = self.raft.get().metrics().borrow().clone();
        let applied = m.last_applied.map(|l| l.index)?;
        let since = applied.saturating_sub(m.snapshot.map(|s| s.index).unwrap_or(0));
        if m.snapshot.is_some() && since == 0 {
            return None;
        }
        if since >= self.max_entries {
            return Some(format!("{since} log entries since the last snapshot"));
        }
        let wal = std::fs::metadata(&self.wal_path).map(|m| m.len()).unwrap_or(0);
        if self.max_wal > 0 && wal >= self.max_wal {
            return Some(format!("WAL is {wal} bytes"));
        }
        None
    }
}

impl Actor for Snapshotter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.every, |_act, ctx| ctx.notify(Tick));
        if !self.upkeep.vacuum_every.is_zero() {
            ctx.run_interval(self.upkeep.vacuum_every, |act, ctx| act.propose_upkeep(ctx, "vacuum", "VACUUM"));
        }
        if !self.upkeep.optimize_every.is_zero() {
            ctx.run_interval(self.upkeep.optimize_every, |act, ctx| act.propose_upkeep(ctx, "optimize", OPTIMIZE));
        }
    }
}

impl Supervised for Snapshotter {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        note_restart(ACTOR);
    }
}

/// Check the policy now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

impl Handler<Tick> for Snapshotter {
    type Result = ();
    fn handle(&mut self, _msg: Tick, ctx: &mut Context<Self>) {
        let due = guard(ctx, ACTOR, |_| {
            trip(ACTOR, "snapshotter::tick")?;
            Ok(self.due())
        });
        if let Ok(Some(upto)) = guard(ctx, ACTOR, |_| self.purge_to()) {
            let raft = self.raft.get();
            ctx.spawn(
                async move {
                    if let Err(e) = raft.trigger().purge_log(upto).await {
                        tracing::warn!(error = %e, upto, "cannot purge the log");
                    }
                }
                .into_actor(self),
            );
        }
        if let Ok(Some(why)) = due {
            tracing::debug!(reason = %why, "snapshot due");
            let raft = self.raft.get();
            ctx.spawn(
                async move {
                    if let Err(e) = raft.trigger().snapshot().await {
                        tracing::warn!(error = %e, "cannot trigger a snapshot");
                    }
                }
                .into_actor(self),
            );
        }
    }
}

/// Why an uploaded database was not adopted.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The file is not a database this node can use.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Fault(#[from] Fault),
    #[error("{0}")]
    Unavailable(String),
}

/// Make the SQLite file at this path (in the data directory; consumed) the node's database at
/// this node's applied position and membership (`/boot` on a single-node cluster).
#[derive(Message)]
#[rtype(result = "Result<(), AdoptError>")]
pub struct AdoptDatabase(pub PathBuf);

impl Handler<AdoptDatabase> for Snapshotter {
    type Result = AtomicResponse<Self, Result<(), AdoptError>>;
    fn handle(&mut self, msg: AdoptDatabase, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(f) = guard(ctx, ACTOR, |_| trip(ACTOR, "snapshotter::adopt")) {
            return AtomicResponse::new(Box::pin(async move { Err(f.into()) }.into_actor(self)));
        }
        let (applier, readers, stats) = (self.applier.clone(), self.readers.clone(), self.snap_stats.clone());
        AtomicResponse::new(Box::pin(adopt(applier, readers, stats, msg.0).into_actor(self)))
    }
}

async fn adopt(
    applier: Addr<Applier>,
    readers: Readers,
    stats: Arc<SnapshotStats>,
    path: PathBuf,
) -> Result<(), AdoptError> {
    let _recording = stats.recording.write().await;
    // The file is checked and renamed into place (no copy of the data) at this node's current
    // position, then the writer and readers reopen on it.
    let p = path.clone();
    let prepared =
        tokio::task::spawn_blocking(move || dump::prepare_image(&p, 4096)).await.unwrap_or_else(|e| Err(e.to_string()));
    prepared.map_err(AdoptError::Invalid)?;
    let replaced = applier.send(ReplaceDb { path, at: None, cdc_section: None }).await;
    // Even after a failure: the file may have been swapped in.
    readers.reopen().await;
    match replaced {
        Ok(r) => Ok(r?),
        Err(e) => Err(AdoptError::Unavailable(e.to_string())),
    }
}
