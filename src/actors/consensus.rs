//! The `Consensus` actor: owns the `openraft::Raft` handle. Writes and strong reads are proposed
//! through it; linearizable reads wait on its read barrier. openraft's own tasks (RaftCore, the
//! state-machine worker, replication) run on the tokio worker threads; this actor is the typed
//! front door to them.
//!
//! It also keeps Raft alive. When openraft stops with a fatal error (a storage error, a panic in
//! its core task), Consensus builds a new `Raft` over the same stores: the log store has reopened
//! its file and dropped any entries it never acknowledged, the database is reread, and the node
//! rejoins its cluster as a follower. A fault that keeps coming back is not retried for ever:
//! after [`MAX_REBUILDS`] rebuilds within [`REBUILD_WINDOW`] the process exits with the error, so
//! a failing disk ends in a clear fatal error rather than a loop. A full disk is the exception:
//! it is expected to be fixed by freeing space, so Raft stays stopped (writes get 503 "database
//! or disk is full") and the rebuild is retried every [`DISK_FULL_RETRY`] without limit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, RaftError};

use crate::actors::supervise::{guard, note_restart, trip};
use crate::cluster::client::Peers;
use crate::cluster::ClusterReply;
use crate::raft::parts::RaftParts;
use crate::raft::{NodeInfo, Raft, SharedRaft};
use crate::store::command::{Command, Response};

/// Rebuilds of Raft allowed within [`REBUILD_WINDOW`] before the node gives up.
pub const MAX_REBUILDS: usize = 5;
pub const REBUILD_WINDOW: Duration = Duration::from_secs(600);
/// Exit status of a node whose Raft failed more often than it may be rebuilt.
pub const EXIT_RAFT_FAILED: i32 = 70;
/// How often a node whose disk is full tries to rebuild Raft.
pub const DISK_FULL_RETRY: Duration = Duration::from_secs(2);

/// Exit with [`EXIT_RAFT_FAILED`] in a moment: requests already answered with a 503 get their
/// responses out first, so no client is left with a dropped connection.
fn exit_soon() {
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::process::exit(EXIT_RAFT_FAILED);
    });
}

/// Is this fatal error damaged data (SQLite's "database disk image is malformed" or "file is not
/// a database", a log record failing its checksum)? Rebuilding cannot help.
fn corrupt(msg: &str) -> bool {
    msg.contains("malformed") || msg.contains("not a database") || msg.contains("fails its checksum")
}

/// Is this fatal error a full disk? SQLite says "database or disk is full" (SQLITE_FULL); the
/// file system says ENOSPC. openraft carries storage errors as text, so match the text.
fn disk_full(msg: &str) -> bool {
    msg.contains("disk is full") || msg.contains("No space left on device") || msg.contains("os error 28")
}

const ACTOR: &str = "consensus";

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProposeError {
    #[error("not leader")]
    NotLeader { leader: Option<NodeInfo> },
    #[error("timeout waiting for raft")]
    Timeout,
    #[error("{0}")]
    Failed(String),
    /// Raft stopped (a storage error); it is being rebuilt, or the node is about to exit.
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// The Consensus actor failed on this request and is restarting; try again.
    #[error("consensus restarting: {0}")]
    Restarting(String),
}

/// Group commit (`-group-commit-in-flight`, `-group-commit-max-batch`): at most `in_flight`
/// proposals out at once; requests that arrive meanwhile wait and go together, up to `max_batch`
/// of them, in the next one. `in_flight` 0, the default, is 1. openraft appends one entry at a
/// time, so on a lone voter a second proposal only splits the batch (1 in flight measured ~15 %
/// faster at 16 clients). In a cluster a second proposal used to overlap the previous entry's
/// replication, but the leader now sends a new entry to its followers while it fsyncs it
/// (`src/raft/presend.rs`), and only to followers that hold the entry before; with one entry in
/// flight they do, so each entry's fsyncs overlap, and 1 measured faster at 16 clients on 3 and
/// 5 nodes. docs/PERFORMANCE.md ("One entry in flight in a cluster") has the runs.
#[derive(Clone, Copy, Debug)]
pub struct GroupCommit {
    pub in_flight: usize,
    pub max_batch: usize,
}

