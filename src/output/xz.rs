//! `.img.xz` outputs, compressed with liblzma's multi-threaded encoder
//! (independent blocks, so decoders can work in parallel too).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::{out_err, Pending};
use crate::error::{Error, Result};
use crate::progress::Progress;

pub fn compress(
    src: &Path,
    dst: &mut Pending,
    threads: u32,
    level: u32,
    progress: Progress,
) -> Result<()> {
    let dest = dst.dest().to_path_buf();
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(threads.max(1))
        .preset(level)
        .block_size(16 << 20)
        .check(liblzma::stream::Check::Crc64)
        .encoder()
        .map_err(|e| Error::Usage(format!("xz encoder: {e}")))?;
    let mut input = File::open(src).map_err(|e| Error::Host {
        path: src.display().to_string(),
        source: e,
    })?;
    let total = input.metadata().map(|m| m.len()).unwrap_or(0);
    let mut task = progress.task("compress", total);
    let mut enc = liblzma::write::XzEncoder::new_stream(dst.file(), stream);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(|e| Error::Host {
            path: src.display().to_string(),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n]).map_err(|e| out_err(&dest, e))?;
        task.inc(n as u64);
    }
    enc.finish().map_err(|e| out_err(&dest, e))?;
    task.finish();
    Ok(())
}
