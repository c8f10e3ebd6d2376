//! `--tls`: what TLS costs. A throw-away CA issues each node a certificate (rcgen); the same
//! workloads run against a node serving plain HTTP and one serving HTTPS (keep-alive, so the
//! handshake is paid once per client), and against a 3-node cluster without and with mutual TLS
//! between the nodes. Plain and TLS runs alternate, several rounds, and the medians are compared.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;

use super::*;

/// The bench's CA and the client configuration that trusts it.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    ca: PathBuf,
}

static CLIENT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// The client configuration for `https://` URLs (set up by [`Pki::new`]).
pub fn client() -> Option<Arc<rustls::ClientConfig>> {
    CLIENT.get().cloned()
}

fn die(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("--tls: {what}: {e}");
    std::process::exit(1)
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let _ = std::fs::create_dir_all(dir);
        let key = KeyPair::generate().unwrap_or_else(|e| die("CA key", e));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| die("CA", e));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "raftlite-bench CA");
        let cert = params.self_signed(&key).unwrap_or_else(|e| die("CA", e));
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap_or_else(|e| die("write CA", e));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap_or_else(|e| die("CA root", e));
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| die("client", e))
            .with_root_certificates(roots)
            .with_no_client_auth();
        let _ = CLIENT.set(Arc::new(config));
        Pki { dir: dir.to_path_buf(), issuer: Issuer::new(params, key), ca }
    }

    /// Issue a certificate for `ip`; its (certificate, key) files.
    fn issue(&self, name: &str, ip: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap_or_else(|e| die("key", e));
        let mut params = CertificateParams::new(vec![ip.to_string()]).unwrap_or_else(|e| die("params", e));
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap_or_else(|e| die("sign", e));
        let (c, k) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}-key.pem")));
        std::fs::write(&c, cert.pem()).unwrap_or_else(|e| die("write", e));
        std::fs::write(&k, key.serialize_pem()).unwrap_or_else(|e| die("write", e));
        (c.display().to_string(), k.display().to_string())
    }

    /// The flags that give node `name` on `ip` HTTPS on its API and/or mutual TLS on its Raft
    /// address.
    pub fn flags(&self, name: &str, ip: &str, api: bool, node: bool) -> Vec<String> {
        let (cert, key) = self.issue(name, ip);
        let ca = self.ca.display().to_string();
        let mut f = Vec::new();
        if api {
            f.extend(["-http-cert", &cert, "-http-key", &key, "-http-ca-cert", &ca].map(String::from));
        }
        if node {
            f.extend(
                ["-node-cert", &cert, "-node-key", &key, "-node-ca-cert", &ca, "-node-verify-client"].map(String::from),
            );
        }
        f
    }
}

/// One HTTPS request on a fresh connection (the bench's own calls, not the measured load):
/// status and body.
pub fn call(method: &str, url: &str, body: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let tcp = TcpStream::connect(host).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let ip = host.rsplit_once(':').map(|(h, _)| h)?;
    let name = ServerName::try_from(ip.to_string()).ok()?;
    let conn = rustls::ClientConnection::new(client()?, name).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.get(9..12)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    Some((status, body))
}

/// The payload of a chunked body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The measured comparison: (plain, TLS) pairs of clusters, alternating runs, medians.
pub fn tls_bench(args: &Args, tmp: &Path) {
    let pki = Pki::new(&tmp.join("pki"));
    let rounds = 3;
    println!("TLS cost: plain and TLS runs alternate, {rounds} rounds each; medians of ops/s\n");
    println!("| setup | workload | clients | plain ops/s | TLS ops/s | TLS/plain | plain p50 ms | TLS p50 ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let setups: [(&str, usize, bool, bool, &[Workload]); 2] = [
        ("1 node, HTTPS API", 1, true, false, &[Workload::Insert, Workload::Read("none")]),
        ("3 nodes, node mTLS", 3, false, true, &[Workload::Insert]),
    ];
    let mut worst16: Option<f64> = None;
    for &(label, n, api, node, workloads) in &setups {
        let plain = start_cluster_with(&args.binary, &tmp.join(format!("plain{n}")), n, 70, None, &[]);
        let tls = start_cluster_with(&args.binary, &tmp.join(format!("tls{n}")), n, 80, Some((&pki, api, node)), &[]);
        for s in [&plain, &tls] {
            let l = leader_index(s).unwrap_or(0);
            if !execute(&s[l].url, "CREATE TABLE bench (id INTEGER PRIMARY KEY, c INTEGER, v TEXT)") {
                die("setup", "cannot create the bench table");
            }
            seed(&s[l].url);
        }
        for &w in workloads {
            for &c in &args.clients {
                let (mut p_rates, mut t_rates, mut p_p50, mut t_p50) = (vec![], vec![], vec![], vec![]);
                for _ in 0..rounds {
                    for (s, rates, p50) in [(&plain, &mut p_rates, &mut p_p50), (&tls, &mut t_rates, &mut t_p50)] {
                        quiesce(s);
                        let url = &s[leader_index(s).unwrap_or(0)].url;
                        let _ = bench_http(url, c, warmup(args.duration), w);
                        let r = bench_http(url, c, args.duration, w);
                        rates.push(r.rate());
                        p50.push(r.ms(0.5));
                    }
                }
                let (p, t) = (median(&mut p_rates), median(&mut t_rates));
                println!(
                    "| {label} | {} | {c} | {p:.0} | {t:.0} | {:.2} | {:.2} | {:.2} |",
                    w.name(),
                    t / p.max(1e-9),
                    median(&mut p_p50),
                    median(&mut t_p50)
                );
                if c >= 16 {
                    worst16 = Some(worst16.map_or(t / p, |x: f64| x.min(t / p)));
                }
            }
        }
    }
    if let Some(w) = worst16 {
        println!(
            "\nworst TLS/plain ratio at 16+ clients: {w:.2} ({:.0}% fewer operations per second; target: at most 15%)",
            (1.0 - w) * 100.0
        );
    }
}
