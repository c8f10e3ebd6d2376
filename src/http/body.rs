//! Reading a request body with a cap: refused (413) as soon as it is known to exceed it, from
//! `Content-Length` before anything is buffered, or while streaming; and with a stall limit: a
//! body that sends nothing for `stall` (`-http-header-timeout`) is answered 408, so a client
//! trickling a body cannot hold a connection and a task for ever (however large the body, as
//! long as it keeps coming).

use std::time::Duration;

use bytes::Buf;
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};

/// A request body as warp hands it over.
pub type BodyStream<B> = std::pin::Pin<Box<dyn Stream<Item = Result<B, warp::Error>> + Send>>;

/// The next chunk of `body`; `Err(408)` when none arrives within `stall`.
pub async fn next_chunk<B>(
    body: &mut BodyStream<B>,
    stall: Duration,
) -> Result<Option<Result<B, warp::Error>>, StatusCode> {
    tokio::time::timeout(stall, body.next()).await.map_err(|_| StatusCode::REQUEST_TIMEOUT)
}

/// The most [`read_body`] reserves ahead of the bytes, on a request's word: a snapshot chunk.
const MAX_RESERVED: u64 = 17 << 20;

/// Read the body, refusing (413) as soon as it is known to exceed `cap`, and (408) when it
/// stalls for `stall`.
pub async fn read_body<B: Buf>(
    headers: &HeaderMap,
    mut body: BodyStream<B>,
    cap: u64,
    stall: Duration,
) -> Result<Vec<u8>, StatusCode> {
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    // Room for the declared length at once (a 16 MiB snapshot chunk would otherwise be copied
    // again at each doubling), up to a bound, so a false claim reserves little.
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(MAX_RESERVED) as usize);
    while let Some(chunk) = next_chunk(&mut body, stall).await? {
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
