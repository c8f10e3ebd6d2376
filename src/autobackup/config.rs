//! The `-auto-backup` and `-auto-restore` files (docs/API.md §16): JSON, `$VARS` and `${VARS}`
//! expanded from the environment first (so secrets need not be written in the file), then checked
//! key by key. A bad file refuses to start with the key that is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    #[error("{file}: {key}: {reason}")]
    Key { file: String, key: String, reason: String },
}

/// Where backups go (and restores come from).
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A file `name` in the absolute directory `dir`, with `METADATA.json` beside it.
    File {
        dir: PathBuf,
        name: String,
    },
    S3(S3),
    Gcs(Gcs),
}

#[derive(Clone, Debug, PartialEq)]
pub struct S3 {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    pub bucket: String,
    pub path: String,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
}

/// Google Cloud Storage, reached with a service account's key file (its JSON, as the Cloud
/// console gives it).
#[derive(Clone, Debug, PartialEq)]
pub struct Gcs {
    /// The project the bucket belongs to. Not sent (a bucket name is global); kept for rqlite's
    /// file format and for logs.
    pub project_id: String,
    pub bucket: String,
    /// The object's name in the bucket.
    pub name: String,
    pub credentials_path: PathBuf,
    /// Another GCS endpoint than `https://storage.googleapis.com` (a private endpoint, or an
    /// emulator).
    pub endpoint: Option<String>,
}

/// `-auto-backup`.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupConfig {
    pub target: Target,
    pub interval: Duration,
    /// Prefix the object's name with `YYYYMMDDHHMMSS_` (UTC): a new object each time.
    pub timestamp: bool,
    pub compress: bool,
    pub vacuum: bool,
    /// At most this many bytes of the database are read for the upload per second, on average
    /// (`max_mb_per_sec`; `None`: no limit).
    pub max_rate: Option<u64>,
}

/// `max_mb_per_sec` when the file does not set it. An upload at full speed takes whatever CPU
/// the machine has (reading, signing and sending every byte) and moves a write's p99 by several
/// times on two cores; at this rate it stays within 10% (docs/PERFORMANCE.md), and a 10 GB
/// database still goes up in under four minutes.
pub const DEFAULT_MAX_MB_PER_SEC: f64 = 50.0;

/// `-auto-restore`.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreConfig {
    pub target: Target,
    pub timeout: Duration,
    pub continue_on_failure: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: Option<u32>,
    #[serde(rename = "type")]
    kind: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    timestamp: bool,
    #[serde(default)]
    no_compress: bool,
    #[serde(default)]
    vacuum: bool,
    max_mb_per_sec: Option<f64>,
    #[serde(default)]
    continue_on_failure: bool,
    sub: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Expand `$NAME` and `${NAME}` from the environment (unset: empty, as Go's `os.ExpandEnv`).
pub fn expand_env(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut name = String::new();
        if chars.peek().map(|(_, c)| *c) == Some('{') {
            chars.next();
            for (_, c) in chars.by_ref() {
                if c == '}' {
                    break;
                }
                name.push(c);
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if name.is_empty() {
                out.push('$');
                continue;
            }
        }
        out.push_str(&std::env::var(&name).unwrap_or_default());
    }
    out
}

fn read(path: &Path) -> Result<Raw, ConfigError> {
    let file = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::File { file: file.clone(), reason: e.to_string() })?;
    let raw: Raw = serde_json::from_str(&expand_env(&text))
        .map_err(|e| ConfigError::File { file: file.clone(), reason: format!("not a valid configuration: {e}") })?;
    if raw.version.unwrap_or(1) != 1 {
        return Err(ConfigError::Key { file, key: "version".into(), reason: "only version 1 exists".into() });
    }
    Ok(raw)
}

fn duration(file: &str, key: &str, v: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => crate::config::parse_go_duration(s).map_err(|e| ConfigError::Key {
            file: file.into(),
            key: key.into(),
            reason: e,
        }),
    }
}

