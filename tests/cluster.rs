//! Clustering through real processes on 127.0.0.x: joining, replication, forwarding, redirects,
//! read levels on followers, leader failure, restarts, non-voters, removal, leadership transfer.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn writes_and_reads_through_any_node() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let f = c.follower();
    // A write sent to a follower is forwarded to the leader.
    let r = f.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", ["INSERT INTO t(v) VALUES(?)", "a"]]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, r#"{"results":[{},{"last_insert_id":1,"rows_affected":1}]}"#);
    assert_eq!(r.headers.get("X-RQLITE-SERVED-BY").and_then(|v| v.to_str().ok()), Some(leader.raft.as_str()));
    // Every read level works on a follower.
    for level in ["weak", "linearizable", "strong", "auto"] {
        let q = f.query("SELECT v FROM t", &format!("level={level}"));
        assert_eq!(q.json()["results"][0]["values"], json!([["a"]]), "level={level}: {}", q.body);
    }
    for n in &c.nodes {
        n.wait_rows("SELECT v FROM t", vec![json!(["a"])]);
    }
    // /db/request with a write, on a follower.
    let r = f.post("/db/request", "application/json", r#"["INSERT INTO t(v) VALUES('b')", "SELECT COUNT(*) FROM t"]"#);
    assert_eq!(r.json()["results"][1]["values"], json!([[2]]), "{}", r.body);
    // With `redirect` a follower answers 301 with the leader's URL.
    let r = f.post("/db/execute?redirect", "application/json", r#"["INSERT INTO t(v) VALUES('c')"]"#);
    assert_eq!(r.status, 301);
    let loc = r.headers.get("Location").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(loc, format!("http://{}/db/execute?redirect", leader.http));
    let r = f.get("/db/query?q=SELECT%201&level=weak&redirect");
    assert_eq!(r.status, 301);
    assert_eq!(leader.get("/db/query?q=SELECT%201&level=weak&redirect").status, 200);
    // readyz?sync: the follower has applied what the leader committed.
    let r = f.get("/readyz?sync&timeout=5s");
    assert_eq!((r.status, r.body.as_str()), (200, "[+]node ok\n[+]leader ok\n[+]store ok\n[+]sync ok\n"));
    // level=none with freshness on a follower that hears from the leader.
    let r = f.get("/db/query?q=SELECT%20COUNT(*)%20FROM%20t&level=none&freshness=5s");
    assert!(r.json()["results"][0]["values"].is_array(), "{}", r.body);
    let r = f.get("/db/query?q=SELECT%20COUNT(*)%20FROM%20t&level=none&freshness=5s&freshness_strict");
    assert!(r.json()["results"][0]["values"].is_array(), "{}", r.body);
    // /nodes probes every node.
    let nodes = f.get("/nodes").json();
    for n in &c.nodes {
        assert_eq!(nodes[&n.id]["reachable"], true, "{nodes}");
        assert_eq!(nodes[&n.id]["leader"], n.id == leader.id);
        assert_eq!(nodes[&n.id]["api_addr"], format!("http://{}", n.http));
    }
    assert_eq!(f.get("/leader").json()["id"], leader.id);
    // Replicas are identical.
    let dump = |n: &Node| n.local_rows("SELECT * FROM t ORDER BY id");
    wait_for("identical replicas", Duration::from_secs(10), || {
        let a = dump(&c.nodes[0])?;
        (c.nodes.iter().all(|n| dump(n).as_ref() == Some(&a))).then_some(())
    });
}

#[test]
fn leader_failure_and_restarts() {
    let mut c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    l.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"]));
    for i in 0..10 {
        assert_eq!(l.execute(json!([["INSERT INTO t(v) VALUES(?)", i]])).status, 200);
    }
    let old = l.id.clone();
    let killed_at = Instant::now();
    c.node_mut(&old).kill();
    let new = c.wait_leader();
    assert_ne!(new.id, old);
    // Redirects name the new leader.
    let survivor = c.nodes.iter().find(|n| n.running() && n.id != new.id).expect("survivor");
    let r = survivor.post("/db/execute?redirect", "application/json", r#"["INSERT INTO t(v) VALUES(50)"]"#);
    assert_eq!(r.status, 301);
    assert!(r
        .headers
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .starts_with(&format!("http://{}/", new.http)));
    // Writes continue, through any surviving node.
    let f = c.nodes.iter().find(|n| n.running() && n.id != new.id).expect("survivor");
    wait_for("a write after failover", Duration::from_secs(30), || {
        let r = f.execute(json!([["INSERT INTO t(v) VALUES(?)", 100]]));
        (r.status == 200 && r.body.contains("rows_affected")).then_some(())
    });
    println!("failover: first write acknowledged {:?} after the leader's SIGKILL", killed_at.elapsed());
    for i in 0..5 {
        assert_eq!(f.execute(json!([["INSERT INTO t(v) VALUES(?)", 200 + i]])).status, 200);
    }
    // The old leader rejoins on restart and catches up.
    c.node_mut(&old).spawn();
    c.node(&old).wait_ready();
    wait_count(c.node(&old), 16);
    // A follower that was down during writes catches up too.
    let f_id = c.follower().id.clone();
    c.node_mut(&f_id).kill();
    let l = c.wait_leader();
    for i in 0..20 {
        assert_eq!(l.execute(json!([["INSERT INTO t(v) VALUES(?)", 300 + i]])).status, 200);
    }
    c.node_mut(&f_id).spawn();
    wait_count(c.node(&f_id), 36);
    // Restart the whole cluster: it re-forms with all data.
    for n in c.nodes.iter_mut() {
        n.kill();
    }
    for n in c.nodes.iter_mut() {
        n.spawn();
    }
    let l = c.wait_leader();
    assert_eq!(l.execute(json!([["INSERT INTO t(v) VALUES(?)", 999]])).status, 200);
    for n in &c.nodes {
        wait_count(n, 37);
    }
}

#[test]
fn non_voters_follow_and_serve_reads() {
    let c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    l.execute(json!(["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"]));
    let dir = c.dir().join("ro");
    let mut ro = Node::new("ro", &dir, "127.0.0.20", &["-raft-non-voter", "-join", &l.raft]);
    ro.spawn();
    ro.wait_ready();
    wait_count(&ro, 1);
    let nodes = l.get("/nodes?nonvoters").json();
    assert_eq!(nodes["ro"]["voter"], false, "{nodes}");
    assert!(l.get("/nodes").json().get("ro").is_none(), "voters only without nonvoters");
    // level=none and auto are served locally on a non-voter.
    let r = ro.get("/db/query?q=SELECT%20COUNT(*)%20FROM%20t&level=auto");
    assert_eq!(r.json()["results"][0]["values"], json!([[1]]));
    assert_eq!(r.headers.get("X-RQLITE-SERVED-BY").and_then(|v| v.to_str().ok()), Some(ro.http.as_str()));
    // Writes are forwarded; redirect names the leader.
    assert_eq!(ro.execute(json!(["INSERT INTO t VALUES(2)"])).status, 200);
    wait_count(&ro, 2);
    assert_eq!(ro.post("/db/execute?redirect", "application/json", r#"["INSERT INTO t VALUES(3)"]"#).status, 301);
    // It stays a learner across a restart.
    let mut ro = ro;
    ro.restart();
    assert_eq!(l.get("/nodes?nonvoters").json()["ro"]["voter"], false);
    assert_eq!(l.status()["store"]["num_ignored_joins"], 1);
}

#[test]
fn removing_nodes() {
    let mut c = Cluster::start(3, &[]);
    let l = c.wait_leader().id.clone();
    let followers: Vec<String> = c.nodes.iter().filter(|n| n.id != l).map(|n| n.id.clone()).collect();
    // Bad bodies are 400.
    assert_eq!(c.node(&l).delete("/remove", "{}").status, 400);
    assert_eq!(c.node(&l).delete("/remove", r#"{"id":"1","x":2}"#).status, 400);
    // Remove through a follower (forwarded to the leader).
    let via = c.node(&followers[0]);
    let r = via.delete("/remove", &format!(r#"{{"id":"{}"}}"#, followers[1]));
    assert_eq!(r.status, 200, "{}", r.body);
    c.node_mut(&followers[1]).kill();
    c.wait_voters(2);
    let leader = c.wait_leader();
    // Removing an unknown node is an error.
    assert_eq!(leader.delete("/remove", r#"{"id":"nope"}"#).status, 404);
    leader.execute(json!(["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"]));
    wait_count(c.node(&followers[0]), 1);
    // A node started with -raft-cluster-remove-shutdown leaves the cluster on SIGTERM.
    let dir = c.dir().join("n9");
    let mut n9 = Node::new("9", &dir, "127.0.0.29", &["-raft-cluster-remove-shutdown", "-join", &leader.raft]);
    n9.spawn();
    n9.wait_ready();
    c.wait_voters(3);
    assert_eq!(n9.terminate().code(), Some(0));
    c.wait_voters(2);
    assert_eq!(c.wait_leader().execute(json!(["INSERT INTO t VALUES(2)"])).status, 200);
    // Removal through the leader itself.
    let mut n8 = Node::new("8", &c.dir().join("n8"), "127.0.0.28", &["-join", &c.wait_leader().raft]);
    n8.spawn();
    n8.wait_ready();
    c.wait_voters(3);
    assert_eq!(c.wait_leader().delete("/remove", r#"{"id":"8"}"#).status, 200);
    c.wait_voters(2);
    n8.kill();
}

#[test]
fn leadership_transfer_and_stepdown() {
    let mut c = Cluster::start(3, &[]);
    let old = c.wait_leader().id.clone();
    // POST /leader (to a follower: forwarded) moves leadership away from the leader.
    let r = c.follower().post("/leader?wait", "application/json", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let new = c.wait_leader().id.clone();
    assert_ne!(new, old);
    // A named target.
    let r = c.node(&new).post("/leader?wait", "application/json", format!(r#"{{"id":"{old}"}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("leadership back", Duration::from_secs(30), || (c.leader()?.id == old).then_some(()));
    // A leader stopped with SIGTERM hands over leadership first (-raft-shutdown-stepdown is on).
    assert_eq!(c.node_mut(&old).terminate().code(), Some(0));
    let l = c.wait_leader();
    assert_ne!(l.id, old);
}

#[test]
fn minority_leader_refuses_linearizable_and_strong_reads() {
    let mut c = Cluster::start(3, &[]);
    let l = c.wait_leader().id.clone();
    c.node(&l).execute(json!(["CREATE TABLE t (v)"]));
    let others: Vec<String> = c.nodes.iter().filter(|n| n.id != l).map(|n| n.id.clone()).collect();
    for o in &others {
        c.node_mut(o).kill();
    }
    let leader = c.node(&l);
    let t = Instant::now();
    let r = leader.get("/db/query?q=SELECT%20COUNT(*)%20FROM%20t&level=linearizable&linearizable_timeout=20s");
    assert!(r.status >= 500, "linearizable read on a minority leader: {} {}", r.status, r.body);
    let r2 = leader.get("/db/query?q=SELECT%20COUNT(*)%20FROM%20t&level=strong");
    assert!(r2.status >= 500, "strong read on a minority leader: {} {}", r2.status, r2.body);
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
    // level=none still answers.
    assert_eq!(leader.local_rows("SELECT COUNT(*) FROM t"), Some(vec![json!([0])]));
}

#[test]
fn five_nodes_with_bootstrap_expect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Node> = (1..=5)
        .map(|i| Node::new(&i.to_string(), &dir.path().join(format!("b{i}")), &format!("127.0.0.{}", 40 + i), &[]))
        .collect();
    let all: Vec<String> = nodes.iter().map(|n| n.raft.clone()).collect();
    for n in nodes.iter_mut() {
        n.extra = vec![
            "-bootstrap-expect".into(),
            "5".into(),
            "-join".into(),
            all.join(","),
            "-join-interval".into(),
            "200ms".into(),
        ];
        n.spawn();
    }
    let c = Cluster { nodes, _dir: dir };
    c.wait_voters(5);
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"])).status, 200);
    for n in &c.nodes {
        wait_count(n, 1);
    }
}

#[test]
fn rejoin_with_changed_address() {
    let mut c = Cluster::start(3, &[]);
    let l = c.wait_leader().raft.clone();
    c.wait_leader().execute(json!(["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"]));
    let f = c.follower().id.clone();
    let n = c.node_mut(&f);
    n.kill();
    n.raft = free_addr("127.0.0.35");
    n.http = free_addr("127.0.0.35");
    n.extra = vec!["-join".into(), l];
    n.spawn();
    n.wait_ready();
    let leader = c.wait_leader();
    wait_for("new address in the configuration", Duration::from_secs(30), || {
        let nodes: Value = serde_json::from_str(&leader.try_get("/nodes")?.body).ok()?;
        (nodes[&f]["addr"] == c.node(&f).raft.as_str() && nodes[&f]["reachable"] == true).then_some(())
    });
    assert_eq!(leader.status()["store"]["num_removed_before_joins"], 1);
    leader.execute(json!(["INSERT INTO t VALUES(2)"]));
    wait_count(c.node(&f), 2);
}

#[test]
fn sole_member_refuses_to_join_another_cluster() {
    let c = Cluster::start(1, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lone = Node::start(&dir.path().join("lone"), &[]);
    lone.kill();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftlited"))
        .args(["-node-id", "1", "-http-addr", &lone.http, "-raft-addr", &lone.raft, "-join", &c.nodes[0].raft])
        .arg(&lone.dir)
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot join another"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Joining through an HTTP API address is refused with a clear message.
    let fresh = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftlited"))
        .args(["-node-id", "7", "-http-addr", &free_addr("127.0.0.1"), "-raft-addr", &free_addr("127.0.0.1")])
        .args(["-join", &c.nodes[0].http, "-join-attempts", "1"])
        .arg(fresh.path().join("d"))
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is an HTTP API address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn peers_json_recovers_a_cluster_that_moved() {
    let mut c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    l.execute(json!(["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)", "INSERT INTO t VALUES(2)"]));
    for n in &c.nodes {
        wait_count(n, 2);
    }
    // Every node moves to a new IP and new ports.
    c.move_with_peers_json(50, true);
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["INSERT INTO t VALUES(3)"])).status, 200);
    for n in &c.nodes {
        wait_count(n, 3);
        assert!(n.dir.join("raft").join("peers.info").exists());
    }
    let nodes = l.get("/nodes").json();
    for n in &c.nodes {
        assert_eq!(nodes[&n.id]["addr"], n.raft.as_str());
        assert_eq!(nodes[&n.id]["reachable"], true);
    }
}

#[test]
fn freshness_bounds_reads_on_a_cut_off_follower() {
    let mut c = Cluster::start(3, &[]);
    let l = c.wait_leader().id.clone();
    c.node(&l).execute(json!(["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"]));
    let f = c.follower().id.clone();
    wait_count(c.node(&f), 1);
    let others: Vec<String> = c.nodes.iter().filter(|n| n.id != f).map(|n| n.id.clone()).collect();
    for o in &others {
        c.node_mut(o).kill();
    }
    let f = c.node(&f);
    // Within the bound the read is served; once the leader has been silent longer, it is refused.
    let q = "/db/query?q=SELECT%20COUNT(*)%20FROM%20t&level=none&freshness=1s";
    wait_for("a stale read refused", Duration::from_secs(20), || {
        let r = f.try_get(q)?;
        r.body.contains(r#""error":"stale read""#).then_some(())
    });
    // Without freshness a level=none read still answers from the local copy.
    assert_eq!(f.local_rows("SELECT COUNT(*) FROM t"), Some(vec![json!([1])]));
}
