//! The `raftlite` shell against real nodes: driven through a pseudo-terminal as a person uses it
//! (statements over several lines, history across restarts, tab completion, Ctrl-C, progress of a
//! large backup, falling over to an alternative node, a wrong password, an unreachable node), and
//! scripted (stdin from a file, `-e`), with its output and exit status checked.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::tls::Pki;
use common::*;
use rexpect::session::PtySession;

const SHELL: &str = env!("CARGO_BIN_EXE_raftlite");

/// The node's API port.
fn port(n: &Node) -> String {
    n.http.rsplit_once(':').map(|(_, p)| p.to_string()).expect("port")
}

fn host(n: &Node) -> String {
    n.http.rsplit_once(':').map(|(h, _)| h.to_string()).expect("host")
}

/// The shell on a pseudo-terminal, with `home` as its home directory. The locale is C, so tables
/// are drawn in ASCII (rexpect reads the terminal byte by byte; the Unicode box drawing is checked
/// by the renderer's unit tests).
fn interactive(home: &Path, args: &[&str]) -> PtySession {
    let mut cmd = Command::new(SHELL);
    cmd.args(args).env("HOME", home).env("TERM", "xterm").env("LANG", "C").env("NO_COLOR", "1");
    rexpect::session::spawn_command(cmd, Some(30_000)).expect("spawn the shell")
}

/// Type `line` at the prompt (only once it is shown: a terminal drops input typed ahead while
/// the shell switches it to raw mode), expect `want` in the answer, then the next `prompt`.
fn ask(sh: &mut PtySession, line: &str, want: &str, prompt: &str) {
    sh.send_line(line).expect("send");
    sh.exp_string(want).unwrap_or_else(|e| panic!("{line}: expected {want:?}: {e}"));
    sh.exp_string(prompt).unwrap_or_else(|e| panic!("{line}: expected the prompt {prompt:?}: {e}"));
}

fn node_args(n: &Node) -> Vec<String> {
    vec!["-H".into(), host(n), "-p".into(), port(n)]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The shell run with `args`, `stdin` piped in: (exit code, stdout, stderr).
fn scripted(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(SHELL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the shell");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("shell output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn interactive_editing_history_completion_and_interrupts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("n"), &[]);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let prompt = format!("{}> ", n.http);
    let args = node_args(&n);
    let mut sh = interactive(&home, &strs(&args));
    sh.exp_string(&prompt).expect("prompt");
    // A statement over two lines.
    ask(&mut sh, "CREATE TABLE people (id INTEGER PRIMARY KEY,", "", "...>");
    ask(&mut sh, "  name TEXT);", "0 rows affected", &prompt);
    ask(&mut sh, "INSERT INTO people(name) VALUES('ada'), (NULL);", "2 rows affected, last insert id 2", &prompt);
    // Tab completes the table's name, read from the node.
    sh.send("SELECT name FROM peo\t").expect("send");
    sh.flush().expect("flush");
    sh.exp_string("ple").expect("completed");
    sh.send_line(" ORDER BY id;").expect("send");
    sh.exp_string("| ada  |").expect("a table");
    sh.exp_string("| NULL |").expect("NULL shown");
    sh.exp_string("(2 rows)").expect("row count");
    sh.exp_string(&prompt).expect("prompt");
    // Ctrl-C drops the input, not the shell.
    sh.send("SELECT half a statement").expect("send");
    sh.flush().expect("flush");
    sh.exp_string("statement").expect("echo");
    sh.send_control('c').expect("ctrl-c");
    sh.exp_string(&prompt).expect("prompt after ctrl-c");
    ask(&mut sh, "SELECT 6 * 7 AS answer;", "42", &prompt);
    // Errors are one line, and the shell goes on.
    ask(&mut sh, "SELECT * FROM nowhere;", "Error: no such table: nowhere", &prompt);
    ask(&mut sh, ".mode csv", "", &prompt);
    ask(&mut sh, "SELECT id, name FROM people;", "1,ada", &prompt);
    sh.send_line(".quit").expect("send");
    sh.exp_eof().expect("exit");
    // History survives a restart: five entries back is the question (up arrow), and reverse
    // search (Ctrl-R) finds it too.
    let history = std::fs::read_to_string(home.join(".raftlite_history")).expect("history file");
    assert!(history.contains("SELECT 6 * 7 AS answer;"), "{history}");
    let mut sh = interactive(&home, &strs(&args));
    sh.exp_string(&prompt).expect("prompt");
    sh.send(&"\x1b[A".repeat(5)).expect("up arrows");
    sh.flush().expect("flush");
    sh.exp_string("SELECT 6 * 7 AS answer;").expect("recalled");
    sh.send("\r").expect("enter");
    sh.flush().expect("flush");
    sh.exp_string("42").expect("answer again");
    sh.exp_string(&prompt).expect("prompt");
    sh.send_control('r').expect("ctrl-r");
    sh.send("people;").expect("search");
    sh.flush().expect("flush");
    sh.exp_string("SELECT id, name FROM people;").expect("found by reverse search");
    sh.send("\r").expect("accept");
    sh.flush().expect("flush");
    sh.send("\r").expect("enter");
    sh.flush().expect("flush");
    sh.exp_string("ada").expect("rows");
    sh.exp_string(&prompt).expect("prompt");
    sh.send_control('d').expect("ctrl-d");
    sh.exp_eof().expect("exit on ctrl-d");
}

#[test]
fn backup_with_progress_and_restore_into_a_fresh_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Node::start(&dir.path().join("a"), &[]);
    a.execute(json!(["CREATE TABLE big (id INTEGER PRIMARY KEY, v BLOB)"]));
    // About 40 MB, so the transfer lasts long enough to draw its bar.
    for _ in 0..4 {
        let r = a.execute(json!([
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10000) INSERT INTO big(v) SELECT randomblob(1000) FROM c"
        ]));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let backup = dir.path().join("backup.db");
    let mut sh = interactive(&home, &strs(&node_args(&a)));
    let prompt = format!("{}> ", a.http);
    sh.exp_string(&prompt).expect("prompt");
    sh.send_line(&format!(".backup {}", backup.display())).expect("send");
    sh.exp_string("MiB").expect("a progress bar with bytes");
    sh.exp_string(&format!("bytes written to {}", backup.display())).expect("done");
    sh.exp_string(&prompt).expect("prompt");
    sh.send_line(".quit").expect("send");
    sh.exp_eof().expect("exit");
    assert!(!dir.path().join("backup.db.partial").exists());

    let b = Node::start(&dir.path().join("b"), &[]);
    let mut sh = interactive(&home, &strs(&node_args(&b)));
    let prompt = format!("{}> ", b.http);
    sh.exp_string(&prompt).expect("prompt");
    ask(&mut sh, &format!(".restore {}", backup.display()), "database restored", &prompt);
    sh.send_line(".quit").expect("send");
    sh.exp_eof().expect("exit");
    let digest = "SELECT COUNT(*), SUM(length(v)), SUM(id), hex(substr(max(v), 1, 16)) FROM big";
    assert_eq!(b.rows(digest), a.rows(digest));
    assert_eq!(b.rows("SELECT COUNT(*) FROM big"), vec![json!([40000])]);
}

