//! Shared harness for integration tests: start the real `raftlited` binary on free loopback ports,
//! talk HTTP to it, kill it (SIGKILL) or stop it (SIGTERM) by PID, restart it on the same data.
//! Starting, waiting and stopping use `raftlite::harness`, as `raftlite-bench` and
//! `raftlite-chaos` do.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

pub mod gcs;
pub mod tls;

pub use raftlite::harness;
pub use serde_json::{json, Value};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port that was free a moment ago on `ip` (any 127.0.0.x).
pub fn free_port_on(ip: &str) -> u16 {
    let addr = harness::free_addr(ip).expect("free port");
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("port")
}

/// The harness's HTTP client. A pooled connection is not reused after 500 ms idle: a node may
/// close idle keep-alive connections after `-http-header-timeout` (1 s in some tests), and a
/// request sent on a connection the node has just closed fails (`IncompleteMessage`; a CI run
/// of `tests/limits.rs` met it).
fn client_builder() -> reqwest::blocking::ClientBuilder {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_millis(500))
}

/// `ip:port` with a free port.
pub fn free_addr(ip: &str) -> String {
    harness::free_addr(ip).expect("free port")
}

/// A test that cannot run here (no root, a missing tool) skips with a message, except in CI
/// (`CI` set), where a skip would let the run go green without testing anything: it fails.
pub fn skip_unless_ci(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("cannot run in CI: {why} (.ci/run must provide it)");
    }
    eprintln!("SKIPPED: {why}");
}

/// Start a node on data directory `dir` with `args` and expect it to refuse to start, saying
/// `want` in its log.
pub fn assert_refuses_to_start(dir: &Path, args: &[&str], want: &str) {
    let mut n = Node::new("1", dir, "127.0.0.1", args);
    n.spawn();
    let st = wait_for("the node to refuse to start", Duration::from_secs(30), || n.exit_status());
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(!st.success(), "{args:?}: the node started: {log}");
    assert!(log.contains(want), "{args:?}: {log}");
}

/// Write `v` as JSON to `dir/name` (creating `dir`) and return the path, for flags that take a
/// configuration file (`-auto-backup`, `-cdc-config`).
pub fn write_config(dir: &Path, name: &str, v: Value) -> String {
    std::fs::create_dir_all(dir).expect("dir");
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).expect("write config");
    p.display().to_string()
}

/// Poll `f` until it returns Some, or fail after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let mut out = None;
    harness::poll_until(timeout, || {
        out = f();
        out.is_some()
    });
    out.unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

pub struct Node {
    pub id: String,
    pub dir: PathBuf,
    pub http: String,
    pub raft: String,
    pub extra: Vec<String>,
    /// Environment variables for the process (failpoints, LD_PRELOAD).
    pub env: Vec<(String, String)>,
    /// Where the node's stderr goes (default: `<dir>.log`).
    pub log: PathBuf,
    child: Option<Child>,
    client: reqwest::blocking::Client,
}

pub struct Resp {
    pub status: u16,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Node {
    /// Start a node with its data under `dir` and wait until it is ready.
    pub fn start(dir: &Path, extra: &[&str]) -> Node {
        let mut n = Node::new("1", dir, "127.0.0.1", extra);
        n.spawn();
        n.wait_ready();
        n
    }

    /// A node that is not started yet, on `ip` (127.0.0.x) with free ports.
    pub fn new(id: &str, dir: &Path, ip: &str, extra: &[&str]) -> Node {
        Node {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            http: free_addr(ip),
            raft: free_addr(ip),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            log: dir.with_extension("log"),
            child: None,
            client: client_builder().build().expect("client"),
        }
    }

    /// Send `user`'s Basic credentials with every request this harness makes (nodes with `-auth`).
    pub fn with_credentials(mut self, user: &str, password: &str) -> Node {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            raftlite::http::auth::basic_header(user, password).parse().expect("header"),
        );
        self.client = client_builder().default_headers(h).build().expect("client");
        self
    }

