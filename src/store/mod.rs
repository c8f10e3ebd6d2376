//! Storage: the replicated command format, its codec, SQL preprocessing, the SQLite state-machine
//! database and the Raft log file.

pub mod apply;
pub mod codec;
pub mod command;
pub mod db;
pub mod dump;
pub mod log_db;
pub mod snapshot_file;
pub mod sql;

/// Keys of the meta table in the state-machine database: the applied log id and the membership
/// it covers, both codec-encoded, written in the same transaction as the effects.
pub const KEY_APPLIED: &str = "applied";
pub const KEY_MEMBERSHIP: &str = "membership";
