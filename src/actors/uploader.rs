//! The `Uploader` actor: automatic backups (`-auto-backup`, docs/API.md §16). Every `interval`,
//! on the leader only, it uploads a consistent copy of the database (the main file after a
//! snapshot, `http::backup::copy_database`: writes go on meanwhile), vacuumed with `vacuum`, read
//! at most at `max_mb_per_sec`, and gzip-compressed on its way to the store unless
//! `no_compress`. A tick with no change since this node's last upload uploads nothing; the
//! first tick after start or a leader change asks the store for the id of the backup it holds
//! and skips when it is current. The id is the Raft index of the last change the database holds.
//!
//! The upload runs as a task of its own, one at a time, on a runtime of its own whose threads run
//! at a lower CPU priority (nice 10): a slow or failing store never blocks writes or the actor,
//! and the copy, compression and transfer of a large database yield the CPU to the write path.
//! Failures are retried at the next tick, after a backoff that doubles up to five intervals; each
//! is logged and counted.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::supervise::note_restart;
use crate::autobackup::config::BackupConfig;
use crate::autobackup::storage::Storage;
use crate::autobackup::{LastUpload, UploadStats};
use crate::http::AppState;

const ACTOR: &str = "uploader";

pub struct Uploader {
    state: Arc<AppState>,
    cfg: BackupConfig,
    storage: Storage,
    stats: Arc<UploadStats>,
    /// The id this node last uploaded (or found stored) while leading; `None` after start or
    /// losing leadership, so that the stored object is asked first.
    uploaded: Option<String>,
    failures: u32,
    not_before: Option<Instant>,
    /// Where uploads run (see the module comment); `None` if it could not be made (then on the
    /// actor's own runtime).
    runtime: Option<tokio::runtime::Runtime>,
}

/// Set the calling thread's nice value (Linux applies `setpriority` to one thread): the backup
/// threads here, and the benchmark's stand-in for a consumer elsewhere (src/harness/cdc_sink.rs).
pub fn set_thread_nice(nice: i32) {
    // SAFETY: setpriority has no memory-safety preconditions; failure only leaves the priority.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
}

impl Uploader {
    pub fn new(state: Arc<AppState>, cfg: BackupConfig, storage: Storage, stats: Arc<UploadStats>) -> Uploader {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .thread_name("auto-backup")
            .on_thread_start(|| set_thread_nice(10))
            .enable_all()
            .build()
            .inspect_err(
                |e| tracing::warn!(error = %e, "auto-backup: no runtime of its own; uploading beside the node"),
            )
            .ok();
        Uploader { state, cfg, storage, stats, uploaded: None, failures: 0, not_before: None, runtime }
    }
}

