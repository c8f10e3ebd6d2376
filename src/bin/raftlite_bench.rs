//! `raftlite-bench`: write throughput and latency of one-row INSERT requests against real
//! `raftlited` clusters (1 and 3 nodes, started by the tool on 127.0.0.x), beside standalone SQLite
//! doing the same inserts with the same durability (WAL, `synchronous=FULL`, one transaction per
//! insert) in the same run; and the failover time of a 3-node cluster (leader SIGKILL to the
//! first acknowledged write on the new leader).
//!
//! ```text
//! cargo build --release && target/release/raftlite-bench --duration 10s --clients 1,16 --nodes 1,3 --failover 10
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;

struct Args {
    binary: PathBuf,
    duration: Duration,
    clients: Vec<usize>,
    nodes: Vec<usize>,
    failover: usize,
    snapshots_mb: u64,
    metrics_overhead: usize,
    plot: Option<PathBuf>,
    dir: Option<PathBuf>,
    workloads: Vec<Workload>,
    json: Option<PathBuf>,
    chart: Option<PathBuf>,
    /// Measure only raftlite (for quick comparisons of two builds); ratios need the baselines.
    baselines: bool,
}

/// What each client request does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Workload {
    /// One-row INSERT per request.
    Insert,
    /// 100 one-row INSERT statements per request.
    Bulk,
    /// One-row INSERT per request, queued (`?queue`); the run ends with a `queue&wait` barrier.
    Queued,
    /// A point read at this level.
    Read(&'static str),
    /// 90 % point reads (weak), 10 % one-row INSERTs.
    Mix,
    /// dqlite-demo's key/value API: PUT /key (one INSERT OR REPLACE in a dqlite transaction).
    DqlitePut,
    /// dqlite-demo's key/value API: GET /key.
    DqliteGet,
}

impl Workload {
    fn parse(s: &str) -> Option<Workload> {
        Some(match s {
            "insert" => Workload::Insert,
            "bulk" => Workload::Bulk,
            "queued" => Workload::Queued,
            "read-none" => Workload::Read("none"),
            "read-weak" => Workload::Read("weak"),
            "read-linearizable" => Workload::Read("linearizable"),
            "mix" => Workload::Mix,
            _ => return None,
        })
    }

    fn name(&self) -> String {
        match self {
            Workload::Insert => "insert".into(),
            Workload::Bulk => "bulk x100".into(),
            Workload::Queued => "queued insert".into(),
            Workload::Read(l) => format!("read {l}"),
            Workload::Mix => "90/10 read/write".into(),
            Workload::DqlitePut => "PUT".into(),
            Workload::DqliteGet => "GET".into(),
        }
    }

    /// Method, path and query, body, and the text an acknowledged answer contains.
    fn request(&self, c: usize, i: u64) -> (&'static str, String, String, &'static str) {
        let insert = |q: &str| {
            (
                "POST",
                format!("/db/execute{q}"),
                format!(r#"[["INSERT INTO bench(c, v) VALUES(?, ?)", {c}, "value-{i}"]]"#),
            )
        };
        let read = |level: &str| {
            let id = 1 + (i * 7919 + c as u64 * 104_729) % 1000;
            ("GET", format!("/db/query?level={level}&q=SELECT%20v%20FROM%20bench%20WHERE%20id%3D{id}"), String::new())
        };
        match self {
            Workload::Insert => {
                let (m, p, b) = insert("");
                (m, p, b, "rows_affected")
            }
            Workload::Queued => {
                let (m, p, b) = insert("?queue");
                (m, p, b, "sequence_number")
            }
            Workload::Bulk => {
                let stmts: Vec<String> = (0..100)
                    .map(|k| format!(r#"["INSERT INTO bench(c, v) VALUES(?, ?)", {c}, "value-{i}-{k}"]"#))
                    .collect();
                ("POST", "/db/execute".into(), format!("[{}]", stmts.join(",")), "rows_affected")
            }
            Workload::Read(level) => {
                let (m, p, b) = read(level);
                (m, p, b, "\"values\"")
            }
            Workload::Mix if i % 10 == 9 => {
                let (m, p, b) = insert("");
                (m, p, b, "rows_affected")
            }
            Workload::Mix => {
                let (m, p, b) = read("weak");
                (m, p, b, "\"values\"")
            }
            Workload::DqlitePut => ("PUT", format!("/k-{c}-{i}"), format!("value-{i}"), "done"),
            Workload::DqliteGet => {
                ("GET", format!("/seed-{}", (i * 7919 + c as u64 * 104_729) % 1000), String::new(), "seed")
            }
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: raftlite-bench [--binary PATH] [--duration 10s] [--clients 1,16] [--nodes 1,3] [--workloads insert,bulk,queued,read-none,read-weak,read-linearizable,mix] [--failover N] [--snapshots MB] [--metrics-overhead ROUNDS] [--plot FILE.png] [--json FILE] [--chart FILE.png] [--dir DIR] [--no-baselines]");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut a = Args {
        binary: exe.with_file_name("raftlited"),
        duration: Duration::from_secs(10),
        clients: vec![1, 16],
        nodes: vec![1],
        failover: 0,
        snapshots_mb: 0,
        metrics_overhead: 0,
        plot: None,
        dir: None,
        workloads: vec![Workload::Insert],
        json: None,
        chart: None,
        baselines: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.trim_start_matches('-') {
            "binary" => a.binary = PathBuf::from(val()),
            "duration" => a.duration = raftlite::config::parse_go_duration(&val()).unwrap_or_else(|_| usage()),
            "clients" => a.clients = val().split(',').map(|c| c.parse().unwrap_or_else(|_| usage())).collect(),
            "nodes" => a.nodes = val().split(',').map(|c| c.parse().unwrap_or_else(|_| usage())).collect(),
            "failover" => a.failover = val().parse().unwrap_or_else(|_| usage()),
            "snapshots" => a.snapshots_mb = val().parse().unwrap_or_else(|_| usage()),
            "metrics-overhead" => a.metrics_overhead = val().parse().unwrap_or_else(|_| usage()),
            "plot" => a.plot = Some(PathBuf::from(val())),
            "dir" => a.dir = Some(PathBuf::from(val())),
            "json" => a.json = Some(PathBuf::from(val())),
            "chart" => a.chart = Some(PathBuf::from(val())),
            "no-baselines" => a.baselines = false,
            "workloads" => {
                a.workloads = val().split(',').map(|w| Workload::parse(w).unwrap_or_else(|| usage())).collect()
            }
            _ => usage(),
        }
    }
    a
}

/// Result of one workload run.
struct Run {
    name: String,
    clients: usize,
    ops: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

struct Server {
    child: Option<Child>,
    url: String,
    raft: String,
    args: Vec<String>,
    binary: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Server {
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary).args(&self.args).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        match child {
            Ok(c) => self.child = Some(c),
            Err(e) => {
                eprintln!("cannot start {}: {e} (build it with cargo build --release)", self.binary.display());
                std::process::exit(1)
            }
        }
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        let r = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url))
            .timeout(Duration::from_secs(2))
            .send()
            .ok()?;
        r.json().ok()
    }

    fn leader(&self) -> Option<String> {
        self.get("/status?key=store.leader.node_id")?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    }
}

fn free_addr(ip: &str) -> String {
    let port = std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0);
    format!("{ip}:{port}")
}

/// Poll `f` until it holds or `timeout` passes; whether it held.
fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    if !poll_until(timeout, f) {
        eprintln!("timed out waiting for {what}");
        std::process::exit(1)
    }
}

