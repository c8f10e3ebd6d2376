//! openraft's `RaftLogStorage` for raftlite: a thin adapter that encodes entries with the codec and
//! sends typed requests to the `LogStore` actor. The flush callback fires only after the actor
//! reports the append committed (fsynced), never before (design.md invariant 1).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::time::Duration;

use actix::Addr;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{StorageIOError, Vote};

use super::{any_err, Entry, LogId, StorageError, TypeConfig};
use crate::actors::log_store::{LogReply, LogRequest, LogStore};
use crate::actors::supervise::Fault;
use crate::store::codec;
use crate::store::log_db::{KEY_PURGED, KEY_VOTE};

/// Longest a purge waits for the snapshot install it follows (a large database takes a while).
const PURGE_WAIT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct LogAdapter {
    addr: Addr<LogStore>,
    /// The state machine's snapshot directory and stats: purges never go past its recorded
    /// snapshot.
    snapshot_guard: Option<(std::path::PathBuf, std::sync::Arc<crate::raft::sm_adapter::SnapshotStats>)>,
}

impl LogAdapter {
    pub fn new(addr: Addr<LogStore>) -> Self {
        LogAdapter { addr, snapshot_guard: None }
    }

    /// Never purge past the snapshot recorded in `snap_dir` (invariant 4 of design.md).
    /// openraft asks for the purge that follows a snapshot install before the install has
    /// finished; if the install then failed or the node crashed, a log purged past the database
    /// would leave a node that can never start again (openraft refuses a purged log beyond its
    /// snapshot). So a purge waits for the snapshot it follows to be recorded.
    pub fn with_snapshot_guard(
        mut self,
        snap_dir: std::path::PathBuf,
        stats: std::sync::Arc<crate::raft::sm_adapter::SnapshotStats>,
    ) -> Self {
        self.snapshot_guard = Some((snap_dir, stats));
        self
    }

    /// Wait (up to [`PURGE_WAIT`]) until the recorded snapshot covers `want`. Holding a purge
    /// back part way is not an option: entries a snapshot install truncated would leave a hole
    /// between the kept entries and the ones appended after it. If the snapshot never arrives
    /// (the install failed), the purge fails, Raft stops and is rebuilt from what is on disk.
    async fn wait_for_snapshot(&self, want: LogId) -> Result<(), StorageError> {
        let Some((dir, stats)) = &self.snapshot_guard else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + PURGE_WAIT;
        let failed_before = stats.installs_failed.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            let recorded = crate::raft::sm_adapter::read_current(dir)
                .map_err(|e| StorageIOError::read_snapshot(None, any_err(e)))?
                .and_then(|m| m.last_log_id);
            if recorded.map(|r| r.index >= want.index).unwrap_or(false) {
                return Ok(());
            }
            let failed = stats.installs_failed.load(std::sync::atomic::Ordering::Relaxed) != failed_before;
            if failed || tokio::time::Instant::now() > deadline {
                let msg = format!("purge up to {want} but the recorded snapshot is {recorded:?}");
                return Err(StorageIOError::write_logs(any_err(msg)).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Send a request; while the actor is restarting (state being reloaded from disk) retry for
    /// a short while. Every request is idempotent (appends are keyed by index), so a retry is safe.
    /// A panic or storage error is not retried: it surfaces to openraft, which stops.
    async fn call(&self, make: impl Fn() -> LogRequest) -> Result<LogReply, Fault> {
        let mut last = Fault::Unavailable("log_store");
        for attempt in 0..50 {
            match self.addr.send(make()).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(f @ Fault::Unavailable(_))) => last = f,
                Ok(Err(f)) => return Err(f),
                Err(_) => last = Fault::Unavailable("log_store"),
            }
            tokio::time::sleep(Duration::from_millis(10 * (attempt + 1).min(10))).await;
        }
        Err(last)
    }

    async fn meta<T: serde::de::DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StorageError> {
        match self.call(|| LogRequest::GetMeta(key)).await {
            Ok(LogReply::Meta(Some(b))) => {
                codec::decode(&b).map(Some).map_err(|e| StorageIOError::read(any_err(e)).into())
            }
            Ok(_) => Ok(None),
            Err(e) => Err(StorageIOError::read(any_err(e)).into()),
        }
    }

    async fn put_meta<T: serde::Serialize>(&self, key: &'static str, v: &T, vote: bool) -> Result<(), StorageError> {
        let bytes = codec::encode(v).map_err(|e| StorageIOError::write(any_err(e)))?;
        self.call(|| LogRequest::PutMeta(key, bytes.clone())).await.map(|_| ()).map_err(|e| {
            if vote {
                StorageIOError::write_vote(any_err(e)).into()
            } else {
                StorageIOError::write(any_err(e)).into()
            }
        })
    }
}

fn decode_entries(rows: Vec<(u64, Vec<u8>)>) -> Result<Vec<Entry>, StorageError> {
    rows.into_iter()
        .map(|(_, b)| codec::decode::<Entry>(&b).map_err(|e| StorageIOError::read_logs(any_err(e)).into()))
        .collect()
}

impl RaftLogReader<TypeConfig> for LogAdapter {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        match self.call(|| LogRequest::Range(start, end)).await {
            Ok(LogReply::Entries(rows)) => decode_entries(rows),
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(StorageIOError::read_logs(any_err(e)).into()),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogAdapter {
    type LogReader = LogAdapter;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = self.meta(KEY_PURGED).await?;
        let last = match self.call(|| LogRequest::Last).await {
            Ok(LogReply::Entries(rows)) => decode_entries(rows)?.pop().map(|e| e.log_id),
            Ok(_) => None,
            Err(e) => return Err(StorageIOError::read_logs(any_err(e)).into()),
        };
        Ok(LogState { last_purged_log_id: purged, last_log_id: last.or(purged) })
    }

    async fn get_log_reader(&mut self) -> LogAdapter {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        // Committed with synchronous=FULL: on disk before we return, as openraft requires.
        self.put_meta(KEY_VOTE, vote, true).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.meta(KEY_VOTE).await
    }

    // `save_committed` is left at openraft's default (not persisted): the committed index is a hint
    // that a leader re-establishes, and persisting it would cost a second fsync per write.

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        for e in entries {
            let b = codec::encode(&e).map_err(|err| StorageIOError::write_logs(any_err(err)))?;
            rows.push((e.log_id.index, b));
        }
        if rows.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        match self.call(|| LogRequest::Append(rows.clone())).await {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(any_err(e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.call(|| LogRequest::Truncate(log_id.index))
            .await
            .map(|_| ())
            .map_err(|e| StorageIOError::write_logs(any_err(e)).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wait_for_snapshot(log_id).await?;
        let purged_id = codec::encode(&log_id).map_err(|e| StorageIOError::write_logs(any_err(e)))?;
        self.call(|| LogRequest::Purge { upto: log_id.index, purged_id: purged_id.clone() })
            .await
            .map(|_| ())
            .map_err(|e| StorageIOError::write_logs(any_err(e)).into())
    }
}