    /// The value of an unlabelled metric in `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        self.metric_with(name, &[])
    }

    /// The value of metric `name` on the series whose labels include every `labels` pair
    /// (`("port", "raft")`), summed over matching series (0 when absent).
    pub fn metric_with(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let body = self.get("/metrics").body;
        body.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let (series, value) = rest.rsplit_once(' ')?;
                if !(series.is_empty() || series.starts_with('{')) {
                    return None;
                }
                if !labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))) {
                    return None;
                }
                value.trim().parse::<f64>().ok()
            })
            .sum()
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let bin = Path::new(env!("CARGO_BIN_EXE_raftlited"));
        let child = harness::command(bin, &self.id, &self.http, &self.raft, &self.extra, &self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftlited");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    pub fn wait_ready(&self) {
        if let Err(e) = harness::wait_ready(&self.client, &self.http, Duration::from_secs(30)) {
            panic!("node {}: {e}", self.id);
        }
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        harness::kill(&mut self.child);
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let Some(st) = harness::terminate(&mut c, Duration::from_secs(20)) else {
            panic!("node {} did not exit on SIGTERM", self.id);
        };
        if !st.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "node {} exited with {st}; log tail:\n{}",
                self.id,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        st
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn get(&self, path: &str) -> Resp {
        let r = self.client.get(self.url(path)).send().expect("GET");
        Resp { status: r.status().as_u16(), headers: r.headers().clone(), body: r.text().unwrap_or_default() }
    }

    /// GET that returns None when the node does not answer.
    pub fn get_opt(&self, path: &str) -> Option<Resp> {
        let r = self.client.get(self.url(path)).timeout(Duration::from_secs(2)).send().ok()?;
        Some(Resp { status: r.status().as_u16(), headers: r.headers().clone(), body: r.text().unwrap_or_default() })
    }

    /// POST JSON that returns None when the node does not answer.
    pub fn post_opt(&self, path: &str, body: String) -> Option<Resp> {
        let r = self.client.post(self.url(path)).header("Content-Type", "application/json").body(body).send().ok()?;
        Some(Resp { status: r.status().as_u16(), headers: r.headers().clone(), body: r.text().unwrap_or_default() })
    }

    /// The exit status, once the process has exited (it is then reaped and forgotten).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let st = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        self.child = None;
        Some(st)
    }

    /// Is the process still running (not exited)?
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().map(|c| matches!(c.try_wait(), Ok(None))).unwrap_or(false)
    }

    pub fn post(&self, path: &str, content_type: &str, body: impl Into<reqwest::blocking::Body>) -> Resp {
        let r = self.client.post(self.url(path)).header("Content-Type", content_type).body(body).send().expect("POST");
        Resp { status: r.status().as_u16(), headers: r.headers().clone(), body: r.text().unwrap_or_default() }
    }

    /// Configure failpoints on the node (`name=actions`; a build with `--features failpoints`).
    pub fn failpoint(&self, spec: &str) {
        let r = self.post("/debug/failpoints", "text/plain", spec.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
    }

    pub fn request(&self, method: &str, path: &str) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = self.client.request(m, self.url(path)).send().expect("request");
        Resp { status: r.status().as_u16(), headers: r.headers().clone(), body: r.text().unwrap_or_default() }
    }

    pub fn execute(&self, body: Value) -> Resp {
        self.post("/db/execute", "application/json", body.to_string())
    }

    pub fn execute_q(&self, query: &str, body: Value) -> Resp {
        self.post(&format!("/db/execute?{query}"), "application/json", body.to_string())
    }

    /// GET /db/query with `q` and extra query parameters.
    pub fn query(&self, sql: &str, params: &str) -> Resp {
        let q: String = url_encode(sql);
        let sep = if params.is_empty() { "" } else { "&" };
        self.get(&format!("/db/query?q={q}{sep}{params}"))
    }

    /// The rows (`values`) of a single-statement query, as JSON.
    pub fn rows(&self, sql: &str) -> Vec<Value> {
        let r = self.query(sql, "");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["results"][0]["values"].as_array().cloned().unwrap_or_default()
    }

    pub fn status(&self) -> Value {
        self.get("/status").json()
    }

    /// Like `get`, but `None` when the node does not answer.
    pub fn try_get(&self, path: &str) -> Option<Resp> {
        let r = self.client.get(self.url(path)).timeout(Duration::from_secs(5)).send().ok()?;
        Some(Resp { status: r.status().as_u16(), headers: r.headers().clone(), body: r.text().unwrap_or_default() })
    }

    /// The leader's node id as this node sees it ("" when unknown).
    pub fn leader_id(&self) -> String {
        self.try_get("/status?key=store.leader.node_id")
            .and_then(|r| serde_json::from_str::<Value>(&r.body).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Rows of a local (`level=none`) read, `None` if the node does not answer.
    pub fn local_rows(&self, sql: &str) -> Option<Vec<Value>> {
        let r = self.try_get(&format!("/db/query?level=none&q={}", url_encode(sql)))?;
        let v: Value = serde_json::from_str(&r.body).ok()?;
        Some(v["results"][0]["values"].as_array().cloned().unwrap_or_default())
    }

    /// Wait until `sql` read locally on this node returns `want`.
    pub fn wait_rows(&self, sql: &str, want: Vec<Value>) {
        wait_for(&format!("node {} to have {want:?} for {sql}", self.id), Duration::from_secs(30), || {
            (self.local_rows(sql)? == want).then_some(())
        });
    }

    /// DELETE with a body.
    pub fn delete(&self, path: &str, body: &str) -> Resp {
        let r = self
            .client
            .delete(self.url(path))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .expect("DELETE");
        Resp { status: r.status().as_u16(), headers: r.headers().clone(), body: r.text().unwrap_or_default() }
    }
}

/// `SELECT COUNT(*) FROM t` read locally on `n`.
pub fn count(n: &Node) -> Option<i64> {
    n.local_rows("SELECT COUNT(*) FROM t")?.first()?.get(0)?.as_i64()
}

/// Wait until `n` holds `want` rows in table `t`.
pub fn wait_count(n: &Node, want: i64) {
    wait_for(&format!("node {} to hold {want} rows", n.id), Duration::from_secs(60), || {
        (count(n)? == want).then_some(())
    });
}

/// A cluster of real processes on 127.0.0.x.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub _dir: tempfile::TempDir,
}

