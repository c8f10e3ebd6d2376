//! `-auto-restore`: a node that starts with no data fetches the backup (gzip detected by its
//! magic bytes), checks that it is a sound SQLite database, and, the first time it leads, loads
//! it through the log like `POST /db/load`, so every node gets it. Until then `/readyz` says the
//! restore is pending. A node that has data ignores the file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::config::RestoreConfig;
use super::storage::Storage;
use crate::actors::consensus::propose;
use crate::http::AppState;
use crate::store::command::Command;

/// Whether the data directory holds nothing of a node yet (launchers' own files do not count).
pub fn is_new_node(data_dir: &Path) -> bool {
    !["node.json", "db.sqlite", "raft/log.sqlite"].iter().any(|f| data_dir.join(f).exists())
}

/// The restored image waiting in the data directory for this node to lead.
pub fn pending_path(data_dir: &Path) -> PathBuf {
    data_dir.join("raftlite-auto-restore.sqlite")
}

/// Download, decompress and check the backup into [`pending_path`].
pub async fn fetch(cfg: &RestoreConfig, data_dir: &Path) -> Result<PathBuf, String> {
    let storage = Storage::open(&cfg.target).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let raw = data_dir.join("raftlite-auto-restore-download.tmp");
    let got = tokio::time::timeout(cfg.timeout, storage.download(&raw)).await;
    let size = match got {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(&raw);
            return Err(format!("downloading {}: {e}", storage.describe()));
        }
        Err(_) => {
            let _ = std::fs::remove_file(&raw);
            return Err(format!("downloading {}: not done within {:?} (timeout)", storage.describe(), cfg.timeout));
        }
    };
    let dest = pending_path(data_dir);
    let (r, d) = (raw.clone(), dest.clone());
    let checked = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut magic = [0u8; 2];
        std::fs::File::open(&r).and_then(|mut f| f.read_exact(&mut magic)).map_err(|e| e.to_string())?;
        if magic == [0x1f, 0x8b] {
            let input = std::io::BufReader::new(std::fs::File::open(&r).map_err(|e| e.to_string())?);
            let mut out = std::fs::File::create(&d).map_err(|e| e.to_string())?;
            std::io::copy(&mut flate2::read::GzDecoder::new(input), &mut out)
                .map_err(|e| format!("the backup does not decompress: {e}"))?;
            out.sync_all().map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(&r);
        } else {
            std::fs::rename(&r, &d).map_err(|e| e.to_string())?;
        }
        crate::store::dump::check_image(&d).map(|_| ())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&raw);
        let _ = std::fs::remove_file(&dest);
        return Err(format!("{} is not a usable backup: {e}", storage.describe()));
    }
    tracing::info!(from = %storage.describe(), bytes = size, "auto-restore: backup fetched; it is loaded when this node leads");
    Ok(dest)
}

/// Load the fetched image through the log once this node leads; then it is removed and the
/// node reports ready.
pub async fn apply_when_leader(state: Arc<AppState>, image: PathBuf) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(core) = state.core.get() else { continue };
        if !core.is_leader() {
            continue;
        }
        let bytes = match tokio::fs::read(&image).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "auto-restore: the fetched backup cannot be read");
                return;
            }
        };
        match propose(&core.consensus, Command::Load { image: bytes }).await {
            Ok(r) if r.error.is_none() => {
                let _ = tokio::fs::remove_file(&image).await;
                state.restore_pending.store(false, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("auto-restore: backup loaded");
                return;
            }
            Ok(r) => {
                tracing::error!(error = ?r.error, "auto-restore: the backup was refused");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "auto-restore: load not committed yet; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
