//! The SQLite state-machine database: opening the writer and the read-only connections with the
//! hardening of docs/DESIGN.md §10, executing a request's statements with rqlite's semantics
//! (docs/API.md §4, §5, §7). The database holds only the user's objects; where it stands in the
//! log is recorded beside it (`store::position`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fallible_iterator::FallibleIterator;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::cdc::Cdc;
use crate::store::command::{ExecOptions, Param, Rows, Statement, StmtResult, Value};
use crate::store::extensions::Extensions;
use crate::store::sql;

const SAVEPOINT: &str = "_raftlite_tx";

/// Progress-handler granularity, in SQLite VM instructions.
const PROGRESS_OPS: i32 = 1000;
/// How many progress ticks one millisecond of `db_timeout` buys on the write path. Writes are
/// limited by work, not by the clock, so every replica stops (or not) at the same instruction.
pub const TICKS_PER_MS: u64 = 20;

/// The deterministic work budget of a statement time limit (0: no limit).
pub fn step_budget(limit: Duration) -> u64 {
    if limit.is_zero() {
        return 0;
    }
    (limit.as_millis() as u64).max(1).saturating_mul(TICKS_PER_MS)
}

/// Shared switches of one connection's hooks.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Set while raftlite itself runs statements (transaction control).
    internal: Arc<AtomicBool>,
    /// Remaining progress ticks for the current statement (0 = unlimited).
    budget: Arc<AtomicU64>,
    /// Wall-clock deadline for reads, as nanoseconds since `epoch` (0 = none).
    deadline_ns: Arc<AtomicU64>,
    epoch: Option<Instant>,
    interrupted: Arc<AtomicBool>,
    /// The `rows_affected` clients see: SQLite's connection-level `changes()` as it stood after
    /// the last client statement, unaffected by raftlite's own statements.
    reported_changes: Arc<std::sync::atomic::AtomicI64>,
    /// Set by whoever asked for the statements running now when it no longer waits for them
    /// (the client went away): they are interrupted.
    cancel: Arc<std::sync::RwLock<Option<Arc<AtomicBool>>>>,
    /// Change data capture on this (the writer) connection, if `-cdc-config` is set.
    cdc: Option<Arc<Cdc>>,
}

impl Hooks {
    /// Capture row changes on this connection (its pre-update hook is already `cdc`'s).
    pub fn with_cdc(self, cdc: Arc<Cdc>) -> Hooks {
        Hooks { cdc: Some(cdc), ..self }
    }

    /// The change data capture of this connection, if any.
    pub fn cdc(&self) -> Option<&Arc<Cdc>> {
        self.cdc.as_ref()
    }
}

/// How to treat each statement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// `/db/execute`: write results, or rows for RETURNING.
    Write,
    /// `/db/query`: rows; anything that writes is refused.
    Query,
    /// `/db/request`: classified per statement with `sqlite3_stmt_readonly`.
    Request,
}

/// A view of one connection plus its hook state: what statements run through.
pub struct Db<'a> {
    pub conn: &'a Connection,
    hooks: &'a Hooks,
}

fn harden(conn: &Connection, hooks: &Hooks) -> rusqlite::Result<()> {
    use rusqlite::config::DbConfig;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    conn.set_limit(Limit::SQLITE_LIMIT_EXPR_DEPTH, 1000)?;
    conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, 32766)?;
    conn.set_limit(Limit::SQLITE_LIMIT_TRIGGER_DEPTH, 100)?;
    let internal = hooks.internal.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        if internal.load(Ordering::Relaxed) {
            return Authorization::Allow;
        }
        authorize(&ctx.action)
    }))?;
    let h = hooks.clone();
    conn.progress_handler(PROGRESS_OPS, Some(move || h.tick()))?;
    Ok(())
}

/// Pragmas a client may read but not set: they would change how the database is journaled,
/// synced or checkpointed, or its position stamp (`application_id`), which the storage
/// invariants depend on (docs/DESIGN.md §6).
const FIXED_PRAGMAS: &[&str] = &["journal_mode", "wal_autocheckpoint", "synchronous", "locking_mode", "application_id"];

