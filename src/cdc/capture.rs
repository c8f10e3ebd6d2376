//! Capturing row changes as the applier makes them (SQLite's pre-update hook on the writer
//! connection, `cdc::hook`). The hook sees every row a statement changes before the change is made, and
//! nothing tells it when SQLite later undoes one (a failed statement, a rolled-back client
//! transaction, an interrupted batch). So the applier marks where each statement and each client
//! transaction starts and drops what was captured past the mark when it is undone
//! (`store::db`), and starts over with each pass of a batch (`store::apply`): what remains at
//! COMMIT is exactly what commits.
//!
//! Column names are not available inside the hook (it may not run SQL), so they are looked up
//! once the statement has finished, while the schema is still the one it ran under; they are
//! cached until the schema changes (`PRAGMA schema_version`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

use crate::cdc::event::{Event, Group};

/// What the hook keeps: the changes of the batch being applied.
#[derive(Default)]
struct Pending {
    /// The log entry whose statements run now, and its commit timestamp (Unix ns).
    index: u64,
    ts_ns: i64,
    events: Vec<(u64, i64, Event)>,
    /// `events[..named]` have their column names.
    named: usize,
    columns: HashMap<String, Arc<[String]>>,
    schema_version: Option<i64>,
}

pub struct Capture {
    pending: Mutex<Pending>,
    row_ids_only: bool,
    filter: Option<regex::Regex>,
}

impl Capture {
    pub fn new(row_ids_only: bool, filter: Option<regex::Regex>) -> Capture {
        Capture { pending: Mutex::new(Pending::default()), row_ids_only, filter }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves plain data behind; the batch is re-run anyway.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Install the hook on the writer connection.
    pub fn install(self: &Arc<Self>, conn: &Connection) {
        crate::cdc::hook::install(conn, self);
    }

    /// Whether changes to `table` of database `db` are captured: only the user's tables (not
    /// `temp`, not SQLite's own such as sqlite_sequence or the sqlite_stat1 `PRAGMA optimize`
    /// writes, not VACUUM's scratch database), through `table_filter`.
    pub fn wanted(&self, db: &str, table: &str) -> bool {
        db == "main" && !table.starts_with("sqlite_") && self.filter.as_ref().is_none_or(|re| re.is_match(table))
    }

    /// Whether events carry column values (not `row_ids_only`).
    pub fn wants_values(&self) -> bool {
        !self.row_ids_only
    }

    /// Called by the hook for each row about to change.
    pub fn record(&self, event: Event) {
        let mut p = self.lock();
        let (index, ts) = (p.index, p.ts_ns);
        p.events.push((index, ts, event));
    }

    /// The statements of log entry `index` (proposed at `ts_ns`) run next.
    pub fn begin_entry(&self, index: u64, ts_ns: i64) {
        let mut p = self.lock();
        p.index = index;
        p.ts_ns = ts_ns;
    }

    /// Where the capture stands, to undo back to.
    pub fn mark(&self) -> usize {
        self.lock().events.len()
    }

    /// SQLite undid everything since `mark`.
    pub fn undo_to(&self, mark: usize) {
        let mut p = self.lock();
        p.events.truncate(mark);
        p.named = p.named.min(mark);
    }

    /// Forget the batch (it is run again, or it failed).
    pub fn reset(&self) {
        self.undo_to(0);
    }

    /// Name the columns of what the statement that just finished captured. `conn` runs
    /// raftlite's own SQL (the caller has the authorizer off).
    pub fn statement_done(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut p = self.lock();
        if p.named == p.events.len() {
            return Ok(());
        }
        if !self.row_ids_only {
            let version: i64 = conn.prepare_cached("PRAGMA schema_version")?.query_row([], |r| r.get(0))?;
            if p.schema_version != Some(version) {
                p.columns.clear();
                p.schema_version = Some(version);
            }
            let Pending { events, named, columns, .. } = &mut *p;
            for (_, _, e) in &mut events[*named..] {
                if let Some(c) = columns.get(&e.table) {
                    e.columns = Some(c.clone());
                    continue;
                }
                let names = column_names(conn, &e.table)?;
                columns.insert(e.table.clone(), names.clone());
                e.columns = Some(names);
            }
        }
        p.named = p.events.len();
        Ok(())
    }

    /// What the batch captured, one group per log index, in order; the capture is empty after.
    pub fn take(&self) -> Vec<Group> {
        let mut p = self.lock();
        p.named = 0;
        let mut groups: Vec<Group> = Vec::new();
        for (index, ts, e) in p.events.drain(..) {
            match groups.last_mut() {
                Some(g) if g.index == index => g.events.push(e),
                _ => groups.push(Group { index, commit_timestamp: ts, events: vec![e] }),
            }
        }
        groups
    }
}

/// A table's columns in the order the pre-update hook numbers them (hidden and generated columns
/// included).
fn column_names(conn: &Connection, table: &str) -> rusqlite::Result<Arc<[String]>> {
    let mut st = conn.prepare_cached("SELECT name FROM pragma_table_xinfo(?1, 'main') ORDER BY cid")?;
    let names = st.query_map([table], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names.into())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value as J};

