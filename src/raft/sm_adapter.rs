//! openraft's `RaftStateMachine` for raftlite: applies entries through the `Applier` actor, and
//! treats the SQLite database as the snapshot (design.md §5). A snapshot is a consistent copy made
//! with SQLite's online backup API from a read-only connection (the writer is never blocked); its
//! metadata is read back from the copy's own meta table, and its id carries the copy's CRC32 so
//! the receiver can verify what it was streamed (invariant 5).

use std::io::Read;
use std::path::{Path, PathBuf};

use actix::Addr;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use tokio::io::AsyncSeekExt;

use super::{any_err, Entry, LogId, NodeInfo, StorageError, StoredMembership, TypeConfig};
use crate::actors::applier::{AppliedState, Applier, Apply, MakeDurable, ReplaceDb, KEY_APPLIED, KEY_MEMBERSHIP};
use crate::actors::readers::{Readers, Reopen};
use crate::store::codec;
use crate::store::command::Response;
use crate::store::db::META_TABLE;

const CURRENT: &str = "current.json";

#[derive(Clone)]
pub struct SmAdapter {
    applier: Addr<Applier>,
    readers: Option<Addr<Readers>>,
    db_path: PathBuf,
    snap_dir: PathBuf,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(ErrorSubject::StateMachine, verb, any_err(e)).into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(None, any_err(e)).into()
}

