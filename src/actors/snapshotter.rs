//! The `Snapshotter` actor: snapshot policy (design.md §2, spec §15). Every `-raft-snap-int` it
//! checks whether the log holds `-raft-snap` entries since the last snapshot, or the database's
//! WAL has grown past `-raft-snap-wal-size`, and if so asks openraft for a snapshot. A snapshot
//! here is compaction (see `raft::sm_adapter`): cheap whatever the size of the database, so
//! checking often costs nothing.

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::supervise::{note_restart, trip};
use crate::raft::SharedRaft;

const ACTOR: &str = "snapshotter";

pub struct Snapshotter {
    raft: SharedRaft,
    wal_path: PathBuf,
    every: Duration,
    max_entries: u64,
    max_wal: u64,
}

impl Snapshotter {
    pub fn new(raft: SharedRaft, wal_path: PathBuf, every: Duration, max_entries: u64, max_wal: u64) -> Self {
        Snapshotter { raft, wal_path, every, max_entries, max_wal }
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
        if trip(ACTOR, "snapshotter::tick").is_err() {
            ctx.stop();
            return;
        }
        if let Some(why) = self.due() {
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
