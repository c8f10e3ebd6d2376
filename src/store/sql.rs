//! SQL preprocessing (docs/API.md §8): a small SQLite tokenizer, the rewriting of non-deterministic
//! functions into literals before a statement enters the log, RETURNING detection, the disallowed
//! PRAGMA check, and the guard against ATTACH / DETACH / VACUUM INTO / load_extension
//! (docs/DESIGN.md §10).
//!
//! Rewriting works on tokens, not on a full parse: it only touches `random()`, `randomblob(N)`,
//! the `'now'` argument of the date/time functions and the CURRENT_* keywords, and leaves every
//! other byte of the statement as the client wrote it.

/// Token kinds the rewriter cares about.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok {
    Word,
    Str,
    Quoted,
    Number,
    Blob,
    Param,
    Punct(u8),
    Space,
}

#[derive(Clone, Copy, Debug)]
struct Token {
    kind: Tok,
    start: usize,
    end: usize,
}

fn tokenize(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let n = b.len();
    while i < n {
        let start = i;
        let c = b[i];
        let kind = if c.is_ascii_whitespace() {
            while i < n && b[i].is_ascii_whitespace() {
                i += 1;
            }
            Tok::Space
        } else if c == b'-' && i + 1 < n && b[i + 1] == b'-' {
            while i < n && b[i] != b'\n' {
                i += 1;
            }
            Tok::Space
        } else if c == b'/' && i + 1 < n && b[i + 1] == b'*' {
            i += 2;
            while i < n && !(b[i] == b'*' && i + 1 < n && b[i + 1] == b'/') {
                i += 1;
            }
            i = (i + 2).min(n);
            Tok::Space
        } else if (c == b'x' || c == b'X') && i + 1 < n && b[i + 1] == b'\'' {
            i = skip_quoted(b, i + 1, b'\'');
            Tok::Blob
        } else if c == b'\'' {
            i = skip_quoted(b, i, b'\'');
            Tok::Str
        } else if c == b'"' || c == b'`' {
            i = skip_quoted(b, i, c);
            Tok::Quoted
        } else if c == b'[' {
            while i < n && b[i] != b']' {
                i += 1;
            }
            i = (i + 1).min(n);
            Tok::Quoted
        } else if c.is_ascii_digit() || (c == b'.' && i + 1 < n && b[i + 1].is_ascii_digit()) {
            while i < n && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                // exponent sign
                if (b[i] == b'e' || b[i] == b'E') && i + 1 < n && (b[i + 1] == b'+' || b[i + 1] == b'-') {
                    i += 1;
                }
                i += 1;
            }
            Tok::Number
        } else if c == b'?' || c == b':' || c == b'@' || c == b'$' || c == b'#' {
            i += 1;
            while i < n && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
                i += 1;
            }
            Tok::Param
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while i < n && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80) {
                i += 1;
            }
            Tok::Word
        } else {
            i += 1;
            Tok::Punct(c)
        };
        out.push(Token { kind, start, end: i });
    }
    out
}

/// Index just past a quoted run starting at `i` (doubled quotes escape themselves).
fn skip_quoted(b: &[u8], mut i: usize, q: u8) -> usize {
    i += 1;
    while i < b.len() {
        if b[i] == q {
            if i + 1 < b.len() && b[i + 1] == q {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// Tokens without whitespace and comments.
fn significant(sql: &str) -> Vec<Token> {
    tokenize(sql).into_iter().filter(|t| t.kind != Tok::Space).collect()
}

fn text<'a>(sql: &'a str, t: &Token) -> &'a str {
    &sql[t.start..t.end]
}

fn is_word(sql: &str, t: &Token, w: &str) -> bool {
    t.kind == Tok::Word && text(sql, t).eq_ignore_ascii_case(w)
}

/// What the rewriter should do (docs/API.md §3 `norwrandom`, `norwtime`, `noparse`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RewriteOptions {
    pub no_random: bool,
    pub no_time: bool,
}

/// The source of values substituted for non-deterministic functions.
pub trait Entropy {
    fn random_i64(&mut self) -> i64;
    fn random_bytes(&mut self, n: usize) -> Vec<u8>;
    /// Current time as a Julian day number.
    fn julian_day(&mut self) -> f64;
}

/// Real randomness and the wall clock (what the leader uses).
pub struct SystemEntropy {
    rng: rand::rngs::ThreadRng,
    now_jd: f64,
}

impl Default for SystemEntropy {
    fn default() -> Self {
        SystemEntropy { rng: rand::rng(), now_jd: julian_day_now() }
    }
}

impl Entropy for SystemEntropy {
    fn random_i64(&mut self) -> i64 {
        rand::Rng::random(&mut self.rng)
    }
    fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::RngCore::fill_bytes(&mut self.rng, &mut v);
        v
    }
    fn julian_day(&mut self) -> f64 {
        self.now_jd
    }
}