impl SmAdapter {
    /// `snap_dir` is created, and temp files a crash left there are removed.
    pub fn new(
        applier: Addr<Applier>,
        readers: Option<Addr<Readers>>,
        db_path: PathBuf,
        snap_dir: PathBuf,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&snap_dir)?;
        for e in std::fs::read_dir(&snap_dir)? {
            let p = e?.path();
            if p.extension().and_then(|x| x.to_str()) == Some("tmp") {
                std::fs::remove_file(&p)?;
            }
        }
        Ok(SmAdapter { applier, readers, db_path, snap_dir })
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn file_crc(path: &Path) -> std::io::Result<u32> {
    let mut f = std::fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// Read the applied id and membership recorded inside a database file.
fn state_in_file(path: &Path) -> Result<(Option<LogId>, StoredMembership), String> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    let get = |k: &str| -> Result<Option<Vec<u8>>, String> {
        let mut st = c.prepare(&format!("SELECT v FROM {META_TABLE} WHERE k = ?1")).map_err(|e| e.to_string())?;
        let mut rows = st.query([k]).map_err(|e| e.to_string())?;
        match rows.next().map_err(|e| e.to_string())? {
            Some(r) => Ok(Some(r.get(0).map_err(|e| e.to_string())?)),
            None => Ok(None),
        }
    };
    let applied = match get(KEY_APPLIED)? {
        Some(b) => codec::decode::<Option<LogId>>(&b).map_err(|e| e.to_string())?,
        None => None,
    };
    let membership = match get(KEY_MEMBERSHIP)? {
        Some(b) => codec::decode(&b).map_err(|e| e.to_string())?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// Write `current.json` atomically.
fn write_current(dir: &Path, meta: &SnapshotMeta<u64, NodeInfo>) -> std::io::Result<()> {
    let tmp = dir.join("current.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(meta)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(CURRENT))?;
    fsync_dir(dir)
}

/// Remove snapshot copies other than `keep`.
fn remove_others(dir: &Path, keep: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p != keep && p.extension().and_then(|x| x.to_str()) == Some("db") {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn snapshot_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.db"))
}

/// Build a snapshot copy of `db` in `dir` (blocking; run on a blocking thread).
fn build_copy(db: &Path, dir: &Path) -> Result<SnapshotMeta<u64, NodeInfo>, String> {
    let tmp = dir.join(format!("building-{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    {
        let src = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| e.to_string())?;
        let mut dst = rusqlite::Connection::open(&tmp).map_err(|e| e.to_string())?;
        // One step copies every page inside one read transaction: a consistent image.
        let b = rusqlite::backup::Backup::new(&src, &mut dst).map_err(|e| e.to_string())?;
        loop {
            match b.step(-1).map_err(|e| e.to_string())? {
                rusqlite::backup::StepResult::Done => break,
                // The source was busy or locked: try again shortly.
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    }
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| e.to_string())?;
    let (applied, membership) = state_in_file(&tmp)?;
    let crc = file_crc(&tmp).map_err(|e| e.to_string())?;
    let id = match applied {
        Some(l) => format!("{}-{}-{crc:08x}", l.leader_id.term, l.index),
        None => format!("0-0-{crc:08x}"),
    };
    let path = snapshot_file(dir, &id);
    std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
    let meta = SnapshotMeta { last_log_id: applied, last_membership: membership, snapshot_id: id };
    write_current(dir, &meta).map_err(|e| e.to_string())?;
    remove_others(dir, &path);
    Ok(meta)
}

pub struct Builder {
    sm: SmAdapter,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Invariant 4: the database must be durable before the log behind this snapshot is purged.
        self.sm.applier.send(MakeDurable).await.map_err(snap_err)?.map_err(snap_err)?;
        let (db, dir) = (self.sm.db_path.clone(), self.sm.snap_dir.clone());
        let meta =
            tokio::task::spawn_blocking(move || build_copy(&db, &dir)).await.map_err(snap_err)?.map_err(snap_err)?;
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot built");
        let f = tokio::fs::File::open(snapshot_file(&self.sm.snap_dir, &meta.snapshot_id)).await.map_err(snap_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(f) })
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let p = self.snap_dir.join(format!("incoming-{}.tmp", rand::random::<u64>()));
        let f =
            tokio::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&p).await.map_err(snap_err)?;
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, NodeInfo>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        // Persist the streamed bytes as our own snapshot copy, then verify before using them.
        let tmp = self.snap_dir.join(format!("installing-{}.tmp", rand::random::<u64>()));
        {
            snapshot.seek(std::io::SeekFrom::Start(0)).await.map_err(snap_err)?;
            let mut out = tokio::fs::File::create(&tmp).await.map_err(snap_err)?;
            tokio::io::copy(&mut *snapshot, &mut out).await.map_err(snap_err)?;
            out.sync_all().await.map_err(snap_err)?;
        }
        let (dir, id, expected) = (self.snap_dir.clone(), meta.snapshot_id.clone(), meta.clone());
        let path = tokio::task::spawn_blocking(move || -> Result<PathBuf, String> {
            let want = id.rsplit('-').next().and_then(|c| u32::from_str_radix(c, 16).ok());
            let got = file_crc(&tmp).map_err(|e| e.to_string())?;
            if want != Some(got) {
                let _ = std::fs::remove_file(&tmp);
                return Err(format!("snapshot {id} fails its checksum (got {got:08x})"));
            }
            let (applied, _) = state_in_file(&tmp)?;
            if applied != expected.last_log_id {
                let _ = std::fs::remove_file(&tmp);
                return Err(format!(
                    "snapshot {id} holds applied {applied:?}, metadata says {:?}",
                    expected.last_log_id
                ));
            }
            let path = snapshot_file(&dir, &id);
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
            write_current(&dir, &expected).map_err(|e| e.to_string())?;
            remove_others(&dir, &path);
            Ok(path)
        })
        .await
        .map_err(snap_err)?
        .map_err(snap_err)?;
        self.applier.send(ReplaceDb(path)).await.map_err(snap_err)?.map_err(snap_err)?;
        if let Some(r) = &self.readers {
            let _ = r.send(Reopen).await;
        }
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let cur = self.snap_dir.join(CURRENT);
        let bytes = match tokio::fs::read(&cur).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, any_err(e)).into()),
        };
        let meta: SnapshotMeta<u64, NodeInfo> =
            serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_snapshot(None, any_err(e)))?;
        let f = tokio::fs::File::open(snapshot_file(&self.snap_dir, &meta.snapshot_id))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, any_err(e)))?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(f) }))
    }
}
