//! TLS helpers for tests: a throw-away CA issuing certificate files (rcgen), and a blocking
//! rustls client that reports the certificate a server presented.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA and the files of certificates it issues, in a directory.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Pki {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).expect("CA");
        std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).expect("write");
        Pki { dir: dir.to_path_buf(), issuer: Issuer::new(params, key) }
    }

    pub fn ca(&self, name: &str) -> String {
        self.dir.join(format!("{name}-ca.pem")).display().to_string()
    }

    /// Issue a certificate for 127.0.0.1 and `localhost` named `cn`; write `<file>.pem` and
    /// `<file>-key.pem`; return both paths.
    pub fn issue(&self, file: &str, cn: &str) -> (String, String) {
        self.issue_for(file, cn, "127.0.0.1")
    }

    /// [`Pki::issue`] for the address `ip` (and `localhost`).
    pub fn issue_for(&self, file: &str, cn: &str, ip: &str) -> (String, String) {
        self.issue_names(file, cn, &[ip, "localhost"])
    }

    /// A certificate for the subject alternative `names` (IP addresses or DNS names).
    pub fn issue_names(&self, file: &str, cn: &str, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let (c, k) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}-key.pem")));
        // Write the key first and rename both into place, as a rotation tool would.
        let (ct, kt) = (c.with_extension("tmp"), k.with_extension("tmp"));
        std::fs::write(&kt, key.serialize_pem()).expect("write");
        std::fs::write(&ct, cert.pem()).expect("write");
        std::fs::rename(&kt, &k).expect("rename");
        std::fs::rename(&ct, &c).expect("rename");
        (c.display().to_string(), k.display().to_string())
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client trusting `ca`, presenting `identity` (certificate, key files) if given.
pub fn client_config(ca: &str, identity: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("cert")).expect("root");
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(cert).expect("cert").map(|c| c.expect("cert")).collect();
            b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).expect("key")).expect("identity")
        }
        None => b.with_no_client_auth(),
    };
    // Every connection a full handshake, so that each sees the certificate served now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// One HTTPS request on a fresh connection: the status code and body, and the certificate the
/// server presented; `Err` when the handshake or the exchange fails.
pub fn https(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    request: &str,
) -> Result<(u16, String, CertificateDer<'static>), String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).to_string();
    let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // Servers may close without close_notify after `Connection: close`.
        Err(e) if !out.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    let cert = tls.conn.peer_certificates().and_then(|c| c.first()).cloned().ok_or("no certificate")?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("not HTTP: {text:.60}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body, cert.into_owned()))
}

pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}
