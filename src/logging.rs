//! Log output: colour only on a terminal, and nodes named by the ids users gave them.
//!
//! openraft identifies nodes by a number. A decimal `-node-id` is that number, but any other id
//! ("node-a", "host:4002") is hashed into one (`raft::numeric_id`), and openraft's own log lines
//! ("error replication to target=1534…", "vote T1-N1534…") would name nodes by a hash nobody
//! gave. Every line is written through [`NamingWriter`], which replaces each known hash with the
//! user's id; the names are learned from the cluster membership ([`learn`]).
//!
//! A fault that repeats on every retry (a peer refusing this node's certificate, a client
//! hammering with bad credentials) is logged once per cause ([`warn_once`]) and counted in
//! metrics, so the log stays readable and cannot be flooded.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock, RwLock};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// (openraft's numeric id as printed, the user's id), for ids that are not already that number.
static NAMES: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

/// Remember the user's id for a node, so log lines show it instead of its numeric id.
pub fn learn(id: &str) {
    let numeric = crate::raft::numeric_id(id).to_string();
    if numeric == id {
        return;
    }
    if let Ok(names) = NAMES.read() {
        if names.iter().any(|(n, _)| *n == numeric) {
            return;
        }
    }
    if let Ok(mut names) = NAMES.write() {
        if !names.iter().any(|(n, _)| *n == numeric) {
            names.push((numeric, id.to_string()));
        }
    }
}

/// `line` with every known numeric id replaced by the user's id.
fn rename(line: &str) -> Option<String> {
    let names = NAMES.read().ok()?;
    if names.is_empty() || !names.iter().any(|(n, _)| line.contains(n.as_str())) {
        return None;
    }
    let mut out = line.to_string();
    for (numeric, name) in names.iter() {
        out = out.replace(numeric.as_str(), name);
    }
    Some(out)
}

/// A writer that renames node ids in each formatted line (the fmt layer writes one event per
/// `write_all` into a fresh writer) before passing it to stderr.
pub struct NamingWriter;

impl<'a> MakeWriter<'a> for NamingWriter {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter(Vec::new())
    }
}

pub struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let out = rename(&text);
        let bytes = out.as_deref().map(str::as_bytes).unwrap_or(&self.0);
        // Nowhere to report a failed write to stderr.
        let _ = std::io::stderr().lock().write_all(bytes);
    }
}

/// Install the global subscriber: `log_level` for raftlite, `raft_level` for openraft (both
/// overridden by `RUST_LOG`), text or JSON, colours only when stderr is a terminal.
pub fn init(log_level: &str, raft_level: &str, json: bool) {
    let raft_level = raft_level.to_ascii_lowercase();
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{log_level},openraft={raft_level}")));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(NamingWriter);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

/// Most distinct causes [`warn_once`] remembers; later new ones are logged at debug only, so
/// a stream of distinct bad inputs cannot grow memory or flood the log.
const ONCE_KEYS: usize = 4096;

/// Log `message()` at warn the first time `key` is seen in this process.
pub fn warn_once(key: &str, message: impl FnOnce() -> String) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(HashSet::new()));
    let mut seen = match seen.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if seen.contains(key) {
        return;
    }
    if seen.len() >= ONCE_KEYS {
        tracing::debug!("{}", message());
        return;
    }
    seen.insert(key.to_string());
    drop(seen);
    tracing::warn!("{} (logged once; later occurrences are counted in metrics only)", message());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_ids_are_renamed_and_decimal_ids_left_alone() {
        learn("7");
        learn("node-a");
        let hashed = crate::raft::numeric_id("node-a");
        let line = format!("error replication to target={hashed}: vote T1-N{hashed}; node 7");
        assert_eq!(rename(&line).unwrap(), "error replication to target=node-a: vote T1-Nnode-a; node 7");
        assert_eq!(rename("nothing to rename here"), None);
    }
}
