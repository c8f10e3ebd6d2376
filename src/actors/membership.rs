//! The `Membership` actor: the leader's side of joining and removing nodes (docs/API.md §11), a
//! node leaving its cluster on shutdown, and the `-bootstrap-expect` notify bookkeeping.
//! Membership changes are handled one at a time, because openraft admits one configuration
//! change in flight. On the leader it also reaps nodes unreachable for longer than
//! `-raft-reap-node-timeout` (voters) or `-raft-reap-read-only-node-timeout` (non-voters), as
//! rqlite does: a node counts as reachable while it answers this node's calls (`Peers`).
//! Replies are typed ([`MembershipError`]); the inter-node service turns them
//! into its wire form (`ClusterReply`) at the edge.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use crate::actors::supervise::{guard, note_restart, trip, Fault};
use crate::cluster::client::Peers;
use crate::cluster::{ClusterReply, JoinRequest, NotifyRequest, RemoveRequest};
use crate::raft::{leader_of, numeric_id, wait_replicated, NodeInfo, Raft, SharedRaft};

const ACTOR: &str = "membership";

/// Counters shown in `/status` (rqlite's names).
#[derive(Default, Debug)]
pub struct ClusterStats {
    pub num_join_req: AtomicU64,
    pub num_ignored_joins: AtomicU64,
    pub num_removed_before_joins: AtomicU64,
    pub num_remove_req: AtomicU64,
    pub num_notify_req: AtomicU64,
    pub num_reaped: AtomicU64,
}

/// How long a node may be unreachable before the leader removes it; zero: never.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reaping {
    pub voters: Duration,
    pub non_voters: Duration,
}

/// How often the leader looks for nodes to reap.
const REAP_CHECK: Duration = Duration::from_millis(500);

/// Why a membership change did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MembershipError {
    /// Only the leader changes the membership; this is the leader's Raft address, if known.
    #[error("not leader")]
    NotLeader { leader_raft_addr: Option<String> },
    /// The request is not valid for this cluster (removing the leader to admit a joiner).
    #[error("{0}")]
    Refused(String),
    /// No node of the cluster has this id.
    #[error("node {0} is not a member of the cluster")]
    UnknownNode(String),
    /// Raft could not make the change (a timeout, a node that did not catch up).
    #[error("{0}")]
    Failed(String),
    /// The actor failed on this request and is restarting.
    #[error("{0}")]
    Fault(#[from] Fault),
}

pub type MembershipResult = Result<(), MembershipError>;

impl From<MembershipResult> for ClusterReply {
    fn from(r: MembershipResult) -> ClusterReply {
        match r {
            Ok(()) => ClusterReply::Ok,
            Err(MembershipError::NotLeader { leader_raft_addr }) => ClusterReply::NotLeader { leader_raft_addr },
            Err(e) => ClusterReply::Error(e.to_string()),
        }
    }
}

pub struct Membership {
    raft: SharedRaft,
    node_id: u64,
    peers: Arc<Peers>,
    stats: Arc<ClusterStats>,
    /// `-bootstrap-expect`: how many distinct nodes must have notified before bootstrapping.
    bootstrap_expect: usize,
    notified: BTreeMap<u64, NodeInfo>,
    reaping: Reaping,
    /// Since when this node has led without a break (reaping counts from then at the earliest).
    leading_since: Option<Instant>,
}

impl Membership {
    pub fn new(
        raft: SharedRaft,
        node_id: u64,
        me: NodeInfo,
        peers: Arc<Peers>,
        bootstrap_expect: usize,
        stats: Arc<ClusterStats>,
        reaping: Reaping,
    ) -> Self {
        let mut notified = BTreeMap::new();
        notified.insert(node_id, me);
        Membership { raft, node_id, peers, stats, bootstrap_expect, notified, reaping, leading_since: None }
    }

