//! The `HttpFront` actor: owns the HTTP API server and the inter-node server. The listeners are
//! bound once at start (so a busy port is a clear startup error); the actor serves them on tokio
//! tasks and, if restarted, aborts those tasks and serves the same listeners again, without
//! dropping the sockets. Every second it checks that both servers are still running; a server
//! task that ended (a panic in the accept loop) restarts the actor, which serves them again.

use std::sync::Arc;

use actix::prelude::*;

use crate::actors::supervise::{guard, note_restart, trip};
use crate::http::{self, AppState};

const ACTOR: &str = "http_front";

pub struct HttpFront {
    state: Arc<AppState>,
    api: Arc<std::net::TcpListener>,
    internode: Arc<std::net::TcpListener>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HttpFront {
    pub fn new(state: Arc<AppState>, api: std::net::TcpListener, internode: std::net::TcpListener) -> Self {
        HttpFront { state, api: Arc::new(api), internode: Arc::new(internode), tasks: Vec::new() }
    }
}

fn tokio_listener(l: &std::net::TcpListener) -> std::io::Result<tokio::net::TcpListener> {
    let l = l.try_clone()?;
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

impl Actor for HttpFront {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match (tokio_listener(&self.api), tokio_listener(&self.internode)) {
            (Ok(api), Ok(inter)) => {
                self.tasks.push(tokio::spawn(http::serve(self.state.clone(), api)));
                self.tasks.push(tokio::spawn(http::internode::serve(self.state.clone(), inter)));
                ctx.run_interval(std::time::Duration::from_secs(1), |_act, ctx| ctx.notify(Check));
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot serve the listeners");
                ctx.stop();
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Are the servers still running?
#[derive(Message)]
#[rtype(result = "()")]
struct Check;

impl Handler<Check> for HttpFront {
    type Result = ();
    fn handle(&mut self, _msg: Check, ctx: &mut Context<Self>) {
        let checked = guard(ctx, ACTOR, |_| {
            trip(ACTOR, "http_front::check")?;
            Ok(self.tasks.iter().any(|t| t.is_finished()))
        });
        if let Ok(true) = checked {
            tracing::error!("an HTTP server task ended; serving the listeners again");
            ctx.stop();
        }
    }
}

impl Supervised for HttpFront {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        note_restart(ACTOR);
    }
}
