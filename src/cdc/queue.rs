//! The node's durable CDC queue: captured event groups waiting for delivery, in a SQLite file of
//! their own in the data directory (`cdc/queue.sqlite`), never replicated and never part of a
//! backup. Every node keeps one, so a follower that becomes leader has what is still to send
//! (docs/DESIGN.md §9b). A snapshot sent to a node carries the undelivered groups it covers
//! (`export`), and that node queues them (`import`): it never applies those entries itself.
//!
//! The applier appends a batch's groups, and the batch's last index (`captured`), *before*
//! committing the batch, so the queue is never behind the database in what the OS holds: a
//! process crash loses nothing, and an entry applied again after one writes the same groups
//! under the same index (a replace, not a duplicate). Like the database, the queue is not
//! fsynced per batch (`synchronous=NORMAL`; durability comes from the Raft log): it is fsynced
//! before every checkpoint of the database's main file (`sync`). After a power loss the queue
//! may then be behind the database's WAL; at start the database goes back to its main file and
//! the entries since apply again (`store::position::open_at_start`), so their changes are
//! captured again. Groups at or below what this node knows was delivered (the shared high-water
//! mark, or its own deliveries as leader) are not kept.
//!
//! The queue is bounded by `max_queue_bytes` of event JSON: past it the oldest groups are dropped,
//! and each drop is counted and logged, so a long outage of the endpoint never stops writes.
//!
//! An append is on the write path (the applier waits for it), so it writes as few pages as it
//! can: the batch's last index goes in the rows it adds (`through`), and the `meta` rows are
//! written only when no row can hold what they say (`captured` once the queue is empty, or for a
//! batch without changes) or, for `delivered`, every [`SAVE_DELIVERED_EVERY`] groups (a crash
//! before then only means those groups are sent again). The connection holds the file in
//! exclusive locking mode (no lock calls per transaction) and serves the sender's reads too.
//! Together these took an append from 25.6 to about 10 µs on the development machine
//! (`cargo run --release --example cdc_queue_append`; a bare one-row transaction: 12 to 14 µs).

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::cdc::event::Group;

#[derive(Debug, thiserror::Error)]
#[error("CDC queue {path}: {source}")]
pub struct QueueError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

/// One queued group, as it will be sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Queued {
    pub index: u64,
    pub commit_timestamp: i64,
    /// Events in the group.
    pub events: u64,
    pub json: String,
}

/// Counters `/status` and `/metrics` read.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub depth: AtomicU64,
    pub bytes: AtomicU64,
    /// Highest index queued since start.
    pub captured_index: AtomicU64,
    pub events_captured: AtomicU64,
    /// Groups (and their events) dropped because the queue was full.
    pub groups_dropped: AtomicU64,
    pub events_dropped: AtomicU64,
    /// Groups queued from the sections of snapshots this node installed.
    pub groups_from_snapshots: AtomicU64,
    /// The delivered position shared through the log (high-water mark).
    pub high_water_mark: AtomicU64,
    /// What this node delivered itself, as leader.
    pub delivered_index: AtomicU64,
    /// Groups queued after what is known delivered: what a leader has still to send (a hint
    /// for batching; see `CdcSender`).
    pub pending: AtomicU64,
    /// The delivered index last written to the queue's file.
    delivered_saved: AtomicU64,
    /// The `captured` last written to the `meta` table.
    captured_meta: AtomicU64,
    /// Groups at or below this are deleted from the file.
    deleted_through: AtomicU64,
    /// The last log index whose batch went through the queue (with or without changes).
    pub captured_through: AtomicU64,
}

/// How far this node's deliveries may run ahead of the `delivered` saved in the file.
pub const SAVE_DELIVERED_EVERY: u64 = 256;

