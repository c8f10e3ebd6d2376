//! openraft's `RaftLogStorage` for raftlite: a thin adapter that encodes entries with the codec and
//! sends typed requests to the `LogStore` actor. The flush callback fires only after the actor
//! reports the append committed (fsynced), never before (docs/DESIGN.md §5, invariant 1).
//!
//! The entries appended most recently are also kept in memory ([`Recent`]), for the reads that
//! follow an append at once: openraft reading committed entries to apply them, and the leader's
//! replication streams reading them to send. Served from the log thread, those reads would queue
//! behind the next append's fsync. Only entries whose append returned are kept, and a truncate or
//! purge drops them first, so a read returns exactly what the log on disk holds.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::time::Duration;

use actix::Addr;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{StorageIOError, Vote};

use super::presend::Presend;
use super::{any_err, Entry, LogId, StorageError, TypeConfig};
use crate::actors::log_store::{Append, GetMeta, Last, LogStore, Purge, PutMeta, Range, Truncate};
use crate::actors::supervise::Fault;
use crate::store::codec;
use crate::store::log_db::{KEY_PURGED, KEY_VOTE};

/// Longest a purge waits for the snapshot install it follows (a large database takes a while).
const PURGE_WAIT: Duration = Duration::from_secs(120);

/// Most entries, and bytes (encoded), kept in memory; an entry larger than [`RECENT_ENTRY_MAX`]
/// (a bulk request, a database load) is read back from the log instead.
const RECENT_MAX: usize = 4096;
const RECENT_BYTES_MAX: usize = 32 << 20;
const RECENT_ENTRY_MAX: usize = 1 << 20;

/// The most recently appended entries, contiguous by index, with their encoded sizes.
#[derive(Default)]
struct Recent {
    entries: std::collections::VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    /// Forget every entry at or after `index`.
    fn drop_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.log_id.index >= index) {
            if let Some((_, n)) = self.entries.pop_back() {
                self.bytes -= n;
            }
        }
    }

    /// Forget every entry at or before `index`.
    fn drop_upto(&mut self, index: u64) {
        while self.entries.front().is_some_and(|(e, _)| e.log_id.index <= index) {
            if let Some((_, n)) = self.entries.pop_front() {
                self.bytes -= n;
            }
        }
    }

    /// Keep entries whose append has returned (fsynced), in index order.
    fn push(&mut self, appended: Vec<(Entry, usize)>) {
        let Some(first) = appended.first().map(|(e, _)| e.log_id.index) else { return };
        self.drop_from(first);
        let contiguous = self.entries.back().is_none_or(|(e, _)| e.log_id.index + 1 == first);
        let oversized = appended.iter().any(|(_, n)| *n > RECENT_ENTRY_MAX);
        if !contiguous || oversized {
            // A gap, or an entry too large to keep: start again after it.
            self.entries.clear();
            self.bytes = 0;
            if oversized {
                return;
            }
        }
        for (e, n) in appended {
            self.bytes += n;
            self.entries.push_back((e, n));
        }
        while self.entries.len() > RECENT_MAX || self.bytes > RECENT_BYTES_MAX {
            match self.entries.pop_front() {
                Some((_, n)) => self.bytes -= n,
                None => break,
            }
        }
    }

    /// Entries `start <= index < end`, if all of them are here. The last entry kept is the last
    /// one in the log, so an open end (`u64::MAX`) stops there.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first()?;
        let last = self.entries.back().map(|(e, _)| e.log_id.index)?;
        let end = if end == u64::MAX { last + 1 } else { end };
        if start < first || end > last + 1 || start >= end {
            return None;
        }
        let from = (start - first) as usize;
        Some(self.entries.iter().skip(from).take((end - start) as usize).map(|(e, _)| e.clone()).collect())
    }
}

#[derive(Clone)]
pub struct LogAdapter {
    addr: Addr<LogStore>,
    /// Shared with the log readers this adapter hands out.
    recent: std::sync::Arc<std::sync::Mutex<Recent>>,
    /// The state machine's snapshot directory and stats: purges never go past its recorded
    /// snapshot.
    snapshot_guard: Option<(std::path::PathBuf, std::sync::Arc<crate::raft::sm_adapter::SnapshotStats>)>,
    /// Sends a leader's new entries to its followers while they are being fsynced here.
    presend: Option<std::sync::Arc<Presend>>,
}

impl LogAdapter {
    pub fn new(addr: Addr<LogStore>) -> Self {
        LogAdapter { addr, recent: Default::default(), snapshot_guard: None, presend: None }
    }

    /// Never purge past the snapshot recorded in `snap_dir` (docs/DESIGN.md §5, invariant 4).
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

