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
