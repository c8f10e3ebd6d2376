//! TLS on both ports (docs/DESIGN.md §10): HTTPS on the API (`-http-cert`, `-http-key`,
//! `-http-ca-cert`, `-http-verify-client`, `-http-verify-common-name`) and node-to-node TLS on the
//! Raft address (`-node-cert`, `-node-key`, `-node-ca-cert`, `-node-no-verify`,
//! `-node-verify-client`, `-node-verify-server-name`, `-node-verify-common-name`), with rustls and
//! the ring provider. Each port has one certificate, served to clients and presented to other
//! nodes when this node connects to them. The certificate and key are re-read when either file
//! changes on disk ([`Certs::watch`]), without a restart: new handshakes get the new certificate,
//! established connections keep theirs. A file that fails to load keeps the old certificate and
//! is reported (log, `raftlite_tls_reloads_total{result="failed"}`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::outgoing::ClientTls;

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
        self.current()
    }
}

/// The same certificate is this node's identity when it connects to another node.
impl ResolvesClientCert for Certs {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl Certs {
    fn new(cert: &Path, key: &Path) -> Result<Certs, TlsError> {
        let seen = (modified(cert), modified(key));
        let ck = load(cert, key)?;
        Ok(Certs { cert: cert.into(), key: key.into(), current: RwLock::new(Arc::new(ck)), seen: RwLock::new(seen) })
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
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
/// (`-http-verify-common-name`, `-node-verify-common-name`): the chain is checked by webpki first.
#[derive(Debug)]
struct CommonName {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    want: String,
    /// `http` or `node`.
    port: String,
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
            let port = if self.port == "http" { "api" } else { "raft" };
            metrics::counter!("raftlite_tls_handshake_failures_total", "port" => port, "reason" => "common_name")
                .increment(1);
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

/// A client certificate verifier's settings for one port.
struct ClientAuth<'a> {
    /// `-http-ca-cert` / `-node-ca-cert`.
    ca: Option<&'a Path>,
    /// `-http-verify-client` / `-node-verify-client`.
    required: bool,
    /// `-http-verify-common-name` / `-node-verify-common-name`.
    common_name: Option<&'a str>,
    /// `http` or `node`, for messages.
    flags: &'a str,
}

fn provider_arc() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(provider::default_provider())
}

/// The server side of a port: the served certificate from `certs`, client certificates checked
/// as `auth` says.
fn server_config(certs: &Arc<Certs>, auth: &ClientAuth<'_>) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider_arc())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if auth.required {
        let ca = auth.ca.ok_or_else(|| {
            TlsError::Config(format!(
                "-{0}-verify-client needs -{0}-ca-cert (the CA client certificates must chain to)",
                auth.flags
            ))
        })?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider_arc())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        match auth.common_name {
            Some(cn) => builder.with_client_cert_verifier(Arc::new(CommonName {
                inner: verifier,
                want: cn.to_string(),
                port: auth.flags.to_string(),
            })),
            None => builder.with_client_cert_verifier(verifier),
        }
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(certs.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The CAs in `ca`, or the system's when no file is given (empty when it has none).
fn roots_or_system(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    if let Some(ca) = ca {
        return read_roots(ca);
    }
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    Ok(roots)
}

/// The client side: trusting `roots` (or, with `no_verify`, any certificate), presenting this
/// node's own certificate from `certs` whenever the other side asks for one.
fn client_config(
    certs: Option<Arc<Certs>>,
    roots: RootCertStore,
    no_verify: bool,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider_arc())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if no_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServer(provider_arc())))
    } else {
        builder.with_root_certificates(roots)
    };
    Ok(match certs {
        Some(c) => builder.with_client_cert_resolver(c),
        None => builder.with_no_client_auth(),
    })
}

/// A client configuration that trusts nothing: what a client holds when it only speaks plain
/// HTTP (an `https://` URL given to it by mistake fails verification instead of being trusted).
pub fn plain_only() -> Result<rustls::ClientConfig, TlsError> {
    client_config(None, RootCertStore::empty(), false)
}

