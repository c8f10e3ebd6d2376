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

use bytes::Bytes;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::presend::Presend;
use super::{NodeInfo, TypeConfig};
use crate::cluster::client::{CallError, Peers};
use crate::http::outgoing::Pieces;
use crate::store::codec::{self, CodecError};

#[derive(Clone)]
pub struct Network {
    peers: Arc<Peers>,
    compress_snapshots: bool,
    /// The leader's early sends, whose answers stand in for openraft's requests for the same
    /// entries (`src/raft/presend.rs`).
    presend: Option<Arc<Presend>>,
}

impl Network {
    pub fn new(peers: Arc<Peers>, compress_snapshots: bool) -> Self {
        Network { peers, compress_snapshots, presend: None }
    }

    pub fn with_presend(mut self, presend: Arc<Presend>) -> Self {
        self.presend = Some(presend);
        self
    }
}

pub struct Peer {
    target: u64,
    addr: String,
    peers: Arc<Peers>,
    compress_snapshots: bool,
    presend: Option<Arc<Presend>>,
    /// Whether this client has made a call: openraft 0.9 keeps one per replication stream, and
    /// makes a new one for each leadership check (a linearizable read's heartbeat round).
    called: bool,
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

/// The fields of a [`SnapshotChunk`] before its data, in its order: bincode writes them exactly
/// as it writes the start of a chunk.
#[derive(Serialize, serde::Deserialize)]
struct ChunkHead {
    vote: openraft::Vote<u64>,
    meta: openraft::SnapshotMeta<u64, NodeInfo>,
    offset: u64,
}

/// A [`SnapshotChunk`] exactly as `codec::encode` writes it, in three pieces: the head, the data
/// (moved, not copied) and the `done` byte; sent without being joined (`Pieces`).
pub fn encode_chunk(c: SnapshotChunk) -> Result<Pieces, CodecError> {
    let SnapshotChunk { vote, meta, offset, data, done } = c;
    let mut head = codec::encode(&ChunkHead { vote, meta, offset })?;
    head.extend_from_slice(&(data.len() as u64).to_le_bytes());
    Ok(Pieces::new([Bytes::from(head), Bytes::from(data), Bytes::from(vec![u8::from(done)])]))
}

/// Decode a [`SnapshotChunk`] from the pieces its body came in, copying its data once, from the
/// pieces into the chunk (rather than joining the pieces first and copying out of that). The
/// bytes are what `codec::encode` writes for a chunk; anything short, long or claiming more
/// data than arrived is refused.
pub fn decode_chunk(frames: &[Bytes]) -> Result<SnapshotChunk, CodecError> {
    use std::io::Read;
    let mut r = Frames { frames, at: 0 };
    r.advance(0); // past empty pieces
    let head: ChunkHead = codec::decode_from(&mut r)?;
    let short = |_| CodecError::Decode("snapshot chunk cut short".into());
    let mut n = [0u8; 8];
    r.read_exact(&mut n).map_err(short)?;
    let len = u64::from_le_bytes(n);
    let left = r.remaining();
    if len >= left as u64 {
        return Err(CodecError::Decode(format!("snapshot chunk claims {len} bytes of data, {left} came")));
    }
    let mut data = Vec::with_capacity(len as usize);
    r.copy_into(&mut data, len as usize);
    let mut done = [0u8; 1];
    r.read_exact(&mut done).map_err(short)?;
    let done = match done[0] {
        0 => false,
        1 => true,
        b => return Err(CodecError::Decode(format!("snapshot chunk: {b} is not a bool"))),
    };
    if r.remaining() != 0 {
        return Err(CodecError::Decode("snapshot chunk: bytes after its end".into()));
    }
    Ok(SnapshotChunk { vote: head.vote, meta: head.meta, offset: head.offset, data, done })
}

/// A body's pieces read as one stream of bytes.
struct Frames<'a> {
    frames: &'a [Bytes],
    /// Bytes of `frames[0]` already read.
    at: usize,
}

impl Frames<'_> {
    fn remaining(&self) -> usize {
        self.frames.iter().map(|f| f.len()).sum::<usize>() - self.at
    }
    /// Append the next `n` bytes (there are at least that many) to `out`.
    fn copy_into(&mut self, out: &mut Vec<u8>, mut n: usize) {
        while n > 0 {
            let Some(f) = self.frames.first() else { return };
            let k = n.min(f.len() - self.at);
            out.extend_from_slice(&f[self.at..self.at + k]);
            self.advance(k);
            n -= k;
        }
    }
    fn advance(&mut self, k: usize) {
        self.at += k;
        while self.frames.first().is_some_and(|f| self.at >= f.len()) {
            self.at -= self.frames[0].len();
            self.frames = &self.frames[1..];
        }
    }
}

