//! Client workloads through the real HTTP API, recorded as histories: register (read / write /
//! compare-and-set per key, reads at `linearizable` and `strong`), set (unique inserts) and bank
//! (transfers inside `transaction` requests, reads of all balances). A timeout or a lost
//! connection is an unknown outcome; clients never retry a write.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use crate::checker::{RegKind, RegOp};

pub const BANK_ACCOUNTS: i64 = 8;
pub const BANK_START: i64 = 100;

pub const SCHEMA: &[&str] = &[
    "CREATE TABLE reg (id INTEGER PRIMARY KEY, val INTEGER NOT NULL)",
    "CREATE TABLE set_t (v INTEGER NOT NULL)",
    "CREATE TABLE bank (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)",
    "CREATE TABLE probe (t INTEGER NOT NULL)",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Outcome {
    Ok,
    Fail,
    Unknown,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub at_ns: u64,
    pub latency_ms: f64,
    pub workload: &'static str,
    pub outcome: Outcome,
}

#[derive(Default)]
pub struct History {
    pub reg: Mutex<Vec<RegOp>>,
    pub set_attempted: Mutex<HashSet<i64>>,
    pub set_acked: Mutex<Vec<i64>>,
    /// Sums (and row counts) of every successful read of all balances.
    pub bank_reads: Mutex<Vec<(i64, i64)>>,
    pub samples: Mutex<Vec<Sample>>,
}

pub struct Config {
    pub nodes: Vec<String>,
    pub keys: u32,
    pub workloads: Vec<&'static str>,
    /// Every register op on key 0, and reads at `none` from the node in `isolated` (negative control).
    pub none_reads_from: Option<Arc<AtomicUsize>>,
}

pub const NO_NODE: usize = usize::MAX;

pub struct Client {
    id: usize,
    http: reqwest::blocking::Client,
    node: usize,
    rng: StdRng,
    counter: i64,
    start: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    pub fn new(id: usize, seed: u64, start: Instant, nodes: usize) -> Client {
        Client {
            id,
            http: crate::cluster::client(Duration::from_secs(5)),
            node: id % nodes.max(1),
            rng: StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            counter: 0,
            start,
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn unique(&mut self) -> i64 {
        self.counter += 1;
        (self.id as i64 + 1) * 1_000_000_000 + self.counter
    }

    /// POST statements to /db/execute; the parsed body, or the outcome that stands for it.
    fn execute(&self, cfg: &Config, query: &str, body: Value) -> Result<Value, Outcome> {
        let url = format!("http://{}/db/execute{query}", cfg.nodes[self.node]);
        let r = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .map_err(|_| Outcome::Unknown)?;
        let status = r.status().as_u16();
        match status {
            200 => r.json::<Value>().map_err(|_| Outcome::Unknown),
            // Refused before it reached the log (bad request, no leader to forward to).
            400..=499 => Err(Outcome::Fail),
            _ => Err(Outcome::Unknown),
        }
    }

    fn query(&self, cfg: &Config, node: usize, level: &str, sql: &str) -> Result<Value, Outcome> {
        let url = format!("http://{}/db/query?level={level}", cfg.nodes[node]);
        let r = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .body(json!([sql]).to_string())
            .send()
            .map_err(|_| Outcome::Fail)?;
        if r.status().as_u16() != 200 {
            return Err(Outcome::Fail);
        }
        let v: Value = r.json().map_err(|_| Outcome::Fail)?;
        if v["results"][0].get("error").is_some() {
            return Err(Outcome::Fail);
        }
        Ok(v)
    }

    fn record(&self, h: &History, call: u64, workload: &'static str, outcome: Outcome) {
        let at = self.now();
        lock(&h.samples).push(Sample { at_ns: call, latency_ms: (at - call) as f64 / 1e6, workload, outcome });
    }

    /// Run operations until `stop`.
    pub fn run(mut self, cfg: &Config, h: &History, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let w = cfg.workloads[self.rng.random_range(0..cfg.workloads.len())];
            let outcome = match w {
                "register" => self.register(cfg, h),
                "set" => self.set(cfg, h),
                _ => self.bank(cfg, h),
            };
            // A node that does not answer: try another for the next op.
            if outcome != Outcome::Ok {
                self.node = (self.node + 1) % cfg.nodes.len();
            }
        }
    }

    fn register(&mut self, cfg: &Config, h: &History) -> Outcome {
        let key = if cfg.none_reads_from.is_some() { 0 } else { self.rng.random_range(0..cfg.keys) };
        let pick = self.rng.random_range(0..10);
        let call = self.now();
        let (kind, outcome) = if pick < 4 {
            let level = if pick < 2 { "linearizable" } else { "strong" };
            match self.query(cfg, self.node, level, &format!("SELECT val FROM reg WHERE id = {key}")) {
                Ok(v) => (Some(RegKind::Read(v["results"][0]["values"][0][0].as_i64())), Outcome::Ok),
                Err(o) => (None, o),
            }
        } else if pick < 7 {
            let v = self.unique();
            let body = json!([[
                "INSERT INTO reg(id, val) VALUES(?, ?) ON CONFLICT(id) DO UPDATE SET val = excluded.val",
                key,
                v
            ]]);
            match self.execute(cfg, "", body) {
                Ok(r) if r["results"][0]["rows_affected"] == 1 => (Some(RegKind::Write(v)), Outcome::Ok),
                Ok(_) => (None, Outcome::Fail),
                Err(Outcome::Unknown) => (Some(RegKind::Write(v)), Outcome::Unknown),
                Err(o) => (None, o),
            }
        } else {
            // Compare-and-set from the value a recent op of this key saw.
            let from = lock(&h.reg)
                .iter()
                .rev()
                .take(200)
                .find_map(|o| match (&o.kind, o.key == key) {
                    (RegKind::Read(Some(v)) | RegKind::Write(v), true) => Some(*v),
                    _ => None,
                })
                .unwrap_or(0);
            let to = self.unique();
            let body = json!([["UPDATE reg SET val = ? WHERE id = ? AND val = ?", to, key, from]]);
            match self.execute(cfg, "", body) {
                Ok(r) if r["results"][0].get("error").is_none() => {
                    let ok = r["results"][0]["rows_affected"] == 1;
                    (Some(RegKind::Cas { from, to, ok }), Outcome::Ok)
                }
                Ok(_) => (None, Outcome::Fail),
                Err(Outcome::Unknown) => (Some(RegKind::Cas { from, to, ok: false }), Outcome::Unknown),
                Err(o) => (None, o),
            }
        };
        let ret = (outcome == Outcome::Ok).then(|| self.now());
        if let Some(kind) = kind {
            lock(&h.reg).push(RegOp { client: self.id, key, call, ret, kind });
        }
        self.record(h, call, "register", outcome);
        outcome
    }

    /// The negative control: while a leader is isolated, write key 0 through the majority and
    /// read it from the isolated node at `none`, recording those reads as if they were
    /// linearizable. Once a write has succeeded in the majority, the old leader's answer is stale
    /// and the checker must object.
    pub fn none_reader(mut self, cfg: &Config, h: &History, stop: &AtomicBool) {
        let Some(iso) = &cfg.none_reads_from else { return };
        self.http = crate::cluster::client(Duration::from_secs(1));
        while !stop.load(Ordering::Relaxed) {
            let node = iso.load(Ordering::Relaxed);
            if node == NO_NODE {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            self.node = (node + 1 + self.rng.random_range(0..cfg.nodes.len() - 1)) % cfg.nodes.len();
            let v = self.unique();
            let call = self.now();
            let body =
                json!([["INSERT INTO reg(id, val) VALUES(0, ?) ON CONFLICT(id) DO UPDATE SET val = excluded.val", v]]);
            let ret = match self.execute(cfg, "", body) {
                Ok(r) if r["results"][0]["rows_affected"] == 1 => Some(self.now()),
                Ok(_) | Err(Outcome::Fail) => continue,
                Err(_) => None,
            };
            lock(&h.reg).push(RegOp { client: self.id, key: 0, call, ret, kind: RegKind::Write(v) });
            let call = self.now();
            if let Ok(v) = self.query(cfg, node, "none", "SELECT val FROM reg WHERE id = 0") {
                let kind = RegKind::Read(v["results"][0]["values"][0][0].as_i64());
                lock(&h.reg).push(RegOp { client: self.id, key: 0, call, ret: Some(self.now()), kind });
            }
        }
    }

    fn set(&mut self, cfg: &Config, h: &History) -> Outcome {
        let v = self.unique();
        lock(&h.set_attempted).insert(v);
        let call = self.now();
        let outcome = match self.execute(cfg, "", json!([["INSERT INTO set_t(v) VALUES(?)", v]])) {
            Ok(r) if r["results"][0]["rows_affected"] == 1 => {
                lock(&h.set_acked).push(v);
                Outcome::Ok
            }
            Ok(_) => Outcome::Fail,
            Err(o) => o,
        };
        self.record(h, call, "set", outcome);
        outcome
    }

    fn bank(&mut self, cfg: &Config, h: &History) -> Outcome {
        let call = self.now();
        let outcome = if self.rng.random_bool(0.5) {
            let level = if self.rng.random_bool(0.5) { "linearizable" } else { "strong" };
            match self.query(cfg, self.node, level, "SELECT SUM(bal), COUNT(*) FROM bank") {
                Ok(v) => {
                    let row = &v["results"][0]["values"][0];
                    lock(&h.bank_reads).push((row[0].as_i64().unwrap_or(-1), row[1].as_i64().unwrap_or(-1)));
                    Outcome::Ok
                }
                Err(o) => o,
            }
        } else {
            let a = self.rng.random_range(0..BANK_ACCOUNTS);
            let b = (a + self.rng.random_range(1..BANK_ACCOUNTS)) % BANK_ACCOUNTS;
            let amt = self.rng.random_range(1..20);
            // Both updates in one transaction; the credit only if the debit happened.
            let body = json!([
                ["UPDATE bank SET bal = bal - ? WHERE id = ? AND bal >= ?", amt, a, amt],
                ["UPDATE bank SET bal = bal + ? WHERE id = ? AND changes() > 0", amt, b]
            ]);
            match self.execute(cfg, "?transaction", body) {
                Ok(r) if r["results"][0].get("error").is_none() => Outcome::Ok,
                Ok(_) => Outcome::Fail,
                Err(o) => o,
            }
        };
        self.record(h, call, "bank", outcome);
        outcome
    }
}
