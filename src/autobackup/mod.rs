//! Automatic backups (`-auto-backup`) and automatic restore of a new node (`-auto-restore`),
//! docs/API.md §16 and docs/DESIGN.md §13: the configuration files (`config`), where backups are
//! kept (`storage`: a directory or an S3-compatible store, through `s3`'s HTTP client), the
//! restore at start (`restore`). The uploading itself is the `Uploader` actor
//! (src/actors/uploader.rs).

pub mod config;
pub mod object_http;
pub mod restore;
pub mod storage;

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// What `/status` (`auto_backups`) and `/metrics` report about uploads.
#[derive(Debug, Default)]
pub struct UploadStats {
    pub num_uploads_ok: AtomicU64,
    pub num_uploads_fail: AtomicU64,
    /// Ticks with no change since this node's last upload.
    pub num_uploads_skipped: AtomicU64,
    /// First ticks after start or a leader change whose stored backup was already current.
    pub num_uploads_skipped_id: AtomicU64,
    /// An upload is running now.
    pub in_progress: std::sync::atomic::AtomicBool,
    pub last: Mutex<Option<LastUpload>>,
    /// Where backups go.
    pub target: Mutex<String>,
}

/// The last successful upload.
#[derive(Clone, Debug)]
pub struct LastUpload {
    pub at: chrono::DateTime<chrono::Utc>,
    pub bytes: u64,
    pub id: String,
    pub name: String,
    pub took: std::time::Duration,
}
