//! The read-consistency gate (docs/API.md §9): whether this node may answer a read at the
//! requested level itself, must wait (a restarted leader replaying its log), must confirm its
//! leadership with a quorum first (`linearizable`, and `strong` before it goes through the log),
//! or must hand the read to the leader (`forward`).

use std::sync::atomic::Ordering;
use std::time::Instant;

use http::StatusCode;
use warp::reply::Response;

use super::forward::{not_leader, Fwd};
use super::request::{Level, Params};
use super::respond::{result_envelope, text, unavailable};
use super::state::{leader_of, AppState, Core};
use crate::actors::consensus::{LinearizableBarrier, ProposeError};

/// The log index this node must apply before its local copy is as new as it was before the
/// restart: the last entry in the log at start, or less if a leader has since cut an
/// uncommitted tail away. Every entry in the log at start is either committed (and will be
/// applied once a leader is known) or truncated.
pub fn recovery_target(core: &Core, m: &crate::raft::Metrics) -> u64 {
    let at_start = core.stats.replay_bound.load(Ordering::Relaxed).saturating_sub(1);
    at_start.min(m.last_log_index.unwrap_or(0))
}

pub fn recovered(core: &Core, m: &crate::raft::Metrics) -> bool {
    core.stats.applied_index.load(Ordering::Relaxed) >= recovery_target(core, m)
}

/// Resolve `auto` and decide whether this node may serve a read at `level` locally.
pub async fn read_gate(state: &AppState, core: &Core, p: &Params, level: Level, fwd: &Fwd) -> Result<(), Response> {
    let m = core.metrics();
    let is_leader = m.current_leader == Some(core.node_id);
    let leader_node = leader_of(&m);
    let voter = m.membership_config.membership().voter_ids().any(|v| v == core.node_id);
    let level = match level {
        Level::Auto if voter => Level::Weak,
        Level::Auto => Level::None,
        l => l,
    };
    match level {
        Level::None | Level::Auto => {
            if let Some(fresh) = p.freshness.filter(|_| !is_leader) {
                let mut stale = state.since_leader_contact().map(|d| d > fresh).unwrap_or(true);
                if p.freshness_strict && !stale {
                    // Behind what the leader has committed: the data itself must be fresh too.
                    let applied = core.stats.applied_index.load(Ordering::Relaxed);
                    if applied < state.leader_commit_seen() {
                        let at = core.stats.last_applied_proposed_ms.load(Ordering::Relaxed);
                        let age = chrono::Utc::now().timestamp_millis().saturating_sub(at);
                        stale = at == 0 || age > fresh.as_millis() as i64;
                    }
                }
                if stale {
                    return Err(result_envelope(state, p, &[], Some("stale read"), Instant::now(), None));
                }
            }
            Ok(())
        }
        Level::Weak => {
            if is_leader {
                // Just restarted and still applying what it had logged: a weak read must not see
                // the database go back in time, so wait for the replay (a moment).
                if !recovered(core, &m) {
                    let target = recovery_target(core, &m);
                    let done =
                        core.raft.get().wait(Some(p.timeout)).applied_index_at_least(Some(target), "replay").await;
                    if done.is_err() {
                        return Err(text(state, StatusCode::SERVICE_UNAVAILABLE, "replaying the log; try again"));
                    }
                }
                Ok(())
            } else {
                Err(not_leader(state, p, leader_node, fwd).await)
            }
        }
        // A strong read goes through the log, but first the same leadership check as a
        // linearizable read, so that a leader without its quorum fails now, not at the apply timeout.
        Level::Linearizable | Level::Strong => {
            match core.consensus.send(LinearizableBarrier(p.linearizable_timeout)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(ProposeError::NotLeader { leader })) => Err(not_leader(state, p, leader, fwd).await),
                Ok(Err(e)) => Err(text(state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
                Err(e) => Err(unavailable(state, "consensus", e)),
            }
        }
    }
}