    use crate::cdc::config::CdcConfig;
    use crate::cdc::Cdc;
    use crate::raft::Entry;
    use crate::store::apply::{apply_entries, Applied, ApplierStats};
    use crate::store::command::{Command, ExecOptions, Statement};

    fn entry(index: u64, stmts: &[&str], transaction: bool) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(Command::Execute {
                stmts: stmts.iter().map(|s| Statement::new(*s)).collect(),
                opts: ExecOptions { transaction, proposed_at_ms: 1000 + index as i64, ..ExecOptions::default() },
                seed: 1,
            }),
        }
    }

    /// Apply `entries` to a fresh database with CDC on, and return what was queued.
    fn captured(config: CdcConfig, entries: Vec<Entry>) -> Vec<J> {
        let dir = tempfile::tempdir().unwrap();
        let cdc = Cdc::open(config, dir.path()).unwrap();
        let (mut c, hooks) = crate::store::db::open_writer(&dir.path().join("db.sqlite"), &Default::default()).unwrap();
        cdc.capture.install(&c);
        let hooks = hooks.with_cdc(cdc.clone());
        let (stats, mut at) = (ApplierStats::default(), Applied::default());
        apply_entries(&mut c, &hooks, entries, &stats, &mut at).unwrap();
        let queued = cdc.queue.read_after(0, 1000).unwrap();
        queued.iter().map(|q| serde_json::from_str(&q.json).unwrap()).collect()
    }

    fn ops(groups: &[J]) -> Vec<(u64, String, String)> {
        let mut out = Vec::new();
        for g in groups {
            for e in g["events"].as_array().unwrap() {
                let row = if e["after"].is_null() { &e["before"] } else { &e["after"] };
                out.push((g["index"].as_u64().unwrap(), e["op"].as_str().unwrap().to_string(), row.to_string()));
            }
        }
        out
    }

    #[test]
    fn what_commits_is_captured_and_what_is_undone_is_not() {
        let groups = captured(
            CdcConfig::default(),
            vec![
                entry(1, &["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "CREATE TABLE u (x UNIQUE)"], false),
                entry(2, &["INSERT INTO t (v) VALUES ('a'), ('b')", "UPDATE t SET v = 'c' WHERE id = 2"], false),
                // A failing statement undoes its own rows; a client transaction undoes them all.
                entry(3, &["INSERT INTO u VALUES (1)", "INSERT INTO u VALUES (2), (1)"], false),
                entry(4, &["INSERT INTO t (v) VALUES ('gone')", "INSERT INTO nope VALUES (1)"], true),
                // OR FAIL keeps the rows made before the error.
                entry(5, &["INSERT OR FAIL INTO u VALUES (3), (1)", "DELETE FROM t WHERE id = 1"], false),
                // Column names follow the schema as it was when the statement ran.
                entry(6, &["ALTER TABLE t ADD COLUMN w", "UPDATE t SET w = 9"], false),
            ],
        );
        let got = ops(&groups);
        let want: Vec<(u64, &str, J)> = vec![
            (2, "INSERT", json!({"id": 1, "v": "a"})),
            (2, "INSERT", json!({"id": 2, "v": "b"})),
            (2, "UPDATE", json!({"id": 2, "v": "c"})),
            (3, "INSERT", json!({"x": 1})),
            (5, "INSERT", json!({"x": 3})),
            (5, "DELETE", json!({"id": 1, "v": "a"})),
            (6, "UPDATE", json!({"id": 2, "v": "c", "w": 9})),
        ];
        let want: Vec<(u64, String, String)> = want.into_iter().map(|(i, o, r)| (i, o.into(), r.to_string())).collect();
        assert_eq!(got, want);
        let update = &groups[0]["events"][2];
        assert_eq!((update["old_row_id"].as_i64(), update["new_row_id"].as_i64()), (Some(2), Some(2)));
        assert_eq!(update["before"], json!({"id": 2, "v": "b"}));
        assert_eq!(groups[0]["commit_timestamp"], 1002 * 1_000_000);
    }

    #[test]
    fn filters_and_row_ids_only() {
        let config = CdcConfig {
            row_ids_only: true,
            table_filter: Some(regex::Regex::new("^keep").unwrap()),
            ..CdcConfig::default()
        };
        let groups = captured(
            config,
            vec![
                entry(
                    1,
                    &["CREATE TABLE keep_me (id INTEGER PRIMARY KEY AUTOINCREMENT, v)", "CREATE TABLE other (v)"],
                    false,
                ),
                entry(2, &["INSERT INTO keep_me (v) VALUES (1)", "INSERT INTO other VALUES (1)"], false),
            ],
        );
        // Only the filtered table; not sqlite_sequence (AUTOINCREMENT); no values.
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0]["events"], json!([{"op": "INSERT", "table": "keep_me", "new_row_id": 1}]));
    }
}
