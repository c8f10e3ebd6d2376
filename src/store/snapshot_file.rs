//! Snapshot bytes as openraft moves them (docs/DESIGN.md §6).
//!
//! raftlite's database *is* its snapshot: its main file, without the WAL, is exactly the state at
//! the recorded position (`store::position`). Bytes are made when a follower actually needs them:
//! [`SnapshotFile::lazy`] starts as a recipe and, on its first read or seek, copies the main file
//! while holding the lock that checkpoints take (writes go on into the WAL meanwhile) and appends
//! a trailer (`RLSN`, CRC32 of the copy, its length). The receiver writes the stream to a temp file
//! ([`SnapshotFile::receiving`]) and [`verify_and_strip`] checks and removes the trailer before the
//! copy is installed (invariant 5: checked bytes).
//!
//! A snapshot may carry a section after the database: the sender's CDC changes that the snapshot
//! covers and the endpoint has not acknowledged (docs/DESIGN.md §9b), written by a [`Section`].
//! Such a stream is `[database][section][section length: u64 LE]` and its trailer says `RLSC`
//! instead of `RLSN`; the CRC32 and length in the trailer cover everything before it.

use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

const MAGIC: &[u8; 4] = b"RLSN";
/// The trailer's magic when a section follows the database.
const MAGIC_WITH_SECTION: &[u8; 4] = b"RLSC";
const TRAILER: u64 = 16;

/// Writes what a snapshot carries besides the database, given the last log index the snapshot
/// covers (`u64::MAX` when not known). It must write only what is still true of that
/// snapshot whenever the copy is read again (a copy is kept and reused for retries).
pub type Section = std::sync::Arc<dyn Fn(u64, &mut dyn Write) -> io::Result<()> + Send + Sync>;

type Making = Pin<Box<dyn Future<Output = io::Result<tokio::fs::File>> + Send>>;

enum State {
    Ready(tokio::fs::File),
    Making { fut: Making, seek: Option<SeekFrom> },
    Failed(io::ErrorKind, String),
}

/// The `SnapshotData` of raftlite's openraft type configuration.
pub struct SnapshotFile {
    state: State,
    /// Where the bytes live, for a file being received (so install can rename it into place).
    path: Option<PathBuf>,
}

impl SnapshotFile {
    /// A file being received at `path`.
    pub fn receiving(f: tokio::fs::File, path: PathBuf) -> Self {
        SnapshotFile { state: State::Ready(f), path: Some(path) }
    }

    /// The path of a received file, if this is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A copy of `db`'s main file for snapshot `key`, made in `dir` on first use and kept there, so
    /// that an interrupted or retried send of the same snapshot reuses it; `made` counts the
    /// copies made. With `checkpoints` (the lock every checkpoint holds), the copy is made under it
    /// and only while `key` is still the recorded snapshot, so the bytes are that snapshot's.
    /// `section`, if any, is written after the database (see the module comment).
    pub fn lazy(
        db: PathBuf,
        dir: PathBuf,
        key: String,
        made: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
        checkpoints: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
        section: Option<Section>,
    ) -> Self {
        let fut = async move {
            let held = match checkpoints {
                Some(l) => Some(l.lock_owned().await),
                None => None,
            };
            let f = tokio::task::spawn_blocking(move || -> io::Result<std::fs::File> {
                let path = copy_path(&dir, &key);
                if let Ok(f) = std::fs::File::open(&path) {
                    return Ok(f);
                }
                let mut through = u64::MAX;
                if held.is_some() {
                    let at_rest = recorded_at_rest(&dir).map_err(|e| io::Error::other(format!("{e}; ask again")))?;
                    through = at_rest.as_ref().and_then(|m| m.last_log_id).map_or(0, |l| l.index);
                    let current = at_rest.map(|m| m.snapshot_id);
                    if current.as_deref() != Some(key.as_str()) {
                        return Err(io::Error::other(format!(
                            "snapshot {key} is no longer the recorded one ({current:?}); ask again"
                        )));
                    }
                }
                let f = make_copy(&db, &dir, &path, section.as_ref().map(|s| (s, through)))?;
                drop(held);
                if let Some(m) = made {
                    m.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(f)
            })
            .await
            .map_err(io::Error::other)??;
            Ok(tokio::fs::File::from_std(f))
        };
        SnapshotFile { state: State::Making { fut: Box::pin(fut), seek: None }, path: None }
    }

    /// Drive the copy to completion; `Ready` afterwards unless it failed.
    fn poll_made(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let next = match &mut self.state {
                State::Ready(_) => return Poll::Ready(Ok(())),
                State::Failed(kind, msg) => return Poll::Ready(Err(io::Error::new(*kind, msg.clone()))),
                State::Making { fut, seek } => match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        tracing::error!(error = %e, "cannot make a snapshot copy");
                        State::Failed(e.kind(), e.to_string())
                    }
                    Poll::Ready(Ok(mut f)) => match seek.take().map(|pos| Pin::new(&mut f).start_seek(pos)) {
                        // A seek asked for before the copy existed is started now.
                        Some(Err(e)) => State::Failed(e.kind(), e.to_string()),
                        _ => State::Ready(f),
                    },
                },
            };
            self.state = next;
        }
    }

    /// The file, once made.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut tokio::fs::File>> {
        match self.poll_made(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => match &mut self.state {
                State::Ready(f) => Poll::Ready(Ok(f)),
                _ => Poll::Ready(Err(io::Error::other("snapshot copy in an unexpected state"))),
            },
        }
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_ready(cx) {
            Poll::Ready(Ok(f)) => Pin::new(f).poll_read(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(f)) => Pin::new(f).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(f)) => Pin::new(f).poll_flush(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(f)) => Pin::new(f).poll_shutdown(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        match &mut this.state {
            State::Ready(f) => Pin::new(f).start_seek(position),
            State::Making { seek, .. } => {
                *seek = Some(position);
                Ok(())
            }
            State::Failed(kind, msg) => Err(io::Error::new(*kind, msg.clone())),
        }
    }
    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(f)) => Pin::new(f).poll_complete(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Where the copy for snapshot `key` is kept.
pub fn copy_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("send-{key}.snap"))
}