    /// On the leader: the ids of nodes unreachable for longer than their reap timeout.
    fn unreachable(&mut self) -> Vec<String> {
        let m = self.raft.get().metrics().borrow().clone();
        if m.current_leader != Some(self.node_id) {
            self.leading_since = None;
            return Vec::new();
        }
        let now = Instant::now();
        let since = *self.leading_since.get_or_insert(now);
        let mem = m.membership_config.membership();
        mem.nodes()
            .filter(|(id, _)| **id != self.node_id)
            .filter_map(|(id, n)| {
                let limit =
                    if mem.voter_ids().any(|v| v == *id) { self.reaping.voters } else { self.reaping.non_voters };
                let heard = self.peers.last_answer(&n.raft_addr).map_or(since, |t| t.max(since));
                (!limit.is_zero() && now.duration_since(heard) > limit).then(|| n.id.clone())
            })
            .collect()
    }
}

impl Actor for Membership {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.reaping.voters.is_zero() && self.reaping.non_voters.is_zero() {
            return;
        }
        ctx.run_interval(REAP_CHECK, |act, ctx| {
            let found = guard(ctx, ACTOR, |_| Ok(act.unreachable()));
            for id in found.unwrap_or_default() {
                ctx.notify(Reap(id));
            }
        });
    }
}

impl Supervised for Membership {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        note_restart(ACTOR);
    }
}

/// On the leader: add a node (or update its address), as a voter once it has caught up.
#[derive(Message)]
#[rtype(result = "MembershipResult")]
pub struct Join(pub JoinRequest);

/// On the leader: remove a node by its id.
#[derive(Message)]
#[rtype(result = "MembershipResult")]
pub struct Remove(pub String);

/// On the leader: remove a node found unreachable for longer than its reap timeout.
#[derive(Message)]
#[rtype(result = "MembershipResult")]
struct Reap(String);

/// Another node says it exists (`-bootstrap-expect`); bootstrap once enough have.
#[derive(Message)]
#[rtype(result = "MembershipResult")]
pub struct Notify(pub NotifyRequest);

/// Remove this node (its id) from its cluster through whichever node leads
/// (`-raft-cluster-remove-shutdown`).
#[derive(Message)]
#[rtype(result = "MembershipResult")]
pub struct Leave(pub String);

fn leader_addr(raft: &Raft) -> Option<String> {
    leader_of(&raft.metrics().borrow()).map(|n| n.raft_addr)
}

fn write_err(raft: &Raft, e: RaftError<u64, ClientWriteError<u64, NodeInfo>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipError::NotLeader {
            leader_raft_addr: f.leader_node.map(|n| n.raft_addr).or_else(|| leader_addr(raft)),
        },
        other => MembershipError::Failed(other.to_string()),
    }
}

