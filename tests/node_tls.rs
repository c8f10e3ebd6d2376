//! Node-to-node TLS on the Raft address (`-node-cert`, `-node-key`, `-node-ca-cert`,
//! `-node-verify-client`, `-node-verify-server-name`, `-node-verify-common-name`,
//! `-node-no-verify`): a 3-node cluster with mutual TLS joins, replicates, installs a snapshot,
//! fails over after SIGKILL and rotates a certificate on a live node; nodes whose TLS does not
//! match are refused at once with a message naming the node and the reason.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Every node certificate is for the node's IP and for this name (`-node-verify-server-name`).
const CLUSTER_NAME: &str = "raft.cluster.test";
/// The common name node 1 requires of its peers' client certificates.
const NODE_CN: &str = "raftlite-node";

/// Flags for a node on `ip` with a certificate `file` the CA `pki` issues for `cn`.
fn tls_args(pki: &Pki, file: &str, cn: &str, ip: &str) -> Vec<String> {
    let (cert, key) = pki.issue_names(file, cn, &[ip, CLUSTER_NAME]);
    vec!["-node-cert".into(), cert, "-node-key".into(), key]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Start a node, expect it to exit with an error naming `want` soon, though it was allowed a
/// hundred join attempts: a mismatch is not retried.
fn assert_join_refused(dir: &Path, ip: &str, args: &[String], want: &[&str]) {
    let mut args = args.to_vec();
    args.extend(["-join-attempts", "100", "-join-interval", "1s"].map(String::from));
    let mut n = Node::new("x", dir, ip, &strs(&args));
    let started = Instant::now();
    n.spawn();
    let st = wait_for("the mismatched node to give up", Duration::from_secs(60), || n.exit_status());
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(!st.success(), "{log}");
    assert!(started.elapsed() < Duration::from_secs(30), "it retried instead of failing: {log}");
    for w in want {
        assert!(log.contains(w), "log lacks {w:?}: {log}");
    }
}

#[test]
fn three_nodes_with_mutual_tls_join_replicate_snapshot_fail_over_and_rotate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "node");
    let ca = pki.ca("node");
    let snap = ["-raft-snap", "50", "-raft-snap-int", "100ms"].map(String::from);
    let ips = ["127.0.0.61", "127.0.0.62", "127.0.0.63"];
    // Node 1: mutual TLS, peers' certificates must name NODE_CN.
    let mut a1 = tls_args(&pki, "n1", NODE_CN, ips[0]);
    a1.extend(["-node-ca-cert", &ca, "-node-verify-client", "-node-verify-common-name", NODE_CN].map(String::from));
    a1.extend(snap.clone());
    // Node 2: mutual TLS.
    let mut a2 = tls_args(&pki, "n2", NODE_CN, ips[1]);
    a2.extend(["-node-ca-cert", &ca, "-node-verify-client"].map(String::from));
    a2.extend(snap.clone());
    // Node 3: verifies the others by the cluster's name rather than their addresses.
    let mut a3 = tls_args(&pki, "n3", NODE_CN, ips[2]);
    a3.extend(["-node-ca-cert", &ca, "-node-verify-server-name", CLUSTER_NAME].map(String::from));
    a3.extend(snap);

    let mut n1 = Node::new("1", &dir.path().join("n1"), ips[0], &strs(&a1));
    n1.spawn();
    n1.wait_ready();
    let st = n1.status();
    assert_eq!(st["network"]["tls"], true, "{}", st["network"]);
    assert_eq!(st["network"]["mutual_tls"], true);
    a2.extend(["-join".to_string(), n1.raft.clone()]);
    let mut n2 = Node::new("2", &dir.path().join("n2"), ips[1], &strs(&a2));
    n2.spawn();
    n2.wait_ready();
    wait_for("node 1 to lead 2 voters", Duration::from_secs(30), || {
        let v: Value = serde_json::from_str(&n1.try_get("/nodes")?.body).ok()?;
        (v.as_object()?.len() == 2).then_some(())
    });

    // Replication over TLS, enough writes that the leader compacts its log.
    n1.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"]));
    for i in 0..200 {
        assert_eq!(n1.execute(json!([["INSERT INTO t(v) VALUES(randomblob(?))", 100 + i]])).status, 200);
    }
    wait_count(&n2, 200);
    wait_for("compaction", Duration::from_secs(30), || {
        (n1.status()["store"]["raft"]["purged_index"].as_u64()? > 100).then_some(())
    });

    // Node 3 joins after compaction: it catches up by a snapshot sent over TLS.
    a3.extend(["-join".to_string(), n1.raft.clone()]);
    let mut n3 = Node::new("3", &dir.path().join("n3"), ips[2], &strs(&a3));
    n3.spawn();
    n3.wait_ready();
    wait_count(&n3, 200);
    assert_eq!(n3.status()["store"]["num_restores"], 1, "{}", n3.status()["store"]);
    let digest = "SELECT COUNT(*), SUM(length(v)), SUM(id) FROM t";
    assert_eq!(n3.local_rows(digest), n1.local_rows(digest));

    // Rotation on node 2: new files under the same names; its Raft port serves the new
    // certificate (read by a TLS client) and the cluster keeps replicating through it.
    let peer_identity = pki.issue_names("probe", NODE_CN, &["127.0.0.1"]);
    let probe = client_config(&ca, Some((&peer_identity.0, &peer_identity.1)));
    let before = https(&n2.raft, probe.clone(), &get("/status")).expect("TLS to node 2's Raft port").2;
    let (cert2, _) = pki.issue_names("n2", NODE_CN, &[ips[1], CLUSTER_NAME]);
    let rotated = wait_for("node 2 to serve its rotated certificate", Duration::from_secs(20), || {
        let (_, _, c) = https(&n2.raft, probe.clone(), &get("/status")).ok()?;
        (c != before).then_some(c)
    });
    assert_eq!(CertificateDer::from_pem_file(&cert2).expect("cert"), rotated);

    // Fail-over: SIGKILL the leader; the other two elect one and take writes over TLS.
    let leader = n1.leader_id();
    let (survivors, killed): (Vec<&mut Node>, Vec<&mut Node>) =
        [&mut n1, &mut n2, &mut n3].into_iter().partition(|n| n.id != leader);
    let killed = killed.into_iter().next().expect("the leader is one of the three");
    killed.kill();
    let new_leader = wait_for("a new leader", Duration::from_secs(30), || {
        let id = survivors[0].leader_id();
        (!id.is_empty() && id != leader && survivors.iter().all(|n| n.leader_id() == id)).then_some(id)
    });
    let l = survivors.iter().find(|n| n.id == new_leader).expect("the new leader is a survivor");
    assert_eq!(l.execute(json!(["INSERT INTO t(v) VALUES(x'01')"])).status, 200);
    for n in &survivors {
        wait_count(n, 201);
    }
    // The killed node restarts and catches up over TLS.
    killed.spawn();
    killed.wait_ready();
    wait_count(killed, 201);

    // Plain HTTP and garbage at a TLS Raft port: answered or dropped, counted, node unharmed.
    for junk in [&b"POST /raft/append HTTP/1.1\r\nContent-Length: 0\r\n\r\n"[..], &[0xffu8; 64][..]] {
        let mut s = TcpStream::connect(&killed.raft).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        s.write_all(junk).expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert!(out.is_empty() || String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"), "{out:?}");
    }
    let refused = [("port", "raft"), ("reason", "plain_http")];
    assert!(killed.metric_with("raftlite_tls_handshake_failures_total", &refused) >= 1.0);
    assert_eq!(killed.execute(json!(["INSERT INTO t(v) VALUES(x'02')"])).status, 200);
    for n in [&n1, &n2, &n3] {
        wait_count(n, 202);
    }
}

