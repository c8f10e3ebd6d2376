//! A Google Cloud Storage server for the tests, on loopback and in memory: the part of GCS's XML
//! API that object_store's client uses (objects: HEAD, GET, PUT; multipart uploads: initiate,
//! parts, complete, abort), with `x-goog-meta-*` metadata and generations. As GCS does, it
//! requires a bearer token on every request: a JWT signed (RS256) with the service account's
//! key, checked here against that key's public half and the account's e-mail, so a backup made
//! with another key is refused (401). No installable GCS emulator speaks this API well enough
//! (object_store's PUT and multipart calls); see docs/DESIGN.md §13.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use ring::signature::KeyPair as _;
use rustls::pki_types::pem::PemObject as _;

/// The test service account's key, and another one that the store does not accept.
pub fn account_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gcs/account-key.pem")
}
pub fn other_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gcs/other-key.pem")
}

pub const ACCOUNT: &str = "raftlite-backup@test-project.iam.gserviceaccount.com";

/// Write a service account's key file (the JSON the Cloud console gives) for `key_pem` into
/// `dir`; its path.
pub fn key_file(dir: &Path, name: &str, key_pem: &Path) -> PathBuf {
    let pem = std::fs::read_to_string(key_pem).expect("test key");
    let json = serde_json::json!({
        "type": "service_account", "project_id": "test-project", "private_key_id": "k1",
        "private_key": pem, "client_email": ACCOUNT, "token_uri": "https://oauth2.googleapis.com/token",
    });
    let path = dir.join(name);
    std::fs::write(&path, json.to_string()).expect("key file");
    path
}

/// A stored object: its bytes, its `x-goog-meta-*` metadata (names without the prefix), its
/// generation.
#[derive(Clone)]
pub struct Object {
    pub data: Vec<u8>,
    pub meta: Vec<(String, String)>,
    pub generation: u64,
}

struct Upload {
    key: String,
    meta: Vec<(String, String)>,
    parts: BTreeMap<u32, Vec<u8>>,
}

struct Inner {
    bucket: String,
    /// The account key's public half (DER RSAPublicKey).
    public_key: Vec<u8>,
    objects: Mutex<HashMap<String, Object>>,
    uploads: Mutex<HashMap<String, Upload>>,
    next: AtomicU64,
    multipart_completed: AtomicU64,
    refused: AtomicU64,
    stop: AtomicBool,
}

pub struct FakeGcs {
    addr: String,
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
}

impl FakeGcs {
    /// Serve `bucket` on a free port of 127.0.0.1, accepting tokens signed with
    /// [`account_key`] for [`ACCOUNT`].
    pub fn start(bucket: &str) -> FakeGcs {
        let pem = std::fs::read(account_key()).expect("test key");
        let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem).expect("PEM key");
        let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_der()).expect("RSA key");
        let inner = Arc::new(Inner {
            bucket: bucket.to_string(),
            public_key: pair.public_key().as_ref().to_vec(),
            objects: Mutex::default(),
            uploads: Mutex::default(),
            next: AtomicU64::new(1),
            multipart_completed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let addr = super::free_addr("127.0.0.1");
        let listener = TcpListener::bind(&addr).expect("bind");
        let i = inner.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if i.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let i = i.clone();
                std::thread::spawn(move || serve(conn, &i));
            }
        });
        FakeGcs { addr, inner, accept: Some(accept) }
    }

    /// The base URL a client is given (`endpoint`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The object `key`.
    pub fn object(&self, key: &str) -> Option<Object> {
        self.inner.objects.lock().ok()?.get(key).cloned()
    }

    /// Store `data` as `key` directly (a damaged backup, say).
    pub fn put(&self, key: &str, data: Vec<u8>) {
        let generation = self.inner.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut o) = self.inner.objects.lock() {
            o.insert(key.to_string(), Object { data, meta: Vec::new(), generation });
        }
    }

    /// Multipart uploads completed so far.
    pub fn multipart_completed(&self) -> u64 {
        self.inner.multipart_completed.load(Ordering::Relaxed)
    }

    /// Requests refused for their credentials so far.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Multipart uploads begun and neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.inner.uploads.lock().map(|u| u.len()).unwrap_or(0)
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr.parse().expect("addr"), Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn meta(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_ascii_lowercase().strip_prefix("x-goog-meta-")?.to_string(), v.clone())))
            .collect()
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn xml_error(status: u16, code: &str, message: &str) -> Reply {
    let body =
        format!("<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>");
    Reply { status, headers: vec![("content-type".into(), "application/xml".into())], body: body.into_bytes() }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Read one request; `None` when the peer closed the connection or sent garbage.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let find = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; n];
        reader.read_exact(&mut body).ok()?;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Some(Request { method, path: percent_decode(path), query, headers, body })
}

fn serve(conn: TcpStream, inner: &Inner) {
    let mut reader = BufReader::new(conn);
    while let Some(req) = read_request(&mut reader) {
        if inner.stop.load(Ordering::Relaxed) {
            return;
        }
        let head = req.method == "HEAD";
        let reply = answer(req, inner);
        let mut out = format!("HTTP/1.1 {} X\r\ncontent-length: {}\r\n", reply.status, reply.body.len());
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head {
            bytes.extend_from_slice(&reply.body);
        }
        let writer = reader.get_mut();
        if writer.write_all(&bytes).and_then(|()| writer.flush()).is_err() {
            return;
        }
    }
}

