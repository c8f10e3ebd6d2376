//! Snapshot bytes as openraft moves them (docs/DESIGN.md §6).
//!
//! raftlite's database *is* its snapshot: its main file, without the WAL, is exactly the state at
//! the recorded position (`store::position`). Nothing is copied to send it:
//! [`SnapshotFile::streamed`] starts as a recipe and, on its first read or seek, takes the lock
//! that every change to the main file takes (checkpoints, installs, `/boot`) for reading, checks
//! that its snapshot is still the recorded one, and then reads the main file in place, holding
//! the lock until it is dropped (compactions wait meanwhile; writes go on into the WAL). After
//! the file comes a trailer (`RLSN`, CRC32 of what came before, its length), the CRC computed as
//! the bytes are read. The receiver writes the stream to a temp file
//! ([`SnapshotFile::receiving`], through a [`DirectWriter`], which computes the CRC on the way in)
//! and [`verify_and_strip`] checks and removes the trailer before the file is installed
//! (invariant 5: checked bytes).
//!
//! A snapshot may carry a section after the database: the sender's CDC changes that the snapshot
//! covers and the endpoint has not acknowledged (docs/DESIGN.md §9b), written by a [`Section`].
//! Such a stream is `[database][section][section length: u64 LE]` and its trailer says `RLSC`
//! instead of `RLSN`; the CRC32 and length in the trailer cover everything before it.

use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::store::direct_writer::{Checksum, DirectWriter};

const MAGIC: &[u8; 4] = b"RLSN";
/// The trailer's magic when a section follows the database.
const MAGIC_WITH_SECTION: &[u8; 4] = b"RLSC";
/// The trailer's length (magic, CRC32, length); a [`DirectWriter`]'s checksum leaves it out.
pub const TRAILER: u64 = 16;

/// Writes what a snapshot carries besides the database, given the last log index the snapshot
/// covers (`u64::MAX` when not known). Written once when a stream opens.
pub type Section = Arc<dyn Fn(u64, &mut dyn Write) -> io::Result<()> + Send + Sync>;

type Opening = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

enum State {
    /// A file being received.
    Receiving(Box<DirectWriter>),
    Opening {
        fut: Opening,
        seek: Option<SeekFrom>,
    },
    Streaming(Box<Stream>),
    Failed(io::ErrorKind, String),
}

/// The `SnapshotData` of raftlite's openraft type configuration.
pub struct SnapshotFile {
    state: State,
}

/// One part of a stream: a file read from its start, up to `len` bytes.
struct Part {
    file: tokio::fs::File,
    len: u64,
    /// Where the file's cursor is (`None` while a seek is in flight).
    at: Option<u64>,
}

/// The bytes of a snapshot being sent: the parts one after the other, then the trailer.
struct Stream {
    parts: Vec<Part>,
    /// The parts' total length: where the trailer starts.
    content: u64,
    pos: u64,
    magic: &'static [u8; 4],
    crc: crc32fast::Hasher,
    /// The CRC covers bytes `[0, crc_upto)`; openraft reads in order, going back only to
    /// resend a chunk, which the CRC has already seen.
    crc_upto: u64,
    trailer: Option<[u8; TRAILER as usize]>,
    /// The main file does not change while this is held.
    _reading: Option<OwnedRwLockReadGuard<()>>,
}

impl SnapshotFile {
    /// A file being received.
    pub fn receiving(w: DirectWriter) -> Self {
        SnapshotFile { state: State::Receiving(Box::new(w)) }
    }

    /// For a received file: write out what is buffered, keep the file past this (it is about to
    /// be installed; one not kept is removed with its writer), and give its path and the CRC its
    /// writer computed as the bytes came (`None` when they did not come in order). `None` for a
    /// stream being sent.
    pub async fn finish_received(&mut self) -> io::Result<Option<(PathBuf, Option<Checksum>)>> {
        use tokio::io::AsyncWriteExt;
        let State::Receiving(w) = &mut self.state else { return Ok(None) };
        w.flush().await?;
        w.keep();
        Ok(Some((w.path().to_path_buf(), w.checksum())))
    }

