//! Automatic backups and restores (`-auto-backup`, `-auto-restore`) against real stores: a
//! directory, and an S3-compatible server (moto's server mode, started here on loopback):
//! backup then restore into a fresh node with identical rows, no upload when nothing changed, a
//! new leader carrying on, the store going away and coming back, wrong credentials, timestamped
//! and uncompressed names, and a damaged backup refused with the node left empty. Google Cloud
//! Storage against a GCS server in the test (tests/common/gcs.rs): multipart uploads, the id in
//! the object's metadata, restore, a damaged object, a wrong key.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A counter of `/status`'s `auto_backups` section.
fn uploads(n: &Node, key: &str) -> u64 {
    n.status()["auto_backups"][key].as_u64().unwrap_or(0)
}

fn wait_uploads(n: &Node, key: &str, at_least: u64) {
    wait_for(&format!("node {} {key} >= {at_least}", n.id), Duration::from_secs(60), || {
        (uploads(n, key) >= at_least).then_some(())
    });
}

fn digest(n: &Node) -> Vec<Value> {
    n.rows("SELECT COUNT(*), SUM(id), SUM(length(v)) FROM t")
}

fn fill(n: &Node, rows: usize) {
    n.execute(json!(["CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)"]));
    for i in 0..rows {
        assert_eq!(n.execute(json!([["INSERT INTO t(v) VALUES(?)", format!("row {i}")]])).status, 200);
    }
}

