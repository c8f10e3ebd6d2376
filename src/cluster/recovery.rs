//! Manual recovery with `peers.json` (docs/API.md §11): when every node of a cluster has moved to new
//! addresses (or a quorum is lost for good), the operator writes the new configuration to
//! `<data>/raft/peers.json` on each node — hashicorp's format, `[{"id","address","non_voter"}]`,
//! plus an optional raftlite `api_addr` — and restarts them. At start the node appends that
//! configuration to its log as a membership entry in a fresh term of its own (persisting the
//! matching self-vote first), so it elects and replicates at the new addresses; the file is then
//! renamed `peers.info`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, Vote};
use serde::Deserialize;

use crate::raft::{numeric_id, Entry, NodeInfo};
use crate::store::codec;
use crate::store::log_db::{LogDb, KEY_PURGED, KEY_VOTE};

#[derive(Debug, Deserialize)]
struct Peer {
    id: String,
    address: String,
    #[serde(default)]
    non_voter: bool,
    #[serde(default)]
    api_addr: Option<String>,
}

/// The last membership the node knew, to keep HTTP addresses the file does not give.
fn known_nodes(conn: &rusqlite::Connection, snap_dir: &Path) -> BTreeMap<u64, NodeInfo> {
    let mut out = BTreeMap::new();
    if let Ok(Some(m)) = crate::store::position::read_current(snap_dir) {
        out.extend(m.last_membership.membership().nodes().map(|(id, n)| (*id, n.clone())));
    }
    if let Ok(rows) = LogDb::range(conn, 0, u64::MAX) {
        for (_, b) in rows {
            if let Ok(Entry { payload: EntryPayload::Membership(m), .. }) = codec::decode::<Entry>(&b) {
                out.extend(m.nodes().map(|(id, n)| (*id, n.clone())));
            }
        }
    }
    out
}

/// Apply `<raft_dir>/peers.json` if present. Returns whether a recovery configuration was applied.
pub fn apply_peers_file(raft_dir: &Path, log_path: &Path, snap_dir: &Path, my_id: &str) -> Result<bool, String> {
    let file = raft_dir.join("peers.json");
    let text = match std::fs::read(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    let peers: Vec<Peer> = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    if peers.is_empty() {
        return Err(format!("{}: no peers listed", file.display()));
    }
    let mut conn = LogDb::open(log_path).map_err(|e| e.to_string())?;
    let known = known_nodes(&conn, snap_dir);
    let mut voters = BTreeSet::new();
    let mut nodes = BTreeMap::new();
    for p in &peers {
        let nid = numeric_id(&p.id);
        let api = p.api_addr.clone().or_else(|| known.get(&nid).map(|n| n.api_addr.clone())).unwrap_or_default();
        nodes.insert(nid, NodeInfo { id: p.id.clone(), raft_addr: p.address.clone(), api_addr: api });
        if !p.non_voter {
            voters.insert(nid);
        }
    }
    if voters.is_empty() {
        return Err(format!("{}: no voters listed", file.display()));
    }
    let me = numeric_id(my_id);
    let vote: Option<Vote<u64>> = LogDb::get_meta(&conn, KEY_VOTE)
        .map_err(|e| e.to_string())?
        .map(|b| codec::decode(&b))
        .transpose()
        .map_err(|e| e.to_string())?;
    let last = LogDb::last(&conn).map_err(|e| e.to_string())?;
    let last_entry: Option<Entry> = last.map(|(_, b)| codec::decode(&b)).transpose().map_err(|e| e.to_string())?;
    let purged: Option<LogId<u64>> = LogDb::get_meta(&conn, KEY_PURGED)
        .map_err(|e| e.to_string())?
        .map(|b| codec::decode(&b))
        .transpose()
        .map_err(|e| e.to_string())?;
    let last_term = last_entry.as_ref().map(|e| e.log_id.leader_id.term).unwrap_or(0);
    let term = vote.map(|v| v.leader_id().term).unwrap_or(0).max(last_term) + 1;
    let index = last_entry.map(|e| e.log_id.index).or(purged.map(|p| p.index)).map(|i| i + 1).unwrap_or(0);
    // The vote first: this node "stood" in a new term and voted for itself, so the entry below,
    // stamped with that term, never exceeds the node's own vote.
    let new_vote = Vote::new(term, me);
    LogDb::put_meta(&conn, KEY_VOTE, &codec::encode(&new_vote).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, me), index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    };
    let bytes = codec::encode(&entry).map_err(|e| e.to_string())?;
    LogDb::append(&mut conn, &[(index, bytes)]).map_err(|e| e.to_string())?;
    drop(conn);
    std::fs::rename(&file, raft_dir.join("peers.info")).map_err(|e| e.to_string())?;
    std::fs::File::open(raft_dir).and_then(|d| d.sync_all()).map_err(|e| e.to_string())?;
    tracing::warn!(peers = peers.len(), term, index, "applied recovery configuration from peers.json");
    Ok(true)
}
