//! Backup, load, boot, user snapshots and reaping through the HTTP API of real processes.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;

/// Every user table's rows, as one JSON value (a content digest of the database).
fn content(n: &Node) -> Value {
    let tables = n.local_rows("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_raftlite%' ORDER BY name").unwrap_or_default();
    let mut out = serde_json::Map::new();
    for t in tables {
        let name = t[0].as_str().unwrap_or("").to_string();
        let rows = n.local_rows(&format!("SELECT * FROM \"{name}\" ORDER BY rowid")).unwrap_or_default();
        out.insert(name, Value::Array(rows));
    }
    Value::Object(out)
}

fn fill(n: &Node) {
    let r = n.execute(json!([
        "CREATE TABLE people (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, age INTEGER, score REAL, photo BLOB)",
        "CREATE TABLE notes (body TEXT)",
        "CREATE INDEX people_name ON people(name)",
        ["INSERT INTO people(name, age, score, photo) VALUES(?, ?, ?, ?)", "fiona", 9223372036854775807i64, 1.5, [0, 1, 255]],
        ["INSERT INTO people(name, age, score, photo) VALUES(?, ?, ?, ?)", "declan's", null, -2.25, null],
        ["INSERT INTO notes VALUES(?)", "héllo ✓ <&>"],
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 500) INSERT INTO notes SELECT 'note ' || x FROM c"
    ]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("error"), "{}", r.body);
}

fn get_bytes(n: &Node, path: &str) -> (u16, Vec<u8>) {
    let r = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(n.url(path))
        .send()
        .expect("GET");
    let status = r.status().as_u16();
    (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
}

#[test]
fn backup_then_load_gives_identical_content_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Node::start(&dir.path().join("src"), &[]);
    fill(&src);
    let want = content(&src);
    let (status, image) = get_bytes(&src, "/db/backup");
    assert_eq!(status, 200);
    assert!(image.starts_with(b"SQLite format 3\0"));
    // The copy is a plain database with the user's tables only.
    let f = dir.path().join("copy.sqlite");
    std::fs::write(&f, &image).expect("write");
    let c = rusqlite::Connection::open(&f).expect("open");
    let meta: i64 =
        c.query_row("SELECT count(*) FROM sqlite_master WHERE name LIKE '_raftlite%'", [], |r| r.get(0)).expect("q");
    assert_eq!(meta, 0);
    drop(c);

    // Load it into a 3-node cluster, through a follower.
    let cl = Cluster::start(3, &[]);
    cl.wait_leader().execute(json!(["CREATE TABLE old (x)", "INSERT INTO old VALUES(1)"]));
    let r = cl.follower().post("/db/load", "application/octet-stream", image.clone());
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"results":[]}"#));
    for n in &cl.nodes {
        wait_for(&format!("node {} loaded", n.id), Duration::from_secs(30), || (content(n) == want).then_some(()));
    }
    // The cluster goes on writing after the load, and a restart keeps it all.
    let l = cl.wait_leader();
    assert_eq!(l.execute(json!(["INSERT INTO notes VALUES('after load')"])).status, 200);
    for n in &cl.nodes {
        n.wait_rows("SELECT COUNT(*) FROM notes", vec![json!([502])]);
    }
    // A broken image is refused and changes nothing.
    let mut broken = image.clone();
    broken.truncate(3000);
    let r = l.post("/db/load", "application/octet-stream", broken);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(l.rows("SELECT COUNT(*) FROM notes"), vec![json!([502])]);
}

#[test]
fn sql_dumps_and_formats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Node::start(&dir.path().join("a"), &[]);
    fill(&a);
    let want = content(&a);
    let (status, dump) = get_bytes(&a, "/db/backup?fmt=sql");
    assert_eq!(status, 200);
    let text = String::from_utf8(dump.clone()).expect("utf8");
    assert!(text.starts_with("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n"), "{text}");
    assert!(text.contains("INSERT INTO \"people\" VALUES(1,'fiona',9223372036854775807,1.5,X'0001FF');"), "{text}");
    assert!(text.trim_end().ends_with("COMMIT;"));
    // Only some tables.
    let (_, only) = get_bytes(&a, "/db/backup?fmt=sql&tables=notes");
    let only = String::from_utf8(only).expect("utf8");
    assert!(only.contains("CREATE TABLE notes") && !only.contains("people"));
    // A dump loads into a fresh node as one transaction.
    let b = Node::start(&dir.path().join("b"), &[]);
    let r = b.post("/db/load", "text/plain", dump);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(content(&b), want);
    // A dump that fails part-way loads nothing.
    let bad = "CREATE TABLE z (x);\nINSERT INTO z VALUES(1);\nINSERT INTO nope VALUES(2);\n";
    let r = b.post("/db/load", "text/plain", bad);
    assert!(r.body.contains("no such table: nope"), "{}", r.body);
    assert!(b.local_rows("SELECT name FROM sqlite_master WHERE name = 'z'").unwrap_or_default().is_empty());
    // fmt=delete: a rollback-journal database; compress: gzip of the same bytes.
    let (_, del) = get_bytes(&a, "/db/backup?fmt=delete");
    assert_eq!((del[18], del[19]), (1, 1), "file format bytes of a DELETE-mode database");
    let (_, gz) = get_bytes(&a, "/db/backup?compress&fmt=sql");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut unzipped).expect("gunzip");
    assert_eq!(String::from_utf8(unzipped).expect("utf8"), text);
    let (_, vac) = get_bytes(&a, "/db/backup?vacuum");
    assert!(vac.starts_with(b"SQLite format 3\0"));
    assert_eq!(get_bytes(&a, "/db/backup?vacuum&fmt=sql").0, 400);
}

