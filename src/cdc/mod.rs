//! Change data capture (`-cdc-config`, docs/API.md §16, docs/DESIGN.md §9b): every row a
//! committed entry changes, delivered to a webhook (or standard output) at least once, in log
//! order, by the leader.
//!
//! - `config`: the flag and its JSON file.
//! - `capture`: row changes seen by the pre-update hook (`hook`) on the applier's connection;
//!   what commits is what is kept.
//! - `event`: the captured groups and rqlite's JSON.
//! - `queue`: the node's durable, bounded queue, written before the batch commits.
//!
//! Delivery is the `CdcSender` actor (src/actors/cdc_sender.rs): on the leader it reads the queue,
//! POSTs batches with retries, and shares how far it got as a high-water mark through the Raft
//! log (`Command::CdcHighWater`), which every node applies to prune its own queue.

pub mod capture;
pub mod config;
pub mod event;
pub mod hook;
pub mod queue;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::cdc::capture::Capture;
use crate::cdc::config::CdcConfig;
use crate::cdc::queue::{Queue, QueueError};

/// Delivery counters (the leader's side).
#[derive(Debug, Default)]
pub struct SendStats {
    pub batches_ok: AtomicU64,
    pub events_sent: AtomicU64,
    pub failures: AtomicU64,
    /// Batches given up after `transmit_max_retries` (their groups are not sent again).
    pub batches_given_up: AtomicU64,
    /// Commit-to-delivery time of the last group delivered, in milliseconds.
    pub last_lag_ms: AtomicU64,
    /// Unix ms of the last successful delivery.
    pub last_ok_ms: AtomicU64,
}

/// Everything CDC on this node shares: the applier captures into it and queues, the sender reads.
pub struct Cdc {
    pub config: CdcConfig,
    pub capture: Arc<Capture>,
    pub queue: Queue,
    pub sent: SendStats,
    /// Woken when the applier queued new groups.
    pub queued: tokio::sync::Notify,
}

impl Cdc {
    /// Open the node's queue under `data_dir`.
    pub fn open(config: CdcConfig, data_dir: &Path) -> Result<Arc<Cdc>, QueueError> {
        let queue = Queue::open(&data_dir.join("cdc").join("queue.sqlite"), config.max_queue_bytes)?;
        let capture = Arc::new(Capture::new(config.row_ids_only, config.table_filter.clone()));
        Ok(Arc::new(Cdc { config, capture, queue, sent: SendStats::default(), queued: tokio::sync::Notify::new() }))
    }

    /// After a batch's commit that queued `queued` groups: wake the sender when it has
    /// something to do, that is when the first group arrives (its `max_batch_delay` starts) or
    /// when a batch is full. Not on every commit: at one group per write, a wake-up per write was
    /// a context switch per write on the write path's cores. A wake-up given while the sender is
    /// busy is kept (one permit) for its next wait, so none is lost.
    pub fn committed(&self, queued: u64) {
        if queued == 0 {
            return;
        }
        let pending = self.queue.stats.pending.load(Ordering::Relaxed);
        if pending <= queued || pending >= self.config.max_batch_size as u64 {
            self.queued.notify_one();
        }
    }

    /// The highest log index that may be purged from the Raft log: the entry before the first
    /// one whose changes are queued and undelivered (no bound when none is). A follower that
    /// falls behind then catches up from the log, capturing every change, instead of installing
    /// a snapshot, which skips the changes of the entries it covers (docs/DESIGN.md §9b). The
    /// queue's own bound (`max_queue_bytes`) bounds what the log keeps for it.
    pub fn purge_bound(&self) -> Result<u64, QueueError> {
        Ok(self.queue.first_undelivered()?.map_or(u64::MAX, |i| i.saturating_sub(1)))
    }

    /// `/status` `cdc`.
    pub fn status(&self, leader: bool) -> serde_json::Value {
        let q = &self.queue.stats;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "endpoint": self.config.describe_sink(),
            "service_id": self.config.service_id,
            "row_ids_only": self.config.row_ids_only,
            "table_filter": self.config.table_filter.as_ref().map(|r| r.as_str()),
            "sending": leader,
            "queue": {
                "depth": r(&q.depth),
                "pending": r(&q.pending),
                "captured_through": r(&q.captured_through),
                "bytes": r(&q.bytes),
                "max_bytes": self.config.max_queue_bytes,
                "captured_index": r(&q.captured_index),
                "events_captured": r(&q.events_captured),
                "groups_dropped": r(&q.groups_dropped),
                "events_dropped": r(&q.events_dropped),
                "groups_from_snapshots": r(&q.groups_from_snapshots),
            },
            "high_water_mark": r(&q.high_water_mark),
            "delivered_index": r(&q.delivered_index),
            "batches_sent": r(&self.sent.batches_ok),
            "events_sent": r(&self.sent.events_sent),
            "failures": r(&self.sent.failures),
            "batches_given_up": r(&self.sent.batches_given_up),
            "last_lag_ms": r(&self.sent.last_lag_ms),
            "last_delivery_ms": r(&self.sent.last_ok_ms),
        })
    }
}