#[test]
fn nodes_whose_tls_does_not_match_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "node");
    let other = Pki::new(dir.path(), "other");
    let (ca, other_ca) = (pki.ca("node"), other.ca("other"));
    let mut a1 = tls_args(&pki, "n1", NODE_CN, "127.0.0.71");
    a1.extend(["-node-ca-cert", &ca, "-node-verify-client", "-node-verify-common-name", NODE_CN].map(String::from));
    let mut n1 = Node::new("1", &dir.path().join("n1"), "127.0.0.71", &strs(&a1));
    n1.spawn();
    n1.wait_ready();
    n1.execute(json!(["CREATE TABLE t (v)"]));
    let join = ["-join".to_string(), n1.raft.clone()];
    let d = |name: &str| dir.path().join(name);

    // A certificate from another CA, trusting that CA: node 1's certificate is not trusted.
    let mut a = tls_args(&other, "stranger", NODE_CN, "127.0.0.72");
    a.extend(["-node-ca-cert".to_string(), other_ca.clone()]);
    a.extend(join.clone());
    assert_join_refused(&d("stranger"), "127.0.0.72", &a, &["failed to join cluster", &n1.raft, "not trusted"]);

    // Trusting node 1's CA but presenting another CA's certificate: node 1 refuses it.
    let mut a = tls_args(&other, "impostor", NODE_CN, "127.0.0.72");
    a.extend(["-node-ca-cert".to_string(), ca.clone()]);
    a.extend(join.clone());
    assert_join_refused(&d("impostor"), "127.0.0.72", &a, &["failed to join cluster", &n1.raft, "refused the TLS"]);

    // The right CA but not the common name node 1 requires.
    let mut a = tls_args(&pki, "wrong-cn", "intruder", "127.0.0.72");
    a.extend(["-node-ca-cert".to_string(), ca.clone()]);
    a.extend(join.clone());
    assert_join_refused(&d("wrong-cn"), "127.0.0.72", &a, &["failed to join cluster", &n1.raft, "refused the TLS"]);

    // Verifying node 1 by a name its certificate does not carry.
    let mut a = tls_args(&pki, "bad-name", NODE_CN, "127.0.0.72");
    a.extend(["-node-ca-cert", &ca, "-node-verify-server-name", "elsewhere.test"].map(String::from));
    a.extend(join.clone());
    assert_join_refused(&d("bad-name"), "127.0.0.72", &a, &["failed to join cluster", &n1.raft, "not trusted"]);

    // No TLS at all, joining the TLS node.
    assert_join_refused(&d("plain"), "127.0.0.72", &join, &["failed to join cluster", &n1.raft, "requires TLS"]);

    // A TLS node joining a node without TLS.
    let mut plain = Node::new("p", &d("plain-leader"), "127.0.0.73", &[]);
    plain.spawn();
    plain.wait_ready();
    let mut a = tls_args(&pki, "to-plain", NODE_CN, "127.0.0.72");
    a.extend(["-node-ca-cert".to_string(), ca.clone(), "-join".to_string(), plain.raft.clone()]);
    assert_join_refused(
        &d("to-plain"),
        "127.0.0.72",
        &a,
        &["failed to join cluster", &plain.raft, "does not speak TLS"],
    );

    // -node-no-verify trusts any server certificate (node 1 still checks the client's).
    let mut a = tls_args(&pki, "no-verify", NODE_CN, "127.0.0.74");
    a.extend(["-node-no-verify".to_string()]);
    a.extend(join);
    let mut n = Node::new("4", &d("no-verify"), "127.0.0.74", &strs(&a));
    n.spawn();
    n.wait_ready();
    wait_for("node 4 to replicate", Duration::from_secs(30), || n.local_rows("SELECT COUNT(*) FROM t"));

    // Node 1 served throughout, and counted the handshakes it refused.
    assert_eq!(n1.execute(json!(["INSERT INTO t VALUES(1)"])).status, 200);
    let failures =
        |reason| n1.metric_with("raftlite_tls_handshake_failures_total", &[("port", "raft"), ("reason", reason)]);
    assert!(failures("handshake") >= 2.0, "the stranger and the impostor");
    assert!(failures("common_name") >= 1.0);
    assert!(failures("plain_http") >= 1.0);

    // Files that are not what the flags say refuse to start, naming the file.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let (cert, key) = pki.issue("x", "x");
    let junk = junk.display().to_string();
    assert_refuses_to_start(&d("junk"), &["-node-cert", &junk, "-node-key", &key], "junk.pem");
    assert_refuses_to_start(&d("junk2"), &["-node-cert", &cert, "-node-key", &key, "-node-ca-cert", &junk], "junk.pem");
}
