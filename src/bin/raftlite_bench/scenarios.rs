//! One-off measurements: the cost of metrics on the write path (`--metrics-overhead`) and
//! snapshot, backup, boot and restart times on a large database (`--snapshots-mb`).

use super::*;

/// Write throughput with metrics on and off (`-metrics=false`), in alternating rounds on two
/// single nodes, so that drift of a shared machine hits both alike.
pub fn metrics_overhead(binary: &Path, dir: &Path, rounds: usize, duration: Duration) {
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

/// The snapshot/backup/boot/restart figures (docs/PERFORMANCE.md, history) on a database of `mb` megabytes.
pub fn snapshot_bench(binary: &Path, dir: &Path, mb: u64, duration: Duration) {
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
    let copy_t = plain_copy(&file, dir);
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

    // Memory: at rest, and the peak under 16 clients, with this database and with an empty one;
    // caches are bounded and snapshots and backups streamed, so neither may grow with the size.
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let memory = |s: &Server, what: &str| {
        let (boot_peak, rest) = s.memory().map(|(r, h)| (h, r)).unwrap_or((0, 0));
        s.reset_peak_memory();
        let _ = bench_http(&s.url, 16, duration, Workload::Insert);
        let (after, peak) = s.memory().unwrap_or((0, 0));
        println!(
            "memory ({what}): at rest {:.0} MiB; peak under 16 clients {:.0} MiB (after the run {:.0} MiB); peak before that, /boot and /db/backup included: {:.0} MiB",
            mib(rest),
            mib(peak),
            mib(after),
            mib(boot_peak)
        );
    };
    memory(&node, &format!("{:.0} MB database", size as f64 / 1e6));
    {
        let empty = start_cluster(binary, &dir.join("memory-empty"), 1);
        execute(&empty[0].url, "CREATE TABLE bench (id INTEGER PRIMARY KEY, c INTEGER, v TEXT)");
        memory(&empty[0], "empty database");
    }

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

    // Streaming a snapshot to a node that joins after compaction, against copies of the same
    // file made just before, in the same state of the machine: a plain copy, whose speed swings
    // tenfold with whether the kernel must find page-cache pages not used before
    // (docs/PERFORMANCE.md), and a copy written with O_DIRECT as the joiner writes; the ratio is
    // against the faster of the two.
    let _ = client.post(format!("{}/snapshot", node.url)).send();
    let db_file = dir.join("snap-node1").join("db.sqlite");
    let db_size = std::fs::metadata(&db_file).map(|m| m.len()).unwrap_or(size);
    let copy_here = plain_copy(&db_file, dir);
    let direct_here = direct_copy(&db_file, dir);
    let best = copy_here.min(direct_here);
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
        "new node: snapshot made, streamed and installed in {stream_t:?} ({:.0} MB/s); copies of the same {:.0} MB just before: plain {copy_here:?} ({:.0} MB/s), O_DIRECT {direct_here:?} ({:.0} MB/s); against the faster: {:.2}x (target >= 0.5)",
        mbs(db_size, stream_t),
        db_size as f64 / 1e6,
        mbs(db_size, copy_here),
        mbs(db_size, direct_here),
        best.as_secs_f64() / stream_t.as_secs_f64().max(1e-9)
    );
    drop(n2);
    drop(node);
}

/// Copy `src` into `dir` and fsync the copy (then remove it): how long it took.
pub fn plain_copy(src: &Path, dir: &Path) -> Duration {
    let dest = dir.join("plain-copy.sqlite");
    let t = Instant::now();
    let _ = std::fs::copy(src, &dest);
    let _ = std::fs::File::open(&dest).and_then(|f| f.sync_all());
    let took = t.elapsed();
    let _ = std::fs::remove_file(&dest);
    took
}

/// Copy `src` into `dir` writing with O_DIRECT, as a node receiving a snapshot writes
/// (`raftlite::store::direct_writer`), and fsync the copy (then remove it): how long it took.
pub fn direct_copy(src: &Path, dir: &Path) -> Duration {
    use std::io::Read;
    use tokio::io::AsyncWriteExt;
    let dest = dir.join("direct-copy.sqlite");
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return Duration::MAX;
    };
    let t = Instant::now();
    let copied: std::io::Result<()> = rt.block_on(async {
        let mut w = raftlite::store::direct_writer::DirectWriter::create(dest.clone(), false).await?;
        let mut f = std::fs::File::open(src)?;
        let mut buf = vec![0u8; 16 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).await?;
        }
        w.sync().await
    });
    let took = t.elapsed();
    let _ = std::fs::remove_file(&dest);
    match copied {
        Ok(()) => took,
        Err(e) => {
            eprintln!("O_DIRECT copy failed: {e}");
            Duration::MAX
        }
    }
}
