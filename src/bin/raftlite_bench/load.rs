//! The load generator: N clients, each with one keep-alive HTTP/1 connection (hyper's client,
//! chosen for low CPU per request), sending a workload for a duration after a warm-up, with
//! latencies in an HDR histogram.

use super::*;

/// Result of one workload run.
pub struct Run {
    pub name: String,
    pub clients: usize,
    pub ops: u64,
    pub errors: u64,
    pub secs: f64,
    pub hist: Histogram<u64>,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| std::process::exit(1))
}

/// The unmeasured warm-up before each measured run: a fifth of it, at most 1 s.
pub fn warmup(duration: Duration) -> Duration {
    (duration / 5).min(Duration::from_secs(1))
}

/// `clients` concurrent HTTP clients sending `w`'s requests, each over one keep-alive
/// connection of its own (hyper's HTTP/1 client, no pool or URL parsing per request: on two
/// shared cores the load generator's own CPU would otherwise be part of what is measured).
pub fn bench_http(url: &str, clients: usize, duration: Duration, w: Workload) -> Run {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|_| std::process::exit(1));
    let tls = url.starts_with("https://");
    let host = url.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/').to_string();
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, host) = (stop.clone(), host.clone());
                tokio::spawn(async move {
                    let (mut h, mut ok, mut err) = (hist(), 0u64, 0u64);
                    let mut conn: Option<Conn> = None;
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (method, path, body, ack) = w.request(c, i);
                        i += 1;
                        let t = Instant::now();
                        if conn.as_ref().is_none_or(|s| s.is_closed()) {
                            conn = connect(&host, tls).await;
                        }
                        let acked = match conn.as_mut() {
                            Some(sender) => send(sender, &host, method, &path, body, ack).await,
                            None => false,
                        };
                        if acked {
                            ok += 1;
                            let _ = h.record(t.elapsed().as_micros() as u64);
                        } else {
                            err += 1;
                            if conn.is_none() {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    (h, ok, err)
                })
            })
            .collect();
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        let mut run = Run { name: "raftlite 1 node".into(), clients, ops: 0, errors: 0, secs: 0.0, hist: hist() };
        for t in tasks {
            if let Ok((h, ok, err)) = t.await {
                let _ = run.hist.add(&h);
                run.ops += ok;
                run.errors += err;
            }
        }
        if w == Workload::Queued {
            // Queued writes count once they are committed: the run ends at the flush barrier.
            if let Some(mut sender) = connect(&host, tls).await {
                let path = "/db/execute?queue&wait&timeout=60s";
                let _ = send(&mut sender, &host, "POST", path, "[]".into(), "sequence_number").await;
            }
        }
        run.secs = start.elapsed().as_secs_f64();
        run
    })
}

/// The sending half of one client's HTTP/1 connection.
pub type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1 connection to `host` (TCP_NODELAY), over TLS with `tls` (trusting the
/// bench's CA), its driver spawned.
pub async fn connect(host: &str, tls: bool) -> Option<Conn> {
    let stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let _ = stream.set_nodelay(true);
    if tls {
        let ip = host.rsplit_once(':').map(|(h, _)| h)?;
        let name = rustls::pki_types::ServerName::try_from(ip.to_string()).ok()?;
        let stream = tokio_rustls::TlsConnector::from(super::tls::client()?).connect(name, stream).await.ok()?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        return Some(sender);
    }
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Send one request; true when the answer is a 2xx whose body contains `ack`.
pub async fn send(sender: &mut Conn, host: &str, method: &str, path: &str, body: String, ack: &str) -> bool {
    use http_body_util::BodyExt;
    if sender.ready().await.is_err() {
        return false;
    }
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)));
    let Ok(req) = req else { return false };
    let Ok(resp) = sender.send_request(req).await else { return false };
    let success = resp.status().is_success();
    match resp.into_body().collect().await {
        Ok(b) => success && b.to_bytes().windows(ack.len()).any(|w| w == ack.as_bytes()),
        Err(_) => false,
    }
}
