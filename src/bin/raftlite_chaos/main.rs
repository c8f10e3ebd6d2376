//! raftlite-chaos: Jepsen-style verification of a real raftlite cluster.
//!
//! `raftlite-chaos --nodes 3 --duration 60s --seed N --report DIR` creates a private network
//! namespace, starts the cluster inside it on 127.0.0.x, runs the register, set and bank
//! workloads from concurrent clients while nemeses partition, kill, pause and remove nodes, then
//! heals everything and checks the histories: linearizability of the register (every key, reads
//! at `linearizable` and `strong`), no lost or duplicated acknowledged inserts, constant bank
//! totals, identical replicas, and a write soon after the final heal. It exits 0 only when every
//! check passed, and writes `report.txt`, `report.json` and `latency.png` to DIR.
//!
//! Negative controls (`--negative stale-read` plants a stale read into the history;
//! `--negative none-reads` reads at `none` from an isolated old leader as if linearizable) must
//! make the run fail: they show the checker can see what it is meant to catch.

mod checker;
mod cluster;
mod nemesis;
mod report;
mod workload;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checker::{RegKind, RegOp, Verdict};
use cluster::Cluster;
use nemesis::{Fault, Nemesis};
use workload::{Client, History, BANK_ACCOUNTS, BANK_START, SCHEMA};

struct Opts {
    nodes: usize,
    duration: Duration,
    seed: u64,
    report: PathBuf,
    binary: PathBuf,
    clients: usize,
    workloads: Vec<&'static str>,
    faults: Vec<Fault>,
    negative: Option<String>,
    min_ops: usize,
    checker_timeout: Duration,
    /// `--check FILE`: check a register history a failed run wrote, and nothing else.
    check: Option<PathBuf>,
    in_netns: bool,
    args: Vec<String>,
}

const USAGE: &str = "usage: raftlite-chaos [--nodes 3] [--duration 60s] [--seed N] [--report DIR]
       [--binary PATH] [--clients 6] [--workloads register,set,bank]
       [--nemeses all|none|partition-halves,isolate-leader,partition-one,kill-leader,kill-follower,pause,membership]
       [--min-ops N] [--checker-timeout 60s] [--negative stale-read|none-reads]
       raftlite-chaos --check REPORT/register-key-K.json [--checker-timeout 60s]
Needs root (it creates a network namespace) and nft (apt-get install nftables).";

