//! Damaged files (docs/DESIGN.md §5, invariant 5): a torn tail of the log is dropped at start
//! and the node comes up with every acknowledged write; a record damaged in the middle of the log,
//! or a database SQLite cannot read, refuses to start with a message naming the file and what to
//! do; damage found while running stops the node with the same advice instead of limping on.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

/// A node with `rows` acknowledged inserts, killed (SIGKILL) afterwards.
fn node_with_rows(dir: &std::path::Path, rows: i64) -> Node {
    let mut n = Node::start(&dir.join("data"), &[]);
    assert_eq!(n.execute(json!(["CREATE TABLE t (v INTEGER NOT NULL)"])).status, 200);
    for v in 0..rows {
        assert_eq!(n.execute(json!([["INSERT INTO t VALUES(?)", v]])).status, 200);
    }
    n.kill();
    n
}

/// Start `n` and expect it to refuse: returns its log.
fn refused_start(n: &mut Node) -> String {
    n.spawn();
    let st = wait_for("the node to refuse to start", Duration::from_secs(30), || n.exit_status());
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(!st.success(), "the node started on damaged data: {log}");
    log
}

#[test]
fn a_torn_log_tail_is_dropped_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = node_with_rows(dir.path(), 20);
    // A frame half written when the power went: garbage after the last complete frame.
    let wal = n.dir.join("raft").join("log.sqlite-wal");
    let mut f = std::fs::OpenOptions::new().append(true).open(&wal).expect("log WAL");
    f.write_all(&[0xA5; 3000]).expect("append garbage");
    drop(f);
    n.spawn();
    n.wait_ready();
    assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([20])]);
    assert_eq!(n.execute(json!([["INSERT INTO t VALUES(99)"]])).status, 200);
}

#[test]
fn a_damaged_log_record_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = node_with_rows(dir.path(), 10);
    let log = n.dir.join("raft").join("log.sqlite");
    let c = rusqlite::Connection::open(&log).expect("open log");
    let changed = c.execute("UPDATE log SET entry = zeroblob(length(entry)) WHERE idx = 5", []).expect("damage");
    assert_eq!(changed, 1);
    drop(c);
    let out = refused_start(&mut n);
    assert!(out.contains(&format!("{}: entry 5 fails its checksum", log.display())), "{out}");
    assert!(out.contains("Wipe this node's data directory and rejoin it to the cluster"), "{out}");
}

#[test]
fn an_unreadable_database_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = node_with_rows(dir.path(), 10);
    let db = n.dir.join("db.sqlite");
    // Fold the WAL into the file, then overwrite the file's header.
    let c = rusqlite::Connection::open(&db).expect("open db");
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).expect("checkpoint");
    drop(c);
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).expect("db");
    f.write_all(b"this is not an sqlite file, sorry").expect("damage");
    drop(f);
    let out = refused_start(&mut n);
    assert!(out.contains(&format!("{}: ", db.display())), "{out}");
    assert!(out.contains("the database is damaged"), "{out}");
    assert!(out.contains("Wipe this node's data directory and rejoin it to the cluster"), "{out}");
}

#[test]
fn damage_found_while_running_stops_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = node_with_rows(dir.path(), 200);
    let db = n.dir.join("db.sqlite");
    let c = rusqlite::Connection::open(&db).expect("open db");
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).expect("checkpoint");
    let root: i64 = c.query_row("SELECT rootpage FROM sqlite_schema WHERE name = 't'", [], |r| r.get(0)).expect("t");
    drop(c);
    // Garbage over table t's root page: the file opens, the table cannot be read.
    let f = std::fs::OpenOptions::new().write(true).open(&db).expect("db");
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xEE; 4096], (root as u64 - 1) * 4096).expect("damage");
    drop(f);
    n.spawn();
    n.wait_ready();
    let r = n.execute(json!([["INSERT INTO t VALUES(1000)"]]));
    assert_ne!(r.status, 200, "a write into a damaged table was acknowledged: {}", r.body);
    let st = wait_for("the node to stop", Duration::from_secs(30), || n.exit_status());
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert_eq!(st.code(), Some(70), "{log}");
    assert!(log.contains("FATAL: this node's data is damaged"), "{log}");
}
