//! Sending a leader's new entries to its followers while the leader's own log fsync runs
//! (docs/DESIGN.md §3 step 3; §7 for what it means for a leader's restart).
//!
//! openraft 0.9 appends a leader's new entries inside its core task and waits there for the
//! fsync; only then does it start replicating them. A commit therefore waits for two fsyncs one
//! after the other: the leader's, then a follower's. Raft does not need that order. The leader
//! may write its log in parallel with sending the entries, as long as it counts itself towards a
//! quorum only once its own write is durable (Ongaro's thesis, §10.2.1). That rule is untouched
//! here: openraft still counts the leader only after the log store's fsync, and a follower only
//! after it answered openraft's own replication, which it does after its fsync.
//!
//! What this adds: when the leader's log adapter is handed entries the leader has just made, it
//! also sends them at once, as an ordinary AppendEntries from the leader, to every voter that
//! already holds the entry before them. The follower appends them (and fsyncs) as it would any
//! append from its leader, while the leader fsyncs its own copy. openraft's replication then asks
//! the follower for the same entries: the leader's network layer does not send that request
//! again, but gives openraft the early send's answer ([`Presend::took`], `src/raft/network.rs`).
//! That answer is the follower's, to exactly that request (same vote, same entry before, same
//! entries), given after the follower's fsync; openraft asks for it only after the leader's own
//! fsync, so the quorum rule is unchanged. An early send that was refused or failed is answered
//! by nothing: openraft's request goes out as it would have.
//!
//! Early sends also carry the commit index, so that openraft's request with only the commit index
//! after a commit can wait (briefly) for the next early send and take its answer instead
//! ([`Presend::covered`]). Under load a follower then receives one request per entry.
//!
//! The one thing it changes for the leader: followers may now hold an entry the leader itself
//! lost (it crashed before its fsync, or the append failed). A leader that restarted and resumed
//! the same term, as openraft 0.9 does, could then give a new entry the same log id; so such a
//! node starts as a follower instead (`RaftParts::build`, docs/DESIGN.md §7).
//!
//! Why the follower's answer holds: openraft 0.9's follower handles one request at a time and
//! answers an append only after its fsync. An early send that arrives late (after newer entries,
//! or after a new term) matches what the follower has, or is refused for its old vote.
//!
//! What openraft takes from an answer besides that: the time its own request was made, which
//! 0.9.25 uses for one figure only (`millis_since_quorum_ack` in its metrics; raftlite reads
//! none of it). Linearizable reads do not rest on these answers: openraft confirms leadership
//! with heartbeats of its own, which carry no entries and always go to the follower.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{ServerState, Vote};
use tokio::sync::watch;

use super::{Entry, LogId, Metrics, Raft, TypeConfig};
use crate::actors::log_store::{LogStore, PutMeta};
use crate::cluster::client::Peers;
use crate::store::codec;
use crate::store::log_db::KEY_PRESEND_TERM;

/// How long an early send may take; openraft's request waiting on its answer waits this long at
/// most before it goes out itself.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest openraft's request that only carries the commit index waits for the next early send
/// to the same follower to carry it instead ([`Presend::covered`]). Under load the next entry is
/// made within a fraction of this; when writes stop, the request goes out this much later.
const COMMIT_WAIT: Duration = Duration::from_millis(2);

/// Entries larger than this in all (a database load, a bulk request) are left to openraft's
/// replication: sending them twice would cost more than the overlap saves.
const MAX_BYTES: usize = 1 << 20;

/// One early send: to whom, and the entry before the ones sent, as that follower holds it.
#[derive(Debug, PartialEq)]
pub struct Target {
    pub id: u64,
    pub raft_addr: String,
    pub prev: LogId,
}

/// The last early send to one follower, and its answer once it came (true: accepted).
struct Sent {
    vote: Vote<u64>,
    prev: LogId,
    last: LogId,
    /// The commit index it carried.
    commit: Option<LogId>,
    /// Which leader append made it (the value of `Presend::appends` after it).
    append: u64,
    accepted: watch::Receiver<Option<bool>>,
}

impl Sent {
    /// Whether this send carried the entries after `prev` up to `last`, under `vote`.
    fn carried(&self, vote: &Vote<u64>, prev: Option<&LogId>, last: &LogId) -> bool {
        self.vote == *vote && Some(&self.prev) == prev && self.last == *last
    }