    /// `db`'s main file as snapshot `key`, read in place on first use; `opened` counts the
    /// streams opened. With `lock` (the lock every change to the main file takes for writing),
    /// the stream holds it for reading until dropped, and opens only while `key` is still the
    /// recorded snapshot (in `dir`), so the bytes are that snapshot's. `section`, if any, is
    /// written (to an unlinked temp file in `dir`) when the stream opens and sent after the
    /// database (see the module comment).
    pub fn streamed(
        db: PathBuf,
        dir: PathBuf,
        key: String,
        opened: Option<Arc<std::sync::atomic::AtomicU64>>,
        lock: Option<Arc<RwLock<()>>>,
        section: Option<Section>,
    ) -> Self {
        let fut = async move {
            let reading = match lock {
                Some(l) => Some(l.read_owned().await),
                None => None,
            };
            let checked = reading.is_some();
            let (parts, magic) = tokio::task::spawn_blocking(move || open_parts(&db, &dir, &key, checked, section))
                .await
                .map_err(io::Error::other)??;
            if let Some(m) = opened {
                m.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let content = parts.iter().map(|p| p.len).sum();
            Ok(Stream {
                parts,
                content,
                pos: 0,
                magic,
                crc: crc32fast::Hasher::new(),
                crc_upto: 0,
                trailer: None,
                _reading: reading,
            })
        };
        SnapshotFile { state: State::Opening { fut: Box::pin(fut), seek: None } }
    }

    /// Drive the opening to completion; `Ready` or `Streaming` afterwards unless it failed.
    fn poll_opened(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let next = match &mut self.state {
                State::Receiving(_) | State::Streaming(_) => return Poll::Ready(Ok(())),
                State::Failed(kind, msg) => return Poll::Ready(Err(io::Error::new(*kind, msg.clone()))),
                State::Opening { fut, seek } => match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        tracing::error!(error = %e, "cannot open a snapshot to send");
                        State::Failed(e.kind(), e.to_string())
                    }
                    Poll::Ready(Ok(mut stream)) => match seek.take().map(|pos| stream.seek(pos)) {
                        // A seek asked for before the stream was open applies now.
                        Some(Err(e)) => State::Failed(e.kind(), e.to_string()),
                        _ => State::Streaming(Box::new(stream)),
                    },
                },
            };
            self.state = next;
        }
    }
}

/// Under the read lock: check that `key` is still the recorded snapshot (when `checked`), open
/// the main file and write the section. The parts, and the trailer's magic.
fn open_parts(
    db: &Path,
    dir: &Path,
    key: &str,
    checked: bool,
    section: Option<Section>,
) -> io::Result<(Vec<Part>, &'static [u8; 4])> {
    let mut through = u64::MAX;
    if checked {
        let at_rest = recorded_at_rest(dir).map_err(|e| io::Error::other(format!("{e}; ask again")))?;
        through = at_rest.as_ref().and_then(|m| m.last_log_id).map_or(0, |l| l.index);
        let current = at_rest.map(|m| m.snapshot_id);
        if current.as_deref() != Some(key) {
            return Err(io::Error::other(format!(
                "snapshot {key} is no longer the recorded one ({current:?}); ask again"
            )));
        }
    }
    let f = std::fs::File::open(db)?;
    let len = f.metadata()?.len();
    let mut parts = vec![Part::new(f, len)];
    let Some(write) = section else { return Ok((parts, MAGIC)) };
    // Unlinked at once: it lives as long as the stream, whatever happens to the process.
    let path = dir.join(format!("send-{}.section.tmp", rand::random::<u64>()));
    let mut f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    let _ = std::fs::remove_file(&path);
    let mut out = io::BufWriter::new(&mut f);
    write(through, &mut out)?;
    out.flush()?;
    drop(out);
    let section_len = f.stream_position()?;
    f.write_all(&section_len.to_le_bytes())?;
    f.seek(SeekFrom::Start(0))?;
    parts.push(Part::new(f, section_len + 8));
    Ok((parts, MAGIC_WITH_SECTION))
}

