//! What one append to the CDC queue costs (src/cdc/queue.rs): the applier waits for it on every
//! batch, so it is on the write path. One group of one INSERT event per append, delivered in
//! tens as the sender does, against the floor for any SQLite-backed queue: a bare transaction
//! inserting one row into a table of its own, with the same journal mode and durability.
//!
//! cargo run --release --example cdc_queue_append

use std::time::Instant;

use raftlite::cdc::event::{Event, Group, Op};
use raftlite::cdc::queue::Queue;
use raftlite::store::command::Value;

const APPENDS: u64 = 20_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let q = Queue::open(&dir.path().join("queue.sqlite"), 1 << 30)?;
    let columns: std::sync::Arc<[String]> = vec!["id".to_string(), "c".to_string(), "v".to_string()].into();
    let t = Instant::now();
    for i in 1..=APPENDS {
        let after = vec![Value::Integer(i as i64), Value::Integer(7), Value::Text("a value of some length".into())];
        let e = Event {
            op: Op::Insert,
            table: "bench".into(),
            old_row_id: None,
            new_row_id: Some(i as i64),
            before: None,
            after: Some(after),
            columns: Some(columns.clone()),
        };
        q.append(&[Group { index: i, commit_timestamp: 1, events: vec![e] }], None, i)?;
        if i % 10 == 0 {
            q.read_after(i - 10, 10)?;
            q.delivered(i, 10);
        }
    }
    let queue_us = t.elapsed().as_secs_f64() * 1e6 / APPENDS as f64;

    let c = rusqlite::Connection::open(dir.path().join("floor.sqlite"))?;
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
    )?;
    let t = Instant::now();
    for i in 1..=APPENDS {
        c.execute_batch("BEGIN")?;
        c.prepare_cached("INSERT INTO t (id, v) VALUES (?1, ?2)")?
            .execute(rusqlite::params![i as i64, "x".repeat(200)])?;
        c.execute_batch("COMMIT")?;
    }
    let floor_us = t.elapsed().as_secs_f64() * 1e6 / APPENDS as f64;
    println!("cargo run --release --example cdc_queue_append");
    println!("queue append (one group, delivered in tens): {queue_us:.1} µs; a bare one-row transaction: {floor_us:.1} µs; ratio {:.2}", queue_us / floor_us);
    Ok(())
}
