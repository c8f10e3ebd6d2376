//! The `Membership` actor: the leader's side of joining and removing nodes (spec §11), and the
//! `-bootstrap-expect` notify bookkeeping. Membership changes are handled one at a time, because
//! openraft admits one configuration change in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use crate::actors::supervise::{note_restart, trip};
use crate::cluster::{ClusterReply, JoinRequest, NotifyRequest};
use crate::raft::{numeric_id, wait_replicated, NodeInfo, Raft, SharedRaft};

const ACTOR: &str = "membership";

/// Counters shown in `/status` (rqlite's names).
#[derive(Default, Debug)]
pub struct ClusterStats {
    pub num_join_req: AtomicU64,
    pub num_ignored_joins: AtomicU64,
    pub num_removed_before_joins: AtomicU64,
    pub num_remove_req: AtomicU64,
    pub num_notify_req: AtomicU64,
}

pub struct Membership {
    raft: SharedRaft,
    node_id: u64,
    stats: Arc<ClusterStats>,
    /// `-bootstrap-expect`: how many distinct nodes must have notified before bootstrapping.
    bootstrap_expect: usize,
    notified: BTreeMap<u64, NodeInfo>,
}

impl Membership {
    pub fn new(
        raft: SharedRaft,
        node_id: u64,
        me: NodeInfo,
        bootstrap_expect: usize,
        stats: Arc<ClusterStats>,
    ) -> Self {
        let mut notified = BTreeMap::new();
        notified.insert(node_id, me);
        Membership { raft, node_id, stats, bootstrap_expect, notified }
    }
}

impl Actor for Membership {
    type Context = Context<Self>;
}

impl Supervised for Membership {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        note_restart(ACTOR);
    }
}

#[derive(Message)]
#[rtype(result = "ClusterReply")]
pub struct Join(pub JoinRequest);

#[derive(Message)]
#[rtype(result = "ClusterReply")]
pub struct Remove(pub String);

#[derive(Message)]
#[rtype(result = "ClusterReply")]
pub struct Notify(pub NotifyRequest);

fn leader_addr(raft: &Raft) -> Option<String> {
    let m = raft.metrics().borrow().clone();
    m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.raft_addr.clone()))
}

fn write_err(raft: &Raft, e: RaftError<u64, ClientWriteError<u64, NodeInfo>>) -> ClusterReply {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ClusterReply::NotLeader {
            leader_raft_addr: f.leader_node.map(|n| n.raft_addr).or_else(|| leader_addr(raft)),
        },
        other => ClusterReply::Error(other.to_string()),
    }
}

async fn join(raft: Raft, me: u64, req: JoinRequest, stats: Arc<ClusterStats>) -> ClusterReply {
    stats.num_join_req.fetch_add(1, Ordering::Relaxed);
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(me) {
        return ClusterReply::NotLeader { leader_raft_addr: leader_addr(&raft) };
    }
    let nid = numeric_id(&req.id);
    let mem = m.membership_config.membership().clone();
    let is_voter = mem.voter_ids().any(|v| v == nid);
    // Same id and address: nothing to do (a restarted node rejoining).
    if let Some(n) = mem.get_node(&nid) {
        if n.raft_addr == req.raft_addr && (is_voter || !req.voter) {
            stats.num_ignored_joins.fetch_add(1, Ordering::Relaxed);
            return ClusterReply::Ok;
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
            return ClusterReply::Error("refusing to remove the leader to admit a joining node".into());
        }
        stats.num_removed_before_joins.fetch_add(1, Ordering::Relaxed);
        let voters: BTreeSet<u64> = stale.iter().copied().filter(|id| mem.voter_ids().any(|v| v == *id)).collect();
        if !voters.is_empty() {
            if let Err(e) = raft.change_membership(ChangeMembers::RemoveVoters(voters), false).await {
                return write_err(&raft, e);
            }
        }
        if let Err(e) = raft.change_membership(ChangeMembers::RemoveNodes(stale), false).await {
            return write_err(&raft, e);
        }
    }
    let node = NodeInfo { id: req.id.clone(), raft_addr: req.raft_addr.clone(), api_addr: req.api_addr.clone() };
    tracing::info!(node = %node, voter = req.voter, "adding node");
    let mut add = BTreeMap::new();
    add.insert(nid, node);
    if let Err(e) = raft.change_membership(ChangeMembers::SetNodes(add), true).await {
        return write_err(&raft, e);
    }
    // Wait for the learner to catch up before it can count toward a quorum.
    let target = raft.metrics().borrow().last_log_index.unwrap_or(0);
    let caught_up = wait_replicated(&raft, nid, target, std::time::Duration::from_secs(120)).await;
    if let Err(e) = caught_up {
        return ClusterReply::Error(format!("node {} did not catch up: {e}", req.id));
    }
    if req.voter {
        let mut ids = BTreeSet::new();
        ids.insert(nid);
        if let Err(e) = raft.change_membership(ChangeMembers::AddVoterIds(ids), false).await {
            return write_err(&raft, e);
        }
    }
    ClusterReply::Ok
}

