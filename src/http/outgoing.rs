//! Outgoing HTTP from a node to other nodes (Raft RPCs, joins, metadata, forwarding): hyper-util's
//! pooled client (keep-alive, one pool per peer address) over TCP_NODELAY sockets bound to the
//! node's own IP, with TLS through hyper-rustls when a client configuration is given
//! (docs/DESIGN.md §8). Failures are classified so callers can tell a peer that is down (retry
//! later) from one that refuses this node's TLS configuration (a fault an operator must fix, which
//! retrying does not cure).

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::ServerName;

/// The TLS side of an [`Outgoing`] client.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    /// Verify peers' certificates for this name instead of the host in their address
    /// (`-node-verify-server-name`).
    pub server_name: Option<ServerName<'static>>,
}

/// A request body in pieces, sent one after the other without being joined first (a snapshot
/// chunk: a short head, then 16 MiB of data that is not copied again; hyper writes the pieces
/// with one vectored write).
#[derive(Default, Debug)]
pub struct Pieces(VecDeque<Bytes>);

impl Pieces {
    pub fn new(pieces: impl IntoIterator<Item = Bytes>) -> Pieces {
        Pieces(pieces.into_iter().filter(|b| !b.is_empty()).collect())
    }
}

impl From<Bytes> for Pieces {
    fn from(b: Bytes) -> Pieces {
        Pieces::new([b])
    }
}

impl From<Vec<u8>> for Pieces {
    fn from(v: Vec<u8>) -> Pieces {
        Pieces::new([Bytes::from(v)])
    }
}

impl Buf for Pieces {
    fn remaining(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }
    fn chunk(&self) -> &[u8] {
        self.0.front().map_or(&[], |b| &b[..])
    }
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.0.front_mut() else { return };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.0.pop_front();
        }
    }
    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, piece) in dst.iter_mut().zip(&self.0) {
            *slot = std::io::IoSlice::new(piece);
            n += 1;
        }
        n
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: the peer is down, unreachable or too slow. Worth retrying later.
    #[error("{addr}: cannot connect: {reason}")]
    Connect { addr: String, reason: String },
    /// The TLS handshake failed: the two nodes' TLS settings do not agree (one side has no TLS,
    /// certificates from another CA, a refused client certificate). Retrying does not help.
    #[error("{addr}: {reason}")]
    Tls { addr: String, reason: String },
    #[error("{addr}: no answer within {0:?}", .timeout)]
    Timeout { addr: String, timeout: Duration },
    /// The connection broke during the exchange.
    #[error("{addr}: {reason}")]
    Broken { addr: String, reason: String },
}

/// A pooled HTTP client (HTTPS when built with a [`ClientTls`]).
#[derive(Clone, Debug)]
pub struct Outgoing {
    client: Client<HttpsConnector<HttpConnector>, Full<Pieces>>,
    scheme: &'static str,
}

impl Outgoing {
    /// `local_ip`: the address outgoing connections bind to (fault tests cut node pairs apart by
    /// source address, docs/DESIGN.md §11). `tls`: speak HTTPS, with this configuration.
    pub fn new(local_ip: Option<IpAddr>, tls: Option<ClientTls>) -> Result<Outgoing, super::tls::TlsError> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tls = match tls {
            Some(t) => t,
            // Never used for a TLS handshake: every URL this client is given is http://.
            None => ClientTls { config: Arc::new(super::tls::plain_only()?), server_name: None },
        };
        let connector = connector(tls, local_ip, Duration::from_secs(2));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(8)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Outgoing { client, scheme })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The URL of `path` on the node at `addr` (`host:port`).
    pub fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.scheme)
    }

    /// Send `req` to `addr` and read the whole answer, within `timeout`.
    pub async fn send(
        &self,
        addr: &str,
        req: http::Request<Full<Pieces>>,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, SendError> {
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| classify(addr, &e, e.is_connect()))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| classify(addr, &e, false))?.to_bytes();
            Ok(http::Response::from_parts(parts, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| SendError::Timeout { addr: addr.to_string(), timeout })?
    }
}

/// The connector every outgoing client of this crate uses (inter-node calls, the S3 client of
/// automatic backups, the shell): TCP with TCP_NODELAY from `local_ip` if given, connected within
/// `connect_timeout`, then TLS for `https://` URLs with `tls`.
pub fn connector(tls: ClientTls, local_ip: Option<IpAddr>, connect_timeout: Duration) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_local_address(local_ip);
    // hyper-rustls sets ALPN itself (none for HTTP/1 only) and insists on an empty list.
    let mut config = Arc::unwrap_or_clone(tls.config);
    config.alpn_protocols.clear();
    let b = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
    let b = match tls.server_name {
        Some(n) => b.with_server_name_resolver(FixedServerNameResolver::new(n)),
        None => b,
    };
    b.enable_http1().wrap_connector(http)
}

/// Turn a client error into a [`SendError`], finding a TLS failure anywhere in its chain.
fn classify(addr: &str, e: &(dyn StdError + 'static), connect: bool) -> SendError {
    let addr = addr.to_string();
    if let Some(t) = find_tls_error(e) {
        return SendError::Tls { addr, reason: describe_tls(t) };
    }
    let reason = chain(e);
    if connect {
        SendError::Connect { addr, reason }
    } else {
        SendError::Broken { addr, reason }
    }
}

/// The rustls error under `e`, if any. `io::Error` hides the error it wraps from `source()`, so
/// it is opened with `get_ref()`.
pub fn find_tls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|i| i as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    None
}

/// What an operator should read for a failed handshake.
pub fn describe_tls(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => format!("its TLS certificate is not trusted here ({c:?}): check the CA file"),
        E::AlertReceived(a) => {
            format!("it refused the TLS handshake ({a:?}): it does not trust this node's certificate, or requires one")
        }
        E::InvalidMessage(_) => "it does not speak TLS on this address: is TLS configured on it?".to_string(),
        other => format!("TLS handshake failed: {other}"),
    }
}

/// An error and its sources, on one line.
pub fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
