//! The HTTP servers' accept loop, for the API and the inter-node service alike: each accepted
//! connection is served by hyper with warp's filter as the service, under the connection limits
//! of [`Limits`] (a cap on open connections, a deadline for a request's headers that also closes
//! idle keep-alive connections, caps on header count and size). A connection over a limit is
//! closed or answered by hyper with a 4xx; each is counted, none holds the node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use warp::Filter;

use super::router;
use super::state::AppState;

/// Connection limits (`-http-max-conns`, `-http-header-timeout`, `-http-max-headers`,
/// `-http-max-header-bytes`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; one more is closed at once.
    pub max_connections: usize,
    /// A request's headers must arrive within this, and a keep-alive connection is closed after
    /// this long without a new request.
    pub header_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl Limits {
    pub fn of(cfg: &crate::config::Config) -> Limits {
        Limits {
            max_connections: cfg.http_max_conns.max(1),
            header_timeout: cfg.http_header_timeout,
            max_headers: cfg.http_max_headers.max(1),
            max_header_bytes: cfg.http_max_header_bytes.max(1024),
        }
    }
}

/// Serve the API on an already bound listener until the task is dropped.
pub async fn serve(state: Arc<AppState>, listener: tokio::net::TcpListener) {
    let limits = Limits::of(&state.cfg);
    let state_tls = state.tls.clone();
    let st = warp::any().map(move || state.clone());
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let route = st
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(|state, method, path: warp::path::FullPath, query: String, headers, body| async move {
            router::dispatch(state, method, path.as_str().to_string(), query, headers, body).await
        });
    let tls = state_tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config));
    accept_loop(route, listener, limits, tls, "api").await;
}

/// Accept connections on `listener` and serve each with `filter`, under `limits`, over TLS when
/// `tls` is given. `port` labels the metrics (`api`, `raft`).
pub async fn accept_loop<F>(
    filter: F,
    listener: tokio::net::TcpListener,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    port: &'static str,
) where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, port, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("raftlite_http_connections_refused_total", "port" => port).increment(1);
            drop(tcp);
            continue;
        };
        let svc = hyper_util::service::TowerToHyperService::new(warp::service(filter.clone()));
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = tls else {
                return serve_connection(TokioIo::new(tcp), svc, limits, port, peer).await;
            };
            // The handshake, plain-HTTP check included, gets the same deadline as a request's
            // headers: a client that never finishes it is dropped.
            let accepted = tokio::time::timeout(limits.header_timeout, async {
                if !starts_with_tls(&tcp).await {
                    return Err(("plain_http", "plain HTTP sent to a TLS port".to_string()));
                }
                acceptor.accept(tcp).await.map_err(|e| ("handshake", e.to_string()))
            });
            let (reason, detail) = match accepted.await {
                Ok(Ok(stream)) => return serve_connection(TokioIo::new(stream), svc, limits, port, peer).await,
                Ok(Err(failed)) => failed,
                Err(_) => ("timeout", "not completed in time".to_string()),
            };
            metrics::counter!("raftlite_tls_handshake_failures_total", "port" => port, "reason" => reason).increment(1);
            crate::logging::warn_once(&format!("tls {port} {reason} {}", peer.ip()), || {
                format!("{port} port: TLS handshake from {} failed: {detail}", peer.ip())
            });
        });
    }
}

/// Whether the first byte a client sent opens a TLS handshake record. Otherwise (plain HTTP to
/// a TLS port) the client is told in plain HTTP, as Go's servers do, rather than left to guess
/// from a closed connection.
async fn starts_with_tls(tcp: &tokio::net::TcpStream) -> bool {
    const HANDSHAKE_RECORD: u8 = 22;
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) if first[0] == HANDSHAKE_RECORD => true,
        Ok(1) => {
            answer_plain_http(tcp).await;
            false
        }
        _ => false,
    }
}

/// Tell a plain-HTTP client that this port speaks TLS, then close.
async fn answer_plain_http(tcp: &tokio::net::TcpStream) {
    const BODY: &str = "this address requires TLS: the request was sent in plain HTTP (use https://)\n";
    // Take in what the client sent, so closing does not reset the connection under the answer.
    let mut sink = [0u8; 16 * 1024];
    let _ = tcp.try_read(&mut sink);
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut written = 0;
    while written < answer.len() {
        if tcp.writable().await.is_err() {
            return;
        }
        match tcp.try_write(&answer.as_bytes()[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
}

async fn serve_connection<I, S>(io: I, svc: S, limits: Limits, port: &'static str, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192));
    if let Err(e) = b.serve_connection(io, svc).with_upgrades().await {
        metrics::counter!("raftlite_http_connection_errors_total", "port" => port).increment(1);
        if e.is_parse() || e.is_parse_too_large() {
            // Garbage or an oversized head: answered 400/431 by hyper; said once per source.
            crate::logging::warn_once(&format!("parse {port} {}", peer.ip()), || {
                format!("{port} port: unreadable request from {}: {e}", peer.ip())
            });
        } else {
            tracing::debug!(error = %e, port, "connection ended with an error");
        }
    }
}

/// Resolve `host:port` (e.g. `localhost:4001`) to a bindable address.
pub fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("cannot resolve {addr}")))
}
