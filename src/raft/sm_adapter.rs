//! openraft's `RaftStateMachine` for raftlite: applies entries through the `Applier` actor, and
//! treats the SQLite database as the snapshot (docs/DESIGN.md §6).
//!
//! - Compaction (`build_snapshot`) is cheap: the applier checkpoints the WAL into the main file
//!   and records the position that file now holds in `snapshots/current.json`
//!   (`store::position`); openraft may purge the log up to it. No copy is made, so it costs the
//!   WAL written since the last checkpoint, whatever the size of the database.
//! - Nothing is copied to send a snapshot: `get_current_snapshot` hands openraft a
//!   [`SnapshotFile::streamed`] view of the main file, which on first read takes the lock every
//!   change to the main file takes (for reading, until it is dropped) and then sends the file in
//!   place with a checksum trailer. It holds exactly the recorded position.
//! - With CDC on, the stream carries this node's undelivered changes through the snapshot's index
//!   (`cdc::queue::Queue::export`), which the installing node queues (docs/DESIGN.md §9b).
//! - Installing verifies the trailer, then the applier swaps the file in at the snapshot's
//!   position.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::Addr;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use tokio::io::AsyncSeekExt;

use super::{any_err, Entry, LogId, NodeInfo, StorageError, StoredMembership, TypeConfig};
use crate::actors::applier::{AppliedState, Applier, Apply, Compact, ReplaceDb};
use crate::actors::readers::Readers;
use crate::store::command::Response;
use crate::store::direct_writer::DirectWriter;
use crate::store::position::read_current;
use crate::store::snapshot_file::{remove_copies, verify_and_strip, Section, SnapshotFile};

/// Snapshot counters, shown in `/status`.
#[derive(Default, Debug)]
pub struct SnapshotStats {
    /// Compactions recorded.
    pub num_snapshots: AtomicU64,
    /// Snapshot streams opened for followers (the main file is read in place; the name is
    /// older than that).
    pub num_snapshot_copies: Arc<AtomicU64>,
    /// Snapshots installed from a leader.
    pub num_restores: AtomicU64,
    /// Snapshots rejected on install (bad checksum or content).
    pub num_restores_failed: AtomicU64,
    /// Snapshot installs that returned an error, for any reason (a purge waiting on an install
    /// gives up when this moves).
    pub installs_failed: AtomicU64,
    /// Starts that reused the database as it was (always, when a snapshot exists).
    pub num_restores_start_skipped: AtomicU64,
    /// User-triggered snapshots (`POST /snapshot`).
    pub user_snapshots: AtomicU64,
    /// User-triggered reaps (`POST /reap`).
    pub user_reaps: AtomicU64,
    /// Written while the main file and its recorded position (`current.json`) change together
    /// (checkpoints, installs, `/boot`, `/reap`); read while the main file is sent to a follower
    /// or copied for a backup, so that it does not change under them. openraft builds snapshots
    /// in a task of their own, so a build and an install can run at once: without this, a build
    /// could record the position of the database the install just replaced (the record going
    /// backwards), or a stream could catch a checkpoint half done. Shared across Raft rebuilds,
    /// like the rest of this struct.
    pub recording: Arc<tokio::sync::RwLock<()>>,
}

#[derive(Clone)]
pub struct SmAdapter {
    applier: Addr<Applier>,
    readers: Option<Readers>,
    db_path: PathBuf,
    snap_dir: PathBuf,
    stats: Arc<SnapshotStats>,
    cdc: Option<Arc<crate::cdc::Cdc>>,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(ErrorSubject::StateMachine, verb, any_err(e)).into()
}

/// How long a compaction keeps trying a checkpoint that readers keep from finishing, and how
/// often (each try waits for them at most `applier::CHECKPOINT_WAIT`).
const CHECKPOINT_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(120);
const CHECKPOINT_RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

fn snap_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(None, any_err(e)).into()
}

