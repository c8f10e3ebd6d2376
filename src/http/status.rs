//! `/status` and `/nodes` (docs/API.md §10): what the node knows about itself and its cluster, as JSON,
//! with `key=a.b.c` selection and `pretty`.

use std::sync::atomic::Ordering;

use openraft::{RaftMetrics, ServerState};
use serde_json::{json, Value};
use warp::reply::Response;

use super::render::J;
use super::request::Params;
use super::respond::text;
use super::state::{AppState, Core, VERSION};
use crate::actors::log_store::SizeBytes;
use crate::actors::supervise;
use crate::actors::write_queue::QueueStats;
use crate::cluster::ClusterReply;
use crate::raft::NodeInfo;

type Metrics = RaftMetrics<u64, NodeInfo>;

fn file_size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// rqlite's `store.snapshot_store`: the directory, its size and the snapshots it holds, newest
/// last. raftlite keeps one: the recorded position of the database (docs/DESIGN.md §6).
fn snapshot_store(dir: &std::path::Path) -> Value {
    let current = crate::store::position::read_current(dir).ok().flatten().map(|m| m.snapshot_id);
    json!({
        "dir": dir.display().to_string(),
        "dir_size": dir_size(dir),
        "snapshots": current.iter().collect::<Vec<_>>(),
        "current": current,
    })
}

fn dir_size(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "Leader",
        ServerState::Follower => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Follower",
        ServerState::Shutdown => "Shutdown",
    }
}

fn api_url(state: &AppState, addr: &str) -> String {
    format!("{}://{addr}", state.scheme())
}

