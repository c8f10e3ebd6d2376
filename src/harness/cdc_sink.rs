//! A CDC endpoint for the tests and `raftlite-bench`: a small HTTP/1.1 (or HTTPS) server on
//! loopback that records every POST with the time it arrived, answers with a status the caller
//! sets (200, or 503 to play a failing endpoint), and can be taken down (listener and
//! connections closed) and brought back up on the same address. A benchmark can run its threads
//! at the lowest CPU priority, standing in for a consumer on another machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// One POST received.
#[derive(Clone, Debug)]
pub struct Post {
    pub at: SystemTime,
    pub body: serde_json::Value,
}

/// A POST as received; parsed only when asked for, so that a benchmark's endpoint costs the
/// machine little while it is measured.
struct Raw {
    at: SystemTime,
    body: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    posts: Mutex<Vec<Raw>>,
    status: AtomicU16,
    down: AtomicBool,
    /// Serve at nice 19.
    low_priority: AtomicBool,
}

pub struct CdcSink {
    addr: String,
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
    /// HTTPS with this configuration; plain HTTP without.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl CdcSink {
    /// Listen on a free port of `ip` (127.0.0.x), answering 200.
    pub fn start(ip: &str) -> std::io::Result<CdcSink> {
        CdcSink::start_with(ip, None)
    }

    /// [`CdcSink::start`] speaking HTTPS with `tls` (which may ask for client certificates).
    pub fn start_with(ip: &str, tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<CdcSink> {
        // Bound here, on a port the kernel picks: a port found free and bound later can be taken
        // in between by another test's process (a CI run failed with "Address already in use").
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?.to_string();
        let inner = Arc::new(Inner { status: AtomicU16::new(200), ..Inner::default() });
        let mut sink = CdcSink { addr, inner, accept: None, tls };
        sink.accept_on(listener);
        Ok(sink)
    }

    /// From now on, serve new connections at the lowest CPU priority (nice 19), as a consumer on
    /// another machine would cost the nodes nothing.
    pub fn set_low_priority(&self) {
        self.inner.low_priority.store(true, Ordering::Relaxed);
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/cdc", self.addr)
    }

    /// Every POST so far.
    pub fn posts(&self) -> Vec<Post> {
        self.posts_from(0)
    }

    /// The POSTs from the `first`-th on.
    pub fn posts_from(&self, first: usize) -> Vec<Post> {
        let Ok(raw) = self.inner.posts.lock() else { return Vec::new() };
        raw.iter()
            .skip(first)
            .map(|r| Post { at: r.at, body: serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null) })
            .collect()
    }

    /// How many POSTs arrived.
    pub fn count(&self) -> usize {
        self.inner.posts.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Every group received, in arrival order: (index, group, arrival time).
    pub fn groups(&self) -> Vec<(u64, serde_json::Value, SystemTime)> {
        let mut out = Vec::new();
        for p in self.posts() {
            for g in p.body["payload"].as_array().into_iter().flatten() {
                out.push((g["index"].as_u64().unwrap_or(0), g.clone(), p.at));
            }
        }
        out
    }

    /// Answer every request with `code` from now on.
    pub fn set_status(&self, code: u16) {
        self.inner.status.store(code, Ordering::Relaxed);
    }

    /// Stop listening and close every connection: the endpoint is gone.
    pub fn down(&mut self) {
        self.inner.down.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr.parse().expect("addr"), Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }

    /// Listen again on the same address.
    pub fn up(&mut self) -> std::io::Result<()> {
        let listener = TcpListener::bind(&self.addr)?;
        self.accept_on(listener);
        Ok(())
    }

    fn accept_on(&mut self, listener: TcpListener) {
        self.inner.down.store(false, Ordering::Relaxed);
        let (inner, tls) = (self.inner.clone(), self.tls.clone());
        self.accept = Some(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if inner.down.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                let (inner, tls) = (inner.clone(), tls.clone());
                std::thread::spawn(move || {
                    if inner.low_priority.load(Ordering::Relaxed) {
                        crate::actors::uploader::set_thread_nice(19);
                    }
                    match tls {
                        None => serve(conn, &inner),
                        Some(config) => {
                            if let Ok(server) = rustls::ServerConnection::new(config) {
                                serve(rustls::StreamOwned::new(server, conn), &inner)
                            }
                        }
                    }
                });
            }
        }));
    }
}

impl Drop for CdcSink {
    fn drop(&mut self) {
        self.down();
    }
}

/// Serve one keep-alive connection until the peer closes it or the sink goes down.
fn serve(conn: impl Read + Write, inner: &Inner) {
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if inner.down.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        let Some(headers) = read_headers(&mut reader) else { return };
        let length = header(&headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0usize);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() || inner.down.load(Ordering::Relaxed) {
            return;
        }
        let status = inner.status.load(Ordering::Relaxed);
        if status == 200 || status == 202 {
            if let Ok(mut p) = inner.posts.lock() {
                p.push(Raw { at: SystemTime::now(), body });
            }
        }
        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        let writer = reader.get_mut();
        if writer.write_all(reply.as_bytes()).and_then(|()| writer.flush()).is_err() {
            return;
        }
    }
}

/// Read an HTTP/1.1 request's header lines, up to the blank line: (name, value) pairs. `None`
/// when the connection ends first. Shared with the bench's S3 sink.
pub fn read_headers(reader: &mut impl BufRead) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            return Some(headers);
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
}

/// The value of header `name` (any case).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}
