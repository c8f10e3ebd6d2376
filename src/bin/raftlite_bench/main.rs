//! `raftlite-bench`: write throughput and latency of one-row INSERT requests against real
//! `raftlited` clusters (1 and 3 nodes, started by the tool on 127.0.0.x), beside standalone SQLite
//! doing the same inserts with the same durability (WAL, `synchronous=FULL`, one transaction per
//! insert) in the same run; and the failover time of a 3-node cluster (leader SIGKILL to the
//! first acknowledged write on the new leader).
//!
//! ```text
//! cargo build --release && target/release/raftlite-bench --duration 10s --clients 1,16 --nodes 1,3 --failover 10
//! cargo build --release && target/release/raftlite-bench --duration 5s --clients 1,16 --nodes 1,3 --workloads insert,read-none --rounds 3
//! cargo build --release && target/release/raftlite-bench --tls --duration 5s --clients 1,16
//! cargo build --release && target/release/raftlite-bench --nodes 0 --auto-backup 1000 --duration 3s --rounds 9
//! cargo build --release && target/release/raftlite-bench --nodes 0 --auto-backup 200 --duration 3s --rounds 5 --backup-limits 10,20,50
//! cargo build --release && target/release/raftlite-bench --cdc --duration 3s --clients 1,16 --nodes 1,3 --rounds 7
//! ```

mod autobackup;
mod baselines;
mod cdc;
mod cluster;
mod load;
mod report;
mod s3_sink;
mod scenarios;
mod targets;
mod tls;
mod workload;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;

use baselines::*;
use cluster::*;
use load::*;
use report::*;
use scenarios::*;
use workload::*;

pub struct Args {
    pub binary: PathBuf,
    pub duration: Duration,
    pub clients: Vec<usize>,
    pub nodes: Vec<usize>,
    pub failover: usize,
    pub snapshots_mb: u64,
    /// `--auto-backup MB`: the cost of automatic backups to S3 on a database of that size.
    pub auto_backup_mb: u64,
    /// `--backup-limits 10,20`: with `--auto-backup`, measure moto at each of these
    /// `max_mb_per_sec` instead of the default set of stores.
    pub backup_limits: Vec<f64>,
    pub metrics_overhead: usize,
    pub plot: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    pub workloads: Vec<Workload>,
    pub json: Option<PathBuf>,
    pub chart: Option<PathBuf>,
    /// Measure only raftlite (for quick comparisons of two builds); ratios need the baselines.
    pub baselines: bool,
    /// Measure what TLS costs instead (HTTPS and node-to-node TLS against plain).
    pub tls: bool,
    /// Measure what change data capture costs instead (writes with and without, delivery lag).
    pub cdc: bool,
    /// Alternating rounds of `--cdc` and `--auto-backup` (each a run without and one with), or
    /// rounds of the write benchmark (every run and baseline again; the targets per round and
    /// their medians, `targets.rs`); `None`: each bench's own default (1 for the write benchmark).
    pub rounds: Option<usize>,
    /// `--cdc`: the endpoint's threads at nice 19 (a consumer elsewhere).
    pub cdc_sink_niced: bool,
}

/// One run's figure (a rate, or a latency in ms), keyed by the system's name and the clients.
pub type Figure = (String, usize, f64);

/// Every run of a round for the chart: name, clients, rate, p99 ms.
type ChartRuns = std::cell::RefCell<Vec<(String, usize, f64, f64)>>;

pub fn usage() -> ! {
    eprintln!("usage: raftlite-bench [--binary PATH] [--duration 10s] [--clients 1,16] [--nodes 1,3] [--workloads insert,bulk,queued,read-none,read-weak,read-linearizable,mix] [--failover N] [--snapshots MB] [--auto-backup MB [--backup-limits MBPS,...]] [--metrics-overhead ROUNDS] [--plot FILE.png] [--json FILE] [--chart FILE.png] [--dir DIR] [--no-baselines] [--tls] [--cdc] [--rounds N] [--cdc-sink-niced]");
    std::process::exit(2)
}

