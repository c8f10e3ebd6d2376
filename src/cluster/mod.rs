//! The cluster service (docs/DESIGN.md §8): the messages nodes exchange on the inter-node address
//! besides Raft's own RPCs (join, notify, remove, node metadata, election on request), and the
//! HTTP client every outgoing inter-node call goes through. Bodies are encoded with the codec
//! (bincode behind a version byte, size-limited decode).

pub mod client;
pub mod discovery;
pub mod join;
pub mod recovery;

use serde::{Deserialize, Serialize};

/// Ask the leader to add a node (docs/API.md §11).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JoinRequest {
    pub id: String,
    pub raft_addr: String,
    pub api_addr: String,
    pub voter: bool,
}

/// Tell a node that another node exists (`-bootstrap-expect`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NotifyRequest {
    pub id: String,
    pub raft_addr: String,
    pub api_addr: String,
}

/// Remove a node from the cluster configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RemoveRequest {
    pub id: String,
}

/// A node's description of itself (for `/nodes`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeMeta {
    pub id: String,
    pub api_addr: String,
    pub raft_addr: String,
    pub version: String,
    pub commit_index: u64,
    pub applied_index: u64,
}

/// Answer to a cluster-service request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ClusterReply {
    Ok,
    /// This node is not the leader; try the leader at this Raft address, if known.
    NotLeader {
        leader_raft_addr: Option<String>,
    },
    Meta(NodeMeta),
    Error(String),
}
