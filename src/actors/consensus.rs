//! The `Consensus` actor: owns the `openraft::Raft` handle. Writes and strong reads are proposed
//! through it; linearizable reads wait on its read barrier. openraft's own tasks (RaftCore, the
//! state-machine worker, replication) run on the tokio worker threads; this actor is the typed
//! front door to them.

use std::time::Duration;

use actix::prelude::*;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};

use crate::actors::supervise::note_restart;
use crate::raft::{NodeInfo, Raft};
use crate::store::command::{Command, Response};

const ACTOR: &str = "consensus";

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProposeError {
    #[error("not leader")]
    NotLeader { leader: Option<NodeInfo> },
    #[error("timeout waiting for raft")]
    Timeout,
    #[error("{0}")]
    Failed(String),
    /// Raft stopped (a storage error): this node cannot take writes until it is restarted.
    #[error("raft stopped: {0}")]
    Stopped(String),
}

pub struct Consensus {
    raft: Raft,
    apply_timeout: Duration,
}

impl Consensus {
    pub fn new(raft: Raft, apply_timeout: Duration) -> Self {
        Consensus { raft, apply_timeout }
    }
}

impl Actor for Consensus {
    type Context = Context<Self>;
}

impl Supervised for Consensus {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        note_restart(ACTOR);
    }
}

/// Propose one command (one log entry) and wait for its applied result.
#[derive(Message)]
#[rtype(result = "Result<Response, ProposeError>")]
pub struct Propose(pub Command);

/// Wait until this node, as leader, has confirmed leadership with a quorum and applied
/// everything committed before the call (openraft's `ensure_linearizable`).
#[derive(Message)]
#[rtype(result = "Result<(), ProposeError>")]
pub struct LinearizableBarrier(pub Duration);

/// A handle to the Raft node, for metrics.
#[derive(Message)]
#[rtype(result = "Raft")]
pub struct GetRaft;

impl Handler<Propose> for Consensus {
    type Result = ResponseFuture<Result<Response, ProposeError>>;
    fn handle(&mut self, msg: Propose, _ctx: &mut Context<Self>) -> Self::Result {
        let raft = self.raft.clone();
        let timeout = self.apply_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, raft.client_write(msg.0)).await {
                Err(_) => Err(ProposeError::Timeout),
                Ok(Ok(resp)) => Ok(resp.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    Err(ProposeError::NotLeader { leader: f.leader_node })
                }
                Ok(Err(RaftError::Fatal(f))) => Err(ProposeError::Stopped(f.to_string())),
                Ok(Err(e)) => Err(ProposeError::Failed(e.to_string())),
            }
        })
    }
}

impl Handler<LinearizableBarrier> for Consensus {
    type Result = ResponseFuture<Result<(), ProposeError>>;
    fn handle(&mut self, msg: LinearizableBarrier, _ctx: &mut Context<Self>) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move {
            match tokio::time::timeout(msg.0, raft.ensure_linearizable()).await {
                Err(_) => Err(ProposeError::Failed("timeout waiting for fsm".into())),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    Err(ProposeError::NotLeader { leader: f.leader_node })
                }
                Ok(Err(e)) => Err(ProposeError::Failed(e.to_string())),
            }
        })
    }
}

impl Handler<GetRaft> for Consensus {
    type Result = MessageResult<GetRaft>;
    fn handle(&mut self, _msg: GetRaft, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.raft.clone())
    }
}
