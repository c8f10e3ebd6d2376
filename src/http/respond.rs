//! Response builders: every response the API sends is made here, with rqlite's common headers
//! (`X-RQLITE-VERSION`, CORS) and its error style (plain text plus newline, as Go's `http.Error`).

use std::time::Instant;

use http::StatusCode;
use warp::reply::Response;

use super::render::{envelope, Shape, J};
use super::request::{BadRequest, Params};
use super::state::{AppState, Core, VERSION};
use crate::store::command::StmtResult;

/// A response with rqlite's common headers.
pub fn respond(
    state: &AppState,
    code: StatusCode,
    content_type: Option<&str>,
    body: impl Into<warp::hyper::body::Bytes>,
) -> Response {
    let mut r = Response::new(body.into().into());
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert("X-RQLITE-VERSION", http::HeaderValue::from_static(VERSION));
    h.insert("Access-Control-Allow-Methods", http::HeaderValue::from_static("OPTIONS, GET, POST"));
    h.insert("Access-Control-Allow-Headers", http::HeaderValue::from_static("Content-Type"));
    if !state.cfg.http_allow_origin.is_empty() {
        if let Ok(v) = http::HeaderValue::from_str(&state.cfg.http_allow_origin) {
            h.insert("Access-Control-Allow-Origin", v);
        }
    }
    if let Some(ct) = content_type {
        if let Ok(v) = http::HeaderValue::from_str(ct) {
            h.insert(http::header::CONTENT_TYPE, v);
        }
    }
    r
}

/// No body.
pub fn empty(state: &AppState, code: StatusCode) -> Response {
    respond(state, code, None, Vec::new())
}

/// A redirect to `location`.
pub fn redirect(state: &AppState, code: StatusCode, location: &str) -> Response {
    let mut r = empty(state, code);
    if let Ok(v) = http::HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

/// A plain-text error, Go `http.Error` style (message plus newline).
pub fn text(state: &AppState, code: StatusCode, msg: &str) -> Response {
    respond(state, code, Some("text/plain; charset=utf-8"), format!("{msg}\n"))
}

/// A JSON document, naming this node as the one that served it.
pub fn json(state: &AppState, j: &J, pretty: bool) -> Response {
    let mut r = respond(state, StatusCode::OK, Some("application/json; charset=utf-8"), j.encode(pretty));
    if let Ok(v) = http::HeaderValue::from_str(&state.cfg.http_adv_addr) {
        r.headers_mut().insert("X-RQLITE-SERVED-BY", v);
    }
    r
}

pub fn bad_request(state: &AppState, e: BadRequest) -> Response {
    text(state, StatusCode::BAD_REQUEST, &e.0)
}

/// 503 for anything that needs the store before it is open.
pub fn core(state: &AppState) -> Result<&Core, Response> {
    state.core.get().ok_or_else(|| text(state, StatusCode::SERVICE_UNAVAILABLE, "store not open"))
}

/// 503 naming an actor that could not be reached (it is restarting or stopped).
pub fn unavailable(state: &AppState, what: &str, e: impl std::fmt::Display) -> Response {
    text(state, StatusCode::SERVICE_UNAVAILABLE, &format!("{what} unavailable: {e}"))
}

fn shape(p: &Params) -> Shape {
    Shape { associative: p.associative, blob_array: p.blob_array, timings: p.timings }
}

/// rqlite's result envelope (docs/API.md §5) for a data request.
pub fn result_envelope(
    state: &AppState,
    p: &Params,
    results: &[StmtResult],
    error: Option<&str>,
    started: Instant,
    index: Option<u64>,
) -> Response {
    let time = p.timings.then(|| started.elapsed().as_secs_f64());
    let idx = if p.raft_index { index } else { None };
    json(state, &envelope(results, error, time, idx, shape(p)), p.pretty)
}
