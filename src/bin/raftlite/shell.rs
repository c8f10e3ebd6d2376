//! What the shell does with a complete input: run a statement (through `/db/request`, or
//! `/db/execute` with `.forcewrites`) and print its results, or run a dot command, with rqlite's
//! names and meanings. Errors are one line on stderr; the shell goes on, and remembers that
//! something failed for its exit status.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use http::Method;
use serde_json::Value;

use super::client::{Client, Error};
use super::render::{self, Mode, Style};
use super::transfer;

/// Settings the dot commands change.
pub struct Settings {
    pub style: Style,
    /// Print counts of rows returned and changed, and where output decoration is on.
    pub decorated: bool,
    pub timer: bool,
    pub changes: bool,
    pub forcewrites: bool,
    pub blobarray: bool,
    pub consistency: String,
}

pub struct Shell {
    pub client: Client,
    pub settings: Settings,
    /// `.output FILE`; stdout when `None`.
    output: Option<(String, std::fs::File)>,
    /// Something failed (the exit status of a script).
    pub failed: bool,
    /// Set by `.quit` / `.exit`.
    pub quit: bool,
}

pub const CONSISTENCY: [&str; 5] = ["none", "weak", "strong", "linearizable", "auto"];

/// Every dot command, with its help line (`.help`, and tab completion).
pub const DOT_COMMANDS: &[(&str, &str)] = &[
    (".backup", "FILE                 Write a SQLite backup of the database to FILE"),
    (".blobarray", "on|off            Show BLOBs as byte arrays"),
    (".boot", "FILE                   Boot a single-node cluster from the SQLite file FILE"),
    (".changes", "on|off              Show the number of rows changed by writes"),
    (".consistency", "[LEVEL]         Show or set the read level (none, weak, strong, linearizable, auto)"),
    (".dump", "[FILE]                 Dump the database as SQL text, to FILE or the screen"),
    (".exit", "                       Exit the shell"),
    (".expvar", "                     Show the node's /debug/vars"),
    (".forcewrites", "on|off          Send every statement as a write (/db/execute)"),
    (".help", "                       Show this list"),
    (".indexes", "                    List the indexes"),
    (".leader", "                     Show the leader"),
    (".mode", "table|column|csv|json|line|list   Set the output format"),
    (".nodes", "                      Show the cluster's nodes"),
    (".output", "[FILE]               Send results to FILE, or back to the screen"),
    (".quit", "                       Exit the shell"),
    (".read", "FILE                   Run the SQL statements in FILE as one request"),
    (".ready", "                      Show whether the node is ready"),
    (".reap", "                       Consolidate the node's snapshot store"),
    (".remove", "ID                   Remove node ID from the cluster"),
    (".restore", "FILE                Load FILE (a SQLite database or SQL text) into the cluster"),
    (".schema", "[TABLE]              Show CREATE statements"),
    (".show", "                       Show the current settings"),
    (".snapshot", "                   Take a Raft snapshot now"),
    (".status", "                     Show the node's status"),
    (".stepdown", "[ID]               Hand leadership to another node (ID, or any)"),
    (".sysdump", "FILE                Write status, nodes and expvar of the node to FILE"),
    (".tables", "                     List the tables"),
    (".timer", "on|off                Show the time the node took for each statement"),
];

fn on_off(arg: Option<&str>) -> Result<bool, String> {
    match arg {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

/// The `results` of a `/db/*` answer.
fn results(body: &Bytes) -> Result<Vec<Value>, Error> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Error::Other(format!("unreadable answer: {e}")))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(Error::Other(e.to_string()));
    }
    Ok(v.get("results").and_then(Value::as_array).cloned().unwrap_or_default())
}

