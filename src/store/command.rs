//! The replicated command (the payload of every Raft log entry) and the typed results the applier
//! returns. Rendering these to rqlite's JSON lives in `src/http/render.rs`.

use serde::{Deserialize, Serialize};

/// One SQL value, as bound to a parameter or read from a row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Bool(bool),
    Text(String),
    Blob(Vec<u8>),
}

/// A parameter: positional (bound in order) or named (bound by name, prefix optional).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Param {
    Positional(Value),
    Named(String, Value),
}

/// One statement of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
    /// The statement has a RETURNING clause: execute it as a query so rows come back.
    pub returning: bool,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Statement { sql: sql.into(), params: Vec::new(), returning: false }
    }
}

/// Options that change how statements execute (identical on every replica).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecOptions {
    pub transaction: bool,
    /// Deterministic work budget derived from `db_timeout`, in SQLite VM progress ticks
    /// (0 = unlimited). A wall-clock limit would let replicas disagree.
    pub step_budget: u64,
    /// Prefix column names with their table (`qualify_columns`).
    pub qualify_columns: bool,
    /// The leader's wall clock when it proposed the entry (Unix ms; 0 = unknown). Used only for
    /// `freshness_strict` reads on followers, never by SQL.
    pub proposed_at_ms: i64,
}

/// The command proposed through Raft.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Writes (`/db/execute`, writes of `/db/request`).
    Execute { stmts: Vec<Statement>, opts: ExecOptions, seed: u64 },
    /// A `strong` read: executed through the log on every node, the leader's result returned.
    Query { stmts: Vec<Statement>, opts: ExecOptions, seed: u64 },
    /// A mixed `/db/request` with at least one write: each statement classified at apply time.
    Request { stmts: Vec<Statement>, opts: ExecOptions, seed: u64 },
    /// `/db/load` of a database image: replaces the database on every node.
    Load { image: Vec<u8> },
    /// Group commit: independent write requests that arrived together, in one log entry (one
    /// append, one fsync, one apply transaction). Each keeps its own options and results, as if
    /// it had its own entry; only `Execute` commands are batched.
    Batch(Vec<Command>),
    /// Change data capture: the leader delivered every event up to this log index. Each node
    /// prunes its CDC queue through it, and a new leader resumes after it. Changes no data.
    CdcHighWater(u64),
}

/// What one statement produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StmtResult {
    Write { last_insert_id: i64, rows_affected: i64, time: f64 },
    Rows(Rows),
    Error { error: String, time: f64 },
}

impl StmtResult {
    /// The error message, if this statement failed.
    pub fn error(&self) -> Option<&str> {
        match self {
            StmtResult::Error { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Rows of a query (or of a write with RETURNING).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    pub columns: Vec<String>,
    /// Declared (lower-cased) or inferred type per column.
    pub types: Vec<String>,
    pub values: Vec<Vec<Value>>,
    pub time: f64,
}

/// The applier's answer for one log entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<StmtResult>,
    /// Request-level failure (e.g. the whole batch could not run).
    pub error: Option<String>,
    /// The log index that produced this response.
    pub raft_index: u64,
    /// For a [`Command::Batch`]: one response per batched command, in order.
    #[serde(default)]
    pub parts: Vec<Response>,
}
