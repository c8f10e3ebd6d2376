//! The shell's connection to the cluster: HTTP or HTTPS to one node at a time, falling over to
//! the `--alternatives` in turn when the current node cannot be reached, following redirects to
//! the leader, with Basic credentials and the CA/client certificate options. Requests run on a
//! small tokio runtime; in interactive use Ctrl-C interrupts the request in flight (not the
//! shell). Bodies stream both ways so that large transfers can show progress.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

use raftlite::http::outgoing::{chain, describe_tls, find_tls_error};

/// A request body (a buffer, or a file read as it is sent).
pub type Body = BoxBody<Bytes, std::io::Error>;

/// How to reach the cluster (the command-line options).
#[derive(Clone, Debug)]
pub struct Options {
    pub scheme: String,
    pub prefix: String,
    /// `host:port` of the first node, then the alternatives.
    pub hosts: Vec<String>,
    pub user: Option<(String, String)>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub insecure: bool,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach {addr}: {reason}; is raftlited running?")]
    Unreachable { addr: String, reason: String },
    #[error("TLS with {addr}: {reason}")]
    Tls { addr: String, reason: String },
    /// The node answered with an error: its message.
    #[error("{message}")]
    Status { status: u16, message: String },
    #[error("interrupted")]
    Interrupted,
    #[error("{addr}: no answer within {timeout:?} (--http-timeout)")]
    Timeout { addr: String, timeout: Duration },
    #[error("{0}")]
    Other(String),
}

pub struct Client {
    rt: Arc<tokio::runtime::Runtime>,
    http: HyperClient<HttpsConnector<HttpConnector>, Body>,
    opts: Options,
    current: usize,
    auth: Option<String>,
    /// Ctrl-C interrupts the request in flight (interactive use).
    pub interruptible: bool,
}

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

