//! Behaviour rqlite's users and tools depend on: what logs look like, which flags are honoured
//! and which refuse to start, what `/status` reports (docs/API.md).

mod common;

use std::time::Duration;

use common::*;

/// A two-node cluster with non-numeric ids; the follower is killed so that the leader's openraft
/// logs replication errors naming it. The leader's log, written to a file, has no colour codes and
/// names the follower "node-b", never by the number openraft uses for it.
#[test]
fn logs_to_a_file_are_plain_and_name_nodes_by_their_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = Node::new("node-a", &dir.path().join("a"), "127.0.0.21", &[]);
    a.spawn();
    a.wait_ready();
    let mut b = Node::new("node-b", &dir.path().join("b"), "127.0.0.22", &["-join", &a.raft]);
    b.spawn();
    b.wait_ready();
    assert_eq!(a.execute(json!(["CREATE TABLE t (v)"])).status, 200);
    b.kill();
    let hashed = raftlite::raft::numeric_id("node-b").to_string();
    // With the follower gone, openraft on the leader logs replication errors about it.
    let log = wait_for("the leader to log about node-b", Duration::from_secs(20), || {
        let log = std::fs::read_to_string(&a.log).ok()?;
        log.lines().any(|l| l.contains("openraft") && l.contains("node-b")).then_some(log)
    });
    assert!(!log.contains('\u{1b}'), "colour codes in a log file:\n{log}");
    assert!(!log.contains(&hashed), "the log names node-b by openraft's number {hashed}:\n{log}");
    assert!(log.contains("leader changed leader=node-a"), "{log}");
    a.kill();
}

/// `-raft-reap-node-timeout`: the leader removes a voter that has not answered for that long.
/// `-raft-remove-shutdown`: a node removed from the cluster stops on its own, cleanly.
#[test]
fn unreachable_nodes_are_reaped_and_removed_nodes_shut_down() {
    let mut c = Cluster::start(3, &["-raft-reap-node-timeout", "2s", "-raft-remove-shutdown"]);
    let l = c.wait_leader().id.clone();
    let gone = c.follower().id.clone();
    c.node_mut(&gone).kill();
    c.wait_voters(2);
    let st = c.node(&l).status();
    assert_eq!(st["cluster"]["num_reaped"], 1, "{}", st["cluster"]);
    // The remaining follower is removed through the API: it exits by itself, with status 0.
    let f = c.follower().id.clone();
    let r = c.node(&l).delete("/remove", &format!(r#"{{"id":"{f}"}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let n = c.node_mut(&f);
    let status = wait_for("the removed node to exit", Duration::from_secs(30), || n.exit_status());
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(log.contains("removed from the cluster; shutting down"), "{log}");
}

/// A data directory written before raftlite kept its position outside the user's database
/// (`tests/fixtures/format0-single-node.tar.gz`: a single node, id "1", killed with 30 rows in
/// `people`, its last snapshot at index 27 and entries up to 32 applied, partly in the WAL) starts
/// on this version: the rows are all there once, `_raftlite_meta` is gone from the schema, and the
/// node takes writes and restarts (docs/DESIGN.md §6, migration).
#[test]
fn a_data_directory_of_the_previous_format_is_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format0-single-node.tar.gz");
    let st = std::process::Command::new("tar").arg("xzf").arg(fixture).current_dir(dir.path()).status().expect("tar");
    assert!(st.success());
    let mut n = Node::new("1", &dir.path().join("data"), "127.0.0.1", &[]);
    n.spawn();
    n.wait_ready();
    let schema = |n: &Node| n.rows("SELECT name FROM sqlite_master ORDER BY name");
    assert_eq!(n.rows("SELECT COUNT(*), COUNT(DISTINCT name) FROM people"), vec![json!([30, 30])]);
    assert_eq!(schema(&n), vec![json!(["people"])]);
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(log.contains("migrated the database"), "{log}");
    assert_eq!(n.execute(json!([["INSERT INTO people(name) VALUES(?)", "new"]])).status, 200);
    n.kill();
    n.spawn();
    n.wait_ready();
    assert_eq!(n.rows("SELECT COUNT(*) FROM people"), vec![json!([31])]);
    assert_eq!(schema(&n), vec![json!(["people"])]);
    let store = n.status()["store"]["snapshot_store"].clone();
    assert_eq!(store["snapshots"].as_array().map(Vec::len), Some(1), "{store}");
    assert!(store["dir_size"].as_u64().is_some() && store["dir"].is_string(), "{store}");
    n.kill();
}

/// The user's database holds only the user's objects: the schema, a binary backup and a "drop
/// every table" teardown see nothing of raftlite's.
#[test]
fn the_users_database_holds_only_the_users_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("d"), &[]);
    assert_eq!(n.execute(json!(["CREATE TABLE a (x)", "CREATE TABLE b (y)", "INSERT INTO a VALUES (1)"])).status, 200);
    assert_eq!(n.rows("SELECT name FROM sqlite_master ORDER BY name"), vec![json!(["a"]), json!(["b"])]);
    let backup = reqwest::blocking::get(n.url("/db/backup")).and_then(|r| r.bytes()).expect("backup");
    let file = dir.path().join("backup.sqlite");
    std::fs::write(&file, &backup).expect("write backup");
    let c = rusqlite::Connection::open(&file).expect("open the backup");
    let mut st = c.prepare("SELECT name FROM sqlite_master ORDER BY name").expect("prepare");
    let in_backup: Vec<String> = st.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect();
    assert_eq!(in_backup, vec!["a".to_string(), "b".to_string()]);
    // Drop every table, as test teardowns do.
    let names: Vec<String> = n
        .rows("SELECT name FROM sqlite_master WHERE type = 'table'")
        .iter()
        .filter_map(|r| r[0].as_str().map(String::from))
        .collect();
    let drops: Vec<String> = names.iter().map(|t| format!("DROP TABLE {t}")).collect();
    let r = n.execute(json!(drops));
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("error"), "{}", r.body);
    assert_eq!(n.rows("SELECT COUNT(*) FROM sqlite_master"), vec![json!([0])]);
}

