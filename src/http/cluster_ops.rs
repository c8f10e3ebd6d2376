//! Cluster operations over the HTTP API: `/readyz` (docs/API.md §10), `/leader` (who leads, and
//! leadership transfer through the `Consensus` actor), `/remove` (through the `Membership`
//! actor), and `/debug/failpoints` in fault-injection builds.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, StatusCode};
use warp::reply::Response;

use super::consistency::{recovered, recovery_target};
use super::forward::{not_leader, Fwd};
use super::request::Params;
use super::respond::{core, empty, json, text, unavailable};
use super::state::{leader_of, AppState};
use super::status;
use crate::actors::consensus::{ProposeError, TransferLeadership};
use crate::actors::membership::{MembershipError, Remove};
use crate::actors::readers::Query;
use crate::cluster::ClusterReply;
use crate::raft::numeric_id;
use crate::store::command::{ExecOptions, Statement, StmtResult};
use crate::store::db::Mode;

pub async fn readyz(state: &AppState, p: &Params) -> Response {
    if p.noleader {
        return text(state, StatusCode::OK, "[+]node ok");
    }
    let Some(core) = state.core.get() else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "[+]node ok\n[-]store not ready");
    };
    if state.restore_pending.load(Ordering::Relaxed) {
        return text(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "[+]node ok\n[-]store not ready: auto-restore pending (loaded when this node leads)",
        );
    }
    let m = core.metrics();
    if let Err(e) = &m.running_state {
        return text(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("[+]node ok\n[-]store not ok: raft stopped: {e}"),
        );
    }
    let Some(leader) = leader_of(&m) else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "[+]node ok\n[-]leader not ok");
    };
    if !recovered(core, &m) {
        let applied = core.stats.applied_index.load(Ordering::Relaxed);
        let msg = format!(
            "[+]node ok\n[+]leader ok\n[-]store not ok: replaying the log (applied {applied} of {})",
            recovery_target(core, &m)
        );
        return text(state, StatusCode::SERVICE_UNAVAILABLE, &msg);
    }
    let mut lines = vec!["[+]node ok", "[+]leader ok"];
    // The leader must be reachable over the cluster service (unless it is this node).
    let leader_commit = if m.current_leader == Some(core.node_id) {
        m.last_applied.map(|l| l.index).unwrap_or(0)
    } else {
        match core
            .peers
            .call::<_, ClusterReply>(&leader.raft_addr, "/cluster/meta", &(), p.timeout.min(Duration::from_secs(5)))
            .await
        {
            Ok(ClusterReply::Meta(meta)) => meta.commit_index,
            _ => return text(state, StatusCode::SERVICE_UNAVAILABLE, "[+]node ok\n[-]leader not contactable"),
        }
    };
    if p.has("sync") {
        let caught_up = core
            .raft
            .get()
            .wait(Some(p.timeout))
            .metrics(|m| m.last_applied.map(|l| l.index).unwrap_or(0) >= leader_commit, "caught up with the leader")
            .await;
        if caught_up.is_err() {
            return text(state, StatusCode::SERVICE_UNAVAILABLE, "[+]node ok\n[+]leader ok\n[-]sync not ok");
        }
    }
    let probe = Query {
        stmts: vec![Statement::new("SELECT 1")],
        opts: ExecOptions::default(),
        mode: Mode::Query,
        deadline: Some(p.timeout),
        cancel: None,
    };
    match core.readers.send(probe).await {
        Ok(Ok(r)) if !matches!(r.first(), Some(StmtResult::Error { .. })) => {
            lines.push("[+]store ok");
            if p.has("sync") {
                lines.push("[+]sync ok");
            }
            text(state, StatusCode::OK, &lines.join("\n"))
        }
        _ => text(state, StatusCode::SERVICE_UNAVAILABLE, "[+]node ok\n[+]leader ok\n[-]db not ok"),
    }
}

