//! What a `Raft` is built from: the node id, openraft's config, the network and the adapters over
//! this node's actors. Used once at start and again by the `Consensus` actor whenever it rebuilds
//! Raft after a fatal error, so both builds are the same.

use std::path::PathBuf;
use std::sync::Arc;

use actix::Addr;

use crate::actors::applier::Applier;
use crate::actors::log_store::{GetMeta, LogStore, PutMeta, Recover};
use crate::actors::readers::Readers;
use crate::cluster::client::Peers;
use crate::raft::log_adapter::LogAdapter;
use crate::raft::network::Network;
use crate::raft::presend::Presend;
use crate::raft::sm_adapter::{SmAdapter, SnapshotStats};
use crate::raft::Raft;
use crate::store::codec;
use crate::store::log_db::{KEY_PRESEND_TERM, KEY_VOTE};

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
        self.log(Recover).await?;
        self.step_down().await?;
        let sm = SmAdapter::new(
            self.applier.clone(),
            Some(self.readers.clone()),
            self.db_path.clone(),
            self.snap_dir.clone(),
            self.snap_stats.clone(),
            self.cdc.clone(),
        )
        .map_err(|e| format!("{}: {e}", self.snap_dir.display()))?;
        let presend = Arc::new(Presend::new(self.node_id, self.peers.clone(), self.log_store.clone()));
        let log = LogAdapter::new(self.log_store.clone())
            .with_snapshot_guard(self.snap_dir.clone(), self.snap_stats.clone())
            .with_presend(presend.clone());
        let network = Network::new(self.peers.clone(), self.compress_snapshots).with_presend(presend.clone());
        let raft = Raft::new(self.node_id, self.config.clone(), network, log, sm).await.map_err(|e| e.to_string())?;
        presend.attach(&raft);
        Ok(raft)
    }

    /// A node whose saved vote says it leads (its own vote, committed) in a term in which it
    /// sent entries before its own fsync starts as a follower: the vote is saved again,
    /// uncommitted, before Raft reads it. openraft 0.9 would otherwise resume as the leader of
    /// the same term at once, and give the next entry the index after its last one. But its
    /// followers may hold entries it lost (`src/raft/presend.rs`: a crash before the fsync, or an
    /// append that failed and was dropped by `Recover`); a new entry with the same term and index
    /// would carry the same log id as theirs, with other contents, and they would keep theirs as
    /// matching. As a follower it must win an election in a new term instead, which only a node
    /// holding every committed entry can, and whose leader overwrites any entry of the old term
    /// that conflicts. The vote stays its own in the same term, so it cannot vote for anyone
    /// else in that term. A leader that never sent early (a single node) resumes at once.
    async fn step_down(&self) -> Result<(), String> {
        let Some(vote) = self.meta::<openraft::Vote<u64>>(KEY_VOTE).await? else { return Ok(()) };
        if !vote.is_committed() || vote.leader_id().voted_for() != Some(self.node_id) {
            return Ok(());
        }
        let term = vote.leader_id().get_term();
        if self.meta::<u64>(KEY_PRESEND_TERM).await? != Some(term) {
            return Ok(());
        }
        let down = codec::encode(&openraft::Vote::new(term, self.node_id)).map_err(|e| format!("raft log: {e}"))?;
        self.log(PutMeta(KEY_VOTE, down)).await?;
        tracing::info!(term, "this node led term {term}: it starts as a follower and stands again in a new term");
        Ok(())
    }

    /// A value of the log's meta table.
    async fn meta<T: serde::de::DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, String> {
        match self.log(GetMeta(key)).await? {
            Some(b) => codec::decode(&b).map(Some).map_err(|e| format!("raft log: {key}: {e}")),
            None => Ok(None),
        }
    }

    /// One request to the log store, its failures as text.
    async fn log<M, T>(&self, msg: M) -> Result<T, String>
    where
        M: actix::Message<Result = Result<T, crate::actors::supervise::Fault>> + Send + 'static,
        T: Send + 'static,
        LogStore: actix::Handler<M>,
    {
        match self.log_store.send(msg).await {
            Ok(r) => r.map_err(|f| format!("raft log: {f}")),
            Err(e) => Err(format!("raft log: {e}")),
        }
    }
}
