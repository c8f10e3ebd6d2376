//! Leader forwarding (docs/API.md §2): a request only the leader can serve, arriving at a
//! follower, is relayed to the leader with the client's credentials and the leader's answer
//! is passed back (`X-RQLITE-SERVED-BY` names the leader); with `redirect` the client gets a
//! `301` to the leader instead; with no leader, `503 leader not found`.

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use super::endpoint::Endpoint;
use super::outgoing::SendError;
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
    /// Shared, so that relaying it to the leader (and again after a failed connect) copies nothing.
    pub body: bytes::Bytes,
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
        return redirect(state, StatusCode::MOVED_PERMANENTLY, &format!("{}://{api}{}{q}", state.scheme(), fwd.path));
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
    let sent = match relay(core, api, fwd, timeout).await {
        // Not connected at all: the leader may have moved; ask it again, once.
        Err((true, e)) => {
            let again = core.peers.api_addr(&leader.raft_addr, &leader.api_addr, true).await;
            if again == api {
                Err((true, e))
            } else {
                relay(core, &again, fwd, timeout).await
            }
        }
        other => other,
    };
    let (status, headers, body) = match sent {
        Ok(r) => r,
        Err((_, e)) => {
            return text(state, StatusCode::SERVICE_UNAVAILABLE, &format!("forwarding to leader failed: {e}"))
        }
    };
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut r = respond(state, status, ct.as_deref(), body);
    if let Some(l) = headers.get(http::header::LOCATION) {
        r.headers_mut().insert(http::header::LOCATION, l.clone());
    }
    if status.is_success() {
        if let Ok(v) = http::HeaderValue::from_str(&leader.raft_addr) {
            r.headers_mut().insert("X-RQLITE-SERVED-BY", v);
        }
    }
    r
}

/// The leader's answer: status, headers, body; or (could not connect, why).
type Relayed = Result<(StatusCode, HeaderMap, Vec<u8>), (bool, String)>;

/// Send the request to the leader's API at `api`, over HTTPS when this node serves HTTPS (the
/// cluster's nodes share their API configuration), on a pooled connection.
async fn relay(core: &Core, api: &str, fwd: &Fwd, timeout: Duration) -> Relayed {
    let client = core.peers.api().map_err(|e| (false, e.to_string()))?;
    let q = if fwd.query.is_empty() { String::new() } else { format!("?{}", fwd.query) };
    let mut b = http::Request::builder()
        .method(fwd.method.clone())
        .uri(client.url(api, &format!("{}{q}", fwd.path)))
        .header(FORWARDED, "1");
    for h in [http::header::CONTENT_TYPE, http::header::AUTHORIZATION] {
        if let Some(v) = fwd.headers.get(&h) {
            b = b.header(h, v.clone());
        }
    }
    let req = b.body(fwd.body.clone().into()).map_err(|e| (false, e.to_string()))?;
    match client.send(api, req, timeout).await {
        Ok(r) => {
            let (parts, body) = r.into_parts();
            Ok((parts.status, parts.headers, body.to_vec()))
        }
        Err(e) => Err((matches!(e, SendError::Connect { .. }), e.to_string())),
    }
}