impl Part {
    fn new(file: std::fs::File, len: u64) -> Part {
        Part { file: tokio::fs::File::from_std(file), len, at: Some(0) }
    }
}

impl Stream {
    fn total(&self) -> u64 {
        self.content + TRAILER
    }

    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.total().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 || self.pos >= self.total() {
            return Poll::Ready(Ok(()));
        }
        if self.pos >= self.content {
            if self.crc_upto < self.content {
                return Poll::Ready(Err(io::Error::other("snapshot stream read out of order: no checksum")));
            }
            let (crc, content, magic) = (&self.crc, self.content, self.magic);
            let trailer = self.trailer.get_or_insert_with(|| {
                let mut t = [0u8; TRAILER as usize];
                t[0..4].copy_from_slice(magic);
                t[4..8].copy_from_slice(&crc.clone().finalize().to_le_bytes());
                t[8..16].copy_from_slice(&content.to_le_bytes());
                t
            });
            let from = (self.pos - self.content) as usize;
            let n = buf.remaining().min(trailer.len() - from);
            buf.put_slice(&trailer[from..from + n]);
            self.pos += n as u64;
            return Poll::Ready(Ok(()));
        }
        // The part holding `pos`, and the offset in it.
        let mut start = 0;
        let mut index = 0;
        while start + self.parts[index].len <= self.pos {
            start += self.parts[index].len;
            index += 1;
        }
        let offset = self.pos - start;
        let part = &mut self.parts[index];
        if part.at != Some(offset) {
            if part.at.is_some() {
                part.at = None;
                Pin::new(&mut part.file).start_seek(SeekFrom::Start(offset))?;
            }
            match Pin::new(&mut part.file).poll_complete(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(at)) => part.at = Some(at),
            }
            if part.at != Some(offset) {
                // A seek decided before this one was still in flight: seek again.
                return self.poll_read(cx, buf);
            }
        }
        let want = buf.remaining().min((part.len - offset).min(usize::MAX as u64) as usize);
        let mut sub = buf.take(want);
        match Pin::new(&mut part.file).poll_read(cx, &mut sub) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let n = sub.filled().len();
        if n == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the database file ended early while being sent",
            )));
        }
        // Only new bytes go into the CRC (a resent chunk was counted the first time).
        if self.pos <= self.crc_upto && self.crc_upto < self.pos + n as u64 {
            let skip = (self.crc_upto - self.pos) as usize;
            self.crc.update(&sub.filled()[skip..]);
            self.crc_upto = self.pos + n as u64;
        }
        // SAFETY: `sub` is the unfilled part of `buf`, and the file filled its first `n` bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        part.at = Some(offset + n as u64);
        self.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

