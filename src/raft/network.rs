//! Raft RPC transport. A single node has no peers, so every RPC reports the target unreachable;
//! the inter-node protocol of design.md §7 replaces this with the clustering work (issue 3).

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::{NodeInfo, TypeConfig};

#[derive(Clone, Default)]
pub struct Network;

pub struct NoPeer {
    target: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("node {0} is unreachable: this build has no inter-node transport yet")]
struct NoTransport(u64);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NoPeer;
    async fn new_client(&mut self, target: u64, _node: &NodeInfo) -> NoPeer {
        NoPeer { target }
    }
}

type Rpc<T, E = RaftError<u64>> = Result<T, RPCError<u64, NodeInfo, E>>;

impl NoPeer {
    fn err<E: std::error::Error>(&self) -> RPCError<u64, NodeInfo, E> {
        RPCError::Unreachable(Unreachable::new(&NoTransport(self.target)))
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Rpc<AppendEntriesResponse<u64>> {
        Err(self.err())
    }
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        Err(self.err())
    }
    async fn vote(&mut self, _rpc: VoteRequest<u64>, _o: RPCOption) -> Rpc<VoteResponse<u64>> {
        Err(self.err())
    }
}
