//! Queued writes (spec §6): `POST /db/execute?queue` answers at once with a sequence number; a
//! background task drains the queue in batches (`-write-queue-batch-size` requests, or
//! `-write-queue-timeout` after the first arrived) and proposes each batch as one write: one log
//! entry, optionally one transaction (`-write-queue-tx`). A follower forwards its batches to the
//! leader over the inter-node port. A batch that cannot be written is retried every second.
//!
//! This trades durability for throughput, explicitly (reliability.md §5.1 item 7): a queued write
//! is acknowledged before it is logged, and is lost if the node stops first. `?queue&wait` waits
//! for the batch to commit (`timeout`, default 30 s, then 408).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::actors::consensus::{Propose, ProposeError};
use crate::config::Config;
use crate::http::{AppState, Core};
use crate::store::command::{Command, ExecOptions, Response, Statement};

pub struct Queued {
    stmts: Vec<Statement>,
    seq: u64,
    done: Option<oneshot::Sender<()>>,
}

pub struct WriteQueue {
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    next_seq: AtomicU64,
    /// The last sequence number written (committed).
    pub last_written: AtomicU64,
    pub capacity: usize,
    pub batch_size: usize,
    pub timeout: Duration,
    pub use_tx: bool,
    depth: AtomicU64,
}

impl WriteQueue {
    pub fn new(cfg: &Config) -> WriteQueue {
        let capacity = cfg.write_queue_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        // Sequence numbers start at the node's start time in Unix nanoseconds (spec §6).
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        WriteQueue {
            tx,
            rx: Mutex::new(Some(rx)),
            next_seq: AtomicU64::new(start),
            last_written: AtomicU64::new(0),
            capacity,
            batch_size: cfg.write_queue_batch_size.max(1),
            timeout: cfg.write_queue_timeout,
            use_tx: cfg.write_queue_tx,
            depth: AtomicU64::new(0),
        }
    }

    /// Queue statements; blocks while the queue is full. The sequence number, and if `wait`, a
    /// receiver that fires once the batch holding them has committed.
    pub async fn push(
        &self,
        stmts: Vec<Statement>,
        wait: bool,
    ) -> Result<(u64, Option<oneshot::Receiver<()>>), String> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, rx) = if wait {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let d = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("raftlite_write_queue_depth").set(d as f64);
        self.tx.send(Queued { stmts, seq, done }).await.map_err(|_| "the write queue is closed".to_string())?;
        Ok((seq, rx))
    }

    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }
}

/// Drain the queue for as long as the node runs.
pub async fn run(state: Arc<AppState>) {
    let q = &state.queue;
    let Some(mut rx) = q.rx.lock().ok().and_then(|mut g| g.take()) else { return };
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        let deadline = tokio::time::Instant::now() + q.timeout;
        while items.len() < q.batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(i)) => items.push(i),
                _ => break,
            }
        }
        let n = items.len() as u64;
        let d = q.depth.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n))).unwrap_or(0);
        let d = d.saturating_sub(n);
        metrics::gauge!("raftlite_write_queue_depth").set(d as f64);
        let stmts: Vec<Statement> = items.iter().flat_map(|i| i.stmts.iter().cloned()).collect();
        if !stmts.is_empty() {
            write_batch(&state, stmts, q.use_tx).await;
        }
        metrics::counter!("raftlite_write_queue_batches_total").increment(1);
        metrics::counter!("raftlite_write_queue_requests_total").increment(n);
        if let Some(last) = items.iter().map(|i| i.seq).max() {
            q.last_written.fetch_max(last, Ordering::Relaxed);
        }
        for i in items {
            if let Some(d) = i.done {
                let _ = d.send(());
            }
        }
    }
}

/// Write one batch, retrying every second until it is written (spec §6). SQL errors inside the
/// batch are counted and logged; nobody is waiting for them.
async fn write_batch(state: &AppState, stmts: Vec<Statement>, use_tx: bool) {
    let Some(core) = state.core.get() else { return };
    let opts = ExecOptions {
        transaction: use_tx,
        proposed_at_ms: chrono::Utc::now().timestamp_millis(),
        ..ExecOptions::default()
    };
    let cmd = Command::Execute { stmts, opts, seed: rand::random() };
    loop {
        match submit(core, cmd.clone()).await {
            Ok(resp) => {
                let errors = resp
                    .results
                    .iter()
                    .filter(|r| matches!(r, crate::store::command::StmtResult::Error { .. }))
                    .count();
                if errors > 0 || resp.error.is_some() {
                    metrics::counter!("raftlite_write_queue_statement_errors_total").increment(errors as u64);
                    tracing::warn!(errors, error = ?resp.error, "queued writes: statements failed");
                }
                return;
            }
            Err(e) => {
                metrics::counter!("raftlite_write_queue_retries_total").increment(1);
                tracing::warn!(error = %e, "queued writes: batch not written; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Propose `cmd` here if this node leads, else on the leader over the inter-node port.
pub async fn submit(core: &Core, cmd: Command) -> Result<Response, String> {
    match core.consensus.send(Propose(cmd.clone())).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(ProposeError::NotLeader { leader: Some(l) })) => {
            let r: Result<Response, String> = core
                .peers
                .call(&l.raft_addr, "/cluster/execute", &cmd, Duration::from_secs(30))
                .await
                .map_err(|e| format!("forwarding to the leader: {e}"))?;
            r
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("consensus unavailable: {e}")),
    }
}
