//! HTTPS on the API (`-http-cert`, `-http-key`, `-http-ca-cert`, `-http-verify-client`): a real
//! TLS client with a CA file, client certificates, certificate rotation on a live node (checked by
//! reading the certificate the node serves), forwarding between HTTPS nodes, and what a client
//! that does not speak TLS gets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::tls::*;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

fn post_json(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Start a node serving HTTPS; wait until it answers over TLS.
fn https_node(dir: &Path, id: &str, ip: &str, args: &[&str], ready: &Arc<rustls::ClientConfig>) -> Node {
    let mut n = Node::new(id, &dir.join(format!("n{id}")), ip, args);
    n.spawn();
    let addr = n.http.clone();
    wait_for(&format!("node {id} to answer over HTTPS"), Duration::from_secs(30), || {
        https(&addr, ready.clone(), &get("/readyz")).ok().filter(|(s, _, _)| *s == 200)
    });
    n
}

/// HTTPS with a CA file; plain HTTP to the HTTPS port gets nothing and harms nothing; the
/// certificate is rotated on the live node without a restart.
#[test]
fn https_serves_and_rotates_its_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "api");
    let (cert, key) = pki.issue("node", "node-1");
    let trust = client_config(&pki.ca("api"), None);
    let args = ["-http-cert", &cert, "-http-key", &key, "-http-header-timeout", "2s"];
    let mut n = https_node(dir.path(), "1", "127.0.0.1", &args, &trust);
    let (s, body, first) =
        https(&n.http, trust.clone(), &post_json("/db/execute", r#"["CREATE TABLE t (v)"]"#)).expect("https");
    assert_eq!(s, 200, "{body}");
    let (s, body, _) = https(&n.http, trust.clone(), &get("/status?key=http")).expect("https");
    assert_eq!(s, 200);
    assert!(body.contains(r#""tls":true"#), "{body}");
    // Plain HTTP to the HTTPS port: told so in plain HTTP, not served, and the node serves on.
    let mut plain = TcpStream::connect(&n.http).expect("connect");
    plain.write_all(get("/status").as_bytes()).expect("write");
    plain.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("requires TLS"), "{answer}");
    assert!(!answer.contains("\"store\""), "plain HTTP was served");
    // A client that opens a connection and never starts the handshake is dropped at the deadline.
    let mut silent = TcpStream::connect(&n.http).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let started = std::time::Instant::now();
    let mut one = [0u8; 1];
    assert!(matches!(silent.read(&mut one), Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(14), "a silent client held its connection");
    // Rotation: new files under the same names; new handshakes get the new certificate.
    pki.issue("node", "node-1-rotated");
    let rotated = wait_for("the rotated certificate to be served", Duration::from_secs(20), || {
        let (_, _, c) = https(&n.http, trust.clone(), &get("/readyz")).ok()?;
        (c != first).then_some(c)
    });
    assert_eq!(CertificateDer::from_pem_file(&cert).expect("cert"), rotated);
    let (s, _, _) = https(&n.http, trust, &get("/db/query?q=SELECT%20COUNT(*)%20FROM%20t")).expect("https");
    assert_eq!(s, 200);
    n.kill();
}

/// Mutual TLS: a client without a certificate, or with one from another CA, is refused at the
/// handshake; with one the CA issued, served.
#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "api");
    let other = Pki::new(dir.path(), "other");
    let (cert, key) = pki.issue("node", "node-1");
    let (ccert, ckey) = pki.issue("client", "client");
    let (bad_cert, bad_key) = other.issue("stranger", "stranger");
    let ca = pki.ca("api");
    let good = client_config(&ca, Some((&ccert, &ckey)));
    let args = ["-http-cert", &cert, "-http-key", &key, "-http-ca-cert", &ca, "-http-verify-client"];
    let mut n = https_node(dir.path(), "1", "127.0.0.1", &args, &good);
    assert!(https(&n.http, client_config(&ca, None), &get("/status")).is_err(), "served without a client certificate");
    assert!(https(&n.http, client_config(&ca, Some((&bad_cert, &bad_key))), &get("/status")).is_err());
    let (s, _, _) = https(&n.http, good, &get("/status")).expect("https");
    assert_eq!(s, 200);
    // curl, as an operator would use it: with the CA file and a client certificate it is served;
    // without the certificate it is refused.
    if std::process::Command::new("curl").arg("--version").output().is_ok() {
        let url = format!("https://{}/db/query?q=SELECT%2042", n.http);
        let curl = |with_cert: bool| {
            let mut c = std::process::Command::new("curl");
            c.args(["-sS", "--max-time", "20", "--cacert", &ca]);
            if with_cert {
                c.args(["--cert", &ccert, "--key", &ckey]);
            }
            c.arg(&url).output().expect("run curl")
        };
        let out = curl(true);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && body.contains("[[42]]"), "{body} {}", String::from_utf8_lossy(&out.stderr));
        assert!(!curl(false).status.success(), "curl was served without a client certificate");
    } else {
        skip_unless_ci("curl is not installed");
    }
    n.kill();
    // With -http-verify-common-name, only the named client of that CA gets in.
    let (ocert, okey) = pki.issue("other-client", "other-client");
    let mut args = args.to_vec();
    args.extend(["-http-verify-common-name", "client"]);
    let good = client_config(&ca, Some((&ccert, &ckey)));
    let mut n = https_node(dir.path(), "2", "127.0.0.1", &args, &good);
    assert!(https(&n.http, client_config(&ca, Some((&ocert, &okey))), &get("/status")).is_err(), "another name got in");
    assert_eq!(https(&n.http, good, &get("/status")).expect("https").0, 200);
    n.kill();
}

/// Two HTTPS nodes (mutual TLS on): a write sent to the follower is forwarded to the leader over
/// HTTPS with the follower's certificate, and `redirect` points at an https URL.
#[test]
fn followers_forward_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "api");
    let (ccert, ckey) = pki.issue("client", "client");
    let ca = pki.ca("api");
    let trust = client_config(&ca, Some((&ccert, &ckey)));
    let mut nodes = Vec::new();
    for (id, ip) in [("1", "127.0.0.41"), ("2", "127.0.0.42")] {
        let (cert, key) = pki.issue_for(&format!("node{id}"), &format!("node-{id}"), ip);
        let mut args = vec!["-http-cert", &cert, "-http-key", &key, "-http-ca-cert", &ca, "-http-verify-client"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        if let Some(first) = nodes.first() {
            let first: &Node = first;
            args.extend(["-join".to_string(), first.raft.clone()]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(https_node(dir.path(), id, ip, &a, &trust));
    }
    let follower = &nodes[1];
    let r = wait_for("a write through the follower", Duration::from_secs(30), || {
        https(&follower.http, trust.clone(), &post_json("/db/execute", r#"["CREATE TABLE t (v)"]"#))
            .ok()
            .filter(|(s, _, _)| *s == 200)
    });
    assert!(r.1.contains("results"), "{}", r.1);
    let (s, body, _) = https(&follower.http, trust.clone(), &get("/db/query?q=SELECT%201&redirect")).expect("https");
    assert_eq!(s, 301, "{body}");
    for n in nodes.iter_mut() {
        n.kill();
    }
}

/// Bad TLS settings refuse to start with a message: a key without its certificate, client
/// verification without a CA, a certificate file that is not one.
#[test]
fn bad_tls_settings_refuse_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "api");
    let (cert, key) = pki.issue("node", "node-1");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let junk = junk.display().to_string();
    for (args, want) in [
        (vec!["-http-key", key.as_str()], "-http-cert and -http-key go together"),
        (vec!["-http-cert", &cert, "-http-key", &key, "-http-verify-client"], "-http-verify-client needs"),
        (vec!["-http-cert", &junk, "-http-key", &key], "junk.pem"),
        (
            vec!["-http-cert", &cert, "-http-key", &key, "-http-verify-common-name", "x"],
            "-http-verify-common-name checks client certificates: it needs -http-verify-client",
        ),
    ] {
        assert_refuses_to_start(&dir.path().join("d"), &args, want);
    }
}
