//! The HTTP API (docs/API.md §2–§10). Module by module, in the order a request meets them:
//! `server` (the warp listener) → `router` (the endpoint table in `endpoint`, the panic guard,
//! metrics) → `body` (capped body reading) → `request` (parameters and statements) → a handler
//! (`data` for `/db/execute|query|request|sql`, `consistency` for the read levels, `cluster_ops`
//! for `/readyz`, `/leader`, `/remove`, `backup` for backup/load/boot/snapshot/reap, `status`
//! for `/status`, `/nodes`, `/metrics`, `/debug/vars`) → `forward` (a follower relays to the
//! leader) → `respond` and `render` (the response bytes). `internode` is the other listener, on
//! `-raft-addr`; `tls` holds both ports' TLS; `outgoing` is the client side of calls to other
//! nodes. The server starts before the store is open, so `/status` and `/readyz?noleader`
//! answer at once; everything that needs the store waits for [`Core`].

// Handlers return `Result<_, Response>` so that an early answer (400, 503, 301) is one `?` away;
// the response type is warp's, and its size is not ours to choose.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod backup;
pub mod body;
pub mod cluster_ops;
pub mod consistency;
pub mod data;
pub mod endpoint;
pub mod forward;
pub mod internode;
pub mod outgoing;
pub mod render;
pub mod request;
pub mod respond;
pub mod router;
pub mod server;
pub mod state;
pub mod status;
pub mod tls;

pub use server::{resolve, serve};
pub use state::{AppState, Core, COMMIT, VERSION};
