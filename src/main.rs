//! `raftlited`: the raftlite server. Parses rqlited's flags (plus `-config`), sets up logging,
//! and runs one node on an actix System over a multi-thread tokio runtime (docs/DESIGN.md §2).

use std::process::ExitCode;

use raftlite::config::{Config, ConfigError};
use raftlite::node;

/// SIGINT and SIGTERM, registered before the node starts so that a signal during start-up is
/// not fatal by default but handled as a graceful stop once the node is up.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cfg = match Config::load(&args, &env) {
        Ok(c) => c,
        Err(ConfigError::Invalid(msg)) if msg.starts_with("Usage") => {
            print!("{msg}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("raftlited: {e}");
            eprintln!("run 'raftlited -h' for the flags");
            return ExitCode::from(2);
        }
    };
    if cfg.show_version {
        println!(
            "raftlited {} (commit {}; rqlite HTTP API compatible; sqlite {})",
            raftlite::http::VERSION,
            raftlite::http::COMMIT,
            rusqlite::version()
        );
        return ExitCode::SUCCESS;
    }
    if cfg.check_only {
        // Everything a start checks before touching the disk has been checked: the flags, their
        // values and combinations, the config file and -disco-config.
        println!("raftlited: configuration OK");
        println!("  node-id = {}", cfg.node_id);
        println!("  data directory = {}", cfg.data_dir.display());
        for (name, value, from) in cfg.settings.iter().filter(|(n, _, _)| n != "check-config" && n != "data-dir") {
            println!("  {name} = {value:?} ({from})");
        }
        return ExitCode::SUCCESS;
    }
    raftlite::logging::init(&cfg.log_level, &cfg.raft_log_level, cfg.log_format == "json");
    raftlite::logging::learn(&cfg.node_id);
    // Fault injection for tests: FAILPOINTS="name=action;..." (only with --features failpoints).
    #[cfg(feature = "failpoints")]
    let _failpoints = {
        let scenario = fail::FailScenario::setup();
        tracing::warn!(failpoints = %std::env::var("FAILPOINTS").unwrap_or_default(), "failpoints enabled");
        scenario
    };
    if cfg.metrics {
        if let Err(e) = raftlite::metrics::install() {
            tracing::warn!(error = %e, "metrics are off: cannot install the recorder");
        }
    }

    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let system = actix::System::with_tokio_rt(move || {
        runtime().unwrap_or_else(|e| panic!("cannot build the tokio runtime: {e}"))
    });
    let code = system.block_on(async move {
        let mut signals = match Signals::register() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("raftlited: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let node = match node::start(cfg).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot start: {e}");
                eprintln!("raftlited: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("node ready");
        tokio::select! {
            _ = signals.wait() => tracing::info!("shutting down"),
            _ = node.removed() => tracing::warn!("removed from the cluster; shutting down (-raft-remove-shutdown)"),
        }
        node.shutdown().await;
        ExitCode::SUCCESS
    });
    code
}
