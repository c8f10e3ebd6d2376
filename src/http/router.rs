//! Every HTTP request enters here: it is routed through the endpoint table (`endpoint`), checked
//! against the endpoint's methods, its body read with the cap, and handed to its handler. Each
//! request runs under a panic guard (a bug becomes a 500, never a dropped connection) and is
//! counted in the HTTP metrics by endpoint, method and status.

use std::sync::Arc;
use std::time::Instant;

use bytes::Buf;
use futures::Stream;
use http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use super::body::{read_body, BodyStream};
use super::endpoint::Endpoint;
use super::forward::Fwd;
use super::request::Params;
use super::respond::{bad_request, empty, json, redirect, text};
use super::state::AppState;
use super::{backup, cluster_ops, data, status};

/// Entry point for every HTTP request.
pub async fn dispatch<S, B>(
    state: Arc<AppState>,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send,
{
    let st = state.clone();
    let started = Instant::now();
    let endpoint = Endpoint::route(&path);
    let label = endpoint.map(|e| e.spec().label).unwrap_or("other");
    // A closed set of label values: nothing a client sends becomes a label.
    let method_label: &'static str = match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        _ => "other",
    };
    let fut = std::panic::AssertUnwindSafe(route(state, endpoint, method, path, query, headers, Box::pin(body)));
    let mut r = match futures::FutureExt::catch_unwind(fut).await {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("panic in HTTP handler");
            text(&st, StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    };
    // The body was not read to its end: the connection cannot carry another request, so the
    // client is told not to send one on it (it would meet a closed socket).
    if matches!(r.status(), StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT) {
        r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    metrics::counter!(
        "raftlite_http_requests_total",
        "endpoint" => label,
        "method" => method_label,
        "status" => r.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!("raftlite_http_request_duration_seconds", "endpoint" => label)
        .record(started.elapsed().as_secs_f64());
    r
}

async fn route<B: Buf + Send>(
    state: Arc<AppState>,
    endpoint: Option<Endpoint>,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: BodyStream<B>,
) -> Response {
    if method == Method::OPTIONS {
        return empty(&state, StatusCode::OK);
    }
    fail::fail_point!("http::handler");
    let params = match Params::parse(&query) {
        Ok(p) => p,
        Err(e) => return bad_request(&state, e),
    };
    let Some(ep) = endpoint else {
        return empty(&state, StatusCode::NOT_FOUND);
    };
    // The one permission check (docs/API.md §14). A forwarded request carries the client's
    // credentials and is checked again by the leader.
    if let Some(users) = &state.auth {
        if let Err(denied) = users.check(&headers, ep.spec().permissions) {
            return unauthorized(&state, denied, ep);
        }
    }
    let spec = ep.spec();
    if !ep.allows(&method) {
        let mut r = empty(&state, StatusCode::METHOD_NOT_ALLOWED);
        let allowed: Vec<&str> = spec.methods.iter().map(Method::as_str).collect();
        if let Ok(v) = http::HeaderValue::from_str(&allowed.join(", ")) {
            r.headers_mut().insert(http::header::ALLOW, v);
        }
        return r;
    }
    match ep {
        Endpoint::Root => return redirect(&state, StatusCode::FOUND, "/console/"),
        Endpoint::Console => return redirect(&state, StatusCode::MOVED_PERMANENTLY, "/console/"),
        _ => {}
    }
    if ep == Endpoint::Boot {
        return backup::boot(&state, body).await;
    }
    let body = if spec.reads_body {
        match read_body(&headers, body, state.cfg.max_body_bytes, state.cfg.http_header_timeout).await {
            Ok(b) => b,
            Err(StatusCode::PAYLOAD_TOO_LARGE) => {
                return text(
                    &state,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body larger than {} bytes", state.cfg.max_body_bytes),
                )
            }
            Err(StatusCode::REQUEST_TIMEOUT) => {
                return text(
                    &state,
                    StatusCode::REQUEST_TIMEOUT,
                    &format!("request body stalled for {:?} (-http-header-timeout)", state.cfg.http_header_timeout),
                )
            }
            Err(code) => return text(&state, code, "cannot read request body"),
        }
    } else {
        Vec::new()
    };
    let fwd = Fwd { endpoint: ep, method, path, query, headers, body: body.into() };
    let st = &state;
    let p = &params;
    match ep {
        Endpoint::Execute | Endpoint::Query | Endpoint::Request | Endpoint::Sql => data::handle(st, ep, p, &fwd).await,
        Endpoint::Status => status::status(st, p).await.map_or_else(|r| r, |j| json(st, &j, p.pretty)),
        Endpoint::Nodes => status::nodes(st, p).await.map_or_else(|r| r, |j| json(st, &j, p.pretty)),
        Endpoint::Readyz => cluster_ops::readyz(st, p).await,
        Endpoint::Leader => cluster_ops::leader(st, p, &fwd).await,
        Endpoint::Remove => cluster_ops::remove(st, p, &fwd).await,
        Endpoint::Backup => backup::backup(st, p, &fwd).await,
        Endpoint::Load => backup::load(st, p, &fwd).await,
        Endpoint::Snapshot => backup::snapshot(st, p).await,
        Endpoint::Reap => backup::reap(st, p).await,
        Endpoint::Metrics => status::metrics(st).await,
        Endpoint::DebugVars => status::debug_vars(st, p),
        Endpoint::Failpoints => cluster_ops::set_failpoints(st, &fwd.body),
        Endpoint::NotImplemented | Endpoint::Boot | Endpoint::Root | Endpoint::Console => {
            text(st, StatusCode::NOT_FOUND, &format!("{} is not served by raftlite", fwd.path))
        }
    }
}

/// `401` with a Basic challenge; counted by reason, the credentials never logged.
fn unauthorized(state: &AppState, denied: super::auth::Denied, ep: Endpoint) -> Response {
    metrics::counter!("raftlite_http_auth_failures_total", "reason" => denied.reason()).increment(1);
    // Once per cause: a client retrying with a bad password must not flood the log.
    crate::logging::warn_once(&format!("auth {} {}", denied.reason(), ep.path()), || {
        format!("request to {} not authorized: {}", ep.path(), denied.reason())
    });
    let mut r = text(state, StatusCode::UNAUTHORIZED, "unauthorized");
    r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Basic realm=\"raftlite\""));
    r
}
