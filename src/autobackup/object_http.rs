//! object_store's HTTP, through our own client: hyper-util's pooled client with hyper-rustls
//! (ring), the same stack as the inter-node traffic (src/http/outgoing.rs), instead of the reqwest
//! with aws-lc-rs that object_store would otherwise bring (a long build on 2 cores, and a
//! process-wide crypto provider).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector as Tcp;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse,
    HttpResponseBody, HttpService,
};

/// Makes [`Hyper`] clients for object_store.
#[derive(Debug, Clone)]
pub struct Connector {
    tls: Arc<rustls::ClientConfig>,
}

impl Connector {
    /// HTTPS endpoints are verified against the system's CAs.
    pub fn new() -> Result<Connector, String> {
        let tls = crate::http::tls::client_tls(None, None, false).map_err(|e| e.to_string())?;
        Ok(Connector { tls: Arc::new(tls) })
    }

    /// For endpoints that are plain HTTP only (a system without CA certificates).
    pub fn plain() -> Result<Connector, String> {
        let tls = crate::http::tls::plain_only().map_err(|e| e.to_string())?;
        Ok(Connector { tls: Arc::new(tls) })
    }
}

impl HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let tls = crate::http::outgoing::ClientTls { config: self.tls.clone(), server_name: None };
        let https = crate::http::outgoing::connector(tls, None, std::time::Duration::from_secs(5));
        Ok(HttpClient::new(Hyper { client: Client::builder(TokioExecutor::new()).build(https) }))
    }
}

#[derive(Debug)]
struct Hyper {
    client: Client<HttpsConnector<Tcp>, HttpRequestBody>,
}

#[async_trait::async_trait]
impl HttpService for Hyper {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let resp = self.client.request(req).await.map_err(|e| {
            let kind = if e.is_connect() { HttpErrorKind::Connect } else { HttpErrorKind::Request };
            HttpError::new(kind, e)
        })?;
        let (parts, mut body) = resp.into_parts();
        // hyper's body is not `Sync`, which object_store's body must be: relay it through a channel.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, HttpError>>(8);
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                let sent = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(data) => tx.send(Ok(data)).await,
                        Err(_) => continue,
                    },
                    Err(e) => {
                        let _ = tx.send(Err(HttpError::new(HttpErrorKind::Interrupted, e))).await;
                        break;
                    }
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        let mut rx = rx;
        // Answers `None` for as long as it is polled once the body is done.
        let stream =
            futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(|r| r.map(hyper::body::Frame::data))));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(http_body_util::StreamBody::new(stream))))
    }
}