    /// Send the entries this node appends as leader to its followers at once, in parallel with
    /// the fsync here (`src/raft/presend.rs`).
    pub fn with_presend(mut self, presend: std::sync::Arc<Presend>) -> Self {
        self.presend = Some(presend);
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
            let recorded = crate::store::position::read_current(dir)
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

    /// Run `f` on the recent entries. A poisoned lock (a panic while it was held) just empties
    /// them: the log on disk has everything.
    fn recent<T>(&self, f: impl FnOnce(&mut Recent) -> T) -> T {
        let mut guard = self.recent.lock().unwrap_or_else(|p| {
            let mut g = p.into_inner();
            *g = Recent::default();
            g
        });
        f(&mut guard)
    }

    /// Send a request; while the actor is restarting (state being reloaded from disk) retry for
    /// a short while. Every request is idempotent (appends are keyed by index), so a retry is safe.
    /// A panic or storage error is not retried: it surfaces to openraft, which stops.
    async fn call<M, T>(&self, make: impl Fn() -> M) -> Result<T, Fault>
    where
        M: actix::Message<Result = Result<T, Fault>> + Send + 'static,
        T: Send + 'static,
        LogStore: actix::Handler<M>,
    {
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
        match self.call(|| GetMeta(key)).await {
            Ok(Some(b)) => codec::decode(&b).map(Some).map_err(|e| StorageIOError::read(any_err(e)).into()),
            Ok(None) => Ok(None),
            Err(e) => Err(StorageIOError::read(any_err(e)).into()),
        }
    }

    async fn put_meta<T: serde::Serialize>(&self, key: &'static str, v: &T, vote: bool) -> Result<(), StorageError> {
        let bytes = codec::encode(v).map_err(|e| StorageIOError::write(any_err(e)))?;
        self.call(|| PutMeta(key, bytes.clone())).await.map_err(|e| {
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
        if let Some(hit) = self.recent(|r| r.get(start, end)) {
            return Ok(hit);
        }
        match self.call(|| Range(start, end)).await {
            Ok(rows) => decode_entries(rows),
            Err(e) => Err(StorageIOError::read_logs(any_err(e)).into()),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogAdapter {
    type LogReader = LogAdapter;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = self.meta(KEY_PURGED).await?;
        let last = match self.call(|| Last).await {
            Ok(row) => decode_entries(row.into_iter().collect())?.pop().map(|e| e.log_id),
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
        let mut appended = Vec::new();
        for e in entries {
            let b = codec::encode(&e).map_err(|err| StorageIOError::write_logs(any_err(err)))?;
            rows.push((e.log_id.index, b));
            appended.push((e, rows.last().map_or(0, |(_, b)| b.len())));
        }
        let Some(first) = rows.first().map(|(i, _)| *i) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        // Anything kept from this index on is about to be replaced.
        self.recent(|r| r.drop_from(first));
        if let Some(p) = &self.presend {
            p.send(&appended);
        }
        match self.call(|| Append(rows.clone())).await {
            Ok(_) => {
                self.recent(|r| r.push(appended));
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
        self.recent(|r| r.drop_from(log_id.index));
        self.call(|| Truncate(log_id.index)).await.map_err(|e| StorageIOError::write_logs(any_err(e)).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wait_for_snapshot(log_id).await?;
        let purged_id = codec::encode(&log_id).map_err(|e| StorageIOError::write_logs(any_err(e)))?;
        self.recent(|r| r.drop_upto(log_id.index));
        self.call(|| Purge { upto: log_id.index, purged_id: purged_id.clone() })
            .await
            .map_err(|e| StorageIOError::write_logs(any_err(e)).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> (Entry, usize) {
        (Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }, 10)
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_answer_only_what_they_hold_contiguously() {
        let mut r = Recent::default();
        r.push((1..=5).map(entry).collect());
        assert_eq!(indexes(r.get(2, 4)), Some(vec![2, 3]));
        assert_eq!(indexes(r.get(3, u64::MAX)), Some(vec![3, 4, 5]));
        assert_eq!(r.get(0, 3), None, "index 0 is not held");
        assert_eq!(r.get(4, 7), None, "index 6 is not in the log");
        // A truncate forgets the tail; a re-append replaces it.
        r.drop_from(4);
        assert_eq!(r.get(3, 5), None);
        r.push(vec![entry(4)]);
        assert_eq!(indexes(r.get(1, u64::MAX)), Some(vec![1, 2, 3, 4]));
        // A purge forgets the head.
        r.drop_upto(2);
        assert_eq!(r.get(2, 4), None);
        assert_eq!(indexes(r.get(3, 5)), Some(vec![3, 4]));
        // A gap starts the run again; an oversized entry empties it.
        r.push(vec![entry(9)]);
        assert_eq!(indexes(r.get(9, 10)), Some(vec![9]));
        assert_eq!(r.get(4, 5), None);
        r.push(vec![(entry(10).0, RECENT_ENTRY_MAX + 1)]);
        assert_eq!(r.get(9, 10), None);
        assert_eq!(r.bytes, 0);
    }

    #[test]
    fn recent_entries_stay_bounded() {
        let mut r = Recent::default();
        for i in 1..=(RECENT_MAX as u64 + 10) {
            r.push(vec![entry(i)]);
        }
        assert_eq!(r.entries.len(), RECENT_MAX);
        assert_eq!(r.first(), Some(11));
        assert_eq!(r.bytes, RECENT_MAX * 10);
    }
}
