//! Where one statement ends: SQLite's own rule (`sqlite3_complete`, as the `sqlite3` shell uses
//! it), so semicolons inside strings, comments and `CREATE TRIGGER … BEGIN … END` bodies do not
//! cut a statement short.

use std::ffi::CString;

/// Whether `sql` ends with a complete statement (a `;` outside strings, comments and trigger
/// bodies). Text with a NUL byte is never complete by this rule.
pub fn is_complete(sql: &str) -> bool {
    let Ok(c) = CString::new(sql) else { return false };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; sqlite3_complete only
    // reads it.
    unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) != 0 }
}

/// Split text into complete statements (each with its `;`) and what is left over (an
/// unfinished statement, or only whitespace and comments).
pub fn split(text: &str) -> (Vec<String>, String) {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, ch) in text.char_indices() {
        if ch != ';' {
            continue;
        }
        let candidate = &text[start..=i];
        if is_complete(candidate) {
            let s = candidate.trim();
            if s != ";" {
                out.push(s.to_string());
            }
            start = i + 1;
        }
    }
    (out, text[start..].to_string())
}

/// Whether `rest` holds nothing but whitespace and comments.
pub fn is_blank(rest: &str) -> bool {
    let mut s = rest.trim_start();
    loop {
        if s.is_empty() {
            return true;
        }
        if let Some(r) = s.strip_prefix("--") {
            s = r.split_once('\n').map(|(_, t)| t).unwrap_or("").trim_start();
        } else if let Some(r) = s.strip_prefix("/*") {
            match r.split_once("*/") {
                Some((_, t)) => s = t.trim_start(),
                None => return false,
            }
        } else {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_where_sqlite_says() {
        assert!(is_complete("SELECT 1;"));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';'"));
        assert!(!is_complete("CREATE TRIGGER t AFTER INSERT ON x BEGIN DELETE FROM y;"));
        assert!(is_complete("CREATE TRIGGER t AFTER INSERT ON x BEGIN DELETE FROM y; END;"));
        let (stmts, rest) = split("INSERT INTO t VALUES('a;b'); SELECT 2; -- done\nSELECT");
        assert_eq!(stmts, vec!["INSERT INTO t VALUES('a;b');", "SELECT 2;"]);
        assert_eq!(rest.trim(), "-- done\nSELECT");
        assert!(!is_blank(&rest));
        assert!(is_blank(" -- only a comment\n /* and this */ "));
    }
}
