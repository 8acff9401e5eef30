//! `.img.xz` outputs. From a multi-block base `.xz`, every compressed block
//! whose image range the patch did not touch is copied verbatim from the
//! base, and only the touched blocks are compressed again, with the same
//! boundaries and check; a new index and footer tie them together. Other
//! bases are compressed whole with liblzma's multi-threaded encoder
//! (independent 16 MiB blocks, so decoders can work in parallel too).

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{out_err, Pending};
use crate::error::{Error, Result};
use crate::image::xz_index::{self, Block, Layout};
use crate::progress::Progress;

pub(crate) fn compress(
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
        .map_err(|e| Error::Internal(format!("xz encoder: {e}")))?;
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
pub(crate) fn reusable(base_xz: &Path, image_size: u64, sha256: Option<&str>) -> Option<Layout> {
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
    let foot_at = stream.len().checked_sub(12)?;
    let foot = stream.get(foot_at..)?;
    // Backward Size: (stored value + 1) * 4 bytes of index; a u32 so made
    // still fits a u64.
    let index_size = u64::from(crate::bytes::try_le32(foot, 4)?)
        .checked_add(1)?
        .checked_mul(4)?;
    let index_at = foot_at.checked_sub(usize::try_from(index_size).ok()?)?;
    let index = stream.get(index_at..foot_at)?;
    let mut pos = 1usize;
    (xz_index::vli(index, &mut pos)? == 1).then_some(())?;
    let unpadded = xz_index::vli(index, &mut pos)?;
    let stored = usize::try_from(unpadded.checked_next_multiple_of(4)?).ok()?;
    Some((stream.get(12..stored.checked_add(12)?)?, unpadded))
}

/// Writes `img`'s `.xz` into `dst`: the blocks of `layout` (the base's)
/// that no range of `touched` meets are copied from `base_xz`; the others
/// are compressed again from `img`, on up to `threads` threads, each as
/// one block of the same range and check. The result decompresses to
/// `img` exactly, whatever the thread count.
pub(crate) fn compress_reusing(
    img: &Path,
    base_xz: &Path,
    layout: &Layout,
    touched: &[(u64, u64)],
    dst: &mut Pending,
    (threads, level): (u32, u32),
    progress: Progress,
) -> Result<Reuse> {
    let dest = dst.dest().to_path_buf();
    let dirty = touched_blocks(layout, touched);
    let todo: Vec<Block> = layout
        .blocks
        .iter()
        .zip(&dirty)
        .filter_map(|(b, &d)| d.then_some(*b))
        .collect();
    let recompressed = todo.len();
    let mut task = progress.task(
        "compress changed blocks",
        todo.iter().map(|b| b.uncompressed).sum(),
    );
    let mut fresh = Recompressor {
        image: File::open(img).map_err(Error::host(img))?,
        todo: todo.into_iter(),
        workers: usize::try_from(threads.max(1)).unwrap_or(1),
        level,
        check: check_of(layout.flags),
        ready: VecDeque::new(),
    };
    let base = File::open(base_xz).map_err(Error::host(base_xz))?;
    let out = dst.file();
    out.write_all(&xz_index::stream_header(layout.flags))
        .map_err(|e| out_err(&dest, e))?;
    // (unpadded size, uncompressed size) of every block, for the index.
    let mut records: Vec<(u64, u64)> = Vec::with_capacity(layout.blocks.len());
    for (b, &dirty) in layout.blocks.iter().zip(&dirty) {
        if dirty {
            let (block, unpadded) = fresh.next_block().map_err(|e| out_err(&dest, e))?;
            out.write_all(&block).map_err(|e| out_err(&dest, e))?;
            records.push((unpadded, b.uncompressed));
            task.inc(b.uncompressed);
        } else {
            copy_block(&base, b, out, (base_xz, &dest))?;
            records.push((b.unpadded, b.uncompressed));
        }
    }
    write_index(out, layout.flags, &records, &dest)?;
    task.finish();
    Ok(Reuse {
        blocks: layout.blocks.len(),
        recompressed,
    })
}

/// Which of the base's blocks (in order) hold a byte of a `touched` range:
/// only those are compressed again; the rest decompress to what the node's
/// image holds there, so their bytes are copied.
fn touched_blocks(layout: &Layout, touched: &[(u64, u64)]) -> Vec<bool> {
    layout
        .blocks
        .iter()
        .map(|b| {
            // The layout covers the image exactly (`reusable` checked its
            // size), so a block's end is inside the image's u64 size.
            let (s, e) = (
                b.image_offset,
                b.image_offset.saturating_add(b.uncompressed),
            );
            touched.iter().any(|&(ts, te)| ts < e && s < te)
        })
        .collect()
}

/// The touched blocks compressed again, handed out in order. They are
/// compressed in batches of `workers` threads, so at most that many
/// encoders (about 94 MiB each at preset 6) and their outputs are alive at
/// once, while the copying in between waits for one batch at a time.
struct Recompressor {
    image: File,
    todo: std::vec::IntoIter<Block>,
    workers: usize,
    level: u32,
    check: liblzma::stream::Check,
    /// The current batch's blocks not yet handed out: (block, unpadded).
    ready: VecDeque<(Vec<u8>, u64)>,
}

impl Recompressor {
    /// The next touched block, compressed; compresses the next batch
    /// first when the current one is used up.
    fn next_block(&mut self) -> std::io::Result<(Vec<u8>, u64)> {
        if self.ready.is_empty() {
            self.ready = self.batch()?;
        }
        self.ready
            .pop_front()
            .ok_or_else(|| std::io::Error::other("no touched block left to compress"))
    }

    /// The next `workers` touched blocks, compressed on one thread each.
    fn batch(&mut self) -> std::io::Result<VecDeque<(Vec<u8>, u64)>> {
        let batch: Vec<Block> = self.todo.by_ref().take(self.workers).collect();
        let (image, level, check) = (&self.image, self.level, self.check);
        std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|b| s.spawn(move || encode_block(image, b, level, check)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("an xz worker panicked")))
                })
                .collect()
        })
    }
}

