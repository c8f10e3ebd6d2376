//! Raft RPC transport over the inter-node HTTP service (docs/DESIGN.md §8): `POST /raft/append`,
//! `/raft/vote`, `/raft/snapshot` with codec bodies. A connection failure is `Unreachable`
//! (openraft backs off); anything else is a network error. With `-compress-snap-transport`,
//! snapshot chunks travel gzip-compressed to `/raft/snapshot-gz` (every node accepts both).

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
    compress_snapshots: bool,
}

impl Network {
    pub fn new(peers: Arc<Peers>, compress_snapshots: bool) -> Self {
        Network { peers, compress_snapshots }
    }
}

pub struct Peer {
    target: u64,
    addr: String,
    peers: Arc<Peers>,
    compress_snapshots: bool,
}

/// The largest snapshot chunk a receiver inflates (openraft's chunks are 16 MiB here), so a
/// compressed chunk cannot claim more memory than that.
pub const MAX_INFLATED_CHUNK: u64 = 64 << 20;

/// gzip `data` (fast level: snapshots are mostly sent across a LAN, where time matters more).
fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::fast());
    e.write_all(data)?;
    e.finish()
}

/// Inflate a gzip chunk, refusing more than [`MAX_INFLATED_CHUNK`] bytes.
pub fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).take(MAX_INFLATED_CHUNK + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_INFLATED_CHUNK {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "snapshot chunk inflates past its limit"));
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;
    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Peer {
        Peer {
            target,
            addr: node.raft_addr.clone(),
            peers: self.peers.clone(),
            compress_snapshots: self.compress_snapshots,
        }
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
            // A peer refusing this node's TLS is unreachable until an operator fixes it: openraft
            // backs off (the refusal is logged once by `Peers::call`).
            Err(CallError::Unreachable(m) | CallError::Refused(m)) => {
                Err(RPCError::Unreachable(Unreachable::new(&Msg(m))))
            }
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
        let raw = rpc.data.len() as u64;
        metrics::counter!("raftlite_snapshot_sent_bytes_total").increment(raw);
        if !self.compress_snapshots {
            metrics::counter!("raftlite_snapshot_sent_wire_bytes_total").increment(raw);
            return self.rpc("/raft/snapshot", &rpc, &o).await;
        }
        let mut rpc = rpc;
        rpc.data = gzip(&rpc.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        metrics::counter!("raftlite_snapshot_sent_wire_bytes_total").increment(rpc.data.len() as u64);
        self.rpc("/raft/snapshot-gz", &rpc, &o).await
    }
    async fn vote(&mut self, rpc: VoteRequest<u64>, o: RPCOption) -> Rpc<VoteResponse<u64>> {
        self.rpc("/raft/vote", &rpc, &o).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_bombs_are_refused() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let z = gzip(&data).unwrap();
        assert!(z.len() < data.len() / 10);
        assert_eq!(gunzip(&z).unwrap(), data);
        let bomb = gzip(&vec![0u8; (MAX_INFLATED_CHUNK + 10) as usize]).unwrap();
        assert!(gunzip(&bomb).is_err());
        assert!(gunzip(b"not gzip").is_err());
    }
}