pub fn parse_args() -> Args {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut a = Args {
        binary: exe.with_file_name("raftlited"),
        duration: Duration::from_secs(10),
        clients: vec![1, 16],
        nodes: vec![1],
        failover: 0,
        snapshots_mb: 0,
        auto_backup_mb: 0,
        backup_limits: Vec::new(),
        metrics_overhead: 0,
        plot: None,
        dir: None,
        workloads: vec![Workload::Insert],
        json: None,
        chart: None,
        baselines: true,
        tls: false,
        cdc: false,
        rounds: None,
        cdc_sink_niced: false,
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
            "auto-backup" => a.auto_backup_mb = val().parse().unwrap_or_else(|_| usage()),
            "backup-limits" => {
                a.backup_limits = val().split(',').map(|c| c.parse().unwrap_or_else(|_| usage())).collect()
            }
            "metrics-overhead" => a.metrics_overhead = val().parse().unwrap_or_else(|_| usage()),
            "plot" => a.plot = Some(PathBuf::from(val())),
            "dir" => a.dir = Some(PathBuf::from(val())),
            "json" => a.json = Some(PathBuf::from(val())),
            "chart" => a.chart = Some(PathBuf::from(val())),
            "no-baselines" => a.baselines = false,
            "tls" => a.tls = true,
            "cdc" => a.cdc = true,
            "cdc-sink-niced" => a.cdc_sink_niced = true,
            "rounds" => a.rounds = Some(val().parse::<usize>().unwrap_or_else(|_| usage()).max(1)),
            "workloads" => {
                a.workloads = val().split(',').map(|w| Workload::parse(w).unwrap_or_else(|| usage())).collect()
            }
            _ => usage(),
        }
    }
    a
}

