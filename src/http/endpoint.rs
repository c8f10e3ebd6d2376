//! The endpoint table: every path the HTTP API serves, routed once (rqlite's prefix routing,
//! docs/API.md §2), with what each allows in one place: its methods, whether a follower may
//! forward it to the leader, whether its body is read before the handler runs, and the permission
//! it needs (docs/API.md §14). The router, the metrics labels and (with `-auth`) the permission
//! check all read this table, so a new endpoint is one row here.

use http::Method;

/// rqlite's permission names (docs/API.md §14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    All,
    Execute,
    Query,
    Load,
    Backup,
    Snapshot,
    Remove,
    Status,
    Ready,
    LeaderOps,
    Ui,
    Join,
    JoinReadOnly,
    JoinReadReplica,
}

impl Permission {
    /// The name used in the credentials file.
    pub fn name(self) -> &'static str {
        match self {
            Permission::All => "all",
            Permission::Execute => "execute",
            Permission::Query => "query",
            Permission::Load => "load",
            Permission::Backup => "backup",
            Permission::Snapshot => "snapshot",
            Permission::Remove => "remove",
            Permission::Status => "status",
            Permission::Ready => "ready",
            Permission::LeaderOps => "leader-ops",
            Permission::Ui => "ui",
            Permission::Join => "join",
            Permission::JoinReadOnly => "join-read-only",
            Permission::JoinReadReplica => "join-read-replica",
        }
    }

    /// Every permission.
    pub const ALL: &'static [Permission] = &[
        Permission::All,
        Permission::Execute,
        Permission::Query,
        Permission::Load,
        Permission::Backup,
        Permission::Snapshot,
        Permission::Remove,
        Permission::Status,
        Permission::Ready,
        Permission::LeaderOps,
        Permission::Ui,
        Permission::Join,
        Permission::JoinReadOnly,
        Permission::JoinReadReplica,
    ];

    /// The permission a credentials file names `name`.
    pub fn from_name(name: &str) -> Option<Permission> {
        Permission::ALL.iter().copied().find(|p| p.name() == name)
    }
}

/// Every endpoint of the HTTP API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Execute,
    Query,
    Request,
    Sql,
    Backup,
    Load,
    Boot,
    Snapshot,
    Reap,
    Status,
    Nodes,
    Readyz,
    Leader,
    Remove,
    DebugVars,
    Metrics,
    /// `POST /debug/failpoints` (builds with the `failpoints` feature only).
    Failpoints,
    /// rqlite endpoints raftlite does not serve (`/debug/pprof/*`, `/licenses`): 404.
    NotImplemented,
    /// `/`: a redirect to the console, as rqlite.
    Root,
    /// `/console`: a redirect to `/console/`.
    Console,
}

/// What the table says about one endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Methods other than OPTIONS the endpoint answers; others get 405.
    pub methods: &'static [Method],
    /// A follower may forward it to the leader (or answer 301 with `redirect`); `forward.rs`
    /// refuses to forward any other.
    pub forwardable: bool,
    /// The body is read (capped at `-max-body-bytes`) before the handler runs; endpoints that
    /// stream their body (`/boot`) or ignore it do not.
    pub reads_body: bool,
    /// Permissions the caller needs, every one (`all` stands for any); empty: open to everyone.
    pub permissions: &'static [Permission],
    /// The `endpoint` label of the HTTP metrics.
    pub label: &'static str,
}

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const GET_POST: &[Method] = &[Method::GET, Method::POST];
const DELETE: &[Method] = &[Method::DELETE];
const ANY: &[Method] = &[Method::GET, Method::POST, Method::DELETE, Method::PUT];

use Permission as P;

