//! What every request handler can reach: the node's configuration and, once the store is open,
//! [`Core`], the addresses of the actors and the shared counters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::Addr;

use crate::actors::applier::ApplierStats;
use crate::actors::consensus::Consensus;
use crate::actors::log_store::LogStore;
use crate::actors::membership::{ClusterStats, Membership};
use crate::actors::readers::Readers;
use crate::cluster::client::Peers;
use crate::config::Config;
pub use crate::raft::leader_of;
use crate::raft::{NodeInfo, SharedRaft};

/// Version stamped into `X-RQLITE-VERSION` and `/status`.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// The git commit this binary was built from (build.rs; "unknown" when that was not known).
pub const COMMIT: &str = env!("RAFTLITE_COMMIT");

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
    pub write_queue: crate::actors::write_queue::QueueHandle,
}

impl Core {
    /// openraft's current view of this node.
    pub fn metrics(&self) -> crate::raft::Metrics {
        self.raft.get().metrics().borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.get().metrics().borrow().current_leader == Some(self.node_id)
    }

    /// The leader, if this node knows one.
    pub fn leader(&self) -> Option<NodeInfo> {
        leader_of(&self.metrics())
    }
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
    /// The leader said this node was removed from the cluster (`/cluster/removed`).
    removed: std::sync::atomic::AtomicBool,
    /// The credentials file (`-auth`); none: every request is allowed.
    pub auth: Option<super::auth::Users>,
    /// HTTPS on the API (`-http-cert`); none: plain HTTP.
    pub tls: Option<super::tls::PortTls>,
    /// Node-to-node TLS on the Raft address (`-node-cert`); none: plain HTTP.
    pub node_tls: Option<super::tls::PortTls>,
    /// `-auto-restore` fetched a backup that is loaded when this node first leads; not ready
    /// until then.
    pub restore_pending: std::sync::atomic::AtomicBool,
    /// `-auto-backup`'s figures, when it is on.
    pub uploads: OnceLock<Arc<crate::autobackup::UploadStats>>,
    /// Change data capture, when `-cdc-config` is set.
    pub cdc: OnceLock<Arc<crate::cdc::Cdc>>,
    /// The SQLite extensions every connection loads (`-extensions-path`), by file name.
    pub extensions: OnceLock<Vec<String>>,
    /// DNS discovery, when `-disco-mode` is set.
    pub disco: OnceLock<Arc<crate::cluster::discovery::Discovery>>,
}

impl AppState {
    pub fn new(
        cfg: Config,
        auth: Option<super::auth::Users>,
        tls: Option<super::tls::PortTls>,
        node_tls: Option<super::tls::PortTls>,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            cfg,
            started: chrono::Utc::now(),
            started_instant: Instant::now(),
            core: OnceLock::new(),
            last_leader_contact_ms: AtomicU64::new(0),
            leader_commit_seen: AtomicU64::new(0),
            removed: std::sync::atomic::AtomicBool::new(false),
            auth,
            tls,
            node_tls,
            restore_pending: std::sync::atomic::AtomicBool::new(false),
            uploads: OnceLock::new(),
            cdc: OnceLock::new(),
            extensions: OnceLock::new(),
            disco: OnceLock::new(),
        })
    }

    /// `https` when the API serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The leader removed this node from the cluster. A removed node may never see the log entry
    /// that removes it (the leader stops replicating to it), so the leader says so directly.
    pub fn note_removed(&self) {
        self.removed.store(true, Ordering::Relaxed);
    }

    pub fn was_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
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