/// The authorizer for client statements.
fn authorize(action: &AuthAction<'_>) -> Authorization {
    match action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        AuthAction::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            Authorization::Deny
        }
        // The applier owns the transaction; a client COMMIT or ROLLBACK would end it.
        AuthAction::Transaction { .. } => Authorization::Deny,
        AuthAction::Savepoint { savepoint_name, .. } if savepoint_name.starts_with("_raftlite") => Authorization::Deny,
        // Only the applier checkpoints: the main file must stay at its recorded position.
        AuthAction::Pragma { pragma_name, .. } if pragma_name.eq_ignore_ascii_case("wal_checkpoint") => {
            Authorization::Deny
        }
        AuthAction::Pragma { pragma_name, pragma_value: Some(_) }
            if FIXED_PRAGMAS.iter().any(|p| pragma_name.eq_ignore_ascii_case(p)) =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}

impl Hooks {
    /// Progress callback: true interrupts the running statement.
    fn tick(&self) -> bool {
        let left = self.budget.load(Ordering::Relaxed);
        if left == 1 {
            self.interrupted.store(true, Ordering::Relaxed);
            return true;
        }
        if left > 1 {
            self.budget.store(left - 1, Ordering::Relaxed);
        }
        if let Ok(c) = self.cancel.try_read() {
            if c.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                self.interrupted.store(true, Ordering::Relaxed);
                return true;
            }
        }
        let dl = self.deadline_ns.load(Ordering::Relaxed);
        if dl != 0 {
            if let Some(epoch) = self.epoch {
                if epoch.elapsed().as_nanos() as u64 > dl {
                    self.interrupted.store(true, Ordering::Relaxed);
                    return true;
                }
            }
        }
        false
    }
}

/// How the node sets up each connection it opens: foreign keys (`-fk`) and the SQLite extensions
/// it loads (`-extensions-path`, store::extensions).
#[derive(Clone, Debug, Default)]
pub struct ConnSettings {
    pub fk: bool,
    pub extensions: Arc<Extensions>,
}

impl ConnSettings {
    /// Load the node's extensions into `conn`.
    fn load_extensions(&self, conn: &Connection) -> rusqlite::Result<()> {
        self.extensions.load_into(conn).map_err(|e| {
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR), Some(e.to_string()))
        })
    }
}

/// Prepare a freshly opened writer connection (WAL mode, no implicit checkpoints, hardening).
pub fn setup_writer(conn: &Connection, settings: &ConnSettings) -> rusqlite::Result<Hooks> {
    let fk = settings.fk;
    settings.load_extensions(conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // The Raft log is the source of truth: a power loss may roll back the last commits of this
    // file, together with their stamp (store::position), and they are applied again from the
    // log. Checkpoints sync the WAL before and the main file after, which the recorded snapshot
    // relies on.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // When a checkpoint lets the WAL restart, cut the file back: its size then shows recent
    // writes, which is what `-raft-snap-wal-size` means to measure.
    conn.pragma_update(None, "journal_size_limit", 1 << 20)?;
    conn.pragma_update(None, "foreign_keys", if fk { "ON" } else { "OFF" })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    crate::store::position::no_implicit_checkpoints(conn)?;
    let hooks = Hooks { epoch: Some(Instant::now()), ..Hooks::default() };
    harden(conn, &hooks)?;
    register_seeded_functions(conn)?;
    Ok(hooks)
}

/// How long a connection waits for a lock another holds.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags for read-only connections.
pub fn reader_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI
}

/// Prepare a freshly opened read-only connection (`query_only`, hardening).
pub fn setup_reader(conn: &Connection, settings: &ConnSettings) -> rusqlite::Result<Hooks> {
    let fk = settings.fk;
    settings.load_extensions(conn)?;
    conn.pragma_update(None, "query_only", "ON")?;
    conn.pragma_update(None, "foreign_keys", if fk { "ON" } else { "OFF" })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    crate::store::position::no_implicit_checkpoints(conn)?;
    let hooks = Hooks { epoch: Some(Instant::now()), ..Hooks::default() };
    harden(conn, &hooks)?;
    Ok(hooks)
}

