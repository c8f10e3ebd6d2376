//! The `WriteQueue` actor: queued writes (docs/API.md §6). `POST /db/execute?queue` is answered at
//! once with a sequence number; the actor collects queued requests into batches
//! (`-write-queue-batch-size` requests, or `-write-queue-timeout` after the first arrived) and
//! writes each batch as one proposal: one log entry, optionally one transaction
//! (`-write-queue-tx`). Batches are written one at a time, in arrival order; a follower's batch
//! goes to the leader over the inter-node port (`/cluster/execute`). A batch that cannot be
//! written is retried every second.
//!
//! This trades durability for throughput, explicitly (docs/DESIGN.md §5, queued writes): a queued
//! write is acknowledged before it is logged, and is lost if the node stops first. It is not lost
//! when this actor restarts: the pending requests are fields of the actor, which its supervisor
//! keeps, and the batch being written runs on as a task of its own. `?queue&wait` waits for the
//! batch to commit.
//!
//! Back-pressure: [`QueueHandle::push`] takes one of `-write-queue-capacity` permits before the
//! request reaches the actor, and the permit is given back once its batch is taken for writing,
//! so a full queue makes callers wait instead of growing without bound.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::actors::consensus::{propose, Consensus, ProposeError};
use crate::actors::supervise::{guard, note_restart, Fault};
use crate::cluster::client::Peers;
use crate::config::Config;
use crate::store::command::{Command, ExecOptions, Response, Statement, StmtResult};

const ACTOR: &str = "write_queue";

/// The queue's settings and counters, shared with `/status`; they outlive actor restarts.
#[derive(Debug)]
pub struct QueueStats {
    pub capacity: usize,
    pub batch_size: usize,
    pub timeout: Duration,
    pub use_tx: bool,
    /// The deterministic work budget of each batch's statements (`-db-timeout`; 0: none).
    pub step_budget: u64,
    /// Requests queued and not yet taken for writing.
    pub depth: AtomicU64,
    /// The last sequence number written (committed).
    pub last_written: AtomicU64,
}

struct Queued {
    stmts: Vec<Statement>,
    seq: u64,
    done: Option<oneshot::Sender<()>>,
    _permit: OwnedSemaphorePermit,
}

pub struct WriteQueue {
    stats: Arc<QueueStats>,
    consensus: Addr<Consensus>,
    peers: Arc<Peers>,
    pending: VecDeque<Queued>,
    next_seq: u64,
    /// A batch is being written (by a task that reports [`BatchDone`]).
    writing: bool,
    /// A flush is scheduled for when the oldest pending request has waited `timeout`.
    timer: Option<SpawnHandle>,
}

/// The handle the HTTP front holds.
#[derive(Clone)]
pub struct QueueHandle {
    pub addr: Addr<WriteQueue>,
    pub stats: Arc<QueueStats>,
    room: Arc<Semaphore>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the write queue is closed")]
    Closed,
    #[error("the write queue is restarting: {0}")]
    Fault(#[from] Fault),
}

impl QueueStats {
    /// The settings from `-write-queue-*`, counters at zero.
    pub fn new(cfg: &Config) -> QueueStats {
        QueueStats {
            capacity: cfg.write_queue_capacity.max(1),
            batch_size: cfg.write_queue_batch_size.max(1),
            timeout: cfg.write_queue_timeout,
            use_tx: cfg.write_queue_tx,
            step_budget: crate::store::db::step_budget(cfg.db_timeout),
            depth: AtomicU64::new(0),
            last_written: AtomicU64::new(0),
        }
    }
}

impl QueueHandle {
    /// Queue statements; waits while the queue is full. The sequence number, and with `wait` a
    /// receiver that fires once the batch holding them has committed.
    pub async fn push(&self, stmts: Vec<Statement>, wait: bool) -> Result<Enqueued, QueueError> {
        let permit = self.room.clone().acquire_owned().await.map_err(|_| QueueError::Closed)?;
        match self.addr.send(Enqueue { stmts, wait, permit }).await {
            Ok(r) => r.map_err(QueueError::Fault),
            Err(_) => Err(QueueError::Closed),
        }
    }
}

impl WriteQueue {
    /// Start the queue under its supervisor.
    pub fn start(cfg: &Config, consensus: Addr<Consensus>, peers: Arc<Peers>) -> QueueHandle {
        let stats = Arc::new(QueueStats::new(cfg));
        let capacity = stats.capacity;
        // Sequence numbers start at the node's start time in Unix nanoseconds (docs/API.md §6).
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let s = stats.clone();
        let addr = Supervisor::start(move |_| WriteQueue {
            stats: s,
            consensus,
            peers,
            pending: VecDeque::new(),
            next_seq: start,
            writing: false,
            timer: None,
        });
        QueueHandle { addr, stats, room: Arc::new(Semaphore::new(capacity)) }
    }

    fn set_depth(&self) {
        let d = self.pending.len() as u64;
        self.stats.depth.store(d, Ordering::Relaxed);
        metrics::gauge!("raftlite_write_queue_depth").set(d as f64);
    }

