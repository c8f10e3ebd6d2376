//! The node's durable CDC queue: captured event groups waiting for delivery, in a SQLite file of
//! their own in the data directory (`cdc/queue.sqlite`), never replicated and never part of a
//! snapshot or backup. Every node keeps one, so a follower that becomes leader has what is still
//! to send (docs/DESIGN.md §9b).
//!
//! The applier appends a batch's groups *before* committing the batch, with `synchronous=FULL`:
//! once the database says an entry is applied, its events are on disk. A crash between the two
//! makes the entry apply again, which writes the same groups again under the same index (a
//! replace, not a duplicate). Groups at or below what this node knows was delivered (the shared
//! high-water mark, or its own deliveries as leader) are not kept.
//!
//! The queue is bounded by `max_queue_bytes` of event JSON: past it the oldest groups are dropped,
//! and each drop is counted and logged, so a long outage of the endpoint never stops writes.

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
    /// The delivered position shared through the log (high-water mark).
    pub high_water_mark: AtomicU64,
    /// What this node delivered itself, as leader.
    pub delivered_index: AtomicU64,
}

pub struct Queue {
    path: String,
    conn: Mutex<Connection>,
    max_bytes: u64,
    pub stats: QueueStats,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (idx INTEGER PRIMARY KEY, ts INTEGER NOT NULL, n INTEGER NOT NULL, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
";

impl Queue {
    pub fn open(path: &Path, max_bytes: u64) -> Result<Queue, QueueError> {
        let err = |source| QueueError { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let q =
            Queue { path: path.display().to_string(), conn: Mutex::new(conn), max_bytes, stats: QueueStats::default() };
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

    /// Queue a batch's groups and the high-water mark it carried, durably, in one transaction.
    pub fn append(&self, groups: &[Group], hwm: Option<u64>) -> Result<(), QueueError> {
        if groups.is_empty() && hwm.is_none_or(|h| h <= self.stats.high_water_mark.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let mut c = self.lock();
        let tx = c.transaction().map_err(|e| self.err(e))?;
        if let Some(h) = hwm.filter(|h| *h > self.stats.high_water_mark.load(Ordering::Relaxed)) {
            tx.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('hwm', ?1)", [h as i64]).map_err(|e| self.err(e))?;
        }
        let done = hwm.unwrap_or(0).max(self.done_through());
        let mut events = 0u64;
        {
            let mut ins = tx
                .prepare_cached("INSERT OR REPLACE INTO events (idx, ts, n, json) VALUES (?1, ?2, ?3, ?4)")
                .map_err(|e| self.err(e))?;
            for g in groups.iter().filter(|g| g.index > done) {
                ins.execute(params![g.index as i64, g.commit_timestamp, g.events.len() as i64, g.to_json()])
                    .map_err(|e| self.err(e))?;
                events += g.events.len() as u64;
            }
        }
        tx.execute("DELETE FROM events WHERE idx <= ?1", [done as i64]).map_err(|e| self.err(e))?;
        let dropped = self.trim(&tx).map_err(|e| self.err(e))?;
        let (depth, bytes) = totals(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        if let Some(h) = hwm {
            self.stats.high_water_mark.fetch_max(h, Ordering::Relaxed);
        }
        if let Some(last) = groups.last() {
            self.stats.captured_index.fetch_max(last.index, Ordering::Relaxed);
        }
        self.stats.events_captured.fetch_add(events, Ordering::Relaxed);
        self.stats.depth.store(depth, Ordering::Relaxed);
        self.stats.bytes.store(bytes, Ordering::Relaxed);
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
        Ok(())
    }

    /// Drop the oldest groups until the queue fits: (first, last, groups, events) dropped.
    fn trim(&self, c: &Connection) -> rusqlite::Result<Option<(u64, u64, u64, u64)>> {
        let (_, mut bytes) = totals(c)?;
        if bytes <= self.max_bytes {
            return Ok(None);
        }
        let mut cut: Option<(u64, u64, u64, u64)> = None;
        let mut st = c.prepare_cached("SELECT idx, n, length(json) FROM events ORDER BY idx")?;
        let mut rows = st.query([])?;
        while bytes > self.max_bytes {
            let Some(r) = rows.next()? else { break };
            let (idx, n, len): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            bytes = bytes.saturating_sub(len as u64);
            let c = cut.get_or_insert((idx as u64, idx as u64, 0, 0));
            c.1 = idx as u64;
            c.2 += 1;
            c.3 += n as u64;
        }
        drop(rows);
        if let Some((_, last, _, _)) = cut {
            c.execute("DELETE FROM events WHERE idx <= ?1", [last as i64])?;
        }
        Ok(cut)
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

    /// This node (the leader) delivered everything through `index`: forget it.
    pub fn delivered(&self, index: u64) -> Result<(), QueueError> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(|e| self.err(e))?;
        tx.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('delivered', ?1)", [index as i64])
            .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM events WHERE idx <= ?1", [index as i64]).map_err(|e| self.err(e))?;
        let (depth, bytes) = totals(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        self.stats.delivered_index.fetch_max(index, Ordering::Relaxed);
        self.stats.depth.store(depth, Ordering::Relaxed);
        self.stats.bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }
}

fn meta(c: &Connection, key: &str) -> rusqlite::Result<u64> {
    let v: Option<i64> = c.query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0)).optional()?;
    Ok(v.unwrap_or(0) as u64)
}

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
        q.append(&[group(3, 2), group(4, 1)], None).unwrap();
        // The same entry applied again after a crash replaces, it does not add.
        q.append(&[group(4, 1)], None).unwrap();
        assert_eq!(q.stats.depth.load(Ordering::Relaxed), 2);
        drop(q);
        let q = Queue::open(&path, 1 << 20).unwrap();
        let got: Vec<u64> = q.read_after(0, 10).unwrap().iter().map(|g| g.index).collect();
        assert_eq!(got, [3, 4]);
        q.delivered(3).unwrap();
        assert_eq!(q.read_after(0, 10).unwrap().len(), 1);
        // Nothing at or below the shared mark is kept, now or later.
        q.append(&[group(5, 1)], Some(4)).unwrap();
        assert_eq!(q.read_after(0, 10).unwrap().iter().map(|g| g.index).collect::<Vec<_>>(), [5]);
        q.append(&[group(4, 1)], None).unwrap();
        assert_eq!(q.read_after(0, 10).unwrap().len(), 1);
        drop(q);
        let q = Queue::open(&path, 1 << 20).unwrap();
        assert_eq!((q.stats.high_water_mark.load(Ordering::Relaxed), q.done_through()), (4, 4));
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite"), 4096).unwrap();
        for i in 1..=200 {
            q.append(&[group(i, 1)], None).unwrap();
        }
        let bytes = q.stats.bytes.load(Ordering::Relaxed);
        assert!(bytes <= 4096, "{bytes}");
        let kept = q.read_after(0, 1000).unwrap();
        let dropped = q.stats.groups_dropped.load(Ordering::Relaxed);
        assert_eq!(dropped + kept.len() as u64, 200);
        assert_eq!(kept.first().unwrap().index, dropped + 1, "the oldest go first");
        assert_eq!(kept.last().unwrap().index, 200);
    }
}