/// A client configuration for tools that talk to a node (the `raftlite` shell): trusting `ca` (or
/// the system's CAs), presenting `identity` (certificate and key files) when given, or trusting
/// any server certificate with `no_verify`.
pub fn client_tls(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    no_verify: bool,
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = if no_verify { RootCertStore::empty() } else { roots_or_system(ca)? };
    if roots.is_empty() && !no_verify {
        return Err(TlsError::Config("no CA certificates to verify the node with: give a CA file".into()));
    }
    let certs = identity.map(|(cert, key)| Certs::new(cert, key).map(Arc::new)).transpose()?;
    client_config(certs, roots, no_verify)
}

/// TLS on one of the node's two ports: the server configuration, the certificate it serves (and
/// presents when it connects to the same port of another node: one identity per port, rotated
/// together), and the client side for those connections.
#[derive(Clone, Debug)]
pub struct PortTls {
    pub config: Arc<ServerConfig>,
    pub certs: Arc<Certs>,
    /// How this node connects to the same port on other nodes; `None` when nothing could verify
    /// them (the API port without `-http-ca-cert` on a system with no CA certificates: forwarding
    /// then answers with that reason).
    pub client: Option<ClientTls>,
    /// Clients must present a certificate.
    pub mutual: bool,
}

impl PortTls {
    /// Serve the certificate files' new contents when they change (checked every second).
    pub fn watch(&self) {
        self.certs.clone().watch(Duration::from_secs(1));
    }
}

/// What both ports start from: the certificate, the server configuration, and the roots the
/// client side trusts (the port's CA file, or the system's). None without a certificate.
type PortParts = (Arc<Certs>, ServerConfig, RootCertStore);

fn port_parts(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    auth: &ClientAuth<'_>,
) -> Result<Option<PortParts>, TlsError> {
    let (Some(cert), Some(key)) = (cert, key) else { return Ok(None) };
    let certs = Arc::new(Certs::new(cert, key)?);
    let config = server_config(&certs, auth)?;
    let roots = roots_or_system(auth.ca)?;
    Ok(Some((certs, config, roots)))
}

/// HTTPS on the API from the flags: none without `-http-cert`.
pub fn api_tls(cfg: &Config) -> Result<Option<PortTls>, TlsError> {
    let auth = ClientAuth {
        ca: cfg.http_ca_cert.as_deref(),
        required: cfg.http_verify_client,
        common_name: cfg.http_verify_common_name.as_deref(),
        flags: "http",
    };
    let Some((certs, config, roots)) = port_parts(&cfg.http_cert, &cfg.http_key, &auth)? else { return Ok(None) };
    let client = match roots.is_empty() {
        true => None,
        false => {
            Some(ClientTls { config: Arc::new(client_config(Some(certs.clone()), roots, false)?), server_name: None })
        }
    };
    Ok(Some(PortTls { config: Arc::new(config), certs, client, mutual: cfg.http_verify_client }))
}

/// Node-to-node TLS on the Raft address from the flags: none without `-node-cert`.
pub fn node_tls(cfg: &Config) -> Result<Option<PortTls>, TlsError> {
    let auth = ClientAuth {
        ca: cfg.node_ca_cert.as_deref(),
        required: cfg.node_verify_client,
        common_name: cfg.node_verify_common_name.as_deref(),
        flags: "node",
    };
    let Some((certs, config, roots)) = port_parts(&cfg.node_cert, &cfg.node_key, &auth)? else { return Ok(None) };
    if roots.is_empty() && !cfg.node_no_verify {
        return Err(TlsError::Config(
            "node-to-node TLS needs -node-ca-cert (the CA other nodes' certificates chain to): this system has no CA certificates of its own".into(),
        ));
    }
    let server_name = match &cfg.node_verify_server_name {
        Some(n) => Some(
            ServerName::try_from(n.trim_matches(|c| c == '[' || c == ']').to_string())
                .map_err(|e| TlsError::Config(format!("-node-verify-server-name {n:?}: {e}")))?,
        ),
        None => None,
    };
    let client =
        ClientTls { config: Arc::new(client_config(Some(certs.clone()), roots, cfg.node_no_verify)?), server_name };
    Ok(Some(PortTls { config: Arc::new(config), certs, client: Some(client), mutual: cfg.node_verify_client }))
}

/// `-node-no-verify`: accept any server certificate (the handshake's signatures are still
/// checked, so the session is encrypted to whoever holds the key, but nobody vouches for them).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
