//! Response encoding with the bytes rqlite clients compare against (docs/API.md §5, §5a): a small JSON
//! writer that matches Go's `encoding/json` (field order, float format, HTML escaping, 4-space
//! `MarshalIndent`), and the result shapes of execute, query and request.

use std::collections::BTreeMap;

use base64::Engine;

use crate::store::command::{Rows, StmtResult, Value};

/// A JSON value with ordered object fields.
#[derive(Clone, Debug, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn obj() -> J {
        J::Obj(Vec::new())
    }
    /// Append a field (objects only).
    pub fn put(&mut self, k: &str, v: J) {
        if let J::Obj(f) = self {
            f.push((k.to_string(), v));
        }
    }
    pub fn s(v: impl Into<String>) -> J {
        J::Str(v.into())
    }

    /// Encode compactly, or indented with 4 spaces like Go's `json.MarshalIndent(v, "", "    ")`.
    pub fn encode(&self, pretty: bool) -> String {
        let mut out = String::new();
        write(self, &mut out, pretty, 0);
        out
    }

    /// Convert from serde_json (for `/status`-style documents built with `json!`).
    pub fn from_serde(v: &serde_json::Value) -> J {
        match v {
            serde_json::Value::Null => J::Null,
            serde_json::Value::Bool(b) => J::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => J::Int(i),
                None => J::Float(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => J::Str(s.clone()),
            serde_json::Value::Array(a) => J::Arr(a.iter().map(J::from_serde).collect()),
            serde_json::Value::Object(o) => J::Obj(o.iter().map(|(k, v)| (k.clone(), J::from_serde(v))).collect()),
        }
    }
}

fn indent(out: &mut String, level: usize) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("    ");
    }
}

fn write(j: &J, out: &mut String, pretty: bool, level: usize) {
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Int(i) => out.push_str(&i.to_string()),
        J::Float(f) => out.push_str(&go_float(*f)),
        J::Str(s) => write_str(s, out),
        J::Arr(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (n, it) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                if pretty {
                    indent(out, level + 1);
                }
                write(it, out, pretty, level + 1);
            }
            if pretty {
                indent(out, level);
            }
            out.push(']');
        }
        J::Obj(fields) => {
            if fields.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (n, (k, v)) in fields.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                if pretty {
                    indent(out, level + 1);
                }
                write_str(k, out);
                out.push(':');
                if pretty {
                    out.push(' ');
                }
                write(v, out, pretty, level + 1);
            }
            if pretty {
                indent(out, level);
            }
            out.push('}');
        }
    }
}

