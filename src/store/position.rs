//! Where the database stands in the log (docs/DESIGN.md §6). The user's database holds only the
//! user's objects; raftlite's bookkeeping is one stamp in its header and files beside it:
//!
//! - **The stamp.** Every apply transaction also sets the header's `application_id` to the low 32
//!   bits of the last log index it applies ([`stamp`]). It commits with the effects, so whatever
//!   state SQLite recovers after any crash (or sees after a failed commit), the stamp says which
//!   entry that state ends at. The full position (term, membership) follows from the stamp, the
//!   recorded snapshot and the log between them (`node::resolve_position`): the log is never
//!   purged past the recorded snapshot, and applied entries are never truncated.
//! - **The recorded snapshot** (`snapshots/current.json`): the position the main file
//!   (`db.sqlite` without its WAL) holds after the last checkpoint. Compaction checkpoints the
//!   WAL into the main file and records it; the log may then be purged up to it; a follower that
//!   needs a snapshot gets a copy of the main file. Only the applier checkpoints: auto-checkpoints
//!   and the checkpoint SQLite runs when the last connection closes are switched off
//!   ([`no_implicit_checkpoints`]), so the main file stays at the recorded position between
//!   checkpoints. A checkpoint writes `checkpointing.json` first and removes it once the main file
//!   is complete; no copy is made while it exists.
//! - **Start** ([`open_at_start`]): finish or discard a database replacement a crash interrupted,
//!   open the database with its WAL (SQLite recovers it), migrate a database of the previous
//!   format, read the stamp, and checkpoint so that the main file and `current.json` agree again.
//!   Nothing is applied again: restart time is the WAL since the last snapshot (bounded by
//!   `-raft-snap-wal-size`), not the size of the database.
//! - **Replacement** (snapshot install, `/boot`): the new file is stamped, renamed to
//!   `db.sqlite.installing`, `installing.json` is written, the file is swapped in, and the marker
//!   becomes `current.json`. A replacement file without a marker is discarded (the install never
//!   happened); a marker without the file means the swap was done.
//!
//! Databases written by raftlite before this format kept the position in a `_raftlite_meta` table
//! inside the user's database; [`open_at_start`] migrates them.

use std::io;
use std::path::{Path, PathBuf};

use openraft::storage::SnapshotMeta;
use rusqlite::config::DbConfig;
use rusqlite::Connection;

use crate::raft::{LogId, NodeInfo, StoredMembership};
use crate::store::codec;

/// A recorded position: the last applied log id and membership, and a snapshot id.
pub type Meta = SnapshotMeta<u64, NodeInfo>;

const CURRENT: &str = "current.json";
const CHECKPOINTING: &str = "checkpointing.json";
const INSTALLING: &str = "installing.json";

/// The table where databases of the previous format recorded their position.
pub const LEGACY_META_TABLE: &str = "_raftlite_meta";

/// The position of the main database file, if a checkpoint or an install ever recorded one
/// (none: the main file is the empty database, and the whole log applies on top of it).
pub fn read_current(dir: &Path) -> io::Result<Option<Meta>> {
    read_json(&dir.join(CURRENT))
}