/// Open a writer connection synchronously (tests, tools).
pub fn open_writer(path: &Path, settings: &ConnSettings) -> rusqlite::Result<(Connection, Hooks)> {
    let conn = Connection::open(path)?;
    let hooks = setup_writer(&conn, settings)?;
    Ok((conn, hooks))
}

impl<'a> Db<'a> {
    pub fn new(conn: &'a Connection, hooks: &'a Hooks) -> Self {
        Db { conn, hooks }
    }

    /// Run raftlite's own SQL with the authorizer switched off.
    pub fn internal<T, E>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E> {
        self.hooks.internal.store(true, Ordering::Relaxed);
        let r = f(self.conn);
        self.hooks.internal.store(false, Ordering::Relaxed);
        r
    }

    /// `VACUUM` the database (outside any transaction). SQLite vacuums through an internal
    /// `ATTACH`, which client statements may not use, so it runs as raftlite's own statement with
    /// one attachment allowed for its duration.
    pub fn vacuum(&self) -> rusqlite::Result<()> {
        self.conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 1)?;
        let r = self.internal(|c| c.execute_batch("VACUUM"));
        self.conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        r
    }

    /// Interrupt what runs on this connection once `cancel` is set (until [`Db::uncancellable`]).
    pub fn cancellable(&self, cancel: Option<Arc<AtomicBool>>) {
        if let Ok(mut c) = self.hooks.cancel.write() {
            *c = cancel;
        }
    }

    pub fn uncancellable(&self) {
        self.cancellable(None);
    }

    /// Execute a request's statements on a connection that is not inside a transaction of ours
    /// (the read pool). `deadline` limits each statement by the clock.
    pub fn run(
        &self,
        stmts: &[Statement],
        opts: &ExecOptions,
        mode: Mode,
        deadline: Option<Duration>,
    ) -> Vec<StmtResult> {
        // Outside an enclosing transaction nothing can be rolled back behind our back.
        self.run_inner(stmts, opts, mode, deadline, &[], false).unwrap_or_default()
    }

    /// Execute a log entry's statements inside the applier's batch transaction. Writes are limited
    /// by `opts.step_budget` (work, not time), so every replica stops at the same instruction.
    ///
    /// SQLite may answer an interrupted write by rolling back the *whole* enclosing transaction.
    /// When that happens this returns `Err(i)` (statement `i` was interrupted): the caller re-runs
    /// the batch from its start with `i` listed in `timed_out`, which then reports
    /// `execute timeout` without running. Every other statement runs exactly once on the same
    /// state, whatever the batch boundaries, so replicas agree.
    pub fn run_in_batch(
        &self,
        stmts: &[Statement],
        opts: &ExecOptions,
        mode: Mode,
        timed_out: &[usize],
    ) -> Result<Vec<StmtResult>, usize> {
        self.run_inner(stmts, opts, mode, None, timed_out, true)
    }

    fn run_inner(
        &self,
        stmts: &[Statement],
        opts: &ExecOptions,
        mode: Mode,
        deadline: Option<Duration>,
        timed_out: &[usize],
        in_batch: bool,
    ) -> Result<Vec<StmtResult>, usize> {
        let mut results = Vec::with_capacity(stmts.len());
        let tx_mark = self.cdc_mark();
        if opts.transaction {
            if let Err(e) = self.internal(|c| c.execute_batch(&format!("SAVEPOINT {SAVEPOINT}"))) {
                results.push(StmtResult::Error { error: e.to_string(), time: 0.0 });
                return Ok(results);
            }
        }
        let timeout_text = if mode == Mode::Query { "query timeout" } else { "execute timeout" };
        let mut failed = false;
        for (i, st) in stmts.iter().enumerate() {
            if sql::is_blank(&st.sql) {
                continue;
            }
            if i > 0 {
                fail::fail_point!("applier::between_statements");
            }
            let start = Instant::now();
            let mut r = if timed_out.contains(&i) {
                err(timeout_text)
            } else {
                self.arm(opts.step_budget, deadline);
                let r = self.run_one(st, mode, opts.qualify_columns);
                let interrupted = self.hooks.interrupted.swap(false, Ordering::Relaxed);
                self.arm(0, None);
                if interrupted && in_batch && self.conn.is_autocommit() {
                    return Err(i);
                }
                match r {
                    StmtResult::Error { .. } if interrupted => err(timeout_text),
                    other => other,
                }
            };
            set_time(&mut r, start.elapsed().as_secs_f64());
            let is_err = matches!(r, StmtResult::Error { .. });
            results.push(r);
            if is_err && opts.transaction {
                failed = true;
                break;
            }
        }
        if opts.transaction {
            if failed {
                self.cdc_undo(tx_mark);
            }
            let end = if failed {
                format!("ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}")
            } else {
                format!("RELEASE {SAVEPOINT}")
            };
            if let Err(e) = self.internal(|c| c.execute_batch(&end)) {
                results.push(StmtResult::Error { error: e.to_string(), time: 0.0 });
            }
        }
        Ok(results)
    }

    /// The client-visible `changes()` value (saved and restored around a re-run batch).
    pub fn reported_changes(&self) -> i64 {
        self.hooks.reported_changes.load(Ordering::Relaxed)
    }

    pub fn set_reported_changes(&self, v: i64) {
        self.hooks.reported_changes.store(v, Ordering::Relaxed)
    }

    /// True if every statement is read-only (a statement that fails to prepare counts as a read,
    /// so its error comes back from the read path, as rqlite does).
    pub fn all_readonly(&self, stmts: &[Statement]) -> bool {
        stmts.iter().all(|st| {
            let mut batch = rusqlite::Batch::new(self.conn, &st.sql);
            loop {
                match batch.next() {
                    Ok(Some(s)) => {
                        if !s.readonly() {
                            return false;
                        }
                    }
                    Ok(None) | Err(_) => return true,
                }
            }
        })
    }

    /// A read connection must never be left inside a transaction: it would pin an old snapshot.
    pub fn end_read(&self) {
        if !self.conn.is_autocommit() {
            let _ = self.internal(|c| c.execute_batch("ROLLBACK"));
        }
    }

    fn arm(&self, budget: u64, deadline: Option<Duration>) {
        self.hooks.budget.store(if budget == 0 { 0 } else { budget + 1 }, Ordering::Relaxed);
        let dl = match (deadline, self.hooks.epoch) {
            (Some(d), Some(e)) if !d.is_zero() => (e.elapsed() + d).as_nanos() as u64,
            _ => 0,
        };
        self.hooks.deadline_ns.store(dl, Ordering::Relaxed);
    }

    fn run_one(&self, st: &Statement, mode: Mode, qualify: bool) -> StmtResult {
        if let Some(why) = sql::forbidden(&st.sql) {
            return err(why);
        }
        match self.run_batch(st, mode, qualify) {
            Ok(r) => r,
            Err(e) => err(&sqlite_message(&e)),
        }
    }

    /// A statement string may hold several `;`-separated statements (text/plain bodies): run them
    /// all; the result reflects the last one.
    fn run_batch(&self, st: &Statement, mode: Mode, qualify: bool) -> rusqlite::Result<StmtResult> {
        let mut batch = rusqlite::Batch::new(self.conn, &st.sql);
        let mut last = StmtResult::Write { last_insert_id: 0, rows_affected: 0, time: 0.0 };
        while let Some(mut stmt) = batch.next()? {
            let mark = self.cdc_mark();
            match self.step(&mut stmt, st, mode, qualify) {
                Ok(Ok(r)) => {
                    last = r;
                    self.cdc_statement_done()?;
                }
                Ok(Err(refused)) => return Ok(refused),
                Err(e) => {
                    // SQLite undid the statement's row changes unless its conflict clause was
                    // FAIL, which keeps those made before the error: then `changes()` counts them
                    // (it is 0 after a statement rollback).
                    if self.conn.changes() == 0 {
                        self.cdc_undo(mark);
                    } else {
                        let _ = self.cdc_statement_done();
                    }
                    return Err(e);
                }
            }
        }
        Ok(last)
    }

    /// Run one prepared statement to its end: its result, or `Err` with the result that refuses
    /// it (a write through `/db/query`).
    fn step(
        &self,
        stmt: &mut rusqlite::Statement<'_>,
        st: &Statement,
        mode: Mode,
        qualify: bool,
    ) -> rusqlite::Result<Result<StmtResult, StmtResult>> {
        bind(stmt, &st.params)?;
        let as_rows = match mode {
            Mode::Write => st.returning,
            Mode::Query => {
                if !stmt.readonly() {
                    return Ok(Err(err("attempt to change database via query operation")));
                }
                true
            }
            Mode::Request => stmt.readonly() || st.returning,
        };
        Ok(Ok(if as_rows {
            StmtResult::Rows(collect_rows(stmt, qualify)?)
        } else {
            let (changes0, total0) = (self.conn.changes(), self.conn.total_changes());
            let mut rows = stmt.raw_query();
            while rows.next()?.is_some() {}
            drop(rows);
            // DDL leaves changes() as it was; DML sets it (to 0 too). raftlite's own
            // statements in between must not show, so the client-visible value is carried in
            // the hooks.
            let (changes, total) = (self.conn.changes(), self.conn.total_changes());
            if total != total0 || changes != changes0 {
                self.hooks.reported_changes.store(changes as i64, Ordering::Relaxed);
            }
            StmtResult::Write {
                last_insert_id: self.conn.last_insert_rowid(),
                rows_affected: self.hooks.reported_changes.load(Ordering::Relaxed),
                time: 0.0,
            }
        }))
    }

    /// Where change data capture stands (0 without it).
    fn cdc_mark(&self) -> usize {
        self.hooks.cdc.as_ref().map_or(0, |c| c.capture.mark())
    }

    /// A statement finished: name the columns of what it captured.
    fn cdc_statement_done(&self) -> rusqlite::Result<()> {
        match &self.hooks.cdc {
            Some(cdc) => self.internal(|c| cdc.capture.statement_done(c)),
            None => Ok(()),
        }
    }

    /// SQLite undid the changes made since `mark`.
    fn cdc_undo(&self, mark: usize) {
        if let Some(c) = &self.hooks.cdc {
            c.capture.undo_to(mark);
        }
    }

    /// The statements of log entry `index`, proposed at `ts_ns`, run next.
    pub fn cdc_entry(&self, index: u64, ts_ns: i64) {
        if let Some(c) = &self.hooks.cdc {
            c.capture.begin_entry(index, ts_ns);
        }
    }

    /// Restore the seeded `random()` state for one log entry (see `register_seeded_functions`).
    pub fn seed(&self, seed: u64) {
        SEED.with(|s| s.set(seed));
    }
}

