//! HTTPS for the HTTP API (`-http-cert`, `-http-key`, `-http-ca-cert`, `-http-verify-client`;
//! docs/API.md §12): rustls with the ring provider. The certificate and key are re-read when
//! either file changes on disk ([`Certs::watch`]), without a restart: new handshakes get the new
//! certificate, established connections keep theirs. A file that fails to load keeps the old
//! certificate and is reported (log, `raftlite_tls_reloads_total{result="failed"}`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// Why TLS cannot be set up (the node refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Config(String),
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), reason: reason.to_string() }
}

/// Certificates in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The roots a CA file names.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots.add(c).map_err(|e| file_err(path, e))?;
    }
    Ok(roots)
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    let signer = provider::sign::any_supported_type(&der).map_err(|e| file_err(key, e))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| file_err(key, format!("does not match {}: {e}", cert.display())))?;
    Ok(ck)
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The served certificate, swapped in place when its files change.
#[derive(Debug)]
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    seen: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

impl Certs {
    fn new(cert: &Path, key: &Path) -> Result<Certs, TlsError> {
        let seen = (modified(cert), modified(key));
        let ck = load(cert, key)?;
        Ok(Certs { cert: cert.into(), key: key.into(), current: RwLock::new(Arc::new(ck)), seen: RwLock::new(seen) })
    }

    /// Re-read the files if either changed since last seen. True when a new certificate is served.
    pub fn reload_if_changed(&self) -> bool {
        let now = (modified(&self.cert), modified(&self.key));
        if self.seen.read().map(|s| *s == now).unwrap_or(false) {
            return false;
        }
        if let Ok(mut s) = self.seen.write() {
            *s = now;
        }
        match load(&self.cert, &self.key) {
            Ok(ck) => {
                if let Ok(mut c) = self.current.write() {
                    *c = Arc::new(ck);
                }
                metrics::counter!("raftlite_tls_reloads_total", "result" => "ok").increment(1);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // A file half written by a rotation is normal for a moment: the next change retries.
                metrics::counter!("raftlite_tls_reloads_total", "result" => "failed").increment(1);
                tracing::warn!(error = %e, "TLS certificate not reloaded; still serving the previous one");
                false
            }
        }
    }

    /// Check the files every `every` for as long as the task lives.
    pub fn watch(self: Arc<Certs>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let c = self.clone();
                let _ = tokio::task::spawn_blocking(move || c.reload_if_changed()).await;
            }
        })
    }
}

/// A client certificate verifier that also requires the subject's common name
/// (`-http-verify-common-name`): the chain is checked by webpki first.
#[derive(Debug)]
struct CommonName {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    want: String,
}

/// The subject common names of a DER certificate.
fn common_names(der: &[u8]) -> Vec<String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect()
        }
        Err(_) => Vec::new(),
    }
}

impl rustls::server::danger::ClientCertVerifier for CommonName {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if common_names(end_entity).contains(&self.want) {
            Ok(verified)
        } else {
            metrics::counter!("raftlite_tls_handshake_failures_total", "port" => "api_common_name").increment(1);
            Err(rustls::Error::General(format!("client certificate's common name is not {:?}", self.want)))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// HTTPS on the API: the server configuration and the certificates it serves, and the client
/// side a follower forwards to the leader with (trusting `-http-ca-cert`, presenting this node's
/// certificate when clients must present one).
#[derive(Clone, Debug)]
pub struct ApiTls {
    pub config: Arc<ServerConfig>,
    pub certs: Arc<Certs>,
    pub client: Option<Arc<rustls::ClientConfig>>,
}

/// The API's TLS from the flags: none without `-http-cert`.
pub fn api_tls(cfg: &Config) -> Result<Option<ApiTls>, TlsError> {
    let (Some(cert), Some(key)) = (&cfg.http_cert, &cfg.http_key) else { return Ok(None) };
    let certs = Arc::new(Certs::new(cert, key)?);
    let builder = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if cfg.http_verify_client {
        let ca = cfg.http_ca_cert.as_deref().ok_or_else(|| {
            TlsError::Config(
                "-http-verify-client needs -http-ca-cert (the CA client certificates must chain to)".into(),
            )
        })?;
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(read_roots(ca)?),
            Arc::new(provider::default_provider()),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        match &cfg.http_verify_common_name {
            Some(cn) => builder.with_client_cert_verifier(Arc::new(CommonName { inner: verifier, want: cn.clone() })),
            None => builder.with_client_cert_verifier(verifier),
        }
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(certs.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = match &cfg.http_ca_cert {
        Some(ca) => {
            let b = rustls::ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_root_certificates(read_roots(ca)?);
            let c = if cfg.http_verify_client {
                let der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
                b.with_client_auth_cert(read_certs(cert)?, der).map_err(|e| TlsError::Config(e.to_string()))?
            } else {
                b.with_no_client_auth()
            };
            Some(Arc::new(c))
        }
        None => None,
    };
    Ok(Some(ApiTls { config: Arc::new(config), certs, client }))
}

/// Send `req` to `addr` (`host:port`) over a new TLS connection with `client`, verifying the
/// server's certificate for `host`. Forwarding over HTTPS uses one connection per request.
pub async fn send(
    client: Arc<rustls::ClientConfig>,
    addr: &str,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
    timeout: Duration,
) -> Result<http::Response<bytes::Bytes>, String> {
    use http_body_util::BodyExt;
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).trim_matches(|c| c == '[' || c == ']');
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| format!("{addr}: {e}"))?;
    let run = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(|e| format!("{addr}: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("{addr}: {e}"))?.to_bytes();
        Ok(http::Response::from_parts(parts, body))
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| format!("{addr}: timed out"))?
}