/// After a `peers.json` recovery in which every node moved to new Raft and HTTP addresses and the
/// file gives no `api_addr` (as rqlite writes it), a follower forwards to the leader's new HTTP
/// address, learned from the leader over its Raft address, and redirects there with `redirect`.
#[test]
fn after_recovery_followers_forward_to_the_leaders_new_address() {
    let mut c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"])).status, 200);
    for n in &c.nodes {
        wait_count(n, 1);
    }
    c.move_with_peers_json(60, false);
    let leader_http = c.wait_leader().http.clone();
    let f = c.follower();
    let r = f.execute(json!(["INSERT INTO t VALUES(2)"]));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = f.get("/db/query?q=SELECT%201&redirect");
    assert_eq!(r.status, 301, "{}", r.body);
    let to = r.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(to.starts_with(&format!("http://{leader_http}/")), "{to}");
}

/// `-compress-snap-transport`: a follower that can only catch up by snapshot gets it, and the
/// leader put fewer bytes on the wire than the snapshot holds.
#[test]
fn snapshots_travel_compressed() {
    let mut c = Cluster::start(3, &["-raft-snap", "20", "-raft-snap-int", "200ms", "-compress-snap-transport"]);
    let l = c.wait_leader().id.clone();
    assert_eq!(c.node(&l).execute(json!(["CREATE TABLE t (v INTEGER, pad TEXT)"])).status, 200);
    let f = c.follower().id.clone();
    c.node_mut(&f).kill();
    for v in 0..100 {
        let r = c.node(&l).execute(json!([["INSERT INTO t VALUES(?, ?)", v, "compressible ".repeat(40)]]));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_for("the leader to compact its log", Duration::from_secs(30), || {
        (c.node(&l).status()["store"]["num_snapshots"].as_u64()? > 0).then_some(())
    });
    c.node_mut(&f).spawn();
    wait_count(c.node(&f), 100);
    let (raw, wire) = (
        c.node(&l).metric("raftlite_snapshot_sent_bytes_total"),
        c.node(&l).metric("raftlite_snapshot_sent_wire_bytes_total"),
    );
    assert!(raw > 0.0, "no snapshot was sent");
    assert!(wire < raw / 2.0, "sent {raw} bytes as {wire} on the wire");
    assert!(c.node(&f).status()["store"]["num_restores"].as_u64().unwrap_or(0) >= 1);
}

/// `-auto-vacuum-int` and `-auto-optimize-int`: the leader proposes `VACUUM` and
/// `PRAGMA optimize` through the log, so every node reclaims its free pages and ends up with the
/// same statistics.
#[test]
fn upkeep_runs_on_every_node_alike() {
    let c = Cluster::start(3, &["-auto-vacuum-int", "1s", "-auto-optimize-int", "1s"]);
    let l = c.wait_leader();
    let fill = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 2000) \
                INSERT INTO t SELECT x, zeroblob(500) FROM c";
    let r = l.execute(json!(["CREATE TABLE t (v INTEGER, pad BLOB)", "CREATE INDEX tv ON t(v)", fill]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(l.execute(json!(["DELETE FROM t WHERE v % 2 = 0"])).status, 200);
    for n in &c.nodes {
        wait_for(&format!("node {} to vacuum and analyse", n.id), Duration::from_secs(30), || {
            let free = n.local_rows("PRAGMA freelist_count")?.first()?.get(0)?.as_i64()?;
            let stats = n.local_rows("SELECT stat FROM sqlite_stat1 WHERE tbl = 't'")?;
            (free == 0 && !stats.is_empty()).then_some(())
        });
    }
    let stats: Vec<_> =
        c.nodes.iter().map(|n| n.local_rows("SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY 1, 2")).collect();
    assert!(stats.windows(2).all(|w| w[0] == w[1]), "{stats:?}");
}

/// A flag raftlite cannot honour makes the node refuse to start, naming the flag (a warning would
/// let a deployment that copied rqlite's flags run without what it asked for). Left at its
/// default, as rqlite's sample command lines spell flags out, it is accepted, as is
/// `-raft-commit-timeout`, which openraft honours by sending each commit at once.
#[test]
fn flags_that_cannot_be_honoured_refuse_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = env!("CARGO_BIN_EXE_raftlited");
    for (flag, value) in [
        ("-otlp-endpoint", "127.0.0.1:4317"),
        ("-otlp-insecure", "true"),
        ("-cpu-profile", "cpu.prof"),
        ("-mem-profile", "mem.prof"),
        ("-trace-profile", "trace.out"),
        ("-raft-leader-lease-timeout", "500ms"),
        ("-disco-mode", "consul-kv"),
    ] {
        let arg = format!("{flag}={value}");
        let out = std::process::Command::new(bin)
            .args([arg.as_str(), &dir.path().join("d").display().to_string()])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {err}");
        assert!(err.contains(&format!("{flag} is not supported")), "{arg}: {err}");
    }
    assert!(!dir.path().join("d").exists(), "a refused start must not create the data directory");
    let n = Node::start(
        &dir.path().join("ok"),
        &["-raft-leader-lease-timeout", "0s", "-otlp-interval", "30s", "-raft-commit-timeout", "10ms"],
    );
    assert_eq!(n.execute(json!(["CREATE TABLE t (v)"])).status, 200);
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(!log.contains("no effect"), "{log}");
}

/// `-raft-reap-read-only-node-timeout`: the leader removes a read-only node that stopped
/// answering, and leaves the voters alone (their timeout is not set).
#[test]
fn unreachable_read_only_nodes_are_reaped() {
    let c = Cluster::start(2, &["-raft-reap-read-only-node-timeout", "2s"]);
    let l = c.wait_leader().id.clone();
    let first = c.node(&l).raft.clone();
    let mut ro = Node::new("ro", &c.dir().join("ro"), "127.0.0.19", &["-raft-non-voter", "-join", &first]);
    ro.spawn();
    ro.wait_ready();
    let members = |c: &Cluster| -> usize {
        let v: Value = serde_json::from_str(&c.node(&l).get("/nodes?nonvoters").body).unwrap_or_default();
        v.as_object().map(|o| o.len()).unwrap_or(0)
    };
    wait_for("the read-only node to be a member", Duration::from_secs(30), || (members(&c) == 3).then_some(()));
    ro.kill();
    wait_for("the read-only node to be reaped", Duration::from_secs(30), || (members(&c) == 2).then_some(()));
    assert_eq!(c.node(&l).status()["cluster"]["num_reaped"], 1);
}