impl Actor for Uploader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Exported from the start at 0, so an alert on failures or a stalled backup has data.
        for result in ["ok", "failed"] {
            metrics::counter!("raftlite_auto_backup_uploads_total", "result" => result).increment(0);
        }
        for reason in ["unchanged", "stored"] {
            metrics::counter!("raftlite_auto_backup_skipped_total", "reason" => reason).increment(0);
        }
        ctx.run_interval(self.cfg.interval, |_act, ctx| ctx.notify(Tick));
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; let its threads go in the background.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Supervised for Uploader {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        note_restart(ACTOR);
        self.stats.in_progress.store(false, Ordering::Relaxed);
        self.uploaded = None;
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

/// How an upload attempt ended.
#[derive(Message)]
#[rtype(result = "()")]
struct Done(Result<Outcome, String>);

enum Outcome {
    /// The store already holds this id.
    Current(String),
    Uploaded(LastUpload),
}

impl Handler<Tick> for Uploader {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        let Some(core) = self.state.core.get() else { return };
        if !core.is_leader() {
            // A later leadership starts by asking the store what it holds.
            self.uploaded = None;
            return;
        }
        if self.stats.in_progress.load(Ordering::Relaxed) || self.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        // Nothing was ever written, or a restore is still to be loaded: an upload now would
        // replace a good backup with an empty database.
        let change = core.stats.last_change_index.load(Ordering::Relaxed);
        if change == 0 || self.state.restore_pending.load(Ordering::Relaxed) {
            return;
        }
        let id = change.to_string();
        if self.uploaded.as_deref() == Some(id.as_str()) {
            self.stats.num_uploads_skipped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("raftlite_auto_backup_skipped_total", "reason" => "unchanged").increment(1);
            return;
        }
        self.stats.in_progress.store(true, Ordering::Relaxed);
        let ask_store = self.uploaded.is_none() && !self.cfg.timestamp;
        let (storage, cfg, state) = (self.storage.clone(), self.cfg.clone(), self.state.clone());
        let me = ctx.address();
        let task = async move {
            // A panic in the upload must not leave the actor waiting for an answer for ever.
            let run = std::panic::AssertUnwindSafe(upload(&state, &storage, &cfg, change, ask_store));
            let r = futures::FutureExt::catch_unwind(run).await.unwrap_or_else(|_| Err("the upload panicked".into()));
            me.do_send(Done(r));
        };
        match &self.runtime {
            Some(rt) => drop(rt.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
}

impl Handler<Done> for Uploader {
    type Result = ();

    fn handle(&mut self, done: Done, _: &mut Context<Self>) {
        self.stats.in_progress.store(false, Ordering::Relaxed);
        match done.0 {
            Ok(Outcome::Current(id)) => {
                self.failures = 0;
                self.uploaded = Some(id);
                self.stats.num_uploads_skipped_id.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("raftlite_auto_backup_skipped_total", "reason" => "stored").increment(1);
            }
            Ok(Outcome::Uploaded(last)) => {
                self.failures = 0;
                self.not_before = None;
                self.uploaded = Some(last.id.clone());
                self.stats.num_uploads_ok.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("raftlite_auto_backup_uploads_total", "result" => "ok").increment(1);
                metrics::gauge!("raftlite_auto_backup_last_success_timestamp_seconds").set(last.at.timestamp() as f64);
                metrics::gauge!("raftlite_auto_backup_last_bytes").set(last.bytes as f64);
                tracing::info!(to = %last.name, bytes = last.bytes, id = %last.id, took = ?last.took, "backup uploaded");
                if let Ok(mut l) = self.stats.last.lock() {
                    *l = Some(last);
                }
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.stats.num_uploads_fail.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("raftlite_auto_backup_uploads_total", "result" => "failed").increment(1);
                // Back off: 1, 2, 4 ... intervals, at most 10, between attempts after a failure.
                let wait = self.cfg.interval * (1u32 << self.failures.min(4)).min(10) / 2;
                self.not_before = Some(Instant::now() + wait);
                tracing::warn!(error = %e, to = %self.storage.describe(), retry_in = ?wait, "backup upload failed");
            }
        }
    }
}

/// A temp file in the data directory, removed when dropped.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn upload(
    state: &AppState,
    storage: &Storage,
    cfg: &BackupConfig,
    change: u64,
    ask_store: bool,
) -> Result<Outcome, String> {
    let id = change.to_string();
    if ask_store {
        if let Some(stored) = storage.stored_id().await.map_err(|e| e.to_string())? {
            if stored == id {
                return Ok(Outcome::Current(stored));
            }
        }
    }
    let started = Instant::now();
    // The consistent copy is a local file first: the main file can be copied only while no
    // checkpoint runs, and a copy made with the backup API holds a read transaction that keeps
    // compactions from completing (docs/DESIGN.md §6); either lasts as long as a local copy,
    // not as long as the upload.
    let copy = Temp(state.cfg.data_dir.join(format!("raftlite-auto-backup-{}.tmp", rand::random::<u64>())));
    crate::http::backup::copy_database(state, change, &copy.0, cfg.vacuum).await?;
    let (name, bytes) =
        storage.upload(&copy.0, cfg.compress, &id, cfg.timestamp, cfg.max_rate).await.map_err(|e| e.to_string())?;
    Ok(Outcome::Uploaded(LastUpload {
        at: chrono::Utc::now(),
        bytes,
        id,
        name,
        took: started.elapsed().max(Duration::from_micros(1)),
    }))
}
