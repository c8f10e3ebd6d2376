//! Writing a large file that arrives over the network — a snapshot from the leader — without
//! going through the page cache (docs/DESIGN.md §6).
//!
//! Such a file is written once, fsynced whole before it is used, and not read back while it is
//! written, so caching it buys nothing; and on the VMs measured here the kernel's copy of written
//! bytes into page-cache pages not used before costs seconds per gigabyte (docs/PERFORMANCE.md,
//! "Snapshot to a new node"). A [`DirectWriter`] gathers what it is given into aligned buffers of
//! [`SEGMENT`] bytes and hands each full one to a task of its own on the blocking pool, which
//! writes them in order with `O_DIRECT`, so the disk works while the next bytes arrive; a caller
//! waits only when all [`BUFFERS`] are queued. What cannot be written directly — a part that does
//! not start on an [`ALIGN`] boundary, the last bytes short of one, every byte on a file system
//! that refuses `O_DIRECT` — goes through an ordinary handle on the same file; the kernel keeps
//! the two coherent, and the task never writes two at once. Nothing is durable until
//! [`DirectWriter::sync`] (or the caller's own `sync_all`).
//!
//! With `checksum`, it also computes the CRC32 of everything but the last [`TRAILER`] bytes as the
//! bytes come, so a received snapshot's trailer is checked
//! ([`crate::store::snapshot_file::verify_and_strip`]) without reading the file back. Bytes that
//! do not arrive in order (a resent chunk, a gap) make it unknown, and the check reads the file.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncSeek, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

/// The alignment `O_DIRECT` needs of file offsets, lengths and memory (a page covers every
/// logical block size in use).
pub const ALIGN: usize = 4096;
/// Bytes gathered before a write.
pub const SEGMENT: usize = 8 << 20;
/// Buffers per writer: one being filled while the others wait for the disk or are written. A
/// snapshot chunk (16 MiB) then goes to the disk while the next one is on the wire.
pub const BUFFERS: usize = 4;
/// Bytes at the end of the file the checksum leaves out: a snapshot's trailer.
const TRAILER: usize = crate::store::snapshot_file::TRAILER as usize;

/// The CRC32 of a received file's bytes but its last [`TRAILER`], and how many those are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    pub crc: u32,
    pub len: u64,
}

/// An aligned buffer and where its bytes go in the file.
struct Segment {
    mem: Vec<u8>,
    /// Where the aligned part of `mem` starts.
    start: usize,
    len: usize,
    at: u64,
}

impl Segment {
    fn new() -> Segment {
        let mem = vec![0u8; SEGMENT + ALIGN];
        let start = (ALIGN - mem.as_ptr() as usize % ALIGN) % ALIGN;
        Segment { mem, start, len: 0, at: 0 }
    }
    fn put(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(SEGMENT - self.len);
        let from = self.start + self.len;
        self.mem[from..from + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }
    fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
    fn end(&self) -> u64 {
        self.at + self.len as u64
    }
}

/// The file's two handles.
struct Disk {
    plain: std::fs::File,
    /// `None` where the file system refuses `O_DIRECT`.
    direct: Option<std::fs::File>,
}

impl Disk {
    fn open(path: &Path) -> io::Result<Disk> {
        let plain = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Disk { plain, direct: open_direct(path) })
    }