    /// Whether this send, once accepted, says all that an answer to `req` (no entries) would:
    /// the same vote; an entry before at or after `req`'s, so the follower's log matches the
    /// leader's through `req`'s too (Raft's log matching); and `req`'s commit index or a newer one.
    fn covers(&self, req: &AppendEntriesRequest<TypeConfig>) -> bool {
        self.vote == req.vote
            && Some(self.prev.index) >= req.prev_log_id.map(|l| l.index)
            && self.commit >= req.leader_commit
    }
}

/// The early sender of one `Raft` build: it reads the leader's view (role, vote, membership,
/// what each follower holds) from openraft's metrics.
///
/// Before its first early send in a term, it records that term in the log's meta table
/// ([`KEY_PRESEND_TERM`], fsynced), and sends nothing until that is done. A leader that then
/// restarts (a crash, or Raft rebuilt after a failed append) may have lost entries its followers
/// hold; `RaftParts::build` reads the record and has such a node start as a follower, rather than
/// resume leading the same term and give a new entry the log id of one it lost. A node that never
/// sent early (a single node) resumes leading at once, as before.
pub struct Presend {
    node_id: u64,
    peers: Arc<Peers>,
    log_store: Addr<LogStore>,
    metrics: OnceLock<watch::Receiver<Metrics>>,
    /// The term recorded, and the term whose record is being written.
    recorded: Arc<AtomicU64>,
    recording: Arc<AtomicU64>,
    /// By follower id: the last early send, for openraft's replication to take its answer.
    sent: Mutex<HashMap<u64, Sent>>,
    /// The newest commit index openraft's requests carried; early sends carry it too.
    committed: Mutex<Option<LogId>>,
    /// The leader's appends so far, and the index of the last entry appended: both move once
    /// an append's early sends are made (or were not).
    appends: watch::Sender<(u64, u64)>,
}

impl Presend {
    pub fn new(node_id: u64, peers: Arc<Peers>, log_store: Addr<LogStore>) -> Self {
        Presend {
            node_id,
            peers,
            log_store,
            metrics: OnceLock::new(),
            recorded: Arc::new(AtomicU64::new(0)),
            recording: Arc::new(AtomicU64::new(0)),
            sent: Mutex::new(HashMap::new()),
            committed: Mutex::new(None),
            appends: watch::Sender::new((0, 0)),
        }
    }

    /// True once `term` is recorded; otherwise starts recording it (once) and says false.
    fn recorded(&self, term: u64) -> bool {
        if self.recorded.load(Ordering::Acquire) == term {
            return true;
        }
        if self.recording.swap(term, Ordering::AcqRel) != term {
            let (store, recorded) = (self.log_store.clone(), self.recorded.clone());
            tokio::spawn(async move {
                let Ok(bytes) = codec::encode(&term) else { return };
                match store.send(PutMeta(KEY_PRESEND_TERM, bytes)).await {
                    Ok(Ok(())) => recorded.store(term, Ordering::Release),
                    // Nothing is sent early in this term; the log store's own failure stops Raft.
                    Ok(Err(e)) => tracing::warn!(error = %e, term, "cannot record the early-send term"),
                    Err(e) => tracing::warn!(error = %e, term, "cannot record the early-send term"),
                }
            });
        }
        false
    }

    /// Start reading `raft`'s metrics; until then nothing is sent.
    pub fn attach(&self, raft: &Raft) {
        let _ = self.metrics.set(raft.metrics());
    }

