//! `/db/backup`, `/db/load`, `/boot`, `/snapshot` and `/reap` (docs/API.md §10, §15).
//!
//! Backups are consistent copies made with SQLite's backup API from a read-only connection (or a
//! dump from one read transaction), written to a temp file in the data directory and streamed from
//! it, so neither writes nor memory depend on the size of the database. Loads of a database image
//! go through Raft and replace the database on every node; SQL dumps run as one transaction.
//! `/boot` streams a large file to disk and adopts it on a single-node cluster, bypassing the log.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Buf;
use http::StatusCode;
use warp::reply::{Reply, Response};

use super::body::BodyStream;
use super::forward::{not_leader, Fwd};
use super::render::{envelope, Shape, J};
use super::request::Params;
use super::respond::{empty, json, text};
use super::state::{AppState, VERSION};
use crate::actors::applier::Compact;
use crate::actors::consensus::{propose, ProposeError};
use crate::actors::snapshotter::{AdoptDatabase, AdoptError};
use crate::store::command::{Command, ExecOptions, Statement};
use crate::store::dump;

/// A temp file in the data directory, removed when dropped.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp(state: &AppState, what: &str) -> Temp {
    Temp(state.cfg.data_dir.join(format!("raftlite-{what}-{}.tmp", rand::random::<u64>())))
}

/// Remove scratch files an interrupted backup, load or boot left behind (at start).
pub fn clean_scratch(data_dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(data_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("raftlite-") && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_file(data_dir.join("db.sqlite.loading"));
}

/// Stream a file as the response body. The file is opened, then unlinked by the caller's `Temp`:
/// the open handle keeps the bytes until the stream ends.
async fn stream_file(path: &Path, content_type: &'static str) -> Result<Response, String> {
    let f = tokio::fs::File::open(path).await.map_err(|e| e.to_string())?;
    let len = f.metadata().await.map_err(|e| e.to_string())?.len();
    let mut r = warp::reply::stream(tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024)).into_response();
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    if let Ok(v) = http::HeaderValue::from_str(&len.to_string()) {
        h.insert(http::header::CONTENT_LENGTH, v);
    }
    h.insert("X-RQLITE-VERSION", http::HeaderValue::from_static(VERSION));
    Ok(r)
}

pub(crate) fn gzip(src: &Path, dst: &Path) -> std::io::Result<()> {
    let mut input = std::io::BufReader::new(std::fs::File::open(src)?);
    let out = std::fs::File::create(dst)?;
    let mut enc = flate2::write::GzEncoder::new(std::io::BufWriter::new(out), flate2::Compression::fast());
    std::io::copy(&mut input, &mut enc)?;
    enc.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// `GET /db/backup`: `fmt=binary` (default), `delete`, `sql` (with `tables`); `compress`, `vacuum`.
pub(crate) async fn backup(state: &AppState, p: &Params, fwd: &Fwd) -> Response {
    let Some(core) = state.core.get() else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "store not open");
    };
    if !p.noleader && !core.is_leader() {
        return not_leader(state, p, core.leader(), fwd).await;
    }
    let fmt = p.get("fmt").unwrap_or("binary").to_ascii_lowercase();
    let fmt = if fmt == "sql" || fmt == "delete" { fmt } else { "binary".to_string() };
    if p.has("vacuum") && fmt != "binary" {
        return text(state, StatusCode::BAD_REQUEST, "vacuum is only supported with the binary format");
    }
    let tables: Option<Vec<String>> =
        p.get("tables").map(|t| t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect());
    let out = temp(state, "backup");
    let db = core.db_path.clone();
    let (o, vacuum, f2) = (out.0.clone(), p.has("vacuum"), fmt.clone());
    let started = Instant::now();
    // A one-off read of the database, off the actors: a tokio-rusqlite connection of its own.
    let made = match tokio_rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).await
    {
        Ok(c) => c
            .call_raw(move |c| make_backup(c, &o, &f2, tables.as_deref(), vacuum))
            .await
            .unwrap_or_else(|e| Err(e.to_string())),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = made {
        return text(state, StatusCode::INTERNAL_SERVER_ERROR, &format!("backup failed: {e}"));
    }
    let (path, _gz) = if p.has("compress") {
        let gz = temp(state, "backup-gz");
        let (a, b) = (out.0.clone(), gz.0.clone());
        match tokio::task::spawn_blocking(move || gzip(&a, &b)).await {
            Ok(Ok(())) => (gz.0.clone(), Some(gz)),
            Ok(Err(e)) => return text(state, StatusCode::INTERNAL_SERVER_ERROR, &format!("compress: {e}")),
            Err(e) => return text(state, StatusCode::INTERNAL_SERVER_ERROR, &format!("compress: {e}")),
        }
    } else {
        (out.0.clone(), None)
    };
    let ct = if fmt == "sql" && !p.has("compress") { "application/sql" } else { "application/octet-stream" };
    let r = stream_file(&path, ct).await;
    tracing::info!(fmt = %fmt, took = ?started.elapsed(), "backup served");
    r.unwrap_or_else(|e| text(state, StatusCode::INTERNAL_SERVER_ERROR, &e))
}