/// Remove kept copies other than the one for `keep` (none if `None`).
pub fn remove_copies(dir: &Path, keep: Option<&str>) {
    let keep = keep.map(|k| copy_path(dir, k));
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("send-") && name.ends_with(".snap") && Some(&p) != keep.as_ref() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Copy `db`'s main file to `dest` (via a temp file in `dir`; no checkpoint may run meanwhile),
/// add the section written by `section` for the index it is given, then the trailer, and return
/// the copy opened for reading at offset 0.
pub fn make_copy(db: &Path, dir: &Path, dest: &Path, section: Option<(&Section, u64)>) -> io::Result<std::fs::File> {
    let started = std::time::Instant::now();
    let tmp = dir.join(format!("send-{}.tmp", rand::random::<u64>()));
    let r = (|| {
        let db_len = std::fs::copy(db, &tmp)?;
        let mut f = std::fs::OpenOptions::new().read(true).append(true).open(&tmp)?;
        let magic = match section {
            None => MAGIC,
            Some((write, through)) => {
                let mut out = io::BufWriter::new(&f);
                write(through, &mut out)?;
                out.flush()?;
                drop(out);
                let section_len = f.metadata()?.len() - db_len;
                f.write_all(&section_len.to_le_bytes())?;
                MAGIC_WITH_SECTION
            }
        };
        let (crc, len) = crc_of(&mut f, None)?;
        let mut trailer = Vec::with_capacity(TRAILER as usize);
        trailer.extend_from_slice(magic);
        trailer.extend_from_slice(&crc.to_le_bytes());
        trailer.extend_from_slice(&len.to_le_bytes());
        f.write_all(&trailer)?;
        std::fs::rename(&tmp, dest)?;
        metrics::histogram!("raftlite_snapshot_copy_bytes").record(len as f64);
        metrics::histogram!("raftlite_snapshot_copy_seconds").record(started.elapsed().as_secs_f64());
        f.seek(SeekFrom::Start(0))?;
        Ok(f)
    })();
    let _ = std::fs::remove_file(&tmp);
    r
}

/// Copy `db`'s main file to `dest` as a plain file when the recorded snapshot covers index
/// `through` (automatic backups): the main file then holds every change through it. The caller
/// holds the lock every checkpoint takes (`SnapshotStats::recording`), so the file does not move
/// under the copy.
pub fn copy_recorded(db: &Path, dir: &Path, dest: &Path, through: u64) -> io::Result<()> {
    let recorded = recorded_at_rest(dir)?.and_then(|m| m.last_log_id).map(|l| l.index);
    if recorded.is_none_or(|i| i < through) {
        return Err(io::Error::other(format!("the recorded snapshot ({recorded:?}) does not cover {through}")));
    }
    std::fs::copy(db, dest)?;
    Ok(())
}

/// The position the main file is recorded at; an error while a checkpoint is half done (the
/// main file then matches no recorded position). Copies of the main file check it under the
/// checkpoint lock.
fn recorded_at_rest(dir: &Path) -> io::Result<Option<crate::store::position::Meta>> {
    if crate::store::position::checkpoint_in_progress(dir) {
        return Err(io::Error::other("the last checkpoint did not finish"));
    }
    crate::store::position::read_current(dir)
}

/// Copy the database open on `src` into `dst` with SQLite's backup API.
pub fn backup_from(src: &rusqlite::Connection, dst: &mut rusqlite::Connection) -> io::Result<()> {
    let e = |e: rusqlite::Error| io::Error::other(e.to_string());
    let b = rusqlite::backup::Backup::new(src, dst).map_err(e)?;
    loop {
        match b.step(-1).map_err(e)? {
            rusqlite::backup::StepResult::Done => return Ok(()),
            // The source was momentarily locked: try again shortly.
            _ => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

/// CRC32 and length of the first `limit` bytes of `f` (all of it when `None`).
fn crc_of(f: &mut std::fs::File, limit: Option<u64>) -> io::Result<(u32, u64)> {
    f.seek(SeekFrom::Start(0))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = limit.unwrap_or(u64::MAX);
    let mut total = 0u64;
    while left > 0 {
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
        left -= n as u64;
    }
    Ok((h.finalize(), total))
}

/// Check a received snapshot's trailer and cut it off, leaving a plain SQLite file. A section that
/// followed the database is moved to a file of its own beside it, whose path is returned.
pub fn verify_and_strip(path: &Path) -> io::Result<Option<PathBuf>> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let size = f.metadata()?.len();
    if size < TRAILER {
        return Err(bad(format!("snapshot of {size} bytes has no trailer")));
    }
    f.seek(SeekFrom::Start(size - TRAILER))?;
    let mut t = [0u8; TRAILER as usize];
    f.read_exact(&mut t)?;
    let with_section = &t[0..4] == MAGIC_WITH_SECTION;
    if &t[0..4] != MAGIC && !with_section {
        return Err(bad("snapshot trailer missing (not a raftlite snapshot)".into()));
    }
    let want_crc = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&t[8..16]);
    let len = u64::from_le_bytes(len_bytes);
    if len != size - TRAILER {
        return Err(bad(format!("snapshot length {} does not match its trailer ({len})", size - TRAILER)));
    }
    let (crc, n) = crc_of(&mut f, Some(len))?;
    if crc != want_crc || n != len {
        return Err(bad(format!("snapshot fails its checksum (crc {crc:08x}, expected {want_crc:08x})")));
    }
    let mut db_len = len;
    let mut section = None;
    if with_section {
        let mut n = [0u8; 8];
        f.seek(SeekFrom::Start(len.checked_sub(8).ok_or_else(|| bad("snapshot section length missing".into()))?))?;
        f.read_exact(&mut n)?;
        let section_len = u64::from_le_bytes(n);
        db_len = (len - 8)
            .checked_sub(section_len)
            .ok_or_else(|| bad(format!("snapshot section of {section_len} bytes is longer than the snapshot")))?;
        let out = section_path(path);
        f.seek(SeekFrom::Start(db_len))?;
        let mut w = std::fs::File::create(&out)?;
        io::copy(&mut (&mut f).take(section_len), &mut w)?;
        section = Some(out);
    }
    f.set_len(db_len)?;
    f.sync_all()?;
    Ok(section)
}

/// Where [`verify_and_strip`] puts the section of the received snapshot at `path`.
/// (A `.tmp` file, so a crash's leftover is removed at the next start.)
fn section_path(path: &Path) -> PathBuf {
    path.with_extension("section.tmp")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};

    /// An automatic backup copies the main file only when the recorded snapshot holds every
    /// change it must, and never while a checkpoint is half done.
    #[test]
    fn copy_recorded_copies_only_a_snapshot_that_covers_the_index() {
        let d = tempfile::tempdir().unwrap();
        let (db, dir, out) = (d.path().join("db.sqlite"), d.path().join("snapshots"), d.path().join("out.sqlite"));
        std::fs::create_dir_all(&dir).unwrap();
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(42);").unwrap();
        let e = copy_recorded(&db, &dir, &out, 1).unwrap_err().to_string();
        assert!(e.contains("(None) does not cover 1"), "{e}");
        let applied = Some(openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 5));
        let meta = crate::store::position::Meta {
            last_log_id: applied,
            last_membership: Default::default(),
            snapshot_id: crate::store::position::snapshot_id(applied),
        };
        crate::store::position::checkpoint(&c, &dir, &meta).unwrap();
        let e = copy_recorded(&db, &dir, &out, 6).unwrap_err().to_string();
        assert!(e.contains("does not cover 6"), "{e}");
        copy_recorded(&db, &dir, &out, 5).unwrap();
        // The row was in the WAL; the checkpoint put it in the main file, and so in the copy.
        let r = rusqlite::Connection::open(&out).unwrap();
        assert_eq!(r.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 42);
        std::fs::write(dir.join("checkpointing.json"), "{}").unwrap();
        assert!(crate::store::position::checkpoint_in_progress(&dir));
        let e = copy_recorded(&db, &dir, &out, 5).unwrap_err().to_string();
        assert!(e.contains("did not finish"), "{e}");
    }

    #[tokio::test]
    async fn lazy_copy_round_trips_and_corruption_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(42);").unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        let mut s = SnapshotFile::lazy(db.clone(), dir.path().to_path_buf(), "k".into(), None, None, None);
        s.seek(SeekFrom::Start(0)).await.unwrap();
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes).await.unwrap();
        assert!(bytes.starts_with(b"SQLite format 3\0"));
        // No copies left behind.
        assert_eq!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().map(|x| x == "tmp").unwrap_or(false))
                .count(),
            0
        );

        let good = dir.path().join("good.db");
        std::fs::write(&good, &bytes).unwrap();
        assert_eq!(verify_and_strip(&good).unwrap(), None);
        let r = rusqlite::Connection::open(&good).unwrap();
        assert_eq!(r.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 42);

        let mut corrupt = bytes.clone();
        corrupt[100] ^= 0xff;
        let badp = dir.path().join("bad.db");
        std::fs::write(&badp, &corrupt).unwrap();
        assert!(verify_and_strip(&badp).unwrap_err().to_string().contains("checksum"));
        std::fs::write(&badp, &bytes[..bytes.len() - 3]).unwrap();
        assert!(verify_and_strip(&badp).is_err());
    }

    /// A section rides after the database, covered by the checksum, and comes out as a file of
    /// its own; the writer learns the index the recorded snapshot covers.
    #[tokio::test]
    async fn a_section_travels_with_the_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let (db, dir) = (d.path().join("db.sqlite"), d.path().join("snapshots"));
        std::fs::create_dir_all(&dir).unwrap();
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(7);").unwrap();
        let applied = Some(openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 9));
        let meta = crate::store::position::Meta {
            last_log_id: applied,
            last_membership: Default::default(),
            snapshot_id: crate::store::position::snapshot_id(applied),
        };
        crate::store::position::checkpoint(&c, &dir, &meta).unwrap();
        let section: Section = std::sync::Arc::new(|through, w| write!(w, "changes through {through}"));
        let lock = Some(std::sync::Arc::new(tokio::sync::Mutex::new(())));
        let mut s = SnapshotFile::lazy(db.clone(), dir.clone(), meta.snapshot_id.clone(), None, lock, Some(section));
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes).await.unwrap();
        assert_eq!(&bytes[bytes.len() - 16..bytes.len() - 12], b"RLSC");

        let got = d.path().join("incoming-1.tmp");
        std::fs::write(&got, &bytes).unwrap();
        let side = verify_and_strip(&got).unwrap().expect("a section");
        assert_eq!(side, d.path().join("incoming-1.section.tmp"));
        assert_eq!(std::fs::read_to_string(&side).unwrap(), "changes through 9");
        let r = rusqlite::Connection::open(&got).unwrap();
        assert_eq!(r.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 7);

        // A flipped byte in the section fails the checksum like one in the database.
        let mut corrupt = bytes.clone();
        corrupt[bytes.len() - 30] ^= 0xff;
        std::fs::write(&got, &corrupt).unwrap();
        assert!(verify_and_strip(&got).unwrap_err().to_string().contains("checksum"));
    }
}