pub struct Queue {
    path: String,
    /// The only connection (exclusive locking mode): the applier's appends and the sender's
    /// reads (short, indexed) take turns on it.
    conn: Mutex<Connection>,
    /// Created by this open: nothing was ever captured into it.
    fresh: bool,
    max_bytes: u64,
    pub stats: QueueStats,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (idx INTEGER PRIMARY KEY, ts INTEGER NOT NULL, n INTEGER NOT NULL, json TEXT NOT NULL,
                                   through INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
";

impl Queue {
    pub fn open(path: &Path, max_bytes: u64) -> Result<Queue, QueueError> {
        let err = |source| QueueError { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        }
        let conn = Connection::open(path).map_err(err)?;
        // Set before the first access: the WAL then keeps its index in memory, with no lock calls.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        // Not synced per batch: see the module comment (`sync`).
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // A queue written before rows carried `through`.
        let has_through: bool = conn
            .query_row("SELECT count(*) > 0 FROM pragma_table_info('events') WHERE name = 'through'", [], |r| r.get(0))
            .map_err(err)?;
        if !has_through {
            conn.execute_batch("ALTER TABLE events ADD COLUMN through INTEGER NOT NULL DEFAULT 0").map_err(err)?;
        }
        let fresh: bool = conn
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM meta WHERE k = 'captured') AND NOT EXISTS (SELECT 1 FROM events)",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let q = Queue {
            path: path.display().to_string(),
            conn: Mutex::new(conn),
            fresh,
            max_bytes,
            stats: QueueStats::default(),
        };
        {
            let c = q.lock();
            let (depth, bytes): (i64, i64) = c
                .query_row("SELECT count(*), coalesce(sum(length(json)), 0) FROM events", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(err)?;
            q.stats.depth.store(depth as u64, Ordering::Relaxed);
            q.stats.bytes.store(bytes as u64, Ordering::Relaxed);
            q.stats.high_water_mark.store(meta(&c, "hwm").map_err(err)?, Ordering::Relaxed);
            q.stats.delivered_index.store(meta(&c, "delivered").map_err(err)?, Ordering::Relaxed);
            q.stats.delivered_saved.store(q.stats.delivered_index.load(Ordering::Relaxed), Ordering::Relaxed);
            let in_meta = meta(&c, "captured").map_err(err)?;
            let in_rows: i64 =
                c.query_row("SELECT coalesce(max(through), 0) FROM events", [], |r| r.get(0)).map_err(err)?;
            q.stats.captured_meta.store(in_meta, Ordering::Relaxed);
            q.stats.captured_through.store(in_meta.max(in_rows.max(0) as u64), Ordering::Relaxed);
            let pending: i64 = c
                .query_row("SELECT count(*) FROM events WHERE idx > ?1", [q.done_through() as i64], |r| r.get(0))
                .map_err(err)?;
            q.stats.pending.store(pending as u64, Ordering::Relaxed);
        }
        Ok(q)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> QueueError {
        QueueError { path: self.path.clone(), source }
    }

    /// Everything at or below this is delivered.
    pub fn done_through(&self) -> u64 {
        self.stats.high_water_mark.load(Ordering::Relaxed).max(self.stats.delivered_index.load(Ordering::Relaxed))
    }

    /// Queue a batch's groups and the high-water mark it carried, in one transaction (not synced:
    /// see the module comment). `through`: the last log index of the batch, recorded with it
    /// (`captured`). Returns how many groups it queued.
    pub fn append(&self, groups: &[Group], hwm: Option<u64>, through: u64) -> Result<u64, QueueError> {
        let nothing_delivered = self.done_through() <= self.stats.deleted_through.load(Ordering::Relaxed);
        if groups.is_empty()
            && nothing_delivered
            && through <= self.stats.captured_through.load(Ordering::Relaxed)
            && hwm.is_none_or(|h| h <= self.stats.high_water_mark.load(Ordering::Relaxed))
        {
            return Ok(0);
        }
        let mut c = self.lock();
        self.append_locked(&mut c, groups, hwm, through)
    }

    /// Write the groups queued here and not yet delivered, up to index `through`, for a snapshot
    /// that covers `through` to carry (`store::snapshot_file::Section`): a node that installs it
    /// then holds them too, and can send them should it lead before they are delivered
    /// (docs/DESIGN.md §9b). Read a chunk at a time, so the applier's appends go on between.
    /// Returns how many groups it wrote (`write_group` gives the format).
    pub fn export(&self, through: u64, out: &mut dyn Write) -> io::Result<u64> {
        let mut after = self.done_through();
        let mut n = 0;
        while after < through {
            let chunk = self.read_after(after, SECTION_CHUNK).map_err(io::Error::other)?;
            let Some(last) = chunk.last().map(|q| q.index) else { break };
            for q in chunk.iter().filter(|q| q.index <= through) {
                write_group(out, q)?;
                n += 1;
            }
            after = last;
        }
        Ok(n)
    }

    /// Queue the groups a snapshot carried (written by [`Queue::export`] on the node that sent
    /// it; `len` bytes), before that snapshot is installed. Groups already delivered, as far as
    /// this node knows, are skipped; the queue's bound applies as to any append. Returns how many
    /// groups it queued.
    pub fn import(&self, section: &mut dyn Read, len: u64) -> io::Result<u64> {
        let mut left = len;
        let (mut chunk, mut chunk_bytes, mut queued) = (Vec::new(), 0, 0);
        while left > 0 {
            let q = read_group(section, &mut left)?;
            chunk_bytes += q.json.len();
            chunk.push(q);
            if chunk.len() >= SECTION_CHUNK || chunk_bytes >= SECTION_CHUNK_BYTES {
                queued += self.import_chunk(&mut chunk)?;
                chunk_bytes = 0;
            }
        }
        Ok(queued + self.import_chunk(&mut chunk)?)
    }

    /// Queue (and empty) `chunk` of a snapshot's groups: how many were queued.
    fn import_chunk(&self, chunk: &mut Vec<Queued>) -> io::Result<u64> {
        if chunk.is_empty() {
            return Ok(0);
        }
        let mut c = self.lock();
        let n = self.append_locked(&mut c, chunk, None, 0).map_err(io::Error::other)?;
        self.stats.groups_from_snapshots.fetch_add(n, Ordering::Relaxed);
        chunk.clear();
        Ok(n)
    }

    /// Make everything queued so far durable (fsync): before the database's main file is
    /// checkpointed, so that the main file never holds an entry whose changes a power loss could
    /// take from the queue.
    pub fn sync(&self) -> Result<(), QueueError> {
        let c = self.lock();
        c.pragma_update(None, "synchronous", "FULL").map_err(|e| self.err(e))?;
        let captured = self.stats.captured_through.load(Ordering::Relaxed);
        let synced = c
            .execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('captured', ?1)", [captured as i64])
            .map(|_| self.stats.captured_meta.fetch_max(captured, Ordering::Relaxed))
            .map(|_| ())
            .map_err(|e| self.err(e));
        let restored = c.pragma_update(None, "synchronous", "NORMAL").map_err(|e| self.err(e));
        synced.and(restored)
    }

    /// The database moved to `index` without a batch (a snapshot installed, a load, a
    /// `VACUUM`): nothing to capture up to there.
    pub fn captured_to(&self, index: u64) -> Result<(), QueueError> {
        self.append(&[], None, index).map(|_| ())
    }

    /// As opened: the last log index whose changes this queue holds (`None`: the queue was just
    /// created, so CDC was not on before and there is nothing to compare).
    pub fn captured(&self) -> Option<u64> {
        if self.fresh {
            None
        } else {
            Some(self.stats.captured_through.load(Ordering::Relaxed))
        }
    }

    fn append_locked<G: Row>(
        &self,
        c: &mut Connection,
        groups: &[G],
        hwm: Option<u64>,
        through: u64,
    ) -> Result<u64, QueueError> {
        let tx = c.transaction().map_err(|e| self.err(e))?;
        if let Some(h) = hwm.filter(|h| *h > self.stats.high_water_mark.load(Ordering::Relaxed)) {
            tx.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('hwm', ?1)", [h as i64]).map_err(|e| self.err(e))?;
        }
        let done = hwm.unwrap_or(0).max(self.done_through());
        // The totals move with each change, under the lock: no scan of the queue per batch.
        let mut size =
            Size { depth: self.stats.depth.load(Ordering::Relaxed), bytes: self.stats.bytes.load(Ordering::Relaxed) };
        let (mut events, mut queued) = (0u64, 0u64);
        {
            let mut old =
                tx.prepare_cached("SELECT length(json) FROM events WHERE idx = ?1").map_err(|e| self.err(e))?;
            let mut ins = tx
                .prepare_cached("INSERT OR REPLACE INTO events (idx, ts, n, json, through) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(|e| self.err(e))?;
            for g in groups.iter().filter(|g| g.index() > done) {
                queued += 1;
                // The same entry applied again after a crash replaces its earlier capture.
                let replaced: Option<i64> =
                    old.query_row([g.index() as i64], |r| r.get(0)).optional().map_err(|e| self.err(e))?;
                if let Some(len) = replaced {
                    size.remove(len);
                }
                let (ts, n, json) = g.row();
                ins.execute(params![g.index() as i64, ts, n as i64, json, through as i64]).map_err(|e| self.err(e))?;
                size.add(json.len() as i64);
                events += n;
            }
        }
        let deleted = done > self.stats.deleted_through.load(Ordering::Relaxed);
        if deleted {
            delete_through(&tx, done, &mut size).map_err(|e| self.err(e))?;
        }
        let dropped = self.trim(&tx, &mut size).map_err(|e| self.err(e))?;
        // `captured` is the newest row's `through` when this batch added rows that are still
        // there; otherwise (no changes, or the queue emptied) only the meta row can hold it.
        let captured = through.max(self.stats.captured_through.load(Ordering::Relaxed));
        let held_by_rows = queued > 0 && size.depth > 0;
        if captured > self.stats.captured_meta.load(Ordering::Relaxed) && !held_by_rows {
            tx.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('captured', ?1)", [captured as i64])
                .map_err(|e| self.err(e))?;
        }
        let delivered = self.stats.delivered_index.load(Ordering::Relaxed);
        let saved = self.stats.delivered_saved.load(Ordering::Relaxed);
        let save_delivered = delivered > saved && (delivered - saved >= SAVE_DELIVERED_EVERY || size.depth == 0);
        if save_delivered {
            tx.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('delivered', ?1)", [delivered as i64])
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        if save_delivered {
            self.stats.delivered_saved.fetch_max(delivered, Ordering::Relaxed);
        }
        if deleted {
            self.stats.deleted_through.fetch_max(done, Ordering::Relaxed);
        }
        if !held_by_rows {
            self.stats.captured_meta.fetch_max(captured, Ordering::Relaxed);
        }
        self.stats.captured_through.fetch_max(through, Ordering::Relaxed);
        if let Some(h) = hwm {
            self.stats.high_water_mark.fetch_max(h, Ordering::Relaxed);
        }
        if let Some(last) = groups.last() {
            self.stats.captured_index.fetch_max(last.index(), Ordering::Relaxed);
        }
        self.stats.events_captured.fetch_add(events, Ordering::Relaxed);
        self.stats.pending.fetch_add(queued, Ordering::Relaxed);
        self.stats.depth.store(size.depth, Ordering::Relaxed);
        self.stats.bytes.store(size.bytes, Ordering::Relaxed);
        if let Some((first, last, n_groups, n_events)) = dropped {
            self.stats.groups_dropped.fetch_add(n_groups, Ordering::Relaxed);
            self.stats.events_dropped.fetch_add(n_events, Ordering::Relaxed);
            tracing::warn!(
                first_index = first,
                last_index = last,
                groups = n_groups,
                events = n_events,
                max_queue_bytes = self.max_bytes,
                "CDC queue full: dropped the oldest undelivered events"
            );
        }
        Ok(queued)
    }

    /// Drop the oldest groups until the queue fits: (first, last, groups, events) dropped.
    fn trim(&self, c: &Connection, size: &mut Size) -> rusqlite::Result<Option<(u64, u64, u64, u64)>> {
        if size.bytes <= self.max_bytes {
            return Ok(None);
        }
        // Find where to cut first, then delete in one statement (never while the scan is open).
        let mut cut: Option<(u64, u64, u64, u64)> = None;
        let mut left = size.bytes;
        {
            let mut st = c.prepare_cached("SELECT idx, n, length(json) FROM events ORDER BY idx")?;
            let mut rows = st.query([])?;
            while left > self.max_bytes {
                let Some(r) = rows.next()? else { break };
                let (idx, n, len): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                left = left.saturating_sub(len.max(0) as u64);
                let c = cut.get_or_insert((idx as u64, idx as u64, 0, 0));
                c.1 = idx as u64;
                c.2 += 1;
                c.3 += n as u64;
            }
        }
        if let Some((_, last, _, _)) = cut {
            delete_through(c, last, size)?;
        }
        Ok(cut)
    }

    /// The lowest index whose group is queued and not yet delivered (`None`: none is). The Raft
    /// log keeps that entry and every later one (`Cdc::purge_bound`).
    pub fn first_undelivered(&self) -> Result<Option<u64>, QueueError> {
        let c = self.lock();
        let after = self.done_through() as i64;
        let first: Option<i64> = c
            .query_row("SELECT MIN(idx) FROM events WHERE idx > ?1", [after], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(first.map(|i| i as u64))
    }

    /// Up to `limit` groups after `after`, in index order.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Queued>, QueueError> {
        let c = self.lock();
        let mut st = c
            .prepare_cached("SELECT idx, ts, n, json FROM events WHERE idx > ?1 ORDER BY idx LIMIT ?2")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![after as i64, limit as i64], |r| {
                Ok(Queued {
                    index: r.get::<_, i64>(0)? as u64,
                    commit_timestamp: r.get(1)?,
                    events: r.get::<_, i64>(2)? as u64,
                    json: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// This node (the leader) delivered everything through `index` (`groups` groups). They are
    /// deleted, and the index recorded, with the applier's next write to the queue (a batch, or
    /// the high-water mark the leader proposes after a delivery): the sender never writes, so it
    /// never holds up the applier. Lost in a crash before that, it only means a resend.
    pub fn delivered(&self, index: u64, groups: u64) {
        if self.stats.delivered_index.fetch_max(index, Ordering::Relaxed) < index {
            let _ = self
                .stats
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(groups)));
        }
    }
}

/// One group in a snapshot's section: its index, commit time and event count (u64, i64, u64,
/// little-endian), the JSON's length (u64) and the JSON.
fn write_group(out: &mut dyn Write, q: &Queued) -> io::Result<()> {
    out.write_all(&q.index.to_le_bytes())?;
    out.write_all(&q.commit_timestamp.to_le_bytes())?;
    out.write_all(&q.events.to_le_bytes())?;
    out.write_all(&(q.json.len() as u64).to_le_bytes())?;
    out.write_all(q.json.as_bytes())
}

/// Read a group written by [`write_group`] from a section with `left` bytes left (counted down),
/// never allocating more than the section holds.
fn read_group(section: &mut dyn Read, left: &mut u64) -> io::Result<Queued> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, format!("CDC section of a snapshot: {m}"));
    if *left < 32 {
        return Err(bad(format!("{left} bytes left over")));
    }
    let mut head = [0u8; 32];
    section.read_exact(&mut head)?;
    *left -= 32;
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[i * 8..i * 8 + 8]);
        b
    };
    let json_len = u64::from_le_bytes(word(3));
    if json_len > *left {
        return Err(bad(format!("a group of {json_len} bytes with {left} left")));
    }
    let mut json = vec![0u8; json_len as usize];
    section.read_exact(&mut json)?;
    *left -= json_len;
    Ok(Queued {
        index: u64::from_le_bytes(word(0)),
        commit_timestamp: i64::from_le_bytes(word(1)),
        events: u64::from_le_bytes(word(2)),
        json: String::from_utf8(json).map_err(|e| bad(e.to_string()))?,
    })
}

/// Groups read from the queue for a snapshot's section go at most this many at a time, and, when
/// queued again from one, at most this many JSON bytes.
const SECTION_CHUNK: usize = 512;
const SECTION_CHUNK_BYTES: usize = 16 << 20;

/// What a queue row is made from: a group just captured, or one a snapshot carried.
trait Row {
    fn index(&self) -> u64;
    /// Commit time, event count, JSON.
    fn row(&self) -> (i64, u64, Cow<'_, str>);
}

impl Row for Group {
    fn index(&self) -> u64 {
        self.index
    }
    fn row(&self) -> (i64, u64, Cow<'_, str>) {
        (self.commit_timestamp, self.events.len() as u64, Cow::Owned(self.to_json()))
    }
}

impl Row for Queued {
    fn index(&self) -> u64 {
        self.index
    }
    fn row(&self) -> (i64, u64, Cow<'_, str>) {
        (self.commit_timestamp, self.events, Cow::Borrowed(&self.json))
    }
}

fn meta(c: &Connection, key: &str) -> rusqlite::Result<u64> {
    let v: Option<i64> = c.query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0)).optional()?;
    Ok(v.unwrap_or(0) as u64)
}

/// The queue's size, kept up to date as groups come and go.
struct Size {
    depth: u64,
    bytes: u64,
}

impl Size {
    fn add(&mut self, len: i64) {
        self.depth += 1;
        self.bytes += len.max(0) as u64;
    }