pub type Reply = tokio::sync::oneshot::Sender<Result<Response, ProposeError>>;
type BarrierReply = tokio::sync::oneshot::Sender<Result<(), ProposeError>>;

pub struct Consensus {
    raft: SharedRaft,
    /// Writes waiting for the next proposal (group commit).
    pending: VecDeque<(Command, Reply)>,
    in_flight: usize,
    /// Linearizable reads waiting for the next read barrier, with their timeouts.
    barrier_waiting: Vec<(Duration, BarrierReply)>,
    barrier_in_flight: bool,
    parts: RaftParts,
    apply_timeout: Duration,
    group_commit: GroupCommit,
    /// When Raft was rebuilt, most recent last; only those within [`REBUILD_WINDOW`] are kept.
    rebuilds: VecDeque<Instant>,
    /// Set by [`StopRaft`]: Raft is being shut down on purpose and must stay down.
    stopping: bool,
    /// Bumped for every `Raft` this actor watches, so a stale watcher's report is ignored.
    generation: u64,
    /// How many `Raft`s this actor has had (the first, then one per rebuild), and for which of
    /// them the leadership watcher runs: one watcher per `Raft`, never a second one after this
    /// actor restarts (counters would count twice).
    raft_builds: u64,
    leadership_watched: u64,
    /// Bumped when this actor restarts: a [`ProposalDone`] or [`BarrierDone`] from before the
    /// restart does not count against the new in-flight limits.
    epoch: u64,
}

/// A proposal started by [`Consensus::flush`] finished (its requests have their replies).
#[derive(Message)]
#[rtype(result = "()")]
struct ProposalDone {
    epoch: u64,
}

/// A read barrier finished (its reads have their replies).
#[derive(Message)]
#[rtype(result = "()")]
struct BarrierDone {
    epoch: u64,
}

impl Consensus {
    pub fn new(raft: SharedRaft, parts: RaftParts, apply_timeout: Duration, group_commit: GroupCommit) -> Self {
        Consensus {
            raft,
            pending: VecDeque::new(),
            in_flight: 0,
            barrier_waiting: Vec::new(),
            barrier_in_flight: false,
            parts,
            apply_timeout,
            group_commit,
            rebuilds: VecDeque::new(),
            stopping: false,
            generation: 0,
            raft_builds: 1,
            leadership_watched: 0,
            epoch: 0,
        }
    }

    /// Start a read barrier for every linearizable read waiting now. Reads that arrive while one
    /// is in flight wait for the next: a barrier only vouches for reads that began before it did,
    /// so concurrent reads share a heartbeat round without any read seeing a stale state.
    fn start_barrier(&mut self, ctx: &mut Context<Self>) {
        if self.barrier_in_flight || self.barrier_waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.barrier_waiting);
        let timeout = waiting.iter().map(|(t, _)| *t).max().unwrap_or(Duration::from_secs(10));
        metrics::histogram!("raftlite_read_barrier_reads").record(waiting.len() as f64);
        self.barrier_in_flight = true;
        let (raft, addr, epoch) = (self.raft.get(), ctx.address(), self.epoch);
        // A task of its own, not a future of this actor's context: see `flush`.
        tokio::spawn(async move {
            let res = barrier(raft, timeout).await;
            for (_, r) in waiting {
                let _ = r.send(res.clone());
            }
            addr.do_send(BarrierDone { epoch });
        });
    }

    /// Propose what is waiting, as long as fewer than the in-flight limit are out. With
    /// one client every write goes at once (no added latency); with many, the writes that arrive
    /// while a proposal is in flight share the next log entry: one append, one fsync on each
    /// node, one apply transaction.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let limit = self.group_commit.in_flight.max(1);
        while self.in_flight < limit && !self.pending.is_empty() {
            let n = self.pending.len().min(self.group_commit.max_batch);
            let (cmds, replies): (Vec<Command>, Vec<Reply>) = self.pending.drain(..n).unzip();
            metrics::histogram!("raftlite_group_commit_requests").record(cmds.len() as f64);
            let cmd = if cmds.len() == 1 { cmds.into_iter().next() } else { Some(Command::Batch(cmds)) };
            let Some(cmd) = cmd else { continue };
            self.in_flight += 1;
            let (raft, timeout, addr, epoch) = (self.raft.get(), self.apply_timeout, ctx.address(), self.epoch);
            // A task of its own, not a future of this actor's context: while a rebuild holds the
            // context (`ctx.wait`), the context's other futures are not polled, and a proposal
            // caught in openraft's shutdown path would then hold a lock that the rebuild's
            // shutdown waits for: a deadlock (found by the fsync fault test).
            tokio::spawn(async move {
                distribute(write_through(raft, cmd, timeout).await, replies);
                addr.do_send(ProposalDone { epoch });
            });
        }
    }

    /// Watch the current `Raft` and report here if it stops on its own.
    fn watch(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        let raft = self.raft.get();
        if self.leadership_watched != self.raft_builds {
            self.leadership_watched = self.raft_builds;
            crate::raft::watch_leadership(raft.clone());
        }
        ctx.spawn(
            async move { wait_stopped(raft).await }
                .into_actor(self)
                .map(move |fatal, _act, ctx| ctx.notify(RaftStopped { generation, fatal })),
        );
    }
}

