//! Outgoing inter-node calls: the cluster service and Raft RPCs on other nodes' Raft addresses
//! (over node-to-node TLS when `-node-cert` is set), and forwarded requests to the leader's API
//! (over HTTPS when the API serves it). Both go through [`Outgoing`] clients bound to this node's
//! advertised IP, so that fault tests can cut node pairs apart with address rules on 127.0.0.x
//! (docs/DESIGN.md §11). A peer that refuses this node's TLS or credentials is a configuration
//! fault: it is reported as [`CallError::Refused`] and logged once, not retried in silence.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Buf;
use http_body_util::Full;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::http::outgoing::{ClientTls, Outgoing, Pieces, SendError};
use crate::store::codec;

#[derive(Debug, Error)]
pub enum CallError {
    /// The peer could not be reached (connect refused, timed out): worth retrying later.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer and this node disagree on TLS or credentials: retrying does not help until an
    /// operator changes one of them.
    #[error("refused: {0}")]
    Refused(String),
    /// The peer answered something we cannot use.
    #[error("{0}")]
    Bad(String),
}

impl From<SendError> for CallError {
    fn from(e: SendError) -> CallError {
        match e {
            SendError::Tls { .. } => CallError::Refused(e.to_string()),
            _ => CallError::Unreachable(e.to_string()),
        }
    }
}

/// Outgoing clients and what this node has learned about its peers.
pub struct Peers {
    /// To other nodes' Raft addresses.
    node: Outgoing,
    /// To other nodes' HTTP APIs (forwarding); `Err` says why there is none.
    api: Result<Outgoing, String>,
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
    /// `node_tls`: node-to-node TLS. `api_tls`: how to reach other nodes' HTTPS API (`None` with
    /// `api_https` off: plain HTTP).
    pub fn new(
        local_ip: Option<IpAddr>,
        credentials: Option<(String, String)>,
        node_tls: Option<ClientTls>,
        api_https: bool,
        api_tls: Option<ClientTls>,
    ) -> Result<Peers, crate::http::tls::TlsError> {
        let api = match (api_https, api_tls) {
            (false, _) => Ok(Outgoing::new(local_ip, None)?),
            (true, Some(t)) => Ok(Outgoing::new(local_ip, Some(t))?),
            (true, None) => {
                Err("forwarding over HTTPS needs -http-ca-cert (the CA that signed the leader's certificate)".into())
            }
        };
        Ok(Peers {
            node: Outgoing::new(local_ip, node_tls)?,
            api,
            credentials: credentials.map(|(u, p)| crate::http::auth::basic_header(&u, &p)),
            answered: Mutex::new(HashMap::new()),
            api_addrs: Mutex::new(HashMap::new()),
        })
    }

    /// The client for other nodes' HTTP APIs.
    pub fn api(&self) -> Result<&Outgoing, &str> {
        self.api.as_ref().map_err(String::as_str)
    }

    /// Whether `addr` answers `GET /status` the way an HTTP API does.
    pub async fn is_http_api(&self, addr: &str) -> bool {
        let Ok(req) = http::Request::get(self.node.url(addr, "/status")).body(Default::default()) else {
            return false;
        };
        matches!(self.node.send(addr, req, Duration::from_secs(2)).await, Ok(r) if r.status().is_success())
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

    /// POST a codec-encoded request and decode the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let body = codec::encode(req).map_err(|e| CallError::Bad(e.to_string()))?;
        self.call_with(addr, path, body.into(), timeout).await
    }

    /// [`Peers::call`] with the request already encoded, in pieces (a snapshot chunk).
    pub async fn call_with<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Pieces,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        fail::fail_point!("network::send", |_| Err(CallError::Unreachable("failpoint network::send".into())));
        metrics::counter!("raftlite_internode_bytes_out_total").increment(body.remaining() as u64);
        let mut req = http::Request::post(self.node.url(addr, path))
            .header(http::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(c) = &self.credentials {
            req = req.header(http::header::AUTHORIZATION, c.as_str());
        }
        let req = req.body(Full::new(body)).map_err(|e| CallError::Bad(e.to_string()))?;
        let r = self.node.send(addr, req, timeout).await.map_err(CallError::from).inspect_err(|e| {
            if let CallError::Refused(why) = e {
                crate::logging::warn_once(&format!("refused {addr}"), || format!("node at {why}"));
            }
        })?;
        self.note_answer(addr);
        let status = r.status();
        if !status.is_success() {
            let text = String::from_utf8_lossy(r.body());
            let why = format!("{addr}: {status} {}", text.trim());
            return Err(match status.as_u16() {
                503 => CallError::Unreachable(why),
                400 | 401 | 403 => {
                    crate::logging::warn_once(&format!("refused {addr} {status}"), || {
                        format!("node at {addr} refused this node: {status} {}", text.trim())
                    });
                    CallError::Refused(why)
                }
                _ => CallError::Bad(why),
            });
        }
        metrics::counter!("raftlite_internode_bytes_in_total").increment(r.body().len() as u64);
        codec::decode(r.body()).map_err(|e| CallError::Bad(format!("{addr}: {e}")))
    }
}

/// The IP to bind outgoing connections to, from an advertised `host:port`.
pub fn bind_ip(adv_addr: &str) -> Option<IpAddr> {
    let host = adv_addr.rsplit_once(':').map(|(h, _)| h)?;
    let ip: IpAddr = host.trim_matches(|c| c == '[' || c == ']').parse().ok()?;
    (!ip.is_unspecified()).then_some(ip)
}
