//! The `HttpFront` actor: owns the HTTP API server. The listener is bound once at start (so a busy
//! port is a clear startup error); the actor serves it on a tokio task and, if restarted, aborts
//! that task and serves the same listener again, without dropping the socket.

use std::sync::Arc;

use actix::prelude::*;

use crate::actors::supervise::note_restart;
use crate::http::{self, AppState};

const ACTOR: &str = "http_front";

pub struct HttpFront {
    state: Arc<AppState>,
    listener: Arc<std::net::TcpListener>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpFront {
    pub fn new(state: Arc<AppState>, listener: std::net::TcpListener) -> Self {
        HttpFront { state, listener: Arc::new(listener), task: None }
    }
}

impl Actor for HttpFront {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let listener = self.listener.try_clone().and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        });
        match listener {
            Ok(l) => self.task = Some(tokio::spawn(http::serve(self.state.clone(), l))),
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the HTTP listener");
                ctx.stop();
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Supervised for HttpFront {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        note_restart(ACTOR);
    }
}
