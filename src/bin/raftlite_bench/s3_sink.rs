//! A store that costs the machine as little as an S3 server can: it answers the S3 calls an
//! automatic backup makes (multipart initiate, part, complete, abort; a single PUT; HEAD, which
//! finds nothing) and throws the bytes away. `--auto-backup` measures write latency during an
//! upload against it as well as against moto: on two shared cores moto (Python, hashing every
//! byte) takes more CPU than the node's whole upload, where a deployment's store is on another
//! machine. What is left with this sink is the node's side of an upload plus the kernel's cost of
//! receiving it on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use raftlite::harness::cdc_sink::{header, read_headers};

pub struct S3Sink {
    pub endpoint: String,
    /// Bytes of request bodies received.
    pub received: Arc<AtomicU64>,
}

impl S3Sink {
    /// Listen on a free port of `ip`; connections are served on threads of their own at nice 19,
    /// standing in for a server elsewhere.
    pub fn start(ip: &str) -> std::io::Result<S3Sink> {
        let listener = TcpListener::bind((ip, 0))?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(AtomicU64::new(0));
        let r = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let r = r.clone();
                std::thread::spawn(move || {
                    raftlite::actors::uploader::set_thread_nice(19);
                    serve(conn, &r);
                });
            }
        });
        Ok(S3Sink { endpoint, received })
    }
}

/// Serve one keep-alive connection until the peer closes it or sends what this sink does not
/// speak (then the connection is closed and the upload fails, which the bench reports).
fn serve(conn: TcpStream, received: &AtomicU64) {
    let Ok(mut out) = conn.try_clone() else { return };
    let mut reader = BufReader::with_capacity(1 << 20, conn);
    let mut body = vec![0u8; 1 << 20];
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let (method, target) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
        let Some(headers) = read_headers(&mut reader) else { return };
        // Chunked bodies are not spoken here.
        if header(&headers, "transfer-encoding").is_some() {
            return;
        }
        let length: u64 = header(&headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut left = length;
        while left > 0 {
            let want = body.len().min(left as usize);
            match reader.read(&mut body[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => left -= n as u64,
            }
        }
        received.fetch_add(length, Ordering::Relaxed);
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let (status, headers, reply) = match method.as_str() {
            "HEAD" | "GET" => ("404 Not Found", "", String::new()),
            "POST" if query.contains("uploads") => (
                "200 OK",
                "Content-Type: application/xml\r\n",
                "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>sink</UploadId></InitiateMultipartUploadResult>".to_string(),
            ),
            "POST" => (
                "200 OK",
                "Content-Type: application/xml\r\n",
                "<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><ETag>\"sink\"</ETag></CompleteMultipartUploadResult>".to_string(),
            ),
            "PUT" => ("200 OK", "ETag: \"sink\"\r\n", String::new()),
            "DELETE" => ("204 No Content", "", String::new()),
            _ => return,
        };
        let head = format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n", reply.len());
        let sent =
            if method == "HEAD" { out.write_all(head.as_bytes()) } else { out.write_all((head + &reply).as_bytes()) };
        if sent.is_err() {
            return;
        }
    }
}
