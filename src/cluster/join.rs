//! The joining side of clustering (docs/API.md §11): `-join` with attempts, intervals and leader
//! redirects, and `-bootstrap-expect` with notify. The nodes to contact are a fixed `-join` list
//! or what DNS discovery finds, looked up again on every round (cluster::discovery).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{CallError, Peers};
use super::discovery::Discovery;
use super::{ClusterReply, JoinRequest, NotifyRequest};
use crate::raft::Raft;

/// Most "not leader, try X" hops followed for one target.
const MAX_REDIRECTS: usize = 10;

/// The nodes a joining node contacts.
#[derive(Clone)]
pub enum Targets {
    /// `-join`'s list (it may hold this node's own address: `-bootstrap-expect` notifies it too).
    Fixed(Vec<String>),
    /// `-disco-mode dns|dns-srv`.
    Discovered(Arc<Discovery>),
}

impl Targets {
    /// Whether there is any node other than `me` (a Raft address) to contact.
    pub fn has_others(&self, me: &str) -> bool {
        match self {
            Targets::Fixed(t) => t.iter().any(|t| t != me),
            Targets::Discovered(_) => true,
        }
    }

    /// The addresses to contact now. A failed lookup is logged and gives none this round (the
    /// caller's rounds retry it); the error is kept for the final message.
    async fn now(&self, last_error: &mut String) -> Vec<String> {
        match self {
            Targets::Fixed(t) => t.clone(),
            Targets::Discovered(d) => match d.lookup().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "discovery found no nodes this round; retrying");
                    *last_error = e.to_string();
                    Vec::new()
                }
            },
        }
    }
}

/// Try to join through `targets`, up to `attempts` rounds `interval` apart. Returns the Raft
/// address of the node that accepted the join.
pub async fn join(
    peers: &Peers,
    targets: &Targets,
    req: &JoinRequest,
    attempts: u32,
    interval: Duration,
) -> Result<String, String> {
    if let Targets::Fixed(fixed) = targets {
        for t in fixed {
            if peers.is_http_api(t).await {
                return Err(format!(
                    "{t} is an HTTP API address; -join takes Raft addresses (the other node's -raft-addr)"
                ));
            }
        }
    }
    let mut last = String::from("no join targets");
    for round in 0..attempts {
        for target in targets.now(&mut last).await.iter().filter(|t| **t != req.raft_addr) {
            match join_one(peers, target, req).await {
                Ok(addr) => return Ok(addr),
                // TLS or credentials the target refuses: no later attempt can succeed.
                Err(Failed::Refused(e)) => return Err(format!("failed to join cluster: {e}")),
                Err(Failed::Retry(e)) => {
                    tracing::warn!(target = %target, round, error = %e, "join attempt failed");
                    last = e;
                }
            }
        }
        if round + 1 < attempts {
            tokio::time::sleep(interval).await;
        }
    }
    Err(format!("failed to join cluster after {attempts} attempts: {last}"))
}

/// Why one join attempt failed.
enum Failed {
    Retry(String),
    Refused(String),
}

async fn join_one(peers: &Peers, target: &str, req: &JoinRequest) -> Result<String, Failed> {
    let mut addr = target.to_string();
    for _ in 0..MAX_REDIRECTS {
        match peers.call::<_, ClusterReply>(&addr, "/cluster/join", req, Duration::from_secs(150)).await {
            Ok(ClusterReply::Ok) => return Ok(addr),
            Ok(ClusterReply::NotLeader { leader_raft_addr: Some(l) }) if l != addr => addr = l,
            Ok(ClusterReply::NotLeader { .. }) => return Err(Failed::Retry(format!("{addr}: no leader known"))),
            Ok(ClusterReply::Error(e)) => return Err(Failed::Retry(format!("{addr}: {e}"))),
            Ok(other) => return Err(Failed::Retry(format!("{addr}: unexpected answer {other:?}"))),
            Err(CallError::Refused(e)) => return Err(Failed::Refused(format!("node at {e}"))),
            Err(e) => return Err(Failed::Retry(e.to_string())),
        }
    }
    Err(Failed::Retry(format!("{target}: too many leader redirects")))
}

/// `-bootstrap-expect`: keep trying to join; failing that, notify every target, until this node
/// is part of an initialized cluster or `timeout` passes.
pub async fn bootstrap_expect(
    peers: &Peers,
    raft: &Raft,
    targets: &Targets,
    req: &JoinRequest,
    interval: Duration,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let notify = NotifyRequest { id: req.id.clone(), raft_addr: req.raft_addr.clone(), api_addr: req.api_addr.clone() };
    let mut lookup_error = String::new();
    while Instant::now() < deadline {
        if raft.is_initialized().await.unwrap_or(false) {
            return Ok(());
        }
        lookup_error.clear();
        let targets = targets.now(&mut lookup_error).await;
        for t in targets.iter().filter(|t| **t != req.raft_addr) {
            match join_one(peers, t, req).await {
                Ok(_) => return Ok(()),
                Err(Failed::Refused(e)) => return Err(format!("bootstrap-expect: {e}")),
                Err(Failed::Retry(_)) => {}
            }
        }
        for t in &targets {
            let _ = peers.call::<_, ClusterReply>(t, "/cluster/notify", &notify, Duration::from_secs(5)).await;
        }
        tokio::time::sleep(interval.min(Duration::from_secs(1))).await;
    }
    let why = if lookup_error.is_empty() { String::new() } else { format!(" (last discovery error: {lookup_error})") };
    Err(format!("bootstrap-expect: cluster not formed within {timeout:?}{why}"))
}
