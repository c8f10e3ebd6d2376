//! Every failpoint on a 3-node cluster (built with `--features failpoints`), on the leader and on a
//! follower: the fault is injected, the cluster is driven so that the faulty code runs, the fault
//! is cleared, and then the cluster must be whole again (a leader, every node ready and holding
//! the same rows), with every acknowledged write on every node exactly once.
#![cfg(feature = "failpoints")]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

#[derive(Clone, Copy, Debug)]
enum Drive {
    /// Inserts through whichever node is leader.
    Writes,
    /// Two-statement requests (`v` and `-v`) through the leader.
    Batches,
    /// A snapshot on the target, then inserts.
    Snapshot,
    /// Leadership moved to (or away from) the target: votes are saved.
    Election,
    /// Local reads on the target.
    Reads,
}

struct Case {
    point: &'static str,
    action: &'static str,
    on_leader: bool,
    drive: Drive,
    /// The actor whose restart counter must move on the target.
    restarts: Option<&'static str>,
}

const fn case(
    point: &'static str,
    action: &'static str,
    on_leader: bool,
    drive: Drive,
    restarts: Option<&'static str>,
) -> Case {
    Case { point, action, on_leader, drive, restarts }
}

const CASES: &[Case] = &[
    case("log_store::append_before_fsync", "1*panic", false, Drive::Writes, Some("log_store")),
    case("log_store::append_after_fsync", "1*panic", false, Drive::Writes, Some("log_store")),
    case("log_store::append_after_fsync", "1*panic", true, Drive::Writes, Some("log_store")),
    case("log_store::save_meta", "1*panic", false, Drive::Election, Some("log_store")),
    case("applier::between_statements", "1*panic", false, Drive::Batches, Some("applier")),
    case("applier::before_commit", "1*panic", true, Drive::Writes, Some("applier")),
    case("applier::before_commit", "1*panic", false, Drive::Writes, Some("applier")),
    case("readers::query", "1*panic", false, Drive::Reads, Some("readers")),
    case("consensus::propose", "1*panic", true, Drive::Writes, Some("consensus")),
    case("snapshot::build", "1*return", false, Drive::Snapshot, None),
    case("snapshotter::tick", "1*panic", false, Drive::Writes, Some("snapshotter")),
    case("internode::receive", "20*return", false, Drive::Writes, None),
    case("network::send", "20*return", true, Drive::Writes, None),
    case("http::handler", "2*panic", true, Drive::Writes, None),
    case("http_front::check", "1*panic", false, Drive::Writes, Some("http_front")),
];

fn restarts(n: &Node, actor: &str) -> u64 {
    n.status()["actors"]["restarts"][actor].as_u64().unwrap_or(0)
}

/// One insert through the current leader; true if acknowledged.
fn insert(c: &Cluster, v: i64) -> bool {
    let Some(l) = c.leader() else { return false };
    let body = json!([["INSERT INTO t(v) VALUES(?)", v]]).to_string();
    l.post_opt("/db/execute", body)
        .map(|r| r.status == 200 && r.json()["results"][0]["rows_affected"] == 1)
        .unwrap_or(false)
}

/// Rows `v` and `-v` in one request through the current leader; true if both acknowledged.
fn insert_pair(c: &Cluster, v: i64) -> bool {
    let Some(l) = c.leader() else { return false };
    let body = json!([["INSERT INTO t(v) VALUES(?)", v], ["INSERT INTO t(v) VALUES(?)", -v]]).to_string();
    l.post_opt("/db/execute", body)
        .map(|r| {
            let j = r.json();
            r.status == 200 && j["results"][0]["rows_affected"] == 1 && j["results"][1]["rows_affected"] == 1
        })
        .unwrap_or(false)
}

