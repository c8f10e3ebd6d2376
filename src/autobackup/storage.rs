//! Where backups are kept: a file in a directory (with `METADATA.json` beside it) or an object in
//! an S3-compatible store (object_store). Either way a new backup replaces the old one only once
//! it is complete: a file is written beside and renamed over; an S3 upload is a multipart upload
//! that only appears when it completes (and is aborted on error). Each backup carries its id (the
//! Raft index of the last change it holds), so a new leader can tell that the stored backup is
//! already current.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, ObjectStoreExt as _};
use tokio::io::AsyncWriteExt;

use super::config::Target;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Store(String),
}

/// The metadata key of a backup's id (`x-amz-meta-raftlite-id` on S3).
const ID_KEY: &str = "raftlite-id";

#[derive(Clone, Debug)]
pub enum Storage {
    File { dir: PathBuf, name: String },
    S3 { store: Arc<dyn ObjectStore>, bucket: String, path: String },
}

/// The file name with `YYYYMMDDHHMMSS_` before the last path element, when `timestamp`.
pub fn stamped(name: &str, timestamp: bool) -> String {
    if !timestamp {
        return name.to_string();
    }
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S");
    match name.rsplit_once('/') {
        Some((dir, file)) => format!("{dir}/{now}_{file}"),
        None => format!("{now}_{name}"),
    }
}

fn io(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(e.to_string())
}

impl Storage {
    pub fn open(target: &Target) -> Result<Storage, StorageError> {
        match target {
            Target::File { dir, name } => Ok(Storage::File { dir: dir.clone(), name: name.clone() }),
            Target::S3(s) => {
                let plain = s.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
                let connector = if plain { super::s3::Connector::plain() } else { super::s3::Connector::new() }
                    .map_err(StorageError::Store)?;
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_access_key_id(&s.access_key_id)
                    .with_secret_access_key(&s.secret_access_key)
                    .with_region(&s.region)
                    .with_bucket_name(&s.bucket)
                    .with_virtual_hosted_style_request(!s.force_path_style)
                    .with_http_connector(connector)
                    .with_retry(object_store::RetryConfig {
                        max_retries: 3,
                        retry_timeout: std::time::Duration::from_secs(30),
                        ..Default::default()
                    });
                if let Some(e) = &s.endpoint {
                    b = b.with_endpoint(e).with_allow_http(plain);
                }
                let store = b.build().map_err(|e| StorageError::Store(e.to_string()))?;
                Ok(Storage::S3 { store: Arc::new(store), bucket: s.bucket.clone(), path: s.path.clone() })
            }
        }
    }

    /// Where backups go, for logs and `/status`.
    pub fn describe(&self) -> String {
        match self {
            Storage::File { dir, name } => dir.join(name).display().to_string(),
            Storage::S3 { bucket, path, .. } => format!("s3://{bucket}/{path}"),
        }
    }

    /// The id of the backup stored under the plain (not timestamped) name, if any.
    pub async fn stored_id(&self) -> Result<Option<String>, StorageError> {
        match self {
            Storage::File { dir, .. } => {
                let meta = dir.join("METADATA.json");
                match tokio::fs::read(&meta).await {
                    Ok(b) => {
                        let v: serde_json::Value = serde_json::from_slice(&b).map_err(io)?;
                        Ok(v.get("id").and_then(|i| i.as_str()).map(str::to_string))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io(e)),
                }
            }
            Storage::S3 { store, path, .. } => {
                let opts = GetOptions { head: true, ..Default::default() };
                match store.get_opts(&ObjectPath::from(path.as_str()), opts).await {
                    Ok(r) => Ok(r.attributes.get(&Attribute::Metadata(ID_KEY.into())).map(|v| v.to_string())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(StorageError::Store(e.to_string())),
                }
            }
        }
    }

    /// Upload the file at `local` with `id`; the name it was stored under.
    pub async fn upload(&self, local: &Path, id: &str, timestamp: bool) -> Result<String, StorageError> {
        match self {
            Storage::File { dir, name } => {
                let final_name = stamped(name, timestamp);
                let dest = dir.join(&final_name);
                let tmp = dir.join(format!(".{final_name}.partial"));
                tokio::fs::create_dir_all(dir).await.map_err(io)?;
                let copied = async {
                    tokio::fs::copy(local, &tmp).await?;
                    tokio::fs::File::open(&tmp).await?.sync_all().await?;
                    tokio::fs::rename(&tmp, &dest).await?;
                    let meta = serde_json::json!({ "id": id, "name": final_name, "timestamp": chrono::Utc::now().to_rfc3339() });
                    let mtmp = dir.join(".METADATA.json.partial");
                    tokio::fs::write(&mtmp, meta.to_string()).await?;
                    tokio::fs::rename(&mtmp, dir.join("METADATA.json")).await?;
                    tokio::fs::File::open(dir).await?.sync_all().await
                };
                if let Err(e) = copied.await {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(io(format!("{}: {e}", dest.display())));
                }
                Ok(dest.display().to_string())
            }
            Storage::S3 { store, bucket, path } => {
                let key = stamped(path, timestamp);
                let mut attrs = Attributes::new();
                attrs.insert(Attribute::Metadata(ID_KEY.into()), AttributeValue::from(id.to_string()));
                let mut w = object_store::buffered::BufWriter::with_capacity(
                    store.clone(),
                    ObjectPath::from(key.as_str()),
                    16 << 20,
                )
                .with_attributes(attrs);
                let mut f = tokio::fs::File::open(local).await.map_err(io)?;
                if let Err(e) = tokio::io::copy(&mut f, &mut w).await {
                    // Never leave a part-written object: abort the multipart upload.
                    let _ = w.abort().await;
                    return Err(StorageError::Store(e.to_string()));
                }
                // Completing the upload failed: the object never appears. The writer cannot be
                // aborted once it is completing (object_store panics); the store discards the
                // parts of an upload that is never completed (a bucket lifecycle rule on S3).
                w.shutdown().await.map_err(|e| StorageError::Store(e.to_string()))?;
                Ok(format!("s3://{bucket}/{key}"))
            }
        }
    }

    /// Download the stored backup to `dest`; its size.
    pub async fn download(&self, dest: &Path) -> Result<u64, StorageError> {
        match self {
            Storage::File { dir, name } => tokio::fs::copy(dir.join(name), dest).await.map_err(io),
            Storage::S3 { store, path, .. } => {
                use futures::StreamExt;
                let r = store
                    .get(&ObjectPath::from(path.as_str()))
                    .await
                    .map_err(|e| StorageError::Store(e.to_string()))?;
                let mut stream = r.into_stream();
                let mut f = tokio::fs::File::create(dest).await.map_err(io)?;
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| StorageError::Store(e.to_string()))?;
                    n += chunk.len() as u64;
                    f.write_all(&chunk).await.map_err(io)?;
                }
                f.sync_all().await.map_err(io)?;
                Ok(n)
            }
        }
    }
}
