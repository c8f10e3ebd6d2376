//! SQLite's pre-update hook (`sqlite3_preupdate_hook`), called directly through rusqlite's FFI
//! bindings. rusqlite wraps it only behind a feature that regenerates its bindings with bindgen,
//! which needs libclang to build; the bundled SQLite is compiled with the hook instead
//! (`.cargo/config.toml`) and the few calls it takes are here, in one place.
//!
//! SQLite calls the hook on the writer's thread before each row of a `main`, `temp` or attached
//! table changes; it may read the old and new column values but must not run SQL.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Arc;

use rusqlite::ffi;
use rusqlite::Connection;

use crate::cdc::capture::Capture;
use crate::cdc::event::{Event, Op};
use crate::store::command::Value;

/// Call `capture.record` for every row change on `conn`.
///
/// The hook's context is a strong reference to `capture` that is never released (one per
/// connection opened, a reference count and no memory), so the pointer SQLite holds stays valid
/// for as long as the connection can call it, whatever is dropped first.
pub fn install(conn: &Connection, capture: &Arc<Capture>) {
    let ctx = Arc::into_raw(capture.clone()) as *mut c_void;
    // SAFETY: `conn.handle()` is this open connection, used on its own thread; `on_preupdate`
    // matches the signature SQLite expects and `ctx` points to a `Capture` that is never freed.
    unsafe {
        ffi::sqlite3_preupdate_hook(conn.handle(), Some(on_preupdate), ctx);
    }
}

unsafe extern "C" fn on_preupdate(
    ctx: *mut c_void,
    db: *mut ffi::sqlite3,
    op: c_int,
    z_db: *const c_char,
    z_name: *const c_char,
    key1: ffi::sqlite3_int64,
    key2: ffi::sqlite3_int64,
) {
    // Never unwind into SQLite's C frames.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `ctx` is the `Capture` given to `install`, alive for ever; SQLite passes
        // NUL-terminated names valid for the duration of the call.
        let (capture, schema, table) = unsafe {
            (
                &*(ctx as *const Capture),
                CStr::from_ptr(z_db).to_string_lossy(),
                CStr::from_ptr(z_name).to_string_lossy(),
            )
        };
        if !capture.wanted(&schema, &table) {
            return;
        }
        let values = capture.wants_values();
        // SAFETY: inside the pre-update callback of `db`, as SQLite requires for these calls.
        let (op, old_row_id, new_row_id, before, after) = unsafe {
            match op {
                ffi::SQLITE_INSERT => (Op::Insert, None, Some(key2), None, values.then(|| row(db, false))),
                ffi::SQLITE_DELETE => (Op::Delete, Some(key1), None, values.then(|| row(db, true)), None),
                ffi::SQLITE_UPDATE => {
                    (Op::Update, Some(key1), Some(key2), values.then(|| row(db, true)), values.then(|| row(db, false)))
                }
                _ => return,
            }
        };
        let table = table.into_owned();
        capture.record(Event { op, table, old_row_id, new_row_id, before, after, columns: None });
    });
}

/// The old (`old`) or new column values of the row changing now.
///
/// # Safety
/// Only inside the pre-update callback of `db`, for an operation that has such values.
unsafe fn row(db: *mut ffi::sqlite3, old: bool) -> Vec<Value> {
    let n = ffi::sqlite3_preupdate_count(db);
    (0..n)
        .map(|i| {
            let mut v: *mut ffi::sqlite3_value = std::ptr::null_mut();
            let rc =
                if old { ffi::sqlite3_preupdate_old(db, i, &mut v) } else { ffi::sqlite3_preupdate_new(db, i, &mut v) };
            if rc != ffi::SQLITE_OK || v.is_null() {
                return Value::Null;
            }
            value(v)
        })
        .collect()
}

/// Copy an `sqlite3_value` out.
///
/// # Safety
/// `v` must be a valid value for the duration of the call.
unsafe fn value(v: *mut ffi::sqlite3_value) -> Value {
    match ffi::sqlite3_value_type(v) {
        ffi::SQLITE_INTEGER => Value::Integer(ffi::sqlite3_value_int64(v)),
        ffi::SQLITE_FLOAT => Value::Real(ffi::sqlite3_value_double(v)),
        ffi::SQLITE_TEXT => {
            let p = ffi::sqlite3_value_text(v);
            let len = ffi::sqlite3_value_bytes(v).max(0) as usize;
            if p.is_null() {
                return Value::Text(String::new());
            }
            Value::Text(String::from_utf8_lossy(std::slice::from_raw_parts(p, len)).into_owned())
        }
        ffi::SQLITE_BLOB => {
            let p = ffi::sqlite3_value_blob(v) as *const u8;
            let len = ffi::sqlite3_value_bytes(v).max(0) as usize;
            if p.is_null() || len == 0 {
                return Value::Blob(Vec::new());
            }
            Value::Blob(std::slice::from_raw_parts(p, len).to_vec())
        }
        _ => Value::Null,
    }
}
