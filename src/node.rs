//! Starting and stopping one node: the data directory, the actors under their supervisors, the
//! openraft instance over our adapters, single-node bootstrap, and graceful shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::Supervisor;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::actors::applier::{AppliedState, Applier, ApplierStats};
use crate::actors::consensus::Consensus;
use crate::actors::http_front::HttpFront;
use crate::actors::log_store::LogStore;
use crate::actors::readers::Readers;
use crate::config::Config;
use crate::http::{self, AppState, Core};
use crate::raft::log_adapter::LogAdapter;
use crate::raft::network::Network;
use crate::raft::sm_adapter::SmAdapter;
use crate::raft::{numeric_id, NodeInfo, Raft};
use crate::store::log_db::LogDb;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("{0}")]
    Identity(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("{0}")]
    Log(#[from] crate::store::log_db::LogDbError),
    #[error("database: {0}")]
    Database(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// `<data-dir>/node.json`: the node's identity, fixed for the life of the data directory.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct NodeFile {
    node_id: String,
    format_version: u32,
}

const FORMAT_VERSION: u32 = 1;

/// Most read connections opened eagerly, whatever `-db-max-ro-conns` allows.
const MAX_READERS: usize = 8;

fn check_identity(dir: &Path, node_id: &str) -> Result<(), StartError> {
    let path = dir.join("node.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let f: NodeFile = serde_json::from_slice(&bytes)
                .map_err(|e| StartError::Identity(format!("{}: unreadable ({e})", path.display())))?;
            if f.node_id != node_id {
                return Err(StartError::Identity(format!(
                    "this data directory belongs to node {:?}, but -node-id is {:?}; a node id must never change",
                    f.node_id, node_id
                )));
            }
            if f.format_version != FORMAT_VERSION {
                return Err(StartError::Identity(format!(
                    "{}: unsupported format version {}",
                    path.display(),
                    f.format_version
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = NodeFile { node_id: node_id.to_string(), format_version: FORMAT_VERSION };
            let tmp = dir.join("node.json.tmp");
            let io = |source| StartError::DataDir { path: dir.display().to_string(), source };
            std::fs::write(&tmp, serde_json::to_vec_pretty(&f).unwrap_or_default()).map_err(io)?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            Ok(())
        }
        Err(source) => Err(StartError::DataDir { path: path.display().to_string(), source }),
    }
}

/// openraft's configuration from rqlite's timing flags. hashicorp/raft's "heartbeat timeout" is
/// how long a follower waits for its leader; the leader sends heartbeats ten times as often.
pub fn raft_config(cfg: &Config) -> Result<openraft::Config, StartError> {
    let hb = cfg.raft_heartbeat_timeout.as_millis() as u64;
    let el = (cfg.raft_election_timeout.as_millis() as u64).max(hb).max(20);
    let c = openraft::Config {
        cluster_name: "raftlite".into(),
        heartbeat_interval: (hb / 10).clamp(5, el / 2),
        election_timeout_min: el,
        election_timeout_max: el * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.raft_snap),
        max_in_snapshot_log_to_keep: cfg.raft_snap / 4,
        max_payload_entries: 512,
        ..Default::default()
    };
    c.validate().map_err(|e| StartError::Raft(e.to_string()))
}

/// A running node.
pub struct Node {
    pub state: Arc<AppState>,
    pub raft: Raft,
    pub http_front: actix::Addr<HttpFront>,
}

/// Start a node inside the current actix System. The HTTP API listens before the store opens.
pub async fn start(cfg: Config) -> Result<Node, StartError> {
    let dir = cfg.data_dir.clone();
    let io = |source| StartError::DataDir { path: dir.display().to_string(), source };
    std::fs::create_dir_all(dir.join("raft")).map_err(io)?;
    check_identity(&dir, &cfg.node_id)?;

    let addr =
        http::resolve(&cfg.http_addr).map_err(|source| StartError::Listen { addr: cfg.http_addr.clone(), source })?;
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|source| StartError::Listen { addr: cfg.http_addr.clone(), source })?;
    let state = AppState::new(cfg.clone());
    let st = state.clone();
    // Keep the address: an actix actor stops once no `Addr` to it is left.
    let http_front = Supervisor::start(move |_| HttpFront::new(st, listener));
    tracing::info!(addr = %cfg.http_addr, "HTTP API listening");

    // Verify the log (checksums, no holes) before anything uses it: corruption refuses to start.
    let log_path = dir.join("raft").join("log.sqlite");
    let lp = log_path.clone();
    let last_log = tokio::task::spawn_blocking(move || -> Result<u64, StartError> {
        let conn = LogDb::open(&lp)?;
        Ok(LogDb::last(&conn)?.map(|(i, _)| i + 1).unwrap_or(0))
    })
    .await
    .map_err(|e| StartError::Database(e.to_string()))??;

    let db_path: PathBuf = dir.join("db.sqlite");
    let stats = Arc::new(ApplierStats::default());
    stats.replay_bound.store(last_log, Ordering::Relaxed);
    let (p, s, fk) = (db_path.clone(), stats.clone(), cfg.fk);
    let applier = Supervisor::start(move |_| Applier::new(p, fk, s));
    let (applied, _) = applier
        .send(AppliedState)
        .await
        .map_err(|e| StartError::Database(e.to_string()))?
        .map_err(|e| StartError::Database(e.to_string()))?;
    let applied_index = applied.map(|l| l.index).unwrap_or(0);
    stats.applied_at_start.store(applied_index, Ordering::Relaxed);
    stats.applied_index.store(applied_index, Ordering::Relaxed);
    tracing::info!(applied_index, log_entries_end = last_log, "database open");

    let (p, n) = (db_path.clone(), cfg.db_max_ro_conns.min(MAX_READERS));
    let readers = Supervisor::start(move |_| Readers::new(p, fk, n));
    let lp = log_path.clone();
    let log_store = Supervisor::start(move |_| LogStore::new(lp));

    let node_id = numeric_id(&cfg.node_id);
    let sm = SmAdapter::new(applier, Some(readers.clone()), db_path.clone(), dir.join("snapshots")).map_err(io)?;
    let raft = Raft::new(node_id, Arc::new(raft_config(&cfg)?), Network, LogAdapter::new(log_store.clone()), sm)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

    let me =
        NodeInfo { id: cfg.node_id.clone(), raft_addr: cfg.raft_adv_addr.clone(), api_addr: cfg.http_adv_addr.clone() };
    let initialized = raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
    if !initialized {
        let mut members = BTreeMap::new();
        members.insert(node_id, me);
        raft.initialize(members).await.map_err(|e| StartError::Raft(e.to_string()))?;
        tracing::info!(node_id = %cfg.node_id, "bootstrapped a new single-node cluster");
    } else {
        // The only voter needs no election timeout to know it will win: ask for the election now.
        let m = raft.metrics().borrow().clone();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        if voters == [node_id] {
            let _ = raft.trigger().elect().await;
        }
    }

    let r = raft.clone();
    let apply_timeout = cfg.raft_apply_timeout;
    let consensus = Supervisor::start(move |_| Consensus::new(r, apply_timeout));
    let core = Core { consensus, readers, log_store, raft: raft.clone(), stats, node_id, db_path, log_path };
    if state.core.set(core).is_err() {
        return Err(StartError::Raft("store opened twice".into()));
    }
    Ok(Node { state, raft, http_front })
}

impl Node {
    /// Graceful stop: Raft first (no new entries), then the actors with the System.
    pub async fn shutdown(self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
