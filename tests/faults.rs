//! Supervised actors under injected faults (built with `--features failpoints`): a panic inside an
//! actor restarts that actor alone, the node keeps serving, nothing acknowledged is lost and
//! nothing is applied twice.
#![cfg(feature = "failpoints")]

mod common;

use common::*;

fn restarts(n: &Node, actor: &str) -> u64 {
    n.status()["actors"]["restarts"][actor].as_u64().unwrap_or(0)
}

#[test]
fn applier_panic_restarts_the_applier_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = Node::start(&dir.path().join("data"), &[]);
    n.execute(json!(["CREATE TABLE t (v INTEGER)"]));
    let mut acked = Vec::new();
    for i in 0..5 {
        if n.execute(json!([["INSERT INTO t VALUES(?)", i]])).status == 200 {
            acked.push(i);
        }
    }
    // The next batch panics just before its COMMIT.
    n.failpoint("applier::before_commit=1*panic");
    let r = n.execute(json!([["INSERT INTO t VALUES(?)", 100]]));
    if r.status == 200 && r.body.contains("rows_affected") {
        acked.push(100);
    }
    assert_eq!(restarts(&n, "applier"), 1, "{}", n.status()["actors"]);
    // The node keeps serving reads and writes.
    for i in 200..205 {
        let r = n.execute(json!([["INSERT INTO t VALUES(?)", i]]));
        assert_eq!(r.status, 200, "{}", r.body);
        acked.push(i);
    }
    let check = |n: &Node| {
        assert!(n.rows("SELECT v FROM t GROUP BY v HAVING COUNT(*) > 1").is_empty(), "a row applied twice");
        let have: Vec<i64> = n.rows("SELECT v FROM t ORDER BY v").iter().filter_map(|r| r[0].as_i64()).collect();
        for a in &acked {
            assert!(have.contains(a), "acknowledged {a} lost: {have:?}");
        }
    };
    check(&n);
    assert_eq!(n.status()["store"]["entries_reapplied"], 0);
    n.restart();
    check(&n);
    assert_eq!(n.status()["store"]["entries_reapplied"], 0);
}

#[test]
fn reader_and_http_panics_are_contained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("data"), &[]);
    n.execute(json!(["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"]));
    // A panic in the read pool fails that read, restarts the pool, and the next read works.
    n.failpoint("readers::query=1*panic");
    let r = n.query("SELECT COUNT(*) FROM t", "");
    assert!(r.body.contains("error") || r.status >= 500, "{} {}", r.status, r.body);
    wait_for("the read pool back", std::time::Duration::from_secs(10), || {
        (n.query("SELECT COUNT(*) FROM t", "").body.contains("[[1]]")).then_some(())
    });
    // Another reader of the pool may serve the next read before the failed one has restarted.
    wait_for("the failed reader restarted", std::time::Duration::from_secs(10), || {
        (restarts(&n, "readers") == 1).then_some(())
    });
    // A panic in an HTTP handler is a 500 for that request only.
    n.failpoint("http::handler=1*panic");
    let r = n.query("SELECT 1", "");
    assert_eq!((r.status, r.body.as_str()), (500, "internal error\n"));
    assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([1])]);
    // Unknown failpoint actions are a 400.
    assert_eq!(n.post("/debug/failpoints", "text/plain", "x=not-an-action").status, 400);
}

