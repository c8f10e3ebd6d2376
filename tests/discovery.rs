//! DNS discovery (`-disco-mode dns|dns-srv` with `-bootstrap-expect`) against a real DNS server
//! on loopback (`raftlite::harness::dns_server`): nodes find each other through records that
//! change while they run and bootstrap one cluster; a node started later joins it; a node that
//! leaves (`-raft-cluster-remove-shutdown`) is removed; a name that does not resolve is retried
//! and then reported; configurations raftlite cannot honour refuse to start.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use raftlite::harness::dns_server::DnsServer;

const WAIT: Duration = Duration::from_secs(60);

/// A port free on every one of `ips` (rqlite's `dns` mode joins every node at the same port).
fn port_free_on_all(ips: &[&str]) -> u16 {
    wait_for("a port free on every address", WAIT, || {
        let p = free_port_on(ips[0]);
        ips.iter().all(|ip| std::net::TcpListener::bind((*ip, p)).is_ok()).then_some(p)
    })
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn voters(n: &Node) -> Option<usize> {
    let v: Value = serde_json::from_str(&n.try_get("/nodes")?.body).ok()?;
    Some(v.as_object()?.len())
}

#[test]
fn dns_records_that_appear_while_nodes_run_form_one_cluster_that_later_nodes_join_and_leave() {
    let dns = DnsServer::start("127.0.0.1").expect("dns server");
    let ips = ["127.0.0.61", "127.0.0.62", "127.0.0.63", "127.0.0.64", "127.0.0.69"];
    let port = port_free_on_all(&ips);
    let disco = json!({"name": "raftlite.test", "port": port, "resolver": dns.addr()}).to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let flags = |extra: &[&str]| -> Vec<String> {
        let mut f: Vec<String> = ["-disco-mode", "dns", "-disco-config", &disco, "-bootstrap-expect", "3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        f.extend(["-join-interval", "300ms"].iter().chain(extra).map(|s| s.to_string()));
        f
    };
    let node = |i: usize, extra: &[&str]| {
        let f = flags(extra);
        let args: Vec<&str> = f.iter().map(String::as_str).collect();
        let mut n = Node::new(&i.to_string(), &tmp.path().join(format!("n{i}")), ips[i - 1], &args);
        n.raft = format!("{}:{port}", ips[i - 1]);
        n
    };

    // The name still points at a node that is gone (a stale record): nobody can bootstrap.
    dns.set_a("raftlite.test", &[ip(69)]);
    let mut nodes: Vec<Node> = (1..=3).map(|i| node(i, &[])).collect();
    for n in nodes.iter_mut() {
        n.spawn();
    }
    wait_for("every node to look the name up more than once", WAIT, || {
        nodes
            .iter()
            .all(|n| n.try_get("/status").is_some_and(|r| r.json()["disco"]["num_lookups"].as_u64() >= Some(2)))
            .then_some(())
    });
    assert!(nodes.iter().all(|n| !harness::is_ready(&reqwest::blocking::Client::new(), &n.http)));
    let st = nodes[1].status();
    assert_eq!(st["disco"]["mode"], "dns");
    assert_eq!(st["disco"]["last_addresses"], json!([format!("127.0.0.69:{port}")]), "{}", st["disco"]);

    // The records change to the three nodes: the three find each other and bootstrap one cluster.
    dns.set_a("raftlite.test", &[ip(61), ip(62), ip(63)]);
    for n in &nodes {
        n.wait_ready();
    }
    let mut c = Cluster { nodes, _dir: tempfile::tempdir().expect("tempdir") };
    c.wait_voters(3);
    let leaders: std::collections::BTreeSet<String> = c.nodes.iter().map(|n| n.leader_id()).collect();
    assert_eq!(leaders.len(), 1, "one cluster, one leader: {leaders:?}");
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["CREATE TABLE t (v)", "INSERT INTO t VALUES (1)"])).status, 200);
    for n in &c.nodes {
        wait_count(n, 1);
    }
    assert!(dns.queries() > 0);

    // A fourth node, started later with the same flags, joins once its record is published.
    dns.set_a("raftlite.test", &[ip(61), ip(62), ip(63), ip(64)]);
    let mut n4 = node(4, &["-raft-cluster-remove-shutdown"]);
    n4.spawn();
    n4.wait_ready();
    c.wait_voters(4);
    wait_count(&n4, 1);

    // A SIGKILLed member restarts with the same flags and rejoins with its data.
    let f = c.follower().id.clone();
    c.node_mut(&f).kill();
    c.wait_leader().execute(json!(["INSERT INTO t VALUES (2)"]));
    c.node_mut(&f).restart();
    c.node(&f).wait_ready();
    wait_count(c.node(&f), 2);

    // The fourth node is scaled away: it removes itself as it stops, and its record goes.
    let st = n4.terminate();
    assert!(st.success(), "{st:?}");
    dns.set_a("raftlite.test", &[ip(61), ip(62), ip(63)]);
    wait_for("the cluster to shrink to 3", WAIT, || (voters(c.wait_leader())? == 3).then_some(()));
    assert_eq!(c.wait_leader().execute(json!(["INSERT INTO t VALUES (3)"])).status, 200);
    for n in &c.nodes {
        wait_count(n, 3);
    }
}