fn err(msg: &str) -> StmtResult {
    StmtResult::Error { error: msg.to_string(), time: 0.0 }
}

fn set_time(r: &mut StmtResult, t: f64) {
    match r {
        StmtResult::Write { time, .. } | StmtResult::Error { time, .. } => *time = t,
        StmtResult::Rows(rows) => rows.time = t,
    }
}

/// SQLite's own message for an error, without rusqlite's decoration.
pub fn sqlite_message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(msg)) => {
            if f.code == rusqlite::ErrorCode::OperationInterrupted {
                "interrupted".to_string()
            } else {
                msg.clone()
            }
        }
        rusqlite::Error::SqliteFailure(f, None) => f.to_string(),
        // Syntax errors: SQLite's message, without rusqlite's "in <sql> at offset N".
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Integer(i) => V::Integer(*i),
        Value::Real(f) => V::Real(*f),
        Value::Bool(b) => V::Integer(*b as i64),
        Value::Text(s) => V::Text(s.clone()),
        Value::Blob(b) => V::Blob(b.clone()),
    }
}

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[Param]) -> rusqlite::Result<()> {
    if params.is_empty() {
        return Ok(());
    }
    let count = stmt.parameter_count();
    let mut pos = 0usize;
    for p in params {
        match p {
            Param::Positional(v) => {
                pos += 1;
                if pos > count {
                    return Err(rusqlite::Error::InvalidParameterCount(pos, count));
                }
                stmt.raw_bind_parameter(pos, to_sql(v))?;
            }
            Param::Named(name, v) => {
                let idx = if name.starts_with([':', '@', '$']) {
                    stmt.parameter_index(name)?
                } else {
                    let mut found = None;
                    for prefix in [":", "@", "$"] {
                        if let Some(i) = stmt.parameter_index(&format!("{prefix}{name}"))? {
                            found = Some(i);
                            break;
                        }
                    }
                    found
                };
                match idx {
                    Some(i) => stmt.raw_bind_parameter(i, to_sql(v))?,
                    None => return Err(rusqlite::Error::InvalidParameterName(name.clone())),
                }
            }
        }
    }
    Ok(())
}

