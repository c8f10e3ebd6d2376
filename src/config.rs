//! Node configuration: rqlited's command-line flags (Go `flag` syntax), `RAFTLITE_*` environment
//! variables and a TOML config file, merged with precedence flag > environment > file > default.
//!
//! Every flag of docs/API.md §12 is known here. A flag whose feature raftlite lacks is accepted at
//! its default (rqlite's sample command lines spell defaults out) and refuses to start otherwise,
//! naming the flag: a deployment must never run without something it asked for.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::cluster::discovery::{DiscoConfig, Mode as DiscoMode};

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("flag provided but not defined: -{0}")]
    UnknownFlag(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    BadValue { flag: String, value: String, reason: String },
    #[error("only one data directory may be given, found extra argument {0:?}")]
    ExtraArgument(String),
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("-{flag} is not supported: {why}; remove it (or set it to its default) to start")]
    Unsupported { flag: String, why: &'static str },
}

/// Why a flag that is not `live` cannot be honoured (the start-up error names the flag and this).
fn unsupported_why(name: &str) -> &'static str {
    match name {
        "raft-leader-lease-timeout" => {
            "openraft's leader lease is the election timeout (docs/DESIGN.md §8); set -raft-election-timeout instead"
        }
        n if n.starts_with("otlp-") => "raftlite does not export OpenTelemetry; scrape /metrics (Prometheus) instead",
        "cpu-profile" | "mem-profile" | "trace-profile" => {
            "Go runtime profiles do not exist for a Rust program; profile with perf (docs/PERFORMANCE.md)"
        }
        "disco-key" => "it names the key of consul-kv and etcd-kv discovery, which raftlite does not have (dns and dns-srv need no key)",
        _ => "not built",
    }
}

