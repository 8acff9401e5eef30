//! `.img.xz` outputs. From a multi-block base `.xz`, every compressed block
//! whose image range the patch did not touch is copied verbatim from the
//! base, and only the touched blocks are compressed again, with the same
//! boundaries and check; a new index and footer tie them together. Other
//! bases are compressed whole with liblzma's multi-threaded encoder
//! (independent 16 MiB blocks, so decoders can work in parallel too).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{out_err, Pending};
use crate::error::{Error, Result};
use crate::image::xz_index::{self, Layout};
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

/// What [`compress_reusing`] did, for the build summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reuse {
    pub blocks: usize,
    pub recompressed: usize,
}

/// The base's layout when `compress_reusing` can use it for an image of
/// `image_size` bytes: one stream of several blocks covering the image
/// exactly, with a check liblzma can compute, and still the file the image
/// was decompressed from (`sha256`: a pinned base is served from the cache
/// without reading the `.xz`, so a file replaced since would otherwise lend
/// blocks of another image). One streamed hash of the `.xz`.
pub fn reusable(base_xz: &Path, image_size: u64, sha256: Option<&str>) -> Option<Layout> {
    let l = xz_index::read(base_xz).ok()??;
    let check_ok = matches!(l.flags, [0, 0x00 | 0x01 | 0x04 | 0x0A]);
    if !(l.blocks.len() > 1 && l.image_size() == image_size && check_ok) {
        return None;
    }
    let mut h = crate::bytes::Sha256Writer::default();
    let mut f = File::open(base_xz).ok()?;
    std::io::copy(&mut f, &mut h).ok()?;
    (Some(crate::bytes::hex(&h.finish()).as_str()) == sha256).then_some(l)
}

fn check_of(flags: [u8; 2]) -> liblzma::stream::Check {
    use liblzma::stream::Check;
    match flags[1] {
        0x00 => Check::None,
        0x01 => Check::Crc32,
        0x0A => Check::Sha256,
        _ => Check::Crc64,
    }
}

/// The first block (header through check) and its index record of a
/// one-block stream as liblzma's single-threaded encoder writes it.
fn only_block(stream: &[u8]) -> Option<(&[u8], u64)> {
    let n = stream.len();
    let foot = stream.get(n.checked_sub(12)?..)?;
    let index_size = (u64::from(crate::bytes::le32(foot, 4)) + 1) * 4;
    let index_at = n.checked_sub(12 + usize::try_from(index_size).ok()?)?;
    let index = stream.get(index_at..n - 12)?;
    let mut pos = 1usize;
    (xz_index::vli(index, &mut pos)? == 1).then_some(())?;
    let unpadded = xz_index::vli(index, &mut pos)?;
    let stored = usize::try_from(unpadded.next_multiple_of(4)).ok()?;
    Some((stream.get(12..12 + stored)?, unpadded))
}

