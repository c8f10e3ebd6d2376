//! Outgoing inter-node HTTP: one `reqwest::Client` per peer (its own keep-alive pool), bound to
//! this node's advertised IP so that fault tests can cut node pairs apart with address rules on
//! 127.0.0.x (docs/DESIGN.md §11).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::store::codec;

#[derive(Debug, Error)]
pub enum CallError {
    /// The peer could not be reached (connect refused, timed out): worth retrying later.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer answered something we cannot use.
    #[error("{0}")]
    Bad(String),
}

/// A set of per-peer clients.
pub struct Peers {
    local_ip: Option<IpAddr>,
    clients: Mutex<HashMap<String, reqwest::Client>>,
    /// When each peer (by address) last answered a call: the leader's reaper reads it.
    answered: Mutex<HashMap<String, Instant>>,
    /// HTTP API addresses learned from the nodes themselves, by Raft address, and when.
    api_addrs: Mutex<HashMap<String, (String, Instant)>>,
    /// `Authorization` header for the cluster service (`-join-as`), if any.
    credentials: Option<String>,
}

/// How long a learned HTTP API address is used before it is asked for again.
const API_ADDR_TTL: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Peers {
    /// `local_ip`: the address outgoing connections bind to (the node's advertised Raft IP when
    /// it is a loopback or concrete address).
    /// `credentials`: the user and password calls to other nodes' cluster service carry.
    pub fn new(local_ip: Option<IpAddr>, credentials: Option<(String, String)>) -> Peers {
        Peers {
            credentials: credentials.map(|(u, p)| crate::http::auth::basic_header(&u, &p)),
            local_ip,
            clients: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashMap::new()),
            api_addrs: Mutex::new(HashMap::new()),
        }
    }

    /// The HTTP API address of the node at `raft_addr`, as that node gives it (`/cluster/meta`
    /// over its Raft address, as rqlite's cluster service does), cached for [`API_ADDR_TTL`];
    /// `known` (from the cluster configuration, which may be stale after a `peers.json` recovery)
    /// when the node cannot be asked. `fresh` skips the cache (a forward to the cached address
    /// just failed).
    pub async fn api_addr(&self, raft_addr: &str, known: &str, fresh: bool) -> String {
        if !fresh {
            if let Some((a, at)) = lock(&self.api_addrs).get(raft_addr) {
                if at.elapsed() < API_ADDR_TTL {
                    return a.clone();
                }
            }
        }
        let asked = self.call::<_, super::ClusterReply>(raft_addr, "/cluster/meta", &(), Duration::from_secs(2)).await;
        match asked {
            Ok(super::ClusterReply::Meta(m)) if !m.api_addr.is_empty() => {
                lock(&self.api_addrs).insert(raft_addr.to_string(), (m.api_addr.clone(), Instant::now()));
                m.api_addr
            }
            _ => known.to_string(),
        }
    }

    fn auth_header(&self) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        if let Some(v) = self.credentials.as_deref().and_then(|c| c.parse().ok()) {
            h.insert(reqwest::header::AUTHORIZATION, v);
        }
        h
    }

    /// Record that `addr` answered now (an allocation only the first time: this runs on every
    /// Raft RPC).
    fn note_answer(&self, addr: &str) {
        let now = Instant::now();
        let mut answered = lock(&self.answered);
        match answered.get_mut(addr) {
            Some(t) => *t = now,
            None => {
                answered.insert(addr.to_string(), now);
            }
        }
    }

    /// When the peer at `addr` last answered a call from this node, if it ever did.
    pub fn last_answer(&self, addr: &str) -> Option<Instant> {
        lock(&self.answered).get(addr).copied()
    }

    /// The client for `addr`, created on first use.
    pub fn client(&self, addr: &str) -> reqwest::Client {
        lock(&self.clients)
            .entry(addr.to_string())
            .or_insert_with(|| {
                let mut b = reqwest::Client::builder()
                    .pool_max_idle_per_host(4)
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true);
                if let Some(ip) = self.local_ip {
                    b = b.local_address(ip);
                }
                b.build().unwrap_or_else(|_| reqwest::Client::new())
            })
            .clone()
    }

    /// POST a codec-encoded request and decode the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        fail::fail_point!("network::send", |_| Err(CallError::Unreachable("failpoint network::send".into())));
        let body = codec::encode(req).map_err(|e| CallError::Bad(e.to_string()))?;
        metrics::counter!("raftlite_internode_bytes_out_total").increment(body.len() as u64);
        let r = self
            .client(addr)
            .post(super::url(addr, path))
            .header("Content-Type", "application/octet-stream")
            .headers(self.auth_header())
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        self.note_answer(addr);
        if !r.status().is_success() {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            return Err(if status.as_u16() == 503 {
                CallError::Unreachable(format!("{addr}: {status} {}", text.trim()))
            } else {
                CallError::Bad(format!("{addr}: {status} {}", text.trim()))
            });
        }
        let bytes = r.bytes().await.map_err(|e| CallError::Unreachable(e.to_string()))?;
        metrics::counter!("raftlite_internode_bytes_in_total").increment(bytes.len() as u64);
        codec::decode(&bytes).map_err(|e| CallError::Bad(format!("{addr}: {e}")))
    }
}

/// The IP to bind outgoing connections to, from an advertised `host:port`.
pub fn bind_ip(adv_addr: &str) -> Option<IpAddr> {
    let host = adv_addr.rsplit_once(':').map(|(h, _)| h)?;
    let ip: IpAddr = host.trim_matches(|c| c == '[' || c == ']').parse().ok()?;
    (!ip.is_unspecified()).then_some(ip)
}
