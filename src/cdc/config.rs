//! The `-cdc-config` value (docs/API.md §16): a webhook URL, `stdout`, or a JSON file whose keys
//! are rqlite's. Like the auto-backup files, `$VARS` are expanded from the environment first and
//! every key is checked: a bad file refuses to start, naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::autobackup::config::{expand_env, ConfigError};

/// Where events go.
#[derive(Clone, Debug, PartialEq)]
pub enum Sink {
    /// POST each batch to this `http://` or `https://` URL.
    Http(String),
    /// Write each batch as one line of JSON to standard output (for trying CDC out).
    Stdout,
}

/// How the wait between two attempts grows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RetryPolicy {
    /// `transmit_min_backoff` every time.
    Linear,
    /// Doubling from `transmit_min_backoff` up to `transmit_max_backoff`.
    Exponential,
}

/// TLS towards an `https://` endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SinkTls {
    /// Trust this CA (PEM) instead of the system's.
    pub ca_cert: Option<PathBuf>,
    /// Present this client certificate and key (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
    pub insecure_skip_verify: bool,
    /// Verify the endpoint's certificate for this name instead of the URL's host.
    pub server_name: Option<String>,
}

#[derive(Clone, Debug)]
pub struct CdcConfig {
    pub sink: Sink,
    pub service_id: Option<String>,
    /// Events carry row ids only, no `before`/`after` values.
    pub row_ids_only: bool,
    /// Capture only tables whose name matches (unanchored, as Go's `MatchString`).
    pub table_filter: Option<regex::Regex>,
    pub tls: SinkTls,
    /// Log indexes (event groups) per POST.
    pub max_batch_size: usize,
    /// How long the first waiting group may wait for a batch to fill.
    pub max_batch_delay: Duration,
    /// How often the leader shares how far delivery got (through the Raft log).
    pub high_watermark_interval: Duration,
    pub transmit_timeout: Duration,
    /// Attempts after the first before a batch is given up (counted, logged); 0: never give up.
    pub transmit_max_retries: u32,
    pub transmit_retry_policy: RetryPolicy,
    pub transmit_min_backoff: Duration,
    pub transmit_max_backoff: Duration,
    /// Bytes of queued events a node keeps; beyond it the oldest are dropped (counted, logged).
    pub max_queue_bytes: u64,
}

