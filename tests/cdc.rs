//! Change data capture (`-cdc-config`) end to end: real nodes, a real HTTP endpoint (the test
//! sink in `raftlite::harness::cdc_sink`), and the stdout sink. Every committed change arrives at
//! least once and in index order; nothing rolled back ever arrives; the endpoint going away, a
//! node restarted with events still queued, the leader killed mid-stream, a follower left
//! behind while snapshots are taken, and a node that joined from a snapshot and then leads lose
//! nothing; a full queue drops the oldest events and says so.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use raftlite::harness::cdc_sink::CdcSink;

const WAIT: Duration = Duration::from_secs(60);

/// Quick delivery and retries, so the tests do not wait on the defaults.
fn fast(endpoint: &str) -> Value {
    json!({
        "endpoint": endpoint,
        "service_id": "cdc-test",
        "max_batch_size": 5,
        "max_batch_delay": "20ms",
        "high_watermark_interval": "100ms",
        "transmit_timeout": "2s",
        "transmit_min_backoff": "50ms",
        "transmit_max_backoff": "200ms",
    })
}

fn cdc(n: &Node) -> Value {
    n.status()["cdc"].clone()
}

/// Every event the sink received: (index, op, table, row), in arrival order.
fn events(sink: &CdcSink) -> Vec<(u64, String, String, Value)> {
    let mut out = Vec::new();
    for (index, g, _) in sink.groups() {
        for e in g["events"].as_array().into_iter().flatten() {
            let row = if e["after"].is_null() { e["before"].clone() } else { e["after"].clone() };
            out.push((
                index,
                e["op"].as_str().unwrap_or("").to_string(),
                e["table"].as_str().unwrap_or("").into(),
                row,
            ));
        }
    }
    out
}

/// The `v` values of every INSERT received.
fn inserted(sink: &CdcSink) -> BTreeSet<String> {
    events(sink)
        .into_iter()
        .filter(|(_, op, _, _)| op == "INSERT")
        .filter_map(|(_, _, _, r)| r["v"].as_str().map(String::from))
        .collect()
}

fn wait_inserted(sink: &CdcSink, want: &BTreeSet<String>) {
    wait_for(&format!("{} inserts at the sink", want.len()), WAIT, || {
        let got = inserted(sink);
        want.is_subset(&got).then_some(())
    });
}

/// Each POST carries groups in increasing index order, and each node's POSTs move forward.
fn assert_in_order(sink: &CdcSink) {
    let mut last_by_node: BTreeMap<String, u64> = BTreeMap::new();
    for p in sink.posts() {
        let node = p.body["node_id"].as_str().unwrap_or("").to_string();
        let idx: Vec<u64> =
            p.body["payload"].as_array().into_iter().flatten().map(|g| g["index"].as_u64().unwrap_or(0)).collect();
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "a POST out of order: {idx:?}");
        let last = last_by_node.entry(node.clone()).or_insert(0);
        assert!(idx.first().is_none_or(|f| *f > *last), "node {node} went back: {idx:?} after {last}");
        *last = idx.last().copied().unwrap_or(*last);
    }
}