async fn store_json(state: &AppState, core: &Core) -> Value {
    let m: Metrics = core.metrics();
    let st = &core.stats;
    let leader = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
    let log_size = match core.log_store.send(SizeBytes).await {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    let nodes: Vec<Value> = m
        .membership_config
        .membership()
        .nodes()
        .map(|(id, n)| {
            json!({
                "id": n.id, "addr": n.raft_addr, "api_addr": api_url(state, &n.api_addr),
                "suffrage": if m.membership_config.membership().voter_ids().any(|v| v == *id) { "Voter" } else { "Nonvoter" },
            })
        })
        .collect();
    let wal = core.db_path.with_extension("sqlite-wal");
    let data_dir = &state.cfg.data_dir;
    json!({
        "open": true,
        "ready": m.current_leader.is_some(),
        "node_id": state.cfg.node_id,
        "addr": state.cfg.raft_adv_addr,
        "leader": {
            "node_id": leader.as_ref().map(|l| l.id.clone()).unwrap_or_default(),
            "addr": leader.as_ref().map(|l| l.raft_addr.clone()).unwrap_or_default(),
        },
        "fsm_index": m.last_applied.map(|l| l.index).unwrap_or(0),
        "fsm_term": m.last_applied.map(|l| l.leader_id.term).unwrap_or(0),
        "db_applied_index": st.applied_index.load(Ordering::Relaxed),
        "applied_index_at_start": st.applied_at_start.load(Ordering::Relaxed),
        "last_log_index_at_start": st.replay_bound.load(Ordering::Relaxed).saturating_sub(1),
        "entries_applied_since_start": st.applied_since_start.load(Ordering::Relaxed),
        "entries_replayed_at_start": st.replayed_at_start.load(Ordering::Relaxed),
        "entries_reapplied": st.reapplied_skipped.load(Ordering::Relaxed),
        "apply_batches": st.batches.load(Ordering::Relaxed),
        "num_ignored_joins": core.cluster_stats.num_ignored_joins.load(Ordering::Relaxed),
        "num_removed_before_joins": core.cluster_stats.num_removed_before_joins.load(Ordering::Relaxed),
        "num_join_req": core.cluster_stats.num_join_req.load(Ordering::Relaxed),
        "num_notify_req": core.cluster_stats.num_notify_req.load(Ordering::Relaxed),
        "num_snapshots": core.snap_stats.num_snapshots.load(Ordering::Relaxed),
        "num_snapshot_copies": core.snap_stats.num_snapshot_copies.load(Ordering::Relaxed),
        "num_restores": core.snap_stats.num_restores.load(Ordering::Relaxed),
        "num_restores_failed": core.snap_stats.num_restores_failed.load(Ordering::Relaxed),
        "num_restores_start": 0,
        "num_restores_start_skipped": core.snap_stats.num_restores_start_skipped.load(Ordering::Relaxed),
        "user_snapshots": core.snap_stats.user_snapshots.load(Ordering::Relaxed),
        "user_reaps": core.snap_stats.user_reaps.load(Ordering::Relaxed),
        "snapshot_store": snapshot_store(&state.cfg.data_dir.join("snapshots")),
        "snapshot_threshold": state.cfg.raft_snap,
        "snapshot_interval": format!("{:?}", state.cfg.raft_snap_int),
        "snapshot_wal_size": state.cfg.raft_snap_wal_size,
        "apply_timeout": format!("{:?}", state.cfg.raft_apply_timeout),
        "heartbeat_timeout": format!("{:?}", state.cfg.raft_heartbeat_timeout),
        "election_timeout": format!("{:?}", state.cfg.raft_election_timeout),
        "nodes": nodes,
        "dir": data_dir.display().to_string(),
        "dir_size": dir_size(data_dir),
        "sqlite3": {
            "path": core.db_path.display().to_string(),
            "size": file_size(&core.db_path),
            "wal_size": file_size(&wal),
            "db_size": file_size(&core.db_path) + file_size(&wal),
            "version": rusqlite::version(),
            "fk_constraints": if state.cfg.fk { "enabled" } else { "disabled" },
        },
        "raft": {
            "state": state_name(m.state),
            "term": m.current_term,
            "commit_index": m.last_applied.map(|l| l.index).unwrap_or(0),
            "applied_index": m.last_applied.map(|l| l.index).unwrap_or(0),
            "last_log_index": m.last_log_index.unwrap_or(0),
            "last_snapshot_index": m.snapshot.map(|l| l.index).unwrap_or(0),
            "purged_index": m.purged.map(|l| l.index).unwrap_or(0),
            "num_peers": m.membership_config.membership().nodes().count().saturating_sub(1),
            "last_contact": state.since_leader_contact().map(|d| format!("{d:?}")).unwrap_or_else(|| "never".into()),
            "voter": m.membership_config.membership().voter_ids().any(|v| v == core.node_id),
            "log_size": log_size,
            "log_path": core.log_path.display().to_string(),
            "latest_configuration": format!("{}", m.membership_config.membership()),
        },
    })
}

fn select(mut v: Value, key: Option<&str>) -> Value {
    let Some(key) = key.filter(|k| !k.is_empty()) else { return v };
    for part in key.split('.') {
        v = match v {
            Value::Object(mut o) => match o.remove(part) {
                Some(x) => x,
                None => return json!({}),
            },
            _ => return json!({}),
        };
    }
    v
}

/// The write queue's settings and counters (before the store opens: the settings alone).
fn queue_json(state: &AppState) -> Value {
    let fresh;
    let q = match state.core.get() {
        Some(c) => &*c.write_queue.stats,
        None => {
            fresh = QueueStats::new(&state.cfg);
            &fresh
        }
    };
    json!({
        "max_size": q.capacity,
        "batch_size": q.batch_size,
        "timeout": format!("{:?}", q.timeout),
        "tx": q.use_tx,
        "depth": q.depth.load(Ordering::Relaxed),
        "sequence_number": q.last_written.load(Ordering::Relaxed),
    })
}

/// `GET /status`.
pub async fn status(state: &AppState, p: &Params) -> Result<J, Response> {
    let store = match state.core.get() {
        Some(core) => store_json(state, core).await,
        None => json!({"open": false, "ready": false, "node_id": state.cfg.node_id, "addr": state.cfg.raft_adv_addr}),
    };
    let now = chrono::Utc::now();
    let restarts: serde_json::Map<String, Value> =
        supervise::restarts().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let doc = json!({
        "store": store,
        "node": {
            "start_time": state.started.to_rfc3339(),
            "current_time": now.to_rfc3339(),
            "uptime": format!("{:?}", state.started_instant.elapsed()),
        },
        "build": {
            "version": VERSION,
            "compiler": "rustc",
            "branch": "main",
            "commit": super::state::COMMIT,
        },
        "http": {
            "bind_addr": state.cfg.http_addr,
            "adv_addr": state.cfg.http_adv_addr,
            "auth": if state.auth.is_some() { "enabled" } else { "disabled" },
            "tls": state.tls.is_some(),
            "mutual_tls": state.tls.as_ref().is_some_and(|t| t.mutual),
            "allow_origin": state.cfg.http_allow_origin,
            "max_body_bytes": state.cfg.max_body_bytes,
            "queue": { "_default": queue_json(state) },
        },
        "runtime": {
            "GOOS": std::env::consts::OS,
            "GOARCH": std::env::consts::ARCH,
            "num_cpu": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "version": "rust",
        },
        "os": {
            "pid": std::process::id(),
            "executable": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
            "hostname": std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_default(),
        },
        "actors": { "restarts": restarts },
        "cluster": state.core.get().map(|c| json!({
            "num_join_req": c.cluster_stats.num_join_req.load(Ordering::Relaxed),
            "num_notify_req": c.cluster_stats.num_notify_req.load(Ordering::Relaxed),
            "num_remove_req": c.cluster_stats.num_remove_req.load(Ordering::Relaxed),
            "num_reaped": c.cluster_stats.num_reaped.load(Ordering::Relaxed),
            "addr": state.cfg.raft_adv_addr,
            "api_addr": api_url(state, &state.cfg.http_adv_addr),
        })).unwrap_or_else(|| json!({})),
        "network": { "bind_addr": state.cfg.raft_addr, "adv_addr": state.cfg.raft_adv_addr,
            "tls": state.node_tls.is_some(),
            "mutual_tls": state.node_tls.as_ref().is_some_and(|t| t.mutual),
        },
        "extensions": {
            "names": state.extensions.get().cloned().unwrap_or_default(),
            "dir": state.cfg.data_dir.join(crate::store::extensions::DIR),
        },
        "cmdline": state.cfg.cmdline,
    });
    let mut doc = doc;
    if let Some(u) = state.uploads.get() {
        let last = u.last.lock().ok().and_then(|l| l.clone());
        doc["auto_backups"] = json!({
            "target": u.target.lock().map(|t| t.clone()).unwrap_or_default(),
            "num_uploads_ok": u.num_uploads_ok.load(Ordering::Relaxed),
            "num_uploads_fail": u.num_uploads_fail.load(Ordering::Relaxed),
            "num_uploads_skipped": u.num_uploads_skipped.load(Ordering::Relaxed),
            "num_uploads_skipped_id": u.num_uploads_skipped_id.load(Ordering::Relaxed),
            "upload_in_progress": u.in_progress.load(Ordering::Relaxed),
            "last_upload_time": last.as_ref().map(|l| l.at.to_rfc3339()),
            "last_upload_bytes": last.as_ref().map(|l| l.bytes),
            "last_upload_id": last.as_ref().map(|l| l.id.clone()),
            "last_upload_name": last.as_ref().map(|l| l.name.clone()),
            "last_upload_duration": last.as_ref().map(|l| format!("{:?}", l.took)),
            "last_upload_seconds": last.as_ref().map(|l| l.took.as_secs_f64()),
        });
    }
    if let Some(c) = state.cdc.get() {
        doc["cdc"] = c.status(state.core.get().is_some_and(|core| core.is_leader()));
    }
    if let Some(d) = state.disco.get() {
        doc["disco"] = d.status();
    }
    if state.cfg.auto_restore.is_some() {
        doc["auto_restore"] = json!({ "pending": state.restore_pending.load(Ordering::Relaxed) });
    }
    Ok(J::from_serde(&select(doc, p.get("key"))))
}

/// One node object as `/nodes` and `/leader` show it, probed over the cluster service.
pub async fn probe_node(
    state: &AppState,
    core: &Core,
    m: &Metrics,
    id: u64,
    timeout: std::time::Duration,
) -> Option<J> {
    let mem = m.membership_config.membership();
    let n = mem.get_node(&id)?.clone();
    let started = std::time::Instant::now();
    let probe = core
        .peers
        .call::<_, ClusterReply>(&n.raft_addr, "/cluster/meta", &(), timeout.min(std::time::Duration::from_secs(30)))
        .await;
    let elapsed = started.elapsed();
    let mut o = J::obj();
    o.put("id", J::s(n.id.clone()));
    let (api, version, error) = match probe {
        Ok(ClusterReply::Meta(meta)) => (meta.api_addr, meta.version, None),
        Ok(other) => (n.api_addr.clone(), String::new(), Some(format!("unexpected answer {other:?}"))),
        Err(e) => (n.api_addr.clone(), String::new(), Some(e.to_string())),
    };
    o.put("api_addr", J::s(api_url(state, &api)));
    o.put("addr", J::s(n.raft_addr.clone()));
    o.put("version", J::s(version));
    o.put("voter", J::Bool(mem.voter_ids().any(|v| v == id)));
    o.put("reachable", J::Bool(error.is_none()));
    o.put("leader", J::Bool(m.current_leader == Some(id)));
    o.put("time", J::Float(elapsed.as_secs_f64()));
    o.put("time_s", J::s(format!("{elapsed:?}")));
    if let Some(e) = error {
        o.put("error", J::s(e));
    }
    Some(o)
}

/// `GET /nodes` (legacy map, or `ver=2` list), every node probed concurrently.
pub async fn nodes(state: &AppState, p: &Params) -> Result<J, Response> {
    let Some(core) = state.core.get() else {
        return Err(text(state, http::StatusCode::SERVICE_UNAVAILABLE, "store not open"));
    };
    let m: Metrics = core.metrics();
    let mem = m.membership_config.membership();
    let mut ids: Vec<u64> =
        if p.has("nonvoters") { mem.nodes().map(|(id, _)| *id).collect() } else { mem.voter_ids().collect() };
    ids.sort_by_key(|id| mem.get_node(id).map(|n| n.id.clone()).unwrap_or_default());
    let probes = futures::future::join_all(ids.iter().map(|id| probe_node(state, core, &m, *id, p.timeout))).await;
    let items: Vec<(String, J)> =
        ids.iter().zip(probes).filter_map(|(id, j)| Some((mem.get_node(id)?.id.clone(), j?))).collect();
    if p.get("ver") == Some("2") {
        let mut o = J::obj();
        o.put("nodes", J::Arr(items.into_iter().map(|(_, j)| j).collect()));
        Ok(o)
    } else {
        Ok(J::Obj(items))
    }
}

/// `GET /metrics`: Prometheus text exposition. State-mirroring gauges are refreshed here.
pub async fn metrics(state: &AppState) -> Response {
    use metrics::{counter, gauge};
    if let Some(core) = state.core.get() {
        let m: Metrics = core.metrics();
        gauge!("raftlite_raft_term").set(m.current_term as f64);
        for s in ["Leader", "Follower", "Candidate", "Learner", "Shutdown"] {
            let now = format!("{:?}", m.state) == s;
            gauge!("raftlite_raft_state", "state" => s).set(if now { 1.0 } else { 0.0 });
        }
        gauge!("raftlite_raft_is_leader").set(if m.current_leader == Some(core.node_id) { 1.0 } else { 0.0 });
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        gauge!("raftlite_raft_applied_index").set(applied as f64);
        gauge!("raftlite_raft_commit_index").set(applied.max(state.leader_commit_seen()) as f64);
        gauge!("raftlite_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
        gauge!("raftlite_raft_snapshot_index").set(m.snapshot.map(|l| l.index).unwrap_or(0) as f64);
        if let Some(rep) = &m.replication {
            let last = m.last_log_index.unwrap_or(0);
            for (id, matched) in rep.iter().filter(|(id, _)| **id != core.node_id) {
                let name = m.membership_config.membership().get_node(id).map(|n| n.id.clone()).unwrap_or_default();
                let lag = last.saturating_sub(matched.map(|l| l.index).unwrap_or(0));
                gauge!("raftlite_raft_replication_lag_entries", "follower" => name).set(lag as f64);
            }
        }
        if let Ok(Ok(n)) = core.log_store.send(SizeBytes).await {
            gauge!("raftlite_log_size_bytes").set(n as f64);
        }
        gauge!("raftlite_sqlite_db_size_bytes").set(file_size(&core.db_path) as f64);
        gauge!("raftlite_sqlite_wal_size_bytes").set(file_size(&core.db_path.with_extension("sqlite-wal")) as f64);
        let s = &core.snap_stats;
        counter!("raftlite_snapshots_total").absolute(s.num_snapshots.load(Ordering::Relaxed));
        counter!("raftlite_snapshot_copies_total").absolute(s.num_snapshot_copies.load(Ordering::Relaxed));
        counter!("raftlite_restores_total").absolute(s.num_restores.load(Ordering::Relaxed));
        counter!("raftlite_restores_failed_total").absolute(s.num_restores_failed.load(Ordering::Relaxed));
    }
    if let Some(c) = state.cdc.get() {
        let q = &c.queue.stats;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        gauge!("raftlite_cdc_queue_depth").set(r(&q.depth) as f64);
        gauge!("raftlite_cdc_queue_bytes").set(r(&q.bytes) as f64);
        gauge!("raftlite_cdc_captured_index").set(r(&q.captured_index) as f64);
        gauge!("raftlite_cdc_high_water_mark").set(r(&q.high_water_mark) as f64);
        gauge!("raftlite_cdc_delivered_index").set(r(&q.delivered_index) as f64);
        counter!("raftlite_cdc_events_captured_total").absolute(r(&q.events_captured));
        counter!("raftlite_cdc_events_dropped_total").absolute(r(&q.events_dropped));
        counter!("raftlite_cdc_groups_from_snapshots_total").absolute(r(&q.groups_from_snapshots));
    }
    match crate::metrics::render() {
        Some(text) => {
            let mut r = Response::new(text.into());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r.headers_mut().insert("X-RQLITE-VERSION", http::HeaderValue::from_static(VERSION));
            r
        }
        None => text(state, http::StatusCode::SERVICE_UNAVAILABLE, "metrics are disabled (-metrics=false)"),
    }
}

/// `GET /debug/vars`: rqlite-style expvar JSON with the counters tools read; `key=` selects one.
pub fn debug_vars(state: &AppState, p: &Params) -> Response {
    let mut doc = json!({ "cmdline": state.cfg.cmdline, "memstats": {} });
    if let Some(core) = state.core.get() {
        let s = &core.snap_stats;
        let c = &core.cluster_stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        doc["http"] = json!({
            "user_snapshots": load(&s.user_snapshots),
            "user_reaps": load(&s.user_reaps),
        });
        doc["store"] = json!({
            "num_snapshots": load(&s.num_snapshots),
            "num_restores": load(&s.num_restores),
            "num_restores_failed": load(&s.num_restores_failed),
            "num_restores_start": 0,
            "num_restores_start_skipped": load(&s.num_restores_start_skipped),
            "num_ignored_joins": load(&c.num_ignored_joins),
            "num_removed_before_joins": load(&c.num_removed_before_joins),
            "entries_applied_since_start": load(&core.stats.applied_since_start),
        });
        doc["cluster"] = json!({
            // raftlite never forces a new inter-node connection; kept for tools that read it.
            "num_client_force_new_conn": 0,
            "num_join_req": load(&c.num_join_req),
            "num_notify_req": load(&c.num_notify_req),
            "num_remove_req": load(&c.num_remove_req),
        });
        // There is no older snapshot format to upgrade from: `upgrade_ok` stays 0.
        doc["snapshot"] = json!({ "num_copies": load(&s.num_snapshot_copies), "upgrade_ok": 0 });
    }
    let restarts: serde_json::Map<String, Value> =
        supervise::restarts().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    doc["actors"] = json!({ "restarts": restarts });
    let out = match p.get("key") {
        Some(k) => doc.get(k).cloned().unwrap_or_else(|| json!({})),
        None => doc,
    };
    let mut r = Response::new(J::from_serde(&out).encode(p.pretty).into());
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json; charset=utf-8"));
    r.headers_mut().insert("X-RQLITE-VERSION", http::HeaderValue::from_static(VERSION));
    r
}