fn target(
    file: &str,
    kind: Option<&str>,
    sub: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<Target, ConfigError> {
    let key_err =
        |key: &str, reason: &str| ConfigError::Key { file: file.into(), key: key.into(), reason: reason.into() };
    let empty = serde_json::Map::new();
    let sub = sub.unwrap_or(&empty);
    let s = |k: &str| sub.get(k).and_then(|v| v.as_str()).map(str::to_string).filter(|v| !v.is_empty());
    let need = |k: &str| s(k).ok_or_else(|| key_err(&format!("sub.{k}"), "missing"));
    match kind {
        Some("file") => {
            let dir = PathBuf::from(need("dir")?);
            if !dir.is_absolute() {
                return Err(key_err("sub.dir", "must be an absolute path"));
            }
            let name = need("name")?;
            if name.contains('/') || name == "." || name == ".." {
                return Err(key_err("sub.name", "must be a plain file name"));
            }
            Ok(Target::File { dir, name })
        }
        Some("s3") => Ok(Target::S3(S3 {
            access_key_id: need("access_key_id")?,
            secret_access_key: need("secret_access_key")?,
            region: s("region").unwrap_or_else(|| "us-east-1".into()),
            bucket: need("bucket")?,
            path: need("path")?.trim_start_matches('/').to_string(),
            endpoint: s("endpoint"),
            force_path_style: sub.get("force_path_style").and_then(|v| v.as_bool()).unwrap_or(false),
        })),
        Some("gcs") => {
            let gcs = Gcs {
                project_id: need("project_id")?,
                bucket: need("bucket")?,
                name: need("name")?.trim_start_matches('/').to_string(),
                credentials_path: PathBuf::from(need("credentials_path")?),
                endpoint: s("endpoint"),
            };
            service_account(&gcs.credentials_path).map_err(|reason| key_err("sub.credentials_path", &reason))?;
            Ok(Target::Gcs(gcs))
        }
        Some(other) => Err(key_err("type", &format!("unknown type {other:?}: file, s3 or gcs"))),
        None => Err(key_err("type", "missing: file, s3 or gcs")),
    }
}

/// Check that `path` is a service account's key file, so that a wrong path or file refuses to
/// start with the key named, not at the first upload.
fn service_account(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a JSON key file: {e}", path.display()))?;
    for field in ["client_email", "private_key", "private_key_id"] {
        if !v.get(field).is_some_and(|f| f.is_string()) {
            return Err(format!("{}: not a service account's key file: no {field}", path.display()));
        }
    }
    Ok(())
}

impl BackupConfig {
    pub fn load(path: &Path) -> Result<BackupConfig, ConfigError> {
        let file = path.display().to_string();
        let raw = read(path)?;
        let interval = duration(&file, "interval", raw.interval.as_deref(), Duration::from_secs(300))?;
        if interval.is_zero() {
            return Err(ConfigError::Key { file, key: "interval".into(), reason: "must be positive".into() });
        }
        let mb = raw.max_mb_per_sec.unwrap_or(DEFAULT_MAX_MB_PER_SEC);
        if !mb.is_finite() || mb < 0.0 {
            let reason = "must be a number of megabytes per second, 0 for no limit".into();
            return Err(ConfigError::Key { file, key: "max_mb_per_sec".into(), reason });
        }
        Ok(BackupConfig {
            target: target(&file, raw.kind.as_deref(), raw.sub.as_ref())?,
            interval,
            timestamp: raw.timestamp,
            compress: !raw.no_compress,
            vacuum: raw.vacuum,
            max_rate: (mb > 0.0).then(|| ((mb * 1e6) as u64).max(1)),
        })
    }
}

impl RestoreConfig {
    pub fn load(path: &Path) -> Result<RestoreConfig, ConfigError> {
        let file = path.display().to_string();
        let raw = read(path)?;
        Ok(RestoreConfig {
            target: target(&file, raw.kind.as_deref(), raw.sub.as_ref())?,
            timeout: duration(&file, "timeout", raw.timeout.as_deref(), Duration::from_secs(60))?,
            continue_on_failure: raw.continue_on_failure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.json");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn files_and_their_mistakes() {
        std::env::set_var("RAFTLITE_TEST_SECRET", "s3cr3t");
        let (_d, p) = write(
            r#"{"version":1,"type":"s3","interval":"30s","sub":{"access_key_id":"id","secret_access_key":"${RAFTLITE_TEST_SECRET}","bucket":"b","path":"/x/db.gz","endpoint":"http://127.0.0.1:9000","force_path_style":true}}"#,
        );
        let c = BackupConfig::load(&p).unwrap();
        assert_eq!(c.interval, Duration::from_secs(30));
        assert!(c.compress);
        assert_eq!(c.max_rate, Some(50_000_000));
        match c.target {
            Target::S3(s) => {
                assert_eq!(s.secret_access_key, "s3cr3t");
                assert_eq!(s.path, "x/db.gz");
                assert!(s.force_path_style);
            }
            other => panic!("{other:?}"),
        }
        for (text, want) in [
            (r#"{"type":"ftp","sub":{}}"#, "type: unknown type"),
            (r#"{"type":"s3","sub":{"access_key_id":"a","secret_access_key":"b","path":"p"}}"#, "sub.bucket: missing"),
            (r#"{"type":"file","sub":{"dir":"relative","name":"x"}}"#, "sub.dir: must be an absolute path"),
            (r#"{"type":"file","interval":"soon","sub":{"dir":"/tmp","name":"x"}}"#, "interval"),
            (r#"{"type":"file","colour":"red","sub":{"dir":"/tmp","name":"x"}}"#, "unknown field"),
            (r#"{"type":"file","max_mb_per_sec":-1,"sub":{"dir":"/tmp","name":"x"}}"#, "max_mb_per_sec: must be"),
        ] {
            let (_d, p) = write(text);
            let e = BackupConfig::load(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(BackupConfig::load(Path::new("/nonexistent/auto-backup.json")).is_err());
        for (mb, want) in [("0", None), ("2.5", Some(2_500_000))] {
            let (_d, p) =
                write(&format!(r#"{{"type":"file","max_mb_per_sec":{mb},"sub":{{"dir":"/tmp","name":"x"}}}}"#));
            assert_eq!(BackupConfig::load(&p).unwrap().max_rate, want);
        }

        // gcs: the key file is read when the configuration is.
        let (d, _) = write("{}");
        let key = d.path().join("key.json");
        std::fs::write(&key, r#"{"client_email":"a@p.iam","private_key":"-----BEGIN","private_key_id":"1"}"#).unwrap();
        let gcs = |creds: &str| {
            format!(
                r#"{{"type":"gcs","sub":{{"project_id":"p","bucket":"b","name":"/db.gz","credentials_path":"{creds}"}}}}"#
            )
        };
        let (_d, p) = write(&gcs(&key.display().to_string()));
        match BackupConfig::load(&p).unwrap().target {
            Target::Gcs(g) => {
                assert_eq!((g.bucket.as_str(), g.name.as_str(), g.endpoint), ("b", "db.gz", None));
                assert_eq!(g.credentials_path, key);
            }
            other => panic!("{other:?}"),
        }
        let (_d, p) = write(&gcs("/nonexistent/key.json"));
        let e = BackupConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("sub.credentials_path: /nonexistent/key.json"), "{e}");
        std::fs::write(&key, r#"{"client_email":"a@p.iam"}"#).unwrap();
        let (_d, p) = write(&gcs(&key.display().to_string()));
        let e = BackupConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("not a service account's key file: no private_key"), "{e}");
        let (_d, p) = write(r#"{"type":"gcs","sub":{"project_id":"p","name":"n","credentials_path":"/x"}}"#);
        assert!(BackupConfig::load(&p).unwrap_err().to_string().contains("sub.bucket: missing"));
        assert_eq!(expand_env("a$NOPE_RAFTLITE_X-b $ c"), "a-b $ c");
    }
}
