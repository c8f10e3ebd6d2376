//! The clusters under test: `raftlited` processes (started with `raftlite::harness`) on
//! 127.0.0.x, waiting for them, catching them up between runs, leader failover trials, and the
//! group-commit figures scraped from `/metrics`.

use raftlite::harness;

use super::*;

pub struct Server {
    pub child: Option<Child>,
    pub url: String,
    pub raft: String,
    pub args: Vec<String>,
    pub binary: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Server {
    pub fn kill(&mut self) {
        harness::kill(&mut self.child);
    }

    pub fn spawn(&mut self) {
        let child = Command::new(&self.binary).args(&self.args).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        match child {
            Ok(c) => self.child = Some(c),
            Err(e) => {
                eprintln!("cannot start {}: {e} (build it with cargo build --release)", self.binary.display());
                std::process::exit(1)
            }
        }
    }

    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        let (_, body) = fetch("GET", &format!("{}{path}", self.url), "")?;
        serde_json::from_str(&body).ok()
    }

    /// (resident, peak resident) memory of the process in bytes, from `/proc/<pid>/status`.
    pub fn memory(&self) -> Option<(u64, u64)> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|k| k * 1024)
        };
        Some((kb("VmRSS:")?, kb("VmHWM:")?))
    }

    /// Start counting the peak resident memory afresh (`clear_refs` 5 resets `VmHWM`).
    pub fn reset_peak_memory(&self) {
        if let Some(c) = &self.child {
            let _ = std::fs::write(format!("/proc/{}/clear_refs", c.id()), "5");
        }
    }

    pub fn leader(&self) -> Option<String> {
        self.get("/status?key=store.leader.node_id")?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    }
}

pub fn free_addr(ip: &str) -> String {
    harness::free_addr(ip).unwrap_or_else(|e| {
        eprintln!("no free port on {ip}: {e}");
        std::process::exit(1)
    })
}

pub use harness::poll_until;

pub fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    if !poll_until(timeout, f) {
        eprintln!("timed out waiting for {what}");
        std::process::exit(1)
    }
}

/// Wait (up to 60 s) until every node has applied everything in the leader's log, so that one
/// run's backlog (followers still applying a queued-write burst) does not slow the next.
pub fn quiesce(servers: &[Server]) {
    let index = |s: &Server, key: &str| s.get(&format!("/status?key=store.raft.{key}")).and_then(|v| v.as_u64());
    let caught_up = poll_until(Duration::from_secs(60), || {
        let last = servers.iter().filter_map(|s| index(s, "last_log_index")).max().unwrap_or(0);
        servers.iter().all(|s| index(s, "applied_index").is_some_and(|a| a >= last))
    });
    if !caught_up {
        eprintln!("warning: the cluster did not catch up within 60 s; measuring anyway");
    }
}

/// One request from the bench itself (not the measured load), over HTTPS for `https://` URLs:
/// status and body.
pub fn fetch(method: &str, url: &str, body: &str) -> Option<(u16, String)> {
    if url.starts_with("https://") {
        return super::tls::call(method, url, body);
    }
    let m = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
    let r = reqwest::blocking::Client::new()
        .request(m, url)
        .header("Content-Type", "application/json")
        .timeout(Duration::from_secs(5))
        .body(body.to_string())
        .send()
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().ok()?))
}

/// Start an `n`-node cluster on 127.0.0.x: node 1 bootstraps, the others join it.
pub fn start_cluster(binary: &Path, dir: &Path, n: usize) -> Vec<Server> {
    start_cluster_with(binary, dir, n, 60, None, &[])
}