impl Endpoint {
    /// Every endpoint, for tests and documentation checks.
    pub const ALL: &'static [Endpoint] = &[
        Endpoint::Execute,
        Endpoint::Query,
        Endpoint::Request,
        Endpoint::Sql,
        Endpoint::Backup,
        Endpoint::Load,
        Endpoint::Boot,
        Endpoint::Snapshot,
        Endpoint::Reap,
        Endpoint::Status,
        Endpoint::Nodes,
        Endpoint::Readyz,
        Endpoint::Leader,
        Endpoint::Remove,
        Endpoint::DebugVars,
        Endpoint::Metrics,
        Endpoint::Failpoints,
        Endpoint::NotImplemented,
        Endpoint::Root,
        Endpoint::Console,
    ];

    /// The table.
    pub const fn spec(self) -> Spec {
        const fn s(
            methods: &'static [Method],
            forwardable: bool,
            reads_body: bool,
            permissions: &'static [Permission],
            label: &'static str,
        ) -> Spec {
            Spec { methods, forwardable, reads_body, permissions, label }
        }
        match self {
            Endpoint::Execute => s(POST, true, true, &[P::Execute], "execute"),
            Endpoint::Query => s(GET_POST, true, true, &[P::Query], "query"),
            // Both, as rqlite: a request may hold reads and writes.
            Endpoint::Request => s(POST, true, true, &[P::Execute, P::Query], "request"),
            Endpoint::Sql => s(GET_POST, false, true, &[P::Query], "sql"),
            Endpoint::Backup => s(GET, true, false, &[P::Backup], "backup"),
            Endpoint::Load => s(POST, true, true, &[P::Load], "load"),
            Endpoint::Boot => s(POST, false, false, &[P::Load], "boot"),
            Endpoint::Snapshot => s(POST, false, false, &[P::Snapshot], "snapshot"),
            Endpoint::Reap => s(POST, false, false, &[P::Snapshot], "reap"),
            Endpoint::Status => s(GET, false, false, &[P::Status], "status"),
            Endpoint::Nodes => s(GET, false, false, &[P::Status], "nodes"),
            Endpoint::Readyz => s(GET, false, false, &[P::Ready], "readyz"),
            Endpoint::Leader => s(GET_POST, true, true, &[P::LeaderOps], "leader"),
            Endpoint::Remove => s(DELETE, true, true, &[P::Remove], "remove"),
            Endpoint::DebugVars => s(GET, false, false, &[P::Status], "debug_vars"),
            Endpoint::Metrics => s(GET, false, false, &[P::Status], "metrics"),
            Endpoint::Failpoints => s(POST, false, true, &[P::All], "other"),
            Endpoint::NotImplemented => s(ANY, false, true, &[P::Status], "other"),
            Endpoint::Root => s(ANY, false, false, &[], "other"),
            Endpoint::Console => s(ANY, false, false, &[P::Ui], "other"),
        }
    }

    /// The endpoint `path` routes to: exact paths first, then rqlite's prefixes.
    pub fn route(path: &str) -> Option<Endpoint> {
        const EXACT: &[(&str, Endpoint)] = &[
            ("/", Endpoint::Root),
            ("/console", Endpoint::Console),
            ("/leader", Endpoint::Leader),
            ("/boot", Endpoint::Boot),
            ("/snapshot", Endpoint::Snapshot),
            ("/reap", Endpoint::Reap),
            ("/metrics", Endpoint::Metrics),
            ("/licenses", Endpoint::NotImplemented),
            ("/debug/failpoints", Endpoint::Failpoints),
        ];
        const PREFIXES: &[(&str, Endpoint)] = &[
            ("/db/execute", Endpoint::Execute),
            ("/db/query", Endpoint::Query),
            ("/db/request", Endpoint::Request),
            ("/db/sql", Endpoint::Sql),
            ("/db/backup", Endpoint::Backup),
            ("/db/load", Endpoint::Load),
            ("/status", Endpoint::Status),
            ("/nodes", Endpoint::Nodes),
            ("/readyz", Endpoint::Readyz),
            ("/remove", Endpoint::Remove),
            ("/debug/vars", Endpoint::DebugVars),
            ("/debug/", Endpoint::NotImplemented),
        ];
        let ep = EXACT
            .iter()
            .find(|(p, _)| *p == path)
            .or_else(|| PREFIXES.iter().find(|(pre, _)| path.starts_with(pre)))
            .map(|(_, e)| *e)?;
        // Only builds with fault injection serve the failpoint endpoint.
        if ep == Endpoint::Failpoints && !cfg!(feature = "failpoints") {
            return Some(Endpoint::NotImplemented);
        }
        Some(ep)
    }

    pub fn allows(self, m: &Method) -> bool {
        self.spec().methods.contains(m)
    }

    /// The path the endpoint is documented under (docs/openapi.yaml).
    pub const fn path(self) -> &'static str {
        match self {
            Endpoint::Execute => "/db/execute",
            Endpoint::Query => "/db/query",
            Endpoint::Request => "/db/request",
            Endpoint::Sql => "/db/sql",
            Endpoint::Backup => "/db/backup",
            Endpoint::Load => "/db/load",
            Endpoint::Boot => "/boot",
            Endpoint::Snapshot => "/snapshot",
            Endpoint::Reap => "/reap",
            Endpoint::Status => "/status",
            Endpoint::Nodes => "/nodes",
            Endpoint::Readyz => "/readyz",
            Endpoint::Leader => "/leader",
            Endpoint::Remove => "/remove",
            Endpoint::DebugVars => "/debug/vars",
            Endpoint::Metrics => "/metrics",
            Endpoint::Failpoints => "/debug/failpoints",
            Endpoint::NotImplemented => "/licenses",
            Endpoint::Root => "/",
            Endpoint::Console => "/console",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/openapi.yaml describes every endpoint of the table, with each method it answers.
    #[test]
    fn the_openapi_document_covers_the_table() {
        let doc = include_str!("../../docs/openapi.yaml");
        for ep in Endpoint::ALL {
            let path = ep.path();
            assert_eq!(Endpoint::route(path).map(|e| e == *ep || *ep == Endpoint::Failpoints), Some(true), "{path}");
            let at =
                doc.find(&format!("\n  {path}:\n")).unwrap_or_else(|| panic!("{path} is not in docs/openapi.yaml"));
            let section = &doc[at + 1..];
            let end = section[3..].find("\n  /").map(|e| e + 3).unwrap_or(section.len());
            for m in ep.spec().methods {
                let m = m.as_str().to_ascii_lowercase();
                assert!(section[..end].contains(&format!("\n    {m}:")), "{path}: {m} is not documented");
            }
        }
    }

    #[test]
    fn routes_by_exact_path_then_prefix() {
        assert_eq!(Endpoint::route("/db/execute"), Some(Endpoint::Execute));
        assert_eq!(Endpoint::route("/db/query/x"), Some(Endpoint::Query));
        assert_eq!(Endpoint::route("/status"), Some(Endpoint::Status));
        assert_eq!(Endpoint::route("/leader"), Some(Endpoint::Leader));
        assert_eq!(Endpoint::route("/leaderx"), None);
        assert_eq!(Endpoint::route("/debug/pprof/heap"), Some(Endpoint::NotImplemented));
        assert_eq!(Endpoint::route("/nope"), None);
    }

    #[test]
    fn every_endpoint_has_methods_and_a_label() {
        for e in Endpoint::ALL {
            let s = e.spec();
            assert!(!s.methods.is_empty(), "{e:?}");
            assert!(!s.label.is_empty(), "{e:?}");
        }
        assert!(Endpoint::Execute.allows(&Method::POST));
        assert!(!Endpoint::Execute.allows(&Method::GET));
        assert!(Endpoint::Query.spec().forwardable);
        assert!(!Endpoint::Boot.spec().reads_body);
    }
}
