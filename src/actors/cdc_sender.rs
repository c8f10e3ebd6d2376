//! The `CdcSender` actor: delivery of change data capture (`-cdc-config`, docs/DESIGN.md §9b).
//! Every node runs one; only the leader sends. It reads its own queue (src/cdc/queue.rs) after
//! what is known delivered, batches up to `max_batch_size` groups (waiting up to
//! `max_batch_delay` for a batch to fill), and POSTs rqlite's envelope to the endpoint, in log
//! order. A 200 or 202 is a delivery; anything else is retried after a backoff, for ever unless
//! `transmit_max_retries` is set (a batch given up is counted and logged, never silently lost).
//!
//! Every `high_watermark_interval` the leader proposes how far it delivered
//! (`Command::CdcHighWater`); every node applies it to prune its queue, and a new leader starts
//! after it. What a leader delivered after its last mark is sent again by the next one: delivery
//! is at least once, and consumers de-duplicate on `index`.
//!
//! The delivery loop is a task of its own; the actor restarts it if it ever ends (a panic), and
//! counts the restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use http_body_util::Full;

use crate::actors::consensus::propose;
use crate::actors::supervise::note_restart;
use crate::cdc::config::Sink;
use crate::cdc::event::envelope;
use crate::cdc::queue::Queued;
use crate::cdc::Cdc;
use crate::http::outgoing::{ClientTls, Outgoing};
use crate::http::AppState;
use crate::store::command::Command;

const ACTOR: &str = "cdc_sender";

pub struct CdcSender {
    state: Arc<AppState>,
    cdc: Arc<Cdc>,
    client: Option<Outgoing>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// A high-water mark is being proposed (once it is applied here, the queue's own mark says
    /// what was shared).
    proposing: bool,
}

/// The HTTP client for the endpoint (`None` for stdout), with the configuration's TLS.
pub fn client_for(cdc: &crate::cdc::config::CdcConfig) -> Result<Option<Outgoing>, String> {
    let Sink::Http(url) = &cdc.sink else { return Ok(None) };
    let tls = if url.starts_with("https://") {
        let t = &cdc.tls;
        let identity = t.identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let config = crate::http::tls::client_tls(t.ca_cert.as_deref(), identity, t.insecure_skip_verify)
            .map_err(|e| format!("CDC endpoint TLS: {e}"))?;
        let server_name = t
            .server_name
            .as_ref()
            .map(|n| rustls_pki_types::ServerName::try_from(n.clone()))
            .transpose()
            .map_err(|e| format!("CDC server_name: {e}"))?;
        Some(ClientTls { config: Arc::new(config), server_name })
    } else {
        None
    };
    Outgoing::new(None, tls).map(Some).map_err(|e| format!("CDC endpoint: {e}"))
}

impl CdcSender {
    pub fn new(state: Arc<AppState>, cdc: Arc<Cdc>, client: Option<Outgoing>) -> CdcSender {
        CdcSender { state, cdc, client, task: None, proposing: false }
    }

    fn start_delivery(&mut self) {
        let (state, cdc, client) = (self.state.clone(), self.cdc.clone(), self.client.clone());
        self.task = Some(tokio::spawn(deliver(state, cdc, client)));
    }
}

impl Actor for CdcSender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for result in ["ok", "failed"] {
            metrics::counter!("raftlite_cdc_batches_total", "result" => result).increment(0);
        }
        metrics::counter!("raftlite_cdc_events_sent_total").increment(0);
        metrics::counter!("raftlite_cdc_batches_given_up_total").increment(0);
        self.start_delivery();
        ctx.run_interval(self.cdc.config.high_watermark_interval, |act, ctx| act.share_mark(ctx));
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            if act.task.as_ref().is_some_and(|t| t.is_finished()) {
                tracing::error!("CDC delivery stopped; restarting it");
                note_restart(ACTOR);
                act.start_delivery();
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Supervised for CdcSender {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        note_restart(ACTOR);
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.proposing = false;
    }
}

impl CdcSender {
    /// On the leader: propose how far delivery got, if it moved since the last mark.
    fn share_mark(&mut self, ctx: &mut Context<Self>) {
        let Some(core) = self.state.core.get() else { return };
        let delivered = self.cdc.queue.stats.delivered_index.load(Ordering::Relaxed);
        let shared = self.cdc.queue.stats.high_water_mark.load(Ordering::Relaxed);
        if self.proposing || !core.is_leader() || delivered <= shared {
            return;
        }
        self.proposing = true;
        let consensus = core.consensus.clone();
        let fut = async move {
            propose(&consensus, Command::CdcHighWater(delivered)).await.map(|_| ()).map_err(|e| e.to_string())
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, _| {
            act.proposing = false;
            if let Err(error) = res {
                tracing::debug!(%error, "CDC: high-water mark not shared (retried next interval)");
            }
        }));
    }
}

/// How long a follower waits before looking again whether it leads.
const IDLE: Duration = Duration::from_millis(200);

fn leads(state: &AppState) -> bool {
    state.core.get().is_some_and(|c| c.is_leader())
}

/// Read the queue off the runtime's threads (a SQLite query).
async fn read(cdc: &Arc<Cdc>, after: u64, limit: usize) -> Vec<Queued> {
    let c = cdc.clone();
    match tokio::task::spawn_blocking(move || c.queue.read_after(after, limit)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "CDC: cannot read the queue");
            Vec::new()
        }
        Err(e) => {
            tracing::error!(error = %e, "CDC: queue read failed");
            Vec::new()
        }
    }
}

