//! Raft RPC transport over the inter-node HTTP service (docs/DESIGN.md §8): `POST /raft/append`,
//! `/raft/vote`, `/raft/snapshot` with codec bodies. A connection failure is `Unreachable`
//! (openraft backs off); anything else is a network error. With `-compress-snap-transport`,
//! snapshot chunks travel gzip-compressed to `/raft/snapshot-gz` (every node accepts both).
//!
//! A snapshot chunk is encoded and decoded as a [`SnapshotChunk`], its data one byte string,
//! not as openraft's `InstallSnapshotRequest`, whose `Vec<u8>` serde writes and reads one byte at
//! a time (a twelfth of a 1 GB transfer's CPU went to that). The bytes on the wire are the same.

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

/// A snapshot chunk on the wire: openraft's `InstallSnapshotRequest`, field for field, with its
/// data as one byte string. bincode writes a byte string as a length and the bytes, exactly as it
/// writes a sequence of `u8`, so the encoding is the same, only a copy instead of a loop.
#[derive(Serialize, serde::Deserialize)]
pub struct SnapshotChunk {
    pub vote: openraft::Vote<u64>,
    pub meta: openraft::SnapshotMeta<u64, NodeInfo>,
    pub offset: u64,
    #[serde(with = "byte_string")]
    pub data: Vec<u8>,
    pub done: bool,
}

impl From<InstallSnapshotRequest<TypeConfig>> for SnapshotChunk {
    fn from(r: InstallSnapshotRequest<TypeConfig>) -> Self {
        SnapshotChunk { vote: r.vote, meta: r.meta, offset: r.offset, data: r.data, done: r.done }
    }
}

impl From<SnapshotChunk> for InstallSnapshotRequest<TypeConfig> {
    fn from(c: SnapshotChunk) -> Self {
        InstallSnapshotRequest { vote: c.vote, meta: c.meta, offset: c.offset, data: c.data, done: c.done }
    }
}

/// `Vec<u8>` as a serde byte string (what the `serde_bytes` crate does, for the one field).
mod byte_string {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
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
        self.answer(self.peers.call::<Req, Result<T, E>>(&self.addr, path, req, timeout).await)
    }

    /// openraft's error for what a call gave.
    fn answer<T, E: std::error::Error>(&self, got: Result<Result<T, E>, CallError>) -> Rpc<T, E> {
        match got {
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
        // Heartbeats (no entries) are not on a write's path and are left out of the figure.
        let carries_entries = !rpc.entries.is_empty();
        let started = std::time::Instant::now();
        let r = self.rpc("/raft/append", &rpc, &o).await;
        if carries_entries && r.is_ok() {
            metrics::histogram!("raftlite_replication_rpc_seconds").record(started.elapsed().as_secs_f64());
        }
        r
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
        let mut rpc = rpc;
        if self.compress_snapshots {
            rpc.data = gzip(&rpc.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        }
        metrics::counter!("raftlite_snapshot_sent_wire_bytes_total").increment(rpc.data.len() as u64);
        let path = if self.compress_snapshots { "/raft/snapshot-gz" } else { "/raft/snapshot" };
        self.rpc(path, &SnapshotChunk::from(rpc), &o).await
    }
    async fn vote(&mut self, rpc: VoteRequest<u64>, o: RPCOption) -> Rpc<VoteResponse<u64>> {
        self.rpc("/raft/vote", &rpc, &o).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_chunk_is_encoded_as_openraft_encodes_its_request() {
        use openraft::{LogId, SnapshotMeta, StoredMembership, Vote};
        let req = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 42)),
                last_membership: StoredMembership::default(),
                snapshot_id: "3-42-7".into(),
            },
            offset: 1 << 24,
            data: (0..70_000u32).map(|i| (i % 251) as u8).collect(),
            done: false,
        };
        let old = crate::store::codec::encode(&req).unwrap();
        let new = crate::store::codec::encode(&SnapshotChunk::from(req.clone())).unwrap();
        assert_eq!(old, new, "the wire form changed");
        let back: SnapshotChunk = crate::store::codec::decode(&old).unwrap();
        assert_eq!(InstallSnapshotRequest::from(back), req);
    }

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