#[test]
fn every_failpoint_on_a_three_node_cluster() {
    let c = Cluster::start(3, &["-raft-snap", "30", "-raft-snap-int", "200ms"]);
    assert_eq!(c.wait_leader().execute(json!(["CREATE TABLE t (v INTEGER NOT NULL)"])).status, 200);
    let mut acked: Vec<i64> = Vec::new();
    let mut next = 0i64;
    for (i, k) in CASES.iter().enumerate() {
        let leader = c.wait_leader().id.clone();
        // Followers take turns, so that no node gets more faults that stop its Raft than a node
        // may survive in ten minutes (five rebuilds; the sixth is a fatal exit by design).
        let followers: Vec<&Node> = c.nodes.iter().filter(|n| n.id != leader).collect();
        let target = if k.on_leader { c.node(&leader) } else { followers[i % followers.len()] };
        let before = k.restarts.map(|a| restarts(target, a)).unwrap_or(0);
        let role = if k.on_leader { "leader" } else { "follower" };
        println!("{}={} on the {role} (node {})", k.point, k.action, target.id);
        target.failpoint(&format!("{}={}", k.point, k.action));
        match k.drive {
            Drive::Writes => {}
            Drive::Batches => {
                for _ in 0..5 {
                    next += 1;
                    if insert_pair(&c, next) {
                        acked.extend([next, -next]);
                    }
                }
            }
            Drive::Snapshot => {
                let _ = target.post_opt("/snapshot", String::new());
            }
            Drive::Election => {
                let body = json!({ "id": target.id }).to_string();
                let _ = c.node(&leader).post_opt("/leader", body);
            }
            Drive::Reads => {
                for _ in 0..5 {
                    let _ = target.local_rows("SELECT COUNT(*) FROM t");
                }
            }
        }
        for _ in 0..20 {
            next += 1;
            if insert(&c, next) {
                acked.push(next);
            }
        }
        // The fault has run where it can; wait for its restart, then clear it.
        if let Some(actor) = k.restarts {
            wait_for(&format!("{actor} restarted on node {}", target.id), Duration::from_secs(30), || {
                (restarts(target, actor) > before).then_some(())
            });
        }
        target.failpoint(&format!("{}=off", k.point));
        // Whole again: a write is acknowledged, every node is ready and holds the same rows.
        wait_for(&format!("a write after {}", k.point), Duration::from_secs(30), || {
            next += 1;
            insert(&c, next).then(|| acked.push(next))
        });
        let want = acked.len() as i64;
        for n in &c.nodes {
            wait_for(&format!("node {} ready after {}", n.id, k.point), Duration::from_secs(30), || {
                n.get_opt("/readyz").filter(|r| r.status == 200)
            });
            wait_for(&format!("node {} to converge after {}", n.id, k.point), Duration::from_secs(30), || {
                let rows = n.local_rows("SELECT v FROM t")?;
                let have: HashSet<i64> = rows.iter().filter_map(|r| r[0].as_i64()).collect();
                (rows.len() == have.len() && acked.iter().all(|a| have.contains(a)) && have.len() as i64 >= want)
                    .then_some(())
            });
        }
        let counts: Vec<Option<i64>> = c.nodes.iter().map(count).collect();
        assert!(counts.windows(2).all(|w| w[0] == w[1]), "after {}: replicas differ {counts:?}", k.point);
    }
    println!("{} acknowledged writes on every node after {} fault cases", acked.len(), CASES.len());
}

/// A join that hits a panic in the leader's Membership actor fails; the joiner retries, the
/// restarted actor admits it.
#[test]
fn membership_panic_during_a_join_is_retried() {
    let mut c = Cluster::start(2, &[]);
    let leader = c.wait_leader().id.clone();
    c.node(&leader).failpoint("membership::change=1*panic");
    let dir = c.dir().join("n3");
    let first = c.node(&leader).raft.clone();
    let mut n3 = Node::new("3", &dir, "127.0.0.13", &["-join", &first, "-join-interval", "200ms"]);
    n3.spawn();
    n3.wait_ready();
    c.nodes.push(n3);
    c.wait_voters(3);
    assert_eq!(restarts(c.node(&leader), "membership"), 1);
}

/// A 3-node cluster whose follower was down while the leader took 100 rows and compacted its
/// log past them: the follower can only catch up by snapshot. Returns (cluster, leader, follower).
fn follower_behind_a_compaction() -> (Cluster, String, String) {
    let mut c = Cluster::start(3, &["-raft-snap", "20", "-raft-snap-int", "200ms"]);
    let l = c.wait_leader().id.clone();
    assert_eq!(c.node(&l).execute(json!(["CREATE TABLE t (v INTEGER NOT NULL)"])).status, 200);
    let f = c.follower().id.clone();
    c.node_mut(&f).kill();
    for v in 0..100 {
        assert_eq!(c.node(&l).execute(json!([["INSERT INTO t VALUES(?)", v]])).status, 200);
    }
    // Wait until the leader has compacted past what the follower has.
    wait_for("the leader to compact its log", Duration::from_secs(30), || {
        (c.node(&l).status()["store"]["num_snapshots"].as_u64()? > 0).then_some(())
    });
    (c, l, f)
}