/// Wait until `raft` stops; `None` for a deliberate shutdown.
///
/// This waits on the server metrics, which change only with the vote, role, leader or
/// membership, and whose sender goes when the core task ends. The full metrics, which carry why
/// it ended, are sent on every turn of the core (several times a write): waiting on them woke
/// this actor's thread that often for nothing.
async fn wait_stopped(raft: Raft) -> Option<String> {
    let mut rx = raft.server_metrics();
    loop {
        let ended = rx.changed().await.is_err();
        match &raft.metrics().borrow().running_state {
            Ok(()) if ended => {
                // The core task ended without reporting: it panicked.
                return Some(Fatal::<u64>::Panicked.to_string());
            }
            Ok(()) => {}
            Err(Fatal::Stopped) => return None,
            Err(f) => return Some(f.to_string()),
        }
    }
}

impl Actor for Consensus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.watch(ctx);
    }
}

impl Supervised for Consensus {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Proposals and barriers in flight run on as tasks and answer their requests; the new
        // context starts its limits afresh.
        self.epoch += 1;
        self.in_flight = 0;
        self.barrier_in_flight = false;
        for (_, reply) in self.barrier_waiting.drain(..) {
            let _ = reply.send(Err(ProposeError::Restarting("read barrier dropped".into())));
        }
        for (_, reply) in self.pending.drain(..) {
            let _ = reply.send(Err(ProposeError::Restarting("the write was not proposed".into())));
        }
        note_restart(ACTOR);
    }
}

/// One proposal through Raft, waiting for its applied result.
async fn write_through(raft: Raft, cmd: Command, timeout: Duration) -> Result<Response, ProposeError> {
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Err(_) => Err(ProposeError::Timeout),
        Ok(Ok(resp)) => Ok(resp.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(ProposeError::NotLeader { leader: f.leader_node })
        }
        Ok(Err(RaftError::Fatal(f))) => Err(ProposeError::Stopped(f.to_string())),
        Ok(Err(e)) => Err(ProposeError::Failed(e.to_string())),
    }
}

/// Hand each batched request its own part of the response (or the shared error).
fn distribute(res: Result<Response, ProposeError>, replies: Vec<Reply>) {
    match res {
        Ok(resp) if replies.len() == 1 => {
            if let Some(r) = replies.into_iter().next() {
                let _ = r.send(Ok(resp));
            }
        }
        Ok(resp) if resp.parts.len() == replies.len() => {
            for (part, r) in resp.parts.into_iter().zip(replies) {
                let _ = r.send(Ok(part));
            }
        }
        Ok(resp) => {
            let msg = resp.error.unwrap_or_else(|| "batch response does not match the batch".into());
            for r in replies {
                let _ = r.send(Err(ProposeError::Failed(msg.clone())));
            }
        }
        Err(e) => {
            for r in replies {
                let _ = r.send(Err(e.clone()));
            }
        }
    }
}

