//! Streaming a file into a writer (hashes, compression), and the reflink
//! clone of the cached base a node image starts from where it can.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::{out_err, Pending};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Stream `src` into `w` in 1 MiB chunks, reporting progress as `what`;
/// `dest` names the output in errors. Returns the bytes copied.
pub(crate) fn stream(
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
    let mut buf = vec![0u8; super::PIECE];
    let mut done = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(host)?;
        if n == 0 {
            break;
        }
        // `read` returns at most the buffer's length.
        w.write_all(super::head(&mut buf, n))
            .map_err(|e| out_err(dest, e))?;
        // The bytes of one file: below u64::MAX.
        done = done.saturating_add(n as u64);
        task.inc(n as u64);
    }
    task.finish();
    Ok(done)
}

/// Clone `src` into `dst` where the filesystem can share extents (btrfs,
/// XFS: instant, no extra space); whether it worked. A failed attempt
/// leaves `dst` empty. `src` is the base as it was opened (and locked and
/// checked), not whatever its name leads to by now.
pub(crate) fn reflink(src: &File, dst: &mut Pending) -> bool {
    if reflink_copy::reflink_file(src, dst.file()).is_ok() {
        return true;
    }
    let _ = dst.file().set_len(0);
    false
}