/// A path flag's value, if set.
fn path_of(s: &Settings, name: &str) -> Option<PathBuf> {
    Some(s.get(name)).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Whether `value` means the same as flag `d`'s default (so an unsupported flag left at it, as
/// rqlite's sample command lines do, asks for nothing raftlite lacks).
fn is_default(d: &FlagDef, value: &str) -> bool {
    match d.kind {
        Bool => parse_go_bool(value) == parse_go_bool(d.default),
        Dur => parse_go_duration(value).ok() == parse_go_duration(d.default).ok(),
        Int => value.parse::<i64>().ok() == d.default.parse::<i64>().ok(),
        Str => value == d.default,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Bool,
    Str,
    Int,
    Dur,
}

/// One known flag. `live` is false for rqlite flags whose feature raftlite does not have (yet):
/// they are recognised, and setting one to anything but its default refuses to start (a
/// deployment that copies rqlite's flags must not run without what it asked for).
struct FlagDef {
    name: &'static str,
    kind: Kind,
    default: &'static str,
    help: &'static str,
    live: bool,
}

const fn f(name: &'static str, kind: Kind, default: &'static str, help: &'static str, live: bool) -> FlagDef {
    FlagDef { name, kind, default, help, live }
}

use Kind::*;

/// rqlited's flags (docs/API.md §12) plus raftlite's own (`-config`, `-http-max-body`, `-log-format`).
static FLAGS: &[FlagDef] = &[
    f("config", Str, "", "TOML configuration file (raftlite)", true),
    f("version", Bool, "false", "Show version information and exit", true),
    f(
        "check-config",
        Bool,
        "false",
        "Check the flags, RAFTLITE_* environment and config file as a start would, print the settings and exit (raftlite)",
        true,
    ),
    f("node-id", Str, "", "Unique ID for node. If not set, set to advertised Raft address", true),
    f("http-addr", Str, "localhost:4001", "HTTP server bind address", true),
    f("http-adv-addr", Str, "", "Advertised HTTP address. If not set, same as HTTP server bind address", true),
    f("raft-addr", Str, "localhost:4002", "Raft communication bind address", true),
    f("raft-adv-addr", Str, "", "Advertised Raft communication address. If not set, same as Raft bind address", true),
    f("http-allow-origin", Str, "", "Value to set for Access-Control-Allow-Origin HTTP header", true),
    f(
        "http-max-body",
        Int,
        "67108864",
        "Largest accepted request body in bytes; larger bodies get 413 (raftlite)",
        true,
    ),
    f("log-format", Str, "text", "Log format: text or json (raftlite)", true),
    f(
        "metrics",
        Bool,
        "true",
        "Serve Prometheus metrics at /metrics; false compiles every metric to a no-op (raftlite)",
        true,
    ),
    f("log-level", Str, "info", "Log level for raftlite itself: error, warn, info, debug, trace (raftlite)", true),
    f("join", Str, "", "Comma-delimited list of Raft addresses of nodes to join", true),
    f("join-attempts", Int, "5", "Number of join attempts to make", true),
    f("join-interval", Dur, "3s", "Period between join attempts", true),
    f("join-as", Str, "", "Username in authentication file to join as", true),
    f("bootstrap-expect", Int, "0", "Minimum number of nodes required for a bootstrap", true),
    f("bootstrap-expect-timeout", Dur, "120s", "Maximum time for bootstrap process", true),
    f("disco-mode", Str, "", "Choose clustering discovery mode: dns or dns-srv (consul-kv and etcd-kv are not built)", true),
    f("disco-key", Str, "rqlite", "Key prefix for cluster discovery service", false),
    f("disco-config", Str, "", "Set discovery config, or path to cluster discovery config file", true),
    f("raft-non-voter", Bool, "false", "Configure as non-voting node", true),
    f("raft-cluster-remove-shutdown", Bool, "false", "Node removes itself from cluster on graceful shutdown", true),
    f("raft-shutdown-stepdown", Bool, "true", "If leader, stepdown before shutting down", true),
    f("raft-remove-shutdown", Bool, "false", "Shutdown Raft if node removed from cluster", true),
    f("raft-reap-node-timeout", Dur, "0h", "Time after which a non-reachable voting node will be reaped", true),
    f(
        "raft-reap-read-only-node-timeout",
        Dur,
        "0h",
        "Time after which a non-reachable non-voting node will be reaped",
        true,
    ),
    f("cluster-connect-timeout", Dur, "30s", "Timeout for initial connection to other nodes", true),
    f("raft-snap", Int, "8192", "Number of outstanding log entries which triggers Raft snapshot", true),
    f("raft-snap-wal-size", Int, "4194304", "SQLite WAL file size in bytes which triggers Raft snapshot", true),
    f("raft-snap-int", Dur, "10s", "Snapshot threshold check interval", true),
    f("raft-heartbeat-timeout", Dur, "1s", "Raft heartbeat timeout", true),
    f("raft-election-timeout", Dur, "1s", "Raft election timeout", true),
    f("raft-commit-timeout", Dur, "50ms", "Raft commit timeout", true),
    f("raft-leader-lease-timeout", Dur, "0s", "Raft leader lease timeout. Use 0s for Raft default", false),
    f("raft-apply-timeout", Dur, "10s", "Raft apply timeout", true),
    f("raft-log-level", Str, "WARN", "Minimum log level for Raft module", true),
    f("compress-snap-transport", Bool, "false", "Compress snapshots sent between nodes", true),
    f("fk", Bool, "false", "Enable SQLite foreign key constraints", true),
    f("db-max-ro-conns", Int, "256", "Maximum number of read-only connections to the SQLite database", true),
    f("auto-vacuum-int", Dur, "0s", "Period between automatic VACUUMs. It not set, not enabled", true),
    f("auto-optimize-int", Dur, "24h", "Period between automatic 'PRAGMA optimize'. Set to 0h to disable", true),
    f(
        "extensions-path",
        Str,
        "",
        "Comma-delimited list of paths to directories, zipfiles, or tar.gz files containing SQLite extensions",
        true,
    ),
    f("write-queue-capacity", Int, "1024", "Write queue capacity", true),
    f("write-queue-batch-size", Int, "128", "Write queue batch size", true),
    f("write-queue-timeout", Dur, "50ms", "Write queue timeout", true),
    f("write-queue-tx", Bool, "false", "Use a transaction when processing a queued write", true),
    f("http-max-conns", Int, "1024", "Most HTTP connections open at once, per port; more are closed at once (raftlite)", true),
    f(
        "http-header-timeout",
        Dur,
        "10s",
        "A request's headers must arrive within this; idle keep-alive connections close after it (raftlite)",
        true,
    ),
    f("http-max-headers", Int, "100", "Most headers in one request; more get 431 (raftlite)", true),
    f("http-max-header-bytes", Int, "65536", "Largest request head in bytes; larger gets 431 (raftlite)", true),
    f(
        "db-timeout",
        Dur,
        "60s",
        "Time limit of one SQL statement when a request gives no db_timeout: reads by the clock, writes by deterministic work; 0s: none (raftlite)",
        true,
    ),
    f(
        "group-commit-in-flight",
        Int,
        "0",
        "Log entries of concurrent writes in flight at once; writes arriving meanwhile share the next entry. 0 is 1 (raftlite)",
        true,
    ),
    f("group-commit-max-batch", Int, "256", "Most write requests carried by one log entry (raftlite)", true),
    f("auth", Str, "", "Path to authentication and authorization file. If not set, not enabled", true),
    f("http-cert", Str, "", "Path to HTTPS X.509 certificate", true),
    f("http-key", Str, "", "Path to HTTPS X.509 private key", true),
    f("http-ca-cert", Str, "", "Path to X.509 CA certificate for HTTPS", true),
    f("http-verify-client", Bool, "false", "Enable mutual TLS for HTTPS", true),
    f("http-verify-common-name", Str, "", "Verify client certificate common name", true),
    f("node-cert", Str, "", "Path to X.509 certificate for node-to-node mutual authentication and encryption", true),
    f("node-key", Str, "", "Path to X.509 private key for node-to-node mutual authentication and encryption", true),
    f("node-ca-cert", Str, "", "Path to X.509 CA certificate for node-to-node encryption", true),
    f("node-no-verify", Bool, "false", "Skip verification of any node-node certificate", true),
    f("node-verify-client", Bool, "false", "Enable mutual TLS for node-to-node communication", true),
    f("node-verify-server-name", Str, "", "Hostname to verify on certificate returned by a node", true),
    f("node-verify-common-name", Str, "", "Verify node client certificate common name", true),
    f("auto-backup", Str, "", "Path to automatic backup configuration file. If not set, not enabled", true),
    f("auto-restore", Str, "", "Path to automatic restore configuration file. If not set, not enabled", true),
    f("cdc-config", Str, "", "CDC config: a webhook URL, stdout, or the path of a JSON configuration file", true),
    f("otlp-endpoint", Str, "", "OTLP endpoint", false),
    f("otlp-interval", Dur, "30s", "OTLP push interval", false),
    f("otlp-insecure", Bool, "false", "OTLP without TLS", false),
    f("otlp-no-verify", Bool, "false", "Skip OTLP server certificate verification", false),
    f("otlp-ca-cert", Str, "", "OTLP CA certificate", false),
    f("otlp-cert", Str, "", "OTLP client certificate", false),
    f("otlp-key", Str, "", "OTLP client key", false),
    f("cpu-profile", Str, "", "Path to file for CPU profiling information", false),
    f("mem-profile", Str, "", "Path to file for memory profiling information", false),
    f("trace-profile", Str, "", "Path to file for trace profiling information", false),
];

fn def(name: &str) -> Option<&'static FlagDef> {
    FLAGS.iter().find(|d| d.name == name)
}

/// Parse a Go duration string (`300ms`, `1.5h`, `2h45m`, `-1s`, `0`).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let mut s = s.trim();
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if let Some(rest) = s.strip_prefix('-') {
        let d = parse_go_duration(rest)?;
        if d.is_zero() {
            return Ok(d);
        }
        return Err(format!("negative duration {orig:?}"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(format!("invalid duration {orig:?}"));
    }
    let mut total = 0f64;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if start == i {
            return Err(format!("invalid duration {orig:?}"));
        }
        let num: f64 = s[start..i].parse().map_err(|_| format!("invalid duration {orig:?}"))?;
        let ustart = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let unit = &s[ustart..i];
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration {orig:?}")),
            _ => return Err(format!("unknown unit {unit:?} in duration {orig:?}")),
        };
        total += num * nanos_per;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(format!("invalid duration {orig:?}"));
    }
    Ok(Duration::from_nanos(total as u64))
}

fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn check_value(d: &FlagDef, value: &str) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::BadValue { flag: d.name.to_string(), value: value.to_string(), reason };
    match d.kind {
        Bool => parse_go_bool(value).map(|_| ()).ok_or_else(|| bad("parse error".into())),
        Int => value.parse::<i64>().map(|_| ()).map_err(|e| bad(e.to_string())),
        Dur => parse_go_duration(value).map(|_| ()).map_err(bad),
        Str => Ok(()),
    }
}

/// Where a setting came from (recorded with each value; precedence is applied as they merge).
#[derive(Clone, Debug, PartialEq)]
enum Source {
    File,
    Env,
    Flag,
}

/// Raw settings, keyed by flag name, before they are turned into a typed [`Config`].
#[derive(Default, Debug)]
struct Settings {
    values: BTreeMap<String, (String, Source)>,
    data_dir: Option<(String, Source)>,
}

impl Settings {
    fn set(&mut self, name: &str, value: String, src: Source) -> Result<(), ConfigError> {
        let d = def(name).ok_or_else(|| ConfigError::UnknownFlag(name.to_string()))?;
        check_value(d, &value)?;
        self.values.insert(name.to_string(), (value, src));
        Ok(())
    }

    fn get(&self, name: &str) -> &str {
        match self.values.get(name) {
            Some((v, _)) => v,
            None => def(name).map(|d| d.default).unwrap_or(""),
        }
    }

    fn bool(&self, name: &str) -> bool {
        parse_go_bool(self.get(name)).unwrap_or(false)
    }

    fn int(&self, name: &str) -> i64 {
        self.get(name).parse().unwrap_or(0)
    }

    fn dur(&self, name: &str) -> Duration {
        parse_go_duration(self.get(name)).unwrap_or_default()
    }
}

/// Parse Go-style command-line arguments (without the program name) into flag settings.
fn parse_args(args: &[String], settings: &mut Settings) -> Result<(), ConfigError> {
    let mut i = 0;
    let mut positional: Vec<String> = Vec::new();
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if positional.is_empty() && arg.starts_with('-') && arg.len() > 1 {
            if arg == "--" {
                positional.extend(args[i..].iter().cloned());
                break;
            }
            let body = arg.trim_start_matches('-');
            if arg.starts_with("---") || body.is_empty() {
                return Err(ConfigError::Invalid(format!("bad flag syntax: {arg}")));
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if name == "h" || name == "help" {
                return Err(ConfigError::Invalid(usage()));
            }
            let d = def(name).ok_or_else(|| ConfigError::UnknownFlag(name.to_string()))?;
            let value = match (d.kind, inline) {
                (_, Some(v)) => v,
                (Bool, None) => "true".to_string(),
                (_, None) => {
                    let v = args.get(i).ok_or_else(|| ConfigError::MissingValue(name.to_string()))?;
                    i += 1;
                    v.clone()
                }
            };
            settings.set(name, value, Source::Flag)?;
        } else {
            positional.push(arg.clone());
        }
    }
    match positional.len() {
        0 => {}
        1 => settings.data_dir = Some((positional[0].clone(), Source::Flag)),
        _ => return Err(ConfigError::ExtraArgument(positional[1].clone())),
    }
    Ok(())
}

