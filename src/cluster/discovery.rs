//! DNS discovery (`-disco-mode dns` and `dns-srv`, docs/API.md §11): the addresses a node joins
//! or notifies come from DNS instead of a `-join` list, looked up again on every round, so nodes
//! that appear later (a Kubernetes StatefulSet scaling up, containers starting one by one) are
//! found, and a name that does not resolve yet is retried rather than fatal.
//!
//! - `dns`: `{"name": "raftlite.internal", "port": 4002}`. The name's A/AAAA records are the
//!   nodes; each is joined at `port` (default 4002).
//! - `dns-srv`: `{"name": "raftlite.internal", "service": "raft"}`. The SRV records of
//!   `_raft._tcp.raftlite.internal` give each node's host and port; hosts are resolved too.
//!
//! `-disco-config` is a JSON string or the path of a JSON file. raftlite adds one key,
//! `resolver` (`"ip:port"`): a name server to ask instead of the system's (`/etc/resolv.conf`).
//! Answers are not cached, so a changed record is seen on the next round.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DiscoError {
    #[error("-disco-config: {0}")]
    Config(String),
    #[error("DNS lookup of {name}: {reason}")]
    Lookup { name: String, reason: String },
    #[error("DNS lookup of {name}: no addresses")]
    Empty { name: String },
}

/// Which records name the nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// A/AAAA records, joined at a fixed port.
    Dns,
    /// SRV records (`_service._tcp.name`), each with its host and port.
    DnsSrv,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dns => "dns",
            Mode::DnsSrv => "dns-srv",
        }
    }
}

/// `-disco-config` for the DNS modes.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoConfig {
    pub mode: Mode,
    pub name: String,
    /// `dns`: the Raft port of every node.
    pub port: u16,
    /// `dns-srv`: the service label (`_<service>._tcp.<name>`).
    pub service: String,
    /// A name server to ask instead of the system's.
    pub resolver: Option<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    port: Option<u16>,
    service: Option<String>,
    resolver: Option<String>,
}

impl DiscoConfig {
    /// Parse `-disco-config` (JSON, or a file holding it) for `mode` (`dns` or `dns-srv`).
    pub fn parse(mode: Mode, config: &str) -> Result<DiscoConfig, DiscoError> {
        let text = if config.trim_start().starts_with('{') {
            config.to_string()
        } else if config.is_empty() {
            return Err(DiscoError::Config(format!(
                "-disco-mode {} needs -disco-config with a \"name\"",
                mode.as_str()
            )));
        } else {
            std::fs::read_to_string(config).map_err(|e| DiscoError::Config(format!("{config}: {e}")))?
        };
        let raw: Raw = serde_json::from_str(&text).map_err(|e| DiscoError::Config(e.to_string()))?;
        let name = raw
            .name
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| DiscoError::Config("\"name\" is required".into()))?;
        let resolver = raw
            .resolver
            .map(|r| {
                r.parse::<SocketAddr>()
                    .map_err(|e| DiscoError::Config(format!("\"resolver\" {r:?}: {e} (want ip:port)")))
            })
            .transpose()?;
        match mode {
            Mode::Dns if raw.service.is_some() => {
                return Err(DiscoError::Config("\"service\" is for -disco-mode dns-srv; dns takes \"port\"".into()))
            }
            Mode::DnsSrv if raw.port.is_some() => {
                return Err(DiscoError::Config(
                    "\"port\" is for -disco-mode dns; dns-srv reads ports from SRV records".into(),
                ))
            }
            _ => {}
        }
        Ok(DiscoConfig {
            mode,
            name,
            port: raw.port.unwrap_or(4002),
            service: raw.service.unwrap_or_else(|| "rqlite-raft".into()),
            resolver,
        })
    }

    /// The name looked up: the name itself, or the SRV name.
    pub fn lookup_name(&self) -> String {
        match self.mode {
            Mode::Dns => self.name.clone(),
            Mode::DnsSrv => format!("_{}._tcp.{}", self.service, self.name),
        }
    }
}

/// A node's DNS discovery: the resolver and what its lookups found (for `/status`).
pub struct Discovery {
    pub config: DiscoConfig,
    resolver: TokioResolver,
    last: Mutex<(Vec<String>, Option<String>)>,
    lookups: AtomicU64,
    failures: AtomicU64,
}

