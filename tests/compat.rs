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
