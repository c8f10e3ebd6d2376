//! The HTTP API server: warp carries every request to [`router::dispatch`] on an already bound
//! listener.

use std::net::SocketAddr;
use std::sync::Arc;

use warp::Filter;

use super::router;
use super::state::AppState;

/// Serve the API on an already bound listener until the task is dropped.
pub async fn serve(state: Arc<AppState>, listener: tokio::net::TcpListener) {
    let st = warp::any().map(move || state.clone());
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let route = st
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(|state, method, path: warp::path::FullPath, query: String, headers, body| async move {
            router::dispatch(state, method, path.as_str().to_string(), query, headers, body).await
        });
    warp::serve(route).incoming(listener).run().await;
}

/// Resolve `host:port` (e.g. `localhost:4001`) to a bindable address.
pub fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("cannot resolve {addr}")))
}