    /// Send the entries just handed to the log store (with their encoded sizes) to the
    /// followers that can take them, in tasks of their own; returns at once.
    pub fn send(&self, appended: &[(Entry, usize)]) {
        let (Some(first), Some(last)) = (appended.first(), appended.last()) else { return };
        let (first, last) = (first.0.log_id, last.0.log_id);
        // Whatever this decides, a commit-index request waiting for it learns so on return.
        let _counted = Counted(&self.appends, last.index);
        let append = self.appends.borrow().0 + 1;
        if appended.iter().map(|(_, n)| n).sum::<usize>() > MAX_BYTES {
            return;
        }
        let Some(rx) = self.metrics.get() else { return };
        let (vote, targets) = {
            let m = rx.borrow();
            let Some(vote) = leader_vote(self.node_id, &m, &first) else { return };
            (vote, targets(self.node_id, &m, first.index))
        };
        if targets.is_empty() || !self.recorded(vote.leader_id().get_term()) {
            return;
        }
        // Every target has acknowledged the leader's own entry at the index before, so they all
        // hold the same `prev`, and one request, encoded once, serves them all.
        let Some(prev) = targets.first().map(|t| t.prev) else { return };
        let req = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(prev),
            entries: appended.iter().map(|(e, _)| e.clone()).collect(),
            leader_commit: self.committed.lock().ok().and_then(|c| *c),
        };
        let body = match codec::encode(&req) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode an early send");
                return;
            }
        };
        for t in targets {
            let (peers, body) = (self.peers.clone(), body.clone());
            let (answered, accepted) = watch::channel(None);
            if let Ok(mut sent) = self.sent.lock() {
                sent.insert(t.id, Sent { vote, prev, last, commit: req.leader_commit, append, accepted });
            }
            tokio::spawn(async move {
                let got = peers
                    .call_with::<Result<AppendEntriesResponse<u64>, RaftError<u64>>>(
                        &t.raft_addr,
                        "/raft/append",
                        body.into(),
                        SEND_TIMEOUT,
                    )
                    .await;
                let outcome = match got {
                    Ok(Ok(AppendEntriesResponse::Success)) => "accepted",
                    Ok(Ok(_)) | Ok(Err(_)) => "refused",
                    Err(_) => "failed",
                };
                // Nobody waiting (the next early send replaced this one) is fine.
                let _ = answered.send(Some(outcome == "accepted"));
                metrics::counter!("raftlite_replication_presend_total", "outcome" => outcome).increment(1);
            });
        }
    }

    /// Note the commit index an openraft request carries, for the early sends that follow.
    pub fn note_commit(&self, commit: Option<&LogId>) {
        if let (Some(c), Ok(mut known)) = (commit, self.committed.lock()) {
            if known.as_ref().is_none_or(|k| c > k) {
                *known = Some(*c);
            }
        }
    }

    /// Whether openraft's request `req` to `target`, which carries no entries (the commit index
    /// after a commit, or a heartbeat), is answered by the next early send to that follower: one
    /// made by the leader's next append, within [`COMMIT_WAIT`], that [`Sent::covers`] it and is
    /// accepted. That answer is the follower's, given after `req` was made, so it is as fresh as
    /// its own answer would be, and the follower has the commit index from it. Under load this
    /// halves what a follower receives per entry. false: `req` must go to the follower.
    pub async fn covered(&self, target: u64, req: &AppendEntriesRequest<TypeConfig>) -> bool {
        let mut appends = self.appends.subscribe();
        let (before, last_index) = *appends.borrow_and_update();
        let Some(metrics) = self.metrics.get() else { return false };
        if !may_wait(&metrics.borrow(), target, req, last_index) {
            return false;
        }
        if !matches!(tokio::time::timeout(COMMIT_WAIT, appends.changed()).await, Ok(Ok(()))) {
            return false;
        }
        let covered = self.accepted(target, |s| s.append > before && s.covers(req)).await;
        if covered {
            metrics::counter!("raftlite_replication_commit_carried_total").increment(1);
        }
        covered
    }

    /// Whether follower `target` accepted exactly `req`'s entries in an early send: the same
    /// vote, the same entry before and the same last entry, so the same entries (a leader gives
    /// each log id to one entry). Waits for that send's answer if it is still on its way; it
    /// always comes, within [`SEND_TIMEOUT`]. true: the follower holds them on disk under this
    /// vote, and its answer to `req` would be `Success`; false: `req` must go to the follower.
    pub async fn took(&self, target: u64, req: &AppendEntriesRequest<TypeConfig>) -> bool {
        let Some(last) = req.entries.last().map(|e| e.log_id) else { return false };
        let took = self.accepted(target, |s| s.carried(&req.vote, req.prev_log_id.as_ref(), &last)).await;
        if took {
            metrics::counter!("raftlite_replication_presend_answers_total").increment(1);
        }
        took
    }

    /// Whether the last early send to `target`, if `fits` it, was accepted; waits for its answer
    /// if it is still on its way (the lock is not held while waiting).
    async fn accepted(&self, target: u64, fits: impl Fn(&Sent) -> bool) -> bool {
        let mut answer = {
            let Ok(sent) = self.sent.lock() else { return false };
            match sent.get(&target) {
                Some(s) if fits(s) => s.accepted.clone(),
                _ => return false,
            }
        };
        let accepted = matches!(answer.wait_for(Option::is_some).await.as_deref(), Ok(Some(true)));
        accepted
    }
}

