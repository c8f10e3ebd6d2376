//! The data endpoints (docs/API.md §4–§9): `/db/execute` (plain and queued), `/db/query`,
//! `/db/request` and `/db/sql`. A write is rewritten for determinism (`store::sql`), proposed
//! through the `Consensus` actor, and answered with the applied results; a read passes the
//! read-consistency gate (`consistency`) and runs on the read pool, or through the log at `strong`.

use std::time::Instant;

use http::{Method, StatusCode};
use warp::reply::Response;

use super::consistency::read_gate;
use super::endpoint::Endpoint;
use super::forward::{not_leader, Fwd};
use super::render::J;
use super::request::{parse_json_statements, BadRequest, Level, Params};
use super::respond::{bad_request, core, json, result_envelope, text, unavailable};
use super::state::{AppState, Core};
use crate::actors::consensus::{self, ProposeError};
use crate::actors::readers::{Classify, Query};
use crate::actors::write_queue::Enqueued;
use crate::store::command::{Command, ExecOptions, Statement};
use crate::store::db::{step_budget, Mode};
use crate::store::sql::{self, RewriteOptions, SystemEntropy};

/// Serve a data endpoint: parse its statements, then execute, query or request.
pub async fn handle(state: &AppState, ep: Endpoint, p: &Params, fwd: &Fwd) -> Response {
    let plain = fwd
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start().to_ascii_lowercase().starts_with("text/plain"))
        .unwrap_or(false);
    let stmts = match statements(&fwd.method, ep, p, plain, &fwd.body) {
        Ok(s) => s,
        Err(e) => return bad_request(state, e),
    };
    if ep == Endpoint::Sql {
        return sql_endpoint(state, p, stmts);
    }
    if ep == Endpoint::Execute && p.has("queue") {
        return queued_execute(state, p, stmts).await;
    }
    let started = Instant::now();
    if let Some(r) = early_answer(state, p, &stmts, started) {
        return r;
    }
    let core = match core(state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let req = Req { state, core, p, fwd, started };
    match ep {
        Endpoint::Execute => execute(req, stmts).await,
        Endpoint::Query => query_endpoint(req, stmts).await,
        _ => request(req, stmts).await,
    }
}

/// What every handler of a data request needs.
#[derive(Clone, Copy)]
struct Req<'a> {
    state: &'a AppState,
    core: &'a Core,
    p: &'a Params,
    fwd: &'a Fwd,
    started: Instant,
}

/// The statements of a data request, from `q=`, a text/plain body or a JSON body.
fn statements(
    method: &Method,
    ep: Endpoint,
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
    if plain && ep != Endpoint::Request {
        let s = std::str::from_utf8(body).map_err(|_| BadRequest("request body is not valid UTF-8".into()))?;
        if s.trim().is_empty() {
            return Ok(Vec::new());
        }
        return Ok(vec![Statement::new(s)]);
    }
    let stmts = parse_json_statements(body)?;
    // An empty list is a flush barrier for `queue&wait` (docs/API.md §6), and a bad request otherwise.
    let barrier = ep == Endpoint::Execute && params.has("queue") && params.has("wait");
    if stmts.is_empty() && !barrier {
        return Err(BadRequest("no statements".into()));
    }
    Ok(stmts)
}

/// Sets its flag when dropped: a read whose client went away (hyper drops the request's future
/// when the connection closes) is interrupted instead of running on.
#[derive(Default)]
struct CancelOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A statement's time limit: the request's `db_timeout`, else `-db-timeout`; none when zero.
fn time_limit(state: &AppState, p: &Params) -> Option<std::time::Duration> {
    Some(p.db_timeout.unwrap_or(state.cfg.db_timeout)).filter(|d| !d.is_zero())
}

