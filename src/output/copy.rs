//! Copy of the cached base image into a node's output: streamed, and
//! sparse (runs of zeros become holes, holes stay holes).

use std::fs::File;
use std::io::{Read, Seek, Write};
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

/// Clone `src` into `dst` where the filesystem can share extents (btrfs,
/// XFS: instant, no extra space); whether it worked. A failed attempt
/// leaves `dst` empty.
pub fn reflink(src: &Path, dst: &mut Pending) -> bool {
    if let Ok(f) = File::open(src) {
        if reflink_copy::reflink_file(&f, dst.file()).is_ok() {
            return true;
        }
    }
    let _ = dst.file().set_len(0);
    false
}

/// Clone `src` into `dst` where the filesystem can share extents (btrfs,
/// XFS, ReFS: instant, no extra space), else copy it sparse. Returns whether
/// it was a clone.
pub fn clone_or_copy(
    src: &Path,
    dst: &mut Pending,
    progress: Progress,
    what: &str,
) -> Result<bool> {
    if let Ok(f) = File::open(src) {
        if reflink_copy::reflink_file(&f, dst.file()).is_ok() {
            return Ok(true);
        }
    }
    // A failed clone may have touched the file: start from empty.
    let dest = dst.dest().to_path_buf();
    dst.file().set_len(0).map_err(|e| out_err(&dest, e))?;
    dst.file()
        .seek(std::io::SeekFrom::Start(0))
        .map_err(|e| out_err(&dest, e))?;
    sparse_copy(src, dst, progress, what)?;
    Ok(false)
}

/// Copy `src` into `dst` (a pending output), sparse.
pub fn sparse_copy(src: &Path, dst: &mut Pending, progress: Progress, what: &str) -> Result<u64> {
    let dest = dst.dest().to_path_buf();
    let mut w = SparseWriter::new(dst.file());
    let done = stream(src, &mut w, &dest, progress, what)?;
    w.finish().map_err(|e| out_err(&dest, e))?;
    Ok(done)
}