#[test]
fn backup_is_served_by_the_leader() {
    let c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    fill(l);
    let f = c.follower();
    wait_for("replicated", Duration::from_secs(30), || (content(f) == content(l)).then_some(()));
    let (status, via_follower) = get_bytes(f, "/db/backup?fmt=sql");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&via_follower).contains("CREATE TABLE people"));
    assert_eq!(get_bytes(f, "/db/backup?redirect").0, 301);
    assert_eq!(get_bytes(f, "/db/backup?noleader&fmt=sql").0, 200);
}

#[test]
fn boot_a_large_file_and_user_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("n"), &[]);
    // A database of more than 100 MB, made outside raftlite.
    let file = dir.path().join("big.sqlite");
    {
        let c = rusqlite::Connection::open(&file).expect("open");
        c.execute_batch(
            "CREATE TABLE big (id INTEGER PRIMARY KEY, pad BLOB);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 105000)
             INSERT INTO big(pad) SELECT zeroblob(1000) || x FROM c;",
        )
        .expect("fill");
    }
    let size = std::fs::metadata(&file).expect("size").len();
    assert!(size > 100_000_000, "{size}");
    let t0 = Instant::now();
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client")
        .post(n.url("/boot"))
        .body(reqwest::blocking::Body::new(std::fs::File::open(&file).expect("file")))
        .send()
        .expect("boot");
    let took = t0.elapsed();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    println!("/boot of {:.0} MB took {took:?} ({:.0} MB/s)", size as f64 / 1e6, size as f64 / 1e6 / took.as_secs_f64());
    assert_eq!(n.rows("SELECT COUNT(*) FROM big"), vec![json!([105000])]);
    assert_eq!(n.execute(json!(["INSERT INTO big(pad) VALUES(x'01')"])).status, 200);
    // Garbage is refused.
    let r = n.post("/boot", "application/octet-stream", "not a database at all");
    assert_eq!((r.status, r.body.as_str()), (400, "invalid SQLite data\n"));
    // /snapshot: 200 when there is something new, then 204.
    assert_eq!(n.post("/snapshot", "text/plain", "").status, 200);
    assert_eq!(n.post("/snapshot", "text/plain", "").status, 204);
    let reap = n.post("/reap", "text/plain", "").json();
    assert!(reap["snapshots_reaped"].is_number() && reap["wals_checkpointed"].is_number(), "{reap}");
    let st = n.status();
    assert_eq!(st["store"]["user_snapshots"], 2);
    assert_eq!(st["store"]["user_reaps"], 1);
    // A restart reuses the database as it is.
    let mut n = n;
    n.restart();
    assert_eq!(n.rows("SELECT COUNT(*) FROM big"), vec![json!([105001])]);
    assert_eq!(n.status()["store"]["num_restores_start_skipped"], 1);
}

/// `/boot` replaces the database outside the log, so the log before it must go: a node that
/// joins afterwards gets the booted database as a snapshot, not a replay of the entries before
/// the boot onto an empty database.
#[test]
fn a_node_that_joins_after_a_boot_gets_the_booted_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("n1"), &[]);
    assert_eq!(n.execute(json!(["CREATE TABLE before_boot (x)"])).status, 200);
    let file = dir.path().join("boot.sqlite");
    {
        let c = rusqlite::Connection::open(&file).expect("open");
        c.execute_batch(
            "CREATE TABLE booted (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000)
             INSERT INTO booted(v) SELECT 'row ' || x FROM c;",
        )
        .expect("fill");
    }
    let r = n.post("/boot", "application/octet-stream", std::fs::read(&file).expect("file"));
    assert_eq!(r.status, 200, "{}", r.body);
    let raft = n.status()["store"]["raft"].clone();
    assert!(raft["purged_index"].as_u64() >= raft["last_snapshot_index"].as_u64(), "{raft}");

    let mut m = Node::new("2", &dir.path().join("n2"), "127.0.0.2", &["-join", &n.raft]);
    m.spawn();
    m.wait_ready();
    let tables = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name";
    wait_for("the booted database on the new node", Duration::from_secs(60), || {
        (m.rows("SELECT COUNT(*) FROM booted") == vec![json!([1000])]).then_some(())
    });
    assert_eq!(m.rows(tables), n.rows(tables));
    assert_eq!(n.execute(json!(["INSERT INTO booted(v) VALUES('after')"])).status, 200);
    wait_for("the write on both", Duration::from_secs(30), || {
        (m.rows("SELECT COUNT(*) FROM booted") == vec![json!([1001])]).then_some(())
    });
}