/// Whether `Authorization` carries a JWT for [`ACCOUNT`] signed with the account's key.
fn authorized(req: &Request, inner: &Inner) -> bool {
    let Some(token) = req.header("authorization").and_then(|a| a.strip_prefix("Bearer ")) else { return false };
    let Some((message, signature)) = token.rsplit_once('.') else { return false };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Ok(signature) = b64.decode(signature) else { return false };
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &inner.public_key);
    if key.verify(message.as_bytes(), &signature).is_err() {
        return false;
    }
    let claims = message.split_once('.').and_then(|(_, c)| b64.decode(c).ok());
    let claims: serde_json::Value = claims.and_then(|c| serde_json::from_slice(&c).ok()).unwrap_or_default();
    claims["iss"] == ACCOUNT
}

fn etag(generation: u64) -> String {
    format!("\"g{generation}\"")
}

fn object_headers(o: &Object) -> Vec<(String, String)> {
    let mut h = vec![
        ("etag".to_string(), etag(o.generation)),
        ("last-modified".to_string(), chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
        ("x-goog-generation".to_string(), o.generation.to_string()),
        ("content-type".to_string(), "application/octet-stream".to_string()),
    ];
    h.extend(o.meta.iter().map(|(k, v)| (format!("x-goog-meta-{k}"), v.clone())));
    h
}

fn answer(req: Request, inner: &Inner) -> Reply {
    if !authorized(&req, inner) {
        inner.refused.fetch_add(1, Ordering::Relaxed);
        return xml_error(401, "AuthenticationRequired", "Invalid Credentials");
    }
    let rest = req.path.trim_start_matches('/');
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket != inner.bucket {
        return xml_error(404, "NoSuchBucket", "The specified bucket does not exist.");
    }
    let key = key.to_string();
    let (Ok(mut objects), Ok(mut uploads)) = (inner.objects.lock(), inner.uploads.lock()) else {
        return xml_error(500, "InternalError", "poisoned");
    };
    let ok = |headers: Vec<(String, String)>, body: Vec<u8>| Reply { status: 200, headers, body };
    match (req.method.as_str(), req.query.get("uploadId")) {
        ("GET" | "HEAD", None) => match objects.get(&key) {
            Some(o) => ok(object_headers(o), o.data.clone()),
            None => xml_error(404, "NoSuchKey", "The specified key does not exist."),
        },
        ("PUT", None) => {
            let generation = inner.next.fetch_add(1, Ordering::Relaxed);
            let meta = req.meta();
            objects.insert(key, Object { data: req.body, meta, generation });
            ok(vec![("etag".into(), etag(generation)), ("x-goog-generation".into(), generation.to_string())], vec![])
        }
        ("POST", None) if req.query.contains_key("uploads") => {
            let id = format!("u{}", inner.next.fetch_add(1, Ordering::Relaxed));
            uploads.insert(id.clone(), Upload { key: key.clone(), meta: req.meta(), parts: BTreeMap::new() });
            let body = format!(
                "<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult><Bucket>{}</Bucket><Key>{key}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>",
                inner.bucket
            );
            ok(vec![("content-type".into(), "application/xml".into())], body.into_bytes())
        }
        ("PUT", Some(id)) => {
            let Some(upload) = uploads.get_mut(id) else { return xml_error(404, "NoSuchUpload", "no such upload") };
            let Some(n) = req.query.get("partNumber").and_then(|n| n.parse::<u32>().ok()) else {
                return xml_error(400, "InvalidArgument", "partNumber");
            };
            let tag = format!("\"p{n}-{}\"", req.body.len());
            upload.parts.insert(n, req.body);
            ok(vec![("etag".into(), tag)], vec![])
        }
        ("POST", Some(id)) => {
            let Some(upload) = uploads.remove(id) else { return xml_error(404, "NoSuchUpload", "no such upload") };
            // The parts named in the request, in its order.
            let text = String::from_utf8_lossy(&req.body);
            let mut data = Vec::new();
            for piece in text.split("<PartNumber>").skip(1) {
                let n = piece.split('<').next().and_then(|n| n.trim().parse::<u32>().ok());
                match n.and_then(|n| upload.parts.get(&n)) {
                    Some(p) => data.extend_from_slice(p),
                    None => return xml_error(400, "InvalidPart", "a part was not uploaded"),
                }
            }
            let generation = inner.next.fetch_add(1, Ordering::Relaxed);
            objects.insert(upload.key, Object { data, meta: upload.meta, generation });
            inner.multipart_completed.fetch_add(1, Ordering::Relaxed);
            let body = format!(
                "<?xml version='1.0' encoding='UTF-8'?><CompleteMultipartUploadResult><ETag>{}</ETag></CompleteMultipartUploadResult>",
                etag(generation)
            );
            ok(vec![("x-goog-generation".into(), generation.to_string())], body.into_bytes())
        }
        ("DELETE", Some(id)) => {
            uploads.remove(id);
            Reply { status: 204, headers: vec![], body: vec![] }
        }
        _ => xml_error(405, "MethodNotAllowed", "not supported here"),
    }
}
