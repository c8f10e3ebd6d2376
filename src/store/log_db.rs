//! The Raft log on disk: its own SQLite file (`raft/log.sqlite`) in WAL mode with
//! `synchronous=FULL`, so a commit returns only after it is fsynced (docs/DESIGN.md §5, invariant 1).
//! Every entry carries a CRC32 of its bytes; the vote, committed and last-purged ids live in a
//! meta table of the same file. This is the synchronous layer; the `LogStore` actor runs it on
//! its own thread.
//!
//! Torn tails are SQLite's job: a WAL frame that was not completely written before a crash fails
//! SQLite's own frame checksum and is ignored at open, which is exactly "truncate the torn tail".
//! A record whose CRC does not match anywhere in the log is corruption, and opening refuses.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LogDbError {
    #[error("raft log sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("raft log {path}: entry {index} fails its checksum; the log is corrupt. Wipe this node's data directory and rejoin it to the cluster")]
    Corrupt { path: String, index: u64 },
    #[error("raft log {path}: hole at index {index}; the log is corrupt. Wipe this node's data directory and rejoin it to the cluster")]
    Hole { path: String, index: u64 },
}

/// The log file's path and functions over a connection to it (the connection itself lives on the
/// `LogStore` actor's own thread).
pub struct LogDb;

/// `synchronous=FULL`; the power-loss test's negative control switches fsync off through a
/// failpoint (compiled only with the `failpoints` feature).
fn log_sync_mode() -> &'static str {
    fail::fail_point!("log_store::no_fsync", |_| "OFF");
    "FULL"
}

pub const KEY_VOTE: &str = "vote";
pub const KEY_COMMITTED: &str = "committed";
pub const KEY_PURGED: &str = "purged";
/// The last term in which this node, as leader, sent entries before its own fsync
/// (`src/raft/presend.rs`).
pub const KEY_PRESEND_TERM: &str = "presend_term";

fn crc(bytes: &[u8]) -> i64 {
    crc32fast::hash(bytes) as i64
}

impl LogDb {
    /// Open (or create) the log and verify every record's checksum and contiguity.
    pub fn open(path: &Path) -> Result<Connection, LogDbError> {
        let conn = Connection::open(path)?;
        Self::init(&conn, &path.display().to_string())?;
        Ok(conn)
    }

