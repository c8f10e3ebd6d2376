//! The inter-node listener on `-raft-addr` (docs/DESIGN.md §8): Raft RPCs (`/raft/append`,
//! `/raft/vote`, `/raft/snapshot`, `/raft/snapshot-gz`, and the pre-vote `/raft/prevote`) and the
//! cluster service (`/cluster/join`, `/cluster/notify`, `/cluster/remove`, `/cluster/removed`,
//! `/cluster/meta`, `/cluster/elect`). Bodies are codec-encoded and capped; garbage gets a 400,
//! never a crash.

use std::sync::Arc;

use bytes::Buf;
use http::{HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use warp::reply::Response;
use warp::Filter;

use super::auth::Denied;
use super::body::{read_body, read_frames, BodyStream};
use super::endpoint::Permission;
use super::state::{AppState, VERSION};
use crate::actors::membership::{Join, MembershipResult, Notify, Remove};
use crate::cluster::{ClusterReply, JoinRequest, NodeMeta, NotifyRequest, RemoveRequest};
use crate::store::codec;

/// Largest inter-node request body (a snapshot chunk or a batch of log entries).
const MAX_FRAME: u64 = codec::MAX_DECODE_BYTES;

fn reply(code: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = code;
    r
}

fn encoded<T: Serialize>(v: &T) -> Response {
    match codec::encode(v) {
        Ok(b) => {
            metrics::counter!("raftlite_internode_bytes_out_total").increment(b.len() as u64);
            reply(StatusCode::OK, b)
        }
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string().into_bytes()),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    codec::decode(body).map_err(|e| reply(StatusCode::BAD_REQUEST, format!("bad request body: {e}").into_bytes()))
}

/// The wire form of a membership change's outcome.
/// With `-auth`, the cluster service's membership calls need the caller node's credentials
/// (`-join-as`) to carry these permissions (docs/API.md §14, §11).
fn permitted(state: &AppState, headers: &HeaderMap, needed: &[Permission]) -> Result<(), Denied> {
    match &state.auth {
        Some(users) => users.check(headers, needed).map(|_| ()),
        None => Ok(()),
    }
}

/// The cluster service's answer to a call without the permission it needs.
fn refused(d: Denied) -> Response {
    metrics::counter!("raftlite_http_auth_failures_total", "reason" => d.reason()).increment(1);
    encoded(&ClusterReply::Error(format!("not authorized ({})", d.reason())))
}

fn membership_reply(r: Result<MembershipResult, actix::MailboxError>) -> ClusterReply {
    match r {
        Ok(r) => r.into(),
        Err(e) => ClusterReply::Error(format!("membership unavailable: {e}")),
    }
}

pub async fn serve(state: Arc<AppState>, listener: tokio::net::TcpListener) {
    let state_limits = state.cfg.clone();
    let tls = state.node_tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
    let st = warp::any().map(move || state.clone());
    let route = st
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(|state, method, path: warp::path::FullPath, headers, body| async move {
            let path = path.as_str().to_string();
            let fut = std::panic::AssertUnwindSafe(handle(state, method, path, headers, Box::pin(body)));
            match futures::FutureExt::catch_unwind(fut).await {
                Ok(r) => r,
                Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, b"internal error".to_vec()),
            }
        });
    let limits = super::server::Limits::of(&state_limits);
    super::server::accept_loop(route, listener, limits, tls, "raft").await;
}