#[test]
fn file_backups_skip_when_unchanged_and_restore_a_new_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("backups");
    let cfg = write_config(
        dir.path(),
        "backup.json",
        json!({"version": 1, "type": "file", "interval": "200ms",
               "sub": {"dir": store.display().to_string(), "name": "db.sqlite.gz"}}),
    );
    let a = Node::start(&dir.path().join("a"), &["-auto-backup", &cfg]);
    fill(&a, 20);
    wait_for("the backup of 20 rows", Duration::from_secs(30), || {
        let id = a.status()["auto_backups"]["last_upload_id"].as_str()?.parse::<u64>().ok()?;
        (id >= 21).then_some(())
    });
    // Nothing changes: ticks skip, no new uploads.
    let ok = uploads(&a, "num_uploads_ok");
    let skipped = uploads(&a, "num_uploads_skipped");
    wait_uploads(&a, "num_uploads_skipped", skipped + 3);
    assert_eq!(uploads(&a, "num_uploads_ok"), ok, "uploaded although nothing changed");
    let metrics = a.get("/metrics").body;
    assert!(metrics.contains("raftlite_auto_backup_last_success_timestamp_seconds"), "{metrics}");
    // The file is gzip, with its id beside it.
    let mut magic = [0u8; 2];
    std::fs::File::open(store.join("db.sqlite.gz")).and_then(|mut f| f.read_exact(&mut magic)).expect("backup");
    assert_eq!(magic, [0x1f, 0x8b]);
    let meta: Value = serde_json::from_slice(&std::fs::read(store.join("METADATA.json")).expect("meta")).expect("json");
    assert_eq!(meta["id"], a.status()["auto_backups"]["last_upload_id"]);

    // A new node restores it, loads it when it leads, and is ready only then.
    let rcfg = write_config(
        dir.path(),
        "restore.json",
        json!({"version": 1, "type": "file", "timeout": "10s",
               "sub": {"dir": store.display().to_string(), "name": "db.sqlite.gz"}}),
    );
    let b = Node::start(&dir.path().join("b"), &["-auto-restore", &rcfg]);
    assert_eq!(digest(&b), digest(&a));
    assert_eq!(b.status()["auto_restore"]["pending"], false);
    // Restarted with data, it ignores the file.
    let mut b = b;
    b.restart();
    let log = std::fs::read_to_string(&b.log).unwrap_or_default();
    assert!(log.contains("this node has data; the backup is not fetched"), "{log}");
    assert_eq!(digest(&b), digest(&a));
    drop(b);

    // A damaged backup is refused: the node does not start, and nothing was loaded.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).expect("dir");
    let whole = std::fs::read(store.join("db.sqlite.gz")).expect("backup");
    std::fs::write(bad.join("db.sqlite.gz"), &whole[..whole.len() / 2]).expect("truncate");
    let badcfg = write_config(
        dir.path(),
        "bad.json",
        json!({"version": 1, "type": "file", "sub": {"dir": bad.display().to_string(), "name": "db.sqlite.gz"}}),
    );
    assert_refuses_to_start(&dir.path().join("c"), &["-auto-restore", &badcfg], "not a usable backup");
    assert!(!dir.path().join("c").join("db.sqlite").exists(), "a database was made from a damaged backup");
    // With continue_on_failure the node starts, empty.
    let cont = write_config(
        dir.path(),
        "cont.json",
        json!({"version": 1, "type": "file", "continue_on_failure": true,
               "sub": {"dir": bad.display().to_string(), "name": "db.sqlite.gz"}}),
    );
    let d = Node::start(&dir.path().join("d"), &["-auto-restore", &cont]);
    assert!(d.rows("SELECT name FROM sqlite_master").is_empty());

    // Timestamped, uncompressed names; vacuumed; held to 20 kB/s.
    let stamped = dir.path().join("stamped");
    let tcfg = write_config(
        dir.path(),
        "stamped.json",
        json!({"version": 1, "type": "file", "interval": "200ms", "timestamp": true, "no_compress": true,
               "vacuum": true, "max_mb_per_sec": 0.02,
               "sub": {"dir": stamped.display().to_string(), "name": "db.sqlite"}}),
    );
    let e = Node::start(&dir.path().join("e"), &["-auto-backup", &tcfg]);
    fill(&e, 3);
    let name =
        wait_for("a timestamped backup", Duration::from_secs(30), || {
            std::fs::read_dir(&stamped).ok()?.flatten().map(|f| f.file_name().to_string_lossy().to_string()).find(|n| {
                n.ends_with("_db.sqlite") && n.len() == "20261202101010_db.sqlite".len() && n.starts_with("20")
            })
        });
    let head = std::fs::read(stamped.join(&name)).expect("backup");
    assert!(head.starts_with(b"SQLite format 3\0"), "{name} is compressed");
    let copy = rusqlite::Connection::open(stamped.join(&name)).expect("open the backup");
    let count: i64 = copy.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).expect("rows");
    assert!(count >= 1, "{count} rows in {name}");
    let integrity: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
    assert_eq!(integrity, "ok");
    // The rate limit held: the upload took at least its bytes at 20 kB/s.
    wait_uploads(&e, "num_uploads_ok", 1);
    let last = &e.status()["auto_backups"];
    let (bytes, secs) = (last["last_upload_bytes"].as_f64().unwrap_or(0.0), last["last_upload_seconds"].as_f64());
    assert!(bytes > 0.0 && secs.unwrap_or(0.0) >= bytes / 20_000.0, "{bytes} bytes in {secs:?} s");

    // Bad configuration refuses to start, naming the key.
    let rel = write_config(dir.path(), "rel.json", json!({"type": "file", "sub": {"dir": "relative", "name": "x"}}));
    assert_refuses_to_start(&dir.path().join("f"), &["-auto-backup", &rel], "sub.dir: must be an absolute path");
    let typ = write_config(dir.path(), "typ.json", json!({"type": "ftp", "sub": {}}));
    assert_refuses_to_start(&dir.path().join("g"), &["-auto-backup", &typ], "type: unknown type");
}

/// moto's S3 server on a free loopback port, stopped (by PID) when dropped.
struct Moto {
    child: Option<Child>,
    port: u16,
}

/// Makes an IAM user allowed everything on S3, with a key, and the bucket `backups` (the first
/// four requests to a server started with `INITIAL_NO_AUTH_ACTION_COUNT=4`); prints the key.
const IAM_SETUP: &str = r#"
import boto3, json, sys
url = sys.argv[1]
iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
iam.create_user(UserName="backup")
k = iam.create_access_key(UserName="backup")["AccessKey"]
iam.put_user_policy(UserName="backup", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=k["AccessKeyId"],
             aws_secret_access_key=k["SecretAccessKey"]).create_bucket(Bucket="backups")
print(k["AccessKeyId"], k["SecretAccessKey"])
"#;

impl Moto {
    fn start(port: u16) -> Option<Moto> {
        Moto::start_env(port, &[])
    }

