//! Snapshots and log compaction through real processes: the log stays bounded, a node that joins
//! after compaction installs exactly one snapshot, a node killed while installing recovers, and a
//! long reader delays a compaction without holding writes behind it.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn log_stays_bounded_across_50k_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("data"), &["-raft-snap", "100", "-raft-snap-int", "100ms"]);
    n.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]));
    let mut max_entries = 0u64;
    let mut log_sizes = Vec::new();
    // 50,000 inserted rows: 2,500 requests (log entries) of 20 statements.
    for round in 0..2500 {
        let stmts: Vec<Value> =
            (0..20).map(|i| json!(["INSERT INTO t(v) VALUES(?)", format!("r{round}-{i}")])).collect();
        let r = n.execute(Value::Array(stmts));
        assert_eq!(r.status, 200);
        if round % 250 == 249 {
            let raft = &n.status()["store"]["raft"];
            let live = raft["last_log_index"].as_u64().unwrap_or(0) - raft["purged_index"].as_u64().unwrap_or(0);
            max_entries = max_entries.max(live);
            log_sizes.push(raft["log_size"].as_u64().unwrap_or(0));
        }
    }
    assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([50000])]);
    let st = n.status();
    println!(
        "entries kept in the log at most {max_entries}; log file sizes {log_sizes:?}; {} snapshots",
        st["store"]["num_snapshots"]
    );
    // -raft-snap 100 with a quarter kept after each compaction: never far above 125 entries.
    assert!(max_entries <= 200, "log holds {max_entries} entries");
    // 2,500 entries through a log that never held more than 200 took at least 2,500 / 200
    // compactions (how many more depends on how fast the writes came: one check per 100 ms).
    assert!(st["store"]["num_snapshots"].as_u64().unwrap_or(0) >= 2500 / 200);
    // The log file does not grow with the number of writes.
    let (first, last) = (log_sizes[1], *log_sizes.last().unwrap_or(&0));
    assert!(last <= first * 2 + (1 << 20), "log file grew from {first} to {last} bytes");
}

#[test]
fn node_joining_after_compaction_installs_one_snapshot() {
    let c = Cluster::start(3, &["-raft-snap", "50", "-raft-snap-int", "100ms"]);
    let l = c.wait_leader();
    l.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"]));
    for i in 0..300 {
        assert_eq!(l.execute(json!([["INSERT INTO t(v) VALUES(randomblob(?))", 1000 + i]])).status, 200);
    }
    wait_for("compaction", Duration::from_secs(30), || {
        (l.status()["store"]["raft"]["purged_index"].as_u64()? > 100).then_some(())
    });
    let mut n4 = Node::new(
        "4",
        &c.dir().join("n4"),
        "127.0.0.14",
        &["-raft-snap", "50", "-raft-snap-int", "100ms", "-join", &l.raft],
    );
    n4.spawn();
    n4.wait_ready();
    wait_count(&n4, 300);
    let st = n4.status();
    assert_eq!(st["store"]["num_restores"], 1, "{}", st["store"]);
    assert_eq!(st["store"]["num_restores_failed"], 0);
    // Its copy is identical to the leader's.
    let digest = "SELECT COUNT(*), SUM(length(v)), SUM(id) FROM t";
    assert_eq!(n4.local_rows(digest), l.local_rows(digest));
    // And it follows new writes.
    l.execute(json!(["INSERT INTO t(v) VALUES(x'00')"]));
    wait_count(&n4, 301);
}

