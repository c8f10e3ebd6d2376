//! openraft's type configuration for raftlite, and the thin adapters openraft owns: they hold
//! `Addr`s and send typed messages to the actors that own the real resources (docs/DESIGN.md §2).

// `StorageError` is the error type openraft's storage traits prescribe; its size is not ours.
#![allow(clippy::result_large_err)]

pub mod log_adapter;
pub mod network;
pub mod parts;
pub mod presend;
pub mod prevote;
pub mod sm_adapter;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::store::command::{Command, Response};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::store::snapshot_file::SnapshotFile,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, NodeInfo>;
pub type StorageError = openraft::StorageError<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Metrics = openraft::RaftMetrics<u64, NodeInfo>;

/// The node's current `Raft` handle. Consensus replaces it when it rebuilds Raft over the same
/// stores after a fatal error, so everything that talks to Raft asks for it here each time rather
/// than keeping its own copy.
#[derive(Clone)]
pub struct SharedRaft(std::sync::Arc<std::sync::RwLock<Raft>>);

impl SharedRaft {
    pub fn new(raft: Raft) -> Self {
        SharedRaft(std::sync::Arc::new(std::sync::RwLock::new(raft)))
    }

    /// The current handle (a cheap clone).
    pub fn get(&self) -> Raft {
        match self.0.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Install a rebuilt `Raft`.
    pub fn replace(&self, raft: Raft) {
        match self.0.write() {
            Ok(mut r) => *r = raft,
            Err(poisoned) => *poisoned.into_inner() = raft,
        }
    }
}

/// What the cluster knows about a node: its rqlite-style string id and its two addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub raft_addr: String,
    pub api_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.raft_addr)
    }
}

/// openraft wants a numeric id; rqlite ids are strings ("1", "node-a", "host:4002").
/// A decimal id is used as is; anything else is hashed with FNV-1a (stable across builds).
pub fn numeric_id(id: &str) -> u64 {
    if let Ok(n) = id.parse::<u64>() {
        return n;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The leader in `m`, if there is one.
pub fn leader_of(m: &Metrics) -> Option<NodeInfo> {
    leader_in(m.current_leader, &m.membership_config)
}

/// The node `leader` names in `membership`, if any.
fn leader_in(leader: Option<u64>, membership: &StoredMembership) -> Option<NodeInfo> {
    leader.and_then(|l| membership.membership().get_node(&l).cloned())
}

/// On the leader: wait until `node` has replicated the log up to `index`.
pub async fn wait_replicated(raft: &Raft, node: u64, index: u64, timeout: std::time::Duration) -> Result<(), String> {
    raft.wait(Some(timeout))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&node).cloned().flatten())
                    .map(|l| l.index >= index)
                    .unwrap_or(false)
            },
            "replicated",
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Count leader changes and elections, and log each once, from openraft's server metrics (one
/// watcher per `Raft`; it ends when that `Raft` stops). Those change only with the vote, the
/// role, the leader or the membership; the full metrics are sent on every turn of openraft's
/// core, several times a write, and a watcher of them would wake that often for nothing.
pub fn watch_leadership(raft: Raft) {
    tokio::spawn(async move {
        let mut rx = raft.server_metrics();
        let (mut leader, mut state) = {
            let m = rx.borrow();
            (m.current_leader, m.state)
        };
        while rx.changed().await.is_ok() {
            let (l, s, term, name) = {
                let m = rx.borrow();
                for (_, node) in m.membership_config.membership().nodes() {
                    crate::logging::learn(&node.id);
                }
                let name = leader_in(m.current_leader, &m.membership_config).map(|n| n.id);
                (m.current_leader, m.state, m.vote.leader_id().term, name)
            };
            if l != leader {
                metrics::counter!("raftlite_raft_leader_changes_total").increment(1);
                tracing::info!(leader = %name.as_deref().unwrap_or("none"), term, "leader changed");
                leader = l;
            }
            if s != state {
                if s == openraft::ServerState::Candidate {
                    metrics::counter!("raftlite_raft_elections_started_total").increment(1);
                    tracing::info!(term, "election started");
                }
                state = s;
            }
        }
    });
}

/// Convert any error into openraft's `AnyError`.
pub fn any_err(e: impl fmt::Display) -> openraft::AnyError {
    openraft::AnyError::error(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(numeric_id("7"), 7);
        assert_eq!(numeric_id("localhost:4002"), numeric_id("localhost:4002"));
        assert_ne!(numeric_id("a"), numeric_id("b"));
    }
}
