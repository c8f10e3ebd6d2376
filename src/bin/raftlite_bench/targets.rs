//! The performance targets of round 2 (docs/PERFORMANCE.md), each a ratio between runs of the
//! same round. With `--rounds N` every round measures all the runs again, and the report ends
//! with each target's median over the rounds and its lowest and highest: on a shared machine
//! whose speed drifts by tens of percent between minutes, one round's ratio says little.

use super::Figure;

/// One target's figure in one round.
pub struct Target {
    /// What is compared, as the report names it.
    pub name: &'static str,
    /// The ratio, and whether bigger is better (else it must stay under `goal`).
    pub ratio: f64,
    pub goal: f64,
    pub at_least: bool,
    /// The line of that round's report, with the figures behind the ratio.
    pub detail: String,
}

impl Target {
    fn met(&self) -> bool {
        if self.at_least {
            self.ratio >= self.goal
        } else {
            self.ratio <= self.goal
        }
    }

    fn goal_text(&self) -> String {
        format!("target {} {}", if self.at_least { ">=" } else { "<=" }, self.goal)
    }
}

/// Each target whose runs were measured in this round.
pub fn targets(rates: &[Figure], p50s: &[Figure]) -> Vec<Target> {
    let get = |v: &[Figure], name: &str, c: usize| v.iter().find(|(n, cc, _)| n == name && *cc == c).map(|r| r.2);
    let rate = |name: &str, c: usize| get(rates, name, c);
    let mut out = Vec::new();
    let mut push = |name: &'static str, ratio: f64, goal: f64, at_least: bool, detail: String| {
        out.push(Target { name, ratio, goal, at_least, detail });
    };
    // The floor of a durable write over HTTP: one no-op round trip plus one durable one-row
    // transaction, each alone, back to back.
    if let (Some(ins), Some(read), Some(sql)) =
        (rate("raftlite 1 node", 1), rate("raftlite 1 node read none", 1), rate("standalone SQLite", 1))
    {
        let floor = 1.0 / (1.0 / read + 1.0 / sql);
        push(
            "1 node, 1 client: insert / the floor",
            ins / floor,
            0.8,
            true,
            format!("insert {ins:.0}/s against the floor {floor:.0}/s (read at none {read:.0}/s + SQLite FULL {sql:.0}/s, in series)"),
        );
    }
    if let (Some(ins), Some(read)) = (rate("raftlite 1 node", 16), rate("raftlite 1 node read none", 16)) {
        push(
            "1 node, 16 clients: insert / read at none",
            ins / read,
            0.6,
            true,
            format!("insert {ins:.0}/s, read at none {read:.0}/s"),
        );
    }
    if let (Some(a), Some(b)) = (get(p50s, "raftlite 3 nodes", 1), get(p50s, "raftlite 1 node", 1)) {
        push(
            "3 nodes, 1 client: insert p50 / 1 node",
            a / b,
            2.0,
            false,
            format!("insert p50 {a:.2} ms against 1 node {b:.2} ms"),
        );
    }
    if let (Some(a), Some(b)) = (rate("raftlite 3 nodes", 1), rate("dqlite-demo 3 nodes PUT", 1)) {
        push(
            "3 nodes, 1 client: insert / dqlite-demo PUT",
            a / b,
            1.5,
            true,
            format!("insert {a:.0}/s, dqlite-demo PUT {b:.0}/s"),
        );
    }
    if let (Some(a), Some(b)) = (rate("raftlite 3 nodes", 16), rate("raftlite 1 node", 16)) {
        push(
            "3 nodes, 16 clients: insert / 1 node",
            a / b,
            0.5,
            true,
            format!("insert {a:.0}/s against 1 node {b:.0}/s"),
        );
    }
    if let (Some(a), Some(b)) = (rate("raftlite 3 nodes", 16), rate("dqlite-demo 3 nodes PUT", 16)) {
        push(
            "3 nodes, 16 clients: insert / dqlite-demo PUT",
            a / b,
            10.0,
            true,
            format!("insert {a:.0}/s, dqlite-demo PUT {b:.0}/s"),
        );
    }
    out
}

/// One round's targets, each with the figures behind it.
pub fn print_round(targets: &[Target]) {
    if targets.is_empty() {
        return;
    }
    println!("\ntargets (docs/PERFORMANCE.md, round 2):");
    for t in targets {
        println!("  {}: {}: {:.2}x ({})", t.name, t.detail, t.ratio, t.goal_text());
    }
}

/// Each target over the rounds: the median, the lowest and highest, and in how many rounds it
/// was met.
pub fn print_medians(rounds: &[Vec<Target>]) {
    let Some(first) = rounds.first() else { return };
    if first.is_empty() {
        return;
    }
    println!("\ntargets over {} rounds (median of the rounds' ratios, lowest-highest):", rounds.len());
    for t in first {
        let mut ratios: Vec<f64> =
            rounds.iter().filter_map(|r| r.iter().find(|x| x.name == t.name)).map(|x| x.ratio).collect();
        let met = rounds.iter().filter_map(|r| r.iter().find(|x| x.name == t.name)).filter(|x| x.met()).count();
        ratios.sort_by(f64::total_cmp);
        let n = ratios.len();
        // The mean of the middle two for an even count, not `report::median`'s upper one: with
        // two rounds that would be the higher ratio, printed as the median beside the range.
        let median = if n % 2 == 1 { ratios[n / 2] } else { (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0 };
        println!(
            "  {}: {median:.2}x ({:.2}-{:.2}; {}; met in {met} of {n} rounds)",
            t.name,
            ratios[0],
            ratios[n - 1],
            t.goal_text()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_compare_runs_of_the_same_round() {
        let rates = vec![
            ("raftlite 1 node".to_string(), 1, 2000.0),
            ("raftlite 1 node read none".to_string(), 1, 10000.0),
            ("standalone SQLite".to_string(), 1, 10000.0),
            ("raftlite 1 node".to_string(), 16, 18000.0),
            ("raftlite 1 node read none".to_string(), 16, 30000.0),
        ];
        let p50s = vec![("raftlite 1 node".to_string(), 1, 0.5), ("raftlite 3 nodes".to_string(), 1, 1.5)];
        let t = targets(&rates, &p50s);
        let names: Vec<&str> = t.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "1 node, 1 client: insert / the floor",
                "1 node, 16 clients: insert / read at none",
                "3 nodes, 1 client: insert p50 / 1 node"
            ]
        );
        // The floor: 1 / (1/10000 + 1/10000) = 5000/s; 2000 / 5000 = 0.4.
        assert!((t[0].ratio - 0.4).abs() < 1e-9);
        assert!(!t[0].met());
        assert!((t[1].ratio - 0.6).abs() < 1e-9);
        assert!(t[1].met());
        // Latency: lower is better; 3.0 > 2.
        assert!((t[2].ratio - 3.0).abs() < 1e-9);
        assert!(!t[2].met());
    }
}
