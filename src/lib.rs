//! raftlite: a replicated relational database. SQLite stores the data, Raft (openraft) keeps every
//! copy identical, and clients talk rqlite's HTTP API.

pub mod actors;
pub mod cluster;
pub mod config;
pub mod http;
pub mod node;
pub mod raft;
pub mod store;