/// Counts one leader append, the last entry at the index it holds, when dropped: at whatever
/// point `Presend::send` returns.
struct Counted<'a>(&'a watch::Sender<(u64, u64)>, u64);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let last = self.1;
        self.0.send_modify(|(n, l)| {
            *n += 1;
            *l = last;
        });
    }
}

/// The vote to send new entries with (`first` is the first one's id), if this node made them as
/// the leader it still is: they carry its leader id for the term of its committed vote. Entries a
/// follower appends carry another node's id, and are never sent on.
fn leader_vote(node_id: u64, m: &Metrics, first: &LogId) -> Option<Vote<u64>> {
    let leader_id = first.leader_id;
    let vote = Vote::new_committed(leader_id.term, node_id);
    let ours = leader_id.node_id == node_id && m.state == ServerState::Leader && m.vote == vote;
    ours.then_some(vote)
}

/// The voters (this node aside) whose replication has acknowledged exactly the entry before the
/// new ones (the first at `first_index`): they take the new entries at once. A follower behind
/// that, or with entries still in flight to it, is left to openraft's replication, so nothing is
/// sent to it twice. With one entry in flight (`-group-commit-in-flight`'s default), each entry
/// is made after the one before committed, so at least one follower qualifies even under load;
/// with more in flight, the next entry is made while the one before is still on its way, and
/// few are sent early.
fn targets(node_id: u64, m: &Metrics, first_index: u64) -> Vec<Target> {
    let Some(prev_index) = first_index.checked_sub(1) else { return Vec::new() };
    let Some(progress) = &m.replication else { return Vec::new() };
    let membership = m.membership_config.membership();
    progress
        .iter()
        .filter(|(id, _)| **id != node_id)
        .filter_map(|(id, matched)| {
            let prev = (*matched).filter(|l| l.index == prev_index)?;
            // A learner (a read-only node) does not count towards a commit: left to openraft.
            if !is_voter(m, *id) {
                return None;
            }
            let node = membership.get_node(id)?;
            Some(Target { id: *id, raft_addr: node.raft_addr.clone(), prev })
        })
        .collect()
}

/// Whether openraft's commit-index request `req` to `target` may wait for the leader's next early
/// send ([`Presend::covered`]; `last_index`: the leader's last entry). Only if `target` is a voter,
/// as early sends go to voters only ([`targets`]), and holds every entry the leader has:
/// otherwise openraft's replication has entries to send it next, queued behind this request, and
/// the append that follows may wait on them.
fn may_wait(m: &Metrics, target: u64, req: &AppendEntriesRequest<TypeConfig>, last_index: u64) -> bool {
    is_voter(m, target) && req.prev_log_id.map(|l| l.index) == Some(last_index)
}