/// Writes `img`'s `.xz` into `dst`: the blocks of `layout` (the base's)
/// that no range of `touched` meets are copied from `base_xz`; the others
/// are compressed again from `img`, on up to `threads` threads, each as
/// one block of the same range and check. The result decompresses to
/// `img` exactly, whatever the thread count.
pub fn compress_reusing(
    img: &Path,
    base_xz: &Path,
    layout: &Layout,
    touched: &[(u64, u64)],
    dst: &mut Pending,
    (threads, level): (u32, u32),
    progress: Progress,
) -> Result<Reuse> {
    let dest = dst.dest().to_path_buf();
    let host = |p: &Path| {
        let p = p.display().to_string();
        move |e| Error::Host {
            path: p.clone(),
            source: e,
        }
    };
    let dirty: Vec<bool> = layout
        .blocks
        .iter()
        .map(|b| {
            let (s, e) = (b.image_offset, b.image_offset + b.uncompressed);
            touched.iter().any(|&(ts, te)| ts < e && s < te)
        })
        .collect();
    let todo: Vec<usize> = (0..dirty.len()).filter(|&i| dirty[i]).collect();
    let total: u64 = todo.iter().map(|&i| layout.blocks[i].uncompressed).sum();
    let mut task = progress.task("compress changed blocks", total);
    let check = check_of(layout.flags);

    // Compress the dirty blocks in batches of `threads`, in order, so at
    // most that many encoders (about 94 MiB each at preset 6) and their
    // outputs are alive at once.
    let image = File::open(img).map_err(host(img))?;
    let mut fresh: Vec<(usize, Vec<u8>, u64)> = Vec::new();
    let workers = usize::try_from(threads.max(1)).unwrap_or(1);
    let encode = |i: usize| -> std::io::Result<(usize, Vec<u8>, u64)> {
        let b = layout.blocks[i];
        let stream = liblzma::stream::Stream::new_easy_encoder(level, check)
            .map_err(std::io::Error::other)?;
        let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < b.uncompressed {
            let n =
                usize::try_from((b.uncompressed - done).min(buf.len() as u64)).unwrap_or(buf.len());
            image.read_exact_at(&mut buf[..n], b.image_offset + done)?;
            enc.write_all(&buf[..n])?;
            done += n as u64;
        }
        let out = enc.finish()?;
        let (block, unpadded) = only_block(&out)
            .ok_or_else(|| std::io::Error::other("liblzma wrote an unexpected stream"))?;
        Ok((i, block.to_vec(), unpadded))
    };
    let mut records: Vec<(u64, u64)> = Vec::with_capacity(layout.blocks.len());
    let base = File::open(base_xz).map_err(host(base_xz))?;
    let out = dst.file();
    out.write_all(&xz_index::stream_header(layout.flags))
        .map_err(|e| out_err(&dest, e))?;
    let mut next_dirty = 0usize;
    let mut copy_buf = vec![0u8; 1 << 20];
    for (i, b) in layout.blocks.iter().enumerate() {
        if dirty[i] {
            if fresh.first().is_none_or(|f| f.0 != i) {
                // Compress the next batch of dirty blocks.
                let batch: Vec<usize> = todo[next_dirty..].iter().copied().take(workers).collect();
                next_dirty += batch.len();
                let results: Vec<std::io::Result<(usize, Vec<u8>, u64)>> =
                    std::thread::scope(|s| {
                        let handles: Vec<_> =
                            batch.iter().map(|&j| s.spawn(move || encode(j))).collect();
                        handles
                            .into_iter()
                            .map(|h| {
                                h.join().unwrap_or_else(|_| {
                                    Err(std::io::Error::other("an xz worker panicked"))
                                })
                            })
                            .collect()
                    });
                fresh = results
                    .into_iter()
                    .collect::<std::io::Result<Vec<_>>>()
                    .map_err(|e| out_err(&dest, e))?;
            }
            let (_, block, unpadded) = fresh.remove(0);
            out.write_all(&block).map_err(|e| out_err(&dest, e))?;
            records.push((unpadded, b.uncompressed));
            task.inc(b.uncompressed);
        } else {
            let mut done = 0u64;
            while done < b.stored() {
                let n = usize::try_from((b.stored() - done).min(copy_buf.len() as u64))
                    .unwrap_or(copy_buf.len());
                base.read_exact_at(&mut copy_buf[..n], b.offset + done)
                    .map_err(host(base_xz))?;
                out.write_all(&copy_buf[..n])
                    .map_err(|e| out_err(&dest, e))?;
                done += n as u64;
            }
            records.push((b.unpadded, b.uncompressed));
        }
    }
    let index = xz_index::index_and_footer(layout.flags, &records).ok_or_else(|| {
        Error::Usage(format!(
            "{}: the .xz index of {} blocks is past what an xz footer can address; \
             build without --xz, or compress the image with xz yourself",
            dest.display(),
            records.len()
        ))
    })?;
    out.write_all(&index).map_err(|e| out_err(&dest, e))?;
    task.finish();
    Ok(Reuse {
        blocks: layout.blocks.len(),
        recompressed: todo.len(),
    })
}
