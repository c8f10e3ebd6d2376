//! Printing results: `.mode table` (box drawing with Unicode where the terminal takes it, ASCII
//! otherwise; long values cut to the terminal's width), `column`, `csv`, `json`, `line` and
//! `list` (undecorated, for scripts). `NULL` is shown so that it cannot be mistaken for a string:
//! dimmed on a colour terminal, an empty field in CSV, `null` in JSON.

use std::io::{self, Write};

use serde_json::Value;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Table,
    Column,
    Csv,
    Json,
    Line,
    List,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "table" | "box" => Mode::Table,
            "column" => Mode::Column,
            "csv" => Mode::Csv,
            "json" => Mode::Json,
            "line" => Mode::Line,
            "list" => Mode::List,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Table => "table",
            Mode::Column => "column",
            Mode::Csv => "csv",
            Mode::Json => "json",
            Mode::Line => "line",
            Mode::List => "list",
        }
    }
}

/// How to print: the mode, and what the output device can show.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub mode: Mode,
    /// Box-drawing characters and `…`.
    pub unicode: bool,
    /// ANSI colour (dim `NULL`).
    pub color: bool,
    /// Columns of the terminal; values are cut to fit in table mode.
    pub width: usize,
}

const NULL: &str = "NULL";

/// A value as text for aligned modes (`None` for SQL NULL).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// Control characters (a newline in a value) would break the table's lines.
fn flat(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` cut to `w` display columns, ending in an ellipsis when cut.
fn cut(s: &str, w: usize, unicode: bool) -> String {
    if width(s) <= w {
        return s.to_string();
    }
    let ell = if unicode { "…" } else { "..." };
    let room = w.saturating_sub(width(ell));
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let cw = UnicodeWidthChar::width(c).unwrap_or(0);
        if used + cw > room {
            break;
        }
        used += cw;
        out.push(c);
    }
    out.push_str(ell);
    out
}

/// Print a result set.
pub fn rows(out: &mut dyn Write, style: &Style, columns: &[String], values: &[Vec<Value>]) -> io::Result<()> {
    match style.mode {
        Mode::Table => table(out, style, columns, values),
        Mode::Column => column(out, style, columns, values),
        Mode::Csv => csv(out, columns, values),
        Mode::Json => json(out, columns, values),
        Mode::Line => line(out, style, columns, values),
        Mode::List => list(out, values),
    }
}

/// A cell: its text, and whether it is NULL.
fn cells(values: &[Vec<Value>], ncols: usize) -> Vec<Vec<(String, bool)>> {
    values
        .iter()
        .map(|row| {
            (0..ncols)
                .map(|i| match row.get(i).and_then(text) {
                    Some(t) => (flat(&t), false),
                    None => (NULL.to_string(), true),
                })
                .collect()
        })
        .collect()
}

/// Column widths for aligned output, shrunk (widest first) to fit `room` when it is given.
fn widths(columns: &[String], cells: &[Vec<(String, bool)>], room: Option<usize>) -> Vec<usize> {
    let mut w: Vec<usize> = columns.iter().map(|c| width(c)).collect();
    for row in cells {
        for (i, (t, _)) in row.iter().enumerate() {
            w[i] = w[i].max(width(t));
        }
    }
    if let Some(room) = room {
        while w.iter().sum::<usize>() > room {
            let Some((i, &max)) = w.iter().enumerate().max_by_key(|(_, v)| **v) else { break };
            if max <= 5 {
                break;
            }
            w[i] = max - 1;
        }
    }
    w
}

fn pad(out: &mut dyn Write, style: &Style, s: &str, is_null: bool, w: usize, right: bool) -> io::Result<()> {
    let shown = cut(s, w, style.unicode);
    let fill = " ".repeat(w.saturating_sub(width(&shown)));
    let body = if is_null && style.color { format!("\x1b[2m{shown}\x1b[0m") } else { shown };
    if right {
        write!(out, "{fill}{body}")
    } else {
        write!(out, "{body}{fill}")
    }
}

/// Numbers line up on the right, as in sqlite3's box mode.
fn numeric(values: &[Vec<Value>], i: usize) -> bool {
    let mut any = false;
    for row in values {
        match row.get(i) {
            Some(Value::Number(_)) => any = true,
            Some(Value::Null) | None => {}
            Some(_) => return false,
        }
    }
    any
}

fn table(out: &mut dyn Write, style: &Style, columns: &[String], values: &[Vec<Value>]) -> io::Result<()> {
    let n = columns.len();
    if n == 0 {
        return Ok(());
    }
    let cells = cells(values, n);
    let room = style.width.saturating_sub(3 * n + 1);
    let w = widths(columns, &cells, Some(room.max(n * 5)));
    let right: Vec<bool> = (0..n).map(|i| numeric(values, i)).collect();
    let b = if style.unicode {
        ["┌", "┬", "┐", "├", "┼", "┤", "└", "┴", "┘", "─", "│"]
    } else {
        ["+", "+", "+", "+", "+", "+", "+", "+", "+", "-", "|"]
    };
    let rule = |out: &mut dyn Write, l: &str, m: &str, r: &str| -> io::Result<()> {
        let parts: Vec<String> = w.iter().map(|x| b[9].repeat(x + 2)).collect();
        writeln!(out, "{l}{}{r}", parts.join(m))
    };
    rule(out, b[0], b[1], b[2])?;
    write!(out, "{}", b[10])?;
    for (i, c) in columns.iter().enumerate() {
        write!(out, " ")?;
        pad(out, style, &flat(c), false, w[i], false)?;
        write!(out, " {}", b[10])?;
    }
    writeln!(out)?;
    rule(out, b[3], b[4], b[5])?;
    for row in &cells {
        write!(out, "{}", b[10])?;
        for (i, (t, null)) in row.iter().enumerate() {
            write!(out, " ")?;
            pad(out, style, t, *null, w[i], right[i] && !*null)?;
            write!(out, " {}", b[10])?;
        }
        writeln!(out)?;
    }
    rule(out, b[6], b[7], b[8])
}

fn column(out: &mut dyn Write, style: &Style, columns: &[String], values: &[Vec<Value>]) -> io::Result<()> {
    let n = columns.len();
    let cells = cells(values, n);
    let w = widths(columns, &cells, None);
    let plain = Style { color: style.color, unicode: style.unicode, width: usize::MAX, mode: style.mode };
    for (i, c) in columns.iter().enumerate() {
        pad(out, &plain, &flat(c), false, w[i], false)?;
        write!(out, "{}", if i + 1 < n { "  " } else { "\n" })?;
    }
    for (i, x) in w.iter().enumerate() {
        write!(out, "{}{}", "-".repeat(*x), if i + 1 < n { "  " } else { "\n" })?;
    }
    for row in &cells {
        for (i, (t, null)) in row.iter().enumerate() {
            pad(out, &plain, t, *null, w[i], false)?;
            write!(out, "{}", if i + 1 < n { "  " } else { "\n" })?;
        }
    }
    Ok(())
}

fn csv_field(v: Option<String>) -> String {
    match v {
        None => String::new(),
        Some(s) if s.is_empty() => "\"\"".into(),
        Some(s) if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') => {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        Some(s) => s,
    }
}

fn csv(out: &mut dyn Write, columns: &[String], values: &[Vec<Value>]) -> io::Result<()> {
    let head: Vec<String> = columns.iter().map(|c| csv_field(Some(c.clone()))).collect();
    writeln!(out, "{}", head.join(","))?;
    for row in values {
        let fields: Vec<String> = (0..columns.len()).map(|i| csv_field(row.get(i).and_then(text))).collect();
        writeln!(out, "{}", fields.join(","))?;
    }
    Ok(())
}

fn json(out: &mut dyn Write, columns: &[String], values: &[Vec<Value>]) -> io::Result<()> {
    let objects: Vec<Value> = values
        .iter()
        .map(|row| {
            let m: serde_json::Map<String, Value> =
                columns.iter().cloned().zip(row.iter().cloned().chain(std::iter::repeat(Value::Null))).collect();
            Value::Object(m)
        })
        .collect();
    writeln!(out, "{}", serde_json::to_string(&objects).unwrap_or_default())
}

fn line(out: &mut dyn Write, style: &Style, columns: &[String], values: &[Vec<Value>]) -> io::Result<()> {
    let w = columns.iter().map(|c| width(c)).max().unwrap_or(0);
    for (k, row) in values.iter().enumerate() {
        if k > 0 {
            writeln!(out)?;
        }
        for (i, c) in columns.iter().enumerate() {
            write!(out, "{}{c} = ", " ".repeat(w - width(c)))?;
            match row.get(i).and_then(text) {
                Some(t) => writeln!(out, "{t}")?,
                None if style.color => writeln!(out, "\x1b[2m{NULL}\x1b[0m")?,
                None => writeln!(out, "{NULL}")?,
            }
        }
    }
    Ok(())
}

fn list(out: &mut dyn Write, values: &[Vec<Value>]) -> io::Result<()> {
    for row in values {
        let fields: Vec<String> = row.iter().map(|v| text(v).unwrap_or_default()).collect();
        writeln!(out, "{}", fields.join("|"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(mode: Mode, unicode: bool, width: usize) -> String {
        let style = Style { mode, unicode, color: false, width };
        let cols = vec!["id".to_string(), "name".to_string()];
        let vals = vec![vec![json!(1), json!("ada, \"the\" first")], vec![json!(22), Value::Null]];
        let mut out = Vec::new();
        rows(&mut out, &style, &cols, &vals).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn modes() {
        let t = render(Mode::Table, true, 80);
        assert!(t.starts_with("┌────┬"), "{t}");
        assert!(t.contains("│  1 │ ada, \"the\" first │"), "{t}");
        assert!(t.contains("│ 22 │ NULL"), "{t}");
        assert!(render(Mode::Table, false, 80).starts_with("+----+"));
        let cut = render(Mode::Table, true, 20);
        assert!(cut.lines().all(|l| width(l) <= 20), "{cut}");
        assert!(cut.contains('…'));
        assert_eq!(render(Mode::Csv, true, 10), "id,name\n1,\"ada, \"\"the\"\" first\"\n22,\n");
        assert_eq!(
            render(Mode::Json, true, 10),
            "[{\"id\":1,\"name\":\"ada, \\\"the\\\" first\"},{\"id\":22,\"name\":null}]\n"
        );
        assert_eq!(render(Mode::List, true, 10), "1|ada, \"the\" first\n22|\n");
        assert_eq!(render(Mode::Line, true, 10), "  id = 1\nname = ada, \"the\" first\n\n  id = 22\nname = NULL\n");
    }
}