fn collect_rows(stmt: &mut rusqlite::Statement<'_>, qualify: bool) -> rusqlite::Result<Rows> {
    let columns: Vec<String> = if qualify {
        stmt.columns_with_metadata()
            .iter()
            .map(|c| match c.table_name() {
                Some(t) => format!("{t}.{}", c.name()),
                None => c.name().to_string(),
            })
            .collect()
    } else {
        stmt.column_names().into_iter().map(str::to_string).collect()
    };
    let declared: Vec<Option<String>> =
        stmt.columns().iter().map(|c| c.decl_type().map(|t| t.to_ascii_lowercase())).collect();
    let n = columns.len();
    let mut values: Vec<Vec<Value>> = Vec::new();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Integer(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        values.push(out);
    }
    let types = (0..n)
        .map(|i| match &declared[i] {
            Some(t) => t.clone(),
            None => match values.first().map(|r| &r[i]) {
                Some(Value::Integer(_)) | Some(Value::Bool(_)) => "integer".into(),
                Some(Value::Real(_)) => "real".into(),
                Some(Value::Text(_)) => "text".into(),
                Some(Value::Blob(_)) => "blob".into(),
                Some(Value::Null) | None => String::new(),
            },
        })
        .collect();
    Ok(Rows { columns, types, values, time: 0.0 })
}