/// Wait (up to 60 s) until every node has applied everything in the leader's log, so that one
/// run's backlog (followers still applying a queued-write burst) does not slow the next.
fn quiesce(servers: &[Server]) {
    let index = |s: &Server, key: &str| s.get(&format!("/status?key=store.raft.{key}")).and_then(|v| v.as_u64());
    let caught_up = poll_until(Duration::from_secs(60), || {
        let last = servers.iter().filter_map(|s| index(s, "last_log_index")).max().unwrap_or(0);
        servers.iter().all(|s| index(s, "applied_index").is_some_and(|a| a >= last))
    });
    if !caught_up {
        eprintln!("warning: the cluster did not catch up within 60 s; measuring anyway");
    }
}

/// Start an `n`-node cluster on 127.0.0.x: node 1 bootstraps, the others join it.
fn start_cluster(binary: &Path, dir: &Path, n: usize) -> Vec<Server> {
    let mut servers: Vec<Server> = (1..=n)
        .map(|i| {
            let ip = format!("127.0.0.{}", 60 + i);
            let (h, r) = (free_addr(&ip), free_addr(&ip));
            let mut args: Vec<String> =
                ["-node-id", &i.to_string(), "-http-addr", &h, "-raft-addr", &r, "-log-level", "warn"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            args.push(dir.join(format!("node{i}")).display().to_string());
            Server { child: None, url: format!("http://{h}"), raft: r, args, binary: binary.to_path_buf() }
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

fn leader_index(servers: &[Server]) -> Option<usize> {
    let id = servers.iter().find(|s| s.child.is_some())?.leader()?;
    id.parse::<usize>().ok().map(|i| i - 1).filter(|i| servers[*i].child.is_some())
}

fn execute(url: &str, sql: &str) -> bool {
    let body = serde_json::json!([sql]).to_string();
    reqwest::blocking::Client::new()
        .post(format!("{url}/db/execute"))
        .header("Content-Type", "application/json")
        .timeout(Duration::from_secs(2))
        .body(body)
        .send()
        .ok()
        .and_then(|r| r.text().ok())
        .map(|t| t.starts_with("{\"results\":[") && !t.contains("error"))
        .unwrap_or(false)
}

/// Leader SIGKILL → first acknowledged write on the new leader, `trials` times.
fn failover(binary: &Path, dir: &Path, trials: usize) -> Vec<Duration> {
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
        wait_until("restarted node", Duration::from_secs(60), || {
            servers[l].leader().is_some() && leader_index(&servers).is_some()
        });
    }
    out
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| std::process::exit(1))
}

/// The unmeasured warm-up before each measured run: a fifth of it, at most 1 s.
fn warmup(duration: Duration) -> Duration {
    (duration / 5).min(Duration::from_secs(1))
}

/// `clients` concurrent HTTP clients sending `w`'s requests, each over one keep-alive
/// connection of its own (hyper's HTTP/1 client, no pool or URL parsing per request: on two
/// shared cores the load generator's own CPU would otherwise be part of what is measured).
fn bench_http(url: &str, clients: usize, duration: Duration, w: Workload) -> Run {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|_| std::process::exit(1));
    let host = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, host) = (stop.clone(), host.clone());
                tokio::spawn(async move {
                    let (mut h, mut ok, mut err) = (hist(), 0u64, 0u64);
                    let mut conn: Option<Conn> = None;
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (method, path, body, ack) = w.request(c, i);
                        i += 1;
                        let t = Instant::now();
                        if conn.as_ref().is_none_or(|s| s.is_closed()) {
                            conn = connect(&host).await;
                        }
                        let acked = match conn.as_mut() {
                            Some(sender) => send(sender, &host, method, &path, body, ack).await,
                            None => false,
                        };
                        if acked {
                            ok += 1;
                            let _ = h.record(t.elapsed().as_micros() as u64);
                        } else {
                            err += 1;
                            if conn.is_none() {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    (h, ok, err)
                })
            })
            .collect();
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        let mut run = Run { name: "raftlite 1 node".into(), clients, ops: 0, errors: 0, secs: 0.0, hist: hist() };
        for t in tasks {
            if let Ok((h, ok, err)) = t.await {
                let _ = run.hist.add(&h);
                run.ops += ok;
                run.errors += err;
            }
        }
        if w == Workload::Queued {
            // Queued writes count once they are committed: the run ends at the flush barrier.
            if let Some(mut sender) = connect(&host).await {
                let path = "/db/execute?queue&wait&timeout=60s";
                let _ = send(&mut sender, &host, "POST", path, "[]".into(), "sequence_number").await;
            }
        }
        run.secs = start.elapsed().as_secs_f64();
        run
    })
}