/// A snapshot's bytes once they can be read or written.
enum Opened<'a> {
    Received(&'a mut DirectWriter),
    Sending(&'a mut Stream),
}

impl SnapshotFile {
    fn poll_state(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Opened<'_>>> {
        ready!(self.poll_opened(cx))?;
        Poll::Ready(match &mut self.state {
            State::Receiving(w) => Ok(Opened::Received(w)),
            State::Streaming(s) => Ok(Opened::Sending(s)),
            _ => Err(io::Error::other("snapshot in an unexpected state")),
        })
    }

    /// The received file, for writing (`None`: a stream being sent, which is read-only).
    fn poll_received(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<&mut DirectWriter>>> {
        Poll::Ready(match ready!(self.poll_state(cx))? {
            Opened::Received(f) => Ok(Some(f)),
            Opened::Sending(_) => Ok(None),
        })
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match ready!(self.get_mut().poll_state(cx))? {
            Opened::Received(_) => Poll::Ready(Err(io::Error::other("a snapshot being received cannot be read"))),
            Opened::Sending(s) => s.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match ready!(self.get_mut().poll_received(cx))? {
            Some(f) => Pin::new(f).poll_write(cx, buf),
            None => Poll::Ready(Err(io::Error::other("a snapshot being sent cannot be written"))),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(self.get_mut().poll_received(cx))? {
            Some(f) => Pin::new(f).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(self.get_mut().poll_received(cx))? {
            Some(f) => Pin::new(f).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        match &mut this.state {
            State::Receiving(w) => Pin::new(&mut **w).start_seek(position),
            State::Streaming(s) => s.seek(position).map(|_| ()),
            State::Opening { seek, .. } => {
                *seek = Some(position);
                Ok(())
            }
            State::Failed(kind, msg) => Err(io::Error::new(*kind, msg.clone())),
        }
    }
    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match ready!(self.get_mut().poll_state(cx))? {
            Opened::Received(w) => Pin::new(w).poll_complete(cx),
            Opened::Sending(s) => Poll::Ready(Ok(s.pos)),
        }
    }
}

/// Remove the copies of the main file that earlier versions kept in `dir` to send
/// (`send-*.snap`), and sections a crash left behind.
pub fn remove_copies(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("send-") && (name.ends_with(".snap") || name.ends_with(".tmp")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
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
/// `known`: the CRC computed as the bytes were written, if they came in order; without it, or
/// when it covers another length, the file is read back to compute it.
pub fn verify_and_strip(path: &Path, known: Option<Checksum>) -> io::Result<Option<PathBuf>> {
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
    let (crc, n) = match known {
        Some(k) if k.len == len => (k.crc, len),
        _ => crc_of(&mut f, Some(len))?,
    };
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
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    /// Checkpoint `c`'s database into its main file and record it at log index `index`.
    fn record_at(c: &rusqlite::Connection, dir: &Path, index: u64) -> crate::store::position::Meta {
        let applied = Some(openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index));
        let meta = crate::store::position::Meta {
            last_log_id: applied,
            last_membership: Default::default(),
            snapshot_id: crate::store::position::snapshot_id(applied),
        };
        crate::store::position::checkpoint(c, dir, &meta).unwrap();
        meta
    }

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
        record_at(&c, &dir, 5);
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
    async fn a_stream_round_trips_and_corruption_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(42);").unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        let mut s = SnapshotFile::streamed(db.clone(), dir.path().to_path_buf(), "k".into(), None, None, None);
        s.seek(SeekFrom::Start(0)).await.unwrap();
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes).await.unwrap();
        assert!(bytes.starts_with(b"SQLite format 3\0"));
        // Nothing written beside the database.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3, "db, -wal, -shm");

        let good = dir.path().join("good.db");
        std::fs::write(&good, &bytes).unwrap();
        assert_eq!(verify_and_strip(&good, None).unwrap(), None);
        let r = rusqlite::Connection::open(&good).unwrap();
        assert_eq!(r.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 42);

        let mut corrupt = bytes.clone();
        corrupt[100] ^= 0xff;
        let badp = dir.path().join("bad.db");
        std::fs::write(&badp, &corrupt).unwrap();
        assert!(verify_and_strip(&badp, None).unwrap_err().to_string().contains("checksum"));
        std::fs::write(&badp, &bytes[..bytes.len() - 3]).unwrap();
        assert!(verify_and_strip(&badp, None).is_err());
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
        let meta = record_at(&c, &dir, 9);
        let section: Section = Arc::new(|through, w| write!(w, "changes through {through}"));
        let lock = Some(Arc::new(RwLock::new(())));
        let mut s =
            SnapshotFile::streamed(db.clone(), dir.clone(), meta.snapshot_id.clone(), None, lock, Some(section));
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes).await.unwrap();
        assert_eq!(&bytes[bytes.len() - 16..bytes.len() - 12], b"RLSC");

        // Received as a follower does, in chunks, with the CRC computed on the way in.
        let got = d.path().join("incoming-1.tmp");
        let mut w = DirectWriter::create(got.clone(), true).await.unwrap();
        for chunk in bytes.chunks(1000) {
            w.write_all(chunk).await.unwrap();
        }
        w.flush().await.unwrap();
        w.keep();
        let known = w.checksum().expect("in order");
        // A checksum that does not match the trailer is refused without reading the file.
        let wrong = Checksum { crc: known.crc ^ 1, ..known };
        assert!(verify_and_strip(&got, Some(wrong)).unwrap_err().to_string().contains("checksum"));
        let side = verify_and_strip(&got, Some(known)).unwrap().expect("a section");
        assert_eq!(side, d.path().join("incoming-1.section.tmp"));
        assert_eq!(std::fs::read_to_string(&side).unwrap(), "changes through 9");
        let r = rusqlite::Connection::open(&got).unwrap();
        assert_eq!(r.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 7);

        // A flipped byte in the section fails the checksum like one in the database.
        let mut corrupt = bytes.clone();
        corrupt[bytes.len() - 30] ^= 0xff;
        std::fs::write(&got, &corrupt).unwrap();
        assert!(verify_and_strip(&got, None).unwrap_err().to_string().contains("checksum"));
    }

    /// openraft finds the size first, reads in chunks and may go back to resend one: the bytes
    /// and the trailer come out the same. The main file cannot change while a stream is open,
    /// and a stream does not open for a snapshot that is no longer the recorded one.
    #[tokio::test]
    async fn chunked_reads_with_a_resend_and_the_lock_held_meanwhile() {
        let d = tempfile::tempdir().unwrap();
        let (db, dir) = (d.path().join("db.sqlite"), d.path().join("snapshots"));
        std::fs::create_dir_all(&dir).unwrap();
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x);").unwrap();
        for i in 0..2000 {
            c.execute("INSERT INTO t VALUES(?1)", [format!("{i:0200}")]).unwrap();
        }
        let meta = record_at(&c, &dir, 3);
        let whole = {
            let mut s = SnapshotFile::streamed(db.clone(), dir.clone(), meta.snapshot_id.clone(), None, None, None);
            let mut b = Vec::new();
            s.read_to_end(&mut b).await.unwrap();
            b
        };
        let lock = Arc::new(RwLock::new(()));
        let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut s = SnapshotFile::streamed(
            db.clone(),
            dir.clone(),
            meta.snapshot_id.clone(),
            Some(opened.clone()),
            Some(lock.clone()),
            None,
        );
        let end = s.seek(SeekFrom::End(0)).await.unwrap();
        assert_eq!(end, whole.len() as u64);
        assert!(lock.try_write().is_err(), "a checkpoint must wait for the stream");
        let chunk = 100_000u64;
        let mut got = Vec::new();
        let mut offset = 0;
        let mut resent = false;
        while offset < end {
            s.seek(SeekFrom::Start(offset)).await.unwrap();
            let mut buf = Vec::with_capacity(chunk as usize);
            while buf.capacity() > buf.len() {
                if s.read_buf(&mut buf).await.unwrap() == 0 {
                    break;
                }
            }
            if offset == 2 * chunk && !resent {
                // The chunk is lost on the way: it is read again.
                resent = true;
                continue;
            }
            offset += buf.len() as u64;
            got.extend_from_slice(&buf);
        }
        assert!(resent);
        assert_eq!(got, whole);
        assert_eq!(opened.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop(s);
        assert!(lock.try_write().is_ok());

        // Another snapshot is recorded: a stream for the old one does not open.
        record_at(&c, &dir, 9);
        let mut s = SnapshotFile::streamed(db, dir, meta.snapshot_id.clone(), None, Some(lock), None);
        let e = s.read_to_end(&mut Vec::new()).await.unwrap_err().to_string();
        assert!(e.contains("no longer the recorded one"), "{e}");
    }
}