#[test]
fn dns_srv_records_give_each_node_its_host_and_port() {
    let dns = DnsServer::start("127.0.0.1").expect("dns server");
    let tmp = tempfile::tempdir().expect("tempdir");
    let disco = json!({"name": "raftlite.test", "service": "raft", "resolver": dns.addr()}).to_string();
    let args = ["-disco-mode", "dns-srv", "-disco-config", &disco, "-bootstrap-expect", "3", "-join-interval", "300ms"];
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| Node::new(&i.to_string(), &tmp.path().join(format!("n{i}")), &format!("127.0.0.{}", 70 + i), &args))
        .collect();
    let hosts: Vec<(String, u16)> = nodes
        .iter()
        .map(|n| {
            let (h, p) = n.raft.rsplit_once(':').expect("addr");
            (format!("node{}.raftlite.test", h.rsplit('.').next().unwrap_or("0")), p.parse().expect("port"))
        })
        .collect();
    for (n, (host, _)) in nodes.iter().zip(&hosts) {
        let last: u8 =
            n.raft.split(':').next().and_then(|h| h.rsplit('.').next()).and_then(|o| o.parse().ok()).expect("ip");
        dns.set_a(host, &[ip(last)]);
    }
    let srv: Vec<(&str, u16)> = hosts.iter().map(|(h, p)| (h.as_str(), *p)).collect();
    dns.set_srv("_raft._tcp.raftlite.test", &srv);
    for n in nodes.iter_mut() {
        n.spawn();
    }
    for n in &nodes {
        n.wait_ready();
    }
    let c = Cluster { nodes, _dir: tempfile::tempdir().expect("tempdir") };
    c.wait_voters(3);
    let st = c.nodes[0].status();
    assert_eq!(st["disco"]["lookup_name"], "_raft._tcp.raftlite.test");
    let mut want: Vec<String> = c.nodes.iter().map(|n| n.raft.clone()).collect();
    want.sort();
    assert_eq!(st["disco"]["last_addresses"], json!(want), "{}", st["disco"]);
    assert_eq!(c.wait_leader().execute(json!(["CREATE TABLE t (v)", "INSERT INTO t VALUES (1)"])).status, 200);
    for n in &c.nodes {
        wait_count(n, 1);
    }
}

#[test]
fn a_name_that_does_not_resolve_is_retried_reported_and_ends_in_a_clear_error() {
    let dns = DnsServer::start("127.0.0.1").expect("dns server");
    let tmp = tempfile::tempdir().expect("tempdir");
    let disco = json!({"name": "nowhere.test", "resolver": dns.addr()}).to_string();
    let args = [
        "-disco-mode",
        "dns",
        "-disco-config",
        &disco,
        "-bootstrap-expect",
        "2",
        "-bootstrap-expect-timeout",
        "6s",
        "-join-interval",
        "200ms",
    ];
    let mut n = Node::new("1", &tmp.path().join("n1"), "127.0.0.1", &args);
    n.spawn();
    let d = wait_for("failed lookups to show in /status", WAIT, || {
        let d = n.try_get("/status")?.json()["disco"].clone();
        (d["num_lookup_failures"].as_u64()? >= 2).then_some(d)
    });
    assert!(d["last_error"].as_str().is_some_and(|e| e.contains("nowhere.test")), "{d}");
    assert_eq!(d["last_addresses"], json!([]));
    let st = wait_for("the node to give up", WAIT, || n.exit_status());
    assert!(!st.success());
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(log.contains("cluster not formed within 6s (last discovery error: DNS lookup of nowhere.test"), "{log}");
    assert!(log.matches("discovery found no nodes this round").count() >= 2, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn discovery_configurations_raftlite_cannot_honour_refuse_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = env!("CARGO_BIN_EXE_raftlited");
    let data = dir.path().join("d").display().to_string();
    let name = r#"{"name": "x.test"}"#;
    for (args, want) in [
        (vec!["-disco-mode", "consul-kv", "-disco-config", r#"{"address": "x:8500"}"#], "-disco-mode is not supported"),
        (vec!["-disco-mode", "etcd-kv"], "consul-kv and etcd-kv discovery are not built"),
        (vec!["-disco-mode", "dns", "-disco-config", name], "need -bootstrap-expect"),
        (
            vec!["-disco-mode", "dns", "-disco-config", name, "-bootstrap-expect", "3", "-join", "127.0.0.1:4002"],
            "cannot be used together",
        ),
        (vec!["-disco-mode", "dns", "-disco-config", r#"{"name": "x", "prot": 1}"#, "-bootstrap-expect", "3"], "prot"),
        (vec!["-disco-mode", "dns", "-bootstrap-expect", "3"], "needs -disco-config"),
        (vec!["-disco-mode", "dnss", "-bootstrap-expect", "3"], "want dns or dns-srv"),
        (vec!["-disco-config", name], "-disco-config needs -disco-mode"),
        (vec!["-disco-key", "other"], "-disco-key is not supported"),
    ] {
        let out = std::process::Command::new(bin).args(&args).arg(&data).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!dir.path().join("d").exists(), "a refused start must not create the data directory");
}