/// The sending half of one client's HTTP/1 connection.
type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1 connection to `host` (TCP_NODELAY), its driver spawned.
async fn connect(host: &str) -> Option<Conn> {
    let stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Send one request; true when the answer is a 2xx whose body contains `ack`.
async fn send(sender: &mut Conn, host: &str, method: &str, path: &str, body: String, ack: &str) -> bool {
    use http_body_util::BodyExt;
    if sender.ready().await.is_err() {
        return false;
    }
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)));
    let Ok(req) = req else { return false };
    let Ok(resp) = sender.send_request(req).await else { return false };
    let success = resp.status().is_success();
    match resp.into_body().collect().await {
        Ok(b) => success && b.to_bytes().windows(ack.len()).any(|w| w == ack.as_bytes()),
        Err(_) => false,
    }
}

/// A `dqlite-demo` cluster of `n` nodes on 127.0.0.7x (the first bootstraps, the others join it),
/// with 1,000 keys `seed-N` for the GETs.
fn start_dqlite(dir: &Path, n: usize) -> Vec<Server> {
    let mut servers = Vec::new();
    let first_db = "127.0.0.71:9001".to_string();
    for i in 1..=n {
        let ip = format!("127.0.0.{}", 70 + i);
        let (api, db) = (format!("{ip}:8001"), format!("{ip}:9001"));
        let d = dir.join(format!("dq{i}"));
        let _ = std::fs::create_dir_all(&d);
        let mut args: Vec<String> = ["--api", &api, "--db", &db, "--dir"].iter().map(|s| s.to_string()).collect();
        args.push(d.display().to_string());
        if i > 1 {
            args.extend(["--join".to_string(), first_db.clone()]);
        }
        let mut s =
            Server { child: None, url: format!("http://{api}"), raft: db, args, binary: PathBuf::from("dqlite-demo") };
        s.spawn();
        wait_until("dqlite-demo node", Duration::from_secs(30), || {
            reqwest::blocking::Client::new()
                .put(format!("{}/probe", s.url))
                .body("1")
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        });
        servers.push(s);
    }
    let c = reqwest::blocking::Client::new();
    for k in 0..1000 {
        let _ = c.put(format!("{}/seed-{k}", servers[0].url)).body(format!("seed-{k}")).send();
    }
    servers
}

/// The disk's raw rate of small appends each made durable (`fdatasync`): the floor under any
/// fsync-per-write design on this machine.
fn bench_disk(path: &Path, duration: Duration) -> Run {
    use std::io::Write;
    let mut run = Run { name: "raw disk".into(), clients: 1, ops: 0, errors: 0, secs: 0.0, hist: hist() };
    let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) else { return run };
    let start = Instant::now();
    let rec = [0x42u8; 100];
    while start.elapsed() < duration {
        let t = Instant::now();
        if f.write_all(&rec).and_then(|_| f.sync_data()).is_ok() {
            run.ops += 1;
            let _ = run.hist.record(t.elapsed().as_micros() as u64);
        } else {
            run.errors += 1;
        }
    }
    run.secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    run
}

