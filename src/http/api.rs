//! Endpoint routing and handlers for the data API and the node endpoints (spec §2–§10).
//! Routing is by path prefix, as rqlite does; every response carries `X-RQLITE-VERSION` and the
//! CORS headers; no input can panic a handler (each request runs under the panic guard and a body
//! cap that answers 413 before buffering).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use futures::{Stream, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use super::render::{envelope, Shape, J};
use super::request::{parse_json_statements, BadRequest, Level, Params};
use super::{status, AppState, Core, VERSION};
use crate::actors::consensus::{LinearizableBarrier, Propose, ProposeError};
use crate::actors::readers::{Classify, Query};
use crate::cluster::client::Peers;
use crate::cluster::ClusterReply;
use crate::raft::{numeric_id, NodeInfo};
use crate::store::command::{Command, ExecOptions, Statement, StmtResult};
use crate::store::db::{Mode, TICKS_PER_MS};
use crate::store::sql::{self, RewriteOptions, SystemEntropy};

/// Build a response with rqlite's common headers.
fn respond(
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

pub(crate) fn empty(state: &AppState, code: StatusCode) -> Response {
    respond(state, code, None, Vec::new())
}

/// A plain-text error, Go `http.Error` style (message plus newline).
pub(crate) fn text(state: &AppState, code: StatusCode, msg: &str) -> Response {
    respond(state, code, Some("text/plain; charset=utf-8"), format!("{msg}\n"))
}

pub(crate) fn json(state: &AppState, j: &J, pretty: bool) -> Response {
    let mut r = respond(state, StatusCode::OK, Some("application/json; charset=utf-8"), j.encode(pretty));
    if let Ok(v) = http::HeaderValue::from_str(&state.cfg.http_adv_addr) {
        r.headers_mut().insert("X-RQLITE-SERVED-BY", v);
    }
    r
}

fn bad_request(state: &AppState, e: BadRequest) -> Response {
    text(state, StatusCode::BAD_REQUEST, &e.0)
}

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
    let endpoint = crate::metrics::endpoint_label(kind_of(&path));
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
    // Handlers do not panic by design; this guard turns a bug into a 500 instead of a dropped
    // connection, and keeps the server serving.
    let fut = std::panic::AssertUnwindSafe(route(state, method, path, query, headers, Box::pin(body)));
    let r = match futures::FutureExt::catch_unwind(fut).await {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("panic in HTTP handler");
            text(&st, StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    };
    metrics::counter!(
        "raftlite_http_requests_total",
        "endpoint" => endpoint,
        "method" => method_label,
        "status" => r.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!("raftlite_http_request_duration_seconds", "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
    r
}

/// The endpoint a path routes to (rqlite's prefix routing), or "other".
pub fn kind_of(p: &str) -> &'static str {
    const PREFIXES: &[(&str, &str)] = &[
        ("/db/execute", "execute"),
        ("/db/query", "query"),
        ("/db/request", "request"),
        ("/db/sql", "sql"),
        ("/db/backup", "backup"),
        ("/db/load", "load"),
        ("/status", "status"),
        ("/nodes", "nodes"),
        ("/readyz", "readyz"),
        ("/remove", "remove"),
        ("/debug/vars", "debug_vars"),
        ("/debug/", "later"),
    ];
    const EXACT: &[(&str, &str)] = &[
        ("/leader", "leader"),
        ("/boot", "boot"),
        ("/snapshot", "snapshot"),
        ("/reap", "reap"),
        ("/metrics", "metrics"),
        ("/licenses", "later"),
    ];
    EXACT
        .iter()
        .find(|(e, _)| *e == p)
        .or_else(|| PREFIXES.iter().find(|(pre, _)| p.starts_with(pre)))
        .map(|(_, k)| *k)
        .unwrap_or("other")
}

pub(crate) type BodyStream<B> = std::pin::Pin<Box<dyn Stream<Item = Result<B, warp::Error>> + Send>>;

/// Read the body, refusing (413) as soon as it is known to exceed `cap`.
pub(crate) async fn read_body<B: Buf>(
    headers: &HeaderMap,
    mut body: BodyStream<B>,
    cap: u64,
) -> Result<Vec<u8>, StatusCode> {
    if let Some(len) =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    {
        if len > cap {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
    }
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
        if out.len() as u64 + chunk.remaining() as u64 > cap {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

async fn route<B: Buf + Send>(
    state: Arc<AppState>,
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
    let is = |m: &[Method]| m.contains(&method);
    let p = path.as_str();
    if p == "/" {
        let mut r = empty(&state, StatusCode::FOUND);
        r.headers_mut().insert(http::header::LOCATION, http::HeaderValue::from_static("/console/"));
        return r;
    }
    if p == "/console" {
        let mut r = empty(&state, StatusCode::MOVED_PERMANENTLY);
        r.headers_mut().insert(http::header::LOCATION, http::HeaderValue::from_static("/console/"));
        return r;
    }
    let kind = kind_of(p);
    let allowed: &[Method] = match kind {
        "execute" | "request" | "load" | "boot" | "snapshot" | "reap" => &[Method::POST],
        "query" | "sql" | "leader" => &[Method::GET, Method::POST],
        "remove" => &[Method::DELETE],
        "later" => &[Method::GET, Method::POST, Method::DELETE, Method::PUT],
        "other" => return empty(&state, StatusCode::NOT_FOUND),
        _ => &[Method::GET],
    };
    let allowed = is(allowed);
    if !allowed {
        return empty(&state, StatusCode::METHOD_NOT_ALLOWED);
    }
    if kind == "boot" {
        return super::backup::boot(&state, body).await;
    }
    let body = match kind {
        "execute" | "query" | "request" | "sql" | "remove" | "leader" | "load" | "later" => {
            match read_body(&headers, body, state.cfg.max_body_bytes).await {
                Ok(b) => b,
                Err(StatusCode::PAYLOAD_TOO_LARGE) => {
                    return text(
                        &state,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("request body larger than {} bytes", state.cfg.max_body_bytes),
                    )
                }
                Err(code) => return text(&state, code, "cannot read request body"),
            }
        }
        _ => Vec::new(),
    };
    let fwd = Fwd { method: method.clone(), path: p.to_string(), query: query.clone(), headers: headers.clone(), body };
    match kind {
        "status" => {
            return status::status(&state, &params).await.map_or_else(|r| r, |j| json(&state, &j, params.pretty))
        }
        "readyz" => return readyz(&state, &params).await,
        "nodes" => return status::nodes(&state, &params).await.map_or_else(|r| r, |j| json(&state, &j, params.pretty)),
        "leader" => return leader(&state, &params, &fwd).await,
        "remove" => return remove(&state, &params, &fwd).await,
        "backup" => return super::backup::backup(&state, &params, &fwd).await,
        "load" => return super::backup::load(&state, &params, &fwd).await,
        "snapshot" => return super::backup::snapshot(&state, &params).await,
        "reap" => return super::backup::reap(&state, &params).await,
        "metrics" => return super::status::metrics(&state).await,
        "debug_vars" => return super::status::debug_vars(&state, &params),
        "later" if p == "/debug/failpoints" && cfg!(feature = "failpoints") => {
            return set_failpoints(&state, &fwd.body);
        }
        "later" => {
            return text(
                &state,
                StatusCode::NOT_IMPLEMENTED,
                &format!("{p} is not implemented in this version of raftlite"),
            )
        }
        _ => {}
    }
    let plain = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start().to_ascii_lowercase().starts_with("text/plain"))
        .unwrap_or(false);
    let stmts = match statements(&method, kind, &params, plain, &fwd.body) {
        Ok(s) => s,
        Err(e) => return bad_request(&state, e),
    };
    match kind {
        "sql" => sql_endpoint(&state, &params, stmts),
        "execute" if params.has("queue") => queued_execute(&state, &params, stmts).await,
        "execute" => execute(&state, &params, stmts, &fwd).await,
        "query" => query_endpoint(&state, &params, stmts, &fwd).await,
        _ => request(&state, &params, stmts, &fwd).await,
    }
}

/// The statements of a data request, from `q=`, a text/plain body or a JSON body.
fn statements(
    method: &Method,
    kind: &str,
    params: &Params,
    plain: bool,
    body: &[u8],
) -> Result<Vec<Statement>, BadRequest> {
    if *method == Method::GET {
        return match &params.q {
            Some(q) => Ok(vec![Statement::new(q.clone())]),
            None => Err(BadRequest("query parameter not set".into())),
        };
    }
    if plain && kind != "request" {
        let s = std::str::from_utf8(body).map_err(|_| BadRequest("request body is not valid UTF-8".into()))?;
        if s.trim().is_empty() {
            return Ok(Vec::new());
        }
        return Ok(vec![Statement::new(s)]);
    }
    let stmts = parse_json_statements(body)?;
    // An empty list is a flush barrier for `queue&wait` (spec §6), and a bad request otherwise.
    let barrier = kind == "execute" && params.has("queue") && params.has("wait");
    if stmts.is_empty() && !barrier {
        return Err(BadRequest("no statements".into()));
    }
    Ok(stmts)
}

fn shape(p: &Params) -> Shape {
    Shape { associative: p.associative, blob_array: p.blob_array, timings: p.timings }
}

fn exec_options(p: &Params) -> ExecOptions {
    ExecOptions {
        transaction: p.transaction,
        step_budget: p.db_timeout.map(|d| (d.as_millis() as u64).max(1).saturating_mul(TICKS_PER_MS)).unwrap_or(0),
        qualify_columns: p.qualify_columns,
        proposed_at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

/// Rewrite non-deterministic SQL (spec §8) unless the client opted out.
fn preprocess(p: &Params, stmts: &mut [Statement]) {
    if p.noparse {
        return;
    }
    let opts = RewriteOptions { no_random: p.norwrandom, no_time: p.norwtime };
    let mut ent = SystemEntropy::default();
    for st in stmts.iter_mut() {
        let out = sql::rewrite(&st.sql, opts, &mut ent);
        st.sql = out.sql;
        st.returning = out.returning;
    }
}

fn result_envelope(
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

fn core(state: &AppState) -> Result<&Core, Response> {
    state.core.get().ok_or_else(|| text(state, StatusCode::SERVICE_UNAVAILABLE, "store not open"))
}

/// The original request, kept so a follower can forward it to the leader unchanged.
pub(crate) struct Fwd {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// Marks a request a follower forwarded, so it is never forwarded twice.
const FORWARDED: &str = "X-Raftlite-Forwarded";

/// Answer for a leader-only request on a node that is not the leader: 301 to the leader with
/// `redirect`, otherwise forward it to the leader (with the client's credentials) and relay the
/// answer; `503 leader not found` when there is none.
pub(crate) async fn not_leader(state: &AppState, p: &Params, leader: Option<NodeInfo>, fwd: &Fwd) -> Response {
    let Some(l) = leader else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found");
    };
    if p.redirect {
        let q = if fwd.query.is_empty() { String::new() } else { format!("?{}", fwd.query) };
        let loc = format!("http://{}{}{q}", l.api_addr, fwd.path);
        let mut r = empty(state, StatusCode::MOVED_PERMANENTLY);
        if let Ok(v) = http::HeaderValue::from_str(&loc) {
            r.headers_mut().insert(http::header::LOCATION, v);
        }
        return r;
    }
    if fwd.headers.contains_key(FORWARDED) {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found");
    }
    let Some(core) = state.core.get() else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "store not open");
    };
    forward(state, core, &l, fwd, p.timeout).await
}

async fn forward(state: &AppState, core: &Core, leader: &NodeInfo, fwd: &Fwd, timeout: Duration) -> Response {
    metrics::counter!("raftlite_http_forwarded_total").increment(1);
    let q = if fwd.query.is_empty() { String::new() } else { format!("?{}", fwd.query) };
    let url = format!("http://{}{}{q}", leader.api_addr, fwd.path);
    let mut rb =
        core.peers.client(&leader.api_addr).request(fwd.method.clone(), url).timeout(timeout).header(FORWARDED, "1");
    for h in [http::header::CONTENT_TYPE, http::header::AUTHORIZATION] {
        if let Some(v) = fwd.headers.get(&h) {
            rb = rb.header(h, v.clone());
        }
    }
    let resp = match rb.body(fwd.body.clone()).send().await {
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

async fn propose(state: &AppState, p: &Params, cmd: Command, started: Instant, fwd: &Fwd) -> Response {
    let core = match core(state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match core.consensus.send(Propose(cmd)).await {
        Ok(Ok(resp)) => result_envelope(state, p, &resp.results, resp.error.as_deref(), started, Some(resp.raft_index)),
        Ok(Err(ProposeError::NotLeader { leader })) => not_leader(state, p, leader, fwd).await,
        Ok(Err(e @ (ProposeError::Stopped(_) | ProposeError::Restarting(_)))) => {
            text(state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        Ok(Err(e)) => result_envelope(state, p, &[], Some(&e.to_string()), started, None),
        Err(e) => text(state, StatusCode::SERVICE_UNAVAILABLE, &format!("consensus unavailable: {e}")),
    }
}

/// The answers every data endpoint gives before any work: nothing to run, or a disallowed PRAGMA
/// (which fails the whole request, spec §8).
fn early_answer(state: &AppState, p: &Params, stmts: &[Statement], started: Instant) -> Option<Response> {
    if stmts.is_empty() {
        return Some(result_envelope(state, p, &[], None, started, None));
    }
    if stmts.iter().any(|s| sql::has_disallowed_pragma(&s.sql)) {
        return Some(result_envelope(state, p, &[], Some("disallowed pragma"), started, None));
    }
    None
}

async fn execute(state: &AppState, p: &Params, mut stmts: Vec<Statement>, fwd: &Fwd) -> Response {
    let started = Instant::now();
    if let Some(r) = early_answer(state, p, &stmts, started) {
        return r;
    }
    preprocess(p, &mut stmts);
    let cmd = Command::Execute { stmts, opts: exec_options(p), seed: rand::random() };
    propose(state, p, cmd, started, fwd).await
}

/// `POST /db/execute?queue` (spec §6): rewrite, queue, answer with the sequence number; with
/// `wait`, once the batch holding the request has committed (`timeout` → 408).
async fn queued_execute(state: &AppState, p: &Params, mut stmts: Vec<Statement>) -> Response {
    let wait = p.has("wait");
    if stmts.is_empty() && !wait {
        return text(state, StatusCode::BAD_REQUEST, "empty statement list");
    }
    if stmts.iter().any(|s| sql::has_disallowed_pragma(&s.sql)) {
        return text(state, StatusCode::BAD_REQUEST, "disallowed pragma");
    }
    if !p.noleader {
        let known = state.core.get().map(|c| c.raft.get().metrics().borrow().current_leader.is_some()).unwrap_or(false);
        if !known {
            return text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found");
        }
    }
    preprocess(p, &mut stmts);
    let (seq, done) = match state.queue.push(stmts, wait).await {
        Ok(x) => x,
        Err(e) => return text(state, StatusCode::SERVICE_UNAVAILABLE, &e),
    };
    if let Some(done) = done {
        if tokio::time::timeout(p.timeout, done).await.is_err() {
            return text(state, StatusCode::REQUEST_TIMEOUT, "timeout waiting for the queued write to commit");
        }
    }
    let mut o = super::render::J::obj();
    o.put("results", super::render::J::Arr(Vec::new()));
    o.put("sequence_number", super::render::J::Int(seq as i64));
    json(state, &o, p.pretty)
}

/// Resolve `auto` and decide whether this node may serve a read at `level` locally.
/// The log index this node must apply before its local copy is as new as it was before the
/// restart: the last entry in the log at start, or less if a leader has since cut an
/// uncommitted tail away. Every entry in the log at start is either committed (and will be
/// applied once a leader is known) or truncated.
fn recovery_target(core: &Core, m: &crate::raft::Metrics) -> u64 {
    let at_start = core.stats.replay_bound.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(1);
    at_start.min(m.last_log_index.unwrap_or(0))
}

fn recovered(core: &Core, m: &crate::raft::Metrics) -> bool {
    core.stats.applied_index.load(std::sync::atomic::Ordering::Relaxed) >= recovery_target(core, m)
}

async fn read_gate(state: &AppState, core: &Core, p: &Params, level: Level, fwd: &Fwd) -> Result<(), Response> {
    let m = core.raft.get().metrics().borrow().clone();
    let is_leader = m.current_leader == Some(core.node_id);
    let leader_node = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
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
                    let applied = core.stats.applied_index.load(std::sync::atomic::Ordering::Relaxed);
                    if applied < state.leader_commit_seen() {
                        let at = core.stats.last_applied_proposed_ms.load(std::sync::atomic::Ordering::Relaxed);
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
                Err(e) => Err(text(state, StatusCode::SERVICE_UNAVAILABLE, &format!("consensus unavailable: {e}"))),
            }
        }
    }
}

async fn local_read(
    state: &AppState,
    core: &Core,
    p: &Params,
    stmts: Vec<Statement>,
    mode: Mode,
    started: Instant,
) -> Response {
    let q = Query { stmts, opts: exec_options(p), mode, deadline: p.db_timeout };
    match core.readers.send(q).await {
        Ok(Ok(results)) => result_envelope(state, p, &results, None, started, None),
        Ok(Err(e)) => result_envelope(state, p, &[], Some(&e.to_string()), started, None),
        Err(e) => text(state, StatusCode::SERVICE_UNAVAILABLE, &format!("readers unavailable: {e}")),
    }
}

async fn query_endpoint(state: &AppState, p: &Params, mut stmts: Vec<Statement>, fwd: &Fwd) -> Response {
    let started = Instant::now();
    if let Some(r) = early_answer(state, p, &stmts, started) {
        return r;
    }
    let core = match core(state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = read_gate(state, core, p, p.level, fwd).await {
        return r;
    }
    if p.level == Level::Strong {
        preprocess(p, &mut stmts);
        let cmd = Command::Query { stmts, opts: exec_options(p), seed: rand::random() };
        return propose(state, p, cmd, started, fwd).await;
    }
    local_read(state, core, p, stmts, Mode::Query, started).await
}

async fn request(state: &AppState, p: &Params, mut stmts: Vec<Statement>, fwd: &Fwd) -> Response {
    let started = Instant::now();
    if let Some(r) = early_answer(state, p, &stmts, started) {
        return r;
    }
    let core = match core(state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let all_reads = match core.readers.send(Classify(stmts.clone())).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return result_envelope(state, p, &[], Some(&e.to_string()), started, None),
        Err(e) => return text(state, StatusCode::SERVICE_UNAVAILABLE, &format!("readers unavailable: {e}")),
    };
    if all_reads && p.level != Level::Strong {
        if let Err(r) = read_gate(state, core, p, p.level, fwd).await {
            return r;
        }
        return local_read(state, core, p, stmts, Mode::Request, started).await;
    }
    preprocess(p, &mut stmts);
    let cmd = Command::Request { stmts, opts: exec_options(p), seed: rand::random() };
    propose(state, p, cmd, started, fwd).await
}

/// `/db/sql`: show what the rewriter does, without executing anything.
fn sql_endpoint(state: &AppState, p: &Params, stmts: Vec<Statement>) -> Response {
    let opts = RewriteOptions { no_random: p.norwrandom, no_time: p.norwtime };
    let mut ent = SystemEntropy::default();
    let results = stmts
        .iter()
        .map(|st| {
            let mut o = J::obj();
            o.put("original", J::s(st.sql.clone()));
            if sql::has_disallowed_pragma(&st.sql) {
                o.put("error", J::s("disallowed pragma"));
            } else if let Some(why) = sql::forbidden(&st.sql) {
                o.put("error", J::s(why));
            } else {
                o.put("rewritten", J::s(sql::rewrite(&st.sql, opts, &mut ent).sql));
            }
            o
        })
        .collect();
    let mut env = J::obj();
    env.put("results", J::Arr(results));
    json(state, &env, p.pretty)
}

async fn readyz(state: &AppState, p: &Params) -> Response {
    if p.noleader {
        return text(state, StatusCode::OK, "[+]node ok");
    }
    let Some(core) = state.core.get() else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "[+]node ok\n[-]store not ready");
    };
    let m = core.raft.get().metrics().borrow().clone();
    if let Err(e) = &m.running_state {
        return text(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("[+]node ok\n[-]store not ok: raft stopped: {e}"),
        );
    }
    let Some(leader) = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned()) else {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "[+]node ok\n[-]leader not ok");
    };
    if !recovered(core, &m) {
        let applied = core.stats.applied_index.load(std::sync::atomic::Ordering::Relaxed);
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

/// `POST /debug/failpoints` with `name=actions` lines (builds with the `failpoints` feature only):
/// configure fault injection at run time, e.g. `applier::before_commit=1*panic`.
fn set_failpoints(state: &AppState, body: &[u8]) -> Response {
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

/// `DELETE /remove` with `{"id":"<node id>"}`.
async fn remove(state: &AppState, p: &Params, fwd: &Fwd) -> Response {
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
    match core.membership.send(crate::actors::membership::Remove(id)).await {
        Ok(ClusterReply::Ok) => empty(state, StatusCode::OK),
        Ok(ClusterReply::NotLeader { .. }) => {
            let m = core.raft.get().metrics().borrow().clone();
            let leader = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
            not_leader(state, p, leader, fwd).await
        }
        Ok(ClusterReply::Error(e)) => text(state, StatusCode::INTERNAL_SERVER_ERROR, &e),
        Ok(other) => text(state, StatusCode::INTERNAL_SERVER_ERROR, &format!("{other:?}")),
        Err(e) => text(state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// Remove `id` from the cluster through whichever node leads (used on shutdown).
pub async fn remove_node(core: &Core, id: &str) -> Result<(), String> {
    let m = core.raft.get().metrics().borrow().clone();
    let leader = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
    let leader = leader.ok_or("no leader")?;
    let req = crate::cluster::RemoveRequest { id: id.to_string() };
    match core.peers.call::<_, ClusterReply>(&leader.raft_addr, "/cluster/remove", &req, Duration::from_secs(10)).await
    {
        Ok(ClusterReply::Ok) => Ok(()),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Hand leadership to `target` (or the most up-to-date other voter): the target, once caught up,
/// starts an election it wins. With `wait`, return once leadership has moved.
pub async fn transfer_leadership(core: &Core, target: Option<u64>, wait: bool) -> Result<(), String> {
    let (raft, peers, me) = (core.raft.get(), core.peers.clone(), core.node_id);
    if wait {
        handover(raft, peers, me, target).await
    } else {
        tokio::spawn(async move {
            if let Err(e) = handover(raft, peers, me, target).await {
                tracing::warn!(error = %e, "leadership transfer");
            }
        });
        Ok(())
    }
}

async fn handover(raft: crate::raft::Raft, peers: Arc<Peers>, me: u64, target: Option<u64>) -> Result<(), String> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(me) {
        return Err("not leader".into());
    }
    let mem = m.membership_config.membership().clone();
    let last = m.last_log_index.unwrap_or(0);
    let progress =
        |id: &u64| m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index).unwrap_or(0);
    let target = match target {
        Some(t) if t == me => return Ok(()),
        Some(t) if mem.voter_ids().any(|v| v == t) => t,
        Some(_) => return Err("target is not a voter".into()),
        None => mem.voter_ids().filter(|v| *v != me).max_by_key(progress).ok_or("no other voter")?,
    };
    let node = mem.get_node(&target).cloned().ok_or("target unknown")?;
    // Let the target catch up first so that it can win.
    let _ = crate::raft::wait_replicated(&raft, target, last, Duration::from_secs(5)).await;
    // openraft 0.9 has no transfer API, and voters refuse to vote while their leader lease (one
    // election timeout) is fresh. So: stop heartbeats, let the lease run out, and ask the target
    // to start an election it will win (its log is the most up to date). Heartbeats are switched
    // back on whatever happens; if the election did not take, this node simply stays leader.
    let lease = raft.config().election_timeout_max;
    raft.runtime_config().heartbeat(false);
    let moved = async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(lease + lease / 4)).await;
            match peers.call::<_, ClusterReply>(&node.raft_addr, "/cluster/elect", &(), Duration::from_secs(5)).await {
                Ok(ClusterReply::Ok) => {}
                Ok(other) => return Err(format!("{other:?}")),
                Err(e) => return Err(e.to_string()),
            }
            let r = raft
                .wait(Some(Duration::from_millis(lease * 2)))
                .metrics(|m| m.current_leader.is_some() && m.current_leader != Some(me), "leadership moved")
                .await;
            if r.is_ok() {
                return Ok(());
            }
        }
        Err("leadership did not move".to_string())
    };
    let r = moved.await;
    raft.runtime_config().heartbeat(true);
    r
}

/// `GET /leader` names the leader; `POST /leader` transfers leadership.
async fn leader(state: &AppState, p: &Params, fwd: &Fwd) -> Response {
    let core = match core(state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let m = core.raft.get().metrics().borrow().clone();
    let leader_node = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
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
        return match transfer_leadership(core, target, p.has("wait")).await {
            Ok(()) => empty(state, StatusCode::OK),
            Err(e) => text(state, StatusCode::SERVICE_UNAVAILABLE, &e),
        };
    }
    match m.current_leader {
        Some(id) => match status::probe_node(core, &m, id, p.timeout).await {
            Some(j) => json(state, &j, p.pretty),
            None => text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found"),
        },
        None => text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found"),
    }
}
