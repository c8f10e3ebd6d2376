//! `raftlite-bench`: write throughput and latency of one-row INSERT requests against a real
//! single-node `raftlited`, beside standalone SQLite doing the same inserts with the same
//! durability (WAL, `synchronous=FULL`, one transaction per insert) in the same run.
//!
//! ```text
//! cargo build --release && target/release/raftlite-bench --duration 10s --clients 1,16
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

struct Args {
    binary: PathBuf,
    duration: Duration,
    clients: Vec<usize>,
    dir: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!("usage: raftlite-bench [--binary PATH] [--duration 10s] [--clients 1,16] [--dir DIR]");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut a = Args {
        binary: exe.with_file_name("raftlited"),
        duration: Duration::from_secs(10),
        clients: vec![1, 16],
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.trim_start_matches('-') {
            "binary" => a.binary = PathBuf::from(val()),
            "duration" => a.duration = raftlite::config::parse_go_duration(&val()).unwrap_or_else(|_| usage()),
            "clients" => a.clients = val().split(',').map(|c| c.parse().unwrap_or_else(|_| usage())).collect(),
            "dir" => a.dir = Some(PathBuf::from(val())),
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(binary: &Path, dir: &Path) -> Server {
    let (h, r) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let child = Command::new(binary)
        .args(["-node-id", "1", "-http-addr", &h, "-raft-addr", &r, "-log-level", "warn"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("cannot start {}: {e} (build it with cargo build --release)", binary.display());
            std::process::exit(1)
        });
    let s = Server { child, url: format!("http://{h}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::blocking::Client::new();
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{}/readyz", s.url)).send() {
            if r.status().is_success() {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("raftlited did not become ready");
    std::process::exit(1)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| std::process::exit(1))
}

/// `clients` concurrent HTTP clients (keep-alive) sending one-row INSERT requests.
fn bench_http(url: &str, clients: usize, duration: Duration) -> Run {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|_| std::process::exit(1));
    rt.block_on(async {
        let client = reqwest::Client::new();
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (client, stop, url) = (client.clone(), stop.clone(), format!("{url}/db/execute"));
                tokio::spawn(async move {
                    let (mut h, mut ok, mut err) = (hist(), 0u64, 0u64);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let body = format!(r#"[["INSERT INTO bench(c, v) VALUES(?, ?)", {c}, "value-{i}"]]"#);
                        i += 1;
                        let t = Instant::now();
                        let r = client.post(&url).header("Content-Type", "application/json").body(body).send().await;
                        let acked = match r {
                            Ok(r) if r.status().is_success() => {
                                r.text().await.map(|b| b.contains("rows_affected")).unwrap_or(false)
                            }
                            _ => false,
                        };
                        if acked {
                            ok += 1;
                            let _ = h.record(t.elapsed().as_micros() as u64);
                        } else {
                            err += 1;
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
        run.secs = start.elapsed().as_secs_f64();
        run
    })
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

fn main() {
    let args = parse_args();
    let tmp = tempdir_in(args.dir.as_deref());
    let server = start_server(&args.binary, &tmp.join("node"));
    let setup = reqwest::blocking::Client::new()
        .post(format!("{}/db/execute", server.url))
        .header("Content-Type", "application/json")
        .body(r#"["CREATE TABLE bench (id INTEGER PRIMARY KEY, c INTEGER, v TEXT)"]"#)
        .send();
    if setup.map(|r| !r.status().is_success()).unwrap_or(true) {
        eprintln!("cannot create the bench table");
        std::process::exit(1);
    }
    let cmd: Vec<String> = std::env::args().collect();
    println!("command: {}", cmd.join(" "));
    println!(
        "machine: {} cores; data under {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        tmp.display()
    );
    println!("workload: one-row INSERT per request/transaction, {:?} per run\n", args.duration);
    println!("| system | clients | ops | errors | ops/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for &c in &args.clients {
        let r = bench_http(&server.url, c, args.duration);
        let s = bench_sqlite(&tmp.join(format!("sqlite-{c}.db")), c, args.duration);
        for run in [&r, &s] {
            println!(
                "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} |",
                run.name,
                run.clients,
                run.ops,
                run.errors,
                run.rate(),
                run.ms(0.5),
                run.ms(0.99)
            );
        }
        rows.push((c, r.rate(), s.rate()));
    }
    println!();
    let base1 = rows.iter().find(|(c, _, _)| *c == 1).map(|(_, _, s)| *s);
    for (c, r, s) in &rows {
        print!("clients={c}: raftlite / SQLite = {:.2}x", r / s.max(1e-9));
        if let Some(b) = base1 {
            print!("; raftlite / SQLite at 1 client = {:.2}x", r / b.max(1e-9));
        }
        println!();
    }
    drop(server);
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
