//! Where backups are kept: a file in a directory (with `METADATA.json` beside it) or an object in
//! an S3-compatible store or Google Cloud Storage (object_store). Either way a new backup
//! replaces the old one only once it is complete: a file is written beside and renamed over; an
//! object is a multipart upload (or, under 16 MiB, a single PUT) that only appears when it
//! completes (and is aborted on error). Each backup carries its id (the Raft index of the last
//! change it holds; object metadata `raftlite-id`), so a new leader can tell that the stored
//! backup is already current.
//!
//! Compression is streamed: the consistent copy (a temporary file, so that the read transaction
//! it needs lasts as long as a local copy, not as long as an upload; see
//! src/actors/uploader.rs) is gzipped on its way into the partial file or the multipart upload,
//! never into a second temporary file, so a backup writes one copy of the database to the node's
//! disk.

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

/// The metadata key of a backup's id (`x-amz-meta-raftlite-id` on S3, `x-goog-meta-raftlite-id`
/// on GCS).
const ID_KEY: &str = "raftlite-id";

#[derive(Clone, Debug)]
pub enum Storage {
    File {
        dir: PathBuf,
        name: String,
    },
    /// An object store: `scheme` (`s3`, `gs`) and `bucket` name it in logs and `/status`.
    Object {
        store: Arc<dyn ObjectStore>,
        scheme: &'static str,
        bucket: String,
        path: String,
    },
}

/// A plain-HTTP client for `http://` endpoints (a system without CA certificates may have no
/// store that needs TLS), the system's CAs otherwise.
fn connector(endpoint: Option<&str>) -> Result<(super::object_http::Connector, bool), StorageError> {
    let plain = endpoint.is_some_and(|e| e.starts_with("http://"));
    let c = if plain { super::object_http::Connector::plain() } else { super::object_http::Connector::new() };
    Ok((c.map_err(StorageError::Store)?, plain))
}

