//! Limits that keep one client from holding the node (issue-level hardening): a statement's
//! default time limit (`-db-timeout`) for reads and writes, and the node serving others meanwhile.

mod common;

use std::time::Duration;

use common::*;

const RUNAWAY: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";

/// A runaway query is interrupted by the default limit with SQLite's interrupt error, while other
/// reads are served; a runaway write stops at its deterministic budget on every replica and
/// changes nothing; `db_timeout=0` lifts the limit for one request.
#[test]
fn runaway_statements_stop_at_the_default_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("d"), &["-db-timeout", "1s"]);
    assert_eq!(n.execute(json!(["CREATE TABLE t (x INTEGER)"])).status, 200);
    let url = n.url(&format!("/db/query?q={}", url_encode(RUNAWAY)));
    let runaway = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        client.get(url).send().and_then(|r| r.text()).expect("runaway query")
    });
    // Other reads are served while it runs.
    for _ in 0..20 {
        assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([0])]);
    }
    let body = runaway.join().expect("thread");
    assert!(body.contains("query timeout"), "{body}");
    // A runaway write: interrupted, nothing written, the node writes on.
    let w = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT x FROM c";
    let r = n.execute(json!([w]));
    assert!(r.body.contains("execute timeout"), "{}", r.body);
    assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([0])]);
    assert_eq!(n.execute(json!(["INSERT INTO t VALUES (1)"])).status, 200);
    // A long query the default limit stops, and a request that lifts the limit for itself.
    let long =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 30000000) SELECT count(*) FROM c";
    let r = n.get(&format!("/db/query?q={}", url_encode(long)));
    assert!(r.body.contains("query timeout"), "{}", r.body);
    let r = n.get(&format!("/db/query?db_timeout=0&q={}", url_encode(long)));
    assert!(r.body.contains("30000000"), "{}", r.body);
}

use std::io::{Read, Write};
use std::net::TcpStream;

/// Read from `s` until the server closes the connection (true) or `within` passes (false).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// A client that sends its headers too slowly, or idles on a keep-alive connection, is cut off
/// after `-http-header-timeout`; too many headers get 431; the node serves others throughout.
#[test]
fn slow_and_oversized_requests_are_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("d"), &["-http-header-timeout", "1s", "-http-max-headers", "20"]);
    // Half a request, never finished.
    let mut slow = TcpStream::connect(&n.http).expect("connect");
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n").expect("write");
    // One request answered, then nothing.
    let mut idle = TcpStream::connect(&n.http).expect("connect");
    idle.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    assert_eq!(n.get("/status").status, 200);
    assert!(closed_within(&mut slow, Duration::from_secs(10)), "a slow client held its connection");
    assert!(closed_within(&mut idle, Duration::from_secs(10)), "an idle keep-alive connection stayed open");
    // Too many headers.
    let mut many = TcpStream::connect(&n.http).expect("connect");
    let mut req = String::from("GET /status HTTP/1.1\r\nHost: x\r\n");
    for i in 0..50 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    many.write_all(req.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = many.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    assert_eq!(n.get("/status").status, 200);
    // A body that stops coming, on the API (a write and a boot upload) and on the Raft port: 408,
    // nothing written.
    for (addr, head) in [
        (
            &n.http,
            "POST /db/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        ),
        (&n.http, "POST /boot HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"),
        (&n.raft, "POST /raft/vote HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"),
    ] {
        let mut trickle = TcpStream::connect(addr).expect("connect");
        trickle.write_all(head.as_bytes()).expect("write");
        trickle.write_all(b"[[\"CREATE TABLE stalled (v)\"").expect("write");
        trickle.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let mut answer = String::new();
        let _ = trickle.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{head:.30}: {answer:.200}");
    }
    assert!(n.rows("SELECT name FROM sqlite_master WHERE name = 'stalled'").is_empty());
    assert_eq!(n.get("/status").status, 200);
}

/// Past `-http-max-conns` a new connection is closed at once (and counted); once connections
/// close, new ones are served again. Garbage on the Raft port is dropped without harm.
#[test]
fn connections_past_the_cap_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("d"), &["-http-max-conns", "4", "-http-header-timeout", "30s"]);
    // The harness's own client may hold a pooled connection: fill the rest.
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&n.http).expect("connect")).collect();
    let mut extra = TcpStream::connect(&n.http).expect("connect");
    extra.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    assert!(closed_within(&mut extra, Duration::from_secs(10)), "a connection past the cap was served");
    drop(held);
    wait_for("connections served again", Duration::from_secs(10), || n.get_opt("/status").filter(|r| r.status == 200));
    let metrics = n.get("/metrics").body;
    assert!(metrics.contains("raftlite_http_connections_refused_total{port=\"api\"}"), "not counted");
    // Garbage on the Raft port.
    let mut junk = TcpStream::connect(&n.raft).expect("connect");
    junk.write_all(&[0xde, 0xad, 0xbe, 0xef, b'\r', b'\n', b'\r', b'\n']).expect("write");
    assert!(closed_within(&mut junk, Duration::from_secs(10)));
    assert_eq!(n.execute(json!(["CREATE TABLE t (v)"])).status, 200);
}

/// A query whose client disconnects is interrupted: with a single read connection, the next
/// reads are served although the abandoned query had no time limit (`db_timeout=0`).
#[test]
fn a_query_whose_client_left_is_interrupted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("d"), &["-db-max-ro-conns", "1"]);
    assert_eq!(n.execute(json!(["CREATE TABLE t (x INTEGER)"])).status, 200);
    let mut s = TcpStream::connect(&n.http).expect("connect");
    let req = format!("GET /db/query?db_timeout=0&q={} HTTP/1.1\r\nHost: x\r\n\r\n", url_encode(RUNAWAY));
    s.write_all(req.as_bytes()).expect("write");
    // Once the query holds the only reader (a quick read then gets no answer in time), leave.
    let quick = reqwest::blocking::Client::builder().timeout(Duration::from_millis(300)).build().expect("client");
    let probe = n.url("/db/query?level=none&q=SELECT%201");
    wait_for("the runaway query to hold the reader", Duration::from_secs(20), || quick.get(&probe).send().err());
    drop(s);
    let r = wait_for("a read served after the client left", Duration::from_secs(20), || {
        n.try_get("/db/query?level=none&q=SELECT%20COUNT(*)%20FROM%20t").filter(|r| r.status == 200)
    });
    assert!(r.body.contains("[[0]]"), "{}", r.body);
}
