//! The data API of one node, through HTTP against the real binary (docs/API.md §2–§10).

mod common;

use common::*;

fn node() -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("data"), &[]);
    (dir, n)
}

#[test]
fn spec_examples_are_byte_exact() {
    let (_d, n) = node();
    let r = n.execute(json!([
        "CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)",
        ["INSERT INTO foo(name) VALUES(?)", "fiona"]
    ]));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r#"{"results":[{},{"last_insert_id":1,"rows_affected":1}]}"#);
    assert!(r.headers.get("X-RQLITE-VERSION").is_some());
    n.execute(json!([["INSERT INTO foo(name) VALUES(?)", "declan"]]));
    let q = n.query("SELECT * FROM foo", "");
    assert_eq!(
        q.body,
        r#"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[1,"fiona"],[2,"declan"]]}]}"#
    );
    let a = n.query("SELECT * FROM foo", "associative");
    assert_eq!(
        a.body,
        r#"{"results":[{"types":{"id":"integer","name":"text"},"rows":[{"id":1,"name":"fiona"},{"id":2,"name":"declan"}]}]}"#
    );
    let p = n.query("SELECT id FROM foo WHERE id = 1", "pretty");
    assert_eq!(
        p.body,
        "{\n    \"results\": [\n        {\n            \"columns\": [\n                \"id\"\n            ],\n            \"types\": [\n                \"integer\"\n            ],\n            \"values\": [\n                [\n                    1\n                ]\n            ]\n        }\n    ]\n}"
    );
    // DROP TABLE right after a write reports SQLite's connection-level counters.
    n.execute(json!(["CREATE TABLE d (x)", "INSERT INTO d VALUES(1)"]));
    assert_eq!(n.execute(json!(["DROP TABLE d"])).body, r#"{"results":[{"last_insert_id":1,"rows_affected":1}]}"#);
    // Empty result: no "values".
    assert_eq!(
        n.query("SELECT * FROM foo WHERE id > 100", "").body,
        r#"{"results":[{"columns":["id","name"],"types":["integer","text"]}]}"#
    );
    // POST JSON query and text/plain query.
    let pj = n.post("/db/query", "application/json", r#"["SELECT name FROM foo WHERE id=1"]"#);
    assert_eq!(pj.body, r#"{"results":[{"columns":["name"],"types":["text"],"values":[["fiona"]]}]}"#);
    let pt = n.post("/db/query", "text/plain", "SELECT COUNT(*) FROM foo");
    assert_eq!(pt.body, r#"{"results":[{"columns":["COUNT(*)"],"types":["integer"],"values":[[2]]}]}"#);
}

#[test]
fn value_types_round_trip() {
    let (_d, n) = node();
    n.execute(json!(["CREATE TABLE v (i INTEGER, r REAL, t TEXT, b BLOB, n)"]));
    let big: i64 = (1i64 << 53) + 1;
    let r = n.post(
        "/db/execute",
        "application/json",
        format!(
            r#"[["INSERT INTO v VALUES(?, ?, ?, ?, ?)", {big}, 3.0, "héllo ✓ \u0000x", "x'00ff10'", null],
                ["INSERT INTO v VALUES(?, ?, ?, ?, ?)", 9223372036854775807, 1.5, "", [1, 2, 255], true]]"#
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let q = n.query("SELECT * FROM v", "");
    assert_eq!(
        q.body,
        format!(
            r#"{{"results":[{{"columns":["i","r","t","b","n"],"types":["integer","real","text","blob",""],"values":[[{big},3,"héllo ✓ \u0000x","AP8Q",null],[9223372036854775807,1.5,"","AQL/",1]]}}]}}"#
        )
    );
    let q = n.query("SELECT b FROM v", "blob_array");
    assert_eq!(q.json()["results"][0]["values"], json!([[[0, 255, 16]], [[1, 2, 255]]]));
    // Named parameters, with and without a prefix.
    n.execute(json!([["INSERT INTO v(i, t) VALUES(:num, @txt)", {"num": 7, "txt": "named"}]]));
    assert_eq!(n.rows("SELECT t FROM v WHERE i = 7"), vec![json!(["named"])]);
    // HTML-sensitive characters are escaped as Go does.
    n.execute(json!([["INSERT INTO v(i, t) VALUES(8, ?)", "<a&b>"]]));
    assert!(n.query("SELECT t FROM v WHERE i = 8", "").body.contains(r#""\u003ca\u0026b\u003e""#));
    // Declared date/boolean types are rendered like the Go driver does.
    n.execute(json!(["CREATE TABLE tm (d DATETIME, f BOOLEAN)", "INSERT INTO tm VALUES('2004-02-14 07:15:00.5', 1)"]));
    assert_eq!(n.rows("SELECT * FROM tm"), vec![json!(["2004-02-14T07:15:00.5Z", true])]);
}

#[test]
fn statement_errors_transactions_and_returning() {
    let (_d, n) = node();
    n.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER NOT NULL)"]));
    let r = n.execute(json!(["SELEC 1"]));
    assert_eq!(r.body, r#"{"results":[{"error":"near \"SELEC\": syntax error"}]}"#);
    let r = n.execute(json!(["INSERT INTO nope VALUES(1)", "INSERT INTO t(x) VALUES(1)"]));
    assert_eq!(r.body, r#"{"results":[{"error":"no such table: nope"},{"last_insert_id":1,"rows_affected":1}]}"#);
    // With ?transaction the first error rolls everything back and stops.
    let r = n.execute_q(
        "transaction",
        json!(["INSERT INTO t(x) VALUES(2)", "INSERT INTO t(x) VALUES(NULL)", "INSERT INTO t(x) VALUES(3)"]),
    );
    assert_eq!(
        r.body,
        r#"{"results":[{"last_insert_id":2,"rows_affected":1},{"error":"NOT NULL constraint failed: t.x"}]}"#
    );
    assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([1])]);
    // RETURNING produces rows from /db/execute.
    let r = n.execute(json!(["INSERT INTO t(x) VALUES(42) RETURNING id, x"]));
    assert_eq!(r.body, r#"{"results":[{"columns":["id","x"],"types":["integer","integer"],"values":[[2,42]]}]}"#);
    // EXPLAIN QUERY PLAN returns SQLite's own rows.
    let r = n.query("EXPLAIN QUERY PLAN SELECT * FROM t", "");
    assert!(r.body.contains("SCAN t"), "{}", r.body);
    // A write on the query path is refused per statement.
    let r = n.query("INSERT INTO t(x) VALUES(5)", "");
    assert_eq!(r.body, r#"{"results":[{"error":"attempt to change database via query operation"}]}"#);
    // /db/request mixes reads and writes.
    let r = n.post(
        "/db/request",
        "application/json",
        r#"["SELECT COUNT(*) FROM t", "INSERT INTO t(x) VALUES(6)", "SELECT * FROM bar"]"#,
    );
    assert_eq!(
        r.body,
        r#"{"results":[{"columns":["COUNT(*)"],"types":["integer"],"values":[[2]]},{"last_insert_id":3,"rows_affected":1},{"error":"no such table: bar"}]}"#
    );
    let r = n.post("/db/request?associative", "application/json", r#"["INSERT INTO t(x) VALUES(7)"]"#);
    assert_eq!(r.body, r#"{"results":[{"last_insert_id":4,"rows_affected":1,"rows":null}]}"#);
    // text/plain with several statements runs them all; the result reflects the last.
    let r = n.post("/db/execute", "text/plain", "INSERT INTO t(x) VALUES(8); INSERT INTO t(x) VALUES(9)");
    assert_eq!(r.body, r#"{"results":[{"last_insert_id":6,"rows_affected":1}]}"#);
    assert_eq!(n.post("/db/execute", "text/plain", "").body, r#"{"results":[]}"#);
    // Explicit transaction control is refused (the applier owns the transaction).
    let r = n.execute(json!(["COMMIT"]));
    assert!(r.json()["results"][0]["error"].is_string(), "{}", r.body);
}

#[test]
fn query_parameters() {
    let (_d, n) = node();
    n.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, x)", "INSERT INTO t(x) VALUES(1)"]));
    let r = n.execute_q("raft_index", json!(["INSERT INTO t(x) VALUES(2)"]));
    assert!(r.json()["raft_index"].as_u64().unwrap_or(0) > 0, "{}", r.body);
    let r = n.execute_q("timings", json!(["INSERT INTO t(x) VALUES(3)"]));
    let j = r.json();
    assert!(j["time"].is_number() && j["results"][0]["time"].is_number(), "{}", r.body);
    for level in ["none", "weak", "linearizable", "strong", "auto", "bogus"] {
        let r = n.query("SELECT COUNT(*) FROM t", &format!("level={level}"));
        assert_eq!(r.json()["results"][0]["values"], json!([[3]]), "level={level}: {}", r.body);
    }
    let r = n.query("SELECT * FROM t WHERE id=1", "qualify_columns");
    assert_eq!(r.json()["results"][0]["columns"], json!(["t.id", "t.x"]));
    // A runaway query is stopped by db_timeout, on both paths.
    let runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT COUNT(*) FROM c";
    let r = n.query(runaway, "db_timeout=100ms");
    assert_eq!(r.body, r#"{"results":[{"error":"query timeout"}]}"#);
    let r = n.execute_q(
        "db_timeout=100ms",
        json!(["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t(x) SELECT x FROM c"]),
    );
    assert_eq!(r.body, r#"{"results":[{"error":"execute timeout"}]}"#);
    assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([3])]);
    // Only the runaway statement is stopped: the statements around it apply exactly once, even
    // though SQLite rolls back the applier's whole batch transaction on an interrupted write.
    let r = n.execute_q(
        "db_timeout=100ms",
        json!([
            "INSERT INTO t(x) VALUES(100)",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t(x) SELECT x FROM c",
            "INSERT INTO t(x) VALUES(101)"
        ]),
    );
    assert_eq!(
        r.body,
        r#"{"results":[{"last_insert_id":4,"rows_affected":1},{"error":"execute timeout"},{"last_insert_id":5,"rows_affected":1}]}"#
    );
    assert_eq!(n.rows("SELECT x FROM t WHERE id > 3"), vec![json!([100]), json!([101])]);
}

#[test]
fn bad_input_gets_clear_errors() {
    let (_d, n) = node();
    let cases: &[(&str, &str, &str)] = &[
        ("application/json", "not json", "invalid JSON body\n"),
        ("application/json", "{}", "invalid request\n"),
        ("application/json", "[1]", "invalid request\n"),
        ("application/json", "[]", "no statements\n"),
        ("application/json", r#"[["SELECT ?", [300]]]"#, "unsupported type: 300\n"),
        ("application/json", r#"[["SELECT ?", {"a": {"b": 1}}]]"#, "unsupported type: nested object\n"),
    ];
    for (ct, body, want) in cases {
        let r = n.post("/db/execute", ct, body.to_string());
        assert_eq!((r.status, r.body.as_str()), (400, *want), "{body}");
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(n.post("/db/execute", "application/json", deep).status, 400);
    assert_eq!(n.post("/db/execute", "application/json", vec![b'[', b'"', 0xff, b'"', b']']).status, 400);
    assert_eq!(n.post("/db/execute", "text/plain", vec![0xff, 0xfe]).status, 400);
    for (q, want) in [
        ("/db/query?q=", "query parameter not set\n"),
        ("/db/query?q=SELECT%201&freshness_strict", "freshness_strict requires freshness\n"),
        ("/db/query?q=SELECT%201&db_timeout=5", "db_timeout is not a valid duration\n"),
        ("/db/query?q=SELECT%201&retries=x", "retries is not a valid integer\n"),
        ("/db/query?q=%FF", "query string is not valid UTF-8\n"),
    ] {
        let r = n.get(q);
        assert_eq!((r.status, r.body.as_str()), (400, want), "{q}");
    }
    // NUL bytes inside SQL are an SQL error, not a crash.
    let r = n.execute(json!(["SELECT 1\u{0}; DROP TABLE x"]));
    assert_eq!(r.status, 200);
    // Disallowed PRAGMAs fail the whole request.
    for p in ["PRAGMA journal_mode=DELETE", "PRAGMA wal_checkpoint(TRUNCATE)", "pragma main.synchronous = 0"] {
        assert_eq!(n.execute(json!([p])).body, r#"{"results":[],"error":"disallowed pragma"}"#);
        assert_eq!(n.query(p, "").body, r#"{"results":[],"error":"disallowed pragma"}"#);
    }
    // ATTACH, DETACH, VACUUM INTO and load_extension are refused on both paths.
    for s in [
        "ATTACH DATABASE '/tmp/raftlite-x.db' AS x",
        "DETACH x",
        "VACUUM INTO '/tmp/raftlite-y.db'",
        "SELECT load_extension('/tmp/z')",
    ] {
        let e = n.execute(json!([s])).json();
        assert!(e["results"][0]["error"].as_str().unwrap_or("").contains("not allowed"), "execute {s}: {e}");
        let q = n.query(s, "").json();
        assert!(q["results"][0]["error"].as_str().unwrap_or("").contains("not allowed"), "query {s}: {q}");
    }
    assert!(!std::path::Path::new("/tmp/raftlite-y.db").exists());
    // The node still serves.
    assert_eq!(n.rows("SELECT 1"), vec![json!([1])]);
}

#[test]
fn body_cap_answers_413_before_buffering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("data"), &["-http-max-body", "1024"]);
    let big = format!(r#"["SELECT '{}'"]"#, "x".repeat(4096));
    let r = n.post("/db/execute", "application/json", big.clone());
    assert_eq!(r.status, 413);
    // The rest of the body was not read: the client must not reuse the connection.
    assert_eq!(r.headers.get("connection").and_then(|v| v.to_str().ok()), Some("close"));
    // A declared length over the cap is refused without reading the body: send only headers.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&n.http).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    write!(
        s,
        "POST /db/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
    )
    .expect("write");
    let mut buf = [0u8; 64];
    let k = s.read(&mut buf).expect("read");
    assert!(String::from_utf8_lossy(&buf[..k]).starts_with("HTTP/1.1 413"));
    // Chunked bodies are capped while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..8).map(|_| Ok(vec![b' '; 512])).collect();
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(
        chunks.into_iter().flat_map(|c| c.unwrap_or_default()).collect::<Vec<u8>>(),
    ));
    assert_eq!(n.post("/db/execute", "application/json", body).status, 413);
    assert_eq!(n.post("/db/execute", "application/json", r#"["SELECT 1"]"#).status, 200);
}

#[test]
fn node_endpoints() {
    let (_d, n) = node();
    assert_eq!(n.request("OPTIONS", "/db/execute").status, 200);
    assert_eq!(n.get("/nope").status, 404);
    assert_eq!(n.get("/db/execute").status, 405);
    assert_eq!(n.request("DELETE", "/db/query").status, 405);
    let r = n.request("TRACE", "/");
    assert_eq!(r.status, 405);
    assert_eq!(r.headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET, POST, DELETE, PUT"));
    // Bad cluster requests are the client's mistake (4xx), found by schemathesis.
    assert_eq!(n.delete("/remove", r#"{"id":"nope"}"#).status, 404);
    assert_eq!(n.post("/leader", "application/json", r#"{"id":"nope"}"#).status, 400);
    assert_eq!(n.post("/leader", "application/json", "").status, 400);
    let root = n.get("/");
    assert!(root.status == 302 || root.status == 404, "{}", root.status);
    let ready = n.get("/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "[+]node ok\n[+]leader ok\n[+]store ok\n"));
    assert_eq!(n.get("/readyz?noleader").body, "[+]node ok\n");
    let st = n.status();
    assert_eq!(st["store"]["raft"]["state"], "Leader");
    assert_eq!(st["store"]["node_id"], "1");
    assert!(
        st["build"]["version"].is_string() && st["node"]["uptime"].is_string() && st["http"]["bind_addr"].is_string()
    );
    assert_eq!(n.get("/status?key=store.raft.state").body, r#""Leader""#);
    assert_eq!(n.get("/status?key=no.such").body, "{}");
    assert!(n.get("/status?pretty").body.contains("\n    \""));
    let nodes = n.get("/nodes").json();
    assert_eq!(nodes["1"]["leader"], true);
    assert_eq!(nodes["1"]["api_addr"], format!("http://{}", n.http));
    let v2 = n.get("/nodes?ver=2").json();
    assert_eq!(v2["nodes"][0]["id"], "1");
    assert_eq!(n.get("/leader").json()["id"], "1");
    // /db/sql shows the rewrite without executing it.
    let s = n.get("/db/sql?q=SELECT%20random()").json();
    assert_eq!(s["results"][0]["original"], "SELECT random()");
    assert!(s["results"][0]["rewritten"].as_str().unwrap_or("random()").parse::<i64>().is_err());
    assert!(!s["results"][0]["rewritten"].as_str().unwrap_or("random()").contains("random()"));
    let s = n.get("/db/sql?q=SELECT%20random()&norwrandom").json();
    assert_eq!(s["results"][0]["rewritten"], "SELECT random()");
}

#[test]
fn data_survives_restart_without_reapplying() {
    let (_d, mut n) = node();
    n.execute(json!(["CREATE TABLE t (x)"]));
    for i in 0..20 {
        n.execute(json!([["INSERT INTO t VALUES(?)", i]]));
    }
    n.restart();
    assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([20])]);
    let st = n.status();
    assert_eq!(st["store"]["entries_reapplied"], 0);
    assert_eq!(st["store"]["entries_replayed_at_start"], 0, "{}", st["store"]);
    assert_eq!(n.terminate().code(), Some(0));
}

#[test]
fn config_file_and_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, raft) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "node-id = \"cfg1\"\nhttp-addr = \"{http}\"\nraft_addr = \"{raft}\"\ndata-dir = \"{}\"\njoin-as = \"\"\n",
            dir.path().join("d").display()
        ),
    )
    .expect("write config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_raftlited"))
        .args(["-config", &cfg.display().to_string()])
        .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
        .spawn()
        .expect("spawn");
    let client = reqwest::blocking::Client::new();
    let st: Value = wait_for("config node", std::time::Duration::from_secs(30), || {
        let r = client.get(format!("http://{http}/status")).send().ok()?;
        let v: Value = r.json().ok()?;
        (v["store"]["ready"] == true).then_some(v)
    });
    assert_eq!(st["store"]["node_id"], "cfg1");
    let _ = child.kill();
    let _ = child.wait();
    // A flag raftlite cannot honour refuses to start, from the file as from the command line.
    std::fs::write(&cfg, "otlp-endpoint = \"127.0.0.1:4317\"\n").expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftlited"))
        .args(["-config", &cfg.display().to_string(), &dir.path().join("e").display().to_string()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-otlp-endpoint is not supported"), "{out:?}");
    // Bad flags exit non-zero with a message.
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_raftlited")).args(["-no-such-flag"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("flag provided but not defined: -no-such-flag"));
}

#[test]
fn status_answers_before_the_store_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    // Hold the database locked so the node cannot open its store yet.
    let lock = rusqlite::Connection::open(data.join("db.sqlite")).expect("open");
    lock.execute_batch("BEGIN EXCLUSIVE; CREATE TABLE held (x);").expect("lock");
    let mut n = Node::new("1", &data, "127.0.0.1", &[]);
    n.spawn();
    let st: Value = wait_for("/status while the store is closed", std::time::Duration::from_secs(10), || {
        let r = n.try_get("/status")?;
        (r.status == 200).then(|| r.json())
    });
    assert_eq!(st["store"]["open"], false, "{st}");
    assert_eq!(n.get("/readyz?noleader").status, 200);
    assert_eq!(n.get("/readyz").status, 503);
    assert_eq!(n.query("SELECT 1", "").status, 503);
    lock.execute_batch("ROLLBACK").expect("unlock");
    drop(lock);
    n.wait_ready();
    assert_eq!(n.rows("SELECT 1"), vec![json!([1])]);
}