async fn remove(raft: Raft, me: u64, id: String, stats: Arc<ClusterStats>) -> ClusterReply {
    stats.num_remove_req.fetch_add(1, Ordering::Relaxed);
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(me) {
        return ClusterReply::NotLeader { leader_raft_addr: leader_addr(&raft) };
    }
    let nid = numeric_id(&id);
    let mem = m.membership_config.membership().clone();
    if mem.get_node(&nid).is_none() {
        return ClusterReply::Error(format!("node {id} is not a member of the cluster"));
    }
    tracing::info!(node = %id, "removing node");
    if mem.voter_ids().any(|v| v == nid) {
        let mut ids = BTreeSet::new();
        ids.insert(nid);
        if let Err(e) = raft.change_membership(ChangeMembers::RemoveVoters(ids), false).await {
            return write_err(&raft, e);
        }
    }
    // The leader may have removed itself as a voter; it then is no longer leader.
    let mut ids = BTreeSet::new();
    ids.insert(nid);
    match raft.change_membership(ChangeMembers::RemoveNodes(ids), false).await {
        Ok(_) => ClusterReply::Ok,
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) if nid == me => ClusterReply::Ok,
        Err(e) => write_err(&raft, e),
    }
}

impl Handler<Join> for Membership {
    type Result = AtomicResponse<Self, ClusterReply>;
    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(f) = trip(ACTOR, "membership::change") {
            ctx.stop();
            return AtomicResponse::new(Box::pin(async move { ClusterReply::Error(f.to_string()) }.into_actor(self)));
        }
        let fut = join(self.raft.get(), self.node_id, msg.0, self.stats.clone());
        AtomicResponse::new(Box::pin(fut.into_actor(self)))
    }
}

impl Handler<Remove> for Membership {
    type Result = AtomicResponse<Self, ClusterReply>;
    fn handle(&mut self, msg: Remove, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(f) = trip(ACTOR, "membership::change") {
            ctx.stop();
            return AtomicResponse::new(Box::pin(async move { ClusterReply::Error(f.to_string()) }.into_actor(self)));
        }
        let fut = remove(self.raft.get(), self.node_id, msg.0, self.stats.clone());
        AtomicResponse::new(Box::pin(fut.into_actor(self)))
    }
}

impl Handler<Notify> for Membership {
    type Result = AtomicResponse<Self, ClusterReply>;
    fn handle(&mut self, msg: Notify, _ctx: &mut Context<Self>) -> Self::Result {
        self.stats.num_notify_req.fetch_add(1, Ordering::Relaxed);
        let n = msg.0;
        let nid = numeric_id(&n.id);
        self.notified.insert(nid, NodeInfo { id: n.id, raft_addr: n.raft_addr, api_addr: n.api_addr });
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
                ClusterReply::Ok
            }
            .into_actor(self),
        ))
    }
}
