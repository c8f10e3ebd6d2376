//! Faults on a schedule from the seed: network partitions with nftables inside the run's own
//! namespace (random halves, the leader isolated, one node cut off), SIGKILL and restart of the
//! leader or a follower, SIGSTOP/SIGCONT, and removing a node then adding it back with a fresh
//! data directory. Every fault is recorded with when it began and healed, and how long the
//! cluster took to take a write after the heal.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cluster::Cluster;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Fault {
    PartitionHalves,
    IsolateLeader,
    PartitionOne,
    KillLeader,
    KillFollower,
    Pause,
    Membership,
}

pub const ALL: &[Fault] = &[
    Fault::PartitionHalves,
    Fault::IsolateLeader,
    Fault::PartitionOne,
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::Pause,
    Fault::Membership,
];

impl Fault {
    pub fn parse(s: &str) -> Option<Fault> {
        Some(match s {
            "partition-halves" => Fault::PartitionHalves,
            "isolate-leader" => Fault::IsolateLeader,
            "partition-one" => Fault::PartitionOne,
            "kill-leader" => Fault::KillLeader,
            "kill-follower" => Fault::KillFollower,
            "pause" => Fault::Pause,
            "membership" => Fault::Membership,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FaultEvent {
    pub fault: Fault,
    pub nodes: Vec<String>,
    pub start_s: f64,
    pub heal_s: f64,
    /// Seconds from the heal until a write was acknowledged (None: not within 30 s).
    pub recovered_after_s: Option<f64>,
}

pub struct Nemesis {
    pub cluster: Arc<Mutex<Cluster>>,
    pub faults: Vec<Fault>,
    pub rng: StdRng,
    pub start: Instant,
    pub events: Vec<FaultEvent>,
    /// The node isolated by an `IsolateLeader` fault, while it lasts (negative control).
    pub isolated: Arc<AtomicUsize>,
    pub probe: reqwest::blocking::Client,
}

fn nft(args: &str) -> bool {
    Command::new("nft").args(args.split_whitespace()).status().map(|s| s.success()).unwrap_or(false)
}

/// Create the firewall table the partitions use (inside the namespace).
pub fn nft_setup() -> Result<(), String> {
    let ok = nft("add table inet chaos")
        && Command::new("nft")
            .args(["add", "chain", "inet", "chaos", "out", "{ type filter hook output priority 0; policy accept; }"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    ok.then_some(()).ok_or_else(|| "nft could not create its table (is nftables installed?)".into())
}

fn nft_heal() {
    nft("flush chain inet chaos out");
}

/// Drop every packet between the two groups (both directions).
fn nft_cut(a: &[String], b: &[String]) {
    for x in a {
        for y in b {
            nft(&format!("add rule inet chaos out ip saddr {x} ip daddr {y} drop"));
            nft(&format!("add rule inet chaos out ip saddr {y} ip daddr {x} drop"));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Nemesis {
    pub fn new(cluster: Arc<Mutex<Cluster>>, faults: Vec<Fault>, seed: u64, start: Instant) -> Nemesis {
        Nemesis {
            cluster,
            faults,
            rng: StdRng::seed_from_u64(seed.wrapping_add(17)),
            start,
            events: Vec::new(),
            isolated: Arc::new(AtomicUsize::new(crate::workload::NO_NODE)),
            probe: crate::cluster::client(Duration::from_secs(2)),
        }
    }

    fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Sleep up to `d`, waking early if `stop` is set. Returns false if stopped.
    fn pause_for(d: Duration, stop: &AtomicBool) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Run faults until `stop` (healthy gaps of 2–4 s, faults of 3–5 s). The first round takes
    /// every fault type once, in a seeded order, so each happens at least once; a fault that
    /// could not be made is retried before the next.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut order = self.faults.clone();
        order.shuffle(&mut self.rng);
        let mut round = order.into_iter();
        // A fault that could not be made (no leader to aim it at) is tried again next.
        let mut retry: Option<Fault> = None;
        loop {
            // The first round is brisker (gaps of 1–2 s, faults of 2.5–4 s, at least twice the
            // 1 s election timeout) so that a 60 s run fits every type with room for a retry.
            let first = retry.is_some() || round.len() > 0;
            let (gaps, holds) = if first { (1000..2000, 2500..4000) } else { (2000..4000, 3000..5000) };
            let gap = Duration::from_millis(self.rng.random_range(gaps));
            if !Self::pause_for(gap, stop) {
                return;
            }
            let fault = match retry.take().or_else(|| round.next()) {
                Some(f) => f,
                None => self.faults[self.rng.random_range(0..self.faults.len())],
            };
            let hold = Duration::from_millis(self.rng.random_range(holds));
            if !self.inject(fault, hold, stop) {
                retry = Some(fault);
            }
        }
    }

    /// Make one fault, hold it, heal it. False if it could not be made.
    fn inject(&mut self, fault: Fault, hold: Duration, stop: &AtomicBool) -> bool {
        let cluster = self.cluster.clone();
        let (n, leader, ips, rafts) = {
            let c = lock(&cluster);
            let ips: Vec<String> = c.nodes.iter().map(|n| n.ip.clone()).collect();
            let rafts: Vec<String> = c.nodes.iter().map(|n| n.raft.clone()).collect();
            (c.nodes.len(), c.wait_leader(Duration::from_secs(10)), ips, rafts)
        };
        let Some(leader) = leader else {
            eprintln!("{fault:?} postponed: no leader within 10 s");
            return false;
        };
        let follower = {
            let others: Vec<usize> = (0..n).filter(|i| *i != leader).collect();
            others[self.rng.random_range(0..others.len())]
        };
        let start_s = self.secs();
        let mut affected: Vec<usize> = Vec::new();
        match fault {
            Fault::PartitionHalves | Fault::IsolateLeader | Fault::PartitionOne => {
                let minority: Vec<usize> = match fault {
                    Fault::IsolateLeader => vec![leader],
                    Fault::PartitionOne => vec![follower],
                    _ => {
                        let mut all: Vec<usize> = (0..n).collect();
                        all.shuffle(&mut self.rng);
                        all.truncate((n - 1) / 2);
                        all
                    }
                };
                let a: Vec<String> = minority.iter().map(|i| ips[*i].clone()).collect();
                let b: Vec<String> = (0..n).filter(|i| !minority.contains(i)).map(|i| ips[i].clone()).collect();
                nft_cut(&a, &b);
                if fault == Fault::IsolateLeader {
                    self.isolated.store(leader, Ordering::Relaxed);
                }
                affected = minority;
                Self::pause_for(hold, stop);
                nft_heal();
                self.isolated.store(crate::workload::NO_NODE, Ordering::Relaxed);
            }
            Fault::KillLeader | Fault::KillFollower => {
                let i = if fault == Fault::KillLeader { leader } else { follower };
                lock(&cluster).kill(i);
                affected.push(i);
                Self::pause_for(hold, stop);
                let _ = lock(&cluster).spawn(i, None);
            }
            Fault::Pause => {
                let i = if self.rng.random_bool(0.5) { leader } else { follower };
                lock(&cluster).signal(i, "-STOP");
                affected.push(i);
                Self::pause_for(hold, stop);
                lock(&cluster).signal(i, "-CONT");
            }
            Fault::Membership => {
                let i = follower;
                let removed = lock(&cluster).remove(i);
                if let Err(e) = removed {
                    eprintln!("membership fault postponed: {e}");
                    return false;
                }
                affected.push(i);
                {
                    let mut c = lock(&cluster);
                    c.kill(i);
                    let _ = std::fs::remove_dir_all(&c.nodes[i].dir);
                }
                Self::pause_for(hold, stop);
                let join = rafts[if leader == i { (i + 1) % n } else { leader }].clone();
                let _ = lock(&cluster).spawn(i, Some(&join));
            }
        }
        let heal_s = self.secs();
        let recovered_after_s = self.wait_recovered(Duration::from_secs(30)).map(|d| d.as_secs_f64());
        let c = lock(&cluster);
        self.events.push(FaultEvent {
            fault,
            nodes: affected.iter().map(|i| c.nodes[*i].id.clone()).collect(),
            start_s,
            heal_s,
            recovered_after_s,
        });
        true
    }

    /// Time until a probe write is acknowledged through any node.
    pub fn wait_recovered(&self, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        let urls: Vec<String> =
            lock(&self.cluster).nodes.iter().map(|n| format!("http://{}/db/execute", n.http)).collect();
        let mut k = 0;
        while t.elapsed() < limit {
            let body = serde_json::json!([["INSERT INTO probe(t) VALUES(?)", self.start.elapsed().as_millis() as i64]]);
            let ok = self
                .probe
                .post(&urls[k % urls.len()])
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ok {
                return Some(t.elapsed());
            }
            k += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}