/// A failed fsync of the Raft log (EIO injected with strace into every fsync of a thread from
/// its 20th on) is never acknowledged: the write fails with a 5xx, the log store reopens its file
/// on a new thread, Consensus rebuilds Raft, and the node takes writes again (until the new
/// thread's 20th fsync). After a restart without faults every acknowledged write is there, once.
#[test]
fn fsync_error_is_not_acknowledged_and_raft_is_rebuilt() {
    if std::process::Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is required (the CI script installs it)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut n = Node::new("1", &data, "127.0.0.1", &[]);
    let child = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync",
            "-e",
            "inject=fsync,fdatasync:error=EIO:when=20+",
            "-o",
            "/dev/null",
        ])
        .arg(env!("CARGO_BIN_EXE_raftlited"))
        .args(["-node-id", "1", "-http-addr", &n.http, "-raft-addr", &n.raft])
        .arg(&data)
        .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
        .spawn()
        .expect("strace");
    let mut child = KillOnDrop(child);
    n.wait_ready();
    n.execute(json!(["CREATE TABLE t (v INTEGER)"]));
    let (mut acked, mut failed, mut acked_after_failure) = (Vec::new(), Vec::new(), 0);
    for i in 0..300 {
        let Some(r) = n.post_opt("/db/execute", json!([["INSERT INTO t VALUES(?)", i]]).to_string()) else { break };
        if r.status == 200 && r.body.contains("rows_affected") {
            acked.push(i);
            acked_after_failure += usize::from(!failed.is_empty());
        } else {
            assert!(r.status >= 500, "{} {}", r.status, r.body);
            failed.push(i);
        }
        if acked_after_failure >= 5 {
            break;
        }
    }
    println!(
        "{} writes acknowledged, {} failed ({acked_after_failure} acknowledged after a failure)",
        acked.len(),
        failed.len()
    );
    assert!(!failed.is_empty(), "the injected fsync error never surfaced");
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(log.contains("rebuilding it over the same stores"), "{log}");
    child.kill();
    // Restart without faults: everything acknowledged is there, once.
    n.spawn();
    n.wait_ready();
    assert!(n.rows("SELECT v FROM t GROUP BY v HAVING COUNT(*) > 1").is_empty());
    let have: Vec<i64> = n.rows("SELECT v FROM t").iter().filter_map(|r| r[0].as_i64()).collect();
    for a in &acked {
        assert!(have.contains(a), "acknowledged {a} lost");
    }
}

/// A log that fails every append cannot be rebuilt into a working Raft: after five rebuilds the
/// node exits with status 70 and says why, rather than looping.
#[test]
fn persistent_log_failure_ends_in_a_fatal_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = Node::start(&dir.path().join("data"), &[]);
    n.execute(json!(["CREATE TABLE t (v INTEGER)"]));
    n.failpoint("log_store::append_before_fsync=panic");
    let r = n.execute(json!([["INSERT INTO t VALUES(1)"]]));
    assert_eq!(r.status, 503, "{}", r.body);
    // Every write that reaches the rebuilt Raft fails the same way, until the node gives up.
    let status = wait_for("the node to give up", std::time::Duration::from_secs(60), || {
        if let Some(r) = n.post_opt("/db/execute", json!([["INSERT INTO t VALUES(2)"]]).to_string()) {
            assert_ne!(r.status, 200, "a write was acknowledged by a log that cannot append: {}", r.body);
        }
        n.exit_status()
    });
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert_eq!(status.code(), Some(70), "{log}");
    assert!(log.contains("FATAL: raft failed again after 5 rebuilds"), "{log}");
    // Without the fault, the node starts and has lost nothing.
    n.spawn();
    n.wait_ready();
    assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([0])]);
}

/// One failed append (a panic after the fsync, so the entry may be on disk) restarts the log store
/// and rebuilds Raft: the write is refused, the entry it may have left is dropped, and the node
/// takes writes again.
#[test]
fn log_store_failure_rebuilds_raft_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = Node::start(&dir.path().join("data"), &[]);
    n.execute(json!(["CREATE TABLE t (v INTEGER)"]));
    for i in 0..5 {
        assert_eq!(n.execute(json!([["INSERT INTO t VALUES(?)", i]])).status, 200);
    }
    n.failpoint("log_store::append_after_fsync=1*panic");
    let r = n.execute(json!([["INSERT INTO t VALUES(100)"]]));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("raft stopped"), "{}", r.body);
    wait_for("writes accepted again", std::time::Duration::from_secs(20), || {
        (n.execute(json!([["INSERT INTO t VALUES(200)"]])).status == 200).then_some(())
    });
    assert_eq!(restarts(&n, "log_store"), 1);
    assert!(n.metric("raftlite_raft_rebuilds_total") >= 1.0);
    let check = |n: &Node| {
        let have: Vec<i64> = n.rows("SELECT v FROM t ORDER BY v").iter().filter_map(|r| r[0].as_i64()).collect();
        assert_eq!(have, vec![0, 1, 2, 3, 4, 200], "the refused write must not appear, nothing twice");
    };
    check(&n);
    n.restart();
    check(&n);
}

struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    /// SIGKILL the traced node (strace's child) by its PID, then strace itself.
    fn kill(&mut self) {
        let pid = self.0.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for c in children.split_whitespace() {
            let _ = std::process::Command::new("kill").args(["-9", c]).status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Consensus, Snapshotter, Membership and the HTTP front each restart alone on a single node:
/// the request that hit the fault fails with a clear error, the actor's restart is counted, and
/// the node goes on serving with nothing lost.
#[test]
fn consensus_snapshotter_membership_and_http_front_restart_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = Node::start(&dir.path().join("data"), &["-raft-snap", "20", "-raft-snap-int", "200ms"]);
    n.execute(json!(["CREATE TABLE t (v INTEGER)"]));
    let mut acked = Vec::new();
    let mut write = |n: &Node, v: i64| {
        let r = n.execute(json!([["INSERT INTO t VALUES(?)", v]]));
        if r.status == 200 && r.body.contains("rows_affected") {
            acked.push(v);
        }
        r
    };

    n.failpoint("consensus::propose=1*panic");
    let r = write(&n, 1);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("consensus restarting"), "{}", r.body);
    assert_eq!(write(&n, 2).status, 200);
    assert_eq!(restarts(&n, "consensus"), 1);

    // The snapshot policy keeps working after its actor restarts: the log is compacted.
    n.failpoint("snapshotter::tick=1*panic");
    wait_for("the snapshotter restarted", std::time::Duration::from_secs(10), || {
        (restarts(&n, "snapshotter") == 1).then_some(())
    });
    for v in 10..60 {
        write(&n, v);
    }
    wait_for("a snapshot after the restart", std::time::Duration::from_secs(20), || {
        (n.status()["store"]["num_snapshots"].as_u64().unwrap_or(0) > 0).then_some(())
    });

    // A failed snapshot build (this request's, or the policy's if it came first) stops Raft,
    // which is rebuilt; the next snapshot works.
    n.failpoint("snapshot::build=1*return");
    write(&n, 70);
    let r = n.post("/snapshot", "text/plain", "");
    let log = || std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(r.status == 500 || log().contains("failpoint snapshot::build"), "{} {}", r.status, r.body);
    wait_for("a snapshot after the failed one", std::time::Duration::from_secs(20), || {
        write(&n, 71);
        [200, 204].contains(&n.post("/snapshot", "text/plain", "").status).then_some(())
    });
    assert!(log().contains("failpoint snapshot::build"));

    n.failpoint("membership::change=1*panic");
    let r = n.delete("/remove", r#"{"id":"nope"}"#);
    assert!(r.status >= 500, "{} {}", r.status, r.body);
    assert_eq!(restarts(&n, "membership"), 1);
    let r = n.delete("/remove", r#"{"id":"nope"}"#);
    assert!(!r.body.contains("panicked"), "{}", r.body);

    // The HTTP front restarts and serves the same listeners again; a new connection works.
    n.failpoint("http_front::check=1*panic");
    wait_for("the HTTP front restarted", std::time::Duration::from_secs(10), || {
        (restarts(&n, "http_front") == 1).then_some(())
    });
    let fresh = reqwest::blocking::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let r = fresh.get(n.url("/readyz")).send().expect("a new connection after the restart");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(write(&n, 80).status, 200);

    let check = |n: &Node| {
        let have: Vec<i64> = n.rows("SELECT v FROM t ORDER BY v").iter().filter_map(|r| r[0].as_i64()).collect();
        assert!(n.rows("SELECT v FROM t GROUP BY v HAVING COUNT(*) > 1").is_empty());
        for a in &acked {
            assert!(have.contains(a), "acknowledged {a} lost");
        }
        assert!(!have.contains(&1), "the write refused by the failing Consensus was applied");
    };
    check(&n);
    n.restart();
    check(&n);
}

/// The write queue is a supervised actor: a panic in it restarts it alone, and queued writes it
/// had acknowledged (and not yet written) are still written after the restart.
#[test]
fn write_queue_panic_restarts_it_alone_and_keeps_queued_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A long batching window, so that the first writes are still pending when the queue panics.
    let n = Node::start(&dir.path().join("data"), &["-write-queue-timeout", "2s", "-write-queue-batch-size", "1000"]);
    assert_eq!(n.execute(json!(["CREATE TABLE t (v INTEGER PRIMARY KEY)"])).status, 200);
    let mut acked = Vec::new();
    for v in 0..5 {
        let r = n.execute_q("queue", json!([["INSERT INTO t VALUES(?)", v]]));
        assert_eq!(r.status, 200, "{}", r.body);
        acked.push(v);
    }
    n.failpoint("write_queue::enqueue=1*panic");
    let r = n.execute_q("queue", json!([["INSERT INTO t VALUES(?)", 100]]));
    assert_eq!(r.status, 503, "the request the queue failed on is refused, not acknowledged: {}", r.body);
    wait_for("the write queue restarted", std::time::Duration::from_secs(10), || {
        (restarts(&n, "write_queue") == 1).then_some(())
    });
    for v in 5..10 {
        let r = n.execute_q("queue", json!([["INSERT INTO t VALUES(?)", v]]));
        assert_eq!(r.status, 200, "{}", r.body);
        acked.push(v);
    }
    // A flush barrier: returns once everything queued before it is written.
    let r = n.execute_q("queue&wait&timeout=20s", json!([]));
    assert_eq!(r.status, 200, "{}", r.body);
    let rows: Vec<i64> = n.rows("SELECT v FROM t ORDER BY v").iter().filter_map(|r| r[0].as_i64()).collect();
    assert_eq!(rows, acked, "every acknowledged queued write, and only those");
    for other in ["consensus", "applier", "log_store", "readers", "membership", "snapshotter", "http_front"] {
        assert_eq!(restarts(&n, other), 0, "{other} restarted too");
    }
}

/// A restarted Consensus actor must not start a second leadership watcher for the same Raft:
/// each would count every leader change. After three restarts (four watchers without the guard,
/// each seeing the change at least once), one leadership change counts once or twice (a
/// candidate phase may be seen between the two leaders), never four times.
#[test]
fn consensus_restart_does_not_count_leader_changes_twice() {
    let c = Cluster::start(3, &[]);
    let leader_id = c.wait_leader().id.clone();
    let a = c.nodes.iter().find(|n| n.id != leader_id).expect("a follower");
    for round in 1..=3 {
        a.failpoint("consensus::propose=1*panic");
        let r = a.execute(json!(["CREATE TABLE IF NOT EXISTS t (v)"]));
        assert_eq!(r.status, 503, "{}", r.body);
        wait_for("consensus restarted", std::time::Duration::from_secs(10), || {
            (restarts(a, "consensus") == round).then_some(())
        });
    }
    let before = a.metric("raftlite_raft_leader_changes_total");
    let r = c.node(&leader_id).post("/leader?wait", "application/json", json!({ "id": a.id }).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("the follower to lead", std::time::Duration::from_secs(30), || (a.leader_id() == a.id).then_some(()));
    wait_for("the change counted", std::time::Duration::from_secs(5), || {
        (a.metric("raftlite_raft_leader_changes_total") > before).then_some(())
    });
    // Watch the counter for a second more: late watchers would add to it.
    harness::poll_until(std::time::Duration::from_secs(1), || {
        let delta = a.metric("raftlite_raft_leader_changes_total") - before;
        assert!((1.0..=2.0).contains(&delta), "one leader change counted {delta} times");
        false
    });
}

/// A checkpoint that cannot copy the whole WAL into the database file leaves its marker and is
/// tried again while writes go on; the one that completes records its position, and the node
/// restarts on it (docs/DESIGN.md §6). Past `CHECKPOINT_RETRY_FOR` the snapshot fails and Raft is
/// rebuilt, as a failed build does in `consensus_snapshotter_membership_and_http_front_restart_alone`.
#[test]
fn an_incomplete_checkpoint_is_tried_again_while_writes_go_on_then_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = Node::start(&dir.path().join("data"), &[]);
    assert_eq!(n.execute(json!(["CREATE TABLE t (v INTEGER)"])).status, 200);
    for i in 0..10 {
        assert_eq!(n.execute(json!([["INSERT INTO t VALUES(?)", i]])).status, 200);
    }
    n.failpoint("checkpoint::copy=return");
    let url = n.url("/snapshot");
    let snapshot = std::thread::spawn(move || {
        let c = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(90)).build();
        c.and_then(|c| c.post(url).send()).map(|r| r.status().as_u16()).map_err(|e| e.to_string())
    });
    let marker = n.dir.join("snapshots").join("checkpointing.json");
    wait_for("the checkpoint tried again", std::time::Duration::from_secs(30), || {
        (n.metric("raftlite_checkpoint_retries_total") >= 2.0).then_some(())
    });
    assert!(marker.exists(), "an incomplete checkpoint must leave its marker");
    assert_eq!(n.execute(json!([["INSERT INTO t VALUES(?)", 10]])).status, 200, "writes go on meanwhile");
    n.failpoint("checkpoint::copy=off");
    assert_eq!(snapshot.join().expect("thread"), Ok(200));
    assert!(!marker.exists());
    assert_eq!(n.metric("raftlite_raft_rebuilds_total"), 0.0);
    let count = |n: &Node| n.rows("SELECT COUNT(*), COUNT(DISTINCT v) FROM t");
    assert_eq!(count(&n), vec![json!([11, 11])]);
    n.kill();
    n.spawn();
    n.wait_ready();
    assert_eq!(count(&n), vec![json!([11, 11])]);
    assert_eq!(n.status()["store"]["entries_reapplied"], 0);
}