/// `GET /leader` names the leader; `POST /leader` transfers leadership.
pub async fn leader(state: &AppState, p: &Params, fwd: &Fwd) -> Response {
    let core = match core(state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let m = core.metrics();
    let leader_node = leader_of(&m);
    if fwd.method == Method::POST {
        if m.current_leader != Some(core.node_id) {
            return not_leader(state, p, leader_node, fwd).await;
        }
        let json_body = fwd
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.starts_with("application/json"))
            .unwrap_or(false);
        let target = if json_body && !fwd.body.is_empty() {
            match serde_json::from_slice::<serde_json::Value>(&fwd.body) {
                Ok(v) => v.get("id").and_then(|i| i.as_str()).map(numeric_id),
                Err(_) => return text(state, StatusCode::BAD_REQUEST, "invalid JSON body"),
            }
        } else {
            None
        };
        // A target that is not a voter here is the client's mistake, not the service's.
        let mem = m.membership_config.membership();
        if let Some(t) = target.filter(|t| !mem.voter_ids().any(|v| v == *t) || *t == core.node_id) {
            let why = if t == core.node_id { "is already the leader" } else { "is not a voter of this cluster" };
            return text(state, StatusCode::BAD_REQUEST, &format!("the target node {why}"));
        }
        if target.is_none() && mem.voter_ids().count() < 2 {
            return text(state, StatusCode::BAD_REQUEST, "no other voter to hand leadership to");
        }
        return match core.consensus.send(TransferLeadership { target, wait: p.has("wait") }).await {
            Ok(Ok(())) => empty(state, StatusCode::OK),
            Ok(Err(ProposeError::NotLeader { leader })) => not_leader(state, p, leader, fwd).await,
            Ok(Err(e)) => text(state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            Err(e) => unavailable(state, "consensus", e),
        };
    }
    match m.current_leader {
        Some(id) => match status::probe_node(state, core, &m, id, p.timeout).await {
            Some(j) => json(state, &j, p.pretty),
            None => text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found"),
        },
        None => text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found"),
    }
}

/// `DELETE /remove` with `{"id":"<node id>"}`.
pub async fn remove(state: &AppState, p: &Params, fwd: &Fwd) -> Response {
    let id = match serde_json::from_slice::<serde_json::Value>(&fwd.body) {
        Ok(serde_json::Value::Object(o)) if o.len() == 1 => match o.get("id") {
            Some(serde_json::Value::String(id)) => id.clone(),
            _ => return text(state, StatusCode::BAD_REQUEST, "invalid request: want {\"id\":\"<node id>\"}"),
        },
        _ => return text(state, StatusCode::BAD_REQUEST, "invalid request: want {\"id\":\"<node id>\"}"),
    };
    let core = match core(state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match core.membership.send(Remove(id)).await {
        Ok(Ok(())) => empty(state, StatusCode::OK),
        Ok(Err(MembershipError::NotLeader { .. })) => not_leader(state, p, core.leader(), fwd).await,
        Ok(Err(e @ MembershipError::UnknownNode(_))) => text(state, StatusCode::NOT_FOUND, &e.to_string()),
        Ok(Err(e @ MembershipError::Refused(_))) => text(state, StatusCode::BAD_REQUEST, &e.to_string()),
        // A fault, or Raft could not make the change now: worth retrying.
        Ok(Err(e)) => text(state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(e) => unavailable(state, "membership", e),
    }
}

/// `POST /debug/failpoints` with `name=actions` lines (builds with the `failpoints` feature only):
/// configure fault injection at run time, e.g. `applier::before_commit=1*panic`.
pub fn set_failpoints(state: &AppState, body: &[u8]) -> Response {
    let spec = String::from_utf8_lossy(body);
    for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((name, actions)) = line.split_once('=') else {
            return text(state, StatusCode::BAD_REQUEST, &format!("want name=actions, got {line:?}"));
        };
        if let Err(e) = fail::cfg(name.trim(), actions.trim()) {
            return text(state, StatusCode::BAD_REQUEST, &format!("{name}: {e}"));
        }
        tracing::warn!(failpoint = %name, actions = %actions, "failpoint configured");
    }
    empty(state, StatusCode::OK)
}
