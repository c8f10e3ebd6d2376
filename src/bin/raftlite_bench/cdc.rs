//! `--cdc`: what change data capture costs. For each `--nodes` size, two clusters: one without
//! CDC and one with `-cdc-config` pointing at an HTTP endpoint in this process (the test sink,
//! `raftlite::harness::cdc_sink`), default batching (10 groups, 200 ms). The insert workload runs
//! against both in alternating rounds (`--rounds`, 3 by default); reported are the medians of
//! ops/s, the median of each round's on/off ratio with the lowest and highest (so that a shift in
//! the machine's load during the run shows as spread, not as cost), and the delivery lag of every
//! group received during the measured CDC runs: from the entry's commit timestamp (the leader's
//! clock when it proposed it) to the sink's receipt.

use std::time::UNIX_EPOCH;

use raftlite::harness::cdc_sink::CdcSink;

use super::*;

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The leader has delivered every change it captured.
fn delivered(leader: &Server) -> bool {
    leader.get("/status").is_some_and(|st| {
        let c = &st["cdc"];
        c["delivered_index"].as_u64() >= c["queue"]["captured_index"].as_u64()
    })
}

pub fn cdc_bench(args: &Args, tmp: &Path) {
    let rounds = args.rounds.unwrap_or(3);
    let sink = CdcSink::start("127.0.0.1").unwrap_or_else(|e| {
        eprintln!("--cdc: cannot start the sink: {e}");
        std::process::exit(1)
    });
    if args.cdc_sink_niced {
        sink.set_low_priority();
    }
    println!("CDC cost: runs without and with -cdc-config alternate, {rounds} rounds each; medians of ops/s");
    let priority = if args.cdc_sink_niced {
        "at nice 19, standing in for a consumer on another machine"
    } else {
        "at the nodes' priority"
    };
    println!("(the endpoint is an HTTP server inside this process on loopback, answering 200 at once, {priority})\n");
    println!("| nodes | clients | CDC off ops/s | CDC on ops/s | on/off (rounds: median, min–max) | off p50 ms | on p50 ms | lag p50 ms | lag p99 ms | groups |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut worst16: Option<f64> = None;
    for &n in &args.nodes {
        let n = n.max(1);
        let off = start_cluster_with(&args.binary, &tmp.join(format!("cdc-off{n}")), n, 90, None, &[]);
        let flags = ["-cdc-config".to_string(), sink.url()];
        let on = start_cluster_with(&args.binary, &tmp.join(format!("cdc-on{n}")), n, 100, None, &flags);
        for s in [&off, &on] {
            let l = leader_index(s).unwrap_or(0);
            if !execute(&s[l].url, "CREATE TABLE bench (id INTEGER PRIMARY KEY, c INTEGER, v TEXT)") {
                eprintln!("--cdc: cannot create the bench table");
                std::process::exit(1);
            }
            seed(&s[l].url);
        }
        for &c in &args.clients {
            let (mut off_rates, mut on_rates, mut off_p50, mut on_p50) = (vec![], vec![], vec![], vec![]);
            let mut lags: Vec<f64> = Vec::new();
            for _ in 0..rounds {
                for (s, rates, p50, measure_lag) in
                    [(&off, &mut off_rates, &mut off_p50, false), (&on, &mut on_rates, &mut on_p50, true)]
                {
                    quiesce(s);
                    let url = &s[leader_index(s).unwrap_or(0)].url;
                    let _ = bench_http(url, c, warmup(args.duration), Workload::Insert);
                    let seen = sink.count();
                    let r = bench_http(url, c, args.duration, Workload::Insert);
                    rates.push(r.rate());
                    p50.push(r.ms(0.5));
                    if measure_lag {
                        // Once the run's tail has arrived, take every group of the run.
                        let leader = &s[leader_index(s).unwrap_or(0)];
                        wait_until("the run's changes delivered", Duration::from_secs(60), || delivered(leader));
                        for p in &sink.posts_from(seen) {
                            let at = p.at.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
                            for g in p.body["payload"].as_array().into_iter().flatten() {
                                let ts = g["commit_timestamp"].as_i64().unwrap_or(0);
                                if ts > 0 {
                                    lags.push((at - ts) as f64 / 1e6);
                                }
                            }
                        }
                    }
                }
            }
            lags.sort_by(|a, b| a.total_cmp(b));
            // Each on run against the off run just before it.
            let (ratio, lo, hi) = paired_ratios(&on_rates, &off_rates);
            let (a, b) = (median(&mut off_rates), median(&mut on_rates));
            println!(
                "| {n} | {c} | {a:.0} | {b:.0} | {ratio:.2} ({lo:.2}–{hi:.2}) | {:.2} | {:.2} | {:.1} | {:.1} | {} |",
                median(&mut off_p50),
                median(&mut on_p50),
                quantile(&lags, 0.5),
                quantile(&lags, 0.99),
                lags.len()
            );
            if c >= 16 {
                worst16 = Some(worst16.map_or(ratio, |x: f64| x.min(ratio)));
            }
        }
        // Every write of the runs reached the sink: the leader's queue drains.
        let l = leader_index(&on).unwrap_or(0);
        let drained = raftlite::harness::poll_until(Duration::from_secs(10), || delivered(&on[l]));
        let st = on[l].get("/status").unwrap_or_default();
        println!(
            "|  | {n} node(s): every captured change delivered: {drained}; events sent {}, failures {}, dropped {} |||||||||",
            st["cdc"]["events_sent"], st["cdc"]["failures"], st["cdc"]["queue"]["events_dropped"]
        );
    }
    if let Some(w) = worst16 {
        println!(
            "\nworst CDC-on/off ratio at 16+ clients: {w:.2} ({:.0}% fewer writes per second; target: at most 10%)",
            (1.0 - w) * 100.0
        );
    }
}