/// [`start_cluster`] on 127.0.0.`ip_base`+i, with `tls`: (the CA, HTTPS on the API, mutual TLS
/// between the nodes), and `flags` added to every node's command line.
pub fn start_cluster_with(
    binary: &Path,
    dir: &Path,
    n: usize,
    ip_base: usize,
    tls: Option<(&super::tls::Pki, bool, bool)>,
    flags: &[String],
) -> Vec<Server> {
    let mut servers: Vec<Server> = (1..=n)
        .map(|i| {
            let ip = format!("127.0.0.{}", ip_base + i);
            let (h, r) = (free_addr(&ip), free_addr(&ip));
            let mut extra: Vec<String> = vec!["-log-level".into(), "warn".into()];
            extra.extend(flags.iter().cloned());
            let mut scheme = "http";
            if let Some((pki, api, node)) = tls {
                extra.extend(pki.flags(&format!("node{ip_base}-{i}"), &ip, api, node));
                if api {
                    scheme = "https";
                }
            }
            let cmd = harness::command(binary, &i.to_string(), &h, &r, &extra, &dir.join(format!("node{i}")));
            let args = cmd.get_args().map(|a| a.to_string_lossy().to_string()).collect();
            Server { child: None, url: format!("{scheme}://{h}"), raft: r, args, binary: binary.to_path_buf() }
        })
        .collect();
    let first = servers[0].raft.clone();
    for (i, s) in servers.iter_mut().enumerate() {
        if i > 0 {
            let data = s.args.pop().unwrap_or_default();
            s.args.extend(["-join".to_string(), first.clone(), data]);
        }
        s.spawn();
        if i == 0 {
            wait_until("node 1", Duration::from_secs(30), || s.leader().is_some());
        }
    }
    wait_until("all nodes", Duration::from_secs(60), || {
        let l = servers[0].get("/nodes").and_then(|v| v.as_object().map(|o| o.len()));
        l == Some(n) && servers.iter().all(|s| s.leader().is_some())
    });
    servers
}

pub fn leader_index(servers: &[Server]) -> Option<usize> {
    let id = servers.iter().find(|s| s.child.is_some())?.leader()?;
    id.parse::<usize>().ok().map(|i| i - 1).filter(|i| servers[*i].child.is_some())
}

pub fn execute(url: &str, sql: &str) -> bool {
    let body = serde_json::json!([sql]).to_string();
    fetch("POST", &format!("{url}/db/execute"), &body)
        .map(|(_, t)| t.starts_with("{\"results\":[") && !t.contains("error"))
        .unwrap_or(false)
}

