//! raftlite: a replicated relational database. SQLite stores the data, Raft (openraft) keeps every
//! copy identical, and clients talk rqlite's HTTP API.

// `/status` is one large `serde_json::json!` document.
#![recursion_limit = "256"]

pub mod actors;
pub mod autobackup;
pub mod cdc;
pub mod cluster;
pub mod config;
pub mod harness;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod store;