    /// Configure a freshly opened connection and verify the log.
    pub fn init(conn: &Connection, path: &str) -> Result<(), LogDbError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // The power-loss test's negative control switches fsync off here (never in a real build).
        conn.pragma_update(None, "synchronous", log_sync_mode())?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, crc INTEGER NOT NULL, entry BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);",
        )?;
        Self::verify(conn, path)
    }

    fn verify(conn: &Connection, path: &str) -> Result<(), LogDbError> {
        let mut st = conn.prepare("SELECT idx, crc, entry FROM log ORDER BY idx")?;
        let mut rows = st.query([])?;
        let mut prev: Option<u64> = None;
        while let Some(r) = rows.next()? {
            let idx: i64 = r.get(0)?;
            let sum: i64 = r.get(1)?;
            let entry: Vec<u8> = r.get(2)?;
            let idx = idx as u64;
            if crc(&entry) != sum {
                return Err(LogDbError::Corrupt { path: path.to_string(), index: idx });
            }
            if let Some(p) = prev {
                if idx != p + 1 {
                    return Err(LogDbError::Hole { path: path.to_string(), index: p + 1 });
                }
            }
            prev = Some(idx);
        }
        Ok(())
    }

    /// Append entries `(index, bytes)` in one transaction; returns once it is fsynced.
    /// Re-appending an index replaces it, so a retried append is idempotent.
    pub fn append(conn: &mut Connection, entries: &[(u64, Vec<u8>)]) -> Result<(), LogDbError> {
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached("INSERT OR REPLACE INTO log(idx, crc, entry) VALUES (?1, ?2, ?3)")?;
            for (idx, bytes) in entries {
                st.execute(params![*idx as i64, crc(bytes), bytes])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Entries with `start <= index < end`, checksums verified.
    pub fn range(conn: &Connection, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, LogDbError> {
        let mut st =
            conn.prepare_cached("SELECT idx, crc, entry FROM log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")?;
        let end = end.min(i64::MAX as u64) as i64;
        let mut rows = st.query(params![start.min(i64::MAX as u64) as i64, end])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let idx = r.get::<_, i64>(0)? as u64;
            let sum: i64 = r.get(1)?;
            let entry: Vec<u8> = r.get(2)?;
            if crc(&entry) != sum {
                return Err(LogDbError::Corrupt { path: "raft/log.sqlite".into(), index: idx });
            }
            out.push((idx, entry));
        }
        Ok(out)
    }

    /// The last entry's bytes, if any.
    pub fn last(conn: &Connection) -> Result<Option<(u64, Vec<u8>)>, LogDbError> {
        let r = conn
            .query_row("SELECT idx, entry FROM log ORDER BY idx DESC LIMIT 1", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()?;
        Ok(r)
    }

    /// Remove entries with index >= `from` (conflict resolution on a follower).
    pub fn truncate(conn: &Connection, from: u64) -> Result<(), LogDbError> {
        conn.execute("DELETE FROM log WHERE idx >= ?1", [from.min(i64::MAX as u64) as i64])?;
        Ok(())
    }

    /// Remove entries with index <= `upto` and record the purged id, atomically.
    pub fn purge(conn: &mut Connection, upto: u64, purged_id: &[u8]) -> Result<(), LogDbError> {
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM log WHERE idx <= ?1", [upto.min(i64::MAX as u64) as i64])?;
        tx.execute("INSERT OR REPLACE INTO meta(k, v) VALUES (?1, ?2)", params![KEY_PURGED, purged_id])?;
        tx.commit()?;
        Ok(())
    }

    pub fn put_meta(conn: &Connection, key: &str, value: &[u8]) -> Result<(), LogDbError> {
        conn.execute("INSERT OR REPLACE INTO meta(k, v) VALUES (?1, ?2)", params![key, value])?;
        Ok(())
    }

    pub fn get_meta(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, LogDbError> {
        Ok(conn.query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Size of the log file and its WAL, in bytes.
    pub fn size_bytes(path: &Path) -> u64 {
        let base = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let wal = std::fs::metadata(format!("{}-wal", path.display())).map(|m| m.len()).unwrap_or(0);
        base + wal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_range_truncate_purge() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.sqlite");
        let mut db = LogDb::open(&p).unwrap();
        LogDb::append(&mut db, &[(1, b"a".to_vec()), (2, b"b".to_vec()), (3, b"c".to_vec())]).unwrap();
        assert_eq!(LogDb::range(&db, 2, 10).unwrap().len(), 2);
        LogDb::truncate(&db, 3).unwrap();
        assert_eq!(LogDb::last(&db).unwrap().unwrap().0, 2);
        LogDb::purge(&mut db, 1, b"p").unwrap();
        assert_eq!(LogDb::range(&db, 0, 10).unwrap(), vec![(2, b"b".to_vec())]);
        assert_eq!(LogDb::get_meta(&db, KEY_PURGED).unwrap().unwrap(), b"p");
        drop(db);
        assert!(LogDb::open(&p).is_ok());
    }

    #[test]
    fn corruption_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.sqlite");
        let mut db = LogDb::open(&p).unwrap();
        LogDb::append(&mut db, &[(1, b"a".to_vec()), (2, b"b".to_vec())]).unwrap();
        db.execute("UPDATE log SET entry = X'00' WHERE idx = 1", []).unwrap();
        drop(db);
        let e = LogDb::open(&p).err().unwrap();
        assert!(e.to_string().contains("entry 1 fails its checksum"), "{e}");
    }
}
