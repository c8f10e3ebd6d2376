//! Restart of a node holding a 200 MB database: nothing is re-applied and the node is ready
//! quickly. The time is printed (measured, not asserted): restart time must not grow with the
//! size of the database (docs/DESIGN.md §5, invariant 2).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn restart_with_200mb_database_reapplies_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = Node::start(&dir.path().join("data"), &[]);
    n.execute(json!(["CREATE TABLE big (id INTEGER PRIMARY KEY, pad BLOB)"]));
    // 4 requests of 50,000 rows of 1 KiB each.
    for _ in 0..4 {
        let r = n.execute(json!([
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 50000) INSERT INTO big(pad) SELECT zeroblob(1024) || x FROM c"
        ]));
        assert_eq!(r.json()["results"][0]["rows_affected"], 50000, "{}", r.body);
    }
    let st = n.status();
    let size = st["store"]["sqlite3"]["db_size"].as_u64().unwrap_or(0);
    assert!(size >= 200_000_000, "database is only {size} bytes");
    let count = n.rows("SELECT COUNT(*) FROM big");

    n.kill();
    let t0 = Instant::now();
    n.spawn();
    let first_status = wait_for("first /status", Duration::from_secs(30), || {
        let r = reqwest::blocking::get(n.url("/status")).ok()?;
        (r.status().as_u16() == 200).then(|| t0.elapsed())
    });
    n.wait_ready();
    let ready = t0.elapsed();
    let st = n.status();
    println!(
        "restart with a {:.0} MB database: /status answered after {:?}, ready after {:?}",
        size as f64 / 1e6,
        first_status,
        ready
    );
    assert_eq!(st["store"]["entries_replayed_at_start"], 0, "{}", st["store"]);
    assert_eq!(st["store"]["entries_reapplied"], 0);
    assert_eq!(n.rows("SELECT COUNT(*) FROM big"), count);
}
