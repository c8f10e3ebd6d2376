//! The cluster under test: `raftlited` processes on 127.0.0.x (inside the run's network
//! namespace), started, killed, paused, removed and re-added by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use raftlite::harness;
use serde_json::Value;

pub struct NodeProc {
    pub id: String,
    pub ip: String,
    pub http: String,
    pub raft: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub paused: bool,
}

pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    binary: PathBuf,
    extra: Vec<String>,
    client: reqwest::blocking::Client,
}

pub fn client(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(1))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::blocking::Client::new())
}

impl Cluster {
    /// `n` nodes on 127.0.0.11.. with fixed ports (the namespace is ours alone).
    pub fn new(binary: &Path, dir: &Path, n: usize, extra: &[String]) -> Cluster {
        let nodes = (1..=n)
            .map(|i| {
                let ip = format!("127.0.0.{}", 10 + i);
                NodeProc {
                    id: i.to_string(),
                    http: format!("{ip}:4001"),
                    raft: format!("{ip}:4002"),
                    ip,
                    dir: dir.join(format!("node{i}")),
                    log: dir.join(format!("node{i}.log")),
                    child: None,
                    paused: false,
                }
            })
            .collect();
        Cluster { nodes, binary: binary.to_path_buf(), extra: extra.to_vec(), client: client(Duration::from_secs(2)) }
    }

    /// Start node `i` (index); `join`: the raft address to join, if any.
    pub fn spawn(&mut self, i: usize, join: Option<&str>) -> std::io::Result<()> {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log)?;
        let mut extra = self.extra.clone();
        if let Some(j) = join {
            extra.extend(["-join", j, "-join-interval", "500ms", "-join-attempts", "60"].map(String::from));
        }
        let mut cmd = harness::command(&self.binary, &n.id, &n.http, &n.raft, &extra, &n.dir);
        // A process group of its own: a Ctrl-C at the terminal reaches the harness, which stops
        // the nodes itself after its final checks, not the nodes directly.
        use std::os::unix::process::CommandExt;
        let child = cmd.stdout(Stdio::null()).stderr(log).process_group(0).spawn()?;
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<(), String> {
        self.spawn(0, None).map_err(|e| e.to_string())?;
        self.wait("node 1 ready", Duration::from_secs(30), |c| c.ready(0))?;
        let first = self.nodes[0].raft.clone();
        for i in 1..self.nodes.len() {
            self.spawn(i, Some(&first)).map_err(|e| e.to_string())?;
        }
        let n = self.nodes.len();
        self.wait("every node a voter", Duration::from_secs(60), |c| {
            c.leader().and_then(|l| c.voters(l)).map(|v| v == n).unwrap_or(false) && (0..n).all(|i| c.ready(i))
        })
    }

    pub fn wait(&self, what: &str, timeout: Duration, f: impl Fn(&Cluster) -> bool) -> Result<(), String> {
        if harness::poll_until(timeout, || f(self)) {
            Ok(())
        } else {
            Err(format!("timed out after {timeout:?} waiting for {what}"))
        }
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{}", self.nodes[i].http, path)
    }

    pub fn get_json(&self, i: usize, path: &str) -> Option<Value> {
        let r = self.client.get(self.url(i, path)).send().ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().ok()
    }

    pub fn ready(&self, i: usize) -> bool {
        harness::is_ready(&self.client, &self.nodes[i].http)
    }

    /// The index of the node that a majority of the cluster names as leader, asking the running,
    /// unpaused nodes. A majority, not all: one node still catching up (or just restarted) must not
    /// hide a leader the rest agree on.
    pub fn leader(&self) -> Option<usize> {
        let mut named: Vec<String> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_none() || n.paused {
                continue;
            }
            if let Some(st) = self.get_json(i, "/status") {
                let addr = st["store"]["leader"]["addr"].as_str().unwrap_or("");
                if !addr.is_empty() {
                    named.push(addr.to_string());
                }
            }
        }
        let quorum = self.nodes.len() / 2 + 1;
        let addr = named.iter().find(|a| named.iter().filter(|b| b == a).count() >= quorum)?;
        self.nodes.iter().position(|n| n.raft == *addr)
    }

    /// Wait up to `limit` for [`Cluster::leader`].
    pub fn wait_leader(&self, limit: Duration) -> Option<usize> {
        let mut leader = None;
        harness::poll_until(limit, || {
            leader = self.leader();
            leader.is_some()
        });
        leader
    }

    /// Voters the leader `i` reports.
    pub fn voters(&self, i: usize) -> Option<usize> {
        let v = self.get_json(i, "/nodes")?;
        Some(v.as_object()?.values().filter(|n| n["voter"].as_bool().unwrap_or(false)).count())
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(|c| c.id())
    }

    pub fn kill(&mut self, i: usize) {
        harness::kill(&mut self.nodes[i].child);
        self.nodes[i].paused = false;
    }

    pub fn signal(&mut self, i: usize, sig: &str) {
        if let Some(pid) = self.pid(i) {
            harness::signal(pid, sig);
            self.nodes[i].paused = sig == "-STOP";
        }
    }

    /// Remove node `i` from the cluster through the leader.
    pub fn remove(&self, i: usize) -> Result<(), String> {
        let l = self.wait_leader(Duration::from_secs(10)).ok_or("no leader within 10 s")?;
        let body = serde_json::json!({ "id": self.nodes[i].id }).to_string();
        let r = self
            .client
            .delete(self.url(l, "/remove"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("remove: {}", r.status()))
        }
    }

    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.signal(i, "-CONT");
            }
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