    /// Write `bytes` (starting at an aligned address) at `at`: the aligned part directly, the
    /// rest through the page cache.
    fn write(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        let mut done = 0;
        let whole = bytes.len() / ALIGN * ALIGN;
        if let (Some(d), true, true) = (&self.direct, at.is_multiple_of(ALIGN as u64), whole > 0) {
            match d.write_all_at(&bytes[..whole], at) {
                Ok(()) => done = whole,
                // Accepted at open, refused at write (some file systems): plain from now on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::info!(error = %e, "O_DIRECT write refused; writing through the page cache");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.plain.write_all_at(&bytes[done..], at + done as u64)
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::info!(error = %e, path = %path.display(), "no O_DIRECT here; writing through the page cache");
            None
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<std::fs::File> {
    None
}

/// CRC32 of the bytes written in order from the start, less the last [`TRAILER`].
struct RunningCrc {
    hasher: crc32fast::Hasher,
    /// Bytes seen, `held` included.
    seen: u64,
    /// The last bytes seen, not hashed yet: they may be the trailer.
    held: Vec<u8>,
    broken: bool,
}

impl RunningCrc {
    fn new() -> RunningCrc {
        RunningCrc { hasher: crc32fast::Hasher::new(), seen: 0, held: Vec::with_capacity(2 * TRAILER), broken: false }
    }

    fn feed(&mut self, at: u64, bytes: &[u8]) {
        if self.broken || bytes.is_empty() {
            return;
        }
        if at != self.seen {
            self.broken = true;
            return;
        }
        self.seen += bytes.len() as u64;
        if bytes.len() >= TRAILER {
            self.hasher.update(&self.held);
            self.held.clear();
            let (body, tail) = bytes.split_at(bytes.len() - TRAILER);
            self.hasher.update(body);
            self.held.extend_from_slice(tail);
        } else {
            self.held.extend_from_slice(bytes);
            let extra = self.held.len().saturating_sub(TRAILER);
            self.hasher.update(&self.held[..extra]);
            self.held.drain(..extra);
        }
    }

    fn result(&self) -> Option<Checksum> {
        (!self.broken && self.held.len() == TRAILER)
            .then(|| Checksum { crc: self.hasher.clone().finalize(), len: self.seen - TRAILER as u64 })
    }
}

/// What the writing task is asked to do.
enum Job {
    Write(Segment),
    Sync(oneshot::Sender<io::Result<()>>),
}

/// The writing task: jobs in order until the writer is dropped. A segment comes back, written
/// or with the error, to be filled again.
fn write_jobs(mut disk: Disk, mut jobs: mpsc::Receiver<Job>, done: mpsc::UnboundedSender<(Segment, io::Result<()>)>) {
    while let Some(job) = jobs.blocking_recv() {
        match job {
            Job::Write(seg) => {
                let r = disk.write(seg.at, seg.bytes());
                if done.send((seg, r)).is_err() {
                    return;
                }
            }
            Job::Sync(reply) => {
                let _ = reply.send(disk.plain.sync_all());
            }
        }
    }
}

/// A file being written from the network, mostly with `O_DIRECT` (see the module comment). Its
/// `AsyncWrite` takes bytes into a buffer and returns; the error of a write queued earlier comes
/// out of a later call, of the last ones out of `flush`, and fails the writer for good.
pub struct DirectWriter {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    done: mpsc::UnboundedReceiver<(Segment, io::Result<()>)>,
    filling: Option<Segment>,
    free: Vec<Segment>,
    allocated: usize,
    /// Segments handed to the task and not back yet.
    queued: usize,
    /// Where the next byte goes.
    pos: u64,
    crc: Option<RunningCrc>,
    failed: Option<(io::ErrorKind, String)>,
    /// Whether the file outlives the writer ([`DirectWriter::keep`]).
    keep: bool,
}

/// A file dropped before it was kept is a transfer given up (openraft moved on to another
/// snapshot, the leader changed): it goes, rather than a gigabyte waiting for the next start.
impl Drop for DirectWriter {
    fn drop(&mut self) {
        if !self.keep {
            // The writing task may still hold it open; the space is freed when it closes it.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl DirectWriter {
    /// Create the file at `path` (which must not exist).
    pub async fn create(path: PathBuf, checksum: bool) -> io::Result<DirectWriter> {
        let p = path.clone();
        let disk = tokio::task::spawn_blocking(move || Disk::open(&p)).await.map_err(io::Error::other)??;
        Ok(Self::on(disk, path, checksum))
    }

    fn on(disk: Disk, path: PathBuf, checksum: bool) -> DirectWriter {
        let (jobs, jobs_rx) = mpsc::channel(BUFFERS + 1);
        let (done_tx, done) = mpsc::unbounded_channel();
        tokio::task::spawn_blocking(move || write_jobs(disk, jobs_rx, done_tx));
        DirectWriter {
            path,
            jobs,
            done,
            filling: None,
            free: Vec::new(),
            allocated: 0,
            queued: 0,
            pos: 0,
            crc: checksum.then(RunningCrc::new),
            failed: None,
            keep: false,
        }
    }

    /// Keep the file when the writer is dropped (by default it is removed).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checksum of everything written but the last [`TRAILER`] bytes, when the bytes came in
    /// order from the start.
    pub fn checksum(&self) -> Option<Checksum> {
        self.crc.as_ref().and_then(RunningCrc::result)
    }

    /// Write everything out and fsync the file.
    pub async fn sync(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.flush().await?;
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Sync(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }

    /// Take back the segments the task has written. With `wait`, wait for one if any is queued
    /// and none is back yet.
    fn poll_written(&mut self, cx: &mut Context<'_>, wait: bool) -> Poll<io::Result<()>> {
        let mut back = false;
        loop {
            match self.done.poll_recv(cx) {
                Poll::Ready(Some((mut seg, r))) => {
                    self.queued -= 1;
                    seg.len = 0;
                    self.free.push(seg);
                    if let Err(e) = r {
                        self.fail(&e);
                    }
                    back = true;
                }
                Poll::Ready(None) => {
                    if self.queued > 0 {
                        self.fail(&gone());
                        self.queued = 0;
                    }
                    break;
                }
                Poll::Pending if wait && !back && self.queued > 0 => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        Poll::Ready(self.check())
    }

    fn fail(&mut self, e: &io::Error) {
        if self.failed.is_none() {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write a received file");
            self.failed = Some((e.kind(), e.to_string()));
        }
    }

    /// Queue the buffer being filled for the task.
    fn submit(&mut self) -> io::Result<()> {
        let Some(seg) = self.filling.take() else { return Ok(()) };
        if seg.len == 0 {
            self.free.push(seg);
            return Ok(());
        }
        // There are never more segments than the channel holds.
        self.jobs.try_send(Job::Write(seg)).map_err(|_| gone())?;
        self.queued += 1;
        Ok(())
    }
}

fn gone() -> io::Error {
    io::Error::other("the file's writing task stopped")
}

impl AsyncWrite for DirectWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_written(cx, false))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // The buffer being filled takes these bytes only if they continue it.
        if this.filling.as_ref().is_some_and(|s| s.end() != this.pos) {
            this.submit()?;
        }
        if this.filling.is_none() {
            if this.free.is_empty() && this.allocated == BUFFERS {
                ready!(this.poll_written(cx, true))?;
            }
            let mut seg = match this.free.pop() {
                Some(s) => s,
                None => {
                    this.allocated += 1;
                    Segment::new()
                }
            };
            seg.at = this.pos;
            this.filling = Some(seg);
        }
        let Some(seg) = this.filling.as_mut() else { return Poll::Ready(Err(io::Error::other("no write buffer"))) };
        let n = seg.put(buf);
        let full = seg.len == SEGMENT;
        if let Some(c) = this.crc.as_mut() {
            c.feed(this.pos, &buf[..n]);
        }
        this.pos += n as u64;
        if full {
            this.submit()?;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        this.submit()?;
        while this.queued > 0 {
            ready!(this.poll_written(cx, true))?;
        }
        Poll::Ready(this.check())
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl AsyncSeek for DirectWriter {
    fn start_seek(self: Pin<&mut Self>, to: io::SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        let target = match to {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::Current(d) => this.pos.checked_add_signed(d),
            io::SeekFrom::End(_) => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, "a file being received has no end yet"))
            }
        };
        this.pos = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(())
    }
    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    /// Chunks of every shape (aligned, odd, larger than a buffer) land where they belong, and the
    /// checksum is the CRC of all but the trailer.
    #[tokio::test]
    async fn writes_of_any_size_land_in_place_with_their_checksum() {
        for direct in [true, false] {
            writes_of_any_size(direct).await;
        }
    }

    async fn writes_of_any_size(direct: bool) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let data = pattern(2 * SEGMENT + 3 * ALIGN + 123);
        let mut w = if direct {
            DirectWriter::create(p.clone(), true).await.unwrap()
        } else {
            // As on a file system that refuses O_DIRECT.
            let plain = std::fs::OpenOptions::new().write(true).create_new(true).open(&p).unwrap();
            DirectWriter::on(Disk { plain, direct: None }, p.clone(), true)
        };
        let mut at = 0;
        for size in [ALIGN, 1, 4095, SEGMENT + 17, 1 << 20].iter().cycle() {
            let end = (at + size).min(data.len());
            w.write_all(&data[at..end]).await.unwrap();
            at = end;
            if at == data.len() {
                break;
            }
        }
        w.sync().await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), data);
        let body = &data[..data.len() - TRAILER];
        let want = Checksum { crc: crc32fast::hash(body), len: body.len() as u64 };
        assert_eq!(w.checksum(), Some(want));
    }

    /// openraft's pattern: chunks at offsets, one sent again. The file is right; the checksum,
    /// having seen bytes out of order, is unknown rather than wrong.
    #[tokio::test]
    async fn a_chunk_written_again_leaves_the_file_right_and_the_checksum_unknown() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let chunk = 3 << 20;
        let data = pattern(5 * chunk + 1000);
        let mut w = DirectWriter::create(p.clone(), true).await.unwrap();
        let mut offset = 0;
        let mut resent = false;
        while offset < data.len() {
            let end = (offset + chunk).min(data.len());
            w.seek(io::SeekFrom::Start(offset as u64)).await.unwrap();
            w.write_all(&data[offset..end]).await.unwrap();
            if offset == 2 * chunk && !resent {
                resent = true;
                continue;
            }
            offset = end;
        }
        w.sync().await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), data);
        assert_eq!(w.checksum(), None);

        // In order from the start: known.
        let q = d.path().join("g");
        let mut w = DirectWriter::create(q, true).await.unwrap();
        w.write_all(&data[..10]).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.checksum(), None, "shorter than a trailer");
        w.write_all(&data[10..20]).await.unwrap();
        assert_eq!(w.checksum(), Some(Checksum { crc: crc32fast::hash(&data[..4]), len: 4 }));
    }

    /// A file given up is removed with its writer; a kept one stays.
    #[tokio::test]
    async fn a_file_not_kept_is_removed_with_its_writer() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let mut w = DirectWriter::create(a.clone(), false).await.unwrap();
        w.write_all(&pattern(SEGMENT + 5)).await.unwrap();
        drop(w);
        assert!(!a.exists());
        let mut w = DirectWriter::create(b.clone(), false).await.unwrap();
        w.write_all(&pattern(100)).await.unwrap();
        w.sync().await.unwrap();
        w.keep();
        drop(w);
        assert_eq!(std::fs::read(&b).unwrap(), pattern(100));
    }

    /// A write that fails (here: the disk is full, as `/dev/full` always is) fails the writer
    /// for good, whichever call sees it first.
    #[tokio::test]
    async fn a_failed_write_is_reported_and_sticks() {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        // (The path is only a name here: the writer removes it when dropped, so not /dev/full.)
        let d = tempfile::tempdir().unwrap();
        let mut w = DirectWriter::on(Disk { plain: full, direct: None }, d.path().join("f"), false);
        let first = w.write_all(&pattern(SEGMENT + 10)).await;
        let flushed = w.flush().await;
        assert!(first.is_err() || flushed.is_err());
        assert!(w.write_all(b"more").await.is_err(), "a failed writer stays failed");
        assert!(w.flush().await.is_err());
    }
}