/// Apply `RAFTLITE_<FLAG_NAME>` environment variables (dashes become underscores).
fn apply_env(vars: &[(String, String)], settings: &mut Settings) -> Result<(), ConfigError> {
    for (k, v) in vars {
        let Some(rest) = k.strip_prefix("RAFTLITE_") else { continue };
        let name = rest.to_ascii_lowercase().replace('_', "-");
        if name == "data-dir" {
            settings.data_dir = Some((v.clone(), Source::Env));
            continue;
        }
        if def(&name).is_some() && name != "config" {
            settings.set(&name, v.clone(), Source::Env)?;
        }
    }
    Ok(())
}

/// Apply a TOML file: top-level keys are flag names (`http-addr` or `http_addr`), plus `data-dir`.
fn apply_file(path: &str, text: &str, settings: &mut Settings) -> Result<(), ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File { path: path.to_string(), reason: e.to_string() })?;
    for (k, v) in table {
        let name = k.replace('_', "-");
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            other => {
                return Err(ConfigError::File {
                    path: path.to_string(),
                    reason: format!("key {k}: unsupported value {other}"),
                })
            }
        };
        if name == "data-dir" {
            settings.data_dir = Some((value, Source::File));
            continue;
        }
        if name == "config" {
            return Err(ConfigError::File {
                path: path.to_string(),
                reason: "a config file cannot name another config file".into(),
            });
        }
        settings
            .set(&name, value, Source::File)
            .map_err(|e| ConfigError::File { path: path.to_string(), reason: e.to_string() })?;
    }
    Ok(())
}

/// The usage text printed by `-h`.
pub fn usage() -> String {
    let mut out = String::from("Usage: raftlited [flags] <data directory>\n\n");
    for d in FLAGS {
        let ty = match d.kind {
            Bool => "",
            Str => " string",
            Int => " int",
            Dur => " duration",
        };
        out.push_str(&format!("  -{}{}\n    \t{}", d.name, ty, d.help));
        if !d.default.is_empty() && d.default != "false" {
            out.push_str(&format!(" (default {:?})", d.default));
        }
        if !d.live {
            out.push_str(" [not supported: refuses to start unless left at the default]");
        }
        out.push('\n');
    }
    out
}

/// The typed configuration of one node.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub node_id: String,
    pub http_addr: String,
    pub http_adv_addr: String,
    pub raft_addr: String,
    pub raft_adv_addr: String,
    pub http_allow_origin: String,
    pub max_body_bytes: u64,
    pub log_format: String,
    pub log_level: String,
    pub raft_log_level: String,
    pub raft_snap: u64,
    pub raft_snap_wal_size: u64,
    pub raft_snap_int: Duration,
    pub raft_heartbeat_timeout: Duration,
    pub raft_election_timeout: Duration,
    pub raft_apply_timeout: Duration,
    /// Group commit: proposals in flight at once (0, the default, is 1), and requests per
    /// proposal at most.
    pub group_commit_in_flight: usize,
    pub group_commit_max_batch: usize,
    pub fk: bool,
    pub db_max_ro_conns: usize,
    pub show_version: bool,
    /// `-check-config`: validate, print [`Config::settings`], and exit.
    pub check_only: bool,
    /// Every setting given (flag, environment or file) with where it came from, for
    /// `-check-config`: (name, value, source).
    pub settings: Vec<(String, String, &'static str)>,
    pub metrics: bool,
    /// Raft addresses of nodes to join (`-join a,b,c`).
    pub join: Vec<String>,
    pub join_attempts: u32,
    pub write_queue_capacity: usize,
    pub write_queue_batch_size: usize,
    pub write_queue_timeout: Duration,
    pub write_queue_tx: bool,
    pub join_interval: Duration,
    pub bootstrap_expect: usize,
    pub bootstrap_expect_timeout: Duration,
    pub non_voter: bool,
    pub remove_on_shutdown: bool,
    pub stepdown_on_shutdown: bool,
    /// Leave (exit) once this node has been removed from the cluster (`-raft-remove-shutdown`).
    pub remove_shutdown: bool,
    /// On the leader: remove voters (non-voters) unreachable this long; zero: never
    /// (`-raft-reap-node-timeout`, `-raft-reap-read-only-node-timeout`).
    pub reap_voter_after: Duration,
    pub reap_non_voter_after: Duration,
    /// How often the leader proposes `VACUUM` / `PRAGMA optimize`; zero: never.
    pub auto_vacuum_int: Duration,
    pub auto_optimize_int: Duration,
    /// Send snapshots to other nodes gzip-compressed (`-compress-snap-transport`).
    pub compress_snap_transport: bool,
    /// HTTP connection limits (`-http-max-conns`, `-http-header-timeout`, `-http-max-headers`,
    /// `-http-max-header-bytes`), on both ports.
    pub http_max_conns: usize,
    pub http_header_timeout: Duration,
    pub http_max_headers: usize,
    pub http_max_header_bytes: usize,
    /// The default time limit of a statement (`-db-timeout`); zero: none.
    pub db_timeout: Duration,
    /// HTTPS on the API (`-http-cert`, `-http-key`, `-http-ca-cert`, `-http-verify-client`).
    pub http_cert: Option<PathBuf>,
    pub http_key: Option<PathBuf>,
    pub http_ca_cert: Option<PathBuf>,
    pub http_verify_client: bool,
    /// The common name client certificates must carry (`-http-verify-common-name`).
    pub http_verify_common_name: Option<String>,
    /// Node-to-node TLS on the Raft address (`-node-*`, docs/DESIGN.md §10).
    pub node_cert: Option<PathBuf>,
    pub node_key: Option<PathBuf>,
    pub node_ca_cert: Option<PathBuf>,
    pub node_no_verify: bool,
    pub node_verify_client: bool,
    pub node_verify_server_name: Option<String>,
    pub node_verify_common_name: Option<String>,
    /// `-auto-backup`, `-auto-restore`: their configuration files (src/autobackup/config.rs).
    pub auto_backup: Option<PathBuf>,
    /// `-cdc-config`: a webhook URL, `stdout`, or a JSON file (src/cdc/config.rs).
    pub cdc_config: Option<String>,
    /// `-disco-mode dns|dns-srv` with its `-disco-config`.
    pub disco: Option<DiscoConfig>,
    /// `-extensions-path`: files, directories, zip and tar.gz archives of SQLite extensions.
    pub extensions_path: Vec<String>,
    pub auto_restore: Option<PathBuf>,
    /// The credentials file (`-auth`); none: no authentication.
    pub auth: Option<PathBuf>,
    /// The user in the credentials file whose credentials this node joins with (`-join-as`).
    pub join_as: Option<String>,
    /// The command line, for `/status`.
    pub cmdline: Vec<String>,
}