/// The watched `Raft` stopped with `fatal` (None: shut down on purpose).
#[derive(Message)]
#[rtype(result = "()")]
struct RaftStopped {
    generation: u64,
    fatal: Option<String>,
}

/// Shut Raft down for good (node shutdown): no rebuild follows.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRaft;

impl Handler<ProposalDone> for Consensus {
    type Result = ();
    fn handle(&mut self, msg: ProposalDone, ctx: &mut Context<Self>) {
        let _ = guard(ctx, ACTOR, |ctx| {
            if msg.epoch == self.epoch {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.flush(ctx);
            }
            Ok(())
        });
    }
}

impl Handler<BarrierDone> for Consensus {
    type Result = ();
    fn handle(&mut self, msg: BarrierDone, ctx: &mut Context<Self>) {
        let _ = guard(ctx, ACTOR, |ctx| {
            if msg.epoch == self.epoch {
                self.barrier_in_flight = false;
                self.start_barrier(ctx);
            }
            Ok(())
        });
    }
}

impl Handler<RaftStopped> for Consensus {
    type Result = ();
    fn handle(&mut self, msg: RaftStopped, ctx: &mut Context<Self>) {
        let _ = guard(ctx, ACTOR, |ctx| {
            self.on_raft_stopped(msg, ctx);
            Ok(())
        });
    }
}

impl Consensus {
    /// Raft stopped on its own: rebuild it, or give up (damaged data, too many rebuilds).
    fn on_raft_stopped(&mut self, msg: RaftStopped, ctx: &mut Context<Self>) {
        let Some(fatal) = msg.fatal else { return };
        if self.stopping || msg.generation != self.generation {
            return;
        }
        if corrupt(&fatal) {
            tracing::error!(
                error = %fatal,
                "FATAL: this node's data is damaged; stopping. Wipe its data directory and rejoin it to the cluster"
            );
            self.stopping = true;
            exit_soon();
            return;
        }
        let full = disk_full(&fatal);
        let now = Instant::now();
        while self.rebuilds.front().is_some_and(|t| now.duration_since(*t) > REBUILD_WINDOW) {
            self.rebuilds.pop_front();
        }
        if !full && self.rebuilds.len() >= MAX_REBUILDS {
            tracing::error!(
                error = %fatal,
                rebuilds = self.rebuilds.len(),
                "FATAL: raft failed again after {MAX_REBUILDS} rebuilds in {}s; stopping this node. \
                 Check the disk holding the data directory; if its files are damaged, wipe the data \
                 directory and rejoin the node to its cluster",
                REBUILD_WINDOW.as_secs()
            );
            self.stopping = true;
            exit_soon();
            return;
        }
        metrics::counter!("raftlite_raft_rebuilds_total").increment(1);
        let pause = if full {
            tracing::error!(error = %fatal, "disk full: raft stopped, writes are refused; retrying every {}s until space is freed", DISK_FULL_RETRY.as_secs());
            DISK_FULL_RETRY
        } else {
            self.rebuilds.push_back(now);
            tracing::error!(error = %fatal, attempt = self.rebuilds.len(), "raft stopped on a fatal error; rebuilding it over the same stores");
            // A short pause: no hot loop, and a fault about to clear gets a chance.
            Duration::from_millis(200)
        };
        let (old, parts) = (self.raft.get(), self.parts.clone());
        ctx.wait(
            async move {
                let _ = old.shutdown().await;
                tokio::time::sleep(pause).await;
                parts.build().await
            }
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok(raft) => {
                    tracing::info!("raft rebuilt; rejoining the cluster");
                    act.raft.replace(raft);
                    act.raft_builds += 1;
                    act.watch(ctx);
                }
                Err(e) => {
                    // Report through the same path, so the rebuild budget applies to this too.
                    act.generation += 1;
                    let generation = act.generation;
                    ctx.notify(RaftStopped { generation, fatal: Some(format!("rebuild failed: {e}")) });
                }
            }),
        );
    }
}

