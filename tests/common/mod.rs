//! Shared harness for integration tests: start the real `raftlited` binary on free loopback ports,
//! talk HTTP to it, kill it (SIGKILL) or stop it (SIGTERM) by PID, restart it on the same data.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Poll `f` until it returns Some, or fail after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Node {
    pub dir: PathBuf,
    pub http: String,
    pub raft: String,
    pub extra: Vec<String>,
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
        let mut n = Node {
            dir: dir.to_path_buf(),
            http: format!("127.0.0.1:{}", free_port()),
            raft: format!("127.0.0.1:{}", free_port()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            client: reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
        };
        n.spawn();
        n.wait_ready();
        n
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_raftlited"))
            .args(["-node-id", "1", "-http-addr", &self.http, "-raft-addr", &self.raft])
            .args(&self.extra)
            .arg(&self.dir)
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
        wait_for("node ready", Duration::from_secs(30), || {
            let r = self.client.get(self.url("/readyz")).send().ok()?;
            (r.status().as_u16() == 200).then_some(())
        });
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("node did not exit on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

    pub fn post(&self, path: &str, content_type: &str, body: impl Into<reqwest::blocking::Body>) -> Resp {
        let r = self.client.post(self.url(path)).header("Content-Type", content_type).body(body).send().expect("POST");
        Resp { status: r.status().as_u16(), headers: r.headers().clone(), body: r.text().unwrap_or_default() }
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
