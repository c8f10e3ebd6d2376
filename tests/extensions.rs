//! SQLite extensions (`-extensions-path`) end to end, with two small extensions compiled from C
//! here (tests/extensions/: `rot13()`, a scalar function, and `digits`, a virtual table): given as
//! a directory, a zip and a tar.gz to the three nodes of a cluster, they are loaded in the writer
//! (a replicated write calls them on every node) and in every reader, listed in `/status`, and
//! still loaded after a SIGKILL and restart, a snapshot install, `/db/load` and `/boot`. SQL's
//! `load_extension()` stays refused, and an extension that cannot load refuses to start.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// Compile `tests/extensions/<name>.c` into `<out>/<name>.so` against the bundled SQLite's
/// headers (build.rs finds them).
fn compile(name: &str, out: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/extensions").join(format!("{name}.c"));
    let so = out.join(format!("{name}.so"));
    let include = env!("RAFTLITE_SQLITE_INCLUDE");
    assert!(Path::new(include).join("sqlite3ext.h").exists(), "no sqlite3ext.h in {include:?}");
    let st = Command::new("gcc")
        .args(["-fPIC", "-shared", "-O2", "-I", include, "-o"])
        .arg(&so)
        .arg(&src)
        .status()
        .expect("run gcc");
    assert!(st.success(), "gcc failed on {}", src.display());
    so
}

/// The two extensions, as a directory, a zip and a tar.gz (each holding both, plus a README that
/// is not a library and is skipped).
struct Packages {
    dir: PathBuf,
    zip: PathBuf,
    tgz: PathBuf,
}

fn package(root: &Path) -> Packages {
    let dir = root.join("ext-dir");
    std::fs::create_dir_all(&dir).expect("dir");
    let libs = [compile("rot13", &dir), compile("digits", &dir)];
    std::fs::write(dir.join("README"), "two test extensions\n").expect("readme");

    let zip = root.join("ext.zip");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&zip).expect("zip"));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for lib in &libs {
        let name = format!("build/{}", lib.file_name().and_then(|n| n.to_str()).expect("name"));
        w.start_file(name, opts).expect("zip entry");
        w.write_all(&std::fs::read(lib).expect("read lib")).expect("zip write");
    }
    w.start_file("README", opts).expect("zip entry");
    w.write_all(b"docs").expect("zip write");
    w.finish().expect("zip finish");

    let tgz = root.join("ext.tar.gz");
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(&tgz).expect("tgz"), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for lib in &libs {
        let name = format!("ext/{}", lib.file_name().and_then(|n| n.to_str()).expect("name"));
        t.append_path_with_name(lib, name).expect("tar entry");
    }
    t.into_inner().expect("tar").finish().expect("gz");
    Packages { dir, zip, tgz }
}

/// What a node's extensions give, read from it at `level=none`.
fn uses_extensions(n: &Node) -> bool {
    let q = n.query("SELECT rot13('Hello'), (SELECT sum(value) FROM digits)", "&level=none");
    q.status == 200 && q.json()["results"][0]["values"] == json!([["Uryyb", 45]])
}

fn names(n: &Node) -> Value {
    n.status()["extensions"]["names"].clone()
}

