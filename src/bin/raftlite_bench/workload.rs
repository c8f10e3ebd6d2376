//! What each benchmark client sends: the workloads (`--workloads`) and the HTTP request of each.

/// What each client request does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// One-row INSERT per request.
    Insert,
    /// 100 one-row INSERT statements per request.
    Bulk,
    /// One-row INSERT per request, queued (`?queue`); the run ends with a `queue&wait` barrier.
    Queued,
    /// A point read at this level.
    Read(&'static str),
    /// 90 % point reads (weak), 10 % one-row INSERTs.
    Mix,
    /// dqlite-demo's key/value API: PUT /key (one INSERT OR REPLACE in a dqlite transaction).
    DqlitePut,
    /// dqlite-demo's key/value API: GET /key.
    DqliteGet,
}

impl Workload {
    pub fn parse(s: &str) -> Option<Workload> {
        Some(match s {
            "insert" => Workload::Insert,
            "bulk" => Workload::Bulk,
            "queued" => Workload::Queued,
            "read-none" => Workload::Read("none"),
            "read-weak" => Workload::Read("weak"),
            "read-linearizable" => Workload::Read("linearizable"),
            "mix" => Workload::Mix,
            _ => return None,
        })
    }

    pub fn name(&self) -> String {
        match self {
            Workload::Insert => "insert".into(),
            Workload::Bulk => "bulk x100".into(),
            Workload::Queued => "queued insert".into(),
            Workload::Read(l) => format!("read {l}"),
            Workload::Mix => "90/10 read/write".into(),
            Workload::DqlitePut => "PUT".into(),
            Workload::DqliteGet => "GET".into(),
        }
    }

    /// Method, path and query, body, and the text an acknowledged answer contains.
    pub fn request(&self, c: usize, i: u64) -> (&'static str, String, String, &'static str) {
        let insert = |q: &str| {
            (
                "POST",
                format!("/db/execute{q}"),
                format!(r#"[["INSERT INTO bench(c, v) VALUES(?, ?)", {c}, "value-{i}"]]"#),
            )
        };
        let read = |level: &str| {
            let id = 1 + (i * 7919 + c as u64 * 104_729) % 1000;
            ("GET", format!("/db/query?level={level}&q=SELECT%20v%20FROM%20bench%20WHERE%20id%3D{id}"), String::new())
        };
        match self {
            Workload::Insert => {
                let (m, p, b) = insert("");
                (m, p, b, "rows_affected")
            }
            Workload::Queued => {
                let (m, p, b) = insert("?queue");
                (m, p, b, "sequence_number")
            }
            Workload::Bulk => {
                let stmts: Vec<String> = (0..100)
                    .map(|k| format!(r#"["INSERT INTO bench(c, v) VALUES(?, ?)", {c}, "value-{i}-{k}"]"#))
                    .collect();
                ("POST", "/db/execute".into(), format!("[{}]", stmts.join(",")), "rows_affected")
            }
            Workload::Read(level) => {
                let (m, p, b) = read(level);
                (m, p, b, "\"values\"")
            }
            Workload::Mix if i % 10 == 9 => {
                let (m, p, b) = insert("");
                (m, p, b, "rows_affected")
            }
            Workload::Mix => {
                let (m, p, b) = read("weak");
                (m, p, b, "\"values\"")
            }
            Workload::DqlitePut => ("PUT", format!("/k-{c}-{i}"), format!("value-{i}"), "done"),
            Workload::DqliteGet => {
                ("GET", format!("/seed-{}", (i * 7919 + c as u64 * 104_729) % 1000), String::new(), "seed")
            }
        }
    }
}
