//! The run's report: `report.json` (everything), `report.txt` (a summary a person reads) and
//! `latency.png` (latency of every operation over time, fault windows shaded).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::nemesis::FaultEvent;
use crate::workload::{Outcome, Sample};

#[derive(Serialize)]
pub struct Report {
    pub command: String,
    pub seed: u64,
    pub nodes: usize,
    pub duration_s: f64,
    pub ops: BTreeMap<String, BTreeMap<String, usize>>,
    pub ops_attempted: usize,
    pub ops_ok: usize,
    pub ops_failed: usize,
    pub ops_unknown: usize,
    pub ops_per_s: f64,
    pub faults: Vec<FaultEvent>,
    pub faults_by_type: BTreeMap<String, usize>,
    pub missing_fault_types: Vec<String>,
    pub register: String,
    pub register_ops: usize,
    pub register_keys: usize,
    pub set: serde_json::Value,
    pub bank: serde_json::Value,
    pub replicas_identical: bool,
    pub final_write_after_heal_s: Option<f64>,
    pub snapshots: u64,
    pub checker_s: f64,
    pub failures: Vec<String>,
    pub passed: bool,
}

pub fn tally(samples: &[Sample]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut m: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for s in samples {
        let o = match s.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "failed",
            Outcome::Unknown => "unknown",
        };
        *m.entry(s.workload.to_string()).or_default().entry(o.to_string()).or_default() += 1;
    }
    m
}

pub fn write(dir: &Path, r: &Report, samples: &[Sample]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("report.json"), json).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("report.txt"), text(r)).map_err(|e| e.to_string())?;
    plot(&dir.join("latency.png"), r, samples).map_err(|e| format!("plot: {e}"))
}

pub fn text(r: &Report) -> String {
    let mut s = String::new();
    s += &format!("raftlite-chaos: {}\n", if r.passed { "PASSED" } else { "FAILED" });
    s += &format!("command: {}\nseed: {}\nnodes: {}, duration {:.1} s\n", r.command, r.seed, r.nodes, r.duration_s);
    s += &format!(
        "ops: {} attempted, {} ok, {} failed, {} unknown; {:.1} ops/s\n",
        r.ops_attempted, r.ops_ok, r.ops_failed, r.ops_unknown, r.ops_per_s
    );
    for (w, m) in &r.ops {
        s += &format!("  {w}: {m:?}\n");
    }
    s += &format!("faults: {} {:?}\n", r.faults.len(), r.faults_by_type);
    for f in &r.faults {
        s += &format!(
            "  {:>7.1}s..{:>7.1}s {:?} on {:?}; write ok {} after heal\n",
            f.start_s,
            f.heal_s,
            f.fault,
            f.nodes,
            f.recovered_after_s.map(|x| format!("{x:.2}s")).unwrap_or("NOT within 30s".into())
        );
    }
    s += &format!(
        "register: {} ({} ops over {} keys; checked in {:.2} s)\n",
        r.register, r.register_ops, r.register_keys, r.checker_s
    );
    s += &format!("set: {}\nbank: {}\n", r.set, r.bank);
    s += &format!("replicas identical at quiescence: {}\n", r.replicas_identical);
    s += &format!(
        "first write after the final heal: {}\n",
        r.final_write_after_heal_s.map(|x| format!("{x:.2} s")).unwrap_or("none within 30 s".into())
    );
    s += &format!("snapshots taken: {}\n", r.snapshots);
    for f in &r.failures {
        s += &format!("FAILURE: {f}\n");
    }
    s
}

fn plot(path: &Path, r: &Report, samples: &[Sample]) -> Result<(), Box<dyn std::error::Error>> {
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .map_err(|e| format!("needs the DejaVu Sans font (apt-get install fonts-dejavu-core): {e}"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, font);
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_ms = samples.iter().map(|s| s.latency_ms).fold(10.0_f64, f64::max).min(10_000.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("raftlite-chaos seed {}: latency per operation, faults shaded", r.seed), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..r.duration_s.max(1.0), (0.1..max_ms * 1.2).log_scale())?;
    chart.configure_mesh().x_desc("seconds").y_desc("latency (ms)").draw()?;
    for f in &r.faults {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(f.start_s, 0.1), (f.heal_s, max_ms * 1.2)],
            RGBColor(255, 200, 120).mix(0.35).filled(),
        )))?;
    }
    let series = [(Outcome::Ok, BLUE.mix(0.5)), (Outcome::Fail, RED.mix(0.8)), (Outcome::Unknown, BLACK.mix(0.8))];
    for (o, color) in series {
        chart
            .draw_series(
                samples
                    .iter()
                    .filter(|s| s.outcome == o)
                    .map(|s| Circle::new((s.at_ns as f64 / 1e9, s.latency_ms.max(0.1)), 2, color.filled())),
            )?
            .label(format!("{o:?}"))
            .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