#[test]
fn single_node_delivers_what_commits_through_outages_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = CdcSink::start("127.0.0.1").expect("sink");
    let cfg = write_config(dir.path(), "cdc.json", fast(&sink.url()));
    let mut n = Node::start(&dir.path().join("n"), &["-cdc-config", &cfg]);

    assert_eq!(n.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"])).status, 200);
    let r = n.execute(json!([
        "INSERT INTO t (v) VALUES ('a')",
        "INSERT INTO t (v) VALUES ('b')",
        "UPDATE t SET v = 'bb' WHERE id = 2",
        "DELETE FROM t WHERE id = 1"
    ]));
    assert_eq!(r.status, 200, "{}", r.body);
    // Rolled back: a failed client transaction, and a statement that fails on its second row.
    let r = n.execute_q("transaction", json!(["INSERT INTO t (v) VALUES ('never-1')", "INSERT INTO nope VALUES (1)"]));
    assert!(r.body.contains("no such table"), "{}", r.body);
    let r = n.execute(json!(["INSERT INTO t (id, v) VALUES (10, 'never-2'), (2, 'dup')"]));
    assert!(r.body.contains("UNIQUE"), "{}", r.body);
    assert_eq!(n.execute(json!(["INSERT INTO t (v) VALUES ('c')"])).status, 200);

    wait_inserted(&sink, &["a", "b", "c"].iter().map(|s| s.to_string()).collect());
    let got = events(&sink);
    let summary: Vec<(String, Value)> = got.iter().map(|(_, op, _, row)| (op.clone(), row.clone())).collect();
    assert_eq!(
        summary,
        vec![
            ("INSERT".into(), json!({"id": 1, "v": "a"})),
            ("INSERT".into(), json!({"id": 2, "v": "b"})),
            ("UPDATE".into(), json!({"id": 2, "v": "bb"})),
            ("DELETE".into(), json!({"id": 1, "v": "a"})),
            ("INSERT".into(), json!({"id": 3, "v": "c"})),
        ]
    );
    let posts = sink.posts();
    assert_eq!(posts[0].body["service_id"], "cdc-test");
    assert_eq!(posts[0].body["node_id"], "1");
    let group = &sink.groups()[0].1;
    assert!(group["commit_timestamp"].as_i64().unwrap_or(0) > 1_600_000_000_000_000_000, "{group}");
    assert_eq!(group["events"][2]["before"], json!({"id": 2, "v": "b"}));
    assert_in_order(&sink);
    // The leader shares how far it got, and every counter says what happened.
    let last = got.last().map(|e| e.0).unwrap_or(0);
    wait_for("the high-water mark", WAIT, || (cdc(&n)["high_water_mark"].as_u64() >= Some(last)).then_some(()));
    let st = cdc(&n);
    assert_eq!(st["events_sent"], 5, "{st}");
    assert_eq!(st["queue"]["depth"], 0, "{st}");
    assert_eq!(st["failures"], 0, "{st}");
    assert!(n.metric("raftlite_cdc_events_sent_total") >= 5.0);
    assert!(n.metric("raftlite_cdc_delivered_index") >= last as f64);

    // The endpoint goes away: writes go on, failures are counted, and everything arrives once
    // it is back.
    sink.down();
    let outage: BTreeSet<String> = (0..10).map(|i| format!("outage-{i}")).collect();
    for v in &outage {
        assert_eq!(n.execute(json!([["INSERT INTO t (v) VALUES (?)", v]])).status, 200);
    }
    wait_for("failures counted", WAIT, || (cdc(&n)["failures"].as_u64() > Some(0)).then_some(()));
    assert!(cdc(&n)["queue"]["depth"].as_u64() > Some(0));
    sink.up().expect("sink up");
    wait_inserted(&sink, &outage);

    // Killed with events still queued: they are delivered after the restart.
    sink.set_status(503);
    let queued: BTreeSet<String> = (0..5).map(|i| format!("queued-{i}")).collect();
    for v in &queued {
        assert_eq!(n.execute(json!([["INSERT INTO t (v) VALUES (?)", v]])).status, 200);
    }
    wait_for("the queue to hold them", WAIT, || (cdc(&n)["queue"]["depth"].as_u64() >= Some(5)).then_some(()));
    n.kill();
    n.spawn();
    n.wait_ready();
    assert!(cdc(&n)["queue"]["depth"].as_u64() >= Some(5), "{}", cdc(&n));
    sink.set_status(200);
    wait_inserted(&sink, &queued);
    assert_in_order(&sink);
    let all = inserted(&sink);
    assert!(!all.iter().any(|v| v.starts_with("never")), "a rolled-back row was sent: {all:?}");
}