/// The delivery loop (see the module comment).
async fn deliver(state: Arc<AppState>, cdc: Arc<Cdc>, client: Option<Outgoing>) {
    let cfg = &cdc.config;
    loop {
        if !leads(&state) {
            let _ = tokio::time::timeout(IDLE, cdc.queued.notified()).await;
            continue;
        }
        // The count of undelivered groups says when a batch is full without reading the queue.
        // It is a hint (groups pruned by the high-water mark or dropped from a full queue are not
        // subtracted): the queue itself decides what is sent, and an empty read resets it.
        let pending = &cdc.queue.stats.pending;
        let waiting = || pending.load(Ordering::Relaxed) as usize;
        if waiting() == 0 {
            let _ = tokio::time::timeout(IDLE, cdc.queued.notified()).await;
        }
        // Let a batch that is not full fill for up to max_batch_delay.
        let deadline = tokio::time::Instant::now() + cfg.max_batch_delay;
        while waiting() < cfg.max_batch_size && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline, cdc.queued.notified()).await;
        }
        let from = cdc.queue.done_through();
        let mut batch = read(&cdc, from, cfg.max_batch_size).await;
        if batch.is_empty() {
            pending.store(0, Ordering::Relaxed);
            continue;
        }
        let mut attempt = 0u32;
        let outcome = loop {
            if attempt > 0 {
                // Read the batch again: while the endpoint was failing, a full queue may have
                // dropped its oldest groups (counted there), and those must not be sent after all.
                batch = read(&cdc, from, cfg.max_batch_size).await;
                if batch.is_empty() {
                    break Outcome::NoLongerLeader;
                }
            }
            let (first, last) = (batch[0].index, batch[batch.len() - 1].index);
            let groups: Vec<&str> = batch.iter().map(|g| g.json.as_str()).collect();
            let body = Bytes::from(envelope(cfg.service_id.as_deref(), &state.cfg.node_id, &groups));
            let sent = match (&cfg.sink, &client) {
                (Sink::Http(url), Some(c)) => post(c, url, body, cfg.transmit_timeout).await,
                _ => print(&body),
            };
            let Err(reason) = sent else { break Outcome::Sent };
            attempt += 1;
            cdc.sent.failures.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("raftlite_cdc_batches_total", "result" => "failed").increment(1);
            if cfg.transmit_max_retries > 0 && attempt > cfg.transmit_max_retries {
                cdc.sent.batches_given_up.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("raftlite_cdc_batches_given_up_total").increment(1);
                tracing::error!(
                    first_index = first,
                    last_index = last,
                    attempts = attempt,
                    %reason,
                    "CDC: batch given up after transmit_max_retries; its events are not sent"
                );
                break Outcome::GivenUp;
            }
            let wait = cfg.backoff(attempt);
            tracing::warn!(first_index = first, last_index = last, attempt, %reason, retry_in = ?wait, "CDC: delivery failed");
            tokio::time::sleep(wait).await;
            if !leads(&state) {
                break Outcome::NoLongerLeader;
            }
        };
        if outcome == Outcome::NoLongerLeader {
            continue;
        }
        let last = batch[batch.len() - 1].index;
        let events: u64 = batch.iter().map(|g| g.events).sum();
        cdc.queue.delivered(last, batch.len() as u64);
        if outcome == Outcome::Sent {
            let now_ms = chrono::Utc::now().timestamp_millis();
            cdc.sent.batches_ok.fetch_add(1, Ordering::Relaxed);
            cdc.sent.events_sent.fetch_add(events, Ordering::Relaxed);
            cdc.sent.last_ok_ms.store(now_ms as u64, Ordering::Relaxed);
            metrics::counter!("raftlite_cdc_batches_total", "result" => "ok").increment(1);
            metrics::counter!("raftlite_cdc_events_sent_total").increment(events);
            for g in &batch {
                if g.commit_timestamp > 0 {
                    let lag_ms = (now_ms - g.commit_timestamp / 1_000_000).max(0);
                    metrics::histogram!("raftlite_cdc_delivery_lag_seconds").record(lag_ms as f64 / 1000.0);
                    cdc.sent.last_lag_ms.store(lag_ms as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

/// How sending one batch ended.
#[derive(PartialEq)]
enum Outcome {
    Sent,
    /// Failed `transmit_max_retries` times more: delivery moves past it.
    GivenUp,
    /// Leadership moved while retrying (the new leader sends it), or nothing is left to send.
    NoLongerLeader,
}

/// POST one batch; `Ok` on 200 or 202.
async fn post(client: &Outgoing, url: &str, body: Bytes, timeout: Duration) -> Result<(), String> {
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.into()))
        .map_err(|e| format!("bad request: {e}"))?;
    let started = Instant::now();
    let resp = client.send(url, req, timeout).await.map_err(|e| e.to_string())?;
    metrics::histogram!("raftlite_cdc_post_seconds").record(started.elapsed().as_secs_f64());
    match resp.status() {
        http::StatusCode::OK | http::StatusCode::ACCEPTED => Ok(()),
        s => Err(format!(
            "endpoint answered {s}: {}",
            String::from_utf8_lossy(&resp.body()[..resp.body().len().min(200)])
        )),
    }
}

/// Write one batch as a line on standard output.
fn print(body: &Bytes) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(body).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush()).map_err(|e| e.to_string())
}