impl Handler<StopRaft> for Consensus {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _msg: StopRaft, _ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let raft = self.raft.get();
        Box::pin(async move {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown");
            }
        })
    }
}

/// Propose one command (one log entry); its applied result, or why it has none, goes to `reply`.
/// Callers use [`propose`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Propose {
    pub cmd: Command,
    pub reply: Reply,
}

/// Propose `cmd` through `consensus` and wait for its applied result.
///
/// The result comes straight from the task that ran the proposal to the caller, not back
/// through this actor's thread as an actix reply would: on every write that is two thread
/// hand-offs fewer (docs/PERFORMANCE.md, "Replies that skip the actor's thread").
pub async fn propose(consensus: &Addr<Consensus>, cmd: Command) -> Result<Response, ProposeError> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    // Queued even when the mailbox is over its capacity, as `send` would wait for; a stopped
    // actor drops the message, and with it `reply`.
    consensus.do_send(Propose { cmd, reply });
    rx.await
        .unwrap_or_else(|_| Err(ProposeError::Restarting("the proposal was dropped; its outcome is unknown".into())))
}

/// Wait until this node, as leader, has confirmed leadership with a quorum and applied
/// everything committed before the call (openraft's `ensure_linearizable`).
#[derive(Message)]
#[rtype(result = "Result<(), ProposeError>")]
pub struct LinearizableBarrier(pub Duration);

/// Hand leadership to another voter (`target`, or the most up-to-date one). With `wait`, the
/// reply comes once leadership has moved; without, at once, and the transfer runs on.
#[derive(Message)]
#[rtype(result = "Result<(), ProposeError>")]
pub struct TransferLeadership {
    pub target: Option<u64>,
    pub wait: bool,
}

/// A handle to the Raft node, for metrics.
#[derive(Message)]
#[rtype(result = "Raft")]
pub struct GetRaft;

impl Handler<Propose> for Consensus {
    type Result = ();
    fn handle(&mut self, msg: Propose, ctx: &mut Context<Self>) {
        let Propose { cmd, reply } = msg;
        if let Err(f) = guard(ctx, ACTOR, |_| trip(ACTOR, "consensus::propose")) {
            let _ = reply.send(Err(ProposeError::Restarting(f.to_string())));
            return;
        }
        if !matches!(cmd, Command::Execute { .. }) {
            // Not batched: a task of its own, for the reason given in `flush`.
            let (raft, timeout) = (self.raft.get(), self.apply_timeout);
            tokio::spawn(async move {
                let _ = reply.send(write_through(raft, cmd, timeout).await);
            });
            return;
        }
        // A fault here drops `reply` or leaves it in `pending`, which `restarting` answers.
        let _ = guard(ctx, ACTOR, |ctx| {
            self.pending.push_back((cmd, reply));
            self.flush(ctx);
            Ok(())
        });
    }
}

impl Handler<LinearizableBarrier> for Consensus {
    type Result = ResponseFuture<Result<(), ProposeError>>;
    fn handle(&mut self, msg: LinearizableBarrier, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let started = guard(ctx, ACTOR, |ctx| {
            self.barrier_waiting.push((msg.0, tx));
            self.start_barrier(ctx);
            Ok(())
        });
        if let Err(f) = started {
            return Box::pin(async move { Err(ProposeError::Restarting(f.to_string())) });
        }
        Box::pin(async move {
            match tokio::time::timeout(msg.0, rx).await {
                Err(_) => Err(ProposeError::Failed("timeout waiting for fsm".into())),
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(ProposeError::Restarting("read barrier dropped".into())),
            }
        })
    }
}

/// openraft's read barrier: leadership confirmed by a quorum, and everything committed before
/// it applied here.
async fn barrier(raft: Raft, timeout: Duration) -> Result<(), ProposeError> {
    match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
        Err(_) => Err(ProposeError::Failed("timeout waiting for fsm".into())),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            Err(ProposeError::NotLeader { leader: f.leader_node })
        }
        Ok(Err(e)) => Err(ProposeError::Failed(e.to_string())),
    }
}

