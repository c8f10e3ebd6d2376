//! `/metrics` from a running 3-node cluster, parsed with a Prometheus text-format parser; the
//! counters move as writes, reads, a leader kill and a snapshot happen. Plus `/debug/vars`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

/// Scrape and parse; also check every family has `# HELP` and `# TYPE` and the `raftlite_` prefix.
fn scrape(n: &Node) -> HashMap<String, f64> {
    let r = n.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let lines: Vec<String> = r.body.lines().map(str::to_string).collect();
    let scraped = prometheus_parse::Scrape::parse(lines.clone().into_iter().map(Ok)).expect("parse");
    let mut families = std::collections::BTreeSet::new();
    for s in &scraped.samples {
        let family = s.metric.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        families.insert(family.to_string());
        assert!(s.metric.starts_with("raftlite_"), "{}", s.metric);
    }
    for f in &families {
        assert!(lines.iter().any(|l| l.starts_with(&format!("# HELP {f} "))), "no HELP for {f}");
        assert!(lines.iter().any(|l| l.starts_with(&format!("# TYPE {f} "))), "no TYPE for {f}");
    }
    let mut out = HashMap::new();
    for s in scraped.samples {
        let mut key = s.metric.clone();
        let mut labels: Vec<(String, String)> = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.sort();
        for (k, v) in labels {
            key.push_str(&format!(",{k}={v}"));
        }
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        };
        out.insert(key, v);
    }
    out
}

fn sum(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

#[test]
fn counters_move_with_writes_reads_failover_and_snapshots() {
    let mut c = Cluster::start(3, &["-raft-snap-int", "1h"]);
    let l = c.wait_leader().id.clone();
    let leader = c.node(&l);
    let before = scrape(leader);
    assert_eq!(before.get("raftlite_raft_is_leader"), Some(&1.0));
    leader.execute(json!(["CREATE TABLE t (v)"]));
    for i in 0..20 {
        leader.execute(json!([["INSERT INTO t VALUES(?)", i]]));
        leader.query("SELECT COUNT(*) FROM t", "");
    }
    let after = scrape(leader);
    let writes =
        |m: &HashMap<String, f64>| sum(m, "raftlite_http_requests_total,endpoint=execute,method=POST,status=200");
    let reads = |m: &HashMap<String, f64>| sum(m, "raftlite_http_requests_total,endpoint=query,method=GET,status=200");
    assert_eq!(writes(&after) - writes(&before), 21.0);
    assert_eq!(reads(&after) - reads(&before), 20.0);
    assert!(after["raftlite_log_appends_total"] >= before["raftlite_log_appends_total"] + 21.0);
    assert!(after["raftlite_applied_entries_total"] > before["raftlite_applied_entries_total"]);
    assert!(after["raftlite_raft_applied_index"] > before["raftlite_raft_applied_index"]);
    assert!(after["raftlite_internode_bytes_out_total"] > before["raftlite_internode_bytes_out_total"]);
    assert!(after.keys().any(|k| k.starts_with("raftlite_raft_replication_lag_entries,follower=")));
    assert!(after["raftlite_sqlite_db_size_bytes"] > 0.0);
    // Replication latency, each side (a histogram's value here is its count). Each write is
    // proposed after the previous one committed, so each needed a call of its own to commit.
    let count = |m: &HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let rpcs = "raftlite_replication_rpc_seconds";
    assert!(
        count(&after, rpcs) >= count(&before, rpcs) + 21.0,
        "{} after {}",
        count(&after, rpcs),
        count(&before, rpcs)
    );
    let f = c.follower().id.clone();
    let fb = scrape(c.node(&f));
    assert!(count(&fb, "raftlite_follower_append_seconds") >= 1.0);
    // A follower forwards: counted on the follower.
    c.node(&f).execute(json!(["INSERT INTO t VALUES(100)"]));
    assert_eq!(scrape(c.node(&f))["raftlite_http_forwarded_total"] - fb["raftlite_http_forwarded_total"], 1.0);
    // A snapshot.
    assert_eq!(c.node(&l).post("/snapshot", "text/plain", "").status, 200);
    assert!(scrape(c.node(&l))["raftlite_snapshots_total"] >= 1.0);
    // Kill the leader: the survivors see a leader change, and one of them started an election.
    let survivors: Vec<String> = c.nodes.iter().filter(|n| n.id != l).map(|n| n.id.clone()).collect();
    let changes_before: f64 = survivors.iter().map(|s| scrape(c.node(s))["raftlite_raft_leader_changes_total"]).sum();
    c.node_mut(&l).kill();
    c.wait_leader();
    wait_for("leader change counted", Duration::from_secs(20), || {
        let now: f64 = survivors.iter().map(|s| scrape(c.node(s))["raftlite_raft_leader_changes_total"]).sum();
        (now > changes_before).then_some(())
    });
    let elections: f64 = survivors.iter().map(|s| scrape(c.node(s))["raftlite_raft_elections_started_total"]).sum();
    assert!(elections >= 1.0);
}

#[test]
fn debug_vars_and_metrics_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("a"), &[]);
    let v = n.get("/debug/vars").json();
    assert!(
        v["cmdline"].is_array() && v["store"]["num_snapshots"].is_number() && v["cluster"]["num_join_req"].is_number()
    );
    assert!(v["http"]["user_snapshots"].is_number());
    assert_eq!(n.get("/debug/vars?key=cluster").json()["num_join_req"], 0);
    assert_eq!(n.get("/debug/vars?key=nope").body, "{}");
    // /status sections of docs/API.md §10 that raftlite has.
    let st = n.status();
    for k in ["store", "http", "node", "build", "runtime", "os", "cluster", "network", "extensions"] {
        assert!(st.get(k).is_some(), "/status lacks {k}");
    }
    let off = Node::start(&dir.path().join("b"), &["-metrics=false"]);
    assert_eq!(off.get("/metrics").status, 503);
    assert_eq!(off.execute(json!(["CREATE TABLE t (x)"])).status, 200);
}

/// Failure counters with a fixed label set read 0 on a healthy node from the start, so that a
/// dashboard or an alert on them sees a value, not "no data".
#[test]
fn failure_counters_are_exported_from_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("data"), &[]);
    let m = scrape(&n);
    for actor in raftlite::actors::supervise::ACTORS {
        let key = format!("raftlite_actor_restarts_total,actor={actor}");
        assert_eq!(m.get(&key), Some(&0.0), "{key} missing or not 0");
    }
    for name in ["raftlite_raft_rebuilds_total", "raftlite_restores_failed_total", "raftlite_write_queue_retries_total"]
    {
        assert_eq!(m.get(name), Some(&0.0), "{name} missing or not 0");
    }
}