/// Rows of a query result: (columns, values).
fn rowset(r: &Value) -> (Vec<String>, Vec<Vec<Value>>) {
    let cols = r
        .get("columns")
        .and_then(Value::as_array)
        .map(|c| c.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    let vals = r
        .get("values")
        .and_then(Value::as_array)
        .map(|rows| rows.iter().map(|row| row.as_array().cloned().unwrap_or_default()).collect())
        .unwrap_or_default();
    (cols, vals)
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Shell {
    pub fn new(client: Client, settings: Settings) -> Shell {
        Shell { client, settings, output: None, failed: false, quit: false }
    }

    fn out(&mut self) -> Box<dyn Write + '_> {
        match &mut self.output {
            Some((_, f)) => Box::new(f),
            None => Box::new(std::io::stdout().lock()),
        }
    }

    /// Report an error as one line and remember it.
    pub fn error(&mut self, e: impl std::fmt::Display) {
        self.failed = true;
        let text = e.to_string();
        let text = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
        eprintln!("Error: {text}");
    }

    /// Run complete input: a dot command, or one or more SQL statements.
    pub fn run(&mut self, input: &str) {
        let input = input.trim();
        if input.is_empty() {
            return;
        }
        if input.starts_with('.') {
            if let Err(e) = self.dot(input) {
                self.error(e);
            }
            return;
        }
        let (stmts, rest) = super::sql::split(input);
        let mut stmts = stmts;
        if !super::sql::is_blank(&rest) {
            stmts.push(rest.trim().to_string());
        }
        for s in stmts {
            if let Err(e) = self.statement(&s) {
                self.error(e);
            }
        }
    }

    /// A query straight to the node, its rows (for `.tables`, completion).
    pub fn query_rows(&mut self, sql: &str) -> Result<(Vec<String>, Vec<Vec<Value>>), Error> {
        let path = format!("/db/query?level={}&q={}", self.settings.consistency, url_encode(sql));
        let body = self.client.call(Method::GET, &path, None)?;
        let rs = results(&body)?;
        let r = rs.first().cloned().unwrap_or(Value::Null);
        if let Some(e) = r.get("error").and_then(Value::as_str) {
            return Err(Error::Other(e.to_string()));
        }
        Ok(rowset(&r))
    }

    fn statement(&mut self, sql: &str) -> Result<(), Error> {
        let mut q = vec!["timings".to_string()];
        if self.settings.blobarray {
            q.push("blob_array".into());
        }
        let endpoint = if self.settings.forcewrites {
            "/db/execute"
        } else {
            q.push(format!("level={}", self.settings.consistency));
            "/db/request"
        };
        let path = format!("{endpoint}?{}", q.join("&"));
        let body = serde_json::json!([sql]).to_string();
        let answer = self.client.call(Method::POST, &path, Some(("application/json", Bytes::from(body))))?;
        for r in results(&answer)? {
            self.print_result(&r)?;
        }
        Ok(())
    }

    fn print_result(&mut self, r: &Value) -> Result<(), Error> {
        if let Some(e) = r.get("error").and_then(Value::as_str) {
            return Err(Error::Other(e.to_string()));
        }
        let style = self.settings.style;
        let (decorated, timer, changes) = (self.settings.decorated, self.settings.timer, self.settings.changes);
        let io = |e: std::io::Error| Error::Other(e.to_string());
        let mut out = self.out();
        if r.get("columns").is_some() {
            let (cols, vals) = rowset(r);
            render::rows(&mut out, &style, &cols, &vals).map_err(io)?;
            if decorated && style.mode != Mode::Json {
                let n = vals.len();
                writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" }).map_err(io)?;
            }
        } else if changes {
            let n = r.get("rows_affected").and_then(Value::as_i64).unwrap_or(0);
            let id = r.get("last_insert_id").and_then(Value::as_i64).unwrap_or(0);
            let extra = if id > 0 { format!(", last insert id {id}") } else { String::new() };
            writeln!(out, "{n} row{} affected{extra}", if n == 1 { "" } else { "s" }).map_err(io)?;
        }
        if timer {
            if let Some(t) = r.get("time").and_then(Value::as_f64) {
                writeln!(out, "Run Time: {:.3} ms (on the node)", t * 1000.0).map_err(io)?;
            }
        }
        Ok(())
    }

    /// Print JSON from the node, indented.
    fn show_json(&mut self, path: &str) -> Result<(), Error> {
        let body = self.client.call(Method::GET, path, None)?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
        let text = serde_json::to_string_pretty(&v).unwrap_or_default();
        writeln!(self.out(), "{text}").map_err(|e| Error::Other(e.to_string()))
    }

    fn simple(&mut self, method: Method, path: &str, body: Option<Value>) -> Result<Bytes, Error> {
        let body = body.map(|b| ("application/json", Bytes::from(b.to_string())));
        self.client.call(method, path, body)
    }

    /// A dot command.
    fn dot(&mut self, line: &str) -> Result<(), String> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or_default().to_ascii_lowercase();
        let args: Vec<&str> = words.collect();
        let arg = args.first().copied();
        let e = |e: Error| e.to_string();
        match cmd.as_str() {
            ".help" => {
                let mut out = self.out();
                for (c, h) in DOT_COMMANDS {
                    let _ = writeln!(out, "{c:<13}{h}");
                }
            }
            ".quit" | ".exit" => self.quit = true,
            ".tables" => {
                let (_, rows) = self
                    .query_rows(
                        "SELECT name FROM sqlite_master WHERE type IN ('table','view') AND name NOT LIKE 'sqlite_%' ORDER BY 1",
                    )
                    .map_err(e)?;
                let names: Vec<String> = rows.iter().filter_map(|r| r.first()?.as_str().map(String::from)).collect();
                let _ = writeln!(self.out(), "{}", names.join("  "));
            }
            ".indexes" | ".indices" => {
                let (_, rows) = self
                    .query_rows(
                        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY 1",
                    )
                    .map_err(e)?;
                let mut out = self.out();
                for r in rows {
                    let _ = writeln!(out, "{}", r.first().and_then(Value::as_str).unwrap_or_default());
                }
            }
            ".schema" => {
                let filter = match arg {
                    Some(t) => format!(" AND tbl_name = '{}'", t.replace('\'', "''")),
                    None => String::new(),
                };
                let sql = format!(
                    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'{filter} ORDER BY rowid"
                );
                let (_, rows) = self.query_rows(&sql).map_err(e)?;
                let mut out = self.out();
                for r in rows {
                    let _ = writeln!(out, "{};", r.first().and_then(Value::as_str).unwrap_or_default());
                }
            }
            ".mode" => match arg.and_then(Mode::parse) {
                Some(m) => self.settings.style.mode = m,
                None => return Err("usage: .mode table|column|csv|json|line|list".into()),
            },
            ".timer" => self.settings.timer = on_off(arg)?,
            ".changes" => self.settings.changes = on_off(arg)?,
            ".forcewrites" => self.settings.forcewrites = on_off(arg)?,
            ".blobarray" => self.settings.blobarray = on_off(arg)?,
            ".consistency" => match arg {
                None => {
                    let level = self.settings.consistency.clone();
                    let _ = writeln!(self.out(), "{level}");
                }
                Some(l) if CONSISTENCY.contains(&l) => self.settings.consistency = l.to_string(),
                Some(_) => return Err(format!("read levels: {}", CONSISTENCY.join(", "))),
            },
            ".output" => match arg {
                None | Some("stdout") => self.output = None,
                Some(f) => {
                    let file = std::fs::File::create(f).map_err(|err| format!("{f}: {err}"))?;
                    self.output = Some((f.to_string(), file));
                }
            },
            ".show" => {
                let s = &self.settings;
                let text = format!(
                    "node: {}://{}{}\nmode: {}\ntimer: {}\nchanges: {}\nforcewrites: {}\nblobarray: {}\nconsistency: {}\noutput: {}",
                    self.client.options().scheme,
                    self.client.addr(),
                    self.client.options().prefix,
                    s.style.mode.name(),
                    if s.timer { "on" } else { "off" },
                    if s.changes { "on" } else { "off" },
                    if s.forcewrites { "on" } else { "off" },
                    if s.blobarray { "on" } else { "off" },
                    s.consistency,
                    self.output.as_ref().map(|(f, _)| f.as_str()).unwrap_or("stdout"),
                );
                let _ = writeln!(self.out(), "{text}");
            }
            ".status" => self.show_json("/status").map_err(e)?,
            ".expvar" => self.show_json("/debug/vars").map_err(e)?,
            ".leader" => self.show_json("/leader").map_err(e)?,
            ".nodes" => self.nodes().map_err(e)?,
            ".ready" => {
                let r = self.client.call(Method::GET, "/readyz", None);
                match r {
                    Ok(b) => {
                        let _ = write!(self.out(), "{}", String::from_utf8_lossy(&b));
                    }
                    Err(err) => return Err(err.to_string()),
                }
            }
            ".snapshot" => {
                self.simple(Method::POST, "/snapshot", None).map_err(e)?;
                let _ = writeln!(self.out(), "snapshot taken");
            }
            ".reap" => {
                let b = self.simple(Method::POST, "/reap", None).map_err(e)?;
                let _ = writeln!(self.out(), "{}", String::from_utf8_lossy(&b).trim());
            }
            ".remove" => {
                let id = arg.ok_or("usage: .remove ID")?;
                self.simple(Method::DELETE, "/remove", Some(serde_json::json!({ "id": id }))).map_err(e)?;
                let _ = writeln!(self.out(), "node {id} removed");
            }
            ".stepdown" => {
                let body = arg.map(|id| serde_json::json!({ "id": id }));
                self.simple(Method::POST, "/leader?wait", body).map_err(e)?;
                let _ = writeln!(self.out(), "leadership handed over");
            }
            ".backup" => {
                let f = arg.ok_or("usage: .backup FILE")?;
                let n = transfer::download(&mut self.client, "/db/backup", Some(Path::new(f)), &mut std::io::sink())
                    .map_err(e)?;
                eprintln!("{n} bytes written to {f}");
            }
            ".dump" => {
                let path = "/db/backup?fmt=sql";
                match arg {
                    Some(f) => {
                        let n = transfer::download(&mut self.client, path, Some(Path::new(f)), &mut std::io::sink())
                            .map_err(e)?;
                        eprintln!("{n} bytes written to {f}");
                    }
                    None => {
                        let mut out: Vec<u8> = Vec::new();
                        transfer::download(&mut self.client, path, None, &mut out).map_err(e)?;
                        let _ = self.out().write_all(&out);
                    }
                }
            }
            ".restore" => {
                let f = arg.ok_or("usage: .restore FILE")?;
                let ct = if is_sqlite_file(f) { "application/octet-stream" } else { "text/plain" };
                let b = transfer::upload(&mut self.client, "/db/load", transfer::Source::File(Path::new(f)), ct)
                    .map_err(e)?;
                // A SQL text load answers like /db/execute: its errors are in the results.
                for r in results(&b).map_err(e)? {
                    if let Some(err) = r.get("error").and_then(Value::as_str) {
                        return Err(err.to_string());
                    }
                }
                let _ = writeln!(self.out(), "database restored from {f}");
            }
            ".boot" => {
                let f = arg.ok_or("usage: .boot FILE")?;
                transfer::upload(
                    &mut self.client,
                    "/boot",
                    transfer::Source::File(Path::new(f)),
                    "application/octet-stream",
                )
                .map_err(e)?;
                let _ = writeln!(self.out(), "node booted from {f}");
            }
            ".read" => {
                let f = arg.ok_or("usage: .read FILE")?;
                let text = std::fs::read_to_string(f).map_err(|err| format!("{f}: {err}"))?;
                self.read_file(f, &text).map_err(e)?;
            }
            ".sysdump" => {
                let f = arg.ok_or("usage: .sysdump FILE")?;
                let mut dump = String::new();
                for path in ["/status?pretty", "/nodes?pretty", "/debug/vars", "/readyz"] {
                    let text = match self.client.call(Method::GET, path, None) {
                        Ok(b) => String::from_utf8_lossy(&b).to_string(),
                        Err(err) => format!("error: {err}"),
                    };
                    dump.push_str(&format!("==== GET {path}\n{}\n\n", text.trim_end()));
                }
                std::fs::write(f, dump).map_err(|err| format!("{f}: {err}"))?;
                let _ = writeln!(self.out(), "system dump written to {f}");
            }
            other => return Err(format!("unknown command {other}: .help lists them")),
        }
        Ok(())
    }

    /// `.read`: every statement of the file in one request, in one transaction.
    fn read_file(&mut self, name: &str, text: &str) -> Result<(), Error> {
        let (mut stmts, rest) = super::sql::split(text);
        if !super::sql::is_blank(&rest) {
            stmts.push(rest.trim().to_string());
        }
        let body = serde_json::to_string(&stmts).map_err(|e| Error::Other(e.to_string()))?;
        let body = transfer::Source::Bytes(Bytes::from(body), name);
        let answer = transfer::upload(&mut self.client, "/db/execute?transaction", body, "application/json")?;
        let rs = results(&answer)?;
        for r in &rs {
            if let Some(e) = r.get("error").and_then(Value::as_str) {
                return Err(Error::Other(format!("{e} (nothing from the file was applied)")));
            }
        }
        let _ = writeln!(self.out(), "{} statements run", rs.len());
        Ok(())
    }

    fn nodes(&mut self) -> Result<(), Error> {
        let body = self.client.call(Method::GET, "/nodes?nonvoters&ver=2", None)?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| Error::Other(e.to_string()))?;
        let nodes = v.get("nodes").and_then(Value::as_array).cloned().unwrap_or_default();
        let cols: Vec<String> =
            ["id", "api_addr", "addr", "voter", "reachable", "leader"].iter().map(|s| s.to_string()).collect();
        let vals: Vec<Vec<Value>> =
            nodes.iter().map(|n| cols.iter().map(|c| n.get(c).cloned().unwrap_or(Value::Null)).collect()).collect();
        let style = Style {
            mode: if self.settings.style.mode == Mode::List { Mode::List } else { Mode::Table },
            ..self.settings.style
        };
        render::rows(&mut self.out(), &style, &cols, &vals).map_err(|e| Error::Other(e.to_string()))
    }

    /// Whether the node is the leader (`None` when it cannot tell, as an rqlite node may not).
    pub fn is_leader(&mut self) -> Option<bool> {
        let body = self.client.call(Method::GET, "/status?key=store.raft.state", None).ok()?;
        let v: Value = serde_json::from_slice(&body).ok()?;
        Some(v.as_str()? == "Leader")
    }
}

fn is_sqlite_file(path: &str) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == b"SQLite format 3\0"
}
