//! Interactive use: rustyline for line editing, reverse search (Ctrl-R) and history kept in
//! `~/.raftlite_history` (at most 1000 entries); statements collected over lines until SQLite
//! says they are complete; Ctrl-C drops the current input, Ctrl-D leaves. Tab completes dot
//! commands, table names and column names, read from the node (and kept for a few seconds).

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use super::shell::{Shell, DOT_COMMANDS};

/// Most history entries kept.
const HISTORY_SIZE: usize = 1000;
/// How long names read from the node are used for completion before they are read again.
const NAMES_TTL: Duration = Duration::from_secs(5);

/// Table and column names, as last read.
#[derive(Default)]
struct Names {
    at: Option<Instant>,
    tables: Vec<String>,
    columns: Vec<String>,
}

struct Completion {
    shell: Rc<RefCell<Shell>>,
    names: RefCell<Names>,
}

impl Completion {
    fn refresh(&self) {
        let mut names = self.names.borrow_mut();
        if names.at.is_some_and(|t| t.elapsed() < NAMES_TTL) {
            return;
        }
        let Ok(mut shell) = self.shell.try_borrow_mut() else { return };
        let sql = "SELECT m.name, p.name FROM sqlite_master AS m LEFT JOIN pragma_table_info(m.name) AS p \
                   WHERE m.type IN ('table','view') AND m.name NOT LIKE 'sqlite_%'";
        let (tables, columns) = match shell.query_rows(sql) {
            Ok((_, rows)) => {
                let mut t: Vec<String> = rows.iter().filter_map(|r| r.first()?.as_str().map(String::from)).collect();
                let mut c: Vec<String> = rows.iter().filter_map(|r| r.get(1)?.as_str().map(String::from)).collect();
                t.sort();
                t.dedup();
                c.sort();
                c.dedup();
                (t, c)
            }
            Err(_) => (Vec::new(), Vec::new()),
        };
        *names = Names { at: Some(Instant::now()), tables, columns };
    }
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).map(|i| i + 1).unwrap_or(0);
        let word = &before[start..];
        let pair = |s: &str| Pair { display: s.to_string(), replacement: s.to_string() };
        if start == 0 && word.starts_with('.') {
            let found = DOT_COMMANDS.iter().map(|(c, _)| *c).filter(|c| c.starts_with(word)).map(pair).collect();
            return Ok((0, found));
        }
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        self.refresh();
        let names = self.names.borrow();
        let lower = word.to_ascii_lowercase();
        let mut found: Vec<Pair> = names
            .tables
            .iter()
            .chain(names.columns.iter())
            .filter(|n| n.to_ascii_lowercase().starts_with(&lower))
            .map(|n| pair(n))
            .collect();
        found.dedup_by(|a, b| a.replacement == b.replacement);
        Ok((start, found))
    }
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

fn history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".raftlite_history"))
}

/// The prompt: the node, marked when it is not the leader.
fn prompt(shell: &mut Shell) -> String {
    // Asked first: the probe may fall over to another node, which the prompt then names.
    let leader = shell.is_leader();
    let addr = shell.client.addr().to_string();
    match leader {
        Some(false) => format!("{addr} (follower)> "),
        _ => format!("{addr}> "),
    }
}

/// Read, run, repeat, until `.quit` or Ctrl-D.
pub fn run(shell: Shell) -> Result<bool, String> {
    let shell = Rc::new(RefCell::new(shell));
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_SIZE)
        .map_err(|e| e.to_string())?
        .auto_add_history(false)
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut rl: Editor<Completion, DefaultHistory> = Editor::with_config(config).map_err(|e| e.to_string())?;
    rl.set_helper(Some(Completion { shell: shell.clone(), names: RefCell::new(Names::default()) }));
    let history = history_file();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!("raftlite shell {}: .help for commands, Ctrl-D to leave", raftlite::http::VERSION);
    let mut pending = String::new();
    loop {
        let p = if pending.is_empty() { prompt(&mut shell.borrow_mut()) } else { "   ...> ".to_string() };
        match rl.readline(&p) {
            Ok(line) => {
                if pending.is_empty() && line.trim().is_empty() {
                    continue;
                }
                if !pending.is_empty() {
                    pending.push('\n');
                }
                pending.push_str(&line);
                let dot = pending.trim_start().starts_with('.');
                if !dot && !super::sql::is_complete(&pending) {
                    continue;
                }
                let input = std::mem::take(&mut pending);
                let _ = rl.add_history_entry(input.as_str());
                if let Some(h) = &history {
                    let _ = rl.append_history(h);
                }
                let mut s = shell.borrow_mut();
                s.run(&input);
                if s.quit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => pending.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let failed = shell.borrow().failed;
    Ok(failed)
}
