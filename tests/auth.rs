//! Authentication and authorization with `-auth` (docs/API.md §14): every endpoint against every
//! kind of caller, on the leader and through a follower (which forwards the caller's
//! credentials to the leader, where they are checked again), and the cluster port's joins.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use raftlite::http::endpoint::{Endpoint, Permission};

const AUTH: &str = r#"[
    {"username": "root", "password": "r00t-pw", "perms": ["all"]},
    {"username": "nobody", "password": "nobody-pw", "perms": []},
    {"username": "joiner", "password": "joiner-pw", "perms": ["join", "remove"]},
    {"username": "ro-joiner", "password": "ro-pw", "perms": ["join-read-only"]},
    {"username": "*", "perms": ["ready"]}
]"#;

/// One request of the matrix: the endpoint it reaches, and the permissions docs/API.md §14 says
/// it needs.
struct Case {
    method: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
    needs: &'static [Permission],
}

const fn case(
    method: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
    needs: &'static [Permission],
) -> Case {
    Case { method, path, content_type, body, needs }
}

use Permission as P;
const JSON: &str = "application/json";
const TEXT: &str = "text/plain";

const CASES: &[Case] = &[
    case("POST", "/db/execute", JSON, r#"["CREATE TABLE IF NOT EXISTS t (v)"]"#, &[P::Execute]),
    case("GET", "/db/query?q=SELECT%201", JSON, "", &[P::Query]),
    case("POST", "/db/request", JSON, r#"["SELECT 1"]"#, &[P::Execute, P::Query]),
    case("GET", "/db/sql?q=SELECT%201", JSON, "", &[P::Query]),
    case("GET", "/db/backup", JSON, "", &[P::Backup]),
    case("POST", "/db/load", TEXT, "CREATE TABLE IF NOT EXISTS l (v);", &[P::Load]),
    case("POST", "/boot", "application/octet-stream", "not a database", &[P::Load]),
    case("POST", "/snapshot", TEXT, "", &[P::Snapshot]),
    case("POST", "/reap", TEXT, "", &[P::Snapshot]),
    case("GET", "/status", JSON, "", &[P::Status]),
    case("GET", "/nodes", JSON, "", &[P::Status]),
    case("GET", "/readyz", JSON, "", &[P::Ready]),
    case("GET", "/leader", JSON, "", &[P::LeaderOps]),
    case("DELETE", "/remove", JSON, r#"{"id":"no-such-node"}"#, &[P::Remove]),
    case("GET", "/debug/vars", JSON, "", &[P::Status]),
    case("GET", "/metrics", JSON, "", &[P::Status]),
    case("GET", "/debug/pprof/", JSON, "", &[P::Status]),
    case("GET", "/console", JSON, "", &[P::Ui]),
    case("POST", "/debug/failpoints", TEXT, "no::such=off", &[P::All]),
];

fn write_auth(dir: &Path) -> String {
    let p = dir.join("auth.json");
    std::fs::write(&p, AUTH).expect("write auth file");
    p.display().to_string()
}

/// A user who has exactly `perms`: one per case, added to the file for the matrix.
fn user_for(perms: &[Permission]) -> String {
    let names: Vec<&str> = perms.iter().map(|p| p.name()).collect();
    format!("u-{}", names.join("+"))
}

fn auth_file_with_case_users(dir: &Path) -> String {
    let mut users: Vec<serde_json::Value> = serde_json::from_str(AUTH).expect("json");
    for c in CASES {
        let name = user_for(c.needs);
        if !users.iter().any(|u| u["username"] == name.as_str()) {
            let perms: Vec<&str> = c.needs.iter().map(|p| p.name()).collect();
            users.push(json!({"username": name, "password": "pw", "perms": perms}));
        }
    }
    let p = dir.join("auth.json");
    std::fs::write(&p, serde_json::to_vec(&users).expect("json")).expect("write auth file");
    p.display().to_string()
}

fn send(client: &reqwest::blocking::Client, n: &Node, c: &Case, who: Option<(&str, &str)>) -> (u16, bool) {
    let method = reqwest::Method::from_bytes(c.method.as_bytes()).expect("method");
    let mut rb = client.request(method, n.url(c.path)).header("Content-Type", c.content_type).body(c.body);
    if let Some((u, p)) = who {
        rb = rb.basic_auth(u, Some(p));
    }
    let r = rb.send().expect("request");
    let challenge = r.headers().get("www-authenticate").is_some();
    (r.status().as_u16(), challenge)
}

/// Every endpoint × {no credentials, wrong password, a user without the permission, a user with
/// exactly it, `all`}, on the leader and through the follower. `*` may use `/readyz`.
#[test]
fn permission_matrix() {
    // Every endpoint of the table is in the matrix, with the permissions the table gives it.
    for ep in Endpoint::ALL.iter().filter(|e| **e != Endpoint::Root) {
        let c = CASES.iter().find(|c| Endpoint::route(c.path.split('?').next().unwrap_or("")) == Some(*ep));
        let c = c.unwrap_or_else(|| panic!("{ep:?} is missing from the matrix"));
        if *ep != Endpoint::Failpoints || cfg!(feature = "failpoints") {
            assert_eq!(ep.spec().permissions, c.needs, "{ep:?}: the table disagrees with docs/API.md §14");
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = auth_file_with_case_users(dir.path());
    let c = Cluster::start_as(2, &["-auth", &auth, "-join-as", "joiner"], Some(("root", "r00t-pw")));
    let leader = c.wait_leader();
    let follower = c.follower();
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    for n in [leader, follower] {
        for case in CASES {
            let open = case.needs == [P::Ready];
            let with = user_for(case.needs);
            for (who, allowed) in [
                (None, open),
                (Some(("root", "wrong")), open),
                (Some(("nobody", "nobody-pw")), open),
                (Some((with.as_str(), "pw")), true),
                (Some(("root", "r00t-pw")), true),
            ] {
                let (status, challenge) = send(&client, n, case, who);
                let what = format!("{} {} on node {} as {:?}", case.method, case.path, n.id, who.map(|w| w.0));
                if allowed {
                    assert_ne!(status, 401, "{what}: refused");
                } else {
                    assert_eq!(status, 401, "{what}: allowed");
                    assert!(challenge, "{what}: 401 without WWW-Authenticate");
                }
            }
        }
    }
    assert_eq!(leader.status()["http"]["auth"], "enabled");
    // Nothing logs a password.
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        assert!(!log.contains("r00t-pw") && !log.contains("joiner-pw"), "a password in the log of node {}", n.id);
    }
}

/// Malformed credentials get a clean 401 and the node keeps serving.
#[test]
fn malformed_credentials_are_refused_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = write_auth(dir.path());
    let mut n = Node::new("1", &dir.path().join("d"), "127.0.0.1", &["-auth", &auth]);
    n.spawn();
    n.wait_ready();
    let client = reqwest::blocking::Client::new();
    let huge = format!("Basic {}", "A".repeat(100_000));
    for bad in ["Basic !!!", "Basic cm9vdA==", "Bearer x", "Basic", "Basic /w==", huge.as_str()] {
        let r = client.get(n.url("/status")).header("Authorization", bad).send().expect("request");
        assert!(r.status() == 401 || r.status() == 431, "{bad:.20}: {}", r.status());
    }
    let r = client.get(n.url("/status")).basic_auth("root", Some("r00t-pw")).send().expect("request");
    assert_eq!(r.status(), 200);
}

/// The cluster port: joining needs `join` (a read-only node: `join` or `join-read-only`), with
/// the joining node's credentials taken from the file by `-join-as`.
#[test]
fn joining_needs_the_join_permission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = write_auth(dir.path());
    let mut first =
        Node::new("1", &dir.path().join("n1"), "127.0.0.31", &["-auth", &auth]).with_credentials("root", "r00t-pw");
    first.spawn();
    first.wait_ready();
    let join = |id: &str, ip: &str, extra: &[&str]| {
        let mut args = vec!["-auth", auth.as_str(), "-join", first.raft.as_str(), "-join-attempts", "2"];
        args.extend(["-join-interval", "200ms"]);
        args.extend(extra);
        let mut n = Node::new(id, &dir.path().join(format!("n{id}")), ip, &args);
        n.spawn();
        n
    };
    // A voter with the join permission.
    let mut ok = join("2", "127.0.0.32", &["-join-as", "joiner"]);
    ok.wait_ready();
    // Anonymous, and a voter with only join-read-only: refused, the node gives up.
    for (id, ip, extra) in [("3", "127.0.0.33", vec![]), ("4", "127.0.0.34", vec!["-join-as", "ro-joiner"])] {
        let mut n = join(id, ip, &extra);
        let st = wait_for(&format!("node {id} to give up"), Duration::from_secs(30), || n.exit_status());
        assert!(!st.success());
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        assert!(log.contains("not authorized"), "node {id}: {log}");
    }
    // A read-only node with join-read-only.
    let mut ro = join("5", "127.0.0.35", &["-join-as", "ro-joiner", "-raft-non-voter"]);
    ro.wait_ready();
    let nodes = first.get("/nodes?nonvoters&ver=2").body;
    assert!(nodes.contains(r#""id":"5""#), "{nodes}");
    for n in [&mut first, &mut ok, &mut ro] {
        n.kill();
    }
}

/// A credentials file that cannot be used, or a `-join-as` user it does not list, refuses to
/// start: the node never serves unprotected.
#[test]
fn a_bad_credentials_file_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"[{"username":"a","password":"b","perms":["wizard"]}]"#).expect("write");
    let good = write_auth(dir.path());
    for (args, want) in [
        (vec!["-auth", bad.to_str().unwrap_or_default()], "unknown permission \"wizard\""),
        (vec!["-auth", "/no/such/file.json"], "/no/such/file.json"),
        (vec!["-auth", good.as_str(), "-join-as", "ghost"], "\"ghost\" is not a user"),
    ] {
        assert_refuses_to_start(&dir.path().join("d"), &args, want);
    }
}