fn read_json(path: &Path) -> io::Result<Option<Meta>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write `name` atomically and durably: temp file, fsync, rename, fsync the directory.
fn write_json(dir: &Path, name: &str, meta: &Meta) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.{}.tmp", rand::random::<u64>()));
    std::fs::write(&tmp, serde_json::to_vec(meta)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Make marker `name` the recorded position (rename, fsync the directory).
fn promote(dir: &Path, name: &str) -> io::Result<()> {
    std::fs::rename(dir.join(name), dir.join(CURRENT))?;
    sync_dir(dir)
}

/// A snapshot id for a position: `term-index-unixms`, as before.
pub fn snapshot_id(applied: Option<LogId>) -> String {
    let now_ms = chrono::Utc::now().timestamp_millis();
    match applied {
        Some(l) => format!("{}-{}-{now_ms}", l.leader_id.term, l.index),
        None => format!("0-0-{now_ms}"),
    }
}

/// Switch off every checkpoint SQLite would run on its own on `conn`: only the applier's
/// [`checkpoint`] may change the main file.
pub fn no_implicit_checkpoints(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
}

/// The stamp for log index `index`: its low 32 bits, as SQLite's signed `application_id`.
pub fn stamp(index: u64) -> i32 {
    index as u32 as i32
}

/// Set the stamp on `conn` (inside the caller's transaction, or on its own).
pub fn set_stamp(conn: &Connection, index: u64) -> rusqlite::Result<()> {
    conn.pragma_update(None, "application_id", stamp(index))
}

/// The stamp of the database open on `conn`.
pub fn read_stamp(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA application_id", [], |r| r.get::<_, i32>(0)).map(|v| v as u32)
}

/// The log index at or after `from` (at most 2^32 - 1 past it) whose stamp is `stamp`.
pub fn index_for(stamp: u32, from: u64) -> u64 {
    from + u64::from(stamp.wrapping_sub(from as u32))
}

/// Stamp the database file at `path` (no other connection open on it) with `index`; closing the
/// only connection checkpoints and removes its WAL, so the file stands alone.
pub fn stamp_file(path: &Path, index: u64) -> rusqlite::Result<()> {
    let c = Connection::open(path)?;
    set_stamp(&c, index)?;
    c.close().map_err(|(_, e)| e)
}

/// Copy the whole WAL into the main file and sync it (`wal_checkpoint(TRUNCATE)`; SQLite waits
/// for readers of older frames with the busy handler). True when every frame was copied; the
/// WAL itself may stay if a reader still uses it, which does not matter.
fn copy_wal_in(conn: &Connection) -> rusqlite::Result<bool> {
    let (_busy, log, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(log == done)
}

/// Why a checkpoint did not finish.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("readers kept the checkpoint from copying the whole WAL; the next one will")]
    Incomplete,
}

/// Checkpoint the WAL of `conn` (the writer, with nothing uncommitted) into the main file and
/// record `meta`, which must be where the database stands now, as the main file's position.
/// On failure the marker stays (no copies of the main file) until a checkpoint completes.
pub fn checkpoint(conn: &Connection, dir: &Path, meta: &Meta) -> Result<(), CheckpointError> {
    write_json(dir, CHECKPOINTING, meta)?;
    fail::fail_point!("checkpoint::copy", |_| Err(CheckpointError::Incomplete));
    if !copy_wal_in(conn)? {
        return Err(CheckpointError::Incomplete);
    }
    promote(dir, CHECKPOINTING)?;
    Ok(())
}

/// True while a checkpoint is changing the main file (or one failed part way).
pub fn checkpoint_in_progress(dir: &Path) -> bool {
    dir.join(CHECKPOINTING).exists()
}

/// Where a replacement database waits before it is renamed over `db`.
pub fn installing_path(db: &Path) -> PathBuf {
    db.with_extension("sqlite.installing")
}

/// Make `src` (a complete database file in the data directory; consumed) the database at `db`,
/// at position `meta`. No connection may be open on `db`. See the module comment for the order.
pub fn replace(src: &Path, db: &Path, dir: &Path, meta: &Meta) -> io::Result<()> {
    let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
    stamp_file(src, index).map_err(|e| io::Error::other(format!("{}: {e}", src.display())))?;
    let installing = installing_path(db);
    std::fs::rename(src, &installing)?;
    std::fs::File::open(&installing)?.sync_all()?;
    if let Some(d) = db.parent() {
        sync_dir(d)?;
    }
    write_json(dir, INSTALLING, meta)?;
    if let Err(e) = swap(db, dir) {
        // Not swapped in yet: take the replacement back, marker first, so that no later start
        // swaps in a file its node has since moved past. Swapped in: the next start records it.
        if installing.exists() {
            std::fs::remove_file(dir.join(INSTALLING))?;
            std::fs::remove_file(&installing)?;
            sync_dir(dir)?;
        }
        return Err(e);
    }
    Ok(())
}

fn swap(db: &Path, dir: &Path) -> io::Result<()> {
    fail::fail_point!("install::swap", |_| Err(io::Error::other("failpoint install::swap")));
    finish_replace(db, dir)
}

/// After [`replace`] failed: whether the new file is the database all the same (its position is
/// then the one it was replaced at, recorded at the next start if not yet).
pub fn replaced(db: &Path, dir: &Path) -> bool {
    !installing_path(db).exists() && dir.join(INSTALLING).exists()
}

/// Finish a replacement: swap the waiting file in (dropping the old WAL and shared memory), then
/// record its position. A waiting file without a marker is an install that never completed.
fn finish_replace(db: &Path, dir: &Path) -> io::Result<()> {
    let installing = installing_path(db);
    let marked = dir.join(INSTALLING).exists();
    if installing.exists() && !marked {
        return std::fs::remove_file(&installing);
    }
    if !marked {
        return Ok(());
    }
    if installing.exists() {
        remove_wal(db)?;
        std::fs::rename(&installing, db)?;
        if let Some(d) = db.parent() {
            sync_dir(d)?;
        }
    }
    promote(dir, INSTALLING)
}

/// Delete the WAL and shared-memory files of `db`.
fn remove_wal(db: &Path) -> io::Result<()> {
    for ext in ["sqlite-wal", "sqlite-shm"] {
        match std::fs::remove_file(db.with_extension(ext)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Open the database at `db` before anything else does and return where it stands: finish or
/// discard a replacement a crash interrupted, migrate a database of the previous format, read
/// the stamp and let `resolve` turn it into a full position (given the recorded snapshot), then
/// checkpoint and record that position, so that the main file and `current.json` agree.
///
/// `captured`: with change data capture, the last index whose changes the CDC queue holds. If
/// the WAL holds entries past it (a power loss took the end of the queue, which is not fsynced
/// per batch, and left the database's), the WAL is dropped: the database goes back to its main
/// file, the recorded position, and the entries since apply again from the log, which captures
/// them again (src/cdc/queue.rs). The log always holds them (invariant 4).
pub fn open_at_start(
    db: &Path,
    dir: &Path,
    captured: Option<u64>,
    resolve: impl Fn(u32, Option<Meta>) -> Result<Option<Meta>, String>,
) -> Result<Option<Meta>, String> {
    let ctx = |what: &str, e: &dyn std::fmt::Display| format!("{}: {what}: {e}", db.display());
    std::fs::create_dir_all(dir).map_err(|e| ctx("snapshot directory", &e))?;
    finish_replace(db, dir).map_err(|e| ctx("finish the interrupted install", &e))?;
    let recorded = read_current(dir).map_err(|e| ctx("read the recorded position", &e))?;
    let conn = open_plain(db).map_err(|e| ctx("open", &e))?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| ctx("open", &e))?;
    let at = match legacy_position(&conn).map_err(|e| ctx("read", &e))? {
        Some((applied, membership)) => {
            let index = applied.map(|l| l.index).unwrap_or(0);
            conn.execute_batch(&format!("BEGIN IMMEDIATE; DROP TABLE {LEGACY_META_TABLE};"))
                .and_then(|()| set_stamp(&conn, index))
                .and_then(|()| conn.execute_batch("COMMIT"))
                .map_err(|e| ctx("migrate", &e))?;
            tracing::info!(applied = ?applied, "migrated the database: raftlite's position is now kept outside it");
            Some(Meta { last_log_id: applied, last_membership: membership, snapshot_id: snapshot_id(applied) })
        }
        None => {
            let stamped = read_stamp(&conn).map_err(|e| ctx("read", &e))?;
            resolve(stamped, recorded.clone()).map_err(|e| ctx("position", &e))?
        }
    };
    let index = |m: &Option<Meta>| m.as_ref().and_then(|m| m.last_log_id).map_or(0, |l| l.index);
    let wal = db.with_extension("sqlite-wal");
    let behind = captured.filter(|q| *q < index(&at));
    let (conn, at) = match behind {
        Some(q) if !checkpoint_in_progress(dir) && std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) => {
            tracing::warn!(
                captured = q,
                applied = index(&at),
                recorded = index(&recorded),
                "the CDC queue is behind the database (a power loss?): the database goes back to its last checkpoint and the entries since apply again"
            );
            drop(conn);
            for f in [wal, db.with_extension("sqlite-shm")] {
                match std::fs::remove_file(&f) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(ctx("drop the WAL", &e)),
                    _ => {}
                }
            }
            let conn = open_plain(db).map_err(|e| ctx("open", &e))?;
            conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| ctx("open", &e))?;
            let stamped = read_stamp(&conn).map_err(|e| ctx("read", &e))?;
            let at = resolve(stamped, recorded.clone()).map_err(|e| ctx("position", &e))?;
            (conn, at)
        }
        _ => (conn, at),
    };
    if let Some(meta) = &at {
        let same = recorded.as_ref().map(|r| r.last_log_id) == Some(meta.last_log_id);
        if !same || checkpoint_in_progress(dir) {
            checkpoint(&conn, dir, meta).map_err(|e| ctx("checkpoint", &e))?;
        }
    }
    Ok(at)
}