/// The same inserts on standalone SQLite: WAL, synchronous=FULL, one transaction per insert, one
/// connection per client thread.
fn bench_sqlite(path: &Path, clients: usize, duration: Duration) -> Run {
    {
        let c = rusqlite::Connection::open(path).unwrap_or_else(|_| std::process::exit(1));
        let _ = c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, c INTEGER, v TEXT)",
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, path) = (stop.clone(), path.to_path_buf());
            std::thread::spawn(move || {
                let conn = rusqlite::Connection::open(&path).unwrap_or_else(|_| std::process::exit(1));
                let _ = conn.execute_batch("PRAGMA synchronous=FULL");
                let _ = conn.busy_timeout(Duration::from_secs(30));
                let (mut h, mut ok, mut err) = (hist(), 0u64, 0u64);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match conn.execute(
                        "INSERT INTO bench(c, v) VALUES(?1, ?2)",
                        rusqlite::params![c as i64, format!("value-{i}")],
                    ) {
                        Ok(_) => {
                            ok += 1;
                            let _ = h.record(t.elapsed().as_micros() as u64);
                        }
                        Err(_) => err += 1,
                    }
                    i += 1;
                }
                (h, ok, err)
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut run = Run { name: "standalone SQLite".into(), clients, ops: 0, errors: 0, secs: 0.0, hist: hist() };
    for t in threads {
        if let Ok((h, ok, err)) = t.join() {
            let _ = run.hist.add(&h);
            run.ops += ok;
            run.errors += err;
        }
    }
    run.secs = start.elapsed().as_secs_f64();
    run
}

/// The leader's group-commit counters: (log entries proposed, requests they carried, log
/// appends). Differences over a run give requests per entry and fsyncs per second.
fn group_commit(url: &str) -> Option<(f64, f64, f64)> {
    let text = reqwest::blocking::Client::new().get(format!("{url}/metrics")).send().ok()?.text().ok()?;
    Some((
        scrape_value(&text, "raftlite_group_commit_requests_count")?,
        scrape_value(&text, "raftlite_group_commit_requests_sum")?,
        scrape_value(&text, "raftlite_log_appends_total")?,
    ))
}