impl Discovery {
    pub fn new(config: DiscoConfig) -> Result<Discovery, DiscoError> {
        let mut builder = match config.resolver {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| DiscoError::Config(format!("cannot read the system's DNS configuration: {e}")))?,
        };
        // Every round must see the records as they are now: no cache.
        builder.options_mut().cache_size = 0;
        let resolver = builder.build().map_err(|e| DiscoError::Config(format!("DNS resolver: {e}")))?;
        Ok(Discovery {
            config,
            resolver,
            last: Mutex::new((Vec::new(), None)),
            lookups: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// The Raft addresses (`ip:port`, sorted) the records name now.
    pub async fn lookup(&self) -> Result<Vec<String>, DiscoError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let found = match self.config.mode {
            Mode::Dns => self.hosts(&self.config.name, self.config.port).await,
            Mode::DnsSrv => self.srv().await,
        };
        let found = found.and_then(|a| {
            if a.is_empty() {
                Err(DiscoError::Empty { name: self.config.lookup_name() })
            } else {
                Ok(a.into_iter().collect::<Vec<_>>())
            }
        });
        let outcome = if found.is_ok() { "ok" } else { "error" };
        metrics::counter!("raftlite_disco_lookups_total", "result" => outcome).increment(1);
        if let Ok(mut last) = self.last.lock() {
            match &found {
                Ok(a) => *last = (a.clone(), None),
                Err(e) => last.1 = Some(e.to_string()),
            }
        }
        if found.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    async fn hosts(&self, name: &str, port: u16) -> Result<BTreeSet<String>, DiscoError> {
        let ips = self
            .resolver
            .lookup_ip(name)
            .await
            .map_err(|e| DiscoError::Lookup { name: name.to_string(), reason: e.to_string() })?;
        Ok(ips.iter().map(|ip| SocketAddr::new(ip, port).to_string()).collect())
    }

    async fn srv(&self) -> Result<BTreeSet<String>, DiscoError> {
        let name = self.config.lookup_name();
        let answer = self
            .resolver
            .srv_lookup(name.as_str())
            .await
            .map_err(|e| DiscoError::Lookup { name: name.clone(), reason: e.to_string() })?;
        let mut out = BTreeSet::new();
        for r in answer.answers() {
            if let RData::SRV(srv) = &r.data {
                let host = srv.target.to_utf8();
                // A target that does not resolve (a pod going away) leaves the others usable.
                match self.hosts(&host, srv.port).await {
                    Ok(a) => out.extend(a),
                    Err(e) => tracing::warn!(error = %e, "discovery: skipping an SRV target"),
                }
            }
        }
        Ok(out)
    }

    /// `/status`'s `disco` section.
    pub fn status(&self) -> serde_json::Value {
        let (addrs, err) = self.last.lock().map(|l| l.clone()).unwrap_or_default();
        let mut v = serde_json::json!({
            "mode": self.config.mode.as_str(),
            "name": self.config.name,
            "lookup_name": self.config.lookup_name(),
            "resolver": self.config.resolver.map(|r| r.to_string()).unwrap_or_else(|| "system".into()),
            "last_addresses": addrs,
            "last_error": err,
            "num_lookups": self.lookups.load(Ordering::Relaxed),
            "num_lookup_failures": self.failures.load(Ordering::Relaxed),
        });
        match self.config.mode {
            Mode::Dns => v["port"] = self.config.port.into(),
            Mode::DnsSrv => v["service"] = self.config.service.clone().into(),
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_as_rqlite_writes_them_and_bad_ones_name_the_key() {
        let c = DiscoConfig::parse(Mode::Dns, r#"{"name": "rqlite.local"}"#).unwrap();
        assert_eq!((c.name.as_str(), c.port, c.resolver), ("rqlite.local", 4002, None));
        let c = DiscoConfig::parse(Mode::DnsSrv, r#"{"name": "svc", "service": "raft", "resolver": "127.0.0.1:53"}"#)
            .unwrap();
        assert_eq!(c.lookup_name(), "_raft._tcp.svc");
        assert_eq!(c.resolver, Some("127.0.0.1:53".parse().unwrap()));
        for (mode, bad, want) in [
            (Mode::Dns, r#"{"port": 1}"#, "name"),
            (Mode::Dns, r#"{"name": "x", "nmae": 1}"#, "nmae"),
            (Mode::Dns, r#"{"name": "x", "service": "s"}"#, "service"),
            (Mode::DnsSrv, r#"{"name": "x", "port": 4002}"#, "port"),
            (Mode::Dns, r#"{"name": "x", "resolver": "localhost"}"#, "resolver"),
            (Mode::Dns, "/no/such/disco.json", "/no/such/disco.json"),
            (Mode::Dns, "", "-disco-config"),
        ] {
            let e = DiscoConfig::parse(mode, bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
