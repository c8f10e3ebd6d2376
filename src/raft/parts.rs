//! What a `Raft` is built from: the node id, openraft's config, the network and the adapters over
//! this node's actors. Used once at start and again by the `Consensus` actor whenever it rebuilds
//! Raft after a fatal error, so both builds are the same.

use std::path::PathBuf;
use std::sync::Arc;

use actix::Addr;

use crate::actors::applier::Applier;
use crate::actors::log_store::{LogStore, Recover};
use crate::actors::readers::Readers;
use crate::cluster::client::Peers;
use crate::raft::log_adapter::LogAdapter;
use crate::raft::network::Network;
use crate::raft::presend::Presend;
use crate::raft::sm_adapter::{SmAdapter, SnapshotStats};
use crate::raft::Raft;

#[derive(Clone)]
pub struct RaftParts {
    pub node_id: u64,
    pub config: Arc<openraft::Config>,
    pub peers: Arc<Peers>,
    pub log_store: Addr<LogStore>,
    pub applier: Addr<Applier>,
    pub readers: Readers,
    pub db_path: PathBuf,
    pub snap_dir: PathBuf,
    pub snap_stats: Arc<SnapshotStats>,
    /// `-compress-snap-transport`.
    pub compress_snapshots: bool,
    /// `-cdc-config`: snapshots carry undelivered changes.
    pub cdc: Option<Arc<crate::cdc::Cdc>>,
}

impl RaftParts {
    /// A new `Raft` over the stores as they are on disk now.
    pub async fn build(&self) -> Result<Raft, String> {
        match self.log_store.send(Recover).await {
            Ok(Ok(_)) => {}
            Ok(Err(f)) => return Err(format!("raft log: {f}")),
            Err(e) => return Err(format!("raft log: {e}")),
        }
        let sm = SmAdapter::new(
            self.applier.clone(),
            Some(self.readers.clone()),
            self.db_path.clone(),
            self.snap_dir.clone(),
            self.snap_stats.clone(),
            self.cdc.clone(),
        )
        .map_err(|e| format!("{}: {e}", self.snap_dir.display()))?;
        let presend = Arc::new(Presend::new(self.node_id, self.peers.clone()));
        let log = LogAdapter::new(self.log_store.clone())
            .with_snapshot_guard(self.snap_dir.clone(), self.snap_stats.clone())
            .with_presend(presend.clone());
        let network = Network::new(self.peers.clone(), self.compress_snapshots);
        let raft = Raft::new(self.node_id, self.config.clone(), network, log, sm).await.map_err(|e| e.to_string())?;
        presend.attach(&raft);
        Ok(raft)
    }
}
