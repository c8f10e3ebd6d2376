//! Pictures: the bar chart of every run beside the baselines (`--chart`), and the 3-node run
//! with a snapshot, a leader kill and a restart plotted over time (`--plot`); and the medians the
//! benches report.

use super::*;

/// The median of `v` (sorted in place; 0 when empty).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Rounds that alternate a run without something and one with it: each round's with/without
/// ratio, as (median, lowest, highest), so that a drift in the machine's load shows as spread.
pub fn paired_ratios(with: &[f64], without: &[f64]) -> (f64, f64, f64) {
    let mut ratios: Vec<f64> = with.iter().zip(without).map(|(w, o)| w / o.max(1e-9)).collect();
    let m = median(&mut ratios);
    (m, ratios.first().copied().unwrap_or(0.0), ratios.last().copied().unwrap_or(0.0))
}

/// A 3-node cluster under a steady write load for 40 s, with a snapshot at 10 s, the leader
/// SIGKILLed at 20 s and restarted at 30 s; `/metrics` of every node sampled every 500 ms; the
/// result drawn to `png` (client write rate and p99, and each node's applied index).
/// A bar chart of every run's throughput, raftlite beside the baselines, p99 in the label.
pub fn chart(png: &Path, runs: &[(String, usize, f64, f64)]) {
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

pub fn plot_run(binary: &Path, dir: &Path, png: &Path) {
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