async fn join(raft: Raft, me: u64, req: JoinRequest, stats: Arc<ClusterStats>) -> MembershipResult {
    stats.num_join_req.fetch_add(1, Ordering::Relaxed);
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(me) {
        return Err(MembershipError::NotLeader { leader_raft_addr: leader_addr(&raft) });
    }
    let nid = numeric_id(&req.id);
    let mem = m.membership_config.membership().clone();
    let is_voter = mem.voter_ids().any(|v| v == nid);
    // Same id and address: nothing to do (a restarted node rejoining).
    if let Some(n) = mem.get_node(&nid) {
        if n.raft_addr == req.raft_addr && (is_voter || !req.voter) {
            stats.num_ignored_joins.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    }
    // Same id with a new address, or another id at this address: remove the old entry first.
    let stale: BTreeSet<u64> = mem
        .nodes()
        .filter(|(id, n)| {
            (**id == nid && n.raft_addr != req.raft_addr) || (**id != nid && n.raft_addr == req.raft_addr)
        })
        .map(|(id, _)| *id)
        .collect();
    if !stale.is_empty() {
        if stale.contains(&me) {
            return Err(MembershipError::Refused("refusing to remove the leader to admit a joining node".into()));
        }
        stats.num_removed_before_joins.fetch_add(1, Ordering::Relaxed);
        let voters: BTreeSet<u64> = stale.iter().copied().filter(|id| mem.voter_ids().any(|v| v == *id)).collect();
        if !voters.is_empty() {
            if let Err(e) = raft.change_membership(ChangeMembers::RemoveVoters(voters), false).await {
                return Err(write_err(&raft, e));
            }
        }
        if let Err(e) = raft.change_membership(ChangeMembers::RemoveNodes(stale), false).await {
            return Err(write_err(&raft, e));
        }
    }
    let node = NodeInfo { id: req.id.clone(), raft_addr: req.raft_addr.clone(), api_addr: req.api_addr.clone() };
    tracing::info!(node = %node, voter = req.voter, "adding node");
    let mut add = BTreeMap::new();
    add.insert(nid, node);
    if let Err(e) = raft.change_membership(ChangeMembers::SetNodes(add), true).await {
        return Err(write_err(&raft, e));
    }
    // Wait for the learner to catch up before it can count toward a quorum.
    let target = raft.metrics().borrow().last_log_index.unwrap_or(0);
    let caught_up = wait_replicated(&raft, nid, target, std::time::Duration::from_secs(120)).await;
    if let Err(e) = caught_up {
        return Err(MembershipError::Failed(format!("node {} did not catch up: {e}", req.id)));
    }
    if req.voter {
        let mut ids = BTreeSet::new();
        ids.insert(nid);
        if let Err(e) = raft.change_membership(ChangeMembers::AddVoterIds(ids), false).await {
            return Err(write_err(&raft, e));
        }
    }
    Ok(())
}

async fn remove(raft: Raft, me: u64, id: String, peers: Arc<Peers>, stats: Arc<ClusterStats>) -> MembershipResult {
    stats.num_remove_req.fetch_add(1, Ordering::Relaxed);
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(me) {
        return Err(MembershipError::NotLeader { leader_raft_addr: leader_addr(&raft) });
    }
    let nid = numeric_id(&id);
    let mem = m.membership_config.membership().clone();
    if mem.get_node(&nid).is_none() {
        return Err(MembershipError::UnknownNode(id));
    }
    tracing::info!(node = %id, "removing node");
    if mem.voter_ids().any(|v| v == nid) {
        let mut ids = BTreeSet::new();
        ids.insert(nid);
        if let Err(e) = raft.change_membership(ChangeMembers::RemoveVoters(ids), false).await {
            return Err(write_err(&raft, e));
        }
    }
    // The leader may have removed itself as a voter; it then is no longer leader.
    let mut ids = BTreeSet::new();
    ids.insert(nid);
    match raft.change_membership(ChangeMembers::RemoveNodes(ids), false).await {
        Ok(_) => {}
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) if nid == me => return Ok(()),
        Err(e) => return Err(write_err(&raft, e)),
    }
    // The removed node may never receive the entry that removes it: tell it (it shuts down if
    // started with -raft-remove-shutdown). Best effort: it may be down, which is often why.
    if let Some(node) = mem.get_node(&nid).filter(|_| nid != me) {
        let req = RemoveRequest { id };
        let told = peers.call::<_, ClusterReply>(&node.raft_addr, "/cluster/removed", &req, Duration::from_secs(2));
        if let Err(e) = told.await {
            tracing::debug!(node = %req.id, error = %e, "could not tell a removed node");
        }
    }
    Ok(())
}

/// Remove `id` through whichever node leads: here if this node leads, else over the cluster
/// service.
async fn leave(raft: Raft, me: u64, id: String, peers: Arc<Peers>, stats: Arc<ClusterStats>) -> MembershipResult {
    let leader = leader_of(&raft.metrics().borrow()).ok_or(MembershipError::NotLeader { leader_raft_addr: None })?;
    if numeric_id(&leader.id) == me {
        return remove(raft, me, id, peers, stats).await;
    }
    let req = RemoveRequest { id };
    match peers.call::<_, ClusterReply>(&leader.raft_addr, "/cluster/remove", &req, Duration::from_secs(10)).await {
        Ok(ClusterReply::Ok) => Ok(()),
        Ok(ClusterReply::NotLeader { leader_raft_addr }) => Err(MembershipError::NotLeader { leader_raft_addr }),
        Ok(other) => Err(MembershipError::Failed(format!("{other:?}"))),
        Err(e) => Err(MembershipError::Failed(e.to_string())),
    }
}