thread_local! {
    /// The PRNG state of the writer connection's thread. The applier seeds it from the log entry,
    /// so `random()` calls that were not rewritten (e.g. `ORDER BY random()`) agree on every replica.
    static SEED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// splitmix64: tiny, fixed forever, so replicas running different builds agree.
fn next_random() -> u64 {
    SEED.with(|s| {
        let mut z = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn register_seeded_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function("random", 0, FunctionFlags::SQLITE_UTF8, |_| Ok(next_random() as i64))?;
    conn.create_scalar_function("randomblob", 1, FunctionFlags::SQLITE_UTF8, |ctx| {
        let n = ctx.get::<i64>(0).unwrap_or(1).clamp(1, 1 << 24) as usize;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.extend_from_slice(&next_random().to_le_bytes());
        }
        out.truncate(n);
        Ok(out)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, Connection, Hooks) {
        let dir = tempfile::tempdir().unwrap();
        let (c, h) = open_writer(&dir.path().join("db.sqlite"), &ConnSettings::default()).unwrap();
        (dir, c, h)
    }

    fn s(sql: &str) -> Statement {
        Statement::new(sql)
    }

    #[test]
    fn write_and_query() {
        let (_d, c, h) = writer();
        let db = Db::new(&c, &h);
        let o = ExecOptions::default();
        let r = db.run(
            &[s("CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)"), {
                let mut st = s("INSERT INTO foo(name) VALUES(?)");
                st.params.push(Param::Positional(Value::Text("fiona".into())));
                st
            }],
            &o,
            Mode::Write,
            None,
        );
        assert!(matches!(r[0], StmtResult::Write { last_insert_id: 0, rows_affected: 0, .. }));
        assert!(matches!(r[1], StmtResult::Write { last_insert_id: 1, rows_affected: 1, .. }));
        let q = db.run(&[s("SELECT * FROM foo")], &o, Mode::Query, None);
        match &q[0] {
            StmtResult::Rows(rows) => {
                assert_eq!(rows.columns, vec!["id", "name"]);
                assert_eq!(rows.types, vec!["integer", "text"]);
                assert_eq!(rows.values, vec![vec![Value::Integer(1), Value::Text("fiona".into())]]);
            }
            other => panic!("{other:?}"),
        }
        let q = db.run(&[s("INSERT INTO foo(name) VALUES('x')")], &o, Mode::Query, None);
        assert!(
            matches!(&q[0], StmtResult::Error { error, .. } if error == "attempt to change database via query operation")
        );
    }

    #[test]
    fn transaction_rolls_back_on_first_error() {
        let (_d, c, h) = writer();
        let db = Db::new(&c, &h);
        let tx = ExecOptions { transaction: true, ..Default::default() };
        db.run(&[s("CREATE TABLE t (x INTEGER NOT NULL)")], &ExecOptions::default(), Mode::Write, None);
        let r = db.run(
            &[s("INSERT INTO t VALUES(1)"), s("INSERT INTO t VALUES(NULL)"), s("INSERT INTO t VALUES(3)")],
            &tx,
            Mode::Write,
            None,
        );
        assert_eq!(r.len(), 2);
        assert!(matches!(&r[1], StmtResult::Error { error, .. } if error.contains("NOT NULL")));
        let q = db.run(&[s("SELECT COUNT(*) FROM t")], &ExecOptions::default(), Mode::Query, None);
        assert!(matches!(&q[0], StmtResult::Rows(rows) if rows.values[0][0] == Value::Integer(0)));
    }

    #[test]
    fn guarded_statements() {
        let (_d, c, h) = writer();
        let db = Db::new(&c, &h);
        let o = ExecOptions::default();
        for bad in ["ATTACH DATABASE 'x.db' AS x", "VACUUM INTO 'y.db'", "SELECT load_extension('z')", "COMMIT"] {
            let r = db.run(&[s(bad)], &o, Mode::Write, None);
            assert!(matches!(&r[0], StmtResult::Error { .. }), "{bad}: {r:?}");
        }
        for fixed in [
            "PRAGMA wal_checkpoint(TRUNCATE)",
            "PRAGMA journal_mode=DELETE",
            "PRAGMA synchronous=OFF",
            "PRAGMA application_id=7",
        ] {
            let r = db.run(&[s(fixed)], &o, Mode::Write, None);
            assert!(matches!(&r[0], StmtResult::Error { error, .. } if error.contains("not authorized")), "{fixed}");
        }
        // Reading them is fine.
        let r = db.run(&[s("PRAGMA synchronous")], &o, Mode::Query, None);
        assert!(matches!(&r[0], StmtResult::Rows(_)), "{r:?}");
    }

    #[test]
    fn step_budget_stops_runaway_writes_deterministically() {
        let (_d, c, h) = writer();
        let db = Db::new(&c, &h);
        db.run(&[s("CREATE TABLE t (x)")], &ExecOptions::default(), Mode::Write, None);
        let o = ExecOptions { step_budget: 50, ..Default::default() };
        let r = db.run(
            &[s("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT x FROM c")],
            &o,
            Mode::Write,
            None,
        );
        assert!(matches!(&r[0], StmtResult::Error { error, .. } if error == "execute timeout"), "{r:?}");
    }

    #[test]
    fn seeded_random_is_deterministic() {
        let (_d, c, h) = writer();
        let a = Db::new(&c, &h);
        a.seed(99);
        let r1 = a.run(&[s("SELECT random()")], &ExecOptions::default(), Mode::Request, None);
        a.seed(99);
        let r2 = a.run(&[s("SELECT random()")], &ExecOptions::default(), Mode::Request, None);
        assert_eq!(r1[0], {
            let mut x = r2[0].clone();
            set_time(
                &mut x,
                match &r1[0] {
                    StmtResult::Rows(r) => r.time,
                    _ => 0.0,
                },
            );
            x
        });
    }
}
