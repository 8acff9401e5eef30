//! Copy of the cached base image into a node's output: streamed, and
//! sparse (runs of zeros become holes, holes stay holes).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::{out_err, Pending};
use crate::error::{Error, Result};
use crate::image::source::SparseWriter;
use crate::progress::Progress;

/// Stream `src` into `w` in 1 MiB chunks, reporting progress as `what`;
/// `dest` names the output in errors. Returns the bytes copied.
pub fn stream(
    src: &Path,
    w: &mut dyn Write,
    dest: &Path,
    progress: Progress,
    what: &str,
) -> Result<u64> {
    let host = |e| Error::Host {
        path: src.display().to_string(),
        source: e,
    };
    let mut input = File::open(src).map_err(host)?;
    let total = input.metadata().map(|m| m.len()).unwrap_or(0);
    let mut task = progress.task(what, total);
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(host)?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).map_err(|e| out_err(dest, e))?;
        done += n as u64;
        task.inc(n as u64);
    }
    task.finish();
    Ok(done)
}

/// Copy `src` into `dst` (a pending output), sparse.
pub fn sparse_copy(src: &Path, dst: &mut Pending, progress: Progress, what: &str) -> Result<u64> {
    let dest = dst.dest().to_path_buf();
    let mut w = SparseWriter::new(dst.file());
    let done = stream(src, &mut w, &dest, progress, what)?;
    w.finish().map_err(|e| out_err(&dest, e))?;
    Ok(done)
}