#[test]
fn the_shell_falls_over_to_an_alternative_node() {
    let mut c = Cluster::start(2, &[]);
    let home = tempfile::tempdir().expect("home");
    let (first, second) = (c.nodes[0].http.clone(), c.nodes[1].http.clone());
    let args = node_args(&c.nodes[0]);
    let mut args = strs(&args);
    args.extend(["-a", &second, "-t", "3s"]);
    let mut sh = interactive(home.path(), &args);
    let prompt = format!("{first}> ");
    sh.exp_string(&prompt).expect("prompt on the first node");
    ask(&mut sh, ".consistency none", "", &prompt);
    ask(&mut sh, "SELECT 'from the first';", "from the first", &prompt);
    c.nodes[0].kill();
    sh.send_line("SELECT 'from the second';").expect("send");
    sh.exp_string(&format!("now connected to {second}")).expect("fell over");
    sh.exp_string("from the second").expect("answer from the alternative");
    sh.exp_string(&format!("{second} (follower)> ")).expect("the prompt names the new node, not the leader");
    sh.send_line(".quit").expect("send");
    sh.exp_eof().expect("exit");
}

#[test]
fn wrong_password_and_unreachable_node_are_one_readable_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.json");
    std::fs::write(&users, r#"[{"username": "admin", "password": "right", "perms": ["all"]}]"#).expect("write");
    let users = users.display().to_string();
    let mut n =
        Node::new("1", &dir.path().join("n"), "127.0.0.1", &["-auth", &users]).with_credentials("admin", "right");
    n.spawn();
    n.wait_ready();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut args = node_args(&n);
    args.extend(["-u".into(), "admin:wrong".into()]);
    let mut sh = interactive(&home, &strs(&args));
    let prompt = format!("{}> ", n.http);
    sh.exp_string(&prompt).expect("prompt");
    ask(&mut sh, "SELECT 1;", "Error: 401 Unauthorized: unauthorized", &prompt);
    sh.send_line(".quit").expect("send");
    sh.exp_eof().expect("exit");
    // The right password.
    let mut args = node_args(&n);
    args.extend(["-u".into(), "admin:right".into(), "-e".into(), "SELECT 41 + 1".into()]);
    let (code, out, err) = scripted(&strs(&args), "");
    assert_eq!((code, out.trim()), (0, "42"), "{err}");

    // Nothing listens on this port.
    let closed = free_port().to_string();
    let mut sh = interactive(&home, &["-p", &closed]);
    let prompt = format!("127.0.0.1:{closed}> ");
    sh.exp_string(&prompt).expect("prompt");
    let refused = format!("Error: cannot reach 127.0.0.1:{closed}: connection refused; is raftlited running?");
    ask(&mut sh, "SELECT 1;", &refused, &prompt);
    sh.send_line(".quit").expect("send");
    sh.exp_eof().expect("exit");
}

