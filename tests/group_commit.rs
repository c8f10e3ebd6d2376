//! Group commit: concurrent write requests share log entries (one append and fsync, one apply
//! transaction), and each still gets its own result, exactly as if it had an entry to itself.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;

#[test]
fn concurrent_writes_share_entries_and_keep_their_own_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("data"), &[]);
    assert_eq!(n.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER UNIQUE)"])).status, 200);
    let got: Arc<Mutex<HashMap<i64, Value>>> = Arc::default();
    let url = n.url("/db/execute");
    let threads: Vec<_> = (0..16)
        .map(|c| {
            let (got, url) = (got.clone(), url.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                for i in 0..40 {
                    let v = c * 1000 + i;
                    // Every fifth request also carries a failing statement: its error must stay its own.
                    let body = if i % 5 == 0 {
                        json!([["INSERT INTO t(v) VALUES(?)", v], "INSERT INTO nope VALUES(1)"])
                    } else {
                        json!([["INSERT INTO t(v) VALUES(?)", v]])
                    };
                    let r = client.post(&url).header("Content-Type", "application/json").body(body.to_string()).send();
                    let j: Value = r.expect("POST").json().expect("JSON");
                    got.lock().expect("lock").insert(v, j);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let rows = n.rows("SELECT id, v FROM t");
    let ids: HashMap<i64, i64> = rows.iter().map(|r| (r[1].as_i64().unwrap(), r[0].as_i64().unwrap())).collect();
    assert_eq!(ids.len(), 640);
    for (v, j) in got.lock().expect("lock").iter() {
        let r = &j["results"];
        assert_eq!(r[0]["rows_affected"], 1, "{j}");
        assert_eq!(r[0]["last_insert_id"].as_i64(), ids.get(v).copied(), "request for {v} got another's id: {j}");
        if v % 1000 % 5 == 0 {
            assert_eq!(r[1]["error"], "no such table: nope", "{j}");
        } else {
            assert_eq!(r.as_array().map(|a| a.len()), Some(1), "{j}");
        }
    }
    // Requests were batched: more requests than log entries carried them.
    let m = n.get("/metrics").body;
    let field =
        |name: &str| -> f64 { m.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0) };
    let (sum, count) = (field("raftlite_group_commit_requests_sum"), field("raftlite_group_commit_requests_count"));
    println!("{sum} requests in {count} proposals");
    assert!(sum >= 641.0 && count < sum, "no batching: {sum} requests in {count} proposals");
}

/// Queued writes (docs/API.md §6): answered at once with increasing sequence numbers, written in
/// batches; `wait` waits for the commit; a follower's queue reaches the leader; an empty list
/// without `wait` is a 400; `/status` shows the queue.
#[test]
fn queued_writes_are_batched_and_reach_the_leader() {
    let c = Cluster::start(3, &["-write-queue-batch-size", "64", "-write-queue-timeout", "20ms"]);
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["CREATE TABLE q (v INTEGER)"])).status, 200);
    let f = c.follower();
    let mut last = 0i64;
    for (i, n) in [l, f].iter().enumerate() {
        for v in 0..100 {
            let r = n.execute_q("queue", json!([["INSERT INTO q VALUES(?)", i as i64 * 1000 + v]]));
            assert_eq!(r.status, 200, "{}", r.body);
            let j = r.json();
            assert_eq!(j["results"], json!([]));
            let seq = j["sequence_number"].as_i64().expect("sequence_number");
            assert!(seq > last || i == 1, "sequence numbers increase: {seq} after {last}");
            last = seq;
        }
        // A flush barrier: an empty list with wait returns once everything before it committed.
        let r = n.execute_q("queue&wait", json!([]));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(l.rows("SELECT COUNT(*) FROM q"), vec![json!([200])]);
    assert_eq!(l.execute_q("queue", json!([])).status, 400);
    let st = f.status();
    let q = &st["http"]["queue"]["_default"];
    assert_eq!(q["batch_size"], 64);
    assert!(q["sequence_number"].as_i64().unwrap_or(0) > 0, "{q}");
    let m = l.get("/metrics").body;
    let batches = m
        .lines()
        .find_map(|x| x.strip_prefix("raftlite_write_queue_batches_total ")?.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(batches > 0.0 && batches < 100.0, "100 queued requests in {batches} batches on the leader");
}

/// Concurrent linearizable reads share read barriers (one heartbeat round for many reads).
#[test]
fn concurrent_linearizable_reads_share_barriers() {
    let c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["CREATE TABLE r (v)", "INSERT INTO r VALUES(1)"])).status, 200);
    let url = l.url("/db/query?level=linearizable&q=SELECT%20v%20FROM%20r");
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                for _ in 0..30 {
                    let body = client.get(&url).send().expect("GET").text().expect("body");
                    assert!(body.contains("[[1]]"), "{body}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader");
    }
    let m = l.get("/metrics").body;
    let field =
        |name: &str| -> f64 { m.lines().find_map(|x| x.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0) };
    let (sum, count) = (field("raftlite_read_barrier_reads_sum"), field("raftlite_read_barrier_reads_count"));
    println!("{sum} linearizable reads in {count} barriers");
    assert!(sum >= 480.0 && count < sum, "no sharing: {sum} reads in {count} barriers");
}