fn exec_options(state: &AppState, p: &Params) -> ExecOptions {
    ExecOptions {
        transaction: p.transaction,
        // Writes count work, not time, so every replica stops at the same instruction.
        step_budget: time_limit(state, p).map(step_budget).unwrap_or(0),
        qualify_columns: p.qualify_columns,
        proposed_at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

/// Rewrite non-deterministic SQL (docs/API.md §8) unless the client opted out.
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

/// The answers every data endpoint gives before any work: nothing to run, or a disallowed PRAGMA
/// (which fails the whole request, docs/API.md §8).
fn early_answer(state: &AppState, p: &Params, stmts: &[Statement], started: Instant) -> Option<Response> {
    if stmts.is_empty() {
        return Some(result_envelope(state, p, &[], None, started, None));
    }
    if stmts.iter().any(|s| sql::has_disallowed_pragma(&s.sql)) {
        return Some(result_envelope(state, p, &[], Some("disallowed pragma"), started, None));
    }
    None
}

async fn propose(r: Req<'_>, cmd: Command) -> Response {
    let Req { state, core, p, fwd, started } = r;
    match consensus::propose(&core.consensus, cmd).await {
        Ok(resp) => result_envelope(state, p, &resp.results, resp.error.as_deref(), started, Some(resp.raft_index)),
        Err(ProposeError::NotLeader { leader }) => not_leader(state, p, leader, fwd).await,
        Err(e @ (ProposeError::Stopped(_) | ProposeError::Restarting(_))) => {
            text(state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        Err(e) => result_envelope(state, p, &[], Some(&e.to_string()), started, None),
    }
}

async fn execute(r: Req<'_>, mut stmts: Vec<Statement>) -> Response {
    preprocess(r.p, &mut stmts);
    let cmd = Command::Execute { stmts, opts: exec_options(r.state, r.p), seed: rand::random() };
    propose(r, cmd).await
}

/// `POST /db/execute?queue` (docs/API.md §6): rewrite, queue, answer with the sequence number; with
/// `wait`, once the batch holding the request has committed (`timeout` → 408).
async fn queued_execute(state: &AppState, p: &Params, mut stmts: Vec<Statement>) -> Response {
    let wait = p.has("wait");
    if stmts.is_empty() && !wait {
        return text(state, StatusCode::BAD_REQUEST, "empty statement list");
    }
    if stmts.iter().any(|s| sql::has_disallowed_pragma(&s.sql)) {
        return text(state, StatusCode::BAD_REQUEST, "disallowed pragma");
    }
    let core = match core(state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !p.noleader && core.raft.get().metrics().borrow().current_leader.is_none() {
        return text(state, StatusCode::SERVICE_UNAVAILABLE, "leader not found");
    }
    preprocess(p, &mut stmts);
    let Enqueued { seq, done } = match core.write_queue.push(stmts, wait).await {
        Ok(x) => x,
        Err(e) => return text(state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    if let Some(done) = done {
        if tokio::time::timeout(p.timeout, done).await.is_err() {
            return text(state, StatusCode::REQUEST_TIMEOUT, "timeout waiting for the queued write to commit");
        }
    }
    let mut o = J::obj();
    o.put("results", J::Arr(Vec::new()));
    o.put("sequence_number", J::Int(seq as i64));
    json(state, &o, p.pretty)
}

async fn local_read(r: Req<'_>, stmts: Vec<Statement>, mode: Mode) -> Response {
    let Req { state, core, p, started, .. } = r;
    // Dropped with this future when the client disconnects: the reader then stops the query.
    let cancel = CancelOnDrop::default();
    let q = Query {
        stmts,
        opts: exec_options(state, p),
        mode,
        deadline: time_limit(state, p),
        cancel: Some(cancel.0.clone()),
    };
    match core.readers.send(q).await {
        Ok(Ok(results)) => result_envelope(state, p, &results, None, started, None),
        Ok(Err(e)) => result_envelope(state, p, &[], Some(&e.to_string()), started, None),
        Err(e) => unavailable(state, "readers", e),
    }
}

async fn query_endpoint(r: Req<'_>, mut stmts: Vec<Statement>) -> Response {
    let Req { state, core, p, fwd, .. } = r;
    if let Err(resp) = read_gate(state, core, p, p.level, fwd).await {
        return resp;
    }
    if p.level == Level::Strong {
        preprocess(p, &mut stmts);
        let cmd = Command::Query { stmts, opts: exec_options(state, p), seed: rand::random() };
        return propose(r, cmd).await;
    }
    local_read(r, stmts, Mode::Query).await
}

async fn request(r: Req<'_>, mut stmts: Vec<Statement>) -> Response {
    let Req { state, core, p, fwd, started } = r;
    let all_reads = match core.readers.send(Classify(stmts.clone())).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return result_envelope(state, p, &[], Some(&e.to_string()), started, None),
        Err(e) => return unavailable(state, "readers", e),
    };
    if all_reads && p.level != Level::Strong {
        if let Err(resp) = read_gate(state, core, p, p.level, fwd).await {
            return resp;
        }
        return local_read(r, stmts, Mode::Request).await;
    }
    preprocess(p, &mut stmts);
    let cmd = Command::Request { stmts, opts: exec_options(state, p), seed: rand::random() };
    propose(r, cmd).await
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
