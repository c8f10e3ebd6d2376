//! Reading a request body with a cap: refused (413) as soon as it is known to exceed it, from
//! `Content-Length` before anything is buffered, or while streaming.

use bytes::Buf;
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};

/// A request body as warp hands it over.
pub type BodyStream<B> = std::pin::Pin<Box<dyn Stream<Item = Result<B, warp::Error>> + Send>>;

/// Read the body, refusing (413) as soon as it is known to exceed `cap`.
pub async fn read_body<B: Buf>(headers: &HeaderMap, mut body: BodyStream<B>, cap: u64) -> Result<Vec<u8>, StatusCode> {
    if let Some(len) =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    {
        if len > cap {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
    }
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
        if out.len() as u64 + chunk.remaining() as u64 > cap {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}