/// Eight writers insert 40 rows each into `t` through the leader `l`, one request at a time;
/// returns once every node of `c` has all 320.
fn insert_concurrently(c: &Cluster, l: &Node) {
    let url = l.url("/db/execute");
    let threads: Vec<_> = (0..8)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                for i in 0..40 {
                    let r = client
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .body(json!([["INSERT INTO t VALUES(?)", c * 1000 + i]]).to_string())
                        .send()
                        .expect("POST");
                    assert_eq!(r.status().as_u16(), 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    for n in &c.nodes {
        n.wait_rows("SELECT COUNT(*) FROM t", vec![json!([320])]);
    }
}

/// In a cluster under concurrent writes, one entry is in flight at a time (the default), so the
/// followers hold each entry before the next is made and the leader sends it to them while it
/// fsyncs it (`src/raft/presend.rs`). With two in flight, the next entry was made while the one
/// before was still on its way, and only a few percent went early.
#[test]
fn concurrent_writes_in_a_cluster_reach_the_followers_during_the_leaders_fsync() {
    let c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["CREATE TABLE t (v INTEGER)"])).status, 200);
    let (appends_before, early_before) =
        (l.metric("raftlite_log_appends_total"), l.metric("raftlite_replication_presend_total"));
    insert_concurrently(&c, l);
    let appends = l.metric("raftlite_log_appends_total") - appends_before;
    let early = l.metric("raftlite_replication_presend_total") - early_before;
    println!("{early} early sends for {appends} entries to two followers");
    // Each entry's proposal waits for the one before to commit, which one follower at least has
    // acknowledged by then: at least half of the sends to the two followers go early.
    assert!(early >= appends * 2.0 * 0.4, "{early} early sends for {appends} entries to two followers");
}

/// An entry a follower accepted from the leader's early send does not cross to it a second time:
/// openraft's replication takes that send's answer as the follower's (`Presend::took`,
/// `src/raft/presend.rs`). One write at a time, so each entry goes early to the followers that
/// hold the one before; without this, each follower receives every entry twice.
#[test]
fn an_entry_sent_early_crosses_to_a_follower_once() {
    let c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["CREATE TABLE t (v INTEGER)"])).status, 200);
    for n in &c.nodes {
        n.wait_rows("SELECT COUNT(*) FROM t", vec![json!([0])]);
    }
    let followers: Vec<_> = c.nodes.iter().filter(|n| n.id != l.id).collect();
    let received = |n: &Node| n.metric("raftlite_follower_append_seconds_count");
    let before: Vec<f64> = followers.iter().map(|n| received(n)).collect();
    let answered_before = l.metric("raftlite_replication_presend_answers_total");
    const WRITES: usize = 40;
    for i in 0..WRITES {
        assert_eq!(l.execute(json!([["INSERT INTO t VALUES(?)", i]])).status, 200);
    }
    for n in &c.nodes {
        n.wait_rows("SELECT COUNT(*) FROM t", vec![json!([WRITES])]);
    }
    let answered = l.metric("raftlite_replication_presend_answers_total") - answered_before;
    for (n, before) in followers.iter().zip(before) {
        let got = received(n) - before;
        println!("a follower received {got} appends with entries for {WRITES} writes");
        // Twice per entry without the answer standing in: the early send, then openraft's.
        assert!(got <= WRITES as f64 * 1.5, "a follower received {got} appends with entries for {WRITES} writes");
    }
    println!("{answered} of openraft's requests answered by an early send");
    assert!(answered >= WRITES as f64, "{answered} of openraft's requests answered by an early send");
}

/// After each commit openraft tells every follower the new commit index, in a request of its own
/// when nothing else is waiting. Under concurrent writes the leader appends the next entry at
/// once, and its early send carries the commit index: that send's answer stands for the request
/// (`Presend::covered`, `src/raft/presend.rs`), so a follower receives about one request per
/// entry instead of two. When the writes stop, the request goes out after a moment, and every
/// follower still applies the last write.
#[test]
fn the_commit_index_rides_on_the_next_early_send() {
    let c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["CREATE TABLE t (v INTEGER)"])).status, 200);
    let (appends_before, carried_before) =
        (l.metric("raftlite_log_appends_total"), l.metric("raftlite_replication_commit_carried_total"));
    insert_concurrently(&c, l);
    let appends = l.metric("raftlite_log_appends_total") - appends_before;
    let carried = l.metric("raftlite_replication_commit_carried_total") - carried_before;
    println!("{carried} commit-index requests carried by early sends for {appends} entries to two followers");
    assert!(carried >= appends * 2.0 * 0.1, "{carried} commit-index requests carried for {appends} entries");
}