fn retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(30),
        ..Default::default()
    }
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
                let (connector, plain) = connector(s.endpoint.as_deref())?;
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_access_key_id(&s.access_key_id)
                    .with_secret_access_key(&s.secret_access_key)
                    .with_region(&s.region)
                    .with_bucket_name(&s.bucket)
                    .with_virtual_hosted_style_request(!s.force_path_style)
                    .with_http_connector(connector)
                    .with_retry(retries());
                if let Some(e) = &s.endpoint {
                    b = b.with_endpoint(e).with_allow_http(plain);
                }
                let store = b.build().map_err(|e| StorageError::Store(e.to_string()))?;
                Ok(Storage::Object {
                    store: Arc::new(store),
                    scheme: "s3",
                    bucket: s.bucket.clone(),
                    path: s.path.clone(),
                })
            }
            Target::Gcs(g) => {
                // The service account's key signs a JWT that is sent as the bearer token (no
                // token exchange: GCS accepts self-signed JWTs for its own scope).
                let (connector, plain) = connector(g.endpoint.as_deref())?;
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
                    .with_bucket_name(&g.bucket)
                    .with_service_account_path(g.credentials_path.display().to_string())
                    .with_http_connector(connector)
                    .with_client_options(object_store::ClientOptions::new().with_allow_http(plain))
                    .with_retry(retries());
                if let Some(e) = &g.endpoint {
                    b = b.with_base_url(e.trim_end_matches('/'));
                }
                let store = b.build().map_err(|e| StorageError::Store(e.to_string()))?;
                Ok(Storage::Object {
                    store: Arc::new(store),
                    scheme: "gs",
                    bucket: g.bucket.clone(),
                    path: g.name.clone(),
                })
            }
        }
    }

    /// Where backups go, for logs and `/status`.
    pub fn describe(&self) -> String {
        match self {
            Storage::File { dir, name } => dir.join(name).display().to_string(),
            Storage::Object { scheme, bucket, path, .. } => format!("{scheme}://{bucket}/{path}"),
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
            Storage::Object { store, path, .. } => {
                let opts = GetOptions { head: true, ..Default::default() };
                match store.get_opts(&ObjectPath::from(path.as_str()), opts).await {
                    Ok(r) => Ok(r.attributes.get(&Attribute::Metadata(ID_KEY.into())).map(|v| v.to_string())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(StorageError::Store(e.to_string())),
                }
            }
        }
    }

    /// Upload the file at `local` with `id`, gzipped on the way when `gzip`: the name it was
    /// stored under and the bytes stored.
    pub async fn upload(
        &self,
        local: &Path,
        gzip: bool,
        id: &str,
        timestamp: bool,
        rate: Option<u64>,
    ) -> Result<(String, u64), StorageError> {
        match self {
            Storage::File { dir, name } => {
                let final_name = stamped(name, timestamp);
                let dest = dir.join(&final_name);
                let tmp = dir.join(format!(".{final_name}.partial"));
                tokio::fs::create_dir_all(dir).await.map_err(io)?;
                let copied = async {
                    let (from, to) = (local.to_path_buf(), tmp.clone());
                    let bytes = tokio::task::spawn_blocking(move || {
                        let mut out = std::fs::File::create(&to)?;
                        let n = stream(&from, gzip, rate, &mut out)?;
                        out.sync_all()?;
                        Ok::<u64, std::io::Error>(n)
                    })
                    .await
                    .map_err(std::io::Error::other)??;
                    tokio::fs::rename(&tmp, &dest).await?;
                    let meta = serde_json::json!({ "id": id, "name": final_name, "timestamp": chrono::Utc::now().to_rfc3339() });
                    let mtmp = dir.join(".METADATA.json.partial");
                    tokio::fs::write(&mtmp, meta.to_string()).await?;
                    tokio::fs::rename(&mtmp, dir.join("METADATA.json")).await?;
                    tokio::fs::File::open(dir).await?.sync_all().await?;
                    Ok::<u64, std::io::Error>(bytes)
                };
                match copied.await {
                    Ok(bytes) => Ok((dest.display().to_string(), bytes)),
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        Err(io(format!("{}: {e}", dest.display())))
                    }
                }
            }
            Storage::Object { store, scheme, bucket, path } => {
                let key = stamped(path, timestamp);
                let mut attrs = Attributes::new();
                attrs.insert(Attribute::Metadata(ID_KEY.into()), AttributeValue::from(id.to_string()));
                let mut w = object_store::buffered::BufWriter::with_capacity(
                    store.clone(),
                    ObjectPath::from(key.as_str()),
                    16 << 20,
                )
                .with_attributes(attrs);
                // The file is read (and compressed) on a blocking thread and handed over in chunks.
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
                let from = local.to_path_buf();
                let producer = tokio::task::spawn_blocking(move || {
                    stream(&from, gzip, rate, &mut ChunkSender { tx, buf: Vec::new() })
                });
                let mut sent = Ok(());
                while let Some(chunk) = rx.recv().await {
                    if let Err(e) = w.write_all(&chunk).await {
                        sent = Err(e.to_string());
                        break;
                    }
                }
                drop(rx);
                let read = producer.await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()));
                let bytes = match (sent, read) {
                    (Ok(()), Ok(n)) => n,
                    (Err(e), _) | (_, Err(e)) => {
                        // Never leave a part-written object: abort the multipart upload.
                        let _ = w.abort().await;
                        return Err(StorageError::Store(e));
                    }
                };
                // Completing the upload failed: the object never appears. The writer cannot be
                // aborted once it is completing (object_store panics); the store discards the
                // parts of an upload that is never completed (a bucket lifecycle rule on S3).
                w.shutdown().await.map_err(|e| StorageError::Store(e.to_string()))?;
                Ok((format!("{scheme}://{bucket}/{key}"), bytes))
            }
        }
    }

    /// Download the stored backup to `dest`; its size.
    pub async fn download(&self, dest: &Path) -> Result<u64, StorageError> {
        match self {
            Storage::File { dir, name } => tokio::fs::copy(dir.join(name), dest).await.map_err(io),
            Storage::Object { store, path, .. } => {
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

/// Copy the file at `from` into `out`, gzipped (fast level, as `/db/backup?compress`) when
/// `gzip`; the bytes written.
fn stream(from: &Path, gzip: bool, rate: Option<u64>, out: &mut impl std::io::Write) -> std::io::Result<u64> {
    let paced = Paced { inner: std::fs::File::open(from)?, rate, started: std::time::Instant::now(), n: 0 };
    let mut input = std::io::BufReader::with_capacity(1 << 20, paced);
    let mut counted = Counted { inner: out, n: 0 };
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(&mut counted, flate2::Compression::fast());
        std::io::copy(&mut input, &mut enc)?;
        enc.finish()?;
    } else {
        std::io::copy(&mut input, &mut counted)?;
    }
    std::io::Write::flush(&mut counted)?;
    Ok(counted.n)
}

/// A reader held to `rate` bytes per second on average (`None`: as fast as it goes), so that an
/// upload leaves the CPU and the disk to the node's writes (`max_mb_per_sec`, docs/API.md §16).
struct Paced<R> {
    inner: R,
    rate: Option<u64>,
    started: std::time::Instant,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(rate) = self.rate {
            let due = std::time::Duration::from_secs_f64(self.n as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// A writer that counts what passes through it.
struct Counted<'a, W> {
    inner: &'a mut W,
    n: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hands what is written to the upload, in chunks of [`CHUNK`] bytes (from a blocking thread).
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        // The receiver is gone only when the upload failed; it reports why.
        self.tx.blocking_send(chunk).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"))
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_paced_stream_reads_no_faster_than_its_rate() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("db");
        let data: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        // 3 MiB at 10 MB/s: the last MiB cannot be read before ~0.21 s.
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        assert_eq!(stream(&src, false, Some(10_000_000), &mut out).unwrap(), data.len() as u64);
        assert_eq!(out, data);
        assert!(started.elapsed() >= std::time::Duration::from_millis(200), "{:?}", started.elapsed());
    }

    #[test]
    fn streaming_counts_what_it_writes_and_gzip_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("db");
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let mut plain = Vec::new();
        assert_eq!(stream(&src, false, None, &mut plain).unwrap(), data.len() as u64);
        assert_eq!(plain, data);
        let mut gz = Vec::new();
        let n = stream(&src, true, None, &mut gz).unwrap();
        assert_eq!(n, gz.len() as u64);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn chunks_arrive_whole_and_in_order_and_a_gone_upload_stops_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("db");
        let data: Vec<u8> = (0..2 * CHUNK + 5).map(|i| (i % 13) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let n = stream(&src, false, None, &mut ChunkSender { tx, buf: Vec::new() }).unwrap();
        assert_eq!(n, data.len() as u64);
        let mut got = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            assert!(chunk.len() < 2 * CHUNK, "{}", chunk.len());
            got.extend(chunk);
        }
        assert_eq!(got, data);
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
        drop(rx);
        let e = stream(&src, false, None, &mut ChunkSender { tx, buf: Vec::new() }).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