/// One sample of a node's `/metrics`: the values of a few families.
fn scrape_value(text: &str, family: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(family))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A 3-node cluster under a steady write load for 40 s, with a snapshot at 10 s, the leader
/// SIGKILLed at 20 s and restarted at 30 s; `/metrics` of every node sampled every 500 ms; the
/// result drawn to `png` (client write rate and p99, and each node's applied index).
/// A bar chart of every run's throughput, raftlite beside the baselines, p99 in the label.
fn chart(png: &Path, runs: &[(String, usize, f64, f64)]) {
    use plotters::prelude::*;
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").unwrap_or_default();
    if font.is_empty() || runs.is_empty() {
        eprintln!("chart: needs the DejaVu Sans font (apt-get install fonts-dejavu-core) and some runs");
        return;
    }
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, font);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let h = 120 + 26 * runs.len() as u32;
        let root = BitMapBackend::new(png, (1200, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let max = runs.iter().map(|r| r.2).fold(1.0, f64::max) * 1.15;
        let mut c = ChartBuilder::on(&root)
            .caption("raftlite-bench: requests/s per workload (p99 ms in brackets)", ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(10)
            .build_cartesian_2d(0.0..max, 0.0..runs.len() as f64)?;
        c.configure_mesh().disable_y_mesh().disable_y_axis().x_desc("requests/s").draw()?;
        for (k, (name, clients, rate, p99)) in runs.iter().enumerate() {
            let y = (runs.len() - 1 - k) as f64;
            let color = if name.starts_with("raftlite") { BLUE.mix(0.6) } else { RGBColor(230, 140, 40).mix(0.8) };
            c.draw_series(std::iter::once(Rectangle::new([(0.0, y + 0.15), (*rate, y + 0.85)], color.filled())))?;
            c.draw_series(std::iter::once(Text::new(
                format!("{name}, {clients} cl: {rate:.0}/s [{p99:.1}]"),
                (max * 0.01, y + 0.62),
                ("sans-serif", 14),
            )))?;
        }
        root.present()?;
        Ok(())
    };
    if let Err(e) = draw() {
        eprintln!("chart: {e}");
    }
}

fn plot_run(binary: &Path, dir: &Path, png: &Path) {
    use plotters::prelude::*;
    let mut servers = start_cluster(binary, &dir.join("plot"), 3);
    let l = leader_index(&servers).unwrap_or(0);
    execute(&servers[l].url, "CREATE TABLE bench (id INTEGER PRIMARY KEY, c INTEGER, v TEXT)");
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let start = Instant::now();
    let total = Duration::from_secs(40);
    // Writers: 4 clients, each sending to the nodes in turn (followers forward to the leader).
    let per_sec = Arc::new(std::sync::Mutex::new(vec![(0u64, hist()); 41]));
    let writers: Vec<_> = (0..4)
        .map(|c| {
            let (urls, per_sec) = (urls.clone(), per_sec.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().ok();
                let mut k = c;
                while start.elapsed() < total {
                    let t = Instant::now();
                    let url = &urls[k % urls.len()];
                    let ok = client
                        .as_ref()
                        .and_then(|cl| {
                            cl.post(format!("{url}/db/execute"))
                                .header("Content-Type", "application/json")
                                .body(format!(r#"[["INSERT INTO bench(c, v) VALUES(?, 'x')", {c}]]"#))
                                .send()
                                .ok()
                        })
                        .and_then(|r| r.text().ok())
                        .map(|b| b.contains("rows_affected"))
                        .unwrap_or(false);
                    if ok {
                        let sec = start.elapsed().as_secs() as usize;
                        if let Ok(mut v) = per_sec.lock() {
                            if let Some(slot) = v.get_mut(sec) {
                                slot.0 += 1;
                                let _ = slot.1.record(t.elapsed().as_micros() as u64);
                            }
                        }
                    } else {
                        k += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    // Sampler and the fault schedule.
    let mut applied: Vec<Vec<(f64, f64)>> = vec![Vec::new(); 3];
    let (mut snapped, mut killed, mut restarted) = (false, None, false);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_millis(400)).build().ok();
    while start.elapsed() < total {
        let t = start.elapsed().as_secs_f64();
        for (i, s) in servers.iter().enumerate() {
            let text = client
                .as_ref()
                .and_then(|c| c.get(format!("{}/metrics", s.url)).send().ok())
                .and_then(|r| r.text().ok());
            if let Some(v) = text.as_deref().and_then(|t| scrape_value(t, "raftlite_raft_applied_index")) {
                applied[i].push((t, v));
            }
        }
        if t >= 10.0 && !snapped {
            snapped = true;
            if let Some(l) = leader_index(&servers) {
                let _ = reqwest::blocking::Client::new().post(format!("{}/snapshot", servers[l].url)).send();
            }
        }
        if t >= 20.0 && killed.is_none() {
            let l = leader_index(&servers).unwrap_or(0);
            servers[l].kill();
            killed = Some(l);
        }
        if t >= 30.0 && !restarted {
            restarted = true;
            if let Some(l) = killed {
                servers[l].spawn();
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for w in writers {
        let _ = w.join();
    }
    let per_sec = per_sec.lock().map(|v| v.clone()).unwrap_or_default();
    let rates: Vec<(f64, f64)> =
        per_sec.iter().enumerate().take(40).map(|(i, (n, _))| (i as f64 + 0.5, *n as f64)).collect();
    let p99: Vec<(f64, f64)> = per_sec
        .iter()
        .enumerate()
        .take(40)
        .filter(|(_, (n, _))| *n > 0)
        .map(|(i, (_, h))| (i as f64 + 0.5, h.value_at_quantile(0.99) as f64 / 1000.0))
        .collect();
    // Draw.
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").unwrap_or_default();
    if font.is_empty() {
        eprintln!("plot: needs the DejaVu Sans font (apt-get install fonts-dejavu-core)");
        return;
    }
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, font);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(png, (1200, 900)).into_drawing_area();
        root.fill(&WHITE)?;
        let areas = root.split_evenly((3, 1));
        let events = [(10.0, "snapshot"), (20.0, "leader SIGKILL"), (30.0, "old leader restarted")];
        let max_rate = rates.iter().map(|r| r.1).fold(1.0, f64::max);
        let max_p99 = p99.iter().map(|r| r.1).fold(1.0, f64::max);
        let max_idx = applied.iter().flatten().map(|r| r.1).fold(1.0, f64::max);
        let specs: [(&str, f64, &str); 3] = [
            ("acknowledged writes per second (4 clients)", max_rate * 1.1, "writes/s"),
            ("write latency p99 per second (ms)", max_p99 * 1.1, "ms"),
            ("applied log index per node (from /metrics)", max_idx * 1.05, "index"),
        ];
        for (k, area) in areas.iter().enumerate() {
            let (title, ymax, ylabel) = specs[k];
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..40f64, 0f64..ymax)?;
            chart.configure_mesh().x_desc("seconds").y_desc(ylabel).label_style(("sans-serif", 12)).draw()?;
            for (t, label) in events {
                chart.draw_series(LineSeries::new(vec![(t, 0.0), (t, ymax)], RED.mix(0.6)))?.label(label);
            }
            match k {
                0 => {
                    chart.draw_series(LineSeries::new(rates.clone(), BLUE.stroke_width(2)))?;
                }
                1 => {
                    chart.draw_series(LineSeries::new(p99.clone(), MAGENTA.stroke_width(2)))?;
                }
                _ => {
                    for (i, series) in applied.iter().enumerate() {
                        let color = [BLUE, GREEN, BLACK][i % 3];
                        chart
                            .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
                            .label(format!("node {}", i + 1))
                            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                    }
                    chart.configure_series_labels().label_font(("sans-serif", 12)).border_style(BLACK).draw()?;
                }
            }
        }
        root.present()?;
        Ok(())
    };
    match draw() {
        Ok(()) => {
            println!("plot written to {} (events at 10 s snapshot, 20 s leader SIGKILL, 30 s restart)", png.display())
        }
        Err(e) => eprintln!("plot: {e}"),
    }
    drop(servers);
}

/// Write throughput with metrics on and off (`-metrics=false`), in alternating rounds on two
/// single nodes, so that drift of a shared machine hits both alike.
fn metrics_overhead(binary: &Path, dir: &Path, rounds: usize, duration: Duration) {
    let start = |name: &str, ip: &str, extra: &[&str]| {
        let (h, r) = (free_addr(ip), free_addr(ip));
        let mut args: Vec<String> = ["-node-id", "1", "-http-addr", &h, "-raft-addr", &r, "-log-level", "warn"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(dir.join(name).display().to_string());
        let mut s = Server { child: None, url: format!("http://{h}"), raft: r, args, binary: binary.to_path_buf() };
        s.spawn();
        wait_until(name, Duration::from_secs(30), || s.leader().is_some());
        execute(&s.url, "CREATE TABLE bench (id INTEGER PRIMARY KEY, c INTEGER, v TEXT)");
        s
    };
    let on = start("metrics-on", "127.0.0.81", &[]);
    let off = start("metrics-off", "127.0.0.82", &["-metrics=false"]);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(bench_http(&on.url, 1, duration, Workload::Insert).rate());
        b.push(bench_http(&off.url, 1, duration, Workload::Insert).rate());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    };
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ");
    println!("\n## Metrics overhead (1 client, one-row INSERTs, {rounds} alternating rounds of {duration:?})\n");
    println!("metrics on  (ops/s per round): {}", fmt(&a));
    println!("metrics off (ops/s per round): {}", fmt(&b));
    let mut pairs: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y.max(1e-9)).collect();
    println!("per-round on/off ratios: {}", pairs.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" "));
    println!("median of per-round ratios: {:.3}", median(&mut pairs));
    let (ma, mb) = (median(&mut a), median(&mut b));
    println!("median on {ma:.0} ops/s, off {mb:.0} ops/s: on/off = {:.3} ({:+.1}%)", ma / mb, (ma / mb - 1.0) * 100.0);
}

/// The snapshot/backup/boot/restart figures of issue 4 on a database of `mb` megabytes.
fn snapshot_bench(binary: &Path, dir: &Path, mb: u64, duration: Duration) {
    let mbs = |bytes: u64, t: Duration| bytes as f64 / 1e6 / t.as_secs_f64().max(1e-9);
    println!("\n## Snapshots, backup, boot and restart with a {mb} MB database\n");
    // A database made outside raftlite, booted into a single node.
    let file = dir.join("source.sqlite");
    {
        let c = rusqlite::Connection::open(&file).unwrap_or_else(|_| std::process::exit(1));
        let rows = mb * 1000;
        let _ = c.execute_batch(&format!(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; CREATE TABLE big (id INTEGER PRIMARY KEY, pad BLOB);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < {rows}) INSERT INTO big(pad) SELECT zeroblob(1000) FROM c;
             CREATE TABLE bench (id INTEGER PRIMARY KEY, c INTEGER, v TEXT);"
        ));
    }
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    let _ = std::fs::copy(&file, dir.join("plain-copy.sqlite"));
    let _ = std::fs::File::open(dir.join("plain-copy.sqlite")).and_then(|f| f.sync_all());
    let copy_t = t.elapsed();
    let _ = std::fs::remove_file(dir.join("plain-copy.sqlite"));
    println!("plain file copy (+fsync) of {:.0} MB: {copy_t:?} ({:.0} MB/s)", size as f64 / 1e6, mbs(size, copy_t));

    let ip = "127.0.0.71";
    let (h, r) = (free_addr(ip), free_addr(ip));
    let data = dir.join("snap-node1");
    let args: Vec<String> =
        ["-node-id", "1", "-http-addr", &h, "-raft-addr", &r, "-log-level", "warn", "-raft-snap-int", "1h"]
            .iter()
            .map(|s| s.to_string())
            .chain(std::iter::once(data.display().to_string()))
            .collect();
    let mut node =
        Server { child: None, url: format!("http://{h}"), raft: r.clone(), args, binary: binary.to_path_buf() };
    node.spawn();
    wait_until("node", Duration::from_secs(30), || node.leader().is_some());
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap_or_else(|_| std::process::exit(1));
    let t = Instant::now();
    let booted = std::fs::File::open(&file)
        .ok()
        .and_then(|f| client.post(format!("{}/boot", node.url)).body(reqwest::blocking::Body::new(f)).send().ok())
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    let boot_t = t.elapsed();
    if !booted {
        eprintln!("/boot failed");
        std::process::exit(1);
    }
    println!("/boot: {boot_t:?} ({:.0} MB/s)", mbs(size, boot_t));

    let t = Instant::now();
    let n = client
        .get(format!("{}/db/backup", node.url))
        .send()
        .ok()
        .and_then(|mut r| std::io::copy(&mut r, &mut std::io::sink()).ok())
        .unwrap_or(0);
    let backup_t = t.elapsed();
    println!("/db/backup (binary, streamed): {:.0} MB in {backup_t:?} ({:.0} MB/s)", n as f64 / 1e6, mbs(n, backup_t));

    // Write latency without and with compaction running.
    let quiet = bench_http(&node.url, 1, duration, Workload::Insert);
    let stop = Arc::new(AtomicBool::new(false));
    let (st, url) = (stop.clone(), node.url.clone());
    let snapper = std::thread::spawn(move || {
        let c = reqwest::blocking::Client::new();
        let mut n = 0;
        while !st.load(Ordering::Relaxed) {
            if c.post(format!("{url}/snapshot")).send().map(|r| r.status().as_u16() == 200).unwrap_or(false) {
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        n
    });
    let busy = bench_http(&node.url, 1, duration, Workload::Insert);
    stop.store(true, Ordering::Relaxed);
    let snaps = snapper.join().unwrap_or(0);
    println!(
        "write p50/p99 without compaction: {:.2}/{:.2} ms; with {snaps} compactions during the run: {:.2}/{:.2} ms (p99 +{:.2} ms)",
        quiet.ms(0.5),
        quiet.ms(0.99),
        busy.ms(0.5),
        busy.ms(0.99),
        busy.ms(0.99) - quiet.ms(0.99)
    );

    // Restart-to-ready at this size, and for an empty database.
    let restart = |s: &mut Server| {
        s.kill();
        let t = Instant::now();
        s.spawn();
        wait_until("restart", Duration::from_secs(600), || {
            reqwest::blocking::get(format!("{}/readyz", s.url)).map(|r| r.status().is_success()).unwrap_or(false)
        });
        t.elapsed()
    };
    let big_t = restart(&mut node);
    let empty = start_cluster(binary, &dir.join("empty"), 1);
    let mut empty = empty;
    let empty_t = restart(&mut empty[0]);
    println!("restart to ready: {big_t:?} with {:.0} MB, {empty_t:?} empty", size as f64 / 1e6);
    drop(empty);

    // Streaming a snapshot to a node that joins after compaction.
    let _ = client.post(format!("{}/snapshot", node.url)).send();
    let (h2, r2) = (free_addr("127.0.0.72"), free_addr("127.0.0.72"));
    let args2: Vec<String> = ["-node-id", "2", "-http-addr", &h2, "-raft-addr", &r2, "-log-level", "warn", "-join", &r]
        .iter()
        .map(|s| s.to_string())
        .chain(std::iter::once(dir.join("snap-node2").display().to_string()))
        .collect();
    let mut n2 =
        Server { child: None, url: format!("http://{h2}"), raft: r2, args: args2, binary: binary.to_path_buf() };
    let t = Instant::now();
    n2.spawn();
    wait_until("snapshot installed", Duration::from_secs(1800), || {
        n2.get("/status?key=store.num_restores").and_then(|v| v.as_u64()).unwrap_or(0) >= 1
    });
    let stream_t = t.elapsed();
    println!(
        "new node: snapshot made, streamed and installed in {stream_t:?} ({:.0} MB/s; plain copy {:.0} MB/s)",
        mbs(size, stream_t),
        mbs(size, copy_t)
    );
    drop(n2);
    drop(node);
}

fn main() {
    let args = parse_args();
    let tmp = tempdir_in(args.dir.as_deref());
    let cmd: Vec<String> = std::env::args().collect();
    println!("command: {}", cmd.join(" "));
    println!(
        "machine: {} cores; data under {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        tmp.display()
    );
    println!("{:?} per run; ops are requests (a bulk request holds 100 rows)\n", args.duration);
    println!("| system | workload | clients | ops | errors | ops/s | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut rates: Vec<(String, usize, f64)> = Vec::new();
    let chart_runs: std::cell::RefCell<Vec<(String, usize, f64, f64)>> = Default::default();
    let print = |run: &Run, w: &str| {
        chart_runs.borrow_mut().push((format!("{} {w}", run.name), run.clients, run.rate(), run.ms(0.99)));
        println!(
            "| {} | {w} | {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            run.name,
            run.clients,
            run.ops,
            run.errors,
            run.rate(),
            run.ms(0.5),
            run.ms(0.99)
        );
    };
    // `--nodes 0` skips the write benchmark (for example to run only `--snapshots`).
    let write_bench = !args.nodes.contains(&0);
    for &n in args.nodes.iter().filter(|_| write_bench) {
        let servers = start_cluster(&args.binary, &tmp.join(format!("cluster{n}")), n);
        let l = leader_index(&servers).unwrap_or(0);
        if !execute(&servers[l].url, "CREATE TABLE bench (id INTEGER PRIMARY KEY, c INTEGER, v TEXT)") {
            eprintln!("cannot create the bench table");
            std::process::exit(1);
        }
        // Rows for the point reads.
        let rows: Vec<String> =
            (0..1000).map(|k| format!(r#"["INSERT INTO bench(c, v) VALUES(0, 'seed-{k}')"]"#)).collect();
        let _ = reqwest::blocking::Client::new()
            .post(format!("{}/db/execute", servers[l].url))
            .header("Content-Type", "application/json")
            .body(format!("[{}]", rows.join(",")))
            .send();
        for &w in &args.workloads {
            for &c in &args.clients {
                quiesce(&servers);
                // Unmeasured warm-up (connections, caches, the page cache of a fresh database).
                let _ = bench_http(&servers[l].url, c, warmup(args.duration), w);
                let before = group_commit(&servers[l].url);
                let mut r = bench_http(&servers[l].url, c, args.duration, w);
                r.name = format!("raftlite {n} node{}", if n == 1 { "" } else { "s" });
                print(&r, &w.name());
                if let (Some(b), Some(a)) = (before, group_commit(&servers[l].url)) {
                    let (proposals, requests, appends) = (a.0 - b.0, a.1 - b.1, a.2 - b.2);
                    if proposals > 0.0 {
                        println!(
                            "    group commit: {:.1} requests per log entry, {:.0} log appends (fsyncs)/s on the leader",
                            requests / proposals,
                            appends / r.secs
                        );
                    }
                }
                let key = if w == Workload::Insert { r.name.clone() } else { format!("{} {}", r.name, w.name()) };
                rates.push((key, c, r.rate()));
            }
        }
        drop(servers);
    }
    let baselines = write_bench && args.baselines;
    for &c in args.clients.iter().filter(|_| baselines) {
        let _ = bench_sqlite(&tmp.join(format!("sqlite-{c}.db")), c, warmup(args.duration));
        let s = bench_sqlite(&tmp.join(format!("sqlite-{c}.db")), c, args.duration);
        print(&s, "insert");
        rates.push((s.name.clone(), c, s.rate()));
    }
    if baselines && args.clients.iter().any(|_| true) {
        if Command::new("dqlite-demo").arg("--help").output().is_ok() {
            let servers = start_dqlite(&tmp.join("dqlite"), 3);
            let url = servers.first().map(|s| s.url.clone()).unwrap_or_default();
            for &w in &[Workload::DqlitePut, Workload::DqliteGet] {
                for &c in &args.clients {
                    let _ = bench_http(&url, c, warmup(args.duration), w);
                    let mut r = bench_http(&url, c, args.duration, w);
                    r.name = "dqlite-demo 3 nodes".into();
                    print(&r, &w.name());
                    rates.push((format!("dqlite-demo 3 nodes {}", w.name()), c, r.rate()));
                }
            }
            drop(servers);
        } else {
            println!("(dqlite-demo not installed: apt-get install go-dqlite; dqlite baseline skipped)");
        }
    }
    if baselines {
        let d = bench_disk(&tmp.join("disk.bin"), args.duration);
        print(&d, "append 100 B + fdatasync");
        rates.push((d.name.clone(), 1, d.rate()));
    }
    if let Some(path) = &args.json {
        let rows: Vec<serde_json::Value> = rates
            .iter()
            .map(|(name, c, r)| serde_json::json!({ "system": name, "clients": c, "ops_per_s": r }))
            .collect();
        let doc =
            serde_json::json!({ "command": cmd.join(" "), "duration_s": args.duration.as_secs_f64(), "runs": rows });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
    println!();
    let rate = |name: &str, c: usize| rates.iter().find(|(n, cc, _)| n == name && *cc == c).map(|r| r.2);
    let sqlite1 = rate("standalone SQLite", 1);
    for (name, c, r) in rates.iter().filter(|(n, _, _)| n.starts_with("raftlite")) {
        if let Some(s) = sqlite1.filter(|_| *c > 1) {
            println!("{name}, {c} clients: {:.2}x standalone SQLite at 1 client", r / s.max(1e-9));
        }
        if let Some(s) = rate("standalone SQLite", *c) {
            println!("{name}, {c} clients: {:.2}x standalone SQLite at {c} clients", r / s.max(1e-9));
        }
        if let Some(one) = rate("raftlite 1 node", *c).filter(|_| name != "raftlite 1 node") {
            println!("{name}, {c} clients: {:.2}x a single node at {c} clients", r / one.max(1e-9));
        }
    }
    for &c in &args.clients {
        let pairs = [
            ("raftlite 3 nodes", "dqlite-demo 3 nodes PUT"),
            ("raftlite 3 nodes read none", "dqlite-demo 3 nodes GET"),
            ("raftlite 3 nodes read weak", "dqlite-demo 3 nodes GET"),
        ];
        for (ours, theirs) in pairs {
            if let (Some(a), Some(b)) = (rate(ours, c), rate(theirs, c)) {
                println!("{ours}, {c} clients: {:.2}x {theirs} at {c} clients", a / b.max(1e-9));
            }
        }
    }
    if let Some(png) = &args.chart {
        chart(png, &chart_runs.borrow());
    }
    if let Some(png) = &args.plot {
        plot_run(&args.binary, &tmp, png);
    }
    if args.metrics_overhead > 0 {
        metrics_overhead(&args.binary, &tmp, args.metrics_overhead, args.duration);
    }
    if args.snapshots_mb > 0 {
        snapshot_bench(&args.binary, &tmp, args.snapshots_mb, args.duration);
    }
    if args.failover > 0 {
        let mut times = failover(&args.binary, &tmp.join("failover"), args.failover);
        times.sort();
        let ms: Vec<String> = times.iter().map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0)).collect();
        println!(
            "\nfailover (leader SIGKILL -> first acknowledged write), {} trials, ms: {}",
            times.len(),
            ms.join(" ")
        );
        println!("failover median: {:.0} ms", times[times.len() / 2].as_secs_f64() * 1000.0);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

fn tempdir_in(base: Option<&Path>) -> PathBuf {
    let base = base.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("raftlite-bench-{}", std::process::id()));
    if std::fs::create_dir_all(&d).is_err() {
        eprintln!("cannot create {}", d.display());
        std::process::exit(1);
    }
    d
}
