//! The HTTP API (spec §2–§10): request parsing, result rendering, the endpoint handlers and the
//! warp server that carries them. The server starts before the store is open, so `/status` and
//! `/readyz?noleader` answer at once; everything that needs the store waits for [`Core`].

// Handlers return `Result<_, Response>` so that an early answer (400, 503, 301) is one `?` away;
// the response type is warp's, and its size is not ours to choose.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod backup;
pub mod internode;
pub mod queue;
pub mod render;
pub mod request;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::Addr;
use warp::Filter;

use crate::actors::applier::ApplierStats;
use crate::actors::consensus::Consensus;
use crate::actors::log_store::LogStore;
use crate::actors::membership::{ClusterStats, Membership};
use crate::actors::readers::Readers;
use crate::cluster::client::Peers;
use crate::config::Config;
use crate::raft::SharedRaft;

/// Version stamped into `X-RQLITE-VERSION` and `/status`.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// The parts of a node that exist once the store is open.
pub struct Core {
    pub consensus: Addr<Consensus>,
    pub applier: Addr<crate::actors::applier::Applier>,
    pub readers: Readers,
    pub log_store: Addr<LogStore>,
    pub raft: SharedRaft,
    pub stats: Arc<ApplierStats>,
    pub node_id: u64,
    pub db_path: PathBuf,
    pub log_path: PathBuf,
    pub membership: Addr<Membership>,
    pub peers: Arc<Peers>,
    pub cluster_stats: Arc<ClusterStats>,
    pub snap_stats: Arc<crate::raft::sm_adapter::SnapshotStats>,
    pub snapshotter: Addr<crate::actors::snapshotter::Snapshotter>,
}

/// Everything a request handler can reach.
pub struct AppState {
    pub cfg: Config,
    pub started: chrono::DateTime<chrono::Utc>,
    pub started_instant: Instant,
    pub core: OnceLock<Core>,
    /// Milliseconds after `started_instant` of the last AppendEntries accepted from a leader
    /// (0: never). Followers use it for `freshness`.
    last_leader_contact_ms: AtomicU64,
    /// The highest commit index a leader has told this node about.
    leader_commit_seen: AtomicU64,
    /// Queued writes (`?queue`).
    pub queue: queue::WriteQueue,
}

impl AppState {
    pub fn new(cfg: Config) -> Arc<AppState> {
        Arc::new(AppState {
            queue: queue::WriteQueue::new(&cfg),
            cfg,
            started: chrono::Utc::now(),
            started_instant: Instant::now(),
            core: OnceLock::new(),
            last_leader_contact_ms: AtomicU64::new(0),
            leader_commit_seen: AtomicU64::new(0),
        })
    }

    pub fn note_leader_contact(&self) {
        let ms = self.started_instant.elapsed().as_millis() as u64;
        self.last_leader_contact_ms.store(ms.max(1), Ordering::Relaxed);
    }

    pub fn note_leader_commit(&self, index: u64) {
        self.leader_commit_seen.fetch_max(index, Ordering::Relaxed);
    }

    pub fn leader_commit_seen(&self) -> u64 {
        self.leader_commit_seen.load(Ordering::Relaxed)
    }

    /// Time since the leader last reached this node, if it ever did.
    pub fn since_leader_contact(&self) -> Option<std::time::Duration> {
        match self.last_leader_contact_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.started_instant.elapsed().saturating_sub(std::time::Duration::from_millis(ms))),
        }
    }
}

/// Serve the API on an already bound listener until the task is dropped.
pub async fn serve(state: Arc<AppState>, listener: tokio::net::TcpListener) {
    let st = warp::any().map(move || state.clone());
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let route = st
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(|state, method, path: warp::path::FullPath, query: String, headers, body| async move {
            api::dispatch(state, method, path.as_str().to_string(), query, headers, body).await
        });
    warp::serve(route).incoming(listener).run().await;
}

/// Resolve `host:port` (e.g. `localhost:4001`) to a bindable address.
pub fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("cannot resolve {addr}")))
}
