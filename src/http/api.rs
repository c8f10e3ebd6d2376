//! Endpoint routing and handlers for the data API and the node endpoints (spec §2–§10).
//! Routing is by path prefix, as rqlite does; every response carries `X-RQLITE-VERSION` and the
//! CORS headers; no input can panic a handler (each request runs under the panic guard and a body
//! cap that answers 413 before buffering).

// Handlers return `Result<_, Response>` so an early answer (400, 503, 301) is one `?` away; the
// response type is warp's and its size is not ours to choose.
#![allow(clippy::result_large_err)]

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

fn empty(state: &AppState, code: StatusCode) -> Response {
    respond(state, code, None, Vec::new())
}

/// A plain-text error, Go `http.Error` style (message plus newline).
pub(crate) fn text(state: &AppState, code: StatusCode, msg: &str) -> Response {
    respond(state, code, Some("text/plain; charset=utf-8"), format!("{msg}\n"))
}

fn json(state: &AppState, j: &J, pretty: bool) -> Response {
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
    // Handlers do not panic by design; this guard turns a bug into a 500 instead of a dropped
    // connection, and keeps the server serving.
    let fut = std::panic::AssertUnwindSafe(route(state, method, path, query, headers, Box::pin(body)));
    match futures::FutureExt::catch_unwind(fut).await {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("panic in HTTP handler");
            text(&st, StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

type BodyStream<B> = std::pin::Pin<Box<dyn Stream<Item = Result<B, warp::Error>> + Send>>;

/// Read the body, refusing (413) as soon as it is known to exceed `cap`.
async fn read_body<B: Buf>(headers: &HeaderMap, mut body: BodyStream<B>, cap: u64) -> Result<Vec<u8>, StatusCode> {
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

fn prefix(path: &str, p: &str) -> bool {
    path.starts_with(p)
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
    let get_post = [Method::GET, Method::POST];
    let (allowed, kind): (bool, &str) = if prefix(p, "/db/execute") {
        (is(&[Method::POST]), "execute")
    } else if prefix(p, "/db/query") {
        (is(&get_post), "query")
    } else if prefix(p, "/db/request") {
        (is(&[Method::POST]), "request")
    } else if prefix(p, "/db/sql") {
        (is(&get_post), "sql")
    } else if prefix(p, "/status") {
        (is(&[Method::GET]), "status")
    } else if prefix(p, "/nodes") {
        (is(&[Method::GET]), "nodes")
    } else if prefix(p, "/readyz") {
        (is(&[Method::GET]), "readyz")
    } else if p == "/leader" {
        (is(&get_post), "leader")
    } else if prefix(p, "/db/backup")
        || prefix(p, "/db/load")
        || prefix(p, "/remove")
        || prefix(p, "/debug/")
        || matches!(p, "/boot" | "/snapshot" | "/reap" | "/licenses")
    {
        (true, "later")
    } else {
        return empty(&state, StatusCode::NOT_FOUND);
    };
    if !allowed {
        return empty(&state, StatusCode::METHOD_NOT_ALLOWED);
    }
    match kind {
        "status" => {
            return status::status(&state, &params).await.map_or_else(|r| r, |j| json(&state, &j, params.pretty))
        }
        "readyz" => return readyz(&state, &params).await,
        "nodes" => return status::nodes(&state, &params).map_or_else(|r| r, |j| json(&state, &j, params.pretty)),
        "leader" => return leader(&state, &method, &params),
        "later" => {
            return text(
                &state,
                StatusCode::NOT_IMPLEMENTED,
                &format!("{p} is not implemented in this version of raftlite"),
            )
        }
        _ => {}
    }
    let body = match read_body(&headers, body, state.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(StatusCode::PAYLOAD_TOO_LARGE) => {
            return text(
                &state,
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {} bytes", state.cfg.max_body_bytes),
            )
        }
        Err(code) => return text(&state, code, "cannot read request body"),
    };
    let plain = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start().to_ascii_lowercase().starts_with("text/plain"))
        .unwrap_or(false);
    let stmts = match statements(&method, kind, &params, plain, &body) {
        Ok(s) => s,
        Err(e) => return bad_request(&state, e),
    };
    match kind {
        "sql" => sql_endpoint(&state, &params, stmts),
        "execute" => execute(&state, &params, stmts, p, &query).await,
        "query" => query_endpoint(&state, &params, stmts, p, &query).await,
        _ => request(&state, &params, stmts, p, &query).await,
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
    if stmts.is_empty() {
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

/// Answer for a leader-only request on a node that is not the leader.
fn not_leader(
    state: &AppState,
    p: &Params,
    leader: Option<crate::raft::NodeInfo>,
    path: &str,
    query: &str,
) -> Response {
    match leader {
        Some(l) if p.redirect => {
            let q = if query.is_empty() { String::new() } else { format!("?{query}") };
            let loc = format!("http://{}{path}{q}", l.api_addr);
            let mut r = empty(state, StatusCode::MOVED_PERMANENTLY);
            if let Ok(v) = http::HeaderValue::from_str(&loc) {
                r.headers_mut().insert(http::header::LOCATION, v);
            }
            r
        }
        Some(l) => text(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not leader: the leader is {} (use ?redirect, forwarding arrives with clustering)", l.api_addr),
        ),
        None => text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found"),
    }
}

async fn propose(state: &AppState, p: &Params, cmd: Command, started: Instant, path: &str, query: &str) -> Response {
    let core = match core(state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match core.consensus.send(Propose(cmd)).await {
        Ok(Ok(resp)) => result_envelope(state, p, &resp.results, resp.error.as_deref(), started, Some(resp.raft_index)),
        Ok(Err(ProposeError::NotLeader { leader })) => not_leader(state, p, leader, path, query),
        Ok(Err(e)) => result_envelope(state, p, &[], Some(&e.to_string()), started, None),
        Err(e) => text(state, StatusCode::SERVICE_UNAVAILABLE, &format!("consensus unavailable: {e}")),
    }
}

fn disallowed(stmts: &[Statement]) -> bool {
    stmts.iter().any(|s| sql::has_disallowed_pragma(&s.sql))
}

async fn execute(state: &AppState, p: &Params, mut stmts: Vec<Statement>, path: &str, query: &str) -> Response {
    let started = Instant::now();
    if stmts.is_empty() {
        return result_envelope(state, p, &[], None, started, None);
    }
    if disallowed(&stmts) {
        return result_envelope(state, p, &[], Some("disallowed pragma"), started, None);
    }
    preprocess(p, &mut stmts);
    let cmd = Command::Execute { stmts, opts: exec_options(p), seed: rand::random() };
    propose(state, p, cmd, started, path, query).await
}

/// Resolve `auto` and decide whether this node may serve a read at `level` locally.
async fn read_gate(
    state: &AppState,
    core: &Core,
    p: &Params,
    level: Level,
    path: &str,
    query: &str,
) -> Result<(), Response> {
    let m = core.raft.metrics().borrow().clone();
    let is_leader = m.current_leader == Some(core.node_id);
    let leader_node = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
    match level {
        Level::None | Level::Auto => {
            if let Some(fresh) = p.freshness.filter(|_| !is_leader) {
                let stale = m.millis_since_quorum_ack.map(|ms| Duration::from_millis(ms) > fresh).unwrap_or(true);
                if stale && level == Level::None {
                    return Err(result_envelope(state, p, &[], Some("stale read"), Instant::now(), None));
                }
            }
            Ok(())
        }
        Level::Weak => {
            if is_leader {
                Ok(())
            } else {
                Err(not_leader(state, p, leader_node, path, query))
            }
        }
        Level::Linearizable => match core.consensus.send(LinearizableBarrier(p.linearizable_timeout)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ProposeError::NotLeader { leader })) => Err(not_leader(state, p, leader, path, query)),
            Ok(Err(e)) => Err(result_envelope(state, p, &[], Some(&e.to_string()), Instant::now(), None)),
            Err(e) => Err(text(state, StatusCode::SERVICE_UNAVAILABLE, &format!("consensus unavailable: {e}"))),
        },
        Level::Strong => Ok(()),
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

async fn query_endpoint(state: &AppState, p: &Params, mut stmts: Vec<Statement>, path: &str, query: &str) -> Response {
    let started = Instant::now();
    if stmts.is_empty() {
        return result_envelope(state, p, &[], None, started, None);
    }
    if disallowed(&stmts) {
        return result_envelope(state, p, &[], Some("disallowed pragma"), started, None);
    }
    let core = match core(state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = read_gate(state, core, p, p.level, path, query).await {
        return r;
    }
    if p.level == Level::Strong {
        preprocess(p, &mut stmts);
        let cmd = Command::Query { stmts, opts: exec_options(p), seed: rand::random() };
        return propose(state, p, cmd, started, path, query).await;
    }
    local_read(state, core, p, stmts, Mode::Query, started).await
}

async fn request(state: &AppState, p: &Params, mut stmts: Vec<Statement>, path: &str, query: &str) -> Response {
    let started = Instant::now();
    if disallowed(&stmts) {
        return result_envelope(state, p, &[], Some("disallowed pragma"), started, None);
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
        if let Err(r) = read_gate(state, core, p, p.level, path, query).await {
            return r;
        }
        return local_read(state, core, p, stmts, Mode::Request, started).await;
    }
    preprocess(p, &mut stmts);
    let cmd = Command::Request { stmts, opts: exec_options(p), seed: rand::random() };
    propose(state, p, cmd, started, path, query).await
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
    let m = core.raft.metrics().borrow().clone();
    if m.current_leader.is_none() {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "[+]node ok\n[-]leader not ok");
    }
    let probe = Query {
        stmts: vec![Statement::new("SELECT 1")],
        opts: ExecOptions::default(),
        mode: Mode::Query,
        deadline: Some(p.timeout),
    };
    match core.readers.send(probe).await {
        Ok(Ok(r)) if !matches!(r.first(), Some(StmtResult::Error { .. })) => {
            text(state, StatusCode::OK, "[+]node ok\n[+]leader ok\n[+]store ok")
        }
        _ => text(state, StatusCode::SERVICE_UNAVAILABLE, "[+]node ok\n[+]leader ok\n[-]db not ok"),
    }
}

fn leader(state: &AppState, method: &Method, p: &Params) -> Response {
    let core = match core(state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let m = core.raft.metrics().borrow().clone();
    if *method == Method::POST {
        let voters = m.membership_config.membership().voter_ids().count();
        if voters < 2 {
            return text(state, StatusCode::SERVICE_UNAVAILABLE, "not enough voters to transfer leadership");
        }
        return text(state, StatusCode::NOT_IMPLEMENTED, "leadership transfer arrives with clustering");
    }
    match m.current_leader {
        Some(id) => match status::node_json(state, core, &m, id) {
            Some(j) => json(state, &j, p.pretty),
            None => text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found"),
        },
        None => text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found"),
    }
}