impl Default for CdcConfig {
    fn default() -> Self {
        CdcConfig {
            sink: Sink::Stdout,
            service_id: None,
            row_ids_only: false,
            table_filter: None,
            tls: SinkTls::default(),
            max_batch_size: 10,
            max_batch_delay: Duration::from_millis(200),
            high_watermark_interval: Duration::from_secs(1),
            transmit_timeout: Duration::from_secs(5),
            transmit_max_retries: 0,
            transmit_retry_policy: RetryPolicy::Exponential,
            transmit_min_backoff: Duration::from_secs(1),
            transmit_max_backoff: Duration::from_secs(30),
            max_queue_bytes: 1 << 30,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    endpoint: Option<String>,
    service_id: Option<String>,
    #[serde(default)]
    row_ids_only: bool,
    table_filter: Option<String>,
    ca_cert_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
    server_name: Option<String>,
    max_batch_size: Option<i64>,
    max_batch_delay: Option<String>,
    high_watermark_interval: Option<String>,
    transmit_timeout: Option<String>,
    transmit_max_retries: Option<i64>,
    transmit_retry_policy: Option<String>,
    transmit_min_backoff: Option<String>,
    transmit_max_backoff: Option<String>,
    max_queue_bytes: Option<i64>,
}

impl CdcConfig {
    /// Read `-cdc-config`: a URL, `stdout`, or the path of a JSON file.
    pub fn from_flag(value: &str) -> Result<CdcConfig, ConfigError> {
        if value == "stdout" {
            return Ok(CdcConfig { sink: Sink::Stdout, ..CdcConfig::default() });
        }
        if value.starts_with("http://") || value.starts_with("https://") {
            let sink = sink(value, "-cdc-config", value)?;
            return Ok(CdcConfig { sink, ..CdcConfig::default() });
        }
        CdcConfig::load(Path::new(value))
    }

    pub fn load(path: &Path) -> Result<CdcConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File { file: file.clone(), reason: e.to_string() })?;
        let raw: Raw = serde_json::from_str(&expand_env(&text))
            .map_err(|e| ConfigError::File { file: file.clone(), reason: format!("not a valid configuration: {e}") })?;
        let key = |key: &str, reason: String| ConfigError::Key { file: file.clone(), key: key.into(), reason };
        let d = CdcConfig::default();
        let endpoint =
            raw.endpoint.ok_or_else(|| key("endpoint", "missing: a http:// or https:// URL, or stdout".into()))?;
        let sink = if endpoint == "stdout" { Sink::Stdout } else { sink(&file, "endpoint", &endpoint)? };
        let table_filter = raw
            .table_filter
            .map(|re| regex::Regex::new(&re).map_err(|e| key("table_filter", format!("not a regular expression: {e}"))))
            .transpose()?;
        let dur = |name: &str, v: Option<String>, default: Duration| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) => crate::config::parse_go_duration(&s).map_err(|e| key(name, e)),
            }
        };
        let positive = |name: &str, v: Duration| {
            if v.is_zero() {
                Err(key(name, "must be positive".into()))
            } else {
                Ok(v)
            }
        };
        // An empty path (an unset `$VAR`) means the key is not set.
        let set = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        let identity = match (set(raw.cert_file), set(raw.key_file)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => return Err(key("key_file", "missing: cert_file needs its key".into())),
            (None, Some(_)) => return Err(key("cert_file", "missing: key_file needs its certificate".into())),
        };
        let max_batch_size = match raw.max_batch_size {
            None => d.max_batch_size,
            Some(n) if n >= 1 => n as usize,
            Some(_) => return Err(key("max_batch_size", "must be at least 1".into())),
        };
        let transmit_max_retries = match raw.transmit_max_retries {
            None => d.transmit_max_retries,
            Some(n) if (0..=u32::MAX as i64).contains(&n) => n as u32,
            Some(_) => return Err(key("transmit_max_retries", "must be 0 (retry for ever) or more".into())),
        };
        let transmit_retry_policy = match raw.transmit_retry_policy.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => d.transmit_retry_policy,
            Some("linear") => RetryPolicy::Linear,
            Some("exponential") => RetryPolicy::Exponential,
            Some(other) => {
                return Err(key("transmit_retry_policy", format!("{other:?}: use \"linear\" or \"exponential\"")))
            }
        };
        let max_queue_bytes = match raw.max_queue_bytes {
            None => d.max_queue_bytes,
            Some(n) if n >= 4096 => n as u64,
            Some(_) => return Err(key("max_queue_bytes", "must be at least 4096".into())),
        };
        let transmit_min_backoff = positive(
            "transmit_min_backoff",
            dur("transmit_min_backoff", raw.transmit_min_backoff, d.transmit_min_backoff)?,
        )?;
        let transmit_max_backoff = positive(
            "transmit_max_backoff",
            dur("transmit_max_backoff", raw.transmit_max_backoff, d.transmit_max_backoff)?,
        )?;
        if transmit_max_backoff < transmit_min_backoff {
            return Err(key("transmit_max_backoff", "is below transmit_min_backoff".into()));
        }
        Ok(CdcConfig {
            sink,
            service_id: raw.service_id.filter(|s| !s.is_empty()),
            row_ids_only: raw.row_ids_only,
            table_filter,
            tls: SinkTls {
                ca_cert: set(raw.ca_cert_file),
                identity,
                insecure_skip_verify: raw.insecure_skip_verify,
                server_name: raw.server_name.filter(|s| !s.is_empty()),
            },
            max_batch_size,
            max_batch_delay: dur("max_batch_delay", raw.max_batch_delay, d.max_batch_delay)?,
            high_watermark_interval: positive(
                "high_watermark_interval",
                dur("high_watermark_interval", raw.high_watermark_interval, d.high_watermark_interval)?,
            )?,
            transmit_timeout: positive(
                "transmit_timeout",
                dur("transmit_timeout", raw.transmit_timeout, d.transmit_timeout)?,
            )?,
            transmit_max_retries,
            transmit_retry_policy,
            transmit_min_backoff,
            transmit_max_backoff,
            max_queue_bytes,
        })
    }

    /// The wait before attempt `attempt` (1 = the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        match self.transmit_retry_policy {
            RetryPolicy::Linear => self.transmit_min_backoff,
            RetryPolicy::Exponential => {
                let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
                self.transmit_min_backoff.saturating_mul(factor).min(self.transmit_max_backoff)
            }
        }
    }

    /// What `/status` shows as the endpoint (a URL without any user or password in it).
    pub fn describe_sink(&self) -> String {
        match &self.sink {
            Sink::Stdout => "stdout".into(),
            Sink::Http(url) => match url.parse::<http::Uri>() {
                Ok(u) => {
                    format!(
                        "{}://{}{}",
                        u.scheme_str().unwrap_or("http"),
                        u.host().unwrap_or(""),
                        u.port().map(|p| format!(":{p}")).unwrap_or_default()
                    ) + u.path()
                }
                Err(_) => "(invalid URL)".into(),
            },
        }
    }
}