/// Block `b` of the image compressed alone, as a one-block stream of the
/// base's check by liblzma's single-threaded encoder (so its bytes depend
/// on nothing but the image's), and cut out of that stream: (block,
/// unpadded size).
fn encode_block(
    image: &File,
    b: &Block,
    level: u32,
    check: liblzma::stream::Check,
) -> std::io::Result<(Vec<u8>, u64)> {
    let stream =
        liblzma::stream::Stream::new_easy_encoder(level, check).map_err(std::io::Error::other)?;
    let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    let mut buf = vec![0u8; super::PIECE];
    for (at, n) in super::pieces(b.image_offset, b.uncompressed) {
        let piece = super::head(&mut buf, n);
        image.read_exact_at(piece, at)?;
        enc.write_all(piece)?;
    }
    let out = enc.finish()?;
    let (block, unpadded) = only_block(&out)
        .ok_or_else(|| std::io::Error::other("liblzma wrote an unexpected stream"))?;
    Ok((block.to_vec(), unpadded))
}

/// An untouched block's stored bytes (padding included), verbatim from the
/// base `.xz` into `out`; `(base_xz, dest)` name the two in errors.
fn copy_block(
    base: &File,
    b: &Block,
    out: &mut File,
    (base_xz, dest): (&Path, &Path),
) -> Result<()> {
    let mut buf = vec![0u8; super::PIECE];
    for (at, n) in super::pieces(b.offset, b.stored()) {
        let piece = super::head(&mut buf, n);
        base.read_exact_at(piece, at)
            .map_err(Error::host(base_xz))?;
        out.write_all(piece).map_err(|e| out_err(dest, e))?;
    }
    Ok(())
}

/// The new index (one record per block, in order) and the stream footer,
/// which end the `.xz`.
fn write_index(out: &mut File, flags: [u8; 2], records: &[(u64, u64)], dest: &Path) -> Result<()> {
    let index = xz_index::index_and_footer(flags, records).ok_or_else(|| {
        Error::Unsupported(format!(
            "{}: the .xz index of {} blocks is past what an xz footer can address; \
             build without --xz, or compress the image with xz yourself",
            dest.display(),
            records.len()
        ))
    })?;
    out.write_all(&index).map_err(|e| out_err(dest, e))
}