/// A consistent copy in `out` of the database holding at least every change through `target`,
/// vacuumed if asked (automatic backups). The cheap way first: a snapshot through `target` (a
/// checkpoint of the WAL written since the last one), after which the main file holds exactly
/// that snapshot and is copied as a plain file (in the kernel; a reflink on filesystems that
/// have them) under the lock every checkpoint takes, while writes go on into the WAL. Where no
/// snapshot can be taken in time (readers holding the checkpoint back, say) the copy goes
/// through SQLite's backup API instead, page by page: about three times the CPU, no checkpoint.
pub(crate) async fn copy_database(state: &AppState, target: u64, out: &Path, vacuum: bool) -> Result<(), String> {
    let core = state.core.get().ok_or("store not open")?;
    let (db, o) = (core.db_path.clone(), out.to_path_buf());
    match copy_at_snapshot(state, core, target, out).await {
        Ok(()) if !vacuum => Ok(()),
        Ok(()) => tokio::task::spawn_blocking(move || vacuum_copy(&o)).await.map_err(|e| e.to_string())?,
        Err(e) => {
            let _ = std::fs::remove_file(&o);
            tracing::info!(error = %e, "backup: no snapshot to copy; copying through SQLite's backup API");
            tokio::task::spawn_blocking(move || {
                let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .map_err(|e| e.to_string())?;
                make_backup(&c, &o, "binary", None, vacuum)
            })
            .await
            .map_err(|e| e.to_string())?
        }
    }
}