/// `--check`: the verdict on a register history written by a failed run; exit status 0 only if
/// it is linearizable.
fn check_file(file: &std::path::Path, budget: Duration) -> i32 {
    let ops: Vec<RegOp> = match std::fs::read(file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return 2;
        }
    };
    let t = Instant::now();
    let verdict = checker::check_register(&ops, budget);
    println!("{}: {verdict:?} ({} ops; checked in {:.2} s)", file.display(), ops.len(), t.elapsed().as_secs_f64());
    i32::from(verdict != Verdict::Linearizable)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration {s:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut o = Opts {
        nodes: 3,
        duration: Duration::from_secs(60),
        seed: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1),
        report: PathBuf::from("chaos-report"),
        binary: exe.with_file_name("raftlited"),
        clients: 6,
        workloads: vec!["register", "set", "bank"],
        faults: nemesis::ALL.to_vec(),
        negative: None,
        min_ops: 0,
        checker_timeout: Duration::from_secs(60),
        check: None,
        in_netns: false,
        args: args.iter().filter(|a| *a != "--in-netns").cloned().collect(),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--nodes" => o.nodes = val()?.parse().map_err(|e| format!("--nodes: {e}"))?,
            "--duration" => o.duration = parse_duration(&val()?)?,
            "--seed" => o.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--report" => o.report = PathBuf::from(val()?),
            "--binary" => o.binary = PathBuf::from(val()?),
            "--clients" => o.clients = val()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--min-ops" => o.min_ops = val()?.parse().map_err(|e| format!("--min-ops: {e}"))?,
            "--checker-timeout" => o.checker_timeout = parse_duration(&val()?)?,
            "--check" => o.check = Some(PathBuf::from(val()?)),
            "--workloads" => {
                o.workloads = val()?
                    .split(',')
                    .map(|w| match w {
                        "register" => Ok("register"),
                        "set" => Ok("set"),
                        "bank" => Ok("bank"),
                        _ => Err(format!("unknown workload {w:?}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--nemeses" => {
                let v = val()?;
                o.faults = match v.as_str() {
                    "all" => nemesis::ALL.to_vec(),
                    "none" => Vec::new(),
                    list => list
                        .split(',')
                        .map(|f| Fault::parse(f).ok_or_else(|| format!("unknown nemesis {f:?}")))
                        .collect::<Result<_, _>>()?,
                }
            }
            "--negative" => {
                let v = val()?;
                if v != "stale-read" && v != "none-reads" {
                    return Err(format!("unknown negative control {v:?}"));
                }
                o.negative = Some(v)
            }
            "--in-netns" => o.in_netns = true,
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    if o.nodes < 3 {
        return Err("--nodes must be at least 3".into());
    }
    if o.workloads.is_empty() {
        return Err("no workloads".into());
    }
    o.report = std::path::absolute(&o.report).map_err(|e| e.to_string())?;
    Ok(o)
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(file) = &o.check {
        std::process::exit(check_file(file, o.checker_timeout));
    }
    if !o.binary.exists() {
        eprintln!("raftlited not found at {} (use --binary)", o.binary.display());
        std::process::exit(2);
    }
    if o.in_netns {
        std::process::exit(match run(&o) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("raftlite-chaos: {e}");
                2
            }
        });
    }
    // Re-run this command inside a network namespace of its own, then remove it.
    let ns = format!("raftlite-chaos-{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &ns]).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        eprintln!("raftlite-chaos: cannot create network namespace {ns} (needs root and iproute2)");
        std::process::exit(2);
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("raftlite-chaos"));
    let child = Command::new("ip").args(["netns", "exec", &ns]).arg(exe).args(&o.args).arg("--in-netns").spawn();
    let status = match child {
        Ok(mut child) => {
            // Ctrl-C or SIGTERM: pass it on, so the inner run stops its nodes and reports.
            let pid = child.id();
            on_signal(move || {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            });
            child.wait().ok()
        }
        Err(e) => {
            eprintln!("raftlite-chaos: {e}");
            None
        }
    };
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    std::process::exit(status.and_then(|s| s.code()).unwrap_or(2));
}

/// Run `f` (once) on SIGINT or SIGTERM, from a thread of its own.
fn on_signal(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        f();
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn post(c: &reqwest::blocking::Client, url: &str, body: serde_json::Value) -> bool {
    c.post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

/// Everything inside the namespace. Ok(passed).
fn run(o: &Opts) -> Result<bool, String> {
    let st = Command::new("ip").args(["link", "set", "lo", "up"]).status().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("cannot bring up lo in the namespace".into());
    }
    nemesis::nft_setup()?;
    let data = o.report.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    // Snapshots every 50 entries (checked twice a second), so compaction and snapshot installs
    // happen throughout the run.
    let extra: Vec<String> =
        ["-raft-snap", "50", "-raft-snap-int", "500ms", "-raft-election-timeout", "1s", "-log-level", "info"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let mut c = Cluster::new(&o.binary, &data, o.nodes, &extra);
    c.start_all()?;
    let http = cluster::client(Duration::from_secs(10));
    let leader = c.leader().ok_or("no leader after start")?;
    let mut schema: Vec<serde_json::Value> = SCHEMA.iter().map(|s| serde_json::json!(s)).collect();
    for a in 0..BANK_ACCOUNTS {
        schema.push(serde_json::json!([format!("INSERT INTO bank(id, bal) VALUES({a}, {BANK_START})")]));
    }
    if !post(&http, &c.url(leader, "/db/execute?transaction"), serde_json::Value::Array(schema)) {
        return Err("cannot create the schema".into());
    }
    let nodes: Vec<String> = c.nodes.iter().map(|n| n.http.clone()).collect();
    let cluster = Arc::new(Mutex::new(c));
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(History::default());
    let mut nem = Nemesis::new(cluster.clone(), o.faults.clone(), o.seed, start);
    let keys = if o.negative.as_deref() == Some("none-reads") { 1 } else { 10 + (o.duration.as_secs() / 2) as u32 };
    let cfg = Arc::new(workload::Config {
        nodes,
        keys,
        workloads: o.workloads.clone(),
        none_reads_from: (o.negative.as_deref() == Some("none-reads")).then(|| nem.isolated.clone()),
    });
    println!(
        "raftlite-chaos: {} nodes, {} clients, {:?}, seed {}, faults {:?}",
        o.nodes, o.clients, o.duration, o.seed, o.faults
    );
    let clients: Vec<_> = (0..o.clients)
        .map(|i| {
            let (cfg, h, stop) = (cfg.clone(), history.clone(), stop.clone());
            let client = Client::new(i, o.seed, start, cfg.nodes.len());
            std::thread::spawn(move || client.run(&cfg, &h, &stop))
        })
        .collect();
    let stale_reader = cfg.none_reads_from.is_some().then(|| {
        let (cfg, h, stop) = (cfg.clone(), history.clone(), stop.clone());
        let client = Client::new(1000, o.seed, start, cfg.nodes.len());
        std::thread::spawn(move || client.none_reader(&cfg, &h, &stop))
    });
    let nem_stop = stop.clone();
    let nem_thread = std::thread::spawn(move || {
        if !nem.faults.is_empty() {
            nem.run(&nem_stop);
        }
        nem
    });
    // Run for the duration, or until SIGINT/SIGTERM (then stop early and report as usual).
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    on_signal(move || flag.store(true, Ordering::Relaxed));
    let until = Instant::now() + o.duration;
    while Instant::now() < until && !interrupted.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients.into_iter().chain(stale_reader) {
        let _ = t.join();
    }
    let nem = nem_thread.join().map_err(|_| "the nemesis thread panicked")?;
    let duration_s = start.elapsed().as_secs_f64();

    // Heal everything, then check.
    let mut failures = Vec::new();
    if interrupted.load(Ordering::Relaxed) {
        failures.push(format!("interrupted after {duration_s:.0} s"));
    }
    {
        let mut c = lock(&cluster);
        for i in 0..c.nodes.len() {
            if c.nodes[i].paused {
                c.signal(i, "-CONT");
            }
            if c.nodes[i].child.is_none() {
                let _ = c.spawn(i, None);
            }
        }
    }
    let final_write = nem.wait_recovered(Duration::from_secs(30)).map(|d| d.as_secs_f64());
    match final_write {
        Some(s) if s <= 10.0 => {}
        Some(s) => failures.push(format!("the first write after the final heal took {s:.1} s (limit 10 s)")),
        None => failures.push("no write succeeded within 30 s of the final heal".into()),
    }
    // Unexpected exits are crashes (every kill the nemesis made was followed by a restart).
    for n in lock(&cluster).nodes.iter_mut() {
        if let Some(Ok(Some(st))) = n.child.as_mut().map(|ch| ch.try_wait()) {
            failures.push(format!("node {} exited on its own ({st}); see {}", n.id, n.log.display()));
        }
    }
    let c = lock(&cluster);
    let n = c.nodes.len();
    // Quiescence: every node has applied the same index; then the contents must match.
    let converged = c.wait("replicas to converge", Duration::from_secs(30), |c2| {
        let idx: Vec<Option<u64>> =
            (0..n).map(|i| c2.get_json(i, "/status").and_then(|s| s["store"]["fsm_index"].as_u64())).collect();
        idx.iter().all(|x| x.is_some() && *x == idx[0])
    });
    let dump = |i: usize| -> Option<String> {
        let mut out = String::new();
        for q in [
            "SELECT id, val FROM reg ORDER BY id",
            "SELECT v FROM set_t ORDER BY v",
            "SELECT id, bal FROM bank ORDER BY id",
        ] {
            let r = http
                .post(c.url(i, "/db/query?level=none"))
                .header("Content-Type", "application/json")
                .body(serde_json::json!([q]).to_string())
                .send()
                .ok()?;
            out += &r.text().ok()?;
        }
        Some(out)
    };
    let dumps: Vec<Option<String>> = (0..n).map(dump).collect();
    let replicas_identical = converged.is_ok() && dumps.iter().all(|d| d.is_some() && *d == dumps[0]);
    if !replicas_identical {
        failures.push(format!("replicas differ at quiescence ({})", converged.err().unwrap_or_default()));
    }
    let leader = c.wait_leader(Duration::from_secs(10));
    let strong = |sql: &str| -> Option<serde_json::Value> {
        let l = leader?;
        let r = http
            .post(c.url(l, "/db/query?level=strong"))
            .header("Content-Type", "application/json")
            .body(serde_json::json!([sql]).to_string())
            .send()
            .ok()?;
        r.json().ok()
    };
    // Set.
    let final_rows = strong("SELECT v FROM set_t").and_then(|v| v["results"][0]["values"].as_array().cloned());
    if final_rows.is_none() && o.workloads.contains(&"set") {
        failures.push("set: the final read (level=strong on the leader) failed; the set was not checked".into());
    }
    let final_set: Vec<i64> = final_rows.unwrap_or_default().iter().filter_map(|r| r[0].as_i64()).collect();
    let set_v = checker::check_set(&lock(&history.set_acked), &lock(&history.set_attempted), &final_set);
    if o.workloads.contains(&"set") && !final_set.is_empty() && !set_v.ok() {
        failures.push(format!(
            "set: {} lost, {} duplicated, {} phantom",
            set_v.lost.len(),
            set_v.duplicated.len(),
            set_v.phantom.len()
        ));
    }
    // Bank.
    let total = BANK_ACCOUNTS * BANK_START;
    let mut bank_reads = lock(&history.bank_reads).clone();
    if let Some(v) = strong("SELECT SUM(bal), COUNT(*) FROM bank") {
        let row = &v["results"][0]["values"][0];
        bank_reads.push((row[0].as_i64().unwrap_or(-1), row[1].as_i64().unwrap_or(-1)));
    }
    let bad_bank: Vec<&(i64, i64)> = bank_reads.iter().filter(|(s, k)| *s != total || *k != BANK_ACCOUNTS).collect();
    if !bad_bank.is_empty() {
        failures.push(format!("bank: {} of {} reads did not sum to {total}", bad_bank.len(), bank_reads.len()));
    }
    let snapshots: u64 =
        (0..n).filter_map(|i| c.get_json(i, "/status")).filter_map(|s| s["store"]["num_snapshots"].as_u64()).sum();
    drop(c);

    // Register.
    let mut reg: Vec<RegOp> = lock(&history.reg).clone();
    if o.negative.as_deref() == Some("stale-read") {
        plant_stale_read(&mut reg);
    }
    let t = Instant::now();
    let verdict = checker::check_register(&reg, o.checker_timeout);
    let checker_s = t.elapsed().as_secs_f64();
    if o.workloads.contains(&"register") && verdict != Verdict::Linearizable {
        failures.push(format!("register: {verdict:?}"));
        // The key's history, to examine offline (or to check again with a longer budget).
        if let Verdict::Violation { key, .. } | Verdict::Timeout { key } = verdict {
            let ops: Vec<&RegOp> = reg.iter().filter(|op| op.key == key).collect();
            let path = o.report.join(format!("register-key-{key}.json"));
            if let Err(e) =
                serde_json::to_vec_pretty(&ops).map_err(std::io::Error::other).and_then(|b| std::fs::write(&path, b))
            {
                eprintln!("cannot write {}: {e}", path.display());
            }
        }
    }
    // Coverage and rate.
    let samples = lock(&history.samples).clone();
    let ops = report::tally(&samples);
    let count = |k: &str| ops.values().map(|m| m.get(k).copied().unwrap_or(0)).sum::<usize>();
    let (ok, failed, unknown) = (count("ok"), count("failed"), count("unknown"));
    if samples.len() < o.min_ops {
        failures.push(format!("only {} ops (minimum {})", samples.len(), o.min_ops));
    }
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for e in &nem.events {
        *by_type.entry(format!("{:?}", e.fault)).or_default() += 1;
    }
    let missing: Vec<String> = o
        .faults
        .iter()
        .map(|f| format!("{f:?}"))
        .filter(|f| !by_type.contains_key(f))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        failures.push(format!("fault types that never happened: {missing:?}"));
    }
    let r = report::Report {
        command: format!("raftlite-chaos {}", o.args.join(" ")),
        seed: o.seed,
        nodes: o.nodes,
        duration_s,
        ops_attempted: samples.len(),
        ops_ok: ok,
        ops_failed: failed,
        ops_unknown: unknown,
        ops_per_s: samples.len() as f64 / duration_s,
        ops,
        faults: nem.events.clone(),
        faults_by_type: by_type,
        missing_fault_types: missing,
        register: format!("{verdict:?}"),
        register_ops: reg.len(),
        register_keys: reg.iter().map(|o| o.key).collect::<HashSet<_>>().len(),
        set: serde_json::json!({
            "acknowledged": set_v.acknowledged, "final_read": final_set.len(),
            "lost": set_v.lost, "duplicated": set_v.duplicated, "phantom": set_v.phantom
        }),
        bank: serde_json::json!({ "reads": bank_reads.len(), "bad_reads": bad_bank.len(), "total": total }),
        replicas_identical,
        final_write_after_heal_s: final_write,
        snapshots,
        checker_s,
        passed: failures.is_empty(),
        failures,
    };
    report::write(&o.report, &r, &samples)?;
    print!("{}", report::text(&r));
    println!("report: {}", o.report.display());
    lock(&cluster).stop_all();
    Ok(r.passed)
}

/// The negative control: a read that returns a value overwritten before the read began.
fn plant_stale_read(reg: &mut Vec<RegOp>) {
    let mut done: Vec<&RegOp> = reg.iter().filter(|o| o.ret.is_some() && matches!(o.kind, RegKind::Write(_))).collect();
    done.sort_by_key(|o| o.call);
    for w2 in done.iter().rev() {
        let Some(w1) = done.iter().find(|w1| w1.key == w2.key && w1.ret < Some(w2.call)) else { continue };
        let (RegKind::Write(old), Some(end)) = (&w1.kind, w2.ret) else { continue };
        let planted =
            RegOp { client: 9999, key: w2.key, call: end + 1, ret: Some(end + 2), kind: RegKind::Read(Some(*old)) };
        println!("negative control: planted a stale read of {old} on key {} after it was overwritten", w2.key);
        reg.push(planted);
        return;
    }
}