/// Whether `id` is a voter of the membership in `m`.
fn is_voter(m: &Metrics, id: u64) -> bool {
    m.membership_config.membership().voter_ids().any(|v| v == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::NodeInfo;
    use openraft::{CommittedLeaderId, Membership, StoredMembership};
    use std::collections::{BTreeMap, BTreeSet};

    fn id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn node(id: u64) -> NodeInfo {
        NodeInfo { id: id.to_string(), raft_addr: format!("127.0.0.{id}:4002"), ..NodeInfo::default() }
    }

    /// Node 1 leads term 3 of a cluster of voters 1, 2, 3 and learner 4; `matched` is what each
    /// other node's replication has reached.
    fn leader_metrics(matched: &[(u64, Option<u64>)]) -> Metrics {
        let voters = BTreeSet::from([1, 2, 3]);
        let nodes: BTreeMap<u64, NodeInfo> = (1..=4).map(|id| (id, node(id))).collect();
        let membership = Membership::new(vec![voters], nodes);
        let mut m = Metrics::new_initial(1);
        m.state = ServerState::Leader;
        m.vote = Vote::new_committed(3, 1);
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        let mut progress: BTreeMap<u64, Option<LogId>> =
            matched.iter().map(|(id, i)| (*id, i.map(|i| LogId::new(CommittedLeaderId::new(3, 1), i)))).collect();
        progress.insert(1, Some(LogId::new(CommittedLeaderId::new(3, 1), 9)));
        m.replication = Some(progress);
        m
    }

    #[test]
    fn only_voters_holding_the_entry_before_are_sent_to() {
        let m = leader_metrics(&[(2, Some(9)), (3, Some(7)), (4, Some(9))]);
        assert_eq!(leader_vote(1, &m, &id(3, 1, 10)), Some(Vote::new_committed(3, 1)));
        let got = targets(1, &m, 10);
        // Node 3 is behind, node 4 is a learner, node 1 is this node.
        assert_eq!(got, vec![Target { id: 2, raft_addr: "127.0.0.2:4002".into(), prev: id(3, 1, 9) }]);
        // A follower with nothing replicated yet, or already past, is left alone too.
        let m = leader_metrics(&[(2, None), (3, Some(10))]);
        assert!(targets(1, &m, 10).is_empty());
        assert!(targets(1, &m, 0).is_empty());
    }

    /// An early send by node 1 in term 3 of the entries after `prev` up to `last`, carrying
    /// commit index `commit`.
    fn sent_by_3_1(prev: u64, last: u64, commit: u64) -> Sent {
        let (_, accepted) = watch::channel(None);
        let (prev, last, commit) = (id(3, 1, prev), id(3, 1, last), Some(id(3, 1, commit)));
        Sent { vote: Vote::new_committed(3, 1), prev, last, commit, append: 1, accepted }
    }

    #[test]
    fn only_the_same_entries_under_the_same_vote_take_an_early_answer() {
        let sent = sent_by_3_1(9, 11, 8);
        let vote = Vote::new_committed(3, 1);
        assert!(sent.carried(&vote, Some(&id(3, 1, 9)), &id(3, 1, 11)));
        // Fewer or more entries, another entry before, none before, or another vote: sent again.
        assert!(!sent.carried(&vote, Some(&id(3, 1, 9)), &id(3, 1, 10)));
        assert!(!sent.carried(&vote, Some(&id(3, 1, 9)), &id(3, 1, 12)));
        assert!(!sent.carried(&vote, Some(&id(3, 1, 8)), &id(3, 1, 11)));
        assert!(!sent.carried(&vote, None, &id(3, 1, 11)));
        assert!(!sent.carried(&Vote::new_committed(4, 1), Some(&id(3, 1, 9)), &id(3, 1, 11)));
    }

    #[test]
    fn an_early_send_covers_a_commit_index_it_carried_from_the_entry_the_follower_holds() {
        let sent = sent_by_3_1(9, 10, 9);
        let req = |vote, prev, commit| AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: prev,
            entries: Vec::new(),
            leader_commit: commit,
        };
        let vote = Vote::new_committed(3, 1);
        assert!(sent.covers(&req(vote, Some(id(3, 1, 9)), Some(id(3, 1, 9)))));
        assert!(sent.covers(&req(vote, Some(id(3, 1, 8)), Some(id(3, 1, 8)))));
        assert!(sent.covers(&req(vote, None, None)));
        // A newer commit index than it carried, an entry before it did not reach, another vote.
        assert!(!sent.covers(&req(vote, Some(id(3, 1, 9)), Some(id(3, 1, 10)))));
        assert!(!sent.covers(&req(vote, Some(id(3, 1, 10)), Some(id(3, 1, 9)))));
        assert!(!sent.covers(&req(Vote::new_committed(4, 1), Some(id(3, 1, 9)), Some(id(3, 1, 9)))));
    }

    #[test]
    fn only_a_voter_holding_every_entry_waits_for_the_next_early_send() {
        let m = leader_metrics(&[(2, Some(10)), (3, Some(10)), (4, Some(10))]);
        let req = |prev| AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(id(3, 1, prev)),
            entries: Vec::new(),
            leader_commit: Some(id(3, 1, 10)),
        };
        assert!(may_wait(&m, 2, &req(10), 10));
        // Entries still to send it; a learner (no early send ever goes to it).
        assert!(!may_wait(&m, 2, &req(9), 10));
        assert!(!may_wait(&m, 4, &req(10), 10));
    }

    #[test]
    fn entries_not_made_by_this_leader_are_never_sent() {
        let m = leader_metrics(&[(2, Some(9)), (3, Some(9))]);
        // Appended as a follower: another node's leader id.
        assert_eq!(leader_vote(1, &m, &id(3, 2, 10)), None);
        // An older term of this node's.
        assert_eq!(leader_vote(1, &m, &id(2, 1, 10)), None);
        // No longer the leader.
        let mut follower = m.clone();
        follower.state = ServerState::Follower;
        assert_eq!(leader_vote(1, &follower, &id(3, 1, 10)), None);
        // A vote not yet committed (a candidate).
        let mut candidate = m;
        candidate.vote = Vote::new(3, 1);
        assert_eq!(leader_vote(1, &candidate, &id(3, 1, 10)), None);
    }
}