/// Wait up to 30 s for node `id` to hold `rows` rows.
fn holds_rows(c: &Cluster, id: &str, rows: i64) -> bool {
    (0..1500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        count(c.node(id)) == Some(rows)
    })
}

/// Wait until node `id` has counted a completed snapshot install.
fn restored(c: &Cluster, id: &str) {
    wait_for(&format!("node {id} to count a snapshot install"), Duration::from_secs(10), || {
        (c.node(id).status()["store"]["num_restores"].as_u64()? >= 1).then_some(())
    });
}

/// A follower that fell behind a compacted log catches up by snapshot even when the first send
/// (on the leader) and the first install (on the follower) fail: both are retried.
#[test]
fn snapshot_send_and_install_failures_are_retried() {
    let (mut c, l, f) = follower_behind_a_compaction();
    c.node(&l).failpoint("snapshot::send=1*return");
    let n = c.node_mut(&f);
    n.env.push(("FAILPOINTS".into(), "snapshot::install=1*return".into()));
    n.spawn();
    let caught_up = holds_rows(&c, &f, 100);
    let log = std::fs::read_to_string(&c.node(&f).log).unwrap_or_default();
    assert!(caught_up, "the follower never caught up; its log:\n{log}");
    assert!(log.contains("failpoint snapshot::install"), "the install failpoint never ran");
    // The rows are readable a moment before the install returns and is counted.
    restored(&c, &f);
}

/// A follower whose Raft stops right after it installed a snapshot comes back: rebuilt in place,
/// and again after a SIGKILL and restart. The snapshot sent is a copy made when it is sent, so it
/// holds rows written after the position it was sent for; the follower must record what it
/// installed, or Raft (which at start purges the log up to what the database holds) would purge
/// past the recorded snapshot, and the node would never start again. Found by a 30-minute chaos
/// run, where a snapshot build raced the install.
#[test]
fn a_follower_stopped_right_after_an_install_comes_back() {
    let (mut c, l, f) = follower_behind_a_compaction();
    // Fewer rows than a compaction needs: the copy will hold them, its metadata will not.
    for v in 100..110 {
        assert_eq!(c.node(&l).execute(json!([["INSERT INTO t VALUES(?)", v]])).status, 200);
    }
    let n = c.node_mut(&f);
    n.env.push(("FAILPOINTS".into(), "snapshot::installed=1*return".into()));
    n.spawn();
    let ok = holds_rows(&c, &f, 110);
    let log = std::fs::read_to_string(&c.node(&f).log).unwrap_or_default();
    assert!(ok, "the follower never caught up after its Raft stopped; its log:\n{log}");
    // The rows are readable a moment before the install returns (and the failpoint after it runs).
    restored(&c, &f);
    wait_for("the snapshot::installed failpoint to run", Duration::from_secs(10), || {
        std::fs::read_to_string(&c.node(&f).log).ok()?.contains("failpoint snapshot::installed").then_some(())
    });
    // And from disk, after a SIGKILL.
    let n = c.node_mut(&f);
    n.kill();
    n.env.clear();
    n.spawn();
    n.wait_ready();
    assert_eq!(c.node(&l).execute(json!([["INSERT INTO t VALUES(?)", 110]])).status, 200);
    let ok = holds_rows(&c, &f, 111);
    let log = std::fs::read_to_string(&c.node(&f).log).unwrap_or_default();
    assert!(ok, "the follower did not come back after a restart; its log:\n{log}");
}