impl Handler<TransferLeadership> for Consensus {
    type Result = ResponseFuture<Result<(), ProposeError>>;
    fn handle(&mut self, msg: TransferLeadership, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(f) = guard(ctx, ACTOR, |_| trip(ACTOR, "consensus::transfer")) {
            return Box::pin(async move { Err(ProposeError::Restarting(f.to_string())) });
        }
        let (raft, peers, me) = (self.raft.get(), self.parts.peers.clone(), self.parts.node_id);
        let m = raft.metrics().borrow().clone();
        if m.current_leader != Some(me) {
            let leader = crate::raft::leader_of(&m);
            return Box::pin(async move { Err(ProposeError::NotLeader { leader }) });
        }
        let run = handover(raft, peers, me, msg.target);
        if msg.wait {
            return Box::pin(async move { run.await.map_err(ProposeError::Failed) });
        }
        // A task of its own (see `flush`): it must not hold up this actor's context.
        tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::warn!(error = %e, "leadership transfer");
            }
        });
        Box::pin(async { Ok(()) })
    }
}

impl Handler<GetRaft> for Consensus {
    type Result = MessageResult<GetRaft>;
    fn handle(&mut self, _msg: GetRaft, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.raft.get())
    }
}

/// Hand leadership to `target` (or the most up-to-date other voter): the target, once caught up,
/// starts an election it wins. The caller has checked that this node leads.
async fn handover(raft: Raft, peers: Arc<Peers>, me: u64, target: Option<u64>) -> Result<(), String> {
    let m = raft.metrics().borrow().clone();
    let mem = m.membership_config.membership().clone();
    let last = m.last_log_index.unwrap_or(0);
    let progress =
        |id: &u64| m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index).unwrap_or(0);
    let target = match target {
        Some(t) if t == me => return Ok(()),
        Some(t) if mem.voter_ids().any(|v| v == t) => t,
        Some(_) => return Err("target is not a voter".into()),
        None => mem.voter_ids().filter(|v| *v != me).max_by_key(progress).ok_or("no other voter")?,
    };
    let node = mem.get_node(&target).cloned().ok_or("target unknown")?;
    // Let the target catch up first so that it can win.
    let _ = crate::raft::wait_replicated(&raft, target, last, Duration::from_secs(5)).await;
    // openraft 0.9 has no transfer API, and voters refuse to vote while their leader lease (one
    // election timeout) is fresh. So: stop heartbeats, let the lease run out, and ask the target
    // to start an election it will win (its log is the most up to date). Heartbeats are switched
    // back on whatever happens; if the election did not take, this node simply stays leader.
    let lease = raft.config().election_timeout_max;
    raft.runtime_config().heartbeat(false);
    let moved = async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(lease + lease / 4)).await;
            match peers.call::<_, ClusterReply>(&node.raft_addr, "/cluster/elect", &(), Duration::from_secs(5)).await {
                Ok(ClusterReply::Ok) => {}
                Ok(other) => return Err(format!("{other:?}")),
                Err(e) => return Err(e.to_string()),
            }
            let r = raft
                .wait(Some(Duration::from_millis(lease * 2)))
                .metrics(|m| m.current_leader.is_some() && m.current_leader != Some(me), "leadership moved")
                .await;
            if r.is_ok() {
                return Ok(());
            }
        }
        Err("leadership did not move".to_string())
    };
    let r = moved.await;
    raft.runtime_config().heartbeat(true);
    r
}

#[cfg(test)]
mod tests {
    use super::disk_full;

    #[test]
    fn full_disks_are_recognised() {
        assert!(disk_full("when Write Logs: log_store storage error: database or disk is full"));
        assert!(disk_full("No space left on device (os error 28)"));
        assert!(!disk_full("log_store storage error: disk I/O error"));
        assert!(super::corrupt("applier storage error: database disk image is malformed"));
        assert!(!super::corrupt("applier storage error: disk I/O error"));
    }
}