impl std::io::Read for Frames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(f) = self.frames.first() else { return Ok(0) };
        let k = buf.len().min(f.len() - self.at);
        buf[..k].copy_from_slice(&f[self.at..self.at + k]);
        self.advance(k);
        Ok(k)
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
            presend: self.presend.clone(),
            called: false,
        }
    }
}

/// How long an RPC may take: what openraft allows it, at least 50 ms.
fn timeout_of(option: &RPCOption) -> Duration {
    option.hard_ttl().max(Duration::from_millis(50))
}

type Rpc<T, E = RaftError<u64>> = Result<T, RPCError<u64, NodeInfo, E>>;

impl Peer {
    async fn rpc<Req, T, E>(&self, path: &str, req: &Req, option: &RPCOption) -> Rpc<T, E>
    where
        Req: Serialize,
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.answer(self.peers.call::<Req, Result<T, E>>(&self.addr, path, req, timeout_of(option)).await)
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
        // Entries the follower already took from the leader's early send are not sent again:
        // its answer to that send is its answer to this request. A replication stream's
        // commit index rides on the next early send, when one follows at once; a leadership
        // check (a client's first call) is never held back.
        let first_call = !std::mem::replace(&mut self.called, true);
        let answered = match &self.presend {
            Some(presend) => {
                presend.note_commit(rpc.leader_commit.as_ref());
                if carries_entries {
                    presend.took(self.target, &rpc).await
                } else {
                    !first_call && presend.covered(self.target, &rpc).await
                }
            }
            None => false,
        };
        let r = match answered {
            true => Ok(AppendEntriesResponse::Success),
            false => self.rpc("/raft/append", &rpc, &o).await,
        };
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
        let body = encode_chunk(SnapshotChunk::from(rpc)).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.answer(self.peers.call_with(&self.addr, path, body, timeout_of(&o)).await)
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

    /// A chunk decoded from the pieces its body came in, however they fall, is the chunk that
    /// was encoded; a chunk cut short, with bytes after it or claiming more data than came is
    /// refused.
    #[test]
    fn a_chunk_decodes_from_the_pieces_of_its_body() {
        use bytes::Buf;
        let chunk = SnapshotChunk {
            vote: openraft::Vote::new_committed(3, 1),
            meta: openraft::SnapshotMeta {
                last_log_id: Some(openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 42)),
                last_membership: openraft::StoredMembership::default(),
                snapshot_id: "3-42-7".into(),
            },
            offset: 1 << 24,
            data: (0..70_000u32).map(|i| (i % 251) as u8).collect(),
            done: true,
        };
        let bytes = codec::encode(&chunk).unwrap();
        // Sent in pieces: the same bytes.
        let copy = SnapshotChunk { data: chunk.data.clone(), meta: chunk.meta.clone(), ..chunk };
        let mut sent = encode_chunk(copy).unwrap();
        assert_eq!(sent.copy_to_bytes(sent.remaining()), bytes);
        let split = |cuts: &[usize]| -> Vec<Bytes> {
            let mut out = Vec::new();
            let mut from = 0;
            for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
                out.push(Bytes::copy_from_slice(&bytes[from..c]));
                from = c;
            }
            out
        };
        for cuts in [vec![], vec![1], vec![3, 50, 51, 1000, 69_000], vec![bytes.len() - 1], vec![0, 0, 10]] {
            let got = decode_chunk(&split(&cuts)).unwrap();
            assert_eq!(codec::encode(&got).unwrap(), bytes, "cut at {cuts:?}");
        }
        assert!(decode_chunk(&[Bytes::copy_from_slice(&bytes[..bytes.len() - 1])]).is_err());
        assert!(decode_chunk(&[Bytes::copy_from_slice(&bytes[..100])]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_chunk(&[Bytes::from(longer)]).is_err());
        // The data's length is the 8 bytes before it: claim far more than came.
        let mut lying = bytes.clone();
        let at = bytes.len() - 1 - chunk.data.len() - 8;
        lying[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        let e = decode_chunk(&[Bytes::from(lying)]).err().expect("refused").to_string();
        assert!(e.contains("claims"), "{e}");
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
