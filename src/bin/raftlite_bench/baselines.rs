//! The baselines measured in the same run: a 3-node `dqlite-demo` cluster, the disk's raw
//! append+fdatasync rate, and standalone SQLite doing the same inserts with the same durability.

use super::*;

/// A `dqlite-demo` cluster of `n` nodes on 127.0.0.7x (the first bootstraps, the others join it),
/// with 1,000 keys `seed-N` for the GETs.
pub fn start_dqlite(dir: &Path, n: usize) -> Vec<Server> {
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
pub fn bench_disk(path: &Path, duration: Duration) -> Run {
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
pub fn bench_sqlite(path: &Path, clients: usize, duration: Duration) -> Run {
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
