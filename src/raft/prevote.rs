//! Elections with a pre-vote (the Raft thesis §9.6; etcd's PreVote): openraft 0.9 has none, so
//! raftlite turns openraft's own election timer off (`enable_elect: false`, src/node.rs) and this
//! module decides when a follower stands for election.
//!
//! Why: without it, a node that cannot reach a quorum (isolated by a partition, or restarted and
//! still behind the log) stands for election again and again, raising its term each time. When it
//! can talk to the others again, its higher term deposes a healthy leader (openraft's leader
//! steps down on seeing a higher vote in a reply), and a lagging node's self-vote makes the
//! up-to-date node's election at the same term fail. Each costs another election timeout.
//!
//! How: when the leader has been silent for as long as openraft would wait (its lease plus a
//! random election timeout), the node first asks every voter, over `/raft/prevote`, whether it
//! would vote for it at the next term, without anyone changing term or vote. A voter says yes if
//! its own leader lease has run out (it has not heard from a leader for the election timeout, the
//! same rule openraft applies to real vote requests) and the candidate's last log id is at least
//! its own. Only with a quorum of yeses (its own included) does the node call
//! `Raft::trigger().elect()`, and openraft's normal election runs. A pre-vote never changes a vote
//! or a term, so it cannot affect safety, only when elections happen; a peer that does not answer
//! counts as no, one that does not know the path (an older raftlite) as yes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{LogId, Raft, SharedRaft};
use crate::cluster::client::{CallError, Peers};

/// "Would you vote for a candidate whose log ends at `last_log_id`?" (The term is not asked
/// about: see [`answer`].)
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PreVoteRequest {
    pub last_log_id: Option<LogId>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PreVoteReply {
    pub granted: bool,
}

/// The voter's side: would this node vote for `req` now? `lease` is openraft's leader lease
/// (the election timeout).
pub async fn answer(raft: &Raft, req: &PreVoteRequest, lease: Duration) -> PreVoteReply {
    let last_log = raft.data_metrics().borrow().last_log;
    let heard = raft
        .with_raft_state(move |st| {
            let fresh = st.vote_last_modified().is_some_and(|t| t.elapsed() < lease);
            // A leader, or a follower whose leader spoke within the lease, keeps its leader.
            st.server_state == ServerState::Leader || (st.vote_ref().is_committed() && fresh)
        })
        .await
        .unwrap_or(true);
    // No check of the term: a candidate behind in term but ahead in log must still get to stand
    // (its election then learns the higher term and the next one wins), or two such nodes could
    // refuse each other for ever.
    PreVoteReply { granted: !heard && req.last_log_id >= last_log }
}

/// The candidate's side: run for as long as the node does, standing for election only when a
/// quorum of voters would vote for it. `election_timeout` is `-raft-election-timeout`: openraft's
/// lease, and the top of the random timeout drawn from its upper half.
pub async fn elector(raft: SharedRaft, peers: Arc<Peers>, me: u64, election_timeout: Duration) {
    let tick = (election_timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(50));
    let mut wait = random_timeout(election_timeout);
    // When a pre-vote failed: no new one before this (the vote's own time does not move then).
    let mut not_before: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(tick).await;
        let r = raft.get();
        // Only what is needed, without cloning the whole metrics every tick.
        let (membership, term) = {
            let m = r.metrics();
            let m = m.borrow();
            if m.running_state.is_err() || m.state == ServerState::Leader {
                continue;
            }
            (m.membership_config.clone(), m.current_term)
        };
        let membership = membership.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        if !voters.contains(&me) {
            continue;
        }
        let Some(before) = silent_since(&r, election_timeout, wait).await else { continue };
        if not_before.is_some_and(|t| tokio::time::Instant::now() < t) {
            continue;
        }
        let req = PreVoteRequest { last_log_id: r.data_metrics().borrow().last_log };
        let others: Vec<String> = membership
            .nodes()
            .filter(|(id, _)| **id != me && voters.contains(id))
            .map(|(_, n)| n.raft_addr.clone())
            .collect();
        let needed = voters.len() / 2 + 1;
        let won = gather(&peers, &others, &req, election_timeout / 2, needed - 1).await;
        wait = random_timeout(election_timeout);
        // What the answers say is only as fresh as the moment they were given: if a leader spoke
        // (or this node voted) meanwhile, the vote's time moved, and standing now would depose it.
        let still = silent_since(&r, election_timeout, Duration::ZERO).await;
        if won && still == Some(before) {
            tracing::info!(term = term + 1, voters = voters.len(), "pre-vote won; standing for election");
            metrics::counter!("raftlite_raft_prevotes_total", "result" => "won").increment(1);
            not_before = None;
            let _ = r.trigger().elect().await;
        } else {
            tracing::debug!(term = term + 1, won, voters = voters.len(), "pre-vote lost; not standing");
            metrics::counter!("raftlite_raft_prevotes_total", "result" => "lost").increment(1);
            not_before = Some(tokio::time::Instant::now() + wait);
        }
    }
}

/// When the vote last changed (`Some(None)`: never), if the leader has been silent long enough
/// that openraft would stand for election: its lease (when a leader was known) plus `wait`.
async fn silent_since(raft: &Raft, lease: Duration, wait: Duration) -> Option<Option<tokio::time::Instant>> {
    raft.with_raft_state(move |st| {
        let at = st.vote_last_modified();
        let since = at.map(|t| t.elapsed()).unwrap_or(Duration::MAX);
        // A committed vote means a leader was known: wait out its lease too.
        let lease = if st.vote_ref().is_committed() { lease } else { Duration::ZERO };
        (since >= lease + wait).then_some(at)
    })
    .await
    .ok()
    .flatten()
}

/// Ask `others` for their pre-vote; true once `needed` say yes (without waiting for the rest).
async fn gather(peers: &Peers, others: &[String], req: &PreVoteRequest, timeout: Duration, needed: usize) -> bool {
    use futures::stream::{FuturesUnordered, StreamExt};
    if needed == 0 {
        return true;
    }
    let mut asks: FuturesUnordered<_> = others.iter().map(|addr| ask(peers, addr, req, timeout)).collect();
    let mut yes = 0;
    while let Some(granted) = asks.next().await {
        yes += usize::from(granted);
        if yes >= needed {
            return true;
        }
    }
    false
}

async fn ask(peers: &Peers, addr: &str, req: &PreVoteRequest, timeout: Duration) -> bool {
    match peers.call::<_, PreVoteReply>(addr, "/raft/prevote", req, timeout).await {
        Ok(r) => r.granted,
        // A peer that answers without knowing pre-votes (an older raftlite: 404) leaves the
        // decision to the real vote.
        Err(CallError::Bad(_)) => true,
        Err(_) => false,
    }
}

/// A random election timeout in the upper half of `-raft-election-timeout`, as openraft draws.
fn random_timeout(election_timeout: Duration) -> Duration {
    let ms = election_timeout.as_millis().max(2) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}
