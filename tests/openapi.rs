//! `docs/openapi.yaml` against a live node with `-auth`, checked by schemathesis (PyPI,
//! installed by `.ci/run`): no 5xx, and every response conforms to the document (status codes,
//! content types, body schemas, headers). Reproducible: fixed seed, no example database.

mod common;

use common::*;

const CHECKS: &str =
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance";

#[test]
fn the_api_conforms_to_its_openapi_document() {
    let available = std::process::Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !available {
        skip_unless_ci("schemathesis is not installed (python3 -m pip install schemathesis)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = dir.path().join("auth.json");
    std::fs::write(
        &auth,
        r#"[{"username":"root","password":"pw","perms":["all"]},{"username":"*","perms":["ready"]}]"#,
    )
    .expect("auth file");
    // An id no generated request will guess, so that /remove cannot remove the node itself.
    let auth = auth.display().to_string();
    let mut n = Node::new("node-under-schemathesis", &dir.path().join("d"), "127.0.0.1", &["-auth", &auth])
        .with_credentials("root", "pw");
    n.spawn();
    n.wait_ready();
    let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
    let out = std::process::Command::new("python3")
        .args(["-m", "schemathesis.cli", "run", doc, "--url"])
        .arg(format!("http://{}", n.http))
        .args(["--auth", "root:pw", "--checks", CHECKS, "--max-examples", "25", "--seed", "1"])
        .args(["--generation-deterministic", "--workers", "1"])
        // Fault injection is for tests that mean it.
        .args(["--exclude-path", "/debug/failpoints"])
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(n.alive(), "the node died under schemathesis");
    n.kill();
}