impl Client {
    pub fn new(opts: Options) -> Result<Client, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start: {e}"))?;
        let identity = match (&opts.client_cert, &opts.client_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => return Err("--client-cert and --client-key go together".into()),
        };
        let needs_tls = opts.scheme == "https";
        let tls = if needs_tls || opts.ca_cert.is_some() || identity.is_some() {
            raftlite::http::tls::client_tls(opts.ca_cert.as_deref(), identity, opts.insecure)
                .map_err(|e| e.to_string())?
        } else {
            raftlite::http::tls::plain_only().map_err(|e| e.to_string())?
        };
        let tls = raftlite::http::outgoing::ClientTls { config: Arc::new(tls), server_name: None };
        let https = raftlite::http::outgoing::connector(tls, None, opts.timeout);
        // A new connection per request: a person types a few requests a minute, and a connection
        // kept from before a node died would fail the next request instead of falling over.
        let http = HyperClient::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(https);
        let auth = opts.user.as_ref().map(|(u, p)| raftlite::http::auth::basic_header(u, p));
        Ok(Client { rt: Arc::new(rt), http, opts, current: 0, auth, interruptible: false })
    }

    /// The node the shell talks to now.
    pub fn addr(&self) -> &str {
        &self.opts.hosts[self.current]
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The runtime requests run on (held apart from the client, so a request future may borrow
    /// the client mutably while it runs).
    pub fn runtime(&self) -> Arc<tokio::runtime::Runtime> {
        self.rt.clone()
    }

    /// Send a request to the current node, falling over to the alternatives when it cannot be
    /// reached (the first that answers becomes current) and following redirects. `body` makes
    /// the body afresh for each attempt.
    pub async fn send(
        &mut self,
        method: &Method,
        path: &str,
        content_type: Option<&str>,
        body: &dyn Fn() -> Result<Body, Error>,
    ) -> Result<http::Response<hyper::body::Incoming>, Error> {
        let n = self.opts.hosts.len();
        let mut last = None;
        for k in 0..n {
            let i = (self.current + k) % n;
            let host = self.opts.hosts[i].clone();
            match self.send_to(&host, method, path, content_type, body).await {
                Err(e @ Error::Unreachable { .. }) => last = Some(e),
                other => {
                    if i != self.current {
                        eprintln!("(now connected to {host}: {} did not answer)", self.opts.hosts[self.current]);
                        self.current = i;
                    }
                    return other;
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Other("no node to talk to".into())))
    }

    async fn send_to(
        &self,
        host: &str,
        method: &Method,
        path: &str,
        content_type: Option<&str>,
        body: &dyn Fn() -> Result<Body, Error>,
    ) -> Result<http::Response<hyper::body::Incoming>, Error> {
        let mut url = format!("{}://{host}{}{path}", self.opts.scheme, self.opts.prefix);
        let mut target = host.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut b = http::Request::builder().method(method.clone()).uri(&url);
            if let Some(ct) = content_type {
                b = b.header(http::header::CONTENT_TYPE, ct);
            }
            if let Some(a) = &self.auth {
                b = b.header(http::header::AUTHORIZATION, a.as_str());
            }
            let req = b.body(body()?).map_err(|e| Error::Other(e.to_string()))?;
            let sent = tokio::time::timeout(self.opts.timeout, self.http.request(req)).await;
            let resp = match sent {
                Err(_) => return Err(Error::Timeout { addr: target, timeout: self.opts.timeout }),
                Ok(Err(e)) => {
                    if let Some(t) = find_tls_error(&e) {
                        return Err(Error::Tls { addr: target, reason: describe_tls(t) });
                    }
                    let reason = connect_reason(&e);
                    return Err(if e.is_connect() {
                        Error::Unreachable { addr: target, reason }
                    } else {
                        Error::Other(format!("{target}: {reason}"))
                    });
                }
                Ok(Ok(r)) => r,
            };
            if resp.status().is_redirection() {
                if let Some(loc) = resp.headers().get(http::header::LOCATION).and_then(|l| l.to_str().ok()) {
                    target = loc.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or(host).to_string();
                    url = loc.to_string();
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(Error::Other(format!("{host}: too many redirects")))
    }

    /// A request with a small body (or none), its answer read whole. A non-2xx answer is an
    /// [`Error::Status`] with the node's message.
    pub fn call(&mut self, method: Method, path: &str, body: Option<(&str, Bytes)>) -> Result<Bytes, Error> {
        let ct = body.as_ref().map(|(ct, _)| ct.to_string());
        let data = body.map(|(_, b)| b).unwrap_or_default();
        let make = move || -> Result<Body, Error> { Ok(full(data.clone())) };
        let timeout = self.opts.timeout;
        let (rt, interruptible) = (self.runtime(), self.interruptible);
        let fut = async {
            let resp = self.send(&method, path, ct.as_deref(), &make).await?;
            let status = resp.status();
            let bytes = tokio::time::timeout(timeout, resp.into_body().collect())
                .await
                .map_err(|_| Error::Timeout { addr: self.addr().to_string(), timeout })?
                .map_err(|e| Error::Other(e.to_string()))?
                .to_bytes();
            check(status, bytes)
        };
        run(&rt, interruptible, fut)
    }
}

/// Run `fut` on `rt`, or until Ctrl-C when `interruptible`.
pub fn run<T>(
    rt: &tokio::runtime::Runtime,
    interruptible: bool,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    rt.block_on(async move {
        if !interruptible {
            return fut.await;
        }
        tokio::select! {
            r = fut => r,
            _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
        }
    })
}

/// A body from bytes.
pub fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// A 2xx answer's body, or the node's message as an error.
pub fn check(status: StatusCode, body: Bytes) -> Result<Bytes, Error> {
    if status.is_success() {
        return Ok(body);
    }
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let message = if text.is_empty() {
        format!("{status}")
    } else {
        format!("{} {}: {text}", status.as_u16(), status.canonical_reason().unwrap_or(""))
    };
    Err(Error::Status { status: status.as_u16(), message })
}

/// Why a connection failed, in a user's words ("connection refused").
fn connect_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "connection timed out".into(),
                _ => io.to_string(),
            };
        }
        cur = err.source();
    }
    chain(e)
}

/// A file streamed as a request body, counting bytes into `sent`.
pub fn file_body(path: &Path, sent: Arc<std::sync::atomic::AtomicU64>) -> Result<Body, Error> {
    use futures::StreamExt;
    let f = std::fs::File::open(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(f), 256 * 1024).map(move |r| {
        r.map(|b| {
            sent.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
            hyper::body::Frame::data(b)
        })
    });
    Ok(BodyExt::boxed(http_body_util::StreamBody::new(stream)))
}

/// Bytes sent as a stream of 256 KiB frames, counting into `sent` (progress for a large body).
pub fn bytes_body(data: Bytes, sent: Arc<std::sync::atomic::AtomicU64>) -> Body {
    const CHUNK: usize = 256 * 1024;
    let chunks: Vec<Bytes> =
        (0..data.len()).step_by(CHUNK).map(|i| data.slice(i..(i + CHUNK).min(data.len()))).collect();
    let stream = futures::stream::iter(chunks.into_iter().map(move |b| {
        sent.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, std::io::Error>(hyper::body::Frame::data(b))
    }));
    BodyExt::boxed(http_body_util::StreamBody::new(stream))
}
