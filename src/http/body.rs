//! Reading a request body with a cap: refused (413) as soon as it is known to exceed it, from
//! `Content-Length` before anything is buffered, or while streaming; and with a stall limit: a
//! body that sends nothing for `stall` (`-http-header-timeout`) is answered 408, so a client
//! trickling a body cannot hold a connection and a task for ever (however large the body, as
//! long as it keeps coming).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
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
    let declared = declared_within(headers, cap)?;
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

/// The body's `Content-Length`, if it declares one; 413 when that exceeds `cap`.
fn declared_within(headers: &HeaderMap, cap: u64) -> Result<Option<u64>, StatusCode> {
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > cap => Err(StatusCode::PAYLOAD_TOO_LARGE),
        d => Ok(d),
    }
}

/// Frames smaller than this are gathered into one, so a body sent in tiny pieces costs no more
/// than its bytes.
const SMALL_FRAME: usize = 4 << 10;

/// [`read_body`], the body left in the pieces it came in (hyper's `Bytes`, not copied; small ones
/// gathered), for a caller that takes the bytes apart itself (a snapshot chunk).
pub async fn read_frames<B: Buf>(
    headers: &HeaderMap,
    mut body: BodyStream<B>,
    cap: u64,
    stall: Duration,
) -> Result<Vec<Bytes>, StatusCode> {
    declared_within(headers, cap)?;
    let mut frames = Vec::new();
    let mut small = BytesMut::new();
    let mut total = 0u64;
    while let Some(chunk) = next_chunk(&mut body, stall).await? {
        let mut chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
        let n = chunk.remaining();
        total += n as u64;
        if total > cap {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        if n >= SMALL_FRAME {
            if !small.is_empty() {
                frames.push(small.split().freeze());
            }
            frames.push(chunk.copy_to_bytes(n));
        } else {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                small.extend_from_slice(part);
                let k = part.len();
                chunk.advance(k);
            }
            if small.len() >= SMALL_FRAME {
                frames.push(small.split().freeze());
            }
        }
    }
    if !small.is_empty() {
        frames.push(small.freeze());
    }
    Ok(frames)
}