    /// Write the next batch if none is being written and one is due: full, or `force`d by the
    /// timer.
    fn flush(&mut self, ctx: &mut Context<Self>, force: bool) {
        if self.writing || self.pending.is_empty() {
            return;
        }
        if !force && self.pending.len() < self.stats.batch_size {
            if self.timer.is_none() {
                self.timer = Some(ctx.run_later(self.stats.timeout, |act, ctx| {
                    act.timer = None;
                    act.flush(ctx, true);
                }));
            }
            return;
        }
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        let n = self.pending.len().min(self.stats.batch_size);
        let items: Vec<Queued> = self.pending.drain(..n).collect();
        self.set_depth();
        self.writing = true;
        let (consensus, peers, stats, addr) =
            (self.consensus.clone(), self.peers.clone(), self.stats.clone(), ctx.address());
        // A task of its own, so that it runs on (and keeps the batch) through a restart of this
        // actor; it reports back when the batch is written.
        tokio::spawn(async move {
            write_batch(&consensus, &peers, &stats, items).await;
            addr.do_send(BatchDone);
        });
    }
}

impl Actor for WriteQueue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // After a restart, what was pending is still here and must still go out.
        self.flush(ctx, false);
    }
}

impl Supervised for WriteQueue {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // The pending requests were acknowledged and are kept; the timer belonged to the old
        // context.
        self.timer = None;
        note_restart(ACTOR);
    }
}

/// What a queued request gets back at once.
pub struct Enqueued {
    pub seq: u64,
    pub done: Option<oneshot::Receiver<()>>,
}

/// Queue one request's statements (an empty list with `wait` is a flush barrier).
#[derive(Message)]
#[rtype(result = "Result<Enqueued, Fault>")]
struct Enqueue {
    stmts: Vec<Statement>,
    wait: bool,
    permit: OwnedSemaphorePermit,
}

/// The batch being written is done.
#[derive(Message)]
#[rtype(result = "()")]
struct BatchDone;

impl Handler<Enqueue> for WriteQueue {
    type Result = Result<Enqueued, Fault>;
    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        guard(ctx, ACTOR, |ctx| {
            crate::actors::supervise::trip(ACTOR, "write_queue::enqueue")?;
            self.next_seq += 1;
            let seq = self.next_seq;
            let (done, rx) = if msg.wait {
                let (t, r) = oneshot::channel();
                (Some(t), Some(r))
            } else {
                (None, None)
            };
            self.pending.push_back(Queued { stmts: msg.stmts, seq, done, _permit: msg.permit });
            self.set_depth();
            self.flush(ctx, false);
            Ok(Enqueued { seq, done: rx })
        })
    }
}

impl Handler<BatchDone> for WriteQueue {
    type Result = ();
    fn handle(&mut self, _msg: BatchDone, ctx: &mut Context<Self>) {
        self.writing = false;
        let _ = guard(ctx, ACTOR, |ctx| {
            // Whatever waited while the batch was written has waited long enough.
            let force = self.timer.is_none() && !self.pending.is_empty();
            self.flush(ctx, force);
            Ok(())
        });
    }
}

/// Write one batch, retrying every second until it is written (docs/API.md §6). SQL errors inside
/// the batch are counted and logged; nobody is waiting for them.
async fn write_batch(consensus: &Addr<Consensus>, peers: &Peers, stats: &QueueStats, items: Vec<Queued>) {
    let n = items.len() as u64;
    let stmts: Vec<Statement> = items.iter().flat_map(|i| i.stmts.iter().cloned()).collect();
    if !stmts.is_empty() {
        let opts = ExecOptions {
            transaction: stats.use_tx,
            step_budget: stats.step_budget,
            proposed_at_ms: chrono::Utc::now().timestamp_millis(),
            ..ExecOptions::default()
        };
        let cmd = Command::Execute { stmts, opts, seed: rand::random() };
        loop {
            match submit(consensus, peers, cmd.clone()).await {
                Ok(resp) => {
                    let errors = resp.results.iter().filter(|r| matches!(r, StmtResult::Error { .. })).count();
                    if errors > 0 || resp.error.is_some() {
                        metrics::counter!("raftlite_write_queue_statement_errors_total").increment(errors as u64);
                        tracing::warn!(errors, error = ?resp.error, "queued writes: statements failed");
                    }
                    break;
                }
                Err(e) => {
                    metrics::counter!("raftlite_write_queue_retries_total").increment(1);
                    tracing::warn!(error = %e, "queued writes: batch not written; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    metrics::counter!("raftlite_write_queue_batches_total").increment(1);
    metrics::counter!("raftlite_write_queue_requests_total").increment(n);
    if let Some(last) = items.iter().map(|i| i.seq).max() {
        stats.last_written.fetch_max(last, Ordering::Relaxed);
    }
    for i in items {
        if let Some(d) = i.done {
            let _ = d.send(());
        }
    }
}

/// Propose `cmd` here if this node leads, else on the leader over the inter-node port.
pub async fn submit(consensus: &Addr<Consensus>, peers: &Peers, cmd: Command) -> Result<Response, String> {
    match propose(consensus, cmd.clone()).await {
        Ok(resp) => Ok(resp),
        Err(ProposeError::NotLeader { leader: Some(l) }) => {
            let r: Result<Response, String> = peers
                .call(&l.raft_addr, "/cluster/execute", &cmd, Duration::from_secs(30))
                .await
                .map_err(|e| format!("forwarding to the leader: {e}"))?;
            r
        }
        Err(e) => Err(e.to_string()),
    }
}
