//! Running `raftlited` processes from other programs: the integration tests (`tests/common`),
//! `raftlite-bench` and `raftlite-chaos` all start nodes, wait for them to be ready, and stop
//! or kill them by PID the same way, with the helpers here.

pub mod cdc_sink;
pub mod dns_server;

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The command line of one node: `raftlited -node-id ID -http-addr HTTP -raft-addr RAFT
/// [extra...] DIR`. The caller adds where its output goes and spawns it.
pub fn command(
    binary: &std::path::Path,
    id: &str,
    http: &str,
    raft: &str,
    extra: &[String],
    dir: &std::path::Path,
) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(["-node-id", id, "-http-addr", http, "-raft-addr", raft]).args(extra).arg(dir);
    cmd
}

/// Ports this process has handed out, so that tests running in parallel never get the same one.
static GIVEN: std::sync::Mutex<std::collections::BTreeSet<(String, u16)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// `ip:port` with a port that was free a moment ago on `ip` (any 127.0.0.x). The port is chosen
/// below Linux's ephemeral range (32768 and up): outgoing connections take their source ports
/// from that range, and one could take the port between its choice here and the node's bind
/// (a CI run once lost a node that way).
pub fn free_addr(ip: &str) -> std::io::Result<String> {
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..2000 {
        let port: u16 = rand::random_range(20000..32768);
        if given.insert((ip.to_string(), port)) && std::net::TcpListener::bind((ip, port)).is_ok() {
            return Ok(format!("{ip}:{port}"));
        }
    }
    let port = std::net::TcpListener::bind((ip, 0))?.local_addr()?.port();
    Ok(format!("{ip}:{port}"))
}

/// Poll `f` every 20 ms until it is true (true) or `timeout` has passed (false).
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Does the node at `http` answer `/readyz` with 200?
pub fn is_ready(client: &reqwest::blocking::Client, http: &str) -> bool {
    client
        .get(format!("http://{http}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

/// Wait up to `timeout` for the node at `http` to be ready.
pub fn wait_ready(client: &reqwest::blocking::Client, http: &str, timeout: Duration) -> Result<(), String> {
    if poll_until(timeout, || is_ready(client, http)) {
        Ok(())
    } else {
        Err(format!("node at {http} not ready after {timeout:?}"))
    }
}

/// SIGKILL the process and reap it.
pub fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Send `sig` (`-STOP`, `-CONT`, `-TERM`, ...) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// SIGTERM, then wait up to `timeout` for the process to exit; SIGKILL and `None` if it does not.
pub fn terminate(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    signal(child.id(), "-TERM");
    let mut status = None;
    poll_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_stops_at_the_deadline() {
        let t = Instant::now();
        assert!(!poll_until(Duration::from_millis(50), || false));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(poll_until(Duration::from_secs(5), || true));
    }

    #[test]
    fn commands_name_the_node() {
        let c = command("raftlited".as_ref(), "1", "127.0.0.1:1", "127.0.0.1:2", &["-x".into()], "d".as_ref());
        let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy().to_string()).collect();
        assert_eq!(args, ["-node-id", "1", "-http-addr", "127.0.0.1:1", "-raft-addr", "127.0.0.1:2", "-x", "d"]);
        assert!(free_addr("127.0.0.1").is_ok());
    }
}