#[test]
fn extensions_from_a_directory_a_zip_and_a_tar_gz_load_on_every_node_and_stay_loaded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = package(tmp.path());
    let snap = ["-raft-snap", "40", "-raft-snap-int", "100ms"];
    let sources = [p.dir.display().to_string(), p.zip.display().to_string(), p.tgz.display().to_string()];
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let mut extra: Vec<&str> = snap.to_vec();
            extra.extend(["-extensions-path", sources[i - 1].as_str()]);
            Node::new(&i.to_string(), &tmp.path().join(format!("n{i}")), &format!("127.0.0.{}", 40 + i), &extra)
        })
        .collect();
    nodes[0].spawn();
    nodes[0].wait_ready();
    let first = nodes[0].raft.clone();
    for n in nodes.iter_mut().skip(1) {
        n.extra.extend(["-join".to_string(), first.clone()]);
        n.spawn();
        n.wait_ready();
    }
    let mut c = Cluster { nodes, _dir: tempfile::tempdir().expect("tempdir") };
    c.wait_voters(3);
    for n in &c.nodes {
        assert_eq!(names(n), json!(["digits.so", "rot13.so"]), "node {}", n.id);
        assert!(uses_extensions(n), "node {}: {}", n.id, n.query("SELECT rot13('x')", "&level=none").body);
        assert!(n.dir.join("extensions/rot13.so").exists(), "unpacked into the data directory");
        assert!(!n.dir.join("extensions/README").exists(), "a file that is not a library is skipped");
    }

    // Writes that need the extensions run in every node's writer: a function call and a virtual
    // table created by a replicated statement.
    let l = c.wait_leader();
    let r = l.execute(json!([
        "CREATE TABLE secrets (id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO secrets (v) VALUES (rot13('attack at dawn'))",
        "CREATE VIRTUAL TABLE d USING digits",
        "CREATE TABLE tens AS SELECT value * 10 AS v FROM d",
    ]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("error"), "{}", r.body);
    for n in &c.nodes {
        n.wait_rows("SELECT v FROM secrets", vec![json!(["nggnpx ng qnja"])]);
        n.wait_rows("SELECT sum(v) FROM tens", vec![json!([450])]);
    }

    // SQL cannot load code, on either path.
    let sql = "SELECT load_extension('/tmp/x.so')";
    let q = l.query(sql, "");
    assert!(q.body.contains("not authorized") || q.body.contains("not allowed"), "{}", q.body);
    let e = l.execute(json!([sql]));
    assert!(e.body.contains("not authorized") || e.body.contains("not allowed"), "{}", e.body);

    // SIGKILL and restart a follower: still loaded, and it catches up.
    let f = c.follower().id.clone();
    c.node_mut(&f).kill();
    c.wait_leader().execute(json!(["INSERT INTO secrets (v) VALUES (rot13('after the kill'))"]));
    c.node_mut(&f).restart();
    c.node(&f).wait_ready();
    assert!(uses_extensions(c.node(&f)));
    c.node(&f).wait_rows("SELECT count(*) FROM secrets", vec![json!([2])]);

    // A fourth node joins after compaction and installs a snapshot: its readers reopen on the
    // installed database with the extensions loaded.
    let l = c.wait_leader();
    for i in 0..100 {
        l.execute(json!([format!("INSERT INTO secrets (v) VALUES (rot13('row {i}'))")]));
    }
    wait_for("the leader to compact its log", Duration::from_secs(60), || {
        (l.status()["store"]["num_snapshots"].as_u64()? >= 1).then_some(())
    });
    let mut extra: Vec<&str> = snap.to_vec();
    extra.extend(["-extensions-path", sources[1].as_str(), "-join", l.raft.as_str()]);
    let mut n4 = Node::new("4", &tmp.path().join("n4"), "127.0.0.44", &extra);
    n4.spawn();
    n4.wait_ready();
    n4.wait_rows("SELECT count(*) FROM secrets", vec![json!([102])]);
    assert!(n4.status()["store"]["num_restores"].as_u64().unwrap_or(0) >= 1, "{}", n4.status()["store"]);
    assert!(uses_extensions(&n4));
    n4.wait_rows("SELECT v FROM secrets WHERE id = 3", vec![json!(["ebj 0"])]);

    // /db/load replaces the database: the readers and the writer reopen with the extensions.
    let image = {
        let src = tmp.path().join("image.sqlite");
        let conn = rusqlite::Connection::open(&src).expect("image");
        conn.execute_batch("CREATE TABLE loaded (v TEXT); INSERT INTO loaded VALUES ('uryyb');").expect("fill");
        drop(conn);
        std::fs::read(&src).expect("read image")
    };
    let r = l.post("/db/load", "application/octet-stream", image.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    for n in c.nodes.iter().chain([&n4]) {
        n.wait_rows("SELECT rot13(v) FROM loaded", vec![json!(["hello"])]);
        assert!(uses_extensions(n), "node {} after /db/load", n.id);
    }
    let w = l.execute(json!(["INSERT INTO loaded VALUES (rot13('again'))"]));
    assert!(!w.body.contains("error"), "{}", w.body);
}

#[test]
fn boot_keeps_the_extensions_loaded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = package(tmp.path());
    let n = Node::start(&tmp.path().join("data"), &["-extensions-path", &p.tgz.display().to_string()]);
    let src = tmp.path().join("boot.sqlite");
    let conn = rusqlite::Connection::open(&src).expect("image");
    conn.execute_batch("CREATE TABLE booted (v TEXT); INSERT INTO booted VALUES ('obbgrq');").expect("fill");
    drop(conn);
    let r = n.post("/boot", "application/octet-stream", std::fs::read(&src).expect("read"));
    assert_eq!(r.status, 200, "{}", r.body);
    n.wait_rows("SELECT rot13(v) FROM booted", vec![json!(["booted"])]);
    assert!(uses_extensions(&n));
    let w = n.execute(json!(["INSERT INTO booted SELECT rot13('x') || value FROM digits"]));
    assert!(!w.body.contains("error"), "{}", w.body);
    n.wait_rows("SELECT count(*) FROM booted", vec![json!([11])]);
}

#[test]
fn an_extension_that_cannot_load_refuses_to_start_with_its_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A library without the entry point SQLite derives from its name.
    let dir = tmp.path().join("bad");
    std::fs::create_dir_all(&dir).expect("dir");
    let lib = compile("rot13", &dir);
    let renamed = dir.join("other.so");
    std::fs::rename(&lib, &renamed).expect("rename");
    let arg = renamed.display().to_string();
    assert_refuses_to_start(&tmp.path().join("d1"), &["-extensions-path", &arg], "sqlite3_other_init");
    // A file that is not a library at all, and a path that does not exist.
    let junk = dir.join("junk.so");
    std::fs::write(&junk, b"not a library").expect("junk");
    let arg = junk.display().to_string();
    assert_refuses_to_start(&tmp.path().join("d2"), &["-extensions-path", &arg], "extension junk.so failed to load");
    assert_refuses_to_start(&tmp.path().join("d3"), &["-extensions-path", "/no/such/ext.so"], "/no/such/ext.so");
}
