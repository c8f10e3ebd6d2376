//! Crash safety: a client streams acknowledged single-row inserts while the node is SIGKILLed at
//! random moments; after every restart each acknowledged row is present exactly once.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const CYCLES: usize = 20;

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Snapshots every 64 entries: kills also land in checkpoints and their recording.
    let mut n = Node::start(&dir.path().join("data"), &["-raft-snap", "64", "-raft-snap-int", "100ms"]);
    assert_eq!(n.execute(json!(["CREATE TABLE t (v INTEGER NOT NULL)"])).status, 200);
    let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicU64::new(0));
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand_seed);
    println!("crash test seed {seed} (CRASH_SEED={seed} to repeat)");
    let mut rng = seed;
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let url = n.url("/db/execute");
        // Two concurrent writers, so kills also land while appends are batched together.
        let writers = spawn_writers(&url, 2, &acked, &next, &stop);
        // Kill after a random number of further acknowledged writes (a condition, not a sleep).
        rng = xorshift(rng);
        let target = acked.lock().expect("lock").len() + 5 + (rng % 60) as usize;
        wait_for("acknowledged writes", Duration::from_secs(60), || {
            (acked.lock().expect("lock").len() >= target).then_some(())
        });
        n.kill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.join();
        }
        n.spawn();
        n.wait_ready();
        let rows = n.rows("SELECT v, COUNT(*) FROM t GROUP BY v HAVING COUNT(*) > 1");
        assert!(rows.is_empty(), "cycle {cycle}: duplicated rows {rows:?}");
        let present: std::collections::HashSet<u64> =
            n.rows("SELECT v FROM t").iter().filter_map(|r| r[0].as_u64()).collect();
        let acked_now = acked.lock().expect("lock").clone();
        let missing: Vec<&u64> = acked_now.iter().filter(|v| !present.contains(v)).collect();
        assert!(missing.is_empty(), "cycle {cycle}: acknowledged rows lost: {missing:?}");
        let st = n.status();
        assert_eq!(st["store"]["entries_reapplied"], 0, "cycle {cycle}");
    }
    let snaps = n.status()["store"]["snapshot_store"]["snapshots"].clone();
    assert_eq!(snaps.as_array().map(Vec::len), Some(1), "the loop never took a snapshot: {snaps}");
    println!("{} acknowledged inserts survived {CYCLES} SIGKILLs", acked.lock().expect("lock").len());
}
