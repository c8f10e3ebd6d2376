//! SQLite extensions (`-extensions-path`, docs/API.md §12): the files, directories, zip and
//! tar.gz archives a node is given are unpacked into `<data>/extensions/` at start, checked by
//! loading each into a scratch connection (a library that fails refuses to start, with SQLite's
//! error), and then loaded into every connection the node opens: the applier's writer, each
//! reader, and again whenever either reopens (restart, snapshot install, `/boot`, `/db/load`).
//!
//! Only raftlite loads extensions, through the C API while it sets a connection up. SQL's
//! `load_extension()` stays refused by the authorizer (store::db), so a client cannot load code.
//!
//! Statements replicate, not their effects: a write that calls an extension's function runs on
//! every node, so every node must be given the same extensions, and their functions must be
//! deterministic (docs/DESIGN.md §5).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, LoadExtensionGuard};
use thiserror::Error;

/// The folder under the data directory that holds the unpacked extensions.
pub const DIR: &str = "extensions";

#[derive(Debug, Error)]
pub enum ExtensionError {
    #[error("-extensions-path {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("-extensions-path {path}: not a readable zip archive: {reason}")]
    Zip { path: String, reason: String },
    #[error("-extensions-path {path}: no such file or directory")]
    Missing { path: String },
    #[error("-extensions-path: two extensions are named {name:?} ({first} and {second}); rename one")]
    Duplicate { name: String, first: String, second: String },
    #[error("extension {name} failed to load: {reason}")]
    Load { name: String, reason: String },
}

/// The extensions a node loads, in the order it loads them (by file name).
#[derive(Clone, Debug, Default)]
pub struct Extensions {
    /// Unpacked libraries under `<data>/extensions/`.
    pub files: Vec<PathBuf>,
}

impl Extensions {
    /// Unpack `sources` (the comma-separated `-extensions-path`) into `<data_dir>/extensions/`,
    /// replacing what an earlier start left there, and check that each library loads.
    pub fn prepare(sources: &[String], data_dir: &Path) -> Result<Extensions, ExtensionError> {
        let dir = data_dir.join(DIR);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| ExtensionError::Io { path, source }
        };
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        if sources.is_empty() {
            return Ok(Extensions::default());
        }
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut placed: Vec<(String, String)> = Vec::new();
        for src in sources {
            let path = Path::new(src);
            if !path.exists() {
                return Err(ExtensionError::Missing { path: src.clone() });
            }
            for (name, bytes) in read_source(path)? {
                if !is_library(&name) {
                    tracing::warn!(source = %src, file = %name, "skipping a file that is not a shared library");
                    continue;
                }
                if let Some((_, first)) = placed.iter().find(|(n, _)| *n == name) {
                    return Err(ExtensionError::Duplicate { name, first: first.clone(), second: src.clone() });
                }
                let out = dir.join(&name);
                fs::write(&out, bytes).map_err(io(&out))?;
                placed.push((name, src.clone()));
            }
        }
        let mut files: Vec<PathBuf> = placed.into_iter().map(|(n, _)| dir.join(n)).collect();
        files.sort();
        let ext = Extensions { files };
        // A library that cannot load refuses to start here, rather than failing every connection.
        let scratch = Connection::open_in_memory()
            .map_err(|e| ExtensionError::Load { name: "(scratch connection)".into(), reason: e.to_string() })?;
        ext.load_into(&scratch)?;
        Ok(ext)
    }

    /// The names `/status` lists.
    pub fn names(&self) -> Vec<String> {
        self.files.iter().filter_map(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()).collect()
    }

    /// Load every extension into `conn`. Loading is enabled for the C API only while this runs
    /// (the guard turns it off again), so SQL's `load_extension()` never finds it on.
    pub fn load_into(&self, conn: &Connection) -> Result<(), ExtensionError> {
        if self.files.is_empty() {
            return Ok(());
        }
        let name = |f: &Path| f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // SAFETY: loading a library runs its code in this process; the operator chose these
        // files with -extensions-path, which is the trust rqlite gives them too.
        unsafe {
            let _guard = LoadExtensionGuard::new(conn)
                .map_err(|e| ExtensionError::Load { name: "(enable loading)".into(), reason: e.to_string() })?;
            for f in &self.files {
                conn.load_extension(f, None::<&str>)
                    .map_err(|e| ExtensionError::Load { name: name(f), reason: e.to_string() })?;
            }
        }
        Ok(())
    }
}

