//! The node's actors (docs/DESIGN.md §2). Each runs under an actix `Supervisor`, so its `Addr` survives
//! a restart; `supervise` holds the panic guard and the restart counters they share.

pub mod applier;
pub mod cdc_sender;
pub mod consensus;
pub mod http_front;
pub mod log_store;
pub mod membership;
pub mod readers;
pub mod snapshotter;
pub mod supervise;
pub mod uploader;
pub mod write_queue;
