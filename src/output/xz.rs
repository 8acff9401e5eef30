//! `.img.xz` outputs, compressed with liblzma's multi-threaded encoder
//! (independent blocks, so decoders can work in parallel too).

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
    let mut enc = liblzma::write::XzEncoder::new_stream(dst.file(), stream);
    super::copy::stream(src, &mut enc, &dest, progress, "compress")?;
    enc.finish().map_err(|e| out_err(&dest, e))?;
    Ok(())
}