/// The Julian day number of the current wall-clock time.
pub fn julian_day_now() -> f64 {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as f64).unwrap_or(0.0);
    ms / 86_400_000.0 + 2_440_587.5
}

/// Largest `randomblob(N)` turned into a literal; larger ones stay calls and are made
/// deterministic by the applier's seeded `randomblob`.
const MAX_BLOB_LITERAL: usize = 64 * 1024;

const TIME_FUNCS: &[&str] = &["date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff"];

/// The result of preprocessing one statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Processed {
    pub sql: String,
    pub returning: bool,
}

/// Rewrite non-deterministic functions into literals and detect RETURNING.
pub fn rewrite(sql: &str, opts: RewriteOptions, ent: &mut dyn Entropy) -> Processed {
    let lower_hint = sql.to_ascii_lowercase();
    let may_random = !opts.no_random && lower_hint.contains("random");
    let may_time = !opts.no_time && (lower_hint.contains("now") || lower_hint.contains("current_"));
    let may_returning = lower_hint.contains("returning");
    if !may_random && !may_time && !may_returning {
        return Processed { sql: sql.to_string(), returning: false };
    }
    let toks = significant(sql);
    let is_ddl = toks.first().map(|t| is_word(sql, t, "create") || is_word(sql, t, "alter")).unwrap_or(false);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut returning = false;
    // ORDER BY context per parenthesis depth: random() there is left alone (it only orders).
    let mut order_by: Vec<bool> = vec![false];
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        let next = |k: usize| toks.get(i + k).copied();
        match t.kind {
            Tok::Punct(b'(') => order_by.push(false),
            Tok::Punct(b')') if order_by.len() > 1 => {
                order_by.pop();
            }
            Tok::Punct(b';') => order_by = vec![false],
            Tok::Word => {
                let w = text(sql, &t).to_ascii_lowercase();
                let open = next(1).map(|n| n.kind == Tok::Punct(b'(')).unwrap_or(false);
                match w.as_str() {
                    "returning" => returning = true,
                    "order" if next(1).map(|n| is_word(sql, &n, "by")).unwrap_or(false) => {
                        if let Some(top) = order_by.last_mut() {
                            *top = true;
                        }
                    }
                    "limit" | "union" | "except" | "intersect" => {
                        if let Some(top) = order_by.last_mut() {
                            *top = false;
                        }
                    }
                    "random" if may_random && open && !order_by.last().copied().unwrap_or(false) => {
                        if let Some(close) = next(2).filter(|n| n.kind == Tok::Punct(b')')) {
                            edits.push((t.start, close.end, ent.random_i64().to_string()));
                            i += 3;
                            continue;
                        }
                    }
                    "randomblob" if may_random && open && !order_by.last().copied().unwrap_or(false) => {
                        if let (Some(num), Some(close)) = (next(2), next(3)) {
                            if num.kind == Tok::Number && close.kind == Tok::Punct(b')') {
                                if let Ok(n) = text(sql, &num).parse::<i64>() {
                                    let n = n.max(1) as usize;
                                    if n <= MAX_BLOB_LITERAL {
                                        edits.push((t.start, close.end, hex_literal(&ent.random_bytes(n))));
                                        i += 4;
                                        continue;
                                    }
                                }
                            }
                        }
                    }
                    f if may_time && open && TIME_FUNCS.contains(&f) => {
                        // Replace every top-level 'now' argument of this call.
                        let mut depth = 0usize;
                        let mut j = i + 1;
                        while j < toks.len() {
                            match toks[j].kind {
                                Tok::Punct(b'(') => depth += 1,
                                Tok::Punct(b')') => {
                                    depth -= 1;
                                    if depth == 0 {
                                        break;
                                    }
                                }
                                Tok::Str if depth == 1 && text(sql, &toks[j]).eq_ignore_ascii_case("'now'") => {
                                    edits.push((toks[j].start, toks[j].end, format_jd(ent.julian_day())));
                                }
                                _ => {}
                            }
                            j += 1;
                        }
                    }
                    "current_timestamp" | "current_date" | "current_time" if may_time && !is_ddl => {
                        let func = match w.as_str() {
                            "current_timestamp" => "datetime",
                            "current_date" => "date",
                            _ => "time",
                        };
                        edits.push((t.start, t.end, format!("{func}({})", format_jd(ent.julian_day()))));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        i += 1;
    }
    if edits.is_empty() {
        return Processed { sql: sql.to_string(), returning };
    }
    let mut out = String::with_capacity(sql.len() + 16 * edits.len());
    let mut pos = 0;
    for (s, e, rep) in edits {
        out.push_str(&sql[pos..s]);
        out.push_str(&rep);
        pos = e;
    }
    out.push_str(&sql[pos..]);
    Processed { sql: out, returning }
}

fn format_jd(jd: f64) -> String {
    format!("{jd:.9}")
}

fn hex_literal(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2 + 3);
    s.push_str("X'");
    for b in bytes {
        s.push_str(&format!("{b:02X}"));
    }
    s.push('\'');
    s
}

/// True if any statement in `sql` is a PRAGMA that would change how the database is stored or
/// replicated (docs/API.md §8, extended per docs/DESIGN.md §10).
pub fn has_disallowed_pragma(sql: &str) -> bool {
    if !sql.to_ascii_lowercase().contains("pragma") {
        return false;
    }
    let toks = significant(sql);
    toks.split(|t| t.kind == Tok::Punct(b';')).any(|stmt| {
        if stmt.is_empty() || !is_word(sql, &stmt[0], "pragma") {
            return false;
        }
        // PRAGMA [schema.]name [= value | (value)]
        let mut k = 1;
        if stmt.len() > k + 2 && stmt[k + 1].kind == Tok::Punct(b'.') {
            k += 2;
        }
        let Some(name) = stmt.get(k) else { return false };
        let name = text(sql, name).trim_matches(|c| c == '"' || c == '`').to_ascii_lowercase();
        let assigns =
            stmt.get(k + 1).map(|t| t.kind == Tok::Punct(b'=') || t.kind == Tok::Punct(b'(')).unwrap_or(false);
        match name.as_str() {
            "wal_checkpoint" => true,
            "journal_mode"
            | "wal_autocheckpoint"
            | "synchronous"
            | "query_only"
            | "locking_mode"
            | "writable_schema"
            | "mmap_size"
            | "temp_store_directory"
            | "data_store_directory"
            | "trusted_schema"
            | "cell_size_check"
            | "page_size" => assigns,
            _ => false,
        }
    })
}

/// Why a statement is refused outright, on both the read and the write path.
pub fn forbidden(sql: &str) -> Option<&'static str> {
    let lower = sql.to_ascii_lowercase();
    if !(lower.contains("attach")
        || lower.contains("detach")
        || lower.contains("vacuum")
        || lower.contains("load_extension"))
    {
        return None;
    }
    let toks = significant(sql);
    for stmt in toks.split(|t| t.kind == Tok::Punct(b';')) {
        let Some(first) = stmt.first() else { continue };
        if is_word(sql, first, "attach") {
            return Some("ATTACH is not allowed");
        }
        if is_word(sql, first, "detach") {
            return Some("DETACH is not allowed");
        }
        if is_word(sql, first, "vacuum") && stmt.iter().any(|t| is_word(sql, t, "into")) {
            return Some("VACUUM INTO is not allowed");
        }
        for w in stmt.windows(2) {
            if is_word(sql, &w[0], "load_extension") && w[1].kind == Tok::Punct(b'(') {
                return Some("load_extension is not allowed");
            }
        }
    }
    None
}

/// Split SQL text into its statements at top-level semicolons (not inside strings, identifiers,
/// comments or trigger bodies). Blank pieces are dropped.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    // A CREATE TRIGGER body holds semicolons up to its END.
    let mut in_trigger = false;
    let mut begin_depth = 0usize;
    let toks = tokenize(sql);
    let mut first_words: Vec<String> = Vec::new();
    for t in &toks {
        match t.kind {
            Tok::Word => {
                let w = text(sql, t).to_ascii_uppercase();
                if first_words.len() < 3 {
                    first_words.push(w.clone());
                    if first_words.iter().any(|x| x == "TRIGGER") && first_words[0] == "CREATE" {
                        in_trigger = true;
                    }
                }
                if in_trigger && (w == "BEGIN" || w == "CASE") {
                    begin_depth += 1;
                } else if in_trigger && w == "END" {
                    begin_depth = begin_depth.saturating_sub(1);
                    if begin_depth == 0 {
                        in_trigger = false;
                    }
                }
            }
            Tok::Punct(b';') if !in_trigger => {
                let piece = &sql[start..t.start];
                if !is_blank(piece) {
                    out.push(piece.trim());
                }
                start = t.end;
                first_words.clear();
            }
            _ => {}
        }
    }
    let piece = &sql[start..];
    if !is_blank(piece) {
        out.push(piece.trim());
    }
    out
}