    fn remove(&mut self, len: i64) {
        self.depth = self.depth.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len.max(0) as u64);
    }
}

/// Delete every group at or below `index`.
fn delete_through(c: &Connection, index: u64, size: &mut Size) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached("DELETE FROM events WHERE idx <= ?1 RETURNING length(json)")?;
    let mut rows = st.query([index as i64])?;
    while let Some(r) = rows.next()? {
        size.remove(r.get(0)?);
    }
    Ok(())
}

#[cfg(test)]
fn totals(c: &Connection) -> rusqlite::Result<(u64, u64)> {
    c.query_row("SELECT count(*), coalesce(sum(length(json)), 0) FROM events", [], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::event::{Event, Op};

    fn group(index: u64, n: usize) -> Group {
        let e = Event {
            op: Op::Insert,
            table: "t".into(),
            old_row_id: None,
            new_row_id: Some(index as i64),
            before: None,
            after: None,
            columns: None,
        };
        Group { index, commit_timestamp: 1, events: vec![e; n] }
    }

    #[test]
    fn groups_survive_reopening_and_go_once_delivered_or_past_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdc/queue.sqlite");
        let q = Queue::open(&path, 1 << 20).unwrap();
        assert_eq!(q.captured(), None, "a new queue has nothing to compare");
        q.append(&[group(3, 2), group(4, 1)], None, 4).unwrap();
        // The same entry applied again after a crash replaces, it does not add.
        q.append(&[group(4, 1)], None, 4).unwrap();
        assert_eq!(q.stats.depth.load(Ordering::Relaxed), 2);
        assert_eq!(totals(&q.lock()).unwrap(), (2, q.stats.bytes.load(Ordering::Relaxed)));
        drop(q);
        let q = Queue::open(&path, 1 << 20).unwrap();
        let got: Vec<u64> = q.read_after(0, 10).unwrap().iter().map(|g| g.index).collect();
        assert_eq!(got, [3, 4]);
        q.delivered(3, 1);
        // Forgotten with the next write.
        assert_eq!(q.read_after(3, 10).unwrap().len(), 1);
        q.append(&[], None, 4).unwrap();
        assert_eq!(q.read_after(0, 10).unwrap().len(), 1);
        assert_eq!(q.stats.pending.load(Ordering::Relaxed), 1);
        // Nothing at or below the shared mark is kept, now or later.
        q.append(&[group(5, 1)], Some(4), 5).unwrap();
        assert_eq!(q.read_after(0, 10).unwrap().iter().map(|g| g.index).collect::<Vec<_>>(), [5]);
        q.append(&[group(4, 1)], None, 4).unwrap();
        assert_eq!(q.read_after(0, 10).unwrap().len(), 1);
        drop(q);
        let q = Queue::open(&path, 1 << 20).unwrap();
        assert_eq!((q.stats.high_water_mark.load(Ordering::Relaxed), q.done_through()), (4, 4));
        // How far it captured survives, batches without changes included.
        assert_eq!(q.captured(), Some(5));
        q.captured_to(9).unwrap();
        q.sync().unwrap();
        drop(q);
        assert_eq!(Queue::open(&path, 1 << 20).unwrap().captured(), Some(9));
    }

    /// A snapshot carries the undelivered groups it covers, and the node installing it queues
    /// them as if it had captured them itself.
    #[test]
    fn undelivered_groups_travel_in_a_section() {
        let dir = tempfile::tempdir().unwrap();
        let from = Queue::open(&dir.path().join("from.sqlite"), 1 << 20).unwrap();
        let groups: Vec<Group> = (3..=1200).map(|i| group(i, 1 + i as usize % 3)).collect();
        from.append(&groups, Some(4), 1200).unwrap();
        from.delivered(6, 2);
        let mut section = Vec::new();
        // Through 1100: past what was delivered (6), in chunks, not beyond the snapshot.
        assert_eq!(from.export(1100, &mut section).unwrap(), 1094);

        let to = Queue::open(&dir.path().join("to.sqlite"), 1 << 20).unwrap();
        // What the receiving node knows was delivered is not queued again.
        to.append(&[], Some(10), 0).unwrap();
        assert_eq!(to.import(&mut section.as_slice(), section.len() as u64).unwrap(), 1090);
        let got = to.read_after(0, 2000).unwrap();
        let want: Vec<Queued> = from.read_after(10, 2000).unwrap().into_iter().filter(|q| q.index <= 1100).collect();
        assert_eq!(got, want);
        assert_eq!(to.stats.depth.load(Ordering::Relaxed), 1090);
        assert_eq!(to.stats.pending.load(Ordering::Relaxed), 1090);
        assert_eq!(to.stats.groups_from_snapshots.load(Ordering::Relaxed), 1090);
        assert_eq!(totals(&to.lock()).unwrap(), (1090, to.stats.bytes.load(Ordering::Relaxed)));

        // A truncated or lying section is refused without allocating what it claims.
        let short = &section[..section.len() - 5];
        assert!(to.import(&mut &short[..], short.len() as u64).is_err());
        let mut lie = section[..32].to_vec();
        lie[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = to.import(&mut lie.as_slice(), 32).unwrap_err().to_string();
        assert!(e.contains("with 0 left"), "{e}");
    }

    #[test]
    fn the_first_undelivered_group_follows_deliveries_and_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("queue.sqlite"), 1 << 20).unwrap();
        assert_eq!(q.first_undelivered().unwrap(), None);
        q.append(&[group(3, 1), group(5, 1), group(9, 1)], None, 9).unwrap();
        assert_eq!(q.first_undelivered().unwrap(), Some(3));
        // Delivered by this node: still in the file until the next append, but not undelivered.
        q.delivered(5, 2);
        assert_eq!(q.first_undelivered().unwrap(), Some(9));
        // The shared mark, carried by a batch.
        q.append(&[], Some(9), 10).unwrap();
        assert_eq!(q.first_undelivered().unwrap(), None);
    }

    /// `captured` is kept in the rows while they hold it and in `meta` once they cannot: after a
    /// batch without changes, and once the queue empties. `delivered` is saved lazily.
    #[test]
    fn captured_survives_reopening_wherever_it_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.sqlite");
        let q = Queue::open(&path, 1 << 20).unwrap();
        q.append(&[group(3, 1)], None, 5).unwrap();
        drop(q);
        let q = Queue::open(&path, 1 << 20).unwrap();
        assert_eq!(q.captured(), Some(5), "held by the row");
        // A batch without changes while a row is still queued.
        q.append(&[], None, 8).unwrap();
        drop(q);
        let q = Queue::open(&path, 1 << 20).unwrap();
        assert_eq!(q.captured(), Some(8), "held by meta");
        q.delivered(3, 1);
        q.append(&[group(9, 1)], None, 9).unwrap();
        drop(q);
        let q = Queue::open(&path, 1 << 20).unwrap();
        assert_eq!(q.read_after(0, 10).unwrap().iter().map(|g| g.index).collect::<Vec<_>>(), [9]);
        assert_eq!(q.captured(), Some(9));
        // Delivered below SAVE_DELIVERED_EVERY and not yet saved: the group is read again, not lost.
        assert_eq!(q.done_through(), 0);
        q.delivered(9, 1);
        q.append(&[], None, 10).unwrap();
        assert_eq!(q.stats.depth.load(Ordering::Relaxed), 0);
        drop(q);
        let q = Queue::open(&path, 1 << 20).unwrap();
        assert_eq!((q.captured(), q.done_through()), (Some(10), 9), "emptied: both saved");
        assert!(q.read_after(0, 10).unwrap().is_empty());
    }

    #[test]
    fn a_queue_from_before_rows_carried_their_batch_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode=WAL;
                 CREATE TABLE events (idx INTEGER PRIMARY KEY, ts INTEGER NOT NULL, n INTEGER NOT NULL, json TEXT NOT NULL);
                 CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
                 INSERT INTO events VALUES (6, 1, 1, '{}');
                 INSERT INTO meta VALUES ('captured', 7);",
            )
            .unwrap();
        }
        let q = Queue::open(&path, 1 << 20).unwrap();
        assert_eq!(q.captured(), Some(7));
        q.append(&[group(8, 1)], None, 8).unwrap();
        drop(q);
        let q = Queue::open(&path, 1 << 20).unwrap();
        assert_eq!(q.captured(), Some(8));
        assert_eq!(q.read_after(0, 10).unwrap().iter().map(|g| g.index).collect::<Vec<_>>(), [6, 8]);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite"), 4096).unwrap();
        for i in 1..=200 {
            q.append(&[group(i, 1)], None, i).unwrap();
        }
        let bytes = q.stats.bytes.load(Ordering::Relaxed);
        assert!(bytes <= 4096, "{bytes}");
        // The running totals are the queue's.
        let real = totals(&q.lock()).unwrap();
        assert_eq!(real, (q.stats.depth.load(Ordering::Relaxed), bytes));
        let kept = q.read_after(0, 1000).unwrap();
        let dropped = q.stats.groups_dropped.load(Ordering::Relaxed);
        assert_eq!(dropped + kept.len() as u64, 200);
        assert_eq!(kept.first().unwrap().index, dropped + 1, "the oldest go first");
        assert_eq!(kept.last().unwrap().index, 200);
    }
}