#[test]
fn table_filter_row_ids_only_and_the_stdout_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = CdcSink::start("127.0.0.1").expect("sink");
    let mut c = fast(&sink.url());
    c["table_filter"] = json!("^keep");
    c["row_ids_only"] = json!(true);
    let cfg = write_config(dir.path(), "cdc.json", c);
    let n = Node::start(&dir.path().join("n"), &["-cdc-config", &cfg]);
    n.execute(json!(["CREATE TABLE keep_me (id INTEGER PRIMARY KEY, v)", "CREATE TABLE other (v)"]));
    n.execute(json!(["INSERT INTO other VALUES (1)", "INSERT INTO keep_me (v) VALUES ('x')", "DELETE FROM keep_me"]));
    wait_for("two events", WAIT, || (events(&sink).len() >= 2).then_some(()));
    let g = &sink.groups()[0].1;
    assert_eq!(
        g["events"],
        json!([
            {"op": "INSERT", "table": "keep_me", "new_row_id": 1},
            {"op": "DELETE", "table": "keep_me", "old_row_id": 1}
        ])
    );
    drop(n);

    // `-cdc-config stdout`: one JSON line per batch on standard output.
    let out_path = dir.path().join("stdout.txt");
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let (http, raft) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let extra = vec!["-cdc-config".to_string(), "stdout".to_string()];
    let mut child = Some(
        raftlite::harness::command(
            Path::new(env!("CARGO_BIN_EXE_raftlited")),
            "s1",
            &http,
            &raft,
            &extra,
            &dir.path().join("s"),
        )
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn"),
    );
    let client = reqwest::blocking::Client::new();
    raftlite::harness::wait_ready(&client, &http, WAIT).expect("ready");
    let r = client
        .post(format!("http://{http}/db/execute"))
        .json(&json!(["CREATE TABLE s (v)", "INSERT INTO s VALUES ('to stdout')"]))
        .send()
        .expect("execute");
    assert!(r.status().is_success());
    let line = wait_for("a line on stdout", WAIT, || {
        let text = std::fs::read_to_string(&out_path).ok()?;
        text.lines().find(|l| l.contains("to stdout")).map(String::from)
    });
    raftlite::harness::kill(&mut child);
    let v: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["node_id"], "s1");
    assert_eq!(
        v["payload"][0]["events"][0],
        json!({"op": "INSERT", "table": "s", "new_row_id": 1, "after": {"v": "to stdout"}})
    );
}

#[test]
fn a_full_queue_drops_the_oldest_events_counts_them_and_writes_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = CdcSink::start("127.0.0.1").expect("sink");
    sink.set_status(503);
    let mut c = fast(&sink.url());
    c["max_queue_bytes"] = json!(8192);
    let cfg = write_config(dir.path(), "cdc.json", c);
    let n = Node::start(&dir.path().join("n"), &["-cdc-config", &cfg]);
    n.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]));
    let pad = "x".repeat(200);
    for i in 0..100 {
        let r = n.execute(json!([["INSERT INTO t (v) VALUES (?)", format!("{i:03}-{pad}")]]));
        assert_eq!(r.status, 200, "writes go on with the queue full: {}", r.body);
    }
    let st = cdc(&n);
    let dropped = st["queue"]["events_dropped"].as_u64().unwrap_or(0);
    assert!(dropped > 0, "{st}");
    assert!(st["queue"]["bytes"].as_u64() <= Some(8192), "{st}");
    assert_eq!(n.metric("raftlite_cdc_events_dropped_total"), dropped as f64);
    wait_for("the drop logged", WAIT, || {
        std::fs::read_to_string(&n.log).ok().filter(|l| l.contains("CDC queue full")).map(|_| ())
    });
    sink.set_status(200);
    wait_inserted(&sink, &[format!("099-{pad}")].into_iter().collect());
    let got = inserted(&sink);
    assert!(!got.contains(&format!("000-{pad}")), "the oldest went first");
    assert_eq!(got.len() as u64 + dropped, 100, "every event is either delivered or counted as dropped");
}

