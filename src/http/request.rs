//! Parsing of what a client sends: the query-string parameters of docs/API.md §3 (with their 400 errors)
//! and the statement bodies of docs/API.md §4 (JSON arrays, text/plain, `q=`).

use std::collections::HashMap;
use std::time::Duration;

use crate::config::parse_go_duration;
use crate::store::command::{Param, Statement, Value};

/// A request-level client error: answered 400 with this text.
#[derive(Debug, PartialEq)]
pub struct BadRequest(pub String);

fn bad(s: impl Into<String>) -> BadRequest {
    BadRequest(s.into())
}

/// Read consistency level (docs/API.md §9).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Level {
    None,
    Weak,
    Linearizable,
    Strong,
    Auto,
}

impl Level {
    pub fn as_str(&self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Weak => "weak",
            Level::Linearizable => "linearizable",
            Level::Strong => "strong",
            Level::Auto => "auto",
        }
    }
}

/// The parsed query string.
#[derive(Clone, Debug)]
pub struct Params {
    raw: HashMap<String, String>,
    pub pretty: bool,
    pub timings: bool,
    pub transaction: bool,
    pub associative: bool,
    pub blob_array: bool,
    pub qualify_columns: bool,
    pub raft_index: bool,
    pub noparse: bool,
    pub norwrandom: bool,
    pub norwtime: bool,
    pub redirect: bool,
    pub noleader: bool,
    pub freshness_strict: bool,
    pub level: Level,
    pub freshness: Option<Duration>,
    pub db_timeout: Option<Duration>,
    pub timeout: Duration,
    pub linearizable_timeout: Duration,
    pub q: Option<String>,
}

fn percent_decode(s: &str) -> Result<String, BadRequest> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => return Err(bad("invalid URL escape in query string")),
                }
            }
            b'%' => return Err(bad("invalid URL escape in query string")),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad("query string is not valid UTF-8"))
}

impl Params {
    pub fn parse(query: &str) -> Result<Params, BadRequest> {
        let mut raw: HashMap<String, String> = HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k)?;
            let v = percent_decode(v)?;
            raw.entry(k).or_insert(v); // only the first value of a repeated key counts
        }
        let has = |k: &str| raw.contains_key(k);
        let dur = |k: &str| -> Result<Option<Duration>, BadRequest> {
            match raw.get(k) {
                None => Ok(None),
                Some(v) => parse_go_duration(v).map(Some).map_err(|_| bad(format!("{k} is not a valid duration"))),
            }
        };
        for k in ["retries", "trailing_logs"] {
            if let Some(v) = raw.get(k) {
                if v.parse::<i64>().is_err() {
                    return Err(bad(format!("{k} is not a valid integer")));
                }
            }
        }
        let freshness = dur("freshness")?;
        let db_timeout = dur("db_timeout")?;
        let timeout = dur("timeout")?.unwrap_or(Duration::from_secs(30));
        let linearizable_timeout = dur("linearizable_timeout")?.unwrap_or(Duration::from_secs(10));
        if has("freshness_strict") && freshness.is_none() {
            return Err(bad("freshness_strict requires freshness"));
        }
        let q = raw.get("q").cloned();
        if matches!(q.as_deref(), Some("")) {
            return Err(bad("query parameter not set"));
        }
        let level = match raw.get("level").map(|l| l.to_ascii_lowercase()).as_deref() {
            Some("none") => Level::None,
            Some("linearizable") => Level::Linearizable,
            Some("strong") => Level::Strong,
            Some("auto") => Level::Auto,
            _ => Level::Weak,
        };
        Ok(Params {
            pretty: has("pretty"),
            timings: has("timings"),
            transaction: has("transaction"),
            associative: has("associative"),
            blob_array: has("blob_array"),
            qualify_columns: has("qualify_columns"),
            raft_index: has("raft_index"),
            noparse: has("noparse"),
            norwrandom: has("norwrandom"),
            norwtime: has("norwtime"),
            redirect: has("redirect"),
            noleader: has("noleader"),
            freshness_strict: has("freshness_strict"),
            level,
            freshness,
            db_timeout,
            timeout,
            linearizable_timeout,
            q,
            raw,
        })
    }

    pub fn has(&self, k: &str) -> bool {
        self.raw.contains_key(k)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.raw.get(k).map(String::as_str)
    }
}

/// Largest number of statements in one request (docs/DESIGN.md §5, invariant 6).
pub const MAX_STATEMENTS: usize = 100_000;

/// Parse a JSON body: an array of SQL strings or `[sql, params...]` arrays.
pub fn parse_json_statements(body: &[u8]) -> Result<Vec<Statement>, BadRequest> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad("invalid JSON body"))?;
    let serde_json::Value::Array(items) = v else {
        return Err(bad("invalid request"));
    };
    if items.len() > MAX_STATEMENTS {
        return Err(bad(format!("too many statements: at most {MAX_STATEMENTS} per request")));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            serde_json::Value::String(sql) => out.push(Statement::new(sql)),
            serde_json::Value::Array(parts) => {
                let mut it = parts.into_iter();
                let Some(serde_json::Value::String(sql)) = it.next() else {
                    return Err(bad("invalid request"));
                };
                let mut st = Statement::new(sql);
                for p in it {
                    match p {
                        serde_json::Value::Object(map) => {
                            for (k, v) in map {
                                st.params.push(Param::Named(k, param_value(v)?));
                            }
                        }
                        other => st.params.push(Param::Positional(param_value(other)?)),
                    }
                }
                out.push(st);
            }
            _ => return Err(bad("invalid request")),
        }
    }
    Ok(out)
}