/// Go's `encoding/json` string escaping, HTML-safe.
fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's float64 JSON format: shortest representation, exponent form outside [1e-6, 1e21).
pub fn go_float(f: f64) -> String {
    if !f.is_finite() {
        return "null".to_string();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        // Rust: 1e21, 1e-7; Go: 1e+21, 1e-07 cleaned to 1e-7.
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

/// How to shape results (query parameters of docs/API.md §3).
#[derive(Clone, Copy, Debug, Default)]
pub struct Shape {
    pub associative: bool,
    pub blob_array: bool,
    pub timings: bool,
}

fn text_like(t: &str) -> bool {
    t.is_empty()
        || t == "text"
        || t == "json"
        || t.starts_with("varchar")
        || t.starts_with("nchar")
        || t.starts_with("nvarchar")
        || t.starts_with("clob")
        || t.starts_with("character")
        || t.starts_with("varying character")
        || t.starts_with("native character")
}

/// One value under a column's type, following the Go SQLite driver's conversions.
fn value(v: &Value, ty: &str, shape: Shape) -> J {
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Integer(i) => match ty {
            "timestamp" | "datetime" | "date" => J::Str(time_from_unix(*i)),
            "boolean" => J::Bool(*i > 0),
            _ => J::Int(*i),
        },
        Value::Real(f) => J::Float(*f),
        Value::Text(s) => match ty {
            "timestamp" | "datetime" | "date" => J::Str(time_from_text(s)),
            _ => J::Str(s.clone()),
        },
        Value::Blob(b) => {
            if text_like(ty) {
                J::Str(String::from_utf8_lossy(b).into_owned())
            } else if shape.blob_array {
                J::Arr(b.iter().map(|x| J::Int(*x as i64)).collect())
            } else {
                J::Str(base64::engine::general_purpose::STANDARD.encode(b))
            }
        }
    }
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn time_from_unix(v: i64) -> String {
    let t = if !(-1_000_000_000_000..=1_000_000_000_000).contains(&v) {
        chrono::DateTime::from_timestamp_millis(v)
    } else {
        chrono::DateTime::from_timestamp(v, 0)
    };
    t.map(|t| rfc3339(&t.fixed_offset())).unwrap_or_else(|| ZERO_TIME.to_string())
}

fn time_from_text(s: &str) -> String {
    use chrono::{NaiveDate, NaiveDateTime};
    let s = s.strip_suffix('Z').unwrap_or(s);
    for f in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%:z"] {
        if let Ok(t) = chrono::DateTime::parse_from_str(s, f) {
            return rfc3339(&t);
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return rfc3339(&t.and_utc().fixed_offset());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return rfc3339(&t.and_utc().fixed_offset());
        }
    }
    ZERO_TIME.to_string()
}

/// RFC 3339 with trailing zero fractions trimmed and `Z` for UTC, as Go's `time.RFC3339Nano`.
fn rfc3339(t: &chrono::DateTime<chrono::FixedOffset>) -> String {
    use chrono::Timelike;
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    if t.offset().local_minus_utc() == 0 {
        s.push('Z');
    } else {
        s.push_str(&t.format("%:z").to_string());
    }
    s
}

fn rows_json(r: &Rows, shape: Shape) -> J {
    let mut o = J::obj();
    if shape.associative {
        let types: BTreeMap<&str, &str> =
            r.columns.iter().map(String::as_str).zip(r.types.iter().map(String::as_str)).collect();
        o.put("types", J::Obj(types.iter().map(|(k, v)| (k.to_string(), J::s(*v))).collect()));
        let rows = r
            .values
            .iter()
            .map(|row| {
                let m: BTreeMap<&str, J> = r
                    .columns
                    .iter()
                    .zip(row.iter().zip(r.types.iter()))
                    .map(|(c, (v, t))| (c.as_str(), value(v, t, shape)))
                    .collect();
                J::Obj(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            })
            .collect();
        o.put("rows", J::Arr(rows));
    } else {
        o.put("columns", J::Arr(r.columns.iter().map(|c| J::s(c.clone())).collect()));
        o.put("types", J::Arr(r.types.iter().map(|t| J::s(t.clone())).collect()));
        if !r.values.is_empty() {
            let vals = r
                .values
                .iter()
                .map(|row| J::Arr(row.iter().zip(r.types.iter()).map(|(v, t)| value(v, t, shape)).collect()))
                .collect();
            o.put("values", J::Arr(vals));
        }
    }
    if shape.timings {
        o.put("time", J::Float(r.time));
    }
    o
}

/// One statement's result object.
pub fn result_json(r: &StmtResult, shape: Shape) -> J {
    match r {
        StmtResult::Rows(rows) => rows_json(rows, shape),
        StmtResult::Write { last_insert_id, rows_affected, time } => {
            let mut o = J::obj();
            if *last_insert_id != 0 {
                o.put("last_insert_id", J::Int(*last_insert_id));
            }
            if *rows_affected != 0 {
                o.put("rows_affected", J::Int(*rows_affected));
            }
            if shape.timings {
                o.put("time", J::Float(*time));
            }
            if shape.associative {
                o.put("rows", J::Null);
            }
            o
        }
        StmtResult::Error { error, time } => {
            let mut o = J::obj();
            o.put("error", J::s(error.clone()));
            if shape.timings && !shape.associative {
                o.put("time", J::Float(*time));
            }
            o
        }
    }
}

/// The envelope `{"results":[…],"error":…,"time":…,"raft_index":…}`.
pub fn envelope(
    results: &[StmtResult],
    error: Option<&str>,
    time: Option<f64>,
    raft_index: Option<u64>,
    shape: Shape,
) -> J {
    let mut o = J::obj();
    o.put("results", J::Arr(results.iter().map(|r| result_json(r, shape)).collect()));
    if let Some(e) = error {
        o.put("error", J::s(e));
    }
    if let Some(t) = time {
        o.put("time", J::Float(t));
    }
    if let Some(i) = raft_index.filter(|i| *i != 0) {
        o.put("raft_index", J::Int(i as i64));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Rows {
        Rows {
            columns: vec!["id".into(), "name".into()],
            types: vec!["integer".into(), "text".into()],
            values: vec![
                vec![Value::Integer(1), Value::Text("fiona".into())],
                vec![Value::Integer(2), Value::Text("declan".into())],
            ],
            time: 0.0,
        }
    }

    #[test]
    fn spec_examples_byte_exact() {
        let r = vec![StmtResult::Rows(rows())];
        assert_eq!(
            envelope(&r, None, None, None, Shape::default()).encode(false),
            r#"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[1,"fiona"],[2,"declan"]]}]}"#
        );
        let a = Shape { associative: true, ..Default::default() };
        assert_eq!(
            envelope(&r, None, None, None, a).encode(false),
            r#"{"results":[{"types":{"id":"integer","name":"text"},"rows":[{"id":1,"name":"fiona"},{"id":2,"name":"declan"}]}]}"#
        );
        let w = vec![StmtResult::Write { last_insert_id: 0, rows_affected: 0, time: 0.0 }];
        assert_eq!(envelope(&w, None, None, None, Shape::default()).encode(false), r#"{"results":[{}]}"#);
        let w = vec![StmtResult::Write { last_insert_id: 1, rows_affected: 1, time: 0.0 }];
        assert_eq!(
            envelope(&w, None, None, None, a).encode(false),
            r#"{"results":[{"last_insert_id":1,"rows_affected":1,"rows":null}]}"#
        );
    }

    #[test]
    fn pretty_is_go_indent() {
        let w = vec![StmtResult::Write { last_insert_id: 1, rows_affected: 1, time: 0.0 }];
        assert_eq!(
            envelope(&w, None, None, None, Shape::default()).encode(true),
            "{\n    \"results\": [\n        {\n            \"last_insert_id\": 1,\n            \"rows_affected\": 1\n        }\n    ]\n}"
        );
        assert_eq!(envelope(&[], None, None, None, Shape::default()).encode(true), "{\n    \"results\": []\n}");
    }

    #[test]
    fn go_floats_and_escapes() {
        assert_eq!(go_float(3.0), "3");
        assert_eq!(go_float(3.5), "3.5");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1e-7), "1e-7");
        assert_eq!(go_float(123456789.125), "123456789.125");
        assert_eq!(J::s("<a&b>\n\u{1}é").encode(false), r#""\u003ca\u0026b\u003e\n\u0001é""#);
    }

    #[test]
    fn driver_conversions() {
        let s = Shape::default();
        assert_eq!(value(&Value::Text("2004-02-14 07:15:00.5".into()), "datetime", s), J::s("2004-02-14T07:15:00.5Z"));
        assert_eq!(value(&Value::Text("garbage".into()), "date", s), J::s(ZERO_TIME));
        assert_eq!(value(&Value::Integer(0), "timestamp", s), J::s("1970-01-01T00:00:00Z"));
        assert_eq!(value(&Value::Integer(1_700_000_000_123), "timestamp", s), J::s("2023-11-14T22:13:20.123Z"));
        assert_eq!(value(&Value::Integer(1), "boolean", s), J::Bool(true));
        assert_eq!(value(&Value::Blob(vec![1, 2]), "blob", s), J::s("AQI="));
        assert_eq!(
            value(&Value::Blob(vec![1, 2]), "blob", Shape { blob_array: true, ..s }),
            J::Arr(vec![J::Int(1), J::Int(2)])
        );
        assert_eq!(value(&Value::Blob(b"hi".to_vec()), "text", s), J::s("hi"));
        assert_eq!(value(&Value::Integer(i64::MAX), "integer", s), J::Int(i64::MAX));
    }
}