fn sink(file: &str, key: &str, url: &str) -> Result<Sink, ConfigError> {
    let bad = |reason: String| ConfigError::Key { file: file.into(), key: key.into(), reason };
    let uri: http::Uri = url.parse().map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(Sink::Http(url.to_string())),
        _ => Err(bad(format!("{url:?}: use a http:// or https:// URL with a host, or stdout"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<CdcConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cdc.json");
        std::fs::write(&f, json).unwrap();
        CdcConfig::load(&f)
    }

    #[test]
    fn url_and_stdout_take_the_defaults() {
        let c = CdcConfig::from_flag("http://127.0.0.1:9/hook").unwrap();
        assert_eq!(c.sink, Sink::Http("http://127.0.0.1:9/hook".into()));
        assert_eq!((c.max_batch_size, c.max_batch_delay), (10, Duration::from_millis(200)));
        assert_eq!(CdcConfig::from_flag("stdout").unwrap().sink, Sink::Stdout);
        assert!(CdcConfig::from_flag("/no/such/file.json").is_err());
    }

    #[test]
    fn a_file_sets_every_key_and_bad_ones_are_named() {
        std::env::set_var("RAFTLITE_CDC_TEST_HOST", "127.0.0.1:7");
        let c = load(
            r#"{"endpoint":"https://$RAFTLITE_CDC_TEST_HOST/x","service_id":"svc","row_ids_only":true,
                "table_filter":"^(a|b)$","max_batch_size":3,"max_batch_delay":"1s",
                "high_watermark_interval":"250ms","transmit_timeout":"2s","transmit_max_retries":4,
                "transmit_retry_policy":"linear","transmit_min_backoff":"10ms","transmit_max_backoff":"1s",
                "insecure_skip_verify":true,"max_queue_bytes":65536}"#,
        )
        .unwrap();
        assert_eq!(c.sink, Sink::Http("https://127.0.0.1:7/x".into()));
        assert_eq!(c.service_id.as_deref(), Some("svc"));
        assert!(c.row_ids_only && c.tls.insecure_skip_verify);
        let filter = c.table_filter.as_ref().unwrap();
        assert!(filter.is_match("a") && !filter.is_match("ab"));
        assert_eq!((c.max_batch_size, c.transmit_max_retries, c.max_queue_bytes), (3, 4, 65536));
        assert_eq!(c.backoff(5), Duration::from_millis(10));
        for (json, key) in [
            (r#"{}"#, "endpoint"),
            (r#"{"endpoint":"ftp://x/"}"#, "endpoint"),
            (r#"{"endpoint":"stdout","table_filter":"("}"#, "table_filter"),
            (r#"{"endpoint":"stdout","max_batch_size":0}"#, "max_batch_size"),
            (r#"{"endpoint":"stdout","max_batch_delay":"soon"}"#, "max_batch_delay"),
            (r#"{"endpoint":"stdout","transmit_retry_policy":"random"}"#, "transmit_retry_policy"),
            (r#"{"endpoint":"stdout","cert_file":"/c.pem"}"#, "key_file"),
            (r#"{"endpoint":"stdout","max_queue_bytes":10}"#, "max_queue_bytes"),
        ] {
            let err = load(json).unwrap_err().to_string();
            assert!(err.contains(key), "{json}: {err}");
        }
        let err = load(r#"{"endpoint":"stdout","max_batch":1}"#).unwrap_err().to_string();
        assert!(err.contains("max_batch"), "{err}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let c = CdcConfig::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/cdc.example.json"))).unwrap();
        assert_eq!(c.service_id.as_deref(), Some("orders-db"));
        let filter = c.table_filter.as_ref().unwrap();
        assert!(filter.is_match("orders") && !filter.is_match("orders_archive"));
    }

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let c = CdcConfig {
            transmit_min_backoff: Duration::from_millis(100),
            transmit_max_backoff: Duration::from_millis(500),
            ..CdcConfig::default()
        };
        let waits: Vec<u128> = (1..=5).map(|a| c.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }
}
