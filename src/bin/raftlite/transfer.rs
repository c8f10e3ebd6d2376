//! Long transfers (`.backup`, `.dump`, `.restore`, `.boot`, `.read`): streamed both ways with a
//! progress bar (bytes, rate, time left when the size is known) on a terminal. A download goes to
//! a `.partial` file renamed into place at the end, so an error or Ctrl-C leaves no partial file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::client::{bytes_body, check, file_body, run, Client, Error};

/// Transfers smaller than this finish before a bar could tell anyone anything.
const BAR_FROM: u64 = 1 << 20;

/// A bar for `len` bytes (a spinner when unknown), drawn on stderr only when it is a terminal.
fn bar(len: Option<u64>, what: &str) -> ProgressBar {
    if len.is_some_and(|n| n < BAR_FROM) {
        return ProgressBar::hidden();
    }
    let (pb, template) = match len {
        Some(n) => (ProgressBar::new(n), "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta} left"),
        None => (ProgressBar::no_length(), "{msg} {spinner} {bytes} {binary_bytes_per_sec} {elapsed}"),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// Removes the partial file unless the download finished.
struct Partial(PathBuf, bool);

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// GET `path` into `dest` (or to `out` when `dest` is `None`), with progress. The byte count.
pub fn download(client: &mut Client, path: &str, dest: Option<&Path>, out: &mut dyn Write) -> Result<u64, Error> {
    let (rt, interruptible) = (client.runtime(), client.interruptible);
    let timeout = client.options().timeout;
    let addr = client.addr().to_string();
    let partial = dest.map(|d| {
        let mut p = d.as_os_str().to_owned();
        p.push(".partial");
        Partial(PathBuf::from(p), false)
    });
    let mut file: Box<dyn Write> = match &partial {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(&p.0).map_err(|e| Error::Other(format!("{}: {e}", p.0.display())))?,
        )),
        None => Box::new(out),
    };
    let what = dest.map(|d| format!("{}", d.display())).unwrap_or_else(|| path.to_string());
    let n = run(&rt, interruptible, async {
        let resp = client.send(&Method::GET, path, None, &|| Ok(super::client::full(Default::default()))).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.into_body().collect().await.map_err(|e| Error::Other(e.to_string()))?.to_bytes();
            return check(status, body).map(|_| 0);
        }
        let len = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let pb = bar(len, &what);
        let mut body = resp.into_body();
        let mut n = 0u64;
        loop {
            let frame = tokio::time::timeout(timeout, body.frame())
                .await
                .map_err(|_| Error::Timeout { addr: addr.clone(), timeout })?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| Error::Other(format!("download broke off: {e}")))?;
            if let Ok(data) = frame.into_data() {
                file.write_all(&data).map_err(|e| Error::Other(e.to_string()))?;
                n += data.len() as u64;
                pb.set_position(n);
            }
        }
        pb.finish_and_clear();
        Ok(n)
    })?;
    file.flush().map_err(|e| Error::Other(e.to_string()))?;
    drop(file);
    if let (Some(mut p), Some(d)) = (partial, dest) {
        std::fs::rename(&p.0, d).map_err(|e| Error::Other(format!("{}: {e}", d.display())))?;
        p.1 = true;
    }
    Ok(n)
}

/// What an upload sends.
pub enum Source<'a> {
    File(&'a Path),
    /// A body made in memory (`.read`), named for the progress bar.
    Bytes(bytes::Bytes, &'a str),
}

/// POST `src` to `path`, with progress; the node's answer.
pub fn upload(client: &mut Client, path: &str, src: Source<'_>, content_type: &str) -> Result<bytes::Bytes, Error> {
    let (len, name) = match &src {
        Source::File(p) => (
            std::fs::metadata(p).map_err(|e| Error::Other(format!("{}: {e}", p.display())))?.len(),
            p.display().to_string(),
        ),
        Source::Bytes(b, name) => (b.len() as u64, name.to_string()),
    };
    let (rt, interruptible) = (client.runtime(), client.interruptible);
    let sent = Arc::new(AtomicU64::new(0));
    let pb = bar(Some(len), &name);
    let ticker = {
        let (pb, sent) = (pb.clone(), sent.clone());
        rt.spawn(async move {
            loop {
                pb.set_position(sent.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let make = || {
        sent.store(0, Ordering::Relaxed);
        match &src {
            Source::File(p) => file_body(p, sent.clone()),
            Source::Bytes(b, _) => Ok(bytes_body(b.clone(), sent.clone())),
        }
    };
    let r = run(&rt, interruptible, async {
        let resp = client.send(&Method::POST, path, Some(content_type), &make).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| Error::Other(e.to_string()))?.to_bytes();
        check(status, body)
    });
    ticker.abort();
    pb.finish_and_clear();
    r
}