#[test]
fn three_nodes_deliver_every_committed_change_across_a_leader_kill() {
    let sink = CdcSink::start("127.0.0.1").expect("sink");
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(cfg_dir.path(), "cdc.json", fast(&sink.url()));
    let mut c = Cluster::start(3, &["-cdc-config", &cfg]);
    let leader = c.wait_leader().id.clone();
    assert_eq!(c.node(&leader).execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"])).status, 200);

    let mut acked = BTreeSet::new();
    let mut write = |c: &Cluster, i: usize| {
        let v = format!("w-{i}");
        wait_for(&format!("write {i} accepted"), WAIT, || {
            let n = c.leader()?;
            let r = n.post_opt("/db/execute", json!([["INSERT INTO t (v) VALUES (?)", &v]]).to_string())?;
            (r.status == 200 && r.body.contains("last_insert_id")).then_some(())
        });
        acked.insert(v);
        if i.is_multiple_of(7) {
            // A transaction that fails: its row must never reach the sink.
            if let Some(n) = c.leader() {
                let body = json!([["INSERT INTO t (v) VALUES (?)", format!("rb-{i}")], "INSERT INTO nope VALUES (1)"]);
                let _ = n.post_opt("/db/execute?transaction", body.to_string());
            }
        }
    };
    for i in 0..40 {
        write(&c, i);
    }
    // Kill the leader while the stream is flowing.
    let old = c.wait_leader().id.clone();
    c.node_mut(&old).kill();
    wait_for("a new leader", WAIT, || c.leader().filter(|l| l.id != old).map(|_| ()));
    for i in 40..80 {
        write(&c, i);
    }
    wait_inserted(&sink, &acked);
    assert_in_order(&sink);
    let got = inserted(&sink);
    assert!(!got.iter().any(|v| v.starts_with("rb-")), "a rolled-back row was sent");
    // Both leaders sent; a consumer de-duplicating on `index` sees each change once.
    let senders: BTreeSet<String> =
        sink.posts().iter().filter_map(|p| p.body["node_id"].as_str().map(String::from)).collect();
    assert!(senders.len() >= 2, "{senders:?}");
    let mut by_index: BTreeMap<u64, Value> = BTreeMap::new();
    for (index, g, _) in sink.groups() {
        if let Some(prev) = by_index.insert(index, g["events"].clone()) {
            assert_eq!(prev, g["events"], "index {index} was sent twice with different events");
        }
    }
    // The restarted node catches up and its queue is pruned by the shared mark.
    c.node_mut(&old).spawn();
    c.node(&old).wait_ready();
    let max = *by_index.keys().last().unwrap_or(&0);
    wait_for("the old leader's queue pruned", WAIT, || {
        let st = cdc(c.node(&old));
        (st["high_water_mark"].as_u64() >= Some(max) && st["queue"]["depth"] == 0).then_some(())
    });
}

#[test]
fn a_follower_left_behind_catches_up_from_the_log_and_captures_every_change() {
    // Nothing is delivered while the endpoint fails, so the log must keep every entry from the
    // first undelivered one, however often snapshots are taken: a follower that was down catches
    // up from the log, capturing each change, instead of installing a snapshot that skips them.
    let sink = CdcSink::start("127.0.0.1").expect("sink");
    sink.set_status(503);
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(cfg_dir.path(), "cdc.json", fast(&sink.url()));
    let mut c = Cluster::start(3, &["-cdc-config", &cfg, "-raft-snap", "16", "-raft-snap-int", "100ms"]);
    let leader = c.wait_leader().id.clone();
    assert_eq!(c.node(&leader).execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"])).status, 200);
    let behind = c.nodes.iter().find(|n| n.id != leader).expect("a follower").id.clone();
    c.node_mut(&behind).kill();
    let mut want = BTreeSet::new();
    for i in 0..80 {
        let v = format!("r-{i}");
        assert_eq!(c.node(&leader).execute(json!([["INSERT INTO t (v) VALUES (?)", &v]])).status, 200);
        want.insert(v);
    }
    let raft = |n: &Node, key: &str| n.status()["store"]["raft"][key].as_u64().unwrap_or(0);
    wait_for("snapshots on the leader", WAIT, || (raft(c.node(&leader), "last_snapshot_index") >= 70).then_some(()));
    // Also an operator's compaction that asks to keep no log at all. A write first, so that there
    // is something to compact: the policy may have just snapshotted everything (204), and then
    // the request does not purge; so until one is taken (200).
    let mut extra = 1000;
    wait_for("an operator's snapshot", WAIT, || {
        extra += 1;
        let v = format!("r-{extra}");
        assert_eq!(c.node(&leader).execute(json!([["INSERT INTO t (v) VALUES (?)", &v]])).status, 200);
        want.insert(v);
        (c.node(&leader).post("/snapshot?trailing_logs=0", "application/json", "").status == 200).then_some(())
    });
    // The inserts follow a dozen entries at most (membership changes, the CREATE TABLE).
    let purged = raft(c.node(&leader), "purged_index");
    assert!(purged < 20, "the log was purged to {purged}, past undelivered changes");

    c.node_mut(&behind).spawn();
    c.node(&behind).wait_ready();
    let leader_depth = cdc(c.node(&leader))["queue"]["depth"].as_u64().unwrap_or(0);
    assert!(leader_depth >= 81, "{leader_depth}");
    wait_for("the follower's queue caught up", WAIT, || {
        (cdc(c.node(&behind))["queue"]["depth"].as_u64() == Some(leader_depth)).then_some(())
    });
    let log = std::fs::read_to_string(&c.node(&behind).log).unwrap_or_default();
    assert!(!log.contains("installing a snapshot"), "the follower installed a snapshot");

    // Once delivered, the log is purged behind snapshots again.
    sink.set_status(200);
    wait_inserted(&sink, &want);
    let before = raft(c.node(&leader), "last_snapshot_index");
    for i in 80..120 {
        assert_eq!(c.node(&leader).execute(json!([["INSERT INTO t (v) VALUES (?)", format!("r-{i}")]])).status, 200);
    }
    wait_for("the log purged after delivery", WAIT, || (raft(c.node(&leader), "purged_index") > before).then_some(()));
}

#[test]
fn a_node_that_joins_from_a_snapshot_gets_the_undelivered_changes_and_sends_them_when_it_leads() {
    // A node that starts from a snapshot never applies the entries it covers, so it captures none
    // of their changes: the snapshot carries the ones still undelivered. Here the only node that
    // can lead after the old leader dies is one that joined from a snapshot while the endpoint was
    // down; every change must still arrive.
    let sink = CdcSink::start("127.0.0.1").expect("sink");
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(cfg_dir.path(), "cdc.json", fast(&sink.url()));
    let mut c = Cluster::start(3, &["-cdc-config", &cfg, "-raft-snap", "16", "-raft-snap-int", "100ms"]);
    let leader = c.wait_leader().id.clone();
    let leader_raft = c.node(&leader).raft.clone();
    assert_eq!(c.node(&leader).execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"])).status, 200);
    let raft = |n: &Node, key: &str| n.status()["store"]["raft"][key].as_u64().unwrap_or(0);
    let insert = |c: &Cluster, v: &str| {
        assert_eq!(c.node(&leader).execute(json!([["INSERT INTO t (v) VALUES (?)", v]])).status, 200);
    };

    // Delivered, so the log is purged behind it: a node that needs its start gets a snapshot.
    let mut all = BTreeSet::new();
    for i in 0..30 {
        let v = format!("d-{i}");
        insert(&c, &v);
        all.insert(v);
    }
    wait_inserted(&sink, &all);
    wait_for("the log purged behind deliveries", WAIT, || (raft(c.node(&leader), "purged_index") > 0).then_some(()));

    // The joiner is never node 1 (which bootstraps when its data is gone); the other follower
    // goes down now, so its log stays behind and it cannot win an election later.
    let followers: Vec<String> = c.nodes.iter().filter(|n| n.id != leader).map(|n| n.id.clone()).collect();
    let joiner = followers.iter().find(|id| *id != "1").expect("a follower other than node 1").clone();
    let other = followers.iter().find(|id| **id != joiner).expect("another follower").clone();
    c.node_mut(&other).kill();

    // Undelivered changes, then a snapshot that covers them all.
    sink.set_status(503);
    for i in 0..40 {
        let v = format!("u-{i}");
        insert(&c, &v);
        all.insert(v);
    }
    let last = raft(c.node(&leader), "applied_index");
    wait_for("a snapshot covering the undelivered writes", WAIT, || {
        let _ = c.node(&leader).post("/snapshot", "application/json", "");
        (raft(c.node(&leader), "last_snapshot_index") >= last).then_some(())
    });

    // The joiner loses its data and joins again, through the leader: it gets the snapshot.
    c.node_mut(&joiner).kill();
    std::fs::remove_dir_all(&c.node(&joiner).dir).expect("wipe the joiner");
    {
        let j = c.node_mut(&joiner);
        if let Some(at) = j.extra.iter().position(|a| a == "-join") {
            j.extra[at + 1] = leader_raft.clone();
        }
        j.spawn();
    }
    c.node(&joiner).wait_ready();
    let log = |id: &str| std::fs::read_to_string(&c.node(id).log).unwrap_or_default();
    wait_for("the joiner installed a snapshot with the changes it covers", WAIT, || {
        log(&joiner).contains("queued the undelivered changes it carried").then_some(())
    });
    let queue = cdc(c.node(&joiner))["queue"].clone();
    let (depth, shipped) = (queue["depth"].as_u64().unwrap_or(0), queue["groups_from_snapshots"].as_u64().unwrap_or(0));
    assert!(depth >= 40 && shipped >= 40, "the joiner queued {depth} groups, {shipped} from the snapshot");
    assert!(c.node(&joiner).metric("raftlite_cdc_groups_from_snapshots_total") >= 40.0);

    // The old leader goes; the other follower comes back behind, so only the joiner can lead.
    c.node_mut(&leader).kill();
    c.node_mut(&other).spawn();
    wait_for("the joiner to lead", WAIT, || c.leader().filter(|l| l.id == joiner).map(|_| ()));
    sink.set_status(200);
    wait_inserted(&sink, &all);
    assert_in_order(&sink);
}

#[test]
fn bad_cdc_configurations_refuse_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write_config(dir.path(), "bad.json", json!({"endpoint": "http://127.0.0.1:9/x", "max_batch_size": 0}));
    assert_refuses_to_start(&dir.path().join("a"), &["-cdc-config", &bad], "max_batch_size");
    let unknown = write_config(dir.path(), "unknown.json", json!({"endpoint": "stdout", "batch": 1}));
    assert_refuses_to_start(&dir.path().join("b"), &["-cdc-config", &unknown], "batch");
    assert_refuses_to_start(&dir.path().join("c"), &["-cdc-config", "/no/such/cdc.json"], "/no/such/cdc.json");
    assert_refuses_to_start(
        &dir.path().join("d"),
        &["-cdc-config", "stdout", "-raft-non-voter", "-join", "127.0.0.1:1"],
        "-raft-non-voter",
    );
}

/// An `https://` endpoint that asks for a client certificate: the node verifies it with
/// `ca_cert_file` and presents `cert_file`/`key_file`; with a CA that did not issue the
/// endpoint's certificate, deliveries fail (counted) and nothing arrives.
#[test]
fn an_https_endpoint_with_mutual_tls() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = common::tls::Pki::new(dir.path(), "cdc");
    let other = common::tls::Pki::new(dir.path(), "other");
    let (cert, key) = pki.issue("endpoint", "endpoint");
    let (client_cert, client_key) = pki.issue("node", "node");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.ca("cdc")).expect("ca") {
        roots.add(c.expect("ca cert")).expect("root");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        common::tls::provider(),
    )
    .build()
    .expect("verifier");
    let certs: Vec<CertificateDer> =
        CertificateDer::pem_file_iter(&cert).expect("cert").collect::<Result<_, _>>().expect("cert");
    let server = rustls::ServerConfig::builder_with_provider(common::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, PrivateKeyDer::from_pem_file(&key).expect("key"))
        .expect("server config");
    let sink = CdcSink::start_with("127.0.0.1", Some(std::sync::Arc::new(server))).expect("sink");
    assert!(sink.url().starts_with("https://"));

    let mut good = fast(&sink.url());
    good["ca_cert_file"] = json!(pki.ca("cdc"));
    good["cert_file"] = json!(client_cert);
    good["key_file"] = json!(client_key);
    let cfg = write_config(dir.path(), "good.json", good.clone());
    let n = Node::start(&dir.path().join("n"), &["-cdc-config", &cfg]);
    n.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t (v) VALUES ('over tls')"]));
    wait_inserted(&sink, &["over tls".to_string()].into_iter().collect());
    drop(n);

    let mut wrong = good;
    wrong["ca_cert_file"] = json!(other.ca("other"));
    let cfg = write_config(dir.path(), "wrong.json", wrong);
    let n = Node::start(&dir.path().join("w"), &["-cdc-config", &cfg]);
    n.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t (v) VALUES ('untrusted')"]));
    wait_for("failures counted", WAIT, || (cdc(&n)["failures"].as_u64() > Some(0)).then_some(()));
    assert!(!inserted(&sink).contains("untrusted"));
    wait_for("the failure logged", WAIT, || {
        std::fs::read_to_string(&n.log).ok().filter(|l| l.contains("CDC: delivery failed")).map(|_| ())
    });
}