impl Cluster {
    /// Start `n` nodes: node 1 bootstraps, the others join it. `extra` applies to every node.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_as(n, extra, None)
    }

    /// [`Cluster::start`], the harness sending `credentials` with every request (`-auth`).
    pub fn start_as(n: usize, extra: &[&str], credentials: Option<(&str, &str)>) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<Node> = (1..=n)
            .map(|i| {
                let n =
                    Node::new(&i.to_string(), &dir.path().join(format!("n{i}")), &format!("127.0.0.{}", 10 + i), extra);
                match credentials {
                    Some((u, p)) => n.with_credentials(u, p),
                    None => n,
                }
            })
            .collect();
        let first = nodes[0].raft.clone();
        nodes[0].spawn();
        nodes[0].wait_ready();
        for node in nodes.iter_mut().skip(1) {
            node.extra.extend(["-join".to_string(), first.clone()]);
            node.spawn();
        }
        let c = Cluster { nodes, _dir: dir };
        for node in &c.nodes {
            node.wait_ready();
        }
        c.wait_voters(n);
        c
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Kill every node, move each to new Raft and HTTP addresses on 127.0.0.`first_ip`+i, write
    /// the new configuration to each node's `raft/peers.json` (with `api_addr` or, as rqlite
    /// writes it, without), and start them again: a `peers.json` recovery (docs/API.md §11).
    pub fn move_with_peers_json(&mut self, first_ip: u8, with_api_addr: bool) {
        for n in self.nodes.iter_mut() {
            n.kill();
        }
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let ip = format!("127.0.0.{}", first_ip as usize + i);
            n.raft = free_addr(&ip);
            n.http = free_addr(&ip);
            n.extra.clear();
        }
        let peers: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| {
                let mut p = json!({"id": n.id, "address": n.raft, "non_voter": false});
                if with_api_addr {
                    p["api_addr"] = json!(n.http);
                }
                p
            })
            .collect();
        for n in &self.nodes {
            std::fs::write(n.dir.join("raft").join("peers.json"), serde_json::to_vec(&peers).expect("json"))
                .expect("write peers.json");
        }
        for n in self.nodes.iter_mut() {
            n.spawn();
        }
    }

    /// Wait until the leader reports `n` voters and every running node knows the same leader.
    pub fn wait_voters(&self, n: usize) {
        wait_for(&format!("{n} voters"), Duration::from_secs(60), || {
            let l = self.leader()?;
            let nodes = l.try_get("/nodes")?;
            let v: Value = serde_json::from_str(&nodes.body).ok()?;
            (v.as_object()?.len() == n).then_some(())
        });
    }

    /// The running node every running node agrees is the leader.
    pub fn leader(&self) -> Option<&Node> {
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.running()).collect();
        let id = running.first()?.leader_id();
        if id.is_empty() || running.iter().any(|n| n.leader_id() != id) {
            return None;
        }
        running.into_iter().find(|n| n.id == id)
    }

    pub fn wait_leader(&self) -> &Node {
        wait_for("an agreed leader", Duration::from_secs(60), || self.leader())
    }

    pub fn follower(&self) -> &Node {
        let l = self.wait_leader().id.clone();
        self.nodes.iter().find(|n| n.running() && n.id != l).expect("a running follower")
    }

    pub fn node(&self, id: &str) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("node")
    }

    pub fn node_mut(&mut self, id: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Concurrent writers inserting unique values `v` into `t(v)` until `stop`; each acknowledged
/// value is pushed to `acked`. A writer stops at the first failure: the node is gone and the
/// outcome of that write is unknown (not acknowledged, never retried).
pub fn spawn_writers(
    url: &str,
    n: usize,
    acked: &std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    next: &std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    (0..n)
        .map(|_| {
            let (acked, next, stop, url) = (acked.clone(), next.clone(), stop.clone(), url.to_string());
            std::thread::spawn(move || {
                let client =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
                while !stop.load(Ordering::Relaxed) {
                    let v = next.fetch_add(1, Ordering::Relaxed);
                    let body = json!([["INSERT INTO t(v) VALUES(?)", v]]).to_string();
                    match client.post(&url).header("Content-Type", "application/json").body(body).send() {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let j: Value = r.json().unwrap_or(Value::Null);
                            if j["results"][0]["rows_affected"] == 1 {
                                acked.lock().expect("lock").push(v);
                            }
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect()
}

/// A seed for randomised tests (print it so a failure can be repeated).
pub fn rand_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(42) | 1
}

pub fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}
