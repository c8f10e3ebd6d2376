//! Build-time facts compiled into the binaries:
//! - `RAFTLITE_COMMIT`: the git commit this build was made from, for `raftlited -version`. It is
//!   read from `git` when the source is a checkout; a build from a tarball or a container context
//!   without `.git` sets the `RAFTLITE_COMMIT` environment variable instead (the Dockerfile
//!   does), else "unknown".
//! - `RAFTLITE_SQLITE_INCLUDE`: the directory of the bundled SQLite's `sqlite3ext.h`, which the
//!   extension tests compile their C extensions against (libsqlite3-sys exports it as
//!   `DEP_SQLITE3_INCLUDE` to crates that depend on it directly).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RAFTLITE_COMMIT");
    let commit = std::env::var("RAFTLITE_COMMIT").ok().filter(|c| !c.is_empty()).or_else(git_commit);
    println!("cargo:rustc-env=RAFTLITE_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    // A new commit moves HEAD or the branch it names; either file changing reruns this script.
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{branch}");
        }
    }
    let include = std::env::var("DEP_SQLITE3_INCLUDE").unwrap_or_default();
    println!("cargo:rustc-env=RAFTLITE_SQLITE_INCLUDE={include}");
}

fn git_commit() -> Option<String> {
    git(&["rev-parse", "--short=12", "HEAD"])
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}
