//! `raftlite`: the shell. It talks to any raftlite (or rqlite) node over the HTTP API, with the
//! `rqlite` shell's flags. Interactive on a terminal (`repl`); otherwise it reads statements and
//! dot commands from stdin and prints results undecorated (`raftlite < schema.sql`); `-e` runs
//! one command. The exit status is 1 when any statement or command failed.
//!
//! ```text
//! raftlite -H 127.0.0.1 -p 4001 -a 127.0.0.1:4003,127.0.0.1:4005 -u admin:secret
//! ```

mod client;
mod render;
mod repl;
mod shell;
mod sql;
mod transfer;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use client::{Client, Options};
use render::{Mode, Style};
use shell::{Settings, Shell};

/// The command line (the `rqlite` shell's flags).
#[derive(Parser, Debug)]
#[command(name = "raftlite", about = "The raftlite shell: SQL and cluster commands against a raftlite or rqlite node")]
#[command(disable_version_flag = true)]
struct Cli {
    /// Address of the node
    #[arg(short = 'H', long, default_value = "127.0.0.1")]
    host: String,
    /// Port of the node's HTTP API
    #[arg(short = 'p', long, default_value_t = 4001)]
    port: u16,
    /// http or https
    #[arg(short = 's', long, default_value = "http", value_parser = ["http", "https"])]
    scheme: String,
    /// Prefix of the API's paths (behind a proxy)
    #[arg(short = 'P', long, default_value = "")]
    prefix: String,
    /// Other nodes (host:port,...), tried in turn when the current one cannot be reached
    #[arg(short = 'a', long, value_delimiter = ',')]
    alternatives: Vec<String>,
    /// Credentials, user:password
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// CA certificate file to verify the node with (HTTPS)
    #[arg(short = 'c', long = "ca-cert")]
    ca_cert: Option<PathBuf>,
    /// Client certificate file (mutual TLS)
    #[arg(short = 'd', long = "client-cert")]
    client_cert: Option<PathBuf>,
    /// Client certificate's key file (mutual TLS)
    #[arg(short = 'k', long = "client-key")]
    client_key: Option<PathBuf>,
    /// Do not verify the node's certificate
    #[arg(short = 'i', long)]
    insecure: bool,
    /// Time limit of each request (Go duration: 10s, 1m)
    #[arg(short = 't', long = "http-timeout", default_value = "10s")]
    http_timeout: String,
    /// Run one statement or dot command and exit
    #[arg(short = 'e', long)]
    execute: Option<String>,
    /// Show the version and exit
    #[arg(short = 'v', long)]
    version: bool,
}

fn options(cli: &Cli) -> Result<Options, String> {
    let timeout = raftlite::config::parse_go_duration(&cli.http_timeout)
        .map_err(|e| format!("--http-timeout: {e}"))?
        .max(std::time::Duration::from_millis(1));
    let user = match &cli.user {
        Some(u) => {
            Some(u.split_once(':').map(|(a, b)| (a.to_string(), b.to_string())).ok_or("--user takes user:password")?)
        }
        None => None,
    };
    let prefix = match cli.prefix.trim_end_matches('/') {
        "" => String::new(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    let mut hosts = vec![format!("{}:{}", cli.host, cli.port)];
    hosts.extend(cli.alternatives.iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()));
    Ok(Options {
        scheme: cli.scheme.clone(),
        prefix,
        hosts,
        user,
        ca_cert: cli.ca_cert.clone(),
        client_cert: cli.client_cert.clone(),
        client_key: cli.client_key.clone(),
        insecure: cli.insecure,
        timeout,
    })
}

/// Whether the terminal shows Unicode (a UTF-8 locale).
fn unicode_terminal() -> bool {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .is_some_and(|v| v.to_ascii_uppercase().contains("UTF-8") || v.to_ascii_uppercase().contains("UTF8"))
}

/// Run statements and dot commands from a non-interactive reader.
fn script(shell: &mut Shell, input: impl BufRead) -> Result<(), String> {
    let mut pending = String::new();
    for line in input.lines() {
        let line = line.map_err(|e| format!("reading input: {e}"))?;
        if pending.trim().is_empty() && line.trim_start().starts_with('.') {
            shell.run(&line);
            pending.clear();
        } else {
            pending.push_str(&line);
            pending.push('\n');
            if sql::is_complete(&pending) {
                shell.run(&std::mem::take(&mut pending));
            }
        }
        if shell.quit {
            return Ok(());
        }
    }
    if !sql::is_blank(&pending) {
        shell.run(&pending);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.version {
        println!("raftlite shell {}", raftlite::http::VERSION);
        return ExitCode::SUCCESS;
    }
    let opts = match options(&cli) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("raftlite: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match Client::new(opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftlite: {e}");
            return ExitCode::from(2);
        }
    };
    let interactive = cli.execute.is_none() && std::io::stdin().is_terminal();
    let to_terminal = std::io::stdout().is_terminal();
    let width = terminal_width().unwrap_or(80);
    let decorated = interactive || (cli.execute.is_some() && to_terminal);
    let settings = Settings {
        style: Style {
            mode: if decorated { Mode::Table } else { Mode::List },
            unicode: unicode_terminal(),
            color: to_terminal && std::env::var_os("NO_COLOR").is_none(),
            width,
        },
        decorated,
        timer: false,
        changes: decorated,
        forcewrites: false,
        blobarray: false,
        consistency: "weak".into(),
    };
    let mut shell = Shell::new(client, settings);
    let failed = if let Some(cmd) = &cli.execute {
        shell.run(cmd);
        shell.failed
    } else if interactive {
        shell.client.interruptible = true;
        match repl::run(shell) {
            Ok(failed) => failed,
            Err(e) => {
                eprintln!("raftlite: {e}");
                true
            }
        }
    } else {
        if let Err(e) = script(&mut shell, std::io::stdin().lock()) {
            shell.error(e);
        }
        shell.failed
    };
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Columns of the terminal on stdout, if it is one.
fn terminal_width() -> Option<usize> {
    let w = console::Term::stdout().size_checked()?.1 as usize;
    (w > 0).then_some(w)
}