/// A snapshot through `target`, then a plain copy of the main file, which holds exactly it.
async fn copy_at_snapshot(
    state: &AppState,
    core: &crate::http::state::Core,
    target: u64,
    out: &Path,
) -> Result<(), String> {
    snapshot_through(core, target).await?;
    let _recording = core.snap_stats.recording.read().await;
    let (db, dir, o) = (core.db_path.clone(), state.cfg.data_dir.join("snapshots"), out.to_path_buf());
    tokio::task::spawn_blocking(move || crate::store::snapshot_file::copy_recorded(&db, &dir, &o, target))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// `VACUUM` a copy that is read once and removed (so without journal or fsync).
fn vacuum_copy(path: &Path) -> Result<(), String> {
    let c = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    c.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; VACUUM;").map_err(|e| e.to_string())
}

/// Write a backup of the database open on `src` to `out`: a SQL dump (`sql`), or a copy made
/// with the backup API (`binary`; `delete`: in rollback-journal mode),
/// vacuumed if asked.
fn make_backup(
    src: &rusqlite::Connection,
    out: &std::path::Path,
    fmt: &str,
    tables: Option<&[String]>,
    vacuum: bool,
) -> Result<(), String> {
    if fmt == "sql" {
        let mut w = std::io::BufWriter::new(std::fs::File::create(out).map_err(|e| e.to_string())?);
        dump::dump(src, tables, &mut w)?;
        return std::io::Write::flush(&mut w).map_err(|e| e.to_string());
    }
    let mut c = rusqlite::Connection::open(out).map_err(|e| e.to_string())?;
    // The copy is a temporary file, read once and removed: nothing to journal or fsync. An
    // fsync of a database-sized file would also hold the node's own fsyncs (log and WAL) behind
    // it, as they share the filesystem's journal: a write's latency would jump for seconds.
    c.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;").map_err(|e| e.to_string())?;
    crate::store::snapshot_file::backup_from(src, &mut c).map_err(|e| e.to_string())?;
    let mut sql = String::new();
    if vacuum {
        sql.push_str("VACUUM;");
    }
    if fmt == "delete" {
        sql.push_str("PRAGMA journal_mode=DELETE;");
    }
    c.execute_batch(&sql).map_err(|e| e.to_string())
}

/// `POST /db/load`: a database image (through Raft, replacing the database everywhere) or a SQL
/// dump (one transaction; all or nothing).
pub(crate) async fn load(state: &AppState, p: &Params, fwd: &Fwd) -> Response {
    let Some(core) = state.core.get() else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "store not open");
    };
    if !core.is_leader() {
        return not_leader(state, p, core.leader(), fwd).await;
    }
    let started = Instant::now();
    let body = &fwd.body;
    if dump::is_sqlite_image(body) {
        // Check it here, so that a bad image is a 400 and never reaches the log.
        let t = temp(state, "load-check");
        let (path, image) = (t.0.clone(), body.clone());
        let checked = tokio::task::spawn_blocking(move || {
            std::fs::write(&path, &image).map_err(|e| e.to_string())?;
            dump::check_image(&path).map(|_| ())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        drop(t);
        if let Err(e) = checked {
            return text(state, StatusCode::BAD_REQUEST, &e);
        }
        let cmd = Command::Load { image: body.to_vec() };
        return match propose(&core.consensus, cmd).await {
            Ok(resp) => {
                let mut env = envelope(&[], resp.error.as_deref(), None, None, Default::default());
                if p.timings {
                    env.put("time", J::Float(started.elapsed().as_secs_f64()));
                }
                json(state, &env, p.pretty)
            }
            Err(ProposeError::NotLeader { leader }) => not_leader(state, p, leader, fwd).await,
            Err(e) => text(state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
    }
    let Ok(sql_text) = std::str::from_utf8(body) else {
        return text(state, StatusCode::BAD_REQUEST, "load body is neither a SQLite database nor UTF-8 SQL text");
    };
    let sql = dump::strip_transaction_statements(sql_text);
    let cmd = Command::Execute {
        stmts: vec![Statement::new(sql)],
        opts: ExecOptions { transaction: true, ..Default::default() },
        seed: rand::random(),
    };
    match propose(&core.consensus, cmd).await {
        Ok(resp) => {
            let shape = Shape { timings: p.timings, ..Default::default() };
            let time = p.timings.then(|| started.elapsed().as_secs_f64());
            json(state, &envelope(&resp.results, resp.error.as_deref(), time, None, shape), p.pretty)
        }
        Err(ProposeError::NotLeader { leader }) => not_leader(state, p, leader, fwd).await,
        Err(e) => text(state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// Largest `/boot` upload (streamed to disk, never held in memory).
const MAX_BOOT_BYTES: u64 = 1 << 40;

/// `POST /boot`: stream a SQLite file to disk and make it the database of a single-node cluster.
pub async fn boot<B: Buf + Send>(state: &AppState, body: BodyStream<B>) -> Response {
    let Some(core) = state.core.get() else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "store not open");
    };
    let m = core.metrics();
    if m.current_leader != Some(core.node_id) {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "not leader");
    }
    if m.membership_config.membership().nodes().count() != 1 {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "not single-node");
    }
    let started = Instant::now();
    let t = temp(state, "boot");
    let written = match write_stream(&t.0, body, MAX_BOOT_BYTES, state.cfg.http_header_timeout).await {
        Ok(n) => n,
        Err((code, e)) => return text(state, code, &e),
    };
    let mut head = [0u8; 16];
    let ok_head = std::fs::File::open(&t.0).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok();
    if !ok_head || !dump::is_sqlite_image(&head) {
        return text(state, StatusCode::BAD_REQUEST, "invalid SQLite data");
    }
    // Adopted through the Snapshotter, which serializes it with snapshot builds and installs.
    match core.snapshotter.send(AdoptDatabase(t.0.clone())).await {
        Ok(Ok(())) => {}
        Ok(Err(AdoptError::Invalid(e))) => return text(state, StatusCode::BAD_REQUEST, &e),
        Ok(Err(e)) => return text(state, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => return text(state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
    // A no-op through the log marks the new state, a snapshot records it, and the log up to it
    // is purged: its entries do not make this database, so a node that joins later must get it
    // as a snapshot, never replay them onto an empty one (rqlite's boot truncates its log too).
    let noop = Command::Execute { stmts: Vec::new(), opts: ExecOptions::default(), seed: 0 };
    if let Err(e) = record_boot(core, noop).await {
        return text(state, StatusCode::INTERNAL_SERVER_ERROR, &format!("booted, but {e}"));
    }
    tracing::info!(bytes = written, took = ?started.elapsed(), "booted from an uploaded database");
    empty(state, StatusCode::OK)
}

/// After `/boot`: propose `noop`, snapshot at it, and purge the log through it.
async fn record_boot(core: &crate::http::state::Core, noop: Command) -> Result<(), String> {
    if let Err(e) = propose(&core.consensus, noop).await {
        return Err(format!("the log did not take the boot's marker: {e}"));
    }
    let target = core.metrics().last_applied.map(|l| l.index).unwrap_or(0);
    snapshot_through(core, target).await.map_err(|e| format!("no snapshot was taken: {e}"))?;
    let raft = core.raft.get();
    raft.trigger().purge_log(target).await.map_err(|e| format!("the log was not purged: {e}"))?;
    raft.wait(Some(Duration::from_secs(60)))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= target), "boot purge")
        .await
        .map_err(|e| format!("the log was not purged: {e}"))?;
    Ok(())
}

/// Ask openraft for a snapshot, unless one already covers `target`, and wait (up to a minute)
/// until one does.
async fn snapshot_through(core: &crate::http::state::Core, target: u64) -> Result<(), String> {
    let raft = core.raft.get();
    if core.metrics().snapshot.is_some_and(|s| s.index >= target) {
        return Ok(());
    }
    raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
    raft.wait(Some(Duration::from_secs(60)))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= target), "snapshot")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Stream the body to `path`; a body that stalls for `stall` is answered 408.
async fn write_stream<B: Buf + Send>(
    path: &Path,
    mut body: BodyStream<B>,
    cap: u64,
    stall: std::time::Duration,
) -> Result<u64, (StatusCode, String)> {
    use tokio::io::AsyncWriteExt;
    let bad = |e: String| (StatusCode::BAD_REQUEST, e);
    let io = |e: std::io::Error| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    // Buffered: each write to a tokio file is a trip to the blocking pool, and body chunks are small.
    let file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut f = tokio::io::BufWriter::with_capacity(4 << 20, file);
    let mut n = 0u64;
    let stalled = |c| (c, format!("request body stalled for {stall:?} (-http-header-timeout)"));
    while let Some(chunk) = super::body::next_chunk(&mut body, stall).await.map_err(stalled)? {
        let mut chunk = chunk.map_err(|e| bad(format!("cannot read request body: {e}")))?;
        while chunk.has_remaining() {
            let part = chunk.chunk();
            n += part.len() as u64;
            if n > cap {
                return Err((StatusCode::PAYLOAD_TOO_LARGE, "upload too large".into()));
            }
            f.write_all(part).await.map_err(io)?;
            let k = part.len();
            chunk.advance(k);
        }
    }
    f.flush().await.map_err(io)?;
    f.get_mut().sync_all().await.map_err(io)?;
    Ok(n)
}

/// `POST /snapshot`: compact now; `trailing_logs=N` keeps N entries of log. 204 when there is
/// nothing new since the last snapshot.
pub async fn snapshot(state: &AppState, p: &Params) -> Response {
    let Some(core) = state.core.get() else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "store not open");
    };
    core.snap_stats.user_snapshots.fetch_add(1, Ordering::Relaxed);
    let m = core.metrics();
    let applied = m.last_applied.map(|l| l.index);
    if applied.is_none() || m.snapshot.map(|s| s.index) == applied {
        return empty(state, StatusCode::NO_CONTENT);
    }
    let target = applied.unwrap_or(0);
    if let Err(e) = snapshot_through(core, target).await {
        return text(state, StatusCode::INTERNAL_SERVER_ERROR, &e);
    }
    if let Some(keep) = p.get("trailing_logs").and_then(|t| t.parse::<u64>().ok()) {
        // With CDC, never past an entry whose changes are still to be delivered.
        let bound = match state.cdc.get().map(|c| c.purge_bound()).transpose() {
            Ok(b) => b.unwrap_or(u64::MAX),
            Err(e) => return text(state, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        if let Err(e) = core.raft.get().trigger().purge_log(target.saturating_sub(keep).min(bound)).await {
            return text(state, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    }
    empty(state, StatusCode::OK)
}

/// `POST /reap`: tidy the snapshot store (raftlite keeps one recorded position; leftovers are
/// copies earlier versions kept to send, or sections a crash left) and checkpoint the WAL into
/// the database.
pub async fn reap(state: &AppState, p: &Params) -> Response {
    let Some(core) = state.core.get() else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "store not open");
    };
    core.snap_stats.user_reaps.fetch_add(1, Ordering::Relaxed);
    let dir = state.cfg.data_dir.join("snapshots");
    let before = std::fs::read_dir(&dir).map(|r| r.count()).unwrap_or(0);
    crate::store::snapshot_file::remove_copies(&dir);
    let reaped = before.saturating_sub(std::fs::read_dir(&dir).map(|r| r.count()).unwrap_or(0));
    let wal = std::fs::metadata(core.db_path.with_extension("sqlite-wal")).map(|m| m.len()).unwrap_or(0);
    // A checkpoint records the position it brings the main file to (docs/DESIGN.md §6). Like
    // every change to the main file, it waits for what is reading it (a snapshot being sent).
    let recording = core.snap_stats.recording.write().await;
    let compacted = core.applier.send(Compact).await;
    drop(recording);
    let wals = match compacted {
        Ok(Ok(Some(_))) => i64::from(wal > 0),
        // Readers kept it from finishing; the next compaction will.
        Ok(Ok(None)) => 0,
        Ok(Err(e)) => return text(state, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => return text(state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let mut o = J::obj();
    o.put("snapshots_reaped", J::Int(reaped as i64));
    o.put("wals_checkpointed", J::Int(wals));
    json(state, &o, p.pretty)
}
