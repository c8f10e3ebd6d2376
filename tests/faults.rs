//! Supervised actors under injected faults (built with `--features failpoints`): a panic inside an
//! actor restarts that actor alone, the node keeps serving, nothing acknowledged is lost and
//! nothing is applied twice.
#![cfg(feature = "failpoints")]

mod common;

use common::*;

fn set(n: &Node, spec: &str) {
    let r = n.post("/debug/failpoints", "text/plain", spec.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
}

fn restarts(n: &Node, actor: &str) -> u64 {
    n.status()["actors"]["restarts"][actor].as_u64().unwrap_or(0)
}

#[test]
fn applier_panic_restarts_the_applier_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = Node::start(&dir.path().join("data"), &[]);
    n.execute(json!(["CREATE TABLE t (v INTEGER)"]));
    let mut acked = Vec::new();
    for i in 0..5 {
        if n.execute(json!([["INSERT INTO t VALUES(?)", i]])).status == 200 {
            acked.push(i);
        }
    }
    // The next batch panics just before its COMMIT.
    set(&n, "applier::before_commit=1*panic");
    let r = n.execute(json!([["INSERT INTO t VALUES(?)", 100]]));
    if r.status == 200 && r.body.contains("rows_affected") {
        acked.push(100);
    }
    assert_eq!(restarts(&n, "applier"), 1, "{}", n.status()["actors"]);
    // The node keeps serving reads and writes.
    for i in 200..205 {
        let r = n.execute(json!([["INSERT INTO t VALUES(?)", i]]));
        assert_eq!(r.status, 200, "{}", r.body);
        acked.push(i);
    }
    let check = |n: &Node| {
        assert!(n.rows("SELECT v FROM t GROUP BY v HAVING COUNT(*) > 1").is_empty(), "a row applied twice");
        let have: Vec<i64> = n.rows("SELECT v FROM t ORDER BY v").iter().filter_map(|r| r[0].as_i64()).collect();
        for a in &acked {
            assert!(have.contains(a), "acknowledged {a} lost: {have:?}");
        }
    };
    check(&n);
    assert_eq!(n.status()["store"]["entries_reapplied"], 0);
    n.restart();
    check(&n);
    assert_eq!(n.status()["store"]["entries_reapplied"], 0);
}

#[test]
fn reader_and_http_panics_are_contained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("data"), &[]);
    n.execute(json!(["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"]));
    // A panic in the read pool fails that read, restarts the pool, and the next read works.
    set(&n, "readers::query=1*panic");
    let r = n.query("SELECT COUNT(*) FROM t", "");
    assert!(r.body.contains("error") || r.status >= 500, "{} {}", r.status, r.body);
    wait_for("the read pool back", std::time::Duration::from_secs(10), || {
        (n.query("SELECT COUNT(*) FROM t", "").body.contains("[[1]]")).then_some(())
    });
    assert_eq!(restarts(&n, "readers"), 1);
    // A panic in an HTTP handler is a 500 for that request only.
    set(&n, "http::handler=1*panic");
    let r = n.query("SELECT 1", "");
    assert_eq!((r.status, r.body.as_str()), (500, "internal error\n"));
    assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([1])]);
    // Unknown failpoint actions are a 400.
    assert_eq!(n.post("/debug/failpoints", "text/plain", "x=not-an-action").status, 400);
}

/// A failed fsync of the Raft log (EIO injected with strace) stops the node from acknowledging
/// anything: no write after the failure is acknowledged, and every write acknowledged before it
/// is there after a restart.
#[test]
fn fsync_error_stops_acknowledgements_and_loses_nothing() {
    if std::process::Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is required (the CI script installs it)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut n = Node::new("1", &data, "127.0.0.1", &[]);
    // Every fsync of a thread from its 20th on fails: past start-up, into the first writes.
    let child = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync",
            "-e",
            "inject=fsync,fdatasync:error=EIO:when=20+",
            "-o",
            "/dev/null",
        ])
        .arg(env!("CARGO_BIN_EXE_raftlited"))
        .args(["-node-id", "1", "-http-addr", &n.http, "-raft-addr", &n.raft])
        .arg(&data)
        .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
        .spawn()
        .expect("strace");
    let mut child = KillOnDrop(child);
    n.wait_ready();
    n.execute(json!(["CREATE TABLE t (v INTEGER)"]));
    let (mut acked, mut failed_at) = (Vec::new(), None);
    for i in 0..200 {
        let r = n.execute(json!([["INSERT INTO t VALUES(?)", i]]));
        let ok = r.status == 200 && r.body.contains("rows_affected");
        match (ok, failed_at) {
            (true, None) => acked.push(i),
            (true, Some(f)) => panic!("write {i} acknowledged after the fsync failure at {f}: {}", r.body),
            (false, None) => failed_at = Some(i),
            (false, Some(_)) => {}
        }
        if failed_at.map(|f| i > f + 10).unwrap_or(false) {
            break;
        }
    }
    let f = failed_at.expect("the injected fsync error never surfaced");
    println!("{} writes acknowledged, first failure at write {f}", acked.len());
    assert_eq!(n.get("/readyz").status, 503);
    child.kill();
    // Restart without faults: everything acknowledged is there, once.
    n.spawn();
    n.wait_ready();
    assert!(n.rows("SELECT v FROM t GROUP BY v HAVING COUNT(*) > 1").is_empty());
    let have: Vec<i64> = n.rows("SELECT v FROM t").iter().filter_map(|r| r[0].as_i64()).collect();
    for a in &acked {
        assert!(have.contains(a), "acknowledged {a} lost");
    }
}

struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    /// SIGKILL the traced node (strace's child) by its PID, then strace itself.
    fn kill(&mut self) {
        let pid = self.0.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for c in children.split_whitespace() {
            let _ = std::process::Command::new("kill").args(["-9", c]).status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}