/// 1000 rows for the point reads.
pub fn seed(url: &str) {
    let rows: Vec<String> =
        (0..1000).map(|k| format!(r#"["INSERT INTO bench(c, v) VALUES(0, 'seed-{k}')"]"#)).collect();
    let _ = fetch("POST", &format!("{url}/db/execute"), &format!("[{}]", rows.join(",")));
}

/// Leader SIGKILL → first acknowledged write on the new leader, `trials` times.
pub fn failover(binary: &Path, dir: &Path, trials: usize) -> Vec<Duration> {
    let mut servers = start_cluster(binary, dir, 3);
    let l = leader_index(&servers).unwrap_or(0);
    execute(&servers[l].url, "CREATE TABLE f (id INTEGER PRIMARY KEY, v INTEGER)");
    let mut out = Vec::new();
    for trial in 0..trials {
        let l = loop {
            if let Some(l) = leader_index(&servers) {
                break l;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let t0 = Instant::now();
        servers[l].kill();
        let survivors: Vec<String> = servers.iter().filter(|s| s.child.is_some()).map(|s| s.url.clone()).collect();
        let mut k = 0;
        loop {
            if execute(&survivors[k % survivors.len()], "INSERT INTO f(v) VALUES(1)") {
                break;
            }
            k += 1;
            if t0.elapsed() > Duration::from_secs(60) {
                eprintln!("trial {trial}: no write within 60 s");
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        out.push(t0.elapsed());
        servers[l].spawn();
        // The next trial starts once the restarted node has caught up with the leader, not merely
        // learnt who leads (which it does from the first reply it gets): a trial that kills the
        // leader while one survivor still lags measures a different, slower event. The lagging
        // survivor cannot win, yet it stands for election and votes for itself, so the
        // up-to-date one needs an extra round (docs/PERFORMANCE.md, "Failover").
        wait_until("restarted node to catch up", Duration::from_secs(60), || {
            let Some(lead) = leader_index(&servers) else { return false };
            let (a, b) = (raft_position(&servers[l]), raft_position(&servers[lead]));
            servers[l].leader().is_some() && a.is_some() && a == b
        });
    }
    out
}

/// (term, last log index, applied index) of a node, from `/status`.
fn raft_position(s: &Server) -> Option<(u64, u64, u64)> {
    let r = s.get("/status?key=store.raft")?;
    Some((r["term"].as_u64()?, r["last_log_index"].as_u64()?, r["applied_index"].as_u64()?))
}

/// The leader's write counters.
pub struct WriteCounters {
    /// Log entries proposed, and the requests they carried.
    pub proposals: f64,
    pub requests: f64,
    /// Log appends (each one fsync).
    pub appends: f64,
    /// Entries sent early to followers (`src/raft/presend.rs`), and of those, the ones accepted.
    pub presend: f64,
    pub presend_accepted: f64,
    /// openraft's requests answered by an early send's answer instead of sent again.
    pub presend_answers: f64,
    /// openraft's commit-index requests answered by the next early send instead of sent.
    pub commit_carried: f64,
}

/// A sample of the leader's write counters; differences over a run give requests per entry,
/// fsyncs per second and how often followers were sent an entry before the leader's fsync.
pub fn group_commit(url: &str) -> Option<WriteCounters> {
    let (_, text) = fetch("GET", &format!("{url}/metrics"), "")?;
    let presend = |outcome: &str| {
        scrape_labeled(&text, "raftlite_replication_presend_total", &format!("outcome=\"{outcome}\"")).unwrap_or(0.0)
    };
    Some(WriteCounters {
        proposals: scrape_value(&text, "raftlite_group_commit_requests_count")?,
        requests: scrape_value(&text, "raftlite_group_commit_requests_sum")?,
        appends: scrape_value(&text, "raftlite_log_appends_total")?,
        presend: presend("accepted") + presend("refused") + presend("failed"),
        presend_accepted: presend("accepted"),
        presend_answers: scrape_value(&text, "raftlite_replication_presend_answers_total").unwrap_or(0.0),
        commit_carried: scrape_value(&text, "raftlite_replication_commit_carried_total").unwrap_or(0.0),
    })
}

/// The `_sum` and `_count` of the histograms a write's time is split by, on one node.
pub struct Split(Vec<(f64, f64)>);

/// In the order `Split` holds them.
const SPLIT: [&str; 4] = [
    "raftlite_log_fsync_seconds",
    "raftlite_apply_seconds",
    "raftlite_replication_rpc_seconds",
    "raftlite_follower_append_seconds",
];

/// A sample of `url`'s split (families it has not recorded yet count as zero).
pub fn split(url: &str) -> Option<Split> {
    let (_, text) = fetch("GET", &format!("{url}/metrics"), "")?;
    let v = |f: &str| scrape_value(&text, f).unwrap_or(0.0);
    Some(Split(SPLIT.iter().map(|f| (v(&format!("{f}_sum")), v(&format!("{f}_count")))).collect()))
}

impl Split {
    /// Mean milliseconds of each family between `before` and `self`.
    fn means_since(&self, before: &Split) -> Vec<f64> {
        self.0
            .iter()
            .zip(&before.0)
            .map(|((s, c), (s0, c0))| if c > c0 { (s - s0) / (c - c0) * 1e3 } else { 0.0 })
            .collect()
    }
}

/// Where a write's time went over a run, from the leader's and one follower's histograms
/// (means: the metrics' buckets are too coarse for medians below a millisecond).
pub fn print_split(mean_ms: f64, leader: (&Split, &Split), follower: Option<(&Split, &Split)>) {
    let l = leader.1.means_since(leader.0);
    let mut line = format!(
        "    where a write's time goes (means over the run): client {mean_ms:.2} ms; leader log fsync {:.2}, apply {:.2}",
        l[0], l[1]
    );
    if let Some((b, a)) = follower {
        let f = a.means_since(b);
        line += &format!(
            ", replication round trip {:.2} (the follower's handling {:.2}, its log fsync {:.2})",
            l[2], f[3], f[0]
        );
    }
    println!("{line}");
}

/// The value of `family`'s series whose labels include `label` (`name="value"`).
pub fn scrape_labeled(text: &str, family: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.strip_prefix(family).is_some_and(|rest| rest.starts_with('{')))
        .find(|l| l.split('}').next().is_some_and(|labels| labels.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// One sample of a node's `/metrics`: the values of a few families.
pub fn scrape_value(text: &str, family: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(family))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