#[test]
fn https_with_a_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "api");
    let (cert, key) = pki.issue("node", "node-1");
    let (ccert, ckey) = pki.issue("client", "client");
    let ca = pki.ca("api");
    let mut n = Node::new(
        "1",
        &dir.path().join("n"),
        "127.0.0.1",
        &["-http-cert", &cert, "-http-key", &key, "-http-ca-cert", &ca, "-http-verify-client"],
    );
    n.spawn();
    let mut args = node_args(&n);
    args.extend(["-s", "https", "-c", &ca, "-d", &ccert, "-k", &ckey, "-e", "SELECT 'over TLS'"].map(String::from));
    let out = wait_for("the HTTPS node to answer the shell", Duration::from_secs(30), || {
        let (code, out, _) = scripted(&strs(&args), "");
        (code == 0).then_some(out)
    });
    assert_eq!(out.trim(), "over TLS");
    // Without the CA file the node's certificate is not trusted, and the shell says so.
    let mut args = node_args(&n);
    args.extend(["-s", "https", "-e", "SELECT 1"].map(String::from));
    let (code, _, err) = scripted(&strs(&args), "");
    assert_eq!(code, 1);
    assert!(err.contains("TLS with") && err.contains("not trusted"), "{err}");
    n.kill();
}

#[test]
fn scripts_from_stdin_and_one_command_with_exit_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::start(&dir.path().join("n"), &[]);
    let args = node_args(&n);
    let script = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);\n\
                  INSERT INTO t(v) VALUES ('one;two'), (NULL);\n\
                  -- a comment\n\
                  SELECT id, v\n  FROM t ORDER BY id;\n\
                  .tables\n";
    let (code, out, err) = scripted(&strs(&args), script);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1|one;two\n2|\nt\n");
    // A failing statement: the rest still runs, and the exit status says something failed.
    let (code, out, err) = scripted(&strs(&args), "SELECT nope FROM t;\nSELECT COUNT(*) FROM t;\n");
    assert_eq!(code, 1);
    assert_eq!(out, "2\n");
    assert!(err.contains("Error: no such column: nope"), "{err}");
    // -e: one command.
    let mut e = args.clone();
    e.extend(["-e".into(), ".mode json".into()]);
    assert_eq!(scripted(&strs(&e), "").0, 0);
    let mut e = args.clone();
    e.extend(["-e".into(), "SELECT v FROM t WHERE id = 1".into()]);
    let (code, out, _) = scripted(&strs(&e), "");
    assert_eq!((code, out.as_str()), (0, "one;two\n"));
    let mut e = args.clone();
    e.extend(["-e".into(), "INSERT INTO missing VALUES (1)".into()]);
    let (code, _, err) = scripted(&strs(&e), "");
    assert_eq!(code, 1);
    assert!(err.contains("no such table: missing"), "{err}");
    // Cluster dot commands, as a script: each prints what the node says.
    let dump = dir.path().join("sysdump.txt");
    let script = format!(
        ".nodes\n.ready\n.status\n.snapshot\n.timer on\n.changes on\nINSERT INTO t(v) VALUES ('timed');\n.show\n.sysdump {}\n",
        dump.display()
    );
    let (code, out, err) = scripted(&strs(&args), &script);
    assert_eq!(code, 0, "{err}");
    for want in [
        format!("|http://{}|", n.http),
        "[+]node ok".to_string(),
        "\"store\"".to_string(),
        "snapshot taken".into(),
        "1 row affected, last insert id 3".into(),
        "Run Time: ".into(),
        "consistency: weak".into(),
        "system dump written".into(),
    ] {
        assert!(out.contains(&want), "{want:?} not in {out}");
    }
    let dumped = std::fs::read_to_string(&dump).expect("sysdump");
    assert!(dumped.contains("==== GET /nodes") && dumped.contains("[+]node ok"), "{dumped}");
    n.execute(json!(["DELETE FROM t WHERE v = 'timed'"]));
    // .read runs a file as one request: all of it or none of it.
    let sql = dir.path().join("more.sql");
    std::fs::write(&sql, "INSERT INTO t(v) VALUES ('x');\nINSERT INTO nowhere VALUES (1);\n").expect("write");
    let mut e = args.clone();
    e.extend(["-e".into(), format!(".read {}", sql.display())]);
    let (code, _, err) = scripted(&strs(&e), "");
    assert_eq!(code, 1, "{err}");
    assert_eq!(n.rows("SELECT COUNT(*) FROM t"), vec![json!([2])]);
}
