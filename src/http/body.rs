//! Reading a request body with a cap: refused (413) as soon as it is known to exceed it, from
//! `Content-Length` before anything is buffered, or while streaming; and with a stall limit: a
//! body that sends nothing for `stall` (`-http-header-timeout`) is answered 408, so a client
//! trickling a body cannot hold a connection and a task for ever (however large the body, as
//! long as it keeps coming).

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
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

/// The most [`read_body`] reserves ahead of the bytes, on a request's word.
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
    // Room for the declared length at once (a large batch of log entries would otherwise be
    // copied again at each doubling), up to a bound, so a false claim reserves little.
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(MAX_RESERVED) as usize);
    let mut total = 0;
    while let Some(chunk) = next_within(&mut body, stall, &mut total, cap).await? {
        out.put(chunk);
    }
    Ok(out)
}

/// The next piece of `body`, its length added to `total`: 413 once that passes `cap`, 400 for
/// a body that broke off.
async fn next_within<B: Buf>(
    body: &mut BodyStream<B>,
    stall: Duration,
    total: &mut u64,
    cap: u64,
) -> Result<Option<B>, StatusCode> {
    let Some(chunk) = next_chunk(body, stall).await? else { return Ok(None) };
    let chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
    *total += chunk.remaining() as u64;
    if *total > cap {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    Ok(Some(chunk))
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
    let mut total = 0;
    while let Some(mut chunk) = next_within(&mut body, stall, &mut total, cap).await? {
        let n = chunk.remaining();
        if n >= SMALL_FRAME {
            if !small.is_empty() {
                frames.push(small.split().freeze());
            }
            frames.push(chunk.copy_to_bytes(n));
        } else {
            small.put(chunk);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(pieces: Vec<Bytes>) -> BodyStream<Bytes> {
        Box::pin(futures::stream::iter(pieces.into_iter().map(Ok)))
    }

    /// Large pieces are kept as they came (not copied), small ones gathered, and the bytes are
    /// the body's, as `read_body` reads them; past the cap is 413 either way.
    #[tokio::test]
    async fn frames_keep_large_pieces_gather_small_ones_and_keep_the_cap() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let mut pieces: Vec<Bytes> = (0..10_000u32).map(|i| Bytes::from(vec![i as u8])).collect();
        pieces.push(big.clone());
        pieces.push(Bytes::from_static(b"end"));
        let whole: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let (h, stall) = (HeaderMap::new(), Duration::from_secs(5));

        let frames = read_frames(&h, stream(pieces.clone()), 1 << 20, stall).await.unwrap();
        assert!(frames.len() <= 5, "{} frames", frames.len());
        assert!(frames.iter().any(|f| f.as_ptr() == big.as_ptr()), "the large piece was copied");
        assert_eq!(frames.concat(), whole);
        assert_eq!(read_body(&h, stream(pieces.clone()), 1 << 20, stall).await.unwrap(), whole);

        let cap = whole.len() as u64 - 1;
        assert_eq!(
            read_frames(&h, stream(pieces.clone()), cap, stall).await.unwrap_err(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(read_body(&h, stream(pieces), cap, stall).await.unwrap_err(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