/// Default data directory when none is given: under the current directory.
pub const DEFAULT_DATA_DIR: &str = "raftlite-data";

impl Config {
    /// Build the configuration from the command line (without the program name), the process
    /// environment and the config file named by `-config` (or `RAFTLITE_CONFIG`).
    pub fn load(args: &[String], env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut flags = Settings::default();
        parse_args(args, &mut flags)?;
        let config_path = match flags.values.get("config") {
            Some((p, _)) => Some(p.clone()),
            None => env.iter().find(|(k, _)| k == "RAFTLITE_CONFIG").map(|(_, v)| v.clone()),
        };

        let mut merged = Settings::default();
        if let Some(path) = config_path.filter(|p| !p.is_empty()) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::File { path: path.clone(), reason: e.to_string() })?;
            apply_file(&path, &text, &mut merged)?;
        }
        apply_env(env, &mut merged)?;
        for (k, v) in flags.values {
            merged.values.insert(k, v);
        }
        if flags.data_dir.is_some() {
            merged.data_dir = flags.data_dir;
        }
        Self::from_settings(merged, args)
    }

    fn from_settings(s: Settings, args: &[String]) -> Result<Config, ConfigError> {
        let http_addr = s.get("http-addr").to_string();
        let raft_addr = s.get("raft-addr").to_string();
        for (flag, addr) in [("http-addr", &http_addr), ("raft-addr", &raft_addr)] {
            if addr.contains("://") {
                return Err(ConfigError::Invalid(format!("-{flag} must not include a scheme: {addr}")));
            }
            if !addr.contains(':') {
                return Err(ConfigError::Invalid(format!("-{flag} must be host:port, got {addr}")));
            }
        }
        if http_addr == raft_addr {
            return Err(ConfigError::Invalid("-http-addr and -raft-addr must differ".into()));
        }
        let or = |v: &str, d: &str| if v.is_empty() { d.to_string() } else { v.to_string() };
        let http_adv_addr = or(s.get("http-adv-addr"), &http_addr);
        let raft_adv_addr = or(s.get("raft-adv-addr"), &raft_addr);
        if http_adv_addr == raft_adv_addr {
            return Err(ConfigError::Invalid("advertised HTTP and Raft addresses must differ".into()));
        }
        let node_id = or(s.get("node-id"), &raft_adv_addr);
        let max_body = s.int("http-max-body");
        if max_body <= 0 {
            return Err(ConfigError::Invalid("-http-max-body must be positive".into()));
        }
        let ro = s.int("db-max-ro-conns");
        if ro <= 0 {
            return Err(ConfigError::Invalid("-db-max-ro-conns must be positive".into()));
        }
        let raft_snap = s.int("raft-snap");
        if raft_snap <= 0 {
            return Err(ConfigError::Invalid("-raft-snap must be positive".into()));
        }
        let format = s.get("log-format").to_string();
        if format != "text" && format != "json" {
            return Err(ConfigError::Invalid(format!("-log-format must be text or json, got {format}")));
        }
        let heartbeat = s.dur("raft-heartbeat-timeout");
        let election = s.dur("raft-election-timeout");
        if heartbeat.is_zero() || election.is_zero() {
            return Err(ConfigError::Invalid("Raft timeouts must be positive".into()));
        }
        let disco = match s.get("disco-mode") {
            "" => None,
            "dns" | "dns-srv" if !s.get("join").is_empty() => {
                return Err(ConfigError::Invalid(
                    "-disco-mode and -join cannot be used together: discovery finds the nodes to join".into(),
                ))
            }
            "dns" | "dns-srv" if !s.bool("raft-non-voter") && s.int("bootstrap-expect") <= 0 => {
                return Err(ConfigError::Invalid(
                    "-disco-mode dns and dns-srv need -bootstrap-expect (how many nodes form the cluster)".into(),
                ))
            }
            m @ ("dns" | "dns-srv") => {
                let mode = if m == "dns" { DiscoMode::Dns } else { DiscoMode::DnsSrv };
                Some(DiscoConfig::parse(mode, s.get("disco-config")).map_err(|e| ConfigError::Invalid(e.to_string()))?)
            }
            "consul-kv" | "etcd-kv" => return Err(ConfigError::Unsupported {
                flag: "disco-mode".into(),
                why:
                    "consul-kv and etcd-kv discovery are not built; use dns or dns-srv with -bootstrap-expect, or -join",
            }),
            other => {
                return Err(ConfigError::BadValue {
                    flag: "disco-mode".into(),
                    value: other.into(),
                    reason: "want dns or dns-srv".into(),
                })
            }
        };
        if disco.is_none() && !s.get("disco-config").is_empty() {
            return Err(ConfigError::Invalid("-disco-config needs -disco-mode".into()));
        }
        if s.bool("raft-non-voter") && s.int("bootstrap-expect") > 0 {
            return Err(ConfigError::Invalid("non-voters cannot use -bootstrap-expect".into()));
        }
        for a in s.get("join").split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if a.contains("://") {
                return Err(ConfigError::Invalid(format!("-join takes Raft addresses (host:port), not URLs: {a}")));
            }
        }
        if s.get("http-cert").is_empty() != s.get("http-key").is_empty() {
            return Err(ConfigError::Invalid("-http-cert and -http-key go together: give both or neither".into()));
        }
        if !s.get("http-verify-common-name").is_empty() && !s.bool("http-verify-client") {
            return Err(ConfigError::Invalid(
                "-http-verify-common-name checks client certificates: it needs -http-verify-client".into(),
            ));
        }
        if s.bool("http-verify-client") && (s.get("http-ca-cert").is_empty() || s.get("http-cert").is_empty()) {
            return Err(ConfigError::Invalid(
                "-http-verify-client needs HTTPS (-http-cert, -http-key) and -http-ca-cert".into(),
            ));
        }
        if !s.get("http-ca-cert").is_empty() && s.get("http-cert").is_empty() {
            return Err(ConfigError::Invalid(
                "-http-ca-cert configures HTTPS: it needs -http-cert and -http-key".into(),
            ));
        }
        if s.get("node-cert").is_empty() != s.get("node-key").is_empty() {
            return Err(ConfigError::Invalid("-node-cert and -node-key go together: give both or neither".into()));
        }
        if s.get("node-cert").is_empty() {
            let without = ["node-ca-cert", "node-verify-server-name", "node-verify-common-name"]
                .into_iter()
                .filter(|f| !s.get(f).is_empty())
                .chain(["node-no-verify", "node-verify-client"].into_iter().filter(|f| s.bool(f)))
                .next();
            if let Some(f) = without {
                return Err(ConfigError::Invalid(format!(
                    "-{f} configures node-to-node TLS: it needs -node-cert and -node-key"
                )));
            }
        }
        if !s.get("node-verify-common-name").is_empty() && !s.bool("node-verify-client") {
            return Err(ConfigError::Invalid(
                "-node-verify-common-name checks other nodes' client certificates: it needs -node-verify-client".into(),
            ));
        }
        if s.bool("node-verify-client") && s.get("node-ca-cert").is_empty() {
            return Err(ConfigError::Invalid(
                "-node-verify-client needs -node-ca-cert (the CA other nodes' certificates chain to)".into(),
            ));
        }
        if !s.get("auto-restore").is_empty() && !s.get("join").is_empty() {
            return Err(ConfigError::Invalid(
                "-auto-restore cannot be used with -join: a joining node gets its data from the cluster".into(),
            ));
        }
        if !s.get("cdc-config").is_empty() && s.bool("raft-non-voter") {
            return Err(ConfigError::Invalid(
                "-cdc-config cannot be used with -raft-non-voter: a read-only node never leads, so it never sends changes"
                    .into(),
            ));
        }
        if !s.get("join-as").is_empty() && s.get("auth").is_empty() {
            return Err(ConfigError::Invalid("-join-as names a user of the -auth file; give -auth too".into()));
        }
        for (name, (value, _)) in &s.values {
            if let Some(d) = def(name).filter(|d| !d.live && !is_default(d, value)) {
                return Err(ConfigError::Unsupported { flag: d.name.to_string(), why: unsupported_why(d.name) });
            }
        }
        Ok(Config {
            data_dir: PathBuf::from(s.data_dir.clone().map(|(d, _)| d).unwrap_or_else(|| DEFAULT_DATA_DIR.to_string())),
            node_id,
            http_addr,
            http_adv_addr,
            raft_addr,
            raft_adv_addr,
            http_allow_origin: s.get("http-allow-origin").to_string(),
            max_body_bytes: max_body as u64,
            log_format: format,
            log_level: s.get("log-level").to_string(),
            raft_log_level: s.get("raft-log-level").to_string(),
            raft_snap: raft_snap as u64,
            raft_snap_wal_size: s.int("raft-snap-wal-size").max(0) as u64,
            raft_snap_int: s.dur("raft-snap-int").max(Duration::from_millis(10)),
            raft_heartbeat_timeout: heartbeat,
            raft_election_timeout: election,
            raft_apply_timeout: s.dur("raft-apply-timeout"),
            group_commit_in_flight: s.int("group-commit-in-flight").max(0) as usize,
            group_commit_max_batch: s.int("group-commit-max-batch").max(1) as usize,
            fk: s.bool("fk"),
            db_max_ro_conns: ro as usize,
            show_version: s.bool("version"),
            check_only: s.bool("check-config"),
            settings: s
                .values
                .iter()
                .map(|(k, (v, src))| {
                    let from = match src {
                        Source::File => "config file",
                        Source::Env => "environment",
                        Source::Flag => "flag",
                    };
                    (k.clone(), v.clone(), from)
                })
                .chain(s.data_dir.iter().map(|(d, _)| ("data-dir".to_string(), d.clone(), "argument or file")))
                .collect(),
            metrics: s.bool("metrics"),
            join: s.get("join").split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect(),
            join_attempts: s.int("join-attempts").max(1) as u32,
            write_queue_capacity: s.int("write-queue-capacity").max(1) as usize,
            write_queue_batch_size: s.int("write-queue-batch-size").max(1) as usize,
            write_queue_timeout: s.dur("write-queue-timeout"),
            write_queue_tx: s.bool("write-queue-tx"),
            join_interval: s.dur("join-interval"),
            bootstrap_expect: s.int("bootstrap-expect").max(0) as usize,
            bootstrap_expect_timeout: s.dur("bootstrap-expect-timeout"),
            non_voter: s.bool("raft-non-voter"),
            remove_on_shutdown: s.bool("raft-cluster-remove-shutdown"),
            stepdown_on_shutdown: s.bool("raft-shutdown-stepdown"),
            remove_shutdown: s.bool("raft-remove-shutdown"),
            reap_voter_after: s.dur("raft-reap-node-timeout"),
            reap_non_voter_after: s.dur("raft-reap-read-only-node-timeout"),
            auto_vacuum_int: s.dur("auto-vacuum-int"),
            auto_optimize_int: s.dur("auto-optimize-int"),
            compress_snap_transport: s.bool("compress-snap-transport"),
            db_timeout: s.dur("db-timeout"),
            http_max_conns: s.int("http-max-conns").max(1) as usize,
            http_header_timeout: s.dur("http-header-timeout"),
            http_max_headers: s.int("http-max-headers").max(1) as usize,
            http_max_header_bytes: s.int("http-max-header-bytes").max(1024) as usize,
            http_cert: path_of(&s, "http-cert"),
            http_key: path_of(&s, "http-key"),
            http_ca_cert: path_of(&s, "http-ca-cert"),
            http_verify_client: s.bool("http-verify-client"),
            http_verify_common_name: Some(s.get("http-verify-common-name")).filter(|v| !v.is_empty()).map(String::from),
            auto_backup: path_of(&s, "auto-backup"),
            cdc_config: Some(s.get("cdc-config").to_string()).filter(|v| !v.is_empty()),
            disco,
            extensions_path: s
                .get("extensions-path")
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect(),
            auto_restore: path_of(&s, "auto-restore"),
            node_cert: path_of(&s, "node-cert"),
            node_key: path_of(&s, "node-key"),
            node_ca_cert: path_of(&s, "node-ca-cert"),
            node_no_verify: s.bool("node-no-verify"),
            node_verify_client: s.bool("node-verify-client"),
            node_verify_server_name: Some(s.get("node-verify-server-name")).filter(|v| !v.is_empty()).map(String::from),
            node_verify_common_name: Some(s.get("node-verify-common-name")).filter(|v| !v.is_empty()).map(String::from),
            auth: Some(s.get("auth")).filter(|a| !a.is_empty()).map(PathBuf::from),
            join_as: Some(s.get("join-as")).filter(|a| !a.is_empty()).map(str::to_string),
            cmdline: std::iter::once("raftlited".to_string()).chain(args.iter().cloned()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("0h"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("10us"), Ok(Duration::from_micros(10)));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5x").is_err());
        assert!(parse_go_duration("abc").is_err());
    }

    #[test]
    fn go_flag_syntax() {
        let c = Config::load(
            &args("-node-id 2 -http-addr=127.0.0.1:5001 --raft-addr 127.0.0.1:5002 -fk -raft-election-timeout 500ms data2"),
            &[],
        )
        .unwrap();
        assert_eq!(c.node_id, "2");
        assert_eq!(c.http_addr, "127.0.0.1:5001");
        assert_eq!(c.raft_addr, "127.0.0.1:5002");
        assert!(c.fk);
        assert_eq!(c.raft_election_timeout, Duration::from_millis(500));
        assert_eq!(c.data_dir, PathBuf::from("data2"));
    }

    #[test]
    fn defaults_and_node_id() {
        let c = Config::load(&[], &[]).unwrap();
        assert_eq!(c.http_addr, "localhost:4001");
        assert_eq!(c.raft_addr, "localhost:4002");
        assert_eq!(c.node_id, "localhost:4002");
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.max_body_bytes, 64 << 20);
    }

    #[test]
    fn bool_forms() {
        assert!(Config::load(&args("-fk=true d"), &[]).unwrap().fk);
        assert!(!Config::load(&args("-fk=false d"), &[]).unwrap().fk);
        // A bare `-fk false` is Go syntax for "-fk, then positional false": two positionals.
        assert_eq!(Config::load(&args("-fk false d"), &[]).unwrap_err(), ConfigError::ExtraArgument("d".into()));
    }

    #[test]
    fn errors() {
        assert_eq!(Config::load(&args("-nope 1"), &[]).unwrap_err(), ConfigError::UnknownFlag("nope".into()));
        assert_eq!(Config::load(&args("-node-id"), &[]).unwrap_err(), ConfigError::MissingValue("node-id".into()));
        assert!(matches!(Config::load(&args("-raft-snap-int 10 d"), &[]).unwrap_err(), ConfigError::BadValue { .. }));
        assert!(Config::load(&args("-http-addr http://x:1"), &[]).is_err());
        assert!(Config::load(&args("d1 d2"), &[]).is_err());
    }

    #[test]
    fn node_tls_flags_need_each_other() {
        let c = Config::load(&args("-node-cert c.pem -node-key k.pem -node-ca-cert ca.pem -node-verify-client"), &[])
            .unwrap();
        assert_eq!(c.node_cert, Some(PathBuf::from("c.pem")));
        assert!(c.node_verify_client);
        for (bad, want) in [
            ("-node-cert c.pem", "-node-cert and -node-key go together"),
            ("-node-ca-cert ca.pem", "-node-ca-cert configures node-to-node TLS"),
            ("-node-no-verify", "-node-no-verify configures node-to-node TLS"),
            ("-node-cert c.pem -node-key k.pem -node-verify-client", "-node-verify-client needs -node-ca-cert"),
            (
                "-node-cert c.pem -node-key k.pem -node-ca-cert ca.pem -node-verify-common-name n",
                "it needs -node-verify-client",
            ),
            ("-http-ca-cert ca.pem", "-http-ca-cert configures HTTPS"),
        ] {
            let err = Config::load(&args(bad), &[]).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn unsupported_flags_refuse_unless_default() {
        let err = Config::load(&args("-write-queue-tx -otlp-endpoint x:1 -join 127.0.0.1:4002 d"), &[]).unwrap_err();
        assert!(matches!(&err, ConfigError::Unsupported { flag, .. } if flag == "otlp-endpoint"), "{err}");
        assert!(err.to_string().contains("-otlp-endpoint"));
        for ok in ["-raft-leader-lease-timeout 0s", "-otlp-interval 30s", "-node-no-verify=false", "-cpu-profile ''"] {
            let a: Vec<String> = ok.split(' ').map(|s| s.trim_matches('\'').to_string()).collect();
            Config::load(&a, &[]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["-raft-leader-lease-timeout 500ms", "-otlp-endpoint x:4317", "-mem-profile m.prof"] {
            assert!(matches!(Config::load(&args(bad), &[]), Err(ConfigError::Unsupported { .. })), "{bad}");
        }
        let c = Config::load(&args("-raft-reap-node-timeout 2s -auto-vacuum-int 1h -compress-snap-transport"), &[])
            .unwrap();
        assert_eq!(c.reap_voter_after, Duration::from_secs(2));
        assert_eq!(c.auto_vacuum_int, Duration::from_secs(3600));
        assert_eq!(c.auto_optimize_int, Duration::from_secs(24 * 3600));
        assert!(c.compress_snap_transport);
    }

    #[test]
    fn precedence_flag_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "node_id = \"file\"\nhttp-addr = \"127.0.0.1:7001\"\nraft_addr = \"127.0.0.1:7002\"\nfk = true\ndata_dir = \"fromfile\"\n",
        )
        .unwrap();
        let env = vec![("RAFTLITE_HTTP_ADDR".to_string(), "127.0.0.1:8001".to_string())];
        let c = Config::load(&args(&format!("-config {} -node-id flag", path.display())), &env).unwrap();
        assert_eq!(c.node_id, "flag");
        assert_eq!(c.http_addr, "127.0.0.1:8001");
        assert_eq!(c.raft_addr, "127.0.0.1:7002");
        assert!(c.fk);
        assert_eq!(c.data_dir, PathBuf::from("fromfile"));
    }

    #[test]
    fn shipped_configs_parse() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                let a = vec!["-config".to_string(), path.display().to_string()];
                Config::load(&a, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }
}