impl SmAdapter {
    /// `snap_dir` is created, and temp files a crash left there are removed.
    pub fn new(
        applier: Addr<Applier>,
        readers: Option<Readers>,
        db_path: PathBuf,
        snap_dir: PathBuf,
        stats: Arc<SnapshotStats>,
        cdc: Option<Arc<crate::cdc::Cdc>>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&snap_dir)?;
        for e in std::fs::read_dir(&snap_dir)? {
            let p = e?.path();
            if p.extension().and_then(|x| x.to_str()) == Some("tmp") {
                std::fs::remove_file(&p)?;
            }
        }
        remove_copies(&snap_dir);
        Ok(SmAdapter { applier, readers, db_path, snap_dir, stats, cdc })
    }

    async fn install(
        &mut self,
        meta: &SnapshotMeta<u64, NodeInfo>,
        mut snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        use tokio::io::AsyncWriteExt;
        let started = std::time::Instant::now();
        fail::fail_point!("snapshot::install", |_| Err(snap_err("failpoint snapshot::install")));
        // A received file is used where it is; anything else is first written to a file here.
        // (`known`: the CRC a received file's writer computed as the bytes came.)
        let (path, known) = match snapshot.finish_received().await.map_err(snap_err)? {
            Some(received) => received,
            None => {
                let p = self.snap_dir.join(format!("installing-{}.tmp", rand::random::<u64>()));
                snapshot.seek(std::io::SeekFrom::Start(0)).await.map_err(snap_err)?;
                let mut out = tokio::fs::File::create(&p).await.map_err(snap_err)?;
                tokio::io::copy(&mut *snapshot, &mut out).await.map_err(snap_err)?;
                out.flush().await.map_err(snap_err)?;
                (p, None)
            }
        };
        drop(snapshot);
        let stats = self.stats.clone();
        let _recording = stats.recording.write().await;
        let p = path.clone();
        let checked = tokio::task::spawn_blocking(move || verify_and_strip(&p, known)).await.map_err(snap_err)?;
        let cdc_section = match checked {
            Ok(section) => section,
            Err(e) => {
                self.stats.num_restores_failed.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::remove_file(&path);
                tracing::error!(snapshot = %meta.snapshot_id, error = %e, "snapshot rejected");
                return Err(snap_err(e));
            }
        };
        // The file is the leader's main file at exactly `meta`'s position.
        let replace = ReplaceDb { path, at: Some(meta.clone()), cdc_section };
        let replaced = self.applier.send(replace).await;
        drop(_recording);
        // Even after a failure: the file may have been swapped in.
        if let Some(r) = &self.readers {
            r.reopen().await;
        }
        replaced.map_err(snap_err)?.map_err(snap_err)?;
        self.stats.num_restores.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("raftlite_restore_bytes")
            .record(std::fs::metadata(&self.db_path).map(|m| m.len()).unwrap_or(0) as f64);
        metrics::histogram!("raftlite_restore_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(snapshot = %meta.snapshot_id, took = ?started.elapsed(), "snapshot installed");
        // Raft stopping just after an install (tests: the node must come back from this state).
        fail::fail_point!("snapshot::installed", |_| Err(snap_err("failpoint snapshot::installed")));
        Ok(())
    }

    fn stream(&self, key: &str) -> Box<SnapshotFile> {
        let opened = Some(self.stats.num_snapshot_copies.clone());
        let lock = Some(self.stats.recording.clone());
        let section = self.cdc.clone().map(|cdc| -> Section {
            Arc::new(move |through, out: &mut dyn std::io::Write| {
                let groups = cdc.queue.export(through, out)?;
                tracing::info!(through, groups, "CDC: a snapshot copy carries the undelivered changes it covers");
                Ok(())
            })
        });
        Box::new(SnapshotFile::streamed(
            self.db_path.clone(),
            self.snap_dir.clone(),
            key.to_string(),
            opened,
            lock,
            section,
        ))
    }
}

pub struct Builder {
    sm: SmAdapter,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let started = std::time::Instant::now();
        fail::fail_point!("snapshot::build", |_| Err(snap_err("failpoint snapshot::build")));
        let stats = self.sm.stats.clone();
        let _recording = stats.recording.write().await;
        // Readers of older pages can keep a checkpoint from finishing; it is tried again, the
        // applier free for writes in between, for up to CHECKPOINT_RETRY_FOR. Only then does the
        // snapshot fail (and openraft's core with it: Raft is rebuilt). `_recording` is held
        // across the tries on purpose: between them the main file is part-way (its marker says
        // so), and it may not be sent to a follower.
        let give_up = std::time::Instant::now() + CHECKPOINT_RETRY_FOR;
        let meta = loop {
            match self.sm.applier.send(Compact).await.map_err(snap_err)?.map_err(snap_err)? {
                Some(meta) => break meta,
                None if std::time::Instant::now() < give_up => {
                    metrics::counter!("raftlite_checkpoint_retries_total").increment(1);
                    tokio::time::sleep(CHECKPOINT_RETRY_EVERY).await;
                }
                None => {
                    return Err(snap_err(format!(
                        "readers kept the checkpoint from copying the whole WAL for {CHECKPOINT_RETRY_FOR:?}"
                    )))
                }
            }
        };
        drop(_recording);
        self.sm.stats.num_snapshots.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("raftlite_snapshot_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot recorded (log may be compacted up to it)");
        let data = self.sm.stream(&meta.snapshot_id);
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for SmAdapter {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.applier
            .send(AppliedState)
            .await
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
            .map_err(|e| sm_err(ErrorVerb::Read, e))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // A batch is idempotent (entries at or below the applied index are skipped), so one retry
        // after the applier restarted is safe; a second failure is fatal (fail-stop).
        let mut last_err = String::new();
        for _ in 0..2 {
            match self.applier.send(Apply(entries.clone())).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) => last_err = e.to_string(),
                Err(e) => last_err = e.to_string(),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(sm_err(ErrorVerb::Write, last_err))
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        Builder { sm: self.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let p = self.snap_dir.join(format!("incoming-{}.tmp", rand::random::<u64>()));
        let w = DirectWriter::create(p, true).await.map_err(snap_err)?;
        Ok(Box::new(SnapshotFile::receiving(w)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, NodeInfo>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let r = self.install(meta, snapshot).await;
        if r.is_err() {
            self.stats.installs_failed.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let dir = self.snap_dir.clone();
        let meta = tokio::task::spawn_blocking(move || read_current(&dir))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, any_err(e)))?
            .map_err(|e| StorageIOError::read_snapshot(None, any_err(e)))?;
        Ok(meta.map(|meta| {
            let data = self.stream(&meta.snapshot_id);
            Snapshot { meta, snapshot: data }
        }))
    }
}