/// True if the SQL is only whitespace and comments.
pub fn is_blank(sql: &str) -> bool {
    significant(sql).is_empty()
}

/// True if the SQL is one plain `VACUUM` (optionally of `main`), which SQLite runs only outside
/// a transaction.
pub fn is_vacuum(sql: &str) -> bool {
    let toks: Vec<Token> = significant(sql).into_iter().filter(|t| t.kind != Tok::Punct(b';')).collect();
    match toks.as_slice() {
        [v] => is_word(sql, v, "vacuum"),
        [v, schema] => is_word(sql, v, "vacuum") && is_word(sql, schema, "main"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vacuum_is_recognised() {
        for yes in ["VACUUM", " vacuum ; ", "VACUUM main", "/* c */ VACUUM"] {
            assert!(is_vacuum(yes), "{yes}");
        }
        for no in ["VACUUM INTO 'x'", "SELECT 1", "VACUUM; SELECT 1", "CREATE TABLE vacuum(x)"] {
            assert!(!is_vacuum(no), "{no}");
        }
    }

    pub(super) struct Fixed;
    impl Entropy for Fixed {
        fn random_i64(&mut self) -> i64 {
            42
        }
        fn random_bytes(&mut self, n: usize) -> Vec<u8> {
            vec![0xAB; n]
        }
        fn julian_day(&mut self) -> f64 {
            2460000.5
        }
    }

    fn rw(sql: &str) -> String {
        rewrite(sql, RewriteOptions::default(), &mut Fixed).sql
    }

    #[test]
    fn random_rewritten() {
        assert_eq!(rw("INSERT INTO t VALUES(random())"), "INSERT INTO t VALUES(42)");
        assert_eq!(rw("INSERT INTO t VALUES(RANDOM ( ))"), "INSERT INTO t VALUES(42)");
        assert_eq!(rw("INSERT INTO t VALUES(randomblob(2))"), "INSERT INTO t VALUES(X'ABAB')");
        assert_eq!(rw("SELECT 'random()' FROM t"), "SELECT 'random()' FROM t");
        assert_eq!(rw("SELECT * FROM t ORDER BY random()"), "SELECT * FROM t ORDER BY random()");
        assert_eq!(
            rw("SELECT random() FROM t ORDER BY random() LIMIT random()"),
            "SELECT 42 FROM t ORDER BY random() LIMIT 42"
        );
        let o =
            rewrite("INSERT INTO t VALUES(random())", RewriteOptions { no_random: true, no_time: false }, &mut Fixed);
        assert_eq!(o.sql, "INSERT INTO t VALUES(random())");
    }

    #[test]
    fn time_rewritten() {
        assert_eq!(
            rw("INSERT INTO t VALUES(datetime('now'), date('2020-01-01'), strftime('%s','NOW'))"),
            "INSERT INTO t VALUES(datetime(2460000.500000000), date('2020-01-01'), strftime('%s',2460000.500000000))"
        );
        assert_eq!(rw("INSERT INTO t VALUES(CURRENT_TIMESTAMP)"), "INSERT INTO t VALUES(datetime(2460000.500000000))");
        assert_eq!(
            rw("CREATE TABLE t (ts TEXT DEFAULT CURRENT_TIMESTAMP)"),
            "CREATE TABLE t (ts TEXT DEFAULT CURRENT_TIMESTAMP)"
        );
        let o = rewrite("SELECT date('now')", RewriteOptions { no_random: false, no_time: true }, &mut Fixed);
        assert_eq!(o.sql, "SELECT date('now')");
    }

    #[test]
    fn returning_detected() {
        assert!(rewrite("INSERT INTO t(x) VALUES(1) RETURNING *", RewriteOptions::default(), &mut Fixed).returning);
        assert!(!rewrite("INSERT INTO t(x) VALUES('returning')", RewriteOptions::default(), &mut Fixed).returning);
    }

    #[test]
    fn pragmas() {
        assert!(has_disallowed_pragma("PRAGMA journal_mode=DELETE"));
        assert!(has_disallowed_pragma("  pragma main.synchronous = 0"));
        assert!(has_disallowed_pragma("PRAGMA wal_checkpoint(TRUNCATE)"));
        assert!(has_disallowed_pragma("SELECT 1; PRAGMA query_only=0"));
        assert!(!has_disallowed_pragma("PRAGMA journal_mode"));
        assert!(!has_disallowed_pragma("PRAGMA foreign_keys=ON"));
        assert!(!has_disallowed_pragma("SELECT 'PRAGMA journal_mode=x'"));
    }

    #[test]
    fn forbidden_statements() {
        assert!(forbidden("ATTACH DATABASE '/tmp/x' AS x").is_some());
        assert!(forbidden("detach x").is_some());
        assert!(forbidden("VACUUM INTO '/tmp/x'").is_some());
        assert!(forbidden("SELECT load_extension('x')").is_some());
        assert!(forbidden("SELECT 1; ATTACH 'x' AS y").is_some());
        assert!(forbidden("VACUUM").is_none());
        assert!(forbidden("SELECT 'attach'").is_none());
    }

    #[test]
    fn splitting() {
        assert_eq!(split_statements("a; b;; 'x;y'; c"), vec!["a", "b", "'x;y'", "c"]);
        let trig = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x=1; DELETE FROM u; END; SELECT 1";
        assert_eq!(
            split_statements(trig),
            vec!["CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x=1; DELETE FROM u; END", "SELECT 1"]
        );
    }

    #[test]
    fn tokenizer_survives_garbage() {
        for s in ["'", "\"", "x'", "/*", "--", "[", "$", "1e+", "\u{0}", "é'ü"] {
            let _ = rw(s);
            let _ = has_disallowed_pragma(s);
            let _ = forbidden(s);
        }
    }
}

/// Property tests: the preprocessor takes any text without panicking, and its pieces come from
/// the input. `PROPTEST_CASES=100000 cargo test --lib props` runs longer.
#[cfg(test)]
mod props {
    use super::tests::Fixed;
    use super::*;
    use proptest::prelude::*;

    /// SQL-ish text: keywords, functions the rewriter touches, quotes, comments, punctuation.
    fn sqlish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("SELECT ".to_string()),
            Just("INSERT INTO t VALUES(".to_string()),
            Just("random()".to_string()),
            Just("randomblob(".to_string()),
            Just("datetime('now')".to_string()),
            Just("CURRENT_TIMESTAMP".to_string()),
            Just("CREATE TRIGGER x AFTER INSERT ON t BEGIN ".to_string()),
            Just(" END".to_string()),
            Just("ORDER BY ".to_string()),
            Just("PRAGMA ".to_string()),
            Just("ATTACH ".to_string()),
            Just("VACUUM".to_string()),
            Just("--".to_string()),
            Just("/*".to_string()),
            Just("*/".to_string()),
            "[';\"`\\[\\]()\n ,0-9a-z]{1,6}",
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn any_text_is_preprocessed_without_panic(sql in prop_oneof![sqlish(), ".{0,200}"]) {
            for opts in [RewriteOptions::default(), RewriteOptions { no_random: true, no_time: true }] {
                let _ = rewrite(&sql, opts, &mut Fixed);
            }
            let _ = forbidden(&sql);
            let _ = has_disallowed_pragma(&sql);
            let _ = is_vacuum(&sql);
            let _ = is_blank(&sql);
            for piece in split_statements(&sql) {
                prop_assert!(sql.contains(piece), "{piece:?} is not from {sql:?}");
            }
        }
    }
}
