//! Storage: the replicated command format, its codec, SQL preprocessing, the SQLite state-machine
//! database and the Raft log file.

pub mod apply;
pub mod codec;
pub mod command;
pub mod db;
pub mod direct_writer;
pub mod dump;
pub mod extensions;
pub mod log_db;
pub mod position;
pub mod snapshot_file;
pub mod sql;