/// Whether a file name is a shared library SQLite can load.
fn is_library(name: &str) -> bool {
    [".so", ".dylib", ".dll"].iter().any(|s| name.ends_with(s)) || name.contains(".so.")
}

/// The files one source holds, by their base names: a library, every file of a directory (not
/// recursive), or every regular file of a zip or tar.gz archive (paths inside flattened to their
/// last component, so an archive cannot write outside the extensions folder).
fn read_source(path: &Path) -> Result<Vec<(String, Vec<u8>)>, ExtensionError> {
    let shown = path.display().to_string();
    let io = |source| ExtensionError::Io { path: shown.clone(), source };
    let lower = shown.to_ascii_lowercase();
    let mut out = Vec::new();
    if path.is_dir() {
        let mut entries: Vec<PathBuf> =
            fs::read_dir(path).map_err(io)?.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
        entries.sort();
        for p in entries {
            out.push((base_name(&p), fs::read(&p).map_err(io)?));
        }
    } else if lower.ends_with(".zip") {
        let file = fs::File::open(path).map_err(io)?;
        let zip_err = |e: zip::result::ZipError| ExtensionError::Zip { path: shown.clone(), reason: e.to_string() };
        let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(zip_err)?;
            if !entry.is_file() {
                continue;
            }
            let name = base_name(Path::new(&*entry.name().map_err(zip_err)?));
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(io)?;
            out.push((name, bytes));
        }
    } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        let file = fs::File::open(path).map_err(io)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = base_name(&entry.path().map_err(io)?);
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(io)?;
            out.push((name, bytes));
        }
    } else {
        out.push((base_name(path), fs::read(path).map_err(io)?));
    }
    Ok(out)
}

fn base_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_flattened_and_non_libraries_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        // A tar.gz whose entry tries to climb out of the folder lands inside it, by base name.
        let tgz = dir.path().join("ext.tar.gz");
        {
            let gz = flate2::write::GzEncoder::new(fs::File::create(&tgz).unwrap(), flate2::Compression::fast());
            let mut b = tar::Builder::new(gz);
            for (name, body) in [("lib/deep/a.so", &b"not really"[..]), ("README", &b"docs"[..])] {
                let mut h = tar::Header::new_gnu();
                h.set_size(body.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, name, body).unwrap();
            }
            b.into_inner().unwrap().finish().unwrap();
        }
        let files = read_source(&tgz).unwrap();
        let names: Vec<_> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.so", "README"]);
        // "a.so" is not a library: preparing refuses to start, naming it.
        let err = Extensions::prepare(&[tgz.display().to_string()], &data).unwrap_err().to_string();
        assert!(err.contains("a.so") && err.contains("failed to load"), "{err}");
        assert!(!data.join(DIR).join("README").exists());
    }

    #[test]
    fn a_missing_path_is_named_and_no_extensions_clears_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let err = Extensions::prepare(&["/nowhere/x.so".into()], dir.path()).unwrap_err().to_string();
        assert!(err.contains("/nowhere/x.so"), "{err}");
        fs::create_dir_all(dir.path().join(DIR)).unwrap();
        fs::write(dir.path().join(DIR).join("old.so"), b"x").unwrap();
        let none = Extensions::prepare(&[], dir.path()).unwrap();
        assert!(none.files.is_empty() && !dir.path().join(DIR).exists());
    }
}