/// A writer connection with only what recovery needs (no hooks, no implicit checkpoints).
fn open_plain(db: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(db)?;
    no_implicit_checkpoints(&conn)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// The position a previous-format database recorded inside itself, if it is one.
fn legacy_position(conn: &Connection) -> rusqlite::Result<Option<(Option<LogId>, StoredMembership)>> {
    let exists: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [LEGACY_META_TABLE],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    let get = |k: &str| -> rusqlite::Result<Option<Vec<u8>>> {
        let mut st = conn.prepare(&format!("SELECT v FROM {LEGACY_META_TABLE} WHERE k = ?1"))?;
        let mut rows = st.query([k])?;
        match rows.next()? {
            Some(r) => Ok(Some(r.get(0)?)),
            None => Ok(None),
        }
    };
    let bad = |e: codec::CodecError| rusqlite::Error::ToSqlConversionFailure(e.into());
    let applied = match get("applied")? {
        Some(b) => codec::decode::<Option<LogId>>(&b).map_err(bad)?,
        None => None,
    };
    let membership = match get("membership")? {
        Some(b) => codec::decode::<StoredMembership>(&b).map_err(bad)?,
        None => StoredMembership::default(),
    };
    Ok(Some((applied, membership)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64) -> Meta {
        let applied = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index));
        Meta { last_log_id: applied, last_membership: StoredMembership::default(), snapshot_id: snapshot_id(applied) }
    }

    fn writer(db: &Path) -> Connection {
        let c = open_plain(db).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c
    }

    fn count(db: &Path) -> i64 {
        let c = Connection::open(db).unwrap();
        c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap()
    }

    /// Resolve a stamp against the recorded snapshot as if the log held entries with term 1.
    fn by_stamp(stamp: u32, recorded: Option<Meta>) -> Result<Option<Meta>, String> {
        let from = recorded.as_ref().and_then(|m| m.last_log_id).map(|l| l.index).unwrap_or(0);
        let index = index_for(stamp, from);
        Ok((index > 0 || recorded.is_some()).then(|| meta(index)))
    }

    #[test]
    fn stamps_wrap_around() {
        assert_eq!(index_for(stamp(5) as u32, 3), 5);
        assert_eq!(index_for(stamp((1 << 32) + 2) as u32, (1 << 32) - 3), (1 << 32) + 2);
        assert_eq!(index_for(0, 0), 0);
    }

    /// A database whose main file holds one row at index 2 (checkpointed and recorded) and whose
    /// WAL adds a second row at index 3; its file and snapshot directory.
    fn checkpointed_then_one_more(d: &Path) -> (PathBuf, PathBuf) {
        let (db, dir) = (d.join("db.sqlite"), d.join("snapshots"));
        std::fs::create_dir_all(&dir).unwrap();
        let c = writer(&db);
        c.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1)").unwrap();
        set_stamp(&c, 2).unwrap();
        checkpoint(&c, &dir, &meta(2)).unwrap();
        c.execute_batch("BEGIN; INSERT INTO t VALUES (2);").unwrap();
        set_stamp(&c, 3).unwrap();
        c.execute_batch("COMMIT").unwrap();
        drop(c);
        (db, dir)
    }

    /// What was applied after the last checkpoint is kept (from the WAL), its stamp says where it
    /// ends, and start checkpoints it and records that.
    #[test]
    fn start_keeps_the_wal_and_records_its_position() {
        let d = tempfile::tempdir().unwrap();
        let (db, dir) = checkpointed_then_one_more(d.path());
        assert!(db.with_extension("sqlite-wal").exists(), "closing must not checkpoint");
        let at = open_at_start(&db, &dir, None, by_stamp).unwrap().unwrap();
        assert_eq!(at.last_log_id.unwrap().index, 3);
        assert_eq!(read_current(&dir).unwrap().unwrap().last_log_id.unwrap().index, 3);
        assert_eq!(count(&db), 2);
    }

    /// With CDC, a WAL holding entries the queue lacks (after a power loss) is dropped: the
    /// database goes back to its main file so that those entries apply, and are captured, again.
    /// A queue that is not behind keeps the WAL.
    #[test]
    fn a_wal_past_the_cdc_queue_is_dropped() {
        for (captured, want) in [(Some(2), 2), (Some(3), 3), (None, 3)] {
            let d = tempfile::tempdir().unwrap();
            let (db, dir) = checkpointed_then_one_more(d.path());
            let at = open_at_start(&db, &dir, captured, by_stamp).unwrap().unwrap();
            assert_eq!(at.last_log_id.unwrap().index, want, "{captured:?}");
            assert_eq!(count(&db), want as i64 - 1, "{captured:?}");
        }
    }

    /// A checkpoint that did not finish leaves its marker; start completes it from the WAL.
    #[test]
    fn an_interrupted_checkpoint_is_finished() {
        let d = tempfile::tempdir().unwrap();
        let (db, dir) = (d.path().join("db.sqlite"), d.path().join("snapshots"));
        std::fs::create_dir_all(&dir).unwrap();
        let c = writer(&db);
        c.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)").unwrap();
        set_stamp(&c, 3).unwrap();
        write_json(&dir, CHECKPOINTING, &meta(3)).unwrap();
        drop(c);
        assert!(checkpoint_in_progress(&dir));
        let at = open_at_start(&db, &dir, None, by_stamp).unwrap().unwrap();
        assert_eq!(at.last_log_id.unwrap().index, 3);
        assert_eq!(count(&db), 2);
        assert!(!checkpoint_in_progress(&dir));
    }

    /// A database of the previous format keeps its data and position, loses the meta table.
    #[test]
    fn a_previous_format_database_is_migrated() {
        let d = tempfile::tempdir().unwrap();
        let (db, dir) = (d.path().join("db.sqlite"), d.path().join("snapshots"));
        let c = writer(&db);
        let applied = meta(7).last_log_id;
        c.execute_batch(&format!("CREATE TABLE {LEGACY_META_TABLE} (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID; CREATE TABLE t (v); INSERT INTO t VALUES (1)")).unwrap();
        c.execute(
            &format!("INSERT INTO {LEGACY_META_TABLE} VALUES ('applied', ?1)"),
            [codec::encode(&applied).unwrap()],
        )
        .unwrap();
        drop(c);
        let at = open_at_start(&db, &dir, None, |_, _| Err("not asked".into())).unwrap().unwrap();
        assert_eq!(at.last_log_id, applied);
        assert_eq!(count(&db), 1);
        let c = Connection::open(&db).unwrap();
        let names: i64 = c
            .query_row("SELECT COUNT(*) FROM sqlite_schema WHERE name = ?1", [LEGACY_META_TABLE], |r| r.get(0))
            .unwrap();
        assert_eq!(names, 0);
        assert_eq!(read_stamp(&c).unwrap(), 7);
    }

    /// A replacement file without its marker is discarded; with it, swapped in at its position.
    #[test]
    fn replacements_are_all_or_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (db, dir) = (d.path().join("db.sqlite"), d.path().join("snapshots"));
        std::fs::create_dir_all(&dir).unwrap();
        let c = writer(&db);
        c.execute_batch("CREATE TABLE t (v)").unwrap();
        set_stamp(&c, 1).unwrap();
        checkpoint(&c, &dir, &meta(1)).unwrap();
        drop(c);
        let other = d.path().join("other.sqlite");
        let c = writer(&other);
        c.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1)").unwrap();
        c.close().unwrap();
        std::fs::copy(&other, installing_path(&db)).unwrap();
        // No marker: an install that never happened.
        assert_eq!(open_at_start(&db, &dir, None, by_stamp).unwrap().unwrap().last_log_id.unwrap().index, 1);
        assert_eq!(count(&db), 0);
        assert!(!installing_path(&db).exists());
        replace(&other, &db, &dir, &meta(9)).unwrap();
        assert_eq!(open_at_start(&db, &dir, None, by_stamp).unwrap().unwrap().last_log_id.unwrap().index, 9);
        assert_eq!(count(&db), 1);
    }
}