#[test]
fn node_killed_while_installing_a_snapshot_recovers() {
    let c = Cluster::start(3, &["-raft-snap", "20", "-raft-snap-int", "100ms"]);
    let l = c.wait_leader();
    l.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"]));
    // About 40 MB, so that a snapshot takes a moment to stream.
    for _ in 0..40 {
        let r = l.execute(json!([
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000) INSERT INTO t(v) SELECT zeroblob(1000) || x FROM c"
        ]));
        assert_eq!(r.status, 200);
    }
    wait_for("compaction", Duration::from_secs(30), || {
        (l.status()["store"]["raft"]["purged_index"].as_u64()? > 10).then_some(())
    });
    let dir = c.dir().join("n4");
    let mut n4 = Node::new("4", &dir, "127.0.0.14", &["-join", &l.raft]);
    n4.spawn();
    // Kill it as soon as a snapshot starts arriving (or, if it was too quick, right after).
    let snaps = dir.join("snapshots");
    let caught = wait_for("a snapshot to start arriving", Duration::from_secs(30), || {
        let incoming =
            std::fs::read_dir(&snaps).ok()?.flatten().any(|e| e.file_name().to_string_lossy().starts_with("incoming-"));
        if incoming {
            return Some(true);
        }
        (count(&n4) == Some(40_000)).then_some(false)
    });
    n4.kill();
    println!("killed {} the snapshot install", if caught { "during" } else { "after" });
    n4.spawn();
    n4.wait_ready();
    wait_count(&n4, 40_000);
    let digest = "SELECT COUNT(*), SUM(length(v)) FROM t";
    assert_eq!(n4.local_rows(digest), l.local_rows(digest));
    // No temp files are left behind.
    wait_for("temp files removed", Duration::from_secs(10), || {
        let left = std::fs::read_dir(&snaps)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        (left == 0).then_some(())
    });
}

#[test]
fn a_large_wal_triggers_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(
        &dir.path().join("data"),
        &["-raft-snap", "1000000", "-raft-snap-int", "100ms", "-raft-snap-wal-size", "200000"],
    );
    n.execute(json!(["CREATE TABLE t (v BLOB)"]));
    assert_eq!(n.status()["store"]["num_snapshots"], 0);
    n.execute(json!(["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 500) INSERT INTO t SELECT zeroblob(1000) FROM c"]));
    wait_for("a snapshot for the WAL size", Duration::from_secs(30), || {
        (n.status()["store"]["num_snapshots"].as_u64()? >= 1).then_some(())
    });
}

/// A reader on an old snapshot of the database (here another process's read transaction, as a
/// long query or a backup's copy would hold) keeps the compaction's checkpoint from finishing.
/// The checkpoint gives up after a short wait and is tried again, so writes go on meanwhile;
/// once the reader ends, the compaction completes and records its position.
#[test]
fn a_long_reader_delays_compaction_without_holding_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("data"), &[]);
    n.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]));
    for i in 0..20 {
        assert_eq!(n.execute(json!([["INSERT INTO t(v) VALUES(?)", format!("before {i}")]])).status, 200);
    }
    let reader =
        rusqlite::Connection::open_with_flags(n.dir.join("db.sqlite"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database read-only");
    reader.execute_batch("BEGIN").expect("begin");
    let seen: i64 = reader.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).expect("read");
    assert_eq!(seen, 20);
    // Newer frames than the reader's snapshot: the checkpoint must wait for it to copy them.
    assert_eq!(n.execute(json!([["INSERT INTO t(v) VALUES(?)", "after the reader began"]])).status, 200);
    let url = n.url("/snapshot");
    let snapshot = std::thread::spawn(move || {
        let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(90)).build().expect("client");
        c.post(url).send().map(|r| r.status().as_u16()).map_err(|e| e.to_string())
    });
    wait_for("the checkpoint tried again", Duration::from_secs(30), || {
        (n.metric("raftlite_checkpoint_retries_total") >= 2.0).then_some(())
    });
    // The applier is free between tries: writes keep their usual pace, far below the 5 s a
    // checkpoint waiting for the reader used to hold them.
    for i in 0..20 {
        let started = std::time::Instant::now();
        assert_eq!(n.execute(json!([["INSERT INTO t(v) VALUES(?)", format!("during {i}")]])).status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a write waited {:?} behind the checkpoint",
            started.elapsed()
        );
    }
    assert!(
        n.dir.join("snapshots").join("checkpointing.json").exists(),
        "the marker stays until a checkpoint completes"
    );
    reader.execute_batch("COMMIT").expect("end the read");
    drop(reader);
    assert_eq!(snapshot.join().expect("thread"), Ok(200));
    assert!(!n.dir.join("snapshots").join("checkpointing.json").exists());
    assert_eq!(n.metric("raftlite_raft_rebuilds_total"), 0.0, "the snapshot never failed");
    assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([41])]);
}