fn param_value(v: serde_json::Value) -> Result<Value, BadRequest> {
    use serde_json::Value as V;
    Ok(match v {
        V::Null => Value::Null,
        V::Bool(b) => Value::Bool(b),
        V::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i)
            } else {
                Value::Real(n.as_f64().unwrap_or(0.0))
            }
        }
        V::String(s) => match hex_blob(&s) {
            Some(b) => Value::Blob(b),
            None => Value::Text(s),
        },
        V::Array(items) => {
            let mut bytes = Vec::with_capacity(items.len());
            for x in items {
                match x.as_u64() {
                    Some(b) if b <= 255 => bytes.push(b as u8),
                    _ => return Err(bad(format!("unsupported type: {x}"))),
                }
            }
            Value::Blob(bytes)
        }
        V::Object(_) => return Err(bad("unsupported type: nested object")),
    })
}

/// `x'0102'` → bytes.
fn hex_blob(s: &str) -> Option<Vec<u8>> {
    let inner = s.strip_prefix("x'").or_else(|| s.strip_prefix("X'"))?.strip_suffix('\'')?;
    if inner.len() % 2 != 0 {
        return None;
    }
    (0..inner.len()).step_by(2).map(|i| u8::from_str_radix(inner.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_errors() {
        let p = Params::parse("pretty&timings=false&level=LINEARIZABLE&db_timeout=2s&q=SELECT%201").unwrap();
        assert!(p.pretty && p.timings);
        assert_eq!(p.level, Level::Linearizable);
        assert_eq!(p.db_timeout, Some(Duration::from_secs(2)));
        assert_eq!(p.q.as_deref(), Some("SELECT 1"));
        assert_eq!(Params::parse("level=bogus").unwrap().level, Level::Weak);
        assert_eq!(Params::parse("freshness_strict").unwrap_err().0, "freshness_strict requires freshness");
        assert_eq!(Params::parse("timeout=5").unwrap_err().0, "timeout is not a valid duration");
        assert_eq!(Params::parse("retries=x").unwrap_err().0, "retries is not a valid integer");
        assert_eq!(Params::parse("q=").unwrap_err().0, "query parameter not set");
        assert!(Params::parse("q=%FF").is_err());
        assert!(Params::parse("q=%G1").is_err());
        assert!(Params::parse("q=%").is_err());
        assert_eq!(Params::parse("db_timeout=0").unwrap().db_timeout, Some(Duration::ZERO));
        assert_eq!(Params::parse("q=a+b").unwrap().q.as_deref(), Some("a b"));
    }

    #[test]
    fn bodies() {
        let s = parse_json_statements(br#"["CREATE TABLE t(x)", ["INSERT INTO t VALUES(?, ?)", 1, "x'0aff'"], ["INSERT INTO t VALUES(:a)", {"a": [1,2]}]]"#).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[1].params,
            vec![Param::Positional(Value::Integer(1)), Param::Positional(Value::Blob(vec![10, 255]))]
        );
        assert_eq!(s[2].params, vec![Param::Named("a".into(), Value::Blob(vec![1, 2]))]);
        let big = parse_json_statements(br#"[["SELECT ?", 18446744073709551615, 9007199254740993, 1.5]]"#).unwrap();
        assert_eq!(big[0].params[1], Param::Positional(Value::Integer(9007199254740993)));
        assert!(matches!(big[0].params[0], Param::Positional(Value::Real(_))));
        assert_eq!(parse_json_statements(b"{").unwrap_err().0, "invalid JSON body");
        assert_eq!(parse_json_statements(b"{}").unwrap_err().0, "invalid request");
        assert_eq!(parse_json_statements(b"[1]").unwrap_err().0, "invalid request");
        assert!(parse_json_statements(br#"[["SELECT ?", [256]]]"#).unwrap_err().0.starts_with("unsupported type"));
        assert!(parse_json_statements(br#"[["SELECT ?", {"a": {"b": 1}}]]"#)
            .unwrap_err()
            .0
            .starts_with("unsupported type"));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_json_statements(deep.as_bytes()).unwrap_err().0, "invalid JSON body");
        assert_eq!(parse_json_statements(&[b'[', b'"', 0xff, b'"', b']']).unwrap_err().0, "invalid JSON body");
    }
}

/// Property tests: whatever a client sends, parsing answers with a value or an error, never a
/// panic. `PROPTEST_CASES=100000 cargo test --lib props` runs longer (docs/DESIGN.md §11).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_as_a_json_body(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_json_statements(&body);
        }

        #[test]
        fn json_shaped_bodies(body in r#"[\[\]{}",:0-9a-zA-Z .\\-]{0,200}"#) {
            if let Ok(stmts) = parse_json_statements(body.as_bytes()) {
                prop_assert!(stmts.len() <= MAX_STATEMENTS);
            }
        }

        #[test]
        fn any_query_string(q in ".{0,300}") {
            let _ = Params::parse(&q);
        }

        #[test]
        fn query_strings_of_known_keys(
            parts in proptest::collection::vec(
                ("(pretty|timings|level|db_timeout|freshness|timeout|q|redirect|transaction|ver|key)", "[=&0-9a-zA-Z%.]{0,12}"),
                0..8,
            )
        ) {
            let q: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = Params::parse(&q.join("&"));
        }
    }
}
