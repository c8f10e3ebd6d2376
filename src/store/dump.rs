//! SQL text in and out: the `sqlite3 .dump`-style dump served by `/db/backup?fmt=sql`, the checks
//! and page-size preparation of a database image before it replaces the live one (`/db/load`,
//! `/boot`), and the stripping of a dump's own transaction statements before it is loaded inside
//! raftlite's transaction.

use std::io::Write;
use std::path::Path;

use rusqlite::Connection;

use crate::store::position::LEGACY_META_TABLE;

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Write a dump of `conn`'s user tables (all, or those named in `tables`) to `out`, in one read
/// transaction so that it is consistent.
pub fn dump(conn: &Connection, tables: Option<&[String]>, out: &mut dyn Write) -> Result<(), String> {
    let e = |e: rusqlite::Error| e.to_string();
    let w = |e: std::io::Error| e.to_string();
    conn.execute_batch("BEGIN").map_err(e)?;
    let r = (|| {
        writeln!(out, "PRAGMA foreign_keys=OFF;").map_err(w)?;
        writeln!(out, "BEGIN TRANSACTION;").map_err(w)?;
        let mut st = conn
            .prepare(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL \
                 AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
            )
            .map_err(e)?;
        let list: Vec<(String, String)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(e)?.collect::<Result<_, _>>().map_err(e)?;
        let wanted = |name: &str| tables.map(|t| t.iter().any(|x| x == name)).unwrap_or(true);
        for (name, sql) in list.iter().filter(|(n, _)| wanted(n)) {
            writeln!(out, "{sql};").map_err(w)?;
            let cols: Vec<String> = conn
                .prepare(&format!("PRAGMA table_info({})", quote_ident(name)))
                .map_err(e)?
                .query_map([], |r| r.get::<_, String>(1))
                .map_err(e)?
                .collect::<Result<_, _>>()
                .map_err(e)?;
            let exprs: Vec<String> = cols.iter().map(|c| format!("quote({})", quote_ident(c))).collect();
            let q = format!("SELECT {} FROM {}", exprs.join(" || ',' || "), quote_ident(name));
            let mut rows = conn.prepare(&q).map_err(e)?;
            let mut it = rows.query([]).map_err(e)?;
            while let Some(row) = it.next().map_err(e)? {
                let values: String = row.get(0).map_err(e)?;
                writeln!(out, "INSERT INTO {} VALUES({values});", quote_ident(name)).map_err(w)?;
            }
        }
        let has_seq: bool = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'", [], |r| r.get::<_, i64>(0))
            .map_err(e)?
            > 0;
        if has_seq && tables.is_none() {
            writeln!(out, "DELETE FROM sqlite_sequence;").map_err(w)?;
            let mut st = conn.prepare("SELECT quote(name) || ',' || quote(seq) FROM sqlite_sequence").map_err(e)?;
            let mut it = st.query([]).map_err(e)?;
            while let Some(row) = it.next().map_err(e)? {
                let v: String = row.get(0).map_err(e)?;
                writeln!(out, "INSERT INTO \"sqlite_sequence\" VALUES({v});").map_err(w)?;
            }
        }
        let mut st = conn
            .prepare(
                "SELECT sql, tbl_name FROM sqlite_master WHERE type IN ('index', 'trigger', 'view') \
                 AND sql IS NOT NULL ORDER BY rowid",
            )
            .map_err(e)?;
        let others: Vec<(String, String)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(e)?.collect::<Result<_, _>>().map_err(e)?;
        for (sql, table) in others.iter().filter(|(_, t)| wanted(t)) {
            let _ = table;
            writeln!(out, "{sql};").map_err(w)?;
        }
        writeln!(out, "COMMIT;").map_err(w)?;
        Ok(())
    })();
    let _ = conn.execute_batch("COMMIT");
    r
}

/// Remove a dump's own top-level `BEGIN`/`COMMIT`/`END`/`ROLLBACK` statements: the load runs
/// inside raftlite's own transaction.
pub fn strip_transaction_statements(sql: &str) -> String {
    crate::store::sql::split_statements(sql)
        .into_iter()
        .filter(|s| {
            let w = s.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("").to_ascii_uppercase();
            !matches!(w.as_str(), "BEGIN" | "COMMIT" | "END" | "ROLLBACK")
        })
        .collect::<Vec<_>>()
        .join(";\n")
}

/// True if `bytes` start like a SQLite database file.
pub fn is_sqlite_image(bytes: &[u8]) -> bool {
    bytes.starts_with(b"SQLite format 3\0")
}

/// Open a database image and run SQLite's quick integrity check on it.
pub fn check_image(path: &Path) -> Result<Connection, String> {
    let c = Connection::open(path).map_err(|e| format!("invalid SQLite data: {e}"))?;
    let check: String =
        c.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|e| format!("invalid SQLite data: {e}"))?;
    if check != "ok" {
        return Err(format!("invalid SQLite data: {check}"));
    }
    Ok(c)
}

/// Check a database image and make it ready to become the live database: integrity-checked, in
/// the live database's page size, in WAL mode, without the table where raftlite's previous format
/// kept its position (a backup taken from such a node may hold it).
pub fn prepare_image(path: &Path, page_size: i64) -> Result<(), String> {
    let c = check_image(path)?;
    let e = |e: rusqlite::Error| e.to_string();
    let current: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(e)?;
    if current != page_size {
        c.execute_batch(&format!("PRAGMA journal_mode=DELETE; PRAGMA page_size={page_size}; VACUUM;")).map_err(e)?;
    }
    c.execute_batch(&format!("DROP TABLE IF EXISTS {LEGACY_META_TABLE}; PRAGMA journal_mode=WAL;")).map_err(e)?;
    // Closing the only connection checkpoints and removes the WAL: the file stands alone.
    c.close().map_err(|(_, e)| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_and_reload() {
        let a = Connection::open_in_memory().unwrap();
        a.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT, b BLOB, r REAL);
             INSERT INTO t(v, b, r) VALUES('it''s', x'00ff', 1.5), (NULL, NULL, -2);
             CREATE INDEX tv ON t(v);",
        )
        .unwrap();
        let mut out = Vec::new();
        dump(&a, None, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCREATE TABLE t"));
        assert!(text.contains("INSERT INTO \"t\" VALUES(1,'it''s',X'00FF',1.5);"), "{text}");
        assert!(text.trim_end().ends_with("COMMIT;"));
        let b = Connection::open_in_memory().unwrap();
        b.execute_batch(&text).unwrap();
        let n: i64 = b.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
        let stripped = strip_transaction_statements(&text);
        assert!(!stripped.contains("BEGIN TRANSACTION") && !stripped.contains("COMMIT"));
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(&stripped).unwrap();
    }
}
