//! Starting and stopping one node: the data directory, the actors under their supervisors, the
//! openraft instance over our adapters, single-node bootstrap, and graceful shutdown.

use crate::actors::cdc_sender::CdcSender;
use crate::actors::uploader::Uploader;
use crate::autobackup::config::{BackupConfig, RestoreConfig};
use crate::autobackup::storage::Storage;
use crate::autobackup::UploadStats;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::Supervisor;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::actors::applier::{Applier, ApplierStats};
use crate::actors::consensus::{Consensus, GroupCommit, StopRaft, TransferLeadership};
use crate::actors::http_front::HttpFront;
use crate::actors::log_store::LogStore;
use crate::actors::membership::{ClusterStats, Leave, Membership, Reaping};
use crate::actors::readers::Readers;
use crate::actors::snapshotter::{SnapshotPolicy, Snapshotter, Upkeep};
use crate::actors::supervise::start_on_own_thread;
use crate::actors::write_queue::WriteQueue;
use crate::cluster::client::{bind_ip, Peers};
use crate::cluster::discovery::Discovery;
use crate::cluster::join::{self, Targets};
use crate::cluster::JoinRequest;
use crate::config::Config;
use crate::http::auth::Users;
use crate::http::{self, AppState, Core};
use crate::raft::parts::RaftParts;
use crate::raft::sm_adapter::SnapshotStats;
use crate::raft::{numeric_id, LogId, NodeInfo, Raft, SharedRaft};
use crate::store::codec;
use crate::store::db::ConnSettings;
use crate::store::extensions::Extensions;
use crate::store::log_db::{LogDb, KEY_PURGED};
use crate::store::position::Meta;

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
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("-auth: {0}")]
    Auth(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("-auto-backup {0}")]
    AutoBackup(String),
    #[error("-auto-restore {0}")]
    AutoRestore(String),
    #[error("-cdc-config {0}")]
    Cdc(String),
    #[error("{0}")]
    Extensions(#[from] crate::store::extensions::ExtensionError),
    #[error("{0}")]
    Discovery(#[from] crate::cluster::discovery::DiscoError),
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

/// Open the database once before anything else does: a file SQLite cannot read as a database
/// (or whose schema cannot be read) refuses to start, naming the file and what to do. A full `PRAGMA integrity_check` would cost a read of the whole file on every
/// start; damage deeper in the file surfaces when a page is read, and stops the node then.
fn check_database(path: &Path, settings: &ConnSettings) -> Result<(), StartError> {
    let check = || -> rusqlite::Result<()> {
        let (conn, _hooks) = crate::store::db::open_writer(path, settings)?;
        conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |_| Ok(()))
    };
    check().map_err(|e| damaged(format!("{}: {e}", path.display())))
}

/// The full position of a database whose stamp is `stamp`, given the recorded snapshot: the
/// entry it ends at lies between the snapshot and the end of the log (applied entries are never
/// truncated, and the log is never purged past the snapshot), and the membership is the
/// snapshot's, updated by the membership entries after it.
fn resolve_position(log: &rusqlite::Connection, stamp: u32, recorded: Option<Meta>) -> Result<Option<Meta>, String> {
    // With nothing recorded the log starts at entry 0 (openraft's first membership), and a stamp
    // of 0 reads as "nothing applied": applying entry 0 again changes nothing in the database.
    let (from, first) = match recorded.as_ref().and_then(|m| m.last_log_id) {
        Some(l) => (l.index, l.index + 1),
        None => (0, 0),
    };
    let index = crate::store::position::index_for(stamp, from);
    if index == from {
        return Ok(recorded);
    }
    let rows = LogDb::range(log, first, index + 1).map_err(|e| e.to_string())?;
    if rows.len() as u64 != index + 1 - first {
        return Err(format!(
            "the database is stamped with entry {index} but the log holds {} of the entries from {first}",
            rows.len()
        ));
    }
    let mut membership = recorded.map(|m| m.last_membership).unwrap_or_default();
    let mut last = None;
    for (_, bytes) in rows {
        let e: crate::raft::Entry = codec::decode(&bytes).map_err(|e| e.to_string())?;
        if let openraft::EntryPayload::Membership(m) = &e.payload {
            membership = crate::raft::StoredMembership::new(Some(e.log_id), m.clone());
        }
        last = Some(e.log_id);
    }
    Ok(Some(Meta {
        last_log_id: last,
        last_membership: membership,
        snapshot_id: crate::store::position::snapshot_id(last),
    }))
}

/// A database that cannot be opened or brought to its recorded position: say what to do.
fn damaged(what: String) -> StartError {
    StartError::Database(format!(
        "{what}; the database is damaged. Wipe this node's data directory and rejoin it to the cluster (or restore a backup with /boot)"
    ))
}

/// The election timeout openraft runs with: `-raft-election-timeout`, at least the heartbeat
/// timeout and 40 ms. It is also the leader lease.
pub fn election_timeout(cfg: &Config) -> std::time::Duration {
    let hb = cfg.raft_heartbeat_timeout.as_millis() as u64;
    std::time::Duration::from_millis((cfg.raft_election_timeout.as_millis() as u64).max(hb).max(40))
}

/// openraft's configuration from rqlite's timing flags. hashicorp/raft's "heartbeat timeout" is
/// how long a follower waits for its leader; the leader sends heartbeats ten times as often.
/// openraft makes a follower wait out a leader lease (`election_timeout_max`) plus a random
/// election timeout in `[min, max]`, so with `max = T` and `min = T/2` a follower starts an
/// election 1.5–2 × T after the leader's last heartbeat.
pub fn raft_config(cfg: &Config) -> Result<openraft::Config, StartError> {
    let hb = cfg.raft_heartbeat_timeout.as_millis() as u64;
    let el = election_timeout(cfg).as_millis() as u64;
    let c = openraft::Config {
        // Followers stand for election only after a pre-vote (src/raft/prevote.rs).
        enable_elect: false,
        cluster_name: "raftlite".into(),
        heartbeat_interval: (hb / 10).clamp(5, el / 4),
        election_timeout_min: el / 2,
        election_timeout_max: el,
        // The Snapshotter actor decides when (entries, WAL size, every -raft-snap-int).
        snapshot_policy: openraft::SnapshotPolicy::Never,
        // With CDC the Snapshotter purges the log itself, never past an entry whose changes are
        // still to be delivered (`Cdc::purge_bound`): openraft's own purge after a snapshot
        // would not know that bound.
        max_in_snapshot_log_to_keep: if cfg.cdc_config.is_some() { u64::MAX } else { keep_entries(cfg) },
        max_payload_entries: 512,
        // One snapshot chunk per RPC; the first read of a snapshot makes the copy, which for a
        // large database takes longer than openraft's 200 ms default.
        install_snapshot_timeout: 30_000,
        // Fewer, larger round trips when streaming a snapshot (frames are capped at 256 MiB).
        snapshot_max_chunk_size: 16 << 20,
        ..Default::default()
    };
    c.validate().map_err(|e| StartError::Raft(e.to_string()))
}

/// How many entries the log keeps behind a snapshot (for followers a little behind).
pub fn keep_entries(cfg: &Config) -> u64 {
    cfg.raft_snap / 4
}

/// Bring the node into a cluster: bootstrap a new single-node cluster, join one (`-join`), or
/// form one with others (`-bootstrap-expect`). A node with existing state rejoins idempotently.
async fn join_or_bootstrap(
    cfg: &Config,
    raft: &Raft,
    peers: &Arc<Peers>,
    node_id: u64,
    me: NodeInfo,
    targets: Targets,
) -> Result<(), StartError> {
    let initialized = raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
    let req = JoinRequest {
        id: me.id.clone(),
        raft_addr: me.raft_addr.clone(),
        api_addr: me.api_addr.clone(),
        voter: !cfg.non_voter,
    };
    if initialized {
        let m = raft.metrics().borrow().clone();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let sole = voters == [node_id] && m.membership_config.membership().nodes().count() == 1;
        if sole && targets.has_others(&cfg.raft_adv_addr) && cfg.bootstrap_expect == 0 {
            return Err(StartError::Raft(
                "this node is the only member of its own cluster and cannot join another; wipe its data directory to join".into(),
            ));
        }
        if sole {
            // The only voter needs no election timeout to know it will win.
            let _ = raft.trigger().elect().await;
        } else if targets.has_others(&cfg.raft_adv_addr) {
            // Rejoining is idempotent; it also updates our address if it changed.
            let (p, t, a, i) = (peers.clone(), targets.clone(), cfg.join_attempts, cfg.join_interval);
            tokio::spawn(async move {
                if let Err(e) = join::join(&p, &t, &req, a, i).await {
                    tracing::warn!(error = %e, "rejoin");
                }
            });
        }
        return Ok(());
    }
    if cfg.bootstrap_expect > 0 {
        let (p, r, t, i, to) =
            (peers.clone(), raft.clone(), targets.clone(), cfg.join_interval, cfg.bootstrap_expect_timeout);
        tokio::spawn(async move {
            if let Err(e) = join::bootstrap_expect(&p, &r, &t, &req, i, to).await {
                tracing::error!(error = %e, "cannot form the cluster");
                eprintln!("raftlited: {e}");
                std::process::exit(1);
            }
        });
        return Ok(());
    }
    if targets.has_others(&cfg.raft_adv_addr) {
        let leader =
            join::join(peers, &targets, &req, cfg.join_attempts, cfg.join_interval).await.map_err(StartError::Raft)?;
        tracing::info!(via = %leader, "joined the cluster");
        return Ok(());
    }
    if cfg.non_voter {
        return Err(StartError::Raft("a new non-voting node needs -join".into()));
    }
    let mut members = BTreeMap::new();
    members.insert(node_id, me);
    raft.initialize(members).await.map_err(|e| StartError::Raft(e.to_string()))?;
    tracing::info!(node_id = %cfg.node_id, "bootstrapped a new single-node cluster");
    Ok(())
}

/// A running node.
pub struct Node {
    pub state: Arc<AppState>,
    pub consensus: actix::Addr<Consensus>,
    pub http_front: actix::Addr<HttpFront>,
    raft: SharedRaft,
    /// Kept so the actor lives (an actix actor stops once no `Addr` to it is left).
    _uploader: Option<actix::Addr<Uploader>>,
    _cdc_sender: Option<actix::Addr<CdcSender>>,
}

/// Start a node inside the current actix System. The HTTP API listens before the store opens.
pub async fn start(cfg: Config) -> Result<Node, StartError> {
    // The credentials file first: a node asked to authenticate never serves without it.
    let users = cfg.auth.as_deref().map(Users::load).transpose().map_err(|e| StartError::Auth(e.to_string()))?;
    let join_credentials = match (&cfg.join_as, &users) {
        (Some(name), Some(u)) => Some(
            u.credentials(name)
                .ok_or_else(|| StartError::Auth(format!("-join-as {name:?} is not a user of the file")))?,
        ),
        _ => None,
    };
    // Automatic backup and restore files: a bad one refuses to start, naming the key.
    let backups = match cfg.auto_backup.as_deref() {
        Some(f) => {
            let c = BackupConfig::load(f).map_err(|e| StartError::AutoBackup(e.to_string()))?;
            let s = Storage::open(&c.target).map_err(|e| StartError::AutoBackup(format!("{}: {e}", f.display())))?;
            Some((c, s))
        }
        None => None,
    };
    let restore = cfg
        .auto_restore
        .as_deref()
        .map(RestoreConfig::load)
        .transpose()
        .map_err(|e| StartError::AutoRestore(e.to_string()))?;
    // Change data capture: a bad configuration refuses to start, naming the key.
    let cdc_config = cfg
        .cdc_config
        .as_deref()
        .map(crate::cdc::config::CdcConfig::from_flag)
        .transpose()
        .map_err(|e| StartError::Cdc(e.to_string()))?;
    let cdc_client = match &cdc_config {
        Some(c) => crate::actors::cdc_sender::client_for(c).map_err(StartError::Cdc)?,
        None => None,
    };
    let dir = cfg.data_dir.clone();
    let new_node = crate::autobackup::restore::is_new_node(&dir);
    let io = |source| StartError::DataDir { path: dir.display().to_string(), source };
    std::fs::create_dir_all(dir.join("raft")).map_err(io)?;
    check_identity(&dir, &cfg.node_id)?;
    crate::http::backup::clean_scratch(&dir);
    let cdc =
        cdc_config.map(|c| crate::cdc::Cdc::open(c, &dir)).transpose().map_err(|e| StartError::Cdc(e.to_string()))?;
    // SQLite extensions: unpacked into the data directory and loaded once here, so one that
    // cannot load refuses to start with SQLite's error.
    let extensions = Extensions::prepare(&cfg.extensions_path, &dir)?;
    if !extensions.files.is_empty() {
        tracing::info!(extensions = ?extensions.names(), "SQLite extensions loaded");
    }
    let conn_settings = ConnSettings { fk: cfg.fk, extensions: Arc::new(extensions) };

    // TCP_NODELAY on the listener is inherited by every accepted connection (Linux): a response
    // written in more than one piece must not wait for the client's delayed ACK (Nagle).
    let bind = |a: &str| {
        http::resolve(a)
            .and_then(std::net::TcpListener::bind)
            .and_then(|l| socket2::SockRef::from(&l).set_tcp_nodelay(true).map(|()| l))
            .map_err(|source| StartError::Listen { addr: a.to_string(), source })
    };
    let (api, internode) = (bind(&cfg.http_addr)?, bind(&cfg.raft_addr)?);
    let tls = crate::http::tls::api_tls(&cfg).map_err(|e| StartError::Tls(format!("HTTPS: {e}")))?;
    let node_tls = crate::http::tls::node_tls(&cfg).map_err(|e| StartError::Tls(format!("node-to-node TLS: {e}")))?;
    // Rotated certificates are picked up without a restart.
    for t in tls.iter().chain(node_tls.iter()) {
        t.watch();
    }
    let state = AppState::new(cfg.clone(), users, tls, node_tls);
    let _ = state.extensions.set(conn_settings.extensions.names());
    let st = state.clone();
    // Keep the address: an actix actor stops once no `Addr` to it is left.
    let http_front = Supervisor::start(move |_| HttpFront::new(st, api, internode));
    tracing::info!(http = %cfg.http_addr, raft = %cfg.raft_addr, "listening");

    // -auto-restore: a new node fetches the backup now and loads it when it first leads.
    match &restore {
        Some(rc) if new_node => match crate::autobackup::restore::fetch(rc, &dir).await {
            Ok(_) => {}
            Err(e) if rc.continue_on_failure => {
                tracing::warn!(error = %e, "auto-restore failed; starting empty (continue_on_failure)")
            }
            Err(e) => return Err(StartError::AutoRestore(e)),
        },
        Some(_) => tracing::info!("auto-restore: this node has data; the backup is not fetched"),
        None => {}
    }
    let pending_restore = crate::autobackup::restore::pending_path(&dir);
    if pending_restore.exists() {
        state.restore_pending.store(true, Ordering::Relaxed);
    }

    // Verify the log (checksums, no holes) before anything uses it: corruption refuses to start.
    let log_path = dir.join("raft").join("log.sqlite");
    let lp = log_path.clone();
    let (raft_dir, dbp, my_id) = (dir.join("raft"), dir.join("db.sqlite"), cfg.node_id.clone());
    let snap_dir = dir.join("snapshots");
    let sd = snap_dir.clone();
    let settings = conn_settings.clone();
    let captured = cdc.as_ref().and_then(|c| c.queue.captured());
    let (last_log, recorded) = tokio::task::spawn_blocking(move || -> Result<_, StartError> {
        let log = LogDb::open(&lp)?;
        let end = LogDb::last(&log)?.map(|(i, _)| i + 1).unwrap_or(0);
        // Open the database and find where it stands: finish what a crash interrupted, migrate
        // the previous format, read its stamp, checkpoint (docs/DESIGN.md §6).
        let recorded =
            crate::store::position::open_at_start(&dbp, &sd, captured, |stamp, rec| resolve_position(&log, stamp, rec))
                .map_err(damaged)?;
        // Invariant 4 check: the log is only ever purged up to the recorded position; a log
        // purged past it lacks entries the database needs.
        let purged: Option<LogId> = LogDb::get_meta(&log, KEY_PURGED)?
            .map(|b| codec::decode(&b))
            .transpose()
            .map_err(|e| StartError::Database(format!("{}: purged position: {e}", lp.display())))?;
        let at = recorded.as_ref().and_then(|m| m.last_log_id);
        if purged.is_some() && purged > at {
            return Err(StartError::Database(format!(
                "{} is at {at:?} but the log was compacted up to {purged:?}: the database lost committed data. Wipe this node's data directory and rejoin it to the cluster",
                dbp.display(),
            )));
        }
        check_database(&dbp, &settings)?;
        crate::cluster::recovery::apply_peers_file(&raft_dir, &lp, &sd, &my_id).map_err(StartError::Raft)?;
        Ok((end, recorded))
    })
    .await
    .map_err(|e| StartError::Database(e.to_string()))??;

    let db_path: PathBuf = dir.join("db.sqlite");
    let stats = Arc::new(ApplierStats::default());
    stats.replay_bound.store(last_log, Ordering::Relaxed);
    let (p, sd, s, cs, at) =
        (db_path.clone(), snap_dir.clone(), stats.clone(), conn_settings.clone(), recorded.clone());
    let c = cdc.clone();
    let applier = start_on_own_thread(move |_| Applier::new(p, sd, cs, s, at, c)).map_err(StartError::Thread)?;
    let applier_addr = applier.clone();
    let applied_index = recorded.as_ref().and_then(|m| m.last_log_id).map(|l| l.index).unwrap_or(0);
    stats.applied_at_start.store(applied_index, Ordering::Relaxed);
    stats.applied_index.store(applied_index, Ordering::Relaxed);
    // Not known across a restart: the applied index is an upper bound (an automatic backup of an
    // unchanged database may then be uploaded once more, never skipped wrongly).
    stats.last_change_index.store(applied_index, Ordering::Relaxed);
    tracing::info!(applied_index, log_entries_end = last_log, "database open");

    let (p, n) = (db_path.clone(), cfg.db_max_ro_conns.min(MAX_READERS));
    let readers = Readers::start(p, conn_settings, n).map_err(StartError::Thread)?;
    let lp = log_path.clone();
    let log_store = start_on_own_thread(move |_| LogStore::new(lp)).map_err(StartError::Thread)?;

    let node_id = numeric_id(&cfg.node_id);
    let peers = Peers::new(
        bind_ip(&cfg.raft_adv_addr),
        join_credentials,
        state.node_tls.as_ref().and_then(|t| t.client.clone()),
        state.tls.is_some(),
        state.tls.as_ref().and_then(|t| t.client.clone()),
    );
    let peers = Arc::new(peers.map_err(|e| StartError::Tls(format!("outgoing TLS: {e}")))?);
    let snap_stats = Arc::new(SnapshotStats::default());
    if recorded.is_some() {
        // The database file is reused as it is: no restore at start, whatever its size.
        snap_stats.num_restores_start_skipped.fetch_add(1, Ordering::Relaxed);
    }
    let parts = RaftParts {
        node_id,
        config: Arc::new(raft_config(&cfg)?),
        peers: peers.clone(),
        log_store: log_store.clone(),
        applier: applier.clone(),
        readers: readers.clone(),
        db_path: db_path.clone(),
        snap_dir,
        snap_stats: snap_stats.clone(),
        compress_snapshots: cfg.compress_snap_transport,
        cdc: cdc.clone(),
    };
    let raft = SharedRaft::new(parts.build().await.map_err(StartError::Raft)?);

    let me =
        NodeInfo { id: cfg.node_id.clone(), raft_addr: cfg.raft_adv_addr.clone(), api_addr: cfg.http_adv_addr.clone() };
    let cluster_stats = Arc::new(ClusterStats::default());
    let (r, m, pe, cs, expect) = (raft.clone(), me.clone(), peers.clone(), cluster_stats.clone(), cfg.bootstrap_expect);
    let reaping = Reaping { voters: cfg.reap_voter_after, non_voters: cfg.reap_non_voter_after };
    let membership = Supervisor::start(move |_| Membership::new(r, node_id, m, pe, expect, cs, reaping));
    let r = raft.clone();
    let apply_timeout = cfg.raft_apply_timeout;
    let group_commit = GroupCommit { in_flight: cfg.group_commit_in_flight, max_batch: cfg.group_commit_max_batch };
    let consensus = Supervisor::start(move |_| Consensus::new(r, parts, apply_timeout, group_commit));
    let policy = SnapshotPolicy {
        every: cfg.raft_snap_int,
        max_entries: cfg.raft_snap,
        max_wal: cfg.raft_snap_wal_size,
        keep_entries: keep_entries(&cfg),
    };
    let upkeep = Upkeep { vacuum_every: cfg.auto_vacuum_int, optimize_every: cfg.auto_optimize_int };
    let (r, a, c, rd, ss, wal) = (
        raft.clone(),
        applier.clone(),
        consensus.clone(),
        readers.clone(),
        snap_stats.clone(),
        db_path.with_extension("sqlite-wal"),
    );
    let cd = cdc.clone();
    let snapshotter = Supervisor::start(move |_| Snapshotter::new(r, a, c, rd, ss, wal, policy, upkeep, cd.clone()));
    let write_queue = WriteQueue::start(&cfg, consensus.clone(), peers.clone());
    let core = Core {
        consensus: consensus.clone(),
        applier: applier_addr,
        readers,
        log_store,
        raft: raft.clone(),
        stats,
        node_id,
        db_path,
        log_path,
        membership,
        peers: peers.clone(),
        cluster_stats,
        snap_stats,
        snapshotter,
        write_queue,
    };
    if state.core.set(core).is_err() {
        return Err(StartError::Raft("store opened twice".into()));
    }
    if state.restore_pending.load(Ordering::Relaxed) {
        tokio::spawn(crate::autobackup::restore::apply_when_leader(state.clone(), pending_restore));
    }
    let uploader = backups.map(|(c, s)| {
        let stats = Arc::new(UploadStats::default());
        if let Ok(mut t) = stats.target.lock() {
            *t = s.describe();
        }
        let _ = state.uploads.set(stats.clone());
        let st = state.clone();
        Supervisor::start(move |_| Uploader::new(st, c, s, stats))
    });
    let cdc_sender = cdc.map(|cdc| {
        let _ = state.cdc.set(cdc.clone());
        let st = state.clone();
        Supervisor::start(move |_| CdcSender::new(st, cdc, cdc_client))
    });
    let targets = match &cfg.disco {
        Some(d) => {
            let disco = Arc::new(Discovery::new(d.clone())?);
            let _ = state.disco.set(disco.clone());
            tracing::info!(mode = d.mode.as_str(), name = %d.lookup_name(), "discovering the cluster through DNS");
            Targets::Discovered(disco)
        }
        None => Targets::Fixed(cfg.join.clone()),
    };
    join_or_bootstrap(&cfg, &raft.get(), &peers, node_id, me, targets).await?;
    // Elections: openraft's own timer is off; this stands for election after a pre-vote.
    tokio::spawn(crate::raft::prevote::elector(raft.clone(), peers.clone(), node_id, election_timeout(&cfg)));
    Ok(Node { state, consensus, http_front, raft, _uploader: uploader, _cdc_sender: cdc_sender })
}

impl Node {
    /// With `-raft-remove-shutdown`: resolves once this node, having been a member, is no longer
    /// in the cluster's configuration (removed through `/remove` or reaped). Without: never.
    pub async fn removed(&self) {
        if !self.state.cfg.remove_shutdown {
            return std::future::pending().await;
        }
        let me = numeric_id(&self.state.cfg.node_id);
        let mut was_member = false;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if self.state.was_removed() {
                return;
            }
            let member = self.raft.get().metrics().borrow().membership_config.membership().get_node(&me).is_some();
            if member {
                was_member = true;
            } else if was_member {
                return;
            }
        }
    }

    /// Graceful stop: optionally leave the cluster (`-raft-cluster-remove-shutdown`) or hand over
    /// leadership (`-raft-shutdown-stepdown`), then stop Raft.
    pub async fn shutdown(self) {
        let cfg = &self.state.cfg;
        if let Some(core) = self.state.core.get() {
            if cfg.remove_on_shutdown {
                match core.membership.send(Leave(cfg.node_id.clone())).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not remove this node on shutdown"),
                    Err(e) => tracing::warn!(error = %e, "could not remove this node on shutdown"),
                }
            } else if cfg.stepdown_on_shutdown {
                match core.consensus.send(TransferLeadership { target: None, wait: true }).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "no leadership transfer on shutdown"),
                    Err(e) => tracing::debug!(error = %e, "no leadership transfer on shutdown"),
                }
            }
        }
        if let Err(e) = self.consensus.send(StopRaft).await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
