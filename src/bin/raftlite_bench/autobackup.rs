//! `--auto-backup MB`: what automatic backups to an S3-compatible store cost. A database of that
//! size (random data) is booted into a single node with `-auto-backup` to a local moto S3 server
//! (at nice 19, standing in for a server elsewhere; uncompressed, so the figure is the transfer,
//! not gzip). Reported: the upload rate (consistent copy plus upload) against a plain file copy
//! of the same database, and write latency in alternating rounds (`--rounds`, 5 by default): the
//! node restarted without `-auto-backup`, then restarted with it while an upload runs (a write
//! starts one at the next tick; the run begins once it has). Reported: each side's median p99,
//! and the median of each round's with/without ratio with the lowest and highest (the machine's
//! load drifts between runs).

use super::*;

/// moto's S3 server, stopped when dropped.
struct Moto(Option<Child>);

impl Drop for Moto {
    fn drop(&mut self) {
        raftlite::harness::kill(&mut self.0);
    }
}

pub fn backup_bench(binary: &Path, dir: &Path, mb: u64, duration: Duration, rounds: usize, limits: &[f64]) {
    let mbs = |bytes: u64, secs: f64| bytes as f64 / 1e6 / secs.max(1e-9);
    println!("\n## Automatic backup of a {mb} MB database to a local S3 server (moto)\n");
    let file = dir.join("source.sqlite");
    {
        let Ok(c) = rusqlite::Connection::open(&file) else { std::process::exit(1) };
        let rows = mb * 1000;
        let made = c.execute_batch(&format!(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; CREATE TABLE big (id INTEGER PRIMARY KEY, pad BLOB);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < {rows}) INSERT INTO big(pad) SELECT randomblob(1000) FROM c;
             CREATE TABLE bench (id INTEGER PRIMARY KEY, c INTEGER, v TEXT);"
        ));
        if let Err(e) = made {
            eprintln!("cannot build the database: {e}");
            std::process::exit(1);
        }
    }
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let copy_s = super::scenarios::plain_copy(&file, dir).as_secs_f64();
    println!("plain file copy (+fsync) of {:.0} MB: {copy_s:.2} s ({:.0} MB/s)", size as f64 / 1e6, mbs(size, copy_s));

    let port = free_addr("127.0.0.1").rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).unwrap_or(0);
    // The S3 server runs at the lowest CPU priority: in a deployment it is another machine, and
    // on two shared cores a Python server at full priority takes the CPU the node's write path
    // is measured on (docs/PERFORMANCE.md has the figures both ways).
    let moto = Command::new("nice")
        .args(["-n", "19", "python3", "-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        // Keep objects and parts in memory: moto spools anything over 5 MB to temporary files,
        // which would put the store's disk writes (each part, then the whole object again on
        // completion) on the node's disk, where a real store's are not.
        .env("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", (8u64 << 30).to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let _moto = match moto {
        Ok(c) => Moto(Some(c)),
        Err(e) => {
            eprintln!("cannot start moto (python3 -m pip install 'moto[server]'): {e}");
            std::process::exit(1)
        }
    };
    wait_until("moto", Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let _ = reqwest::blocking::Client::new().put(format!("http://127.0.0.1:{port}/backups")).send();
    let cfg = dir.join("auto-backup.json");
    // The first upload, which gives the rate, is not held to a rate (`max_mb_per_sec` 0).
    let mut conf = serde_json::json!({"version": 1, "type": "s3", "interval": "1s", "no_compress": true, "max_mb_per_sec": 0,
        "sub": {"access_key_id": "bench", "secret_access_key": "bench", "bucket": "backups", "path": "bench.sqlite",
                "endpoint": format!("http://127.0.0.1:{port}"), "force_path_style": true}});
    if std::fs::write(&cfg, conf.to_string()).is_err() {
        std::process::exit(1);
    }
    let start = |name: &str, ip: &str, extra: &[String]| {
        let (h, r) = (free_addr(ip), free_addr(ip));
        let mut args: Vec<String> = ["-node-id", "1", "-http-addr", &h, "-raft-addr", &r, "-log-level", "warn"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().cloned());
        args.push(dir.join(name).display().to_string());
        let mut s = Server { child: None, url: format!("http://{h}"), raft: r, args, binary: binary.to_path_buf() };
        s.spawn();
        wait_until(name, Duration::from_secs(30), || s.leader().is_some());
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(3600)).build();
        let booted = client
            .ok()
            .and_then(|c| {
                let f = std::fs::File::open(&file).ok()?;
                c.post(format!("{}/boot", s.url)).body(reqwest::blocking::Body::new(f)).send().ok()
            })
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if !booted {
            eprintln!("/boot failed");
            std::process::exit(1);
        }
        s
    };
    let flag = ["-auto-backup".to_string(), cfg.display().to_string()];
    let mut node = start("auto-backup", "127.0.0.92", &flag);
    let status = |s: &Server, key: &str| s.get(&format!("/status?key=auto_backups.{key}"));
    wait_until("the first upload", Duration::from_secs(3600), || {
        status(&node, "num_uploads_ok").and_then(|v| v.as_u64()).unwrap_or(0) >= 1
    });
    let secs = status(&node, "last_upload_seconds").and_then(|v| v.as_f64()).unwrap_or(0.0);
    let bytes = status(&node, "last_upload_bytes").and_then(|v| v.as_u64()).unwrap_or(0);
    println!(
        "auto-backup upload (consistent copy + S3 multipart upload) of {:.0} MB: {secs:.2} s ({:.0} MB/s, {:.2}x the plain copy's rate)",
        bytes as f64 / 1e6,
        mbs(bytes, secs),
        mbs(bytes, secs) / mbs(size, copy_s).max(1e-9)
    );
    // The other stores: moto and one that discards what it receives (see s3_sink.rs), each
    // with the default rate limit, and the sink without one.
    let sink = match super::s3_sink::S3Sink::start("127.0.0.1") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start the S3 sink: {e}");
            std::process::exit(1)
        }
    };
    let mut store_cfg = |name: &str, endpoint: Option<&str>, mb: Option<f64>| {
        let path = dir.join(format!("auto-backup-{name}.json"));
        if let Some(e) = endpoint {
            conf["sub"]["endpoint"] = serde_json::json!(e);
        }
        match mb {
            Some(mb) => conf["max_mb_per_sec"] = serde_json::json!(mb),
            None => drop(conf.as_object_mut().map(|o| o.remove("max_mb_per_sec"))),
        }
        if std::fs::write(&path, conf.to_string()).is_err() {
            std::process::exit(1);
        }
        path
    };
    let default_mb = raftlite::autobackup::config::DEFAULT_MAX_MB_PER_SEC;
    let stores: Vec<(String, PathBuf)> = if limits.is_empty() {
        vec![
            (format!("moto (nice 19), at most {default_mb} MB/s (the default)"), store_cfg("moto", None, None)),
            (
                format!(
                    "a sink that discards the bytes (nice 19, s3_sink.rs), at most {default_mb} MB/s (the default)"
                ),
                store_cfg("sink", Some(&sink.endpoint), None),
            ),
            ("the same sink, no limit (max_mb_per_sec 0)".to_string(), store_cfg("sink-unlimited", None, Some(0.0))),
        ]
    } else {
        // `--backup-limits`: moto only, at each limit asked for.
        limits
            .iter()
            .map(|&mb| (format!("moto (nice 19), at most {mb} MB/s"), store_cfg(&format!("moto-{mb}"), None, Some(mb))))
            .collect()
    };
    // Both sides of a round run on the same node and database: it is restarted without the
    // flag for the run without, and with it for the run during an upload. Two nodes side by
    // side drift apart (in one run, the node without backups settled at a p99 of 5 ms and the
    // one with them at 0.5 ms).
    let without: Vec<String> = node.args.iter().filter(|a| !flag.contains(a)).cloned().collect();
    let restart = |node: &mut Server, args: &[String]| {
        node.kill();
        node.args = args.to_vec();
        node.spawn();
        wait_until("the node to lead again", Duration::from_secs(120), || node.leader().is_some());
    };
    let in_progress = |s: &Server| status(s, "upload_in_progress").and_then(|v| v.as_bool()).unwrap_or(false);
    for (store, cfg) in &stores {
        let mut with_flag = without.clone();
        with_flag.splice(without.len() - 1..without.len() - 1, ["-auto-backup".to_string(), cfg.display().to_string()]);
        let (mut quiet, mut busy) = (Vec::new(), Vec::new());
        let mut overlapped = 0;
        for _ in 0..rounds {
            restart(&mut node, &without);
            quiet.push(bench_http(&node.url, 1, duration, Workload::Insert).ms(0.99));
            restart(&mut node, &with_flag);
            execute(&node.url, "INSERT INTO bench(c, v) VALUES(0, 'start an upload')");
            wait_until("an upload to start", Duration::from_secs(60), || in_progress(&node));
            busy.push(bench_http(&node.url, 1, duration, Workload::Insert).ms(0.99));
            if in_progress(&node) {
                overlapped += 1;
            }
            wait_until("the upload to end", Duration::from_secs(3600), || !in_progress(&node));
            if status(&node, "num_uploads_ok").and_then(|v| v.as_u64()).unwrap_or(0) == 0 {
                eprintln!("the upload to {store} failed");
                std::process::exit(1);
            }
        }
        println!("\nWrite latency while uploading to {store}, {rounds} rounds:");
        let uploads = format!("an upload running from start to end in {overlapped} of {rounds} rounds");
        let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ");
        println!("write p99 ms without auto-backup, per round: {}", fmt(&quiet));
        println!("write p99 ms while uploading ({uploads}), per round: {}", fmt(&busy));
        // Each run during an upload against the run without just before it.
        let (ratio, lo, hi) = paired_ratios(&busy, &quiet);
        let (q, b) = (median(&mut quiet), median(&mut busy));
        println!("median p99: {q:.2} ms without, {b:.2} ms with");
        println!(
            "with/without per round: median {ratio:.2} ({lo:.2}–{hi:.2}): {:+.1}% (target: within 10%)",
            (ratio - 1.0) * 100.0
        );
    }
    println!("bytes the sink received: {}", sink.received.load(std::sync::atomic::Ordering::Relaxed));
}