/// A snapshot install that stops after the received file was put in place but before it was
/// swapped in is taken back (the file and its marker), the follower stays consistent, catches up
/// on the retry, and starts again after a SIGKILL (docs/DESIGN.md §6).
#[test]
fn an_install_stopped_before_the_swap_is_taken_back() {
    let (mut c, l, f) = follower_behind_a_compaction();
    let n = c.node_mut(&f);
    n.env.push(("FAILPOINTS".into(), "install::swap=1*return".into()));
    n.spawn();
    let ok = holds_rows(&c, &f, 100);
    let log = std::fs::read_to_string(&c.node(&f).log).unwrap_or_default();
    assert!(ok, "the follower never caught up; its log:\n{log}");
    restored(&c, &f);
    wait_for("the install::swap failpoint to run", Duration::from_secs(10), || {
        std::fs::read_to_string(&c.node(&f).log).ok()?.contains("failpoint install::swap").then_some(())
    });
    let n = c.node_mut(&f);
    assert!(!n.dir.join("db.sqlite.installing").exists());
    assert!(!n.dir.join("snapshots").join("installing.json").exists());
    n.kill();
    n.env.clear();
    n.spawn();
    n.wait_ready();
    assert_eq!(c.node(&l).execute(json!([["INSERT INTO t VALUES(?)", 100]])).status, 200);
    assert!(holds_rows(&c, &f, 101), "the follower did not come back after a restart");
}

/// The leader sends a new entry to its followers while its own log fsync runs
/// (`src/raft/presend.rs`), yet acknowledges the write only after that fsync. With the leader's
/// next append held up for 600 ms (less than an election timeout), both followers have the entry
/// in their logs long before the client has its answer, and the answer comes after the hold-up.
#[test]
fn followers_log_a_new_entry_while_the_leader_fsyncs_it() {
    let c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["CREATE TABLE t (v INTEGER)"])).status, 200);
    let last = |n: &Node| n.status()["store"]["raft"]["last_log_index"].as_u64().unwrap_or(0);
    let before = last(l);
    let followers: Vec<&Node> = c.nodes.iter().filter(|n| n.id != l.id).collect();
    wait_for("followers caught up", Duration::from_secs(10), || {
        followers.iter().all(|f| last(f) == before).then_some(())
    });

    l.failpoint("log_store::append_before_fsync=1*sleep(600)");
    let started = std::time::Instant::now();
    let url = l.url("/db/execute");
    let writer = std::thread::spawn(move || {
        let r = reqwest::blocking::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .body(json!([["INSERT INTO t VALUES(?)", 1]]).to_string())
            .send();
        (r.map(|r| r.status().as_u16()).unwrap_or(0), started.elapsed())
    });
    let logged = wait_for("both followers to log the new entry", Duration::from_secs(5), || {
        followers.iter().all(|f| last(f) > before).then(|| started.elapsed())
    });
    let (status, answered) = writer.join().expect("writer thread");
    l.failpoint("log_store::append_before_fsync=off");
    assert_eq!(status, 200);
    assert!(answered >= Duration::from_millis(550), "acknowledged before the leader's own fsync: {answered:?}");
    assert!(
        logged + Duration::from_millis(300) < answered,
        "the followers logged the entry at {logged:?}, only just before the answer at {answered:?}"
    );
    let accepted = l.metric_with("raftlite_replication_presend_total", &[("outcome", "accepted")]);
    assert!(accepted >= 2.0, "early sends accepted: {accepted}");
    for n in &c.nodes {
        n.wait_rows("SELECT v FROM t", vec![json!([1])]);
    }
}

/// Durable on a quorum before acknowledged (docs/DESIGN.md §5, invariant 1), from the followers'
/// side: with both followers' appends held for 600 ms before their fsync, the leader's own fsync
/// and the early send (`src/raft/presend.rs`) are not enough, and the write is acknowledged only
/// after a follower's fsync.
#[test]
fn a_write_waits_for_a_followers_fsync() {
    let c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["CREATE TABLE t (v INTEGER)"])).status, 200);
    let followers: Vec<&Node> = c.nodes.iter().filter(|n| n.id != l.id).collect();
    for n in &c.nodes {
        n.wait_rows("SELECT COUNT(*) FROM t", vec![json!([0])]);
    }
    for f in &followers {
        f.failpoint("log_store::append_before_fsync=1*sleep(600)");
    }
    let started = std::time::Instant::now();
    let r = l.execute(json!([["INSERT INTO t VALUES(?)", 1]]));
    let answered = started.elapsed();
    for f in &followers {
        f.failpoint("log_store::append_before_fsync=off");
    }
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(answered >= Duration::from_millis(550), "acknowledged before any follower's fsync: {answered:?}");
    for n in &c.nodes {
        n.wait_rows("SELECT v FROM t", vec![json!([1])]);
    }
}
