//! Raft RPC transport over the inter-node HTTP service (docs/DESIGN.md §8): `POST /raft/append`,
//! `/raft/vote`, `/raft/snapshot` with codec bodies. A connection failure is `Unreachable`
//! (openraft backs off); anything else is a network error.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{NodeInfo, TypeConfig};
use crate::cluster::client::{CallError, Peers};

#[derive(Clone)]
pub struct Network {
    peers: Arc<Peers>,
}

impl Network {
    pub fn new(peers: Arc<Peers>) -> Self {
        Network { peers }
    }
}

pub struct Peer {
    target: u64,
    addr: String,
    peers: Arc<Peers>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;
    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Peer {
        Peer { target, addr: node.raft_addr.clone(), peers: self.peers.clone() }
    }
}

type Rpc<T, E = RaftError<u64>> = Result<T, RPCError<u64, NodeInfo, E>>;

impl Peer {
    async fn rpc<Req, T, E>(&self, path: &str, req: &Req, option: &RPCOption) -> Rpc<T, E>
    where
        Req: Serialize,
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let timeout = option.hard_ttl().max(Duration::from_millis(50));
        match self.peers.call::<Req, Result<T, E>>(&self.addr, path, req, timeout).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e))),
            Err(CallError::Unreachable(m)) => Err(RPCError::Unreachable(Unreachable::new(&Msg(m)))),
            Err(CallError::Bad(m)) => Err(RPCError::Network(NetworkError::new(&Msg(m)))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        o: RPCOption,
    ) -> Rpc<AppendEntriesResponse<u64>> {
        self.rpc("/raft/append", &rpc, &o).await
    }
    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        o: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        fail::fail_point!("snapshot::send", |_| Err(RPCError::Unreachable(Unreachable::new(&Msg(
            "failpoint snapshot::send".into()
        )))));
        self.rpc("/raft/snapshot", &rpc, &o).await
    }
    async fn vote(&mut self, rpc: VoteRequest<u64>, o: RPCOption) -> Rpc<VoteResponse<u64>> {
        self.rpc("/raft/vote", &rpc, &o).await
    }
}