    /// A server that checks signatures: (the server, the key id and secret it accepts).
    fn start_with_auth(port: u16) -> Option<(Moto, String, String)> {
        let m = Moto::start_env(port, &[("INITIAL_NO_AUTH_ACTION_COUNT", "4")])?;
        let out = Command::new("python3").args(["-c", IAM_SETUP, &m.url("")]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (id, secret) = text.trim().split_once(' ')?;
        Some((m, id.to_string(), secret.to_string()))
    }

    fn start_env(port: u16, env: &[(&str, &str)]) -> Option<Moto> {
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let m = Moto { child: Some(child), port };
        let up =
            harness::poll_until(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        up.then_some(m)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn bucket(&self, name: &str) {
        let r = reqwest::blocking::Client::new().put(self.url(&format!("/{name}"))).send().expect("create bucket");
        assert!(r.status().is_success(), "{:?}", r.text());
    }

    fn stop(&mut self) {
        harness::kill(&mut self.child);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn moto_installed() -> bool {
    Command::new("python3").args(["-c", "import moto.server"]).output().map(|o| o.status.success()).unwrap_or(false)
}

fn s3(port: u16, key: &str, extra: Value) -> Value {
    let mut sub = json!({"access_key_id": key, "secret_access_key": "secret", "region": "us-east-1",
                         "bucket": "backups", "path": "cluster/db.sqlite.gz",
                         "endpoint": format!("http://127.0.0.1:{port}"), "force_path_style": true});
    if let (Some(s), Some(e)) = (sub.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    sub
}

#[test]
fn s3_backups_restore_survive_outages_and_follow_the_leader() {
    if !moto_installed() {
        return skip_unless_ci("moto is not installed (python3 -m pip install 'moto[server]')");
    }
    let port = free_port();
    let mut moto = Moto::start(port).expect("moto server");
    moto.bucket("backups");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "backup.json",
        json!({"version": 1, "type": "s3", "interval": "300ms", "sub": s3(port, "$RAFTLITE_TEST_KEY", json!({}))}),
    );
    let mut c = {
        // Each node of a 3-node cluster has the same file; the key comes from the environment.
        std::env::set_var("RAFTLITE_TEST_KEY", "AKIDEXAMPLE");
        Cluster::start(3, &["-auto-backup", &cfg])
    };
    let l = c.wait_leader().id.clone();
    fill(c.node(&l), 10);
    wait_uploads(c.node(&l), "num_uploads_ok", 1);
    // A tick may have uploaded part way through the inserts; the first tick that skips comes
    // after an upload of everything.
    let skipped = uploads(c.node(&l), "num_uploads_skipped");
    wait_uploads(c.node(&l), "num_uploads_skipped", skipped + 1);
    let ok = uploads(c.node(&l), "num_uploads_ok");
    let skipped = uploads(c.node(&l), "num_uploads_skipped");
    wait_uploads(c.node(&l), "num_uploads_skipped", skipped + 2);
    assert_eq!(uploads(c.node(&l), "num_uploads_ok"), ok, "uploaded although nothing changed");
    for n in c.nodes.iter().filter(|n| n.id != l) {
        assert_eq!(uploads(n, "num_uploads_ok"), 0, "a follower uploaded");
    }
    let leader_digest = digest(c.node(&l));

    // Restore into a fresh node, from S3.
    let rcfg = write_config(
        dir.path(),
        "restore.json",
        json!({"version": 1, "type": "s3", "sub": s3(port, "AKIDEXAMPLE", json!({}))}),
    );
    let fresh = Node::start(&dir.path().join("fresh"), &["-auto-restore", &rcfg]);
    assert_eq!(digest(&fresh), leader_digest);
    drop(fresh);

    // A new leader finds the stored backup current, then uploads the next change.
    c.node_mut(&l).kill();
    let l2 = wait_for("a new leader", Duration::from_secs(30), || {
        let id = c.nodes.iter().find(|n| n.running())?.leader_id();
        (!id.is_empty() && id != l && c.nodes.iter().filter(|n| n.running()).all(|n| n.leader_id() == id)).then_some(id)
    });
    wait_uploads(c.node(&l2), "num_uploads_skipped_id", 1);
    assert_eq!(uploads(c.node(&l2), "num_uploads_ok"), 0);
    fill(c.node(&l2), 1);
    wait_uploads(c.node(&l2), "num_uploads_ok", 1);

    // The store goes away: uploads fail and are counted, writes go on; it comes back (empty,
    // as moto keeps nothing), and uploads resume.
    moto.stop();
    fill(c.node(&l2), 1);
    wait_uploads(c.node(&l2), "num_uploads_fail", 1);
    fill(c.node(&l2), 1);
    // Counted while the store is down, so that an upload as soon as it is back is seen.
    let before = uploads(c.node(&l2), "num_uploads_ok");
    let mut moto = Moto::start(port).expect("moto server again");
    moto.bucket("backups");
    wait_uploads(c.node(&l2), "num_uploads_ok", before + 1);
    let rcfg2 = write_config(
        dir.path(),
        "restore2.json",
        json!({"version": 1, "type": "s3", "sub": s3(port, "AKIDEXAMPLE", json!({}))}),
    );
    let again = Node::start(&dir.path().join("again"), &["-auto-restore", &rcfg2]);
    assert_eq!(digest(&again), digest(c.node(&l2)));

    // A missing object or bucket: the restore fails with the store's reason.
    let missing = write_config(
        dir.path(),
        "missing.json",
        json!({"version": 1, "type": "s3", "sub": s3(port, "AKIDEXAMPLE", json!({"bucket": "no-such-bucket"}))}),
    );
    assert_refuses_to_start(
        &dir.path().join("missing"),
        &["-auto-restore", &missing],
        "downloading s3://no-such-bucket",
    );
    moto.stop();
}

#[test]
fn s3_with_wrong_credentials_fails_clearly_and_writes_go_on() {
    if !moto_installed() {
        return skip_unless_ci("moto is not installed (python3 -m pip install 'moto[server]')");
    }
    let port = free_port();
    let (_moto, id, secret) = Moto::start_with_auth(port).expect("moto server with IAM");
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = |secret: &str| s3(port, &id, json!({"secret_access_key": secret}));
    let good = write_config(
        dir.path(),
        "good.json",
        json!({"version": 1, "type": "s3", "interval": "200ms", "sub": sub(&secret)}),
    );
    let bad = write_config(
        dir.path(),
        "bad.json",
        json!({"version": 1, "type": "s3", "interval": "200ms", "sub": sub("wrong")}),
    );
    let n = Node::start(&dir.path().join("good"), &["-auto-backup", &good]);
    fill(&n, 5);
    wait_uploads(&n, "num_uploads_ok", 1);
    let m = Node::start(&dir.path().join("bad"), &["-auto-backup", &bad]);
    fill(&m, 5);
    wait_uploads(&m, "num_uploads_fail", 1);
    assert_eq!(uploads(&m, "num_uploads_ok"), 0);
    // Writes are not held up by the failing store.
    fill(&m, 5);
    assert_eq!(m.rows("SELECT COUNT(*) FROM t"), vec![json!([10])]);
    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
    assert!(log.contains("backup upload failed"), "{log}");
    // A restore with the wrong secret refuses to start, with the store's reason.
    let rbad = write_config(dir.path(), "rbad.json", json!({"version": 1, "type": "s3", "sub": sub("wrong")}));
    assert_refuses_to_start(&dir.path().join("r"), &["-auto-restore", &rbad], "SignatureDoesNotMatch");
}

/// The `sub` of a GCS configuration against the test store, with the key file `key`.
fn gcs_sub(store: &gcs::FakeGcs, key: &std::path::Path, name: &str) -> Value {
    json!({"project_id": "test-project", "bucket": "backups", "name": name,
           "credentials_path": key.display().to_string(), "endpoint": store.url()})
}

#[test]
fn gcs_backups_go_multipart_restore_a_new_node_and_refuse_a_wrong_key() {
    let store = gcs::FakeGcs::start("backups");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = gcs::key_file(dir.path(), "account.json", &gcs::account_key());
    let cfg = write_config(
        dir.path(),
        "backup.json",
        json!({"version": 1, "type": "gcs", "interval": "300ms", "no_compress": true,
               "sub": gcs_sub(&store, &key, "cluster/db.sqlite")}),
    );
    let mut a = Node::start(&dir.path().join("a"), &["-auto-backup", &cfg]);
    // Over 16 MiB uncompressed, so the upload is a multipart one.
    a.execute(json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"]));
    for _ in 0..18 {
        assert_eq!(a.execute(json!(["INSERT INTO t(v) VALUES(zeroblob(1048576))"])).status, 200);
    }
    fill(&a, 5);
    let want = digest(&a);
    // Wait for an upload of everything: a tick that skips comes after it.
    wait_uploads(&a, "num_uploads_ok", 1);
    let skipped = uploads(&a, "num_uploads_skipped");
    wait_uploads(&a, "num_uploads_skipped", skipped + 1);
    let id = a.status()["auto_backups"]["last_upload_id"].as_str().expect("id").to_string();
    let gcs::Object { data, meta, .. } = store.object("cluster/db.sqlite").expect("the backup object");
    assert!(data.len() > 16 << 20 && data.starts_with(b"SQLite format 3\0"), "{} bytes", data.len());
    assert!(store.multipart_completed() >= 1, "not a multipart upload");
    assert_eq!(store.open_uploads(), 0, "a multipart upload was left open");
    assert_eq!(meta, vec![("raftlite-id".to_string(), id.clone())]);
    // Restarted, the node finds the stored backup current and uploads nothing.
    a.restart();
    wait_uploads(&a, "num_uploads_skipped_id", 1);
    assert_eq!(uploads(&a, "num_uploads_ok"), 0, "uploaded again after a restart");

    // A new node restores it.
    let rcfg = write_config(
        dir.path(),
        "restore.json",
        json!({"version": 1, "type": "gcs", "sub": gcs_sub(&store, &key, "cluster/db.sqlite")}),
    );
    let b = Node::start(&dir.path().join("b"), &["-auto-restore", &rcfg]);
    assert_eq!(digest(&b), want);
    drop(b);

    // A damaged object is refused, the node left without a database.
    store.put("cluster/bad.sqlite", data[..data.len() / 2].to_vec());
    let bad = write_config(
        dir.path(),
        "bad.json",
        json!({"version": 1, "type": "gcs", "sub": gcs_sub(&store, &key, "cluster/bad.sqlite")}),
    );
    assert_refuses_to_start(&dir.path().join("c"), &["-auto-restore", &bad], "not a usable backup");
    assert!(!dir.path().join("c").join("db.sqlite").exists(), "a database was made from a damaged backup");

    // Another key for the same account: refused by the store, counted, and writes go on.
    let wrong = gcs::key_file(dir.path(), "wrong.json", &gcs::other_key());
    let wcfg = write_config(
        dir.path(),
        "wrong-backup.json",
        json!({"version": 1, "type": "gcs", "interval": "200ms", "sub": gcs_sub(&store, &wrong, "other/db.gz")}),
    );
    let w = Node::start(&dir.path().join("w"), &["-auto-backup", &wcfg]);
    fill(&w, 3);
    wait_uploads(&w, "num_uploads_fail", 1);
    assert_eq!(uploads(&w, "num_uploads_ok"), 0);
    assert!(store.refused() >= 1);
    assert!(store.object("other/db.gz").is_none());
    fill(&w, 3);
    assert_eq!(w.rows("SELECT COUNT(*) FROM t"), vec![json!([6])]);
    let log = std::fs::read_to_string(&w.log).unwrap_or_default();
    assert!(log.contains("backup upload failed") && log.contains("401"), "{log}");
    let rwrong = write_config(
        dir.path(),
        "wrong-restore.json",
        json!({"version": 1, "type": "gcs", "sub": gcs_sub(&store, &wrong, "cluster/db.sqlite")}),
    );
    assert_refuses_to_start(&dir.path().join("r"), &["-auto-restore", &rwrong], "401");

    // A key file that is not one refuses to start, naming the key.
    std::fs::write(dir.path().join("junk.json"), "{}").expect("write");
    let junk = write_config(
        dir.path(),
        "junk-backup.json",
        json!({"version": 1, "type": "gcs",
               "sub": gcs_sub(&store, &dir.path().join("junk.json"), "x")}),
    );
    assert_refuses_to_start(&dir.path().join("j"), &["-auto-backup", &junk], "sub.credentials_path");
}