async fn handle<B: Buf + Send>(
    state: Arc<AppState>,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: BodyStream<B>,
) -> Response {
    if method != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, Vec::new());
    }
    fail::fail_point!("internode::receive", |_| reply(StatusCode::SERVICE_UNAVAILABLE, b"failpoint".to_vec()));
    let known = matches!(
        path.as_str(),
        "/raft/append"
            | "/raft/vote"
            | "/raft/prevote"
            | "/raft/snapshot"
            | "/raft/snapshot-gz"
            | "/cluster/join"
            | "/cluster/notify"
            | "/cluster/remove"
            | "/cluster/removed"
            | "/cluster/meta"
            | "/cluster/elect"
            | "/cluster/execute"
    );
    if !known {
        return reply(StatusCode::NOT_FOUND, Vec::new());
    }
    // A snapshot chunk is taken apart from the pieces it came in (one copy of its 16 MiB, not two).
    let is_chunk = path.starts_with("/raft/snapshot");
    let stall = state.cfg.http_header_timeout;
    let (body, frames) = if is_chunk {
        match read_frames(&headers, body, MAX_FRAME, stall).await {
            Ok(f) => (Vec::new(), f),
            Err(code) => return reply(code, Vec::new()),
        }
    } else {
        match read_body(&headers, body, MAX_FRAME, stall).await {
            Ok(b) => (b, Vec::new()),
            Err(code) => return reply(code, Vec::new()),
        }
    };
    let received = body.len() + frames.iter().map(|f| f.len()).sum::<usize>();
    metrics::counter!("raftlite_internode_bytes_in_total").increment(received as u64);
    let Some(core) = state.core.get() else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, b"store not open".to_vec());
    };
    let raft = &core.raft.get();
    let r: Result<Response, Response> = async {
        Ok(match path.as_str() {
            "/raft/append" => {
                let started = std::time::Instant::now();
                let req: openraft::raft::AppendEntriesRequest<crate::raft::TypeConfig> = decode(&body)?;
                if let Some(c) = req.leader_commit {
                    state.note_leader_commit(c.index);
                }
                let carries_entries = !req.entries.is_empty();
                let resp = raft.append_entries(req).await;
                if resp.is_ok() {
                    state.note_leader_contact();
                }
                let out = encoded(&resp);
                if carries_entries {
                    metrics::histogram!("raftlite_follower_append_seconds").record(started.elapsed().as_secs_f64());
                }
                out
            }
            "/raft/vote" => encoded(&raft.vote(decode(&body)?).await),
            "/raft/prevote" => {
                let req: crate::raft::prevote::PreVoteRequest = decode(&body)?;
                let lease = crate::node::election_timeout(&state.cfg);
                encoded(&crate::raft::prevote::answer(raft, &req, lease).await)
            }
            "/raft/snapshot" | "/raft/snapshot-gz" => {
                let chunk = crate::raft::network::decode_chunk(&frames)
                    .map_err(|e| reply(StatusCode::BAD_REQUEST, format!("bad request body: {e}").into_bytes()))?;
                let mut req: openraft::raft::InstallSnapshotRequest<crate::raft::TypeConfig> = chunk.into();
                if path == "/raft/snapshot-gz" {
                    req.data = crate::raft::network::gunzip(&req.data)
                        .map_err(|e| reply(StatusCode::BAD_REQUEST, e.to_string().into_bytes()))?;
                }
                let resp = raft.install_snapshot(req).await;
                if resp.is_ok() {
                    state.note_leader_contact();
                }
                encoded(&resp)
            }
            // A follower's batch of queued writes, proposed here (this node should lead).
            "/cluster/execute" => {
                let cmd: crate::store::command::Command = decode(&body)?;
                let r: Result<crate::store::command::Response, String> =
                    if matches!(cmd, crate::store::command::Command::Execute { .. }) {
                        crate::actors::consensus::propose(&core.consensus, cmd).await.map_err(|e| e.to_string())
                    } else {
                        Err("only writes may be forwarded here".into())
                    };
                encoded(&r)
            }
            "/cluster/join" => {
                let req: JoinRequest = decode(&body)?;
                // A voter needs `join`; a read-only node `join` or `join-read-only`.
                let allowed = if req.voter {
                    permitted(&state, &headers, &[Permission::Join])
                } else {
                    permitted(&state, &headers, &[Permission::Join])
                        .or_else(|_| permitted(&state, &headers, &[Permission::JoinReadOnly]))
                };
                if let Err(d) = allowed {
                    return Err(refused(d));
                }
                encoded(&membership_reply(core.membership.send(Join(req)).await))
            }
            "/cluster/notify" => {
                permitted(&state, &headers, &[Permission::Join]).map_err(refused)?;
                let req: NotifyRequest = decode(&body)?;
                encoded(&membership_reply(core.membership.send(Notify(req)).await))
            }
            "/cluster/remove" => {
                permitted(&state, &headers, &[Permission::Remove]).map_err(refused)?;
                let req: RemoveRequest = decode(&body)?;
                encoded(&membership_reply(core.membership.send(Remove(req.id)).await))
            }
            "/cluster/removed" => {
                let req: RemoveRequest = decode(&body)?;
                if req.id == state.cfg.node_id {
                    tracing::info!("the leader removed this node from the cluster");
                    state.note_removed();
                }
                encoded(&ClusterReply::Ok)
            }
            "/cluster/meta" => {
                let m = raft.metrics().borrow().clone();
                encoded(&ClusterReply::Meta(NodeMeta {
                    id: state.cfg.node_id.clone(),
                    api_addr: state.cfg.http_adv_addr.clone(),
                    raft_addr: state.cfg.raft_adv_addr.clone(),
                    version: VERSION.to_string(),
                    commit_index: m.last_applied.map(|l| l.index).unwrap_or(0),
                    applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
                }))
            }
            _ => {
                // /cluster/elect: the leader hands leadership to this node.
                match raft.trigger().elect().await {
                    Ok(()) => encoded(&ClusterReply::Ok),
                    Err(e) => encoded(&ClusterReply::Error(e.to_string())),
                }
            }
        })
    }
    .await;
    r.unwrap_or_else(|e| e)
}