pub fn main() {
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
    if args.tls {
        tls::tls_bench(&args, &tmp);
        let _ = std::fs::remove_dir_all(&tmp);
        return;
    }
    if args.cdc {
        cdc::cdc_bench(&args, &tmp);
        let _ = std::fs::remove_dir_all(&tmp);
        return;
    }
    // `--nodes 0` measures no writes (only `--snapshots`, `--auto-backup`...): one pass, for
    // the table's header, whatever `--rounds` says for those.
    let rounds = if args.nodes.contains(&0) { 1 } else { args.rounds.unwrap_or(1) };
    let chart_runs: ChartRuns = Default::default();
    let mut json_rows = Vec::new();
    let mut per_round = Vec::new();
    for round in 1..=rounds {
        if rounds > 1 {
            println!("\n## Round {round} of {rounds}\n");
        }
        // The chart shows the first round.
        let chart = (round == 1).then_some(&chart_runs);
        let (rates, p50s) = measure_round(&args, &tmp.join(format!("round{round}")), chart);
        for (name, c, r) in &rates {
            json_rows.push(serde_json::json!({ "round": round, "system": name, "clients": c, "ops_per_s": r }));
        }
        print_ratios(&rates, &args.clients);
        let t = targets::targets(&rates, &p50s);
        targets::print_round(&t);
        per_round.push(t);
    }
    if rounds > 1 {
        targets::print_medians(&per_round);
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "command": cmd.join(" "), "duration_s": args.duration.as_secs_f64(), "runs": json_rows });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
            eprintln!("cannot write {}: {e}", path.display());
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
    if args.auto_backup_mb > 0 {
        let limits = &args.backup_limits;
        autobackup::backup_bench(
            &args.binary,
            &tmp,
            args.auto_backup_mb,
            args.duration,
            args.rounds.unwrap_or(5),
            limits,
        );
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
        let at = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
        println!(
            "failover median: {:.0} ms, p95: {:.0} ms, max: {:.0} ms (election timeout 1s)",
            times[times.len() / 2].as_secs_f64() * 1000.0,
            at(0.95).as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0,
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// One round of the write benchmark: every cluster size, workload and client count, then the
/// baselines (standalone SQLite, dqlite-demo, the raw disk), each printed as it is measured.
/// Returns each run's rate and median latency (ms), keyed by system and clients.
fn measure_round(args: &Args, dir: &Path, chart: Option<&ChartRuns>) -> (Vec<Figure>, Vec<Figure>) {
    println!("| system | workload | clients | ops | errors | ops/s | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut rates: Vec<Figure> = Vec::new();
    // Median latency (ms) of each run, keyed as `rates`.
    let mut p50s: Vec<Figure> = Vec::new();
    let print = |run: &Run, w: &str| {
        if let Some(chart) = chart {
            chart.borrow_mut().push((format!("{} {w}", run.name), run.clients, run.rate(), run.ms(0.99)));
        }
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
        let servers = start_cluster(&args.binary, &dir.join(format!("cluster{n}")), n);
        let l = leader_index(&servers).unwrap_or(0);
        if !execute(&servers[l].url, "CREATE TABLE bench (id INTEGER PRIMARY KEY, c INTEGER, v TEXT)") {
            eprintln!("cannot create the bench table");
            std::process::exit(1);
        }
        seed(&servers[l].url);
        for &w in &args.workloads {
            for &c in &args.clients {
                quiesce(&servers);
                // Unmeasured warm-up (connections, caches, the page cache of a fresh database).
                let _ = bench_http(&servers[l].url, c, warmup(args.duration), w);
                let before = group_commit(&servers[l].url);
                let follower = (0..servers.len()).find(|&i| i != l);
                let split_before = (split(&servers[l].url), follower.and_then(|f| split(&servers[f].url)));
                let mut r = bench_http(&servers[l].url, c, args.duration, w);
                r.name = format!("raftlite {n} node{}", if n == 1 { "" } else { "s" });
                print(&r, &w.name());
                if let (Some(b), Some(a)) = (before, group_commit(&servers[l].url)) {
                    let proposals = a.proposals - b.proposals;
                    if proposals > 0.0 {
                        let mut line = format!(
                            "    group commit: {:.1} requests per log entry, {:.0} log appends (fsyncs)/s on the leader",
                            (a.requests - b.requests) / proposals,
                            (a.appends - b.appends) / r.secs
                        );
                        if n > 1 {
                            // Per follower: how many of the leader's appends went out before its fsync.
                            let per = (a.appends - b.appends) * (n - 1) as f64;
                            line += &format!(
                                "; sent to followers before the leader's fsync: {:.0}% of appends ({:.0}% accepted, {:.0}% not sent again; commit index carried {:.0}%)",
                                100.0 * (a.presend - b.presend) / per.max(1.0),
                                100.0 * (a.presend_accepted - b.presend_accepted) / per.max(1.0),
                                100.0 * (a.presend_answers - b.presend_answers) / per.max(1.0),
                                100.0 * (a.commit_carried - b.commit_carried) / per.max(1.0)
                            );
                        }
                        println!("{line}");
                    }
                }
                if w == Workload::Insert {
                    if let (Some(lb), Some(la)) = (&split_before.0, split(&servers[l].url)) {
                        let fa = follower.and_then(|f| split(&servers[f].url));
                        let f = split_before.1.as_ref().zip(fa.as_ref());
                        print_split(r.hist.mean() / 1e3, (lb, &la), f);
                    }
                }
                let key = if w == Workload::Insert { r.name.clone() } else { format!("{} {}", r.name, w.name()) };
                p50s.push((key.clone(), c, r.ms(0.5)));
                rates.push((key, c, r.rate()));
            }
        }
        drop(servers);
    }
    let baselines = write_bench && args.baselines;
    for &c in args.clients.iter().filter(|_| baselines) {
        let _ = bench_sqlite(&dir.join(format!("sqlite-{c}.db")), c, warmup(args.duration));
        let s = bench_sqlite(&dir.join(format!("sqlite-{c}.db")), c, args.duration);
        print(&s, "insert");
        rates.push((s.name.clone(), c, s.rate()));
    }
    if baselines && args.clients.iter().any(|_| true) {
        if Command::new("dqlite-demo").arg("--help").output().is_ok() {
            let servers = start_dqlite(&dir.join("dqlite"), 3);
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
        let d = bench_disk(&dir.join("disk.bin"), args.duration);
        print(&d, "append 100 B + fdatasync");
        rates.push((d.name.clone(), 1, d.rate()));
    }
    (rates, p50s)
}

/// The ratios of one round's runs to standalone SQLite, to a single node and to dqlite-demo.
fn print_ratios(rates: &[Figure], clients: &[usize]) {
    println!();
    for line in ratio_lines(rates, clients) {
        println!("{line}");
    }
}

/// A raftlite run's name split into the cluster and the workload: "raftlite 3 nodes read none"
/// is ("raftlite 3 nodes", "read none"); the one-row insert run has no workload in its name.
fn cluster_and_workload(name: &str) -> (&str, &str) {
    let end = match name.find(" node") {
        Some(i) if name[i + 5..].starts_with('s') => i + 6,
        Some(i) => i + 5,
        None => name.len(),
    };
    (&name[..end], name[end..].trim_start())
}

/// Each ratio compares like with like. Standalone SQLite makes one-row inserts, one transaction
/// each, so only raftlite's one-row inserts (direct or queued) are set against it. A cluster is
/// set against a single node running the same workload. dqlite-demo's PUT against raftlite's
/// insert, its GET against raftlite's reads.
fn ratio_lines(rates: &[Figure], clients: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    let rate = |name: &str, c: usize| rates.iter().find(|(n, cc, _)| n == name && *cc == c).map(|r| r.2);
    let sqlite1 = rate("standalone SQLite", 1);
    for (name, c, r) in rates.iter().filter(|(n, _, _)| n.starts_with("raftlite")) {
        let (cluster, workload) = cluster_and_workload(name);
        if workload.is_empty() || workload == "queued insert" {
            if let Some(s) = sqlite1.filter(|_| *c > 1) {
                out.push(format!("{name}, {c} clients: {:.2}x standalone SQLite at 1 client", r / s.max(1e-9)));
            }
            if let Some(s) = rate("standalone SQLite", *c) {
                out.push(format!("{name}, {c} clients: {:.2}x standalone SQLite at {c} clients", r / s.max(1e-9)));
            }
        }
        if cluster != "raftlite 1 node" {
            let single = format!("raftlite 1 node {workload}");
            if let Some(one) = rate(single.trim_end(), *c) {
                let what = if workload.is_empty() { String::new() } else { format!(" ({workload})") };
                out.push(format!("{name}, {c} clients: {:.2}x a single node{what} at {c} clients", r / one.max(1e-9)));
            }
        }
    }
    for &c in clients {
        let pairs = [
            ("raftlite 3 nodes", "dqlite-demo 3 nodes PUT"),
            ("raftlite 3 nodes read none", "dqlite-demo 3 nodes GET"),
            ("raftlite 3 nodes read weak", "dqlite-demo 3 nodes GET"),
        ];
        for (ours, theirs) in pairs {
            if let (Some(a), Some(b)) = (rate(ours, c), rate(theirs, c)) {
                out.push(format!("{ours}, {c} clients: {:.2}x {theirs} at {c} clients", a / b.max(1e-9)));
            }
        }
    }
    out
}

pub fn tempdir_in(base: Option<&Path>) -> PathBuf {
    let base = base.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("raftlite-bench-{}", std::process::id()));
    if std::fs::create_dir_all(&d).is_err() {
        eprintln!("cannot create {}", d.display());
        std::process::exit(1);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_lines_compare_like_with_like() {
        let run = |name: &str, c: usize, r: f64| (name.to_string(), c, r);
        let rates = vec![
            run("raftlite 1 node", 16, 10000.0),
            run("raftlite 1 node read none", 16, 40000.0),
            run("raftlite 1 node queued insert", 16, 20000.0),
            run("raftlite 3 nodes", 16, 5000.0),
            run("raftlite 3 nodes read none", 16, 36000.0),
            run("standalone SQLite", 16, 8000.0),
            run("dqlite-demo 3 nodes GET", 16, 6000.0),
        ];
        let lines = ratio_lines(&rates, &[16]);
        let has = |want: &str| lines.iter().any(|l| l == want);
        assert!(has("raftlite 3 nodes, 16 clients: 0.50x a single node at 16 clients"), "{lines:#?}");
        assert!(
            has("raftlite 3 nodes read none, 16 clients: 0.90x a single node (read none) at 16 clients"),
            "{lines:#?}"
        );
        assert!(has("raftlite 1 node queued insert, 16 clients: 2.50x standalone SQLite at 16 clients"), "{lines:#?}");
        assert!(
            has("raftlite 3 nodes read none, 16 clients: 6.00x dqlite-demo 3 nodes GET at 16 clients"),
            "{lines:#?}"
        );
        // A read against SQLite's inserts, or a single node's read against its own insert run: never.
        assert!(!lines.iter().any(|l| l.starts_with("raftlite 1 node read none")), "{lines:#?}");
        assert!(
            !lines.iter().any(|l| l.starts_with("raftlite 3 nodes read none") && l.contains("SQLite")),
            "{lines:#?}"
        );
    }

    #[test]
    fn run_names_split_into_cluster_and_workload() {
        assert_eq!(cluster_and_workload("raftlite 1 node"), ("raftlite 1 node", ""));
        assert_eq!(cluster_and_workload("raftlite 3 nodes"), ("raftlite 3 nodes", ""));
        assert_eq!(cluster_and_workload("raftlite 3 nodes read none"), ("raftlite 3 nodes", "read none"));
        assert_eq!(cluster_and_workload("raftlite 1 node bulk x100"), ("raftlite 1 node", "bulk x100"));
    }
}
