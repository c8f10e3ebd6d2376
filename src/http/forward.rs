//! Leader forwarding (docs/API.md §2): a request only the leader can serve, arriving at a
//! follower, is relayed to the leader with the client's credentials and the leader's answer
//! is passed back (`X-RQLITE-SERVED-BY` names the leader); with `redirect` the client gets a
//! `301` to the leader instead; with no leader, `503 leader not found`.

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use super::endpoint::Endpoint;
use super::request::Params;
use super::respond::{redirect, respond, text};
use super::state::{AppState, Core};
use crate::raft::NodeInfo;

/// The original request, kept so a follower can forward it to the leader unchanged.
pub struct Fwd {
    pub endpoint: Endpoint,
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Marks a request a follower forwarded, so it is never forwarded twice.
pub const FORWARDED: &str = "X-Raftlite-Forwarded";

/// Answer for a leader-only request on a node that is not the leader: 301 to the leader with
/// `redirect`, otherwise forward it to the leader (with the client's credentials) and relay the
/// answer; `503 leader not found` when there is none.
pub async fn not_leader(state: &AppState, p: &Params, leader: Option<NodeInfo>, fwd: &Fwd) -> Response {
    let Some(l) = leader else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found");
    };
    if !fwd.endpoint.spec().forwardable {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "not leader");
    }
    let Some(core) = state.core.get() else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "store not open");
    };
    // The leader's HTTP address as the leader gives it: the configuration's copy may be stale.
    let api = core.peers.api_addr(&l.raft_addr, &l.api_addr, false).await;
    if p.redirect {
        let q = if fwd.query.is_empty() { String::new() } else { format!("?{}", fwd.query) };
        return redirect(state, StatusCode::MOVED_PERMANENTLY, &format!("http://{api}{}{q}", fwd.path));
    }
    if fwd.headers.contains_key(FORWARDED) {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found");
    }
    forward(state, core, &l, &api, fwd, p.timeout).await
}

async fn forward(
    state: &AppState,
    core: &Core,
    leader: &NodeInfo,
    api: &str,
    fwd: &Fwd,
    timeout: Duration,
) -> Response {
    metrics::counter!("raftlite_http_forwarded_total").increment(1);
    let q = if fwd.query.is_empty() { String::new() } else { format!("?{}", fwd.query) };
    let send = |api: &str| {
        let url = format!("http://{api}{}{q}", fwd.path);
        let mut rb = core.peers.client(api).request(fwd.method.clone(), url).timeout(timeout).header(FORWARDED, "1");
        for h in [http::header::CONTENT_TYPE, http::header::AUTHORIZATION] {
            if let Some(v) = fwd.headers.get(&h) {
                rb = rb.header(h, v.clone());
            }
        }
        rb.body(fwd.body.clone()).send()
    };
    let sent = match send(api).await {
        // Not connected at all: the leader may have moved; ask it again, once.
        Err(e) if e.is_connect() => {
            let again = core.peers.api_addr(&leader.raft_addr, &leader.api_addr, true).await;
            if again == api {
                Err(e)
            } else {
                send(&again).await
            }
        }
        other => other,
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return text(state, StatusCode::SERVICE_UNAVAILABLE, &format!("forwarding to leader failed: {e}")),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ct = resp.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let location = resp.headers().get(http::header::LOCATION).cloned();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return text(state, StatusCode::SERVICE_UNAVAILABLE, &format!("forwarding to leader failed: {e}")),
    };
    let mut r = respond(state, status, ct.as_deref(), body.to_vec());
    if let Some(l) = location {
        r.headers_mut().insert(http::header::LOCATION, l);
    }
    if status.is_success() {
        if let Ok(v) = http::HeaderValue::from_str(&leader.raft_addr) {
            r.headers_mut().insert("X-RQLITE-SERVED-BY", v);
        }
    }
    r
}