/// A membership change, run to completion before the next message (one change in flight).
fn change(
    act: &mut Membership,
    ctx: &mut Context<Membership>,
    f: impl FnOnce(&mut Membership) -> Pin<Box<dyn Future<Output = MembershipResult>>>,
) -> AtomicResponse<Membership, MembershipResult> {
    match guard(ctx, ACTOR, |_| trip(ACTOR, "membership::change")) {
        Ok(()) => {
            let fut = f(act);
            AtomicResponse::new(Box::pin(fut.into_actor(act)))
        }
        Err(fault) => AtomicResponse::new(Box::pin(async move { Err(fault.into()) }.into_actor(act))),
    }
}

impl Handler<Join> for Membership {
    type Result = AtomicResponse<Self, MembershipResult>;
    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        change(self, ctx, |act| Box::pin(join(act.raft.get(), act.node_id, msg.0, act.stats.clone())))
    }
}

impl Handler<Remove> for Membership {
    type Result = AtomicResponse<Self, MembershipResult>;
    fn handle(&mut self, msg: Remove, ctx: &mut Context<Self>) -> Self::Result {
        change(self, ctx, |act| {
            Box::pin(remove(act.raft.get(), act.node_id, msg.0, act.peers.clone(), act.stats.clone()))
        })
    }
}

impl Handler<Reap> for Membership {
    type Result = AtomicResponse<Self, MembershipResult>;
    fn handle(&mut self, msg: Reap, ctx: &mut Context<Self>) -> Self::Result {
        // Found unreachable a moment ago; it may have answered since, or already be gone.
        if !self.unreachable().contains(&msg.0) {
            return AtomicResponse::new(Box::pin(async { Ok(()) }.into_actor(self)));
        }
        tracing::warn!(node = %msg.0, "reaping a node unreachable for longer than its reap timeout");
        self.stats.num_reaped.fetch_add(1, Ordering::Relaxed);
        let stats = self.stats.clone();
        change(self, ctx, |act| Box::pin(remove(act.raft.get(), act.node_id, msg.0, act.peers.clone(), stats)))
    }
}

impl Handler<Leave> for Membership {
    type Result = AtomicResponse<Self, MembershipResult>;
    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) -> Self::Result {
        change(self, ctx, |act| {
            Box::pin(leave(act.raft.get(), act.node_id, msg.0, act.peers.clone(), act.stats.clone()))
        })
    }
}

impl Handler<Notify> for Membership {
    type Result = AtomicResponse<Self, MembershipResult>;
    fn handle(&mut self, msg: Notify, ctx: &mut Context<Self>) -> Self::Result {
        let noted = guard(ctx, ACTOR, |_| {
            self.stats.num_notify_req.fetch_add(1, Ordering::Relaxed);
            let n = msg.0;
            let nid = numeric_id(&n.id);
            self.notified.insert(nid, NodeInfo { id: n.id, raft_addr: n.raft_addr, api_addr: n.api_addr });
            Ok(())
        });
        if let Err(f) = noted {
            return AtomicResponse::new(Box::pin(async move { Err(f.into()) }.into_actor(self)));
        }
        let raft = self.raft.get();
        let ready = self.bootstrap_expect > 0 && self.notified.len() >= self.bootstrap_expect;
        let members = self.notified.clone();
        AtomicResponse::new(Box::pin(
            async move {
                if ready && !raft.is_initialized().await.unwrap_or(true) {
                    tracing::info!(nodes = members.len(), "bootstrap-expect reached: bootstrapping the cluster");
                    if let Err(e) = raft.initialize(members).await {
                        tracing::warn!(error = %e, "bootstrap");
                    }
                }
                Ok(())
            }
            .into_actor(self),
        ))
    }
}
