//! The block layout of a `.xz` file, read from its index: where each
//! compressed block lies and which uncompressed range it holds. A node's
//! `.img.xz` reuses the base's compressed blocks whose range the patch did
//! not touch (`output::xz`), so only the layout of a plain single-stream
//! file is accepted; anything else is `None` and the output is compressed
//! whole.
//!
//! Format: <https://tukaani.org/xz/xz-file-format.txt> (stream header and
//! footer, 12 bytes each; the index: indicator 0, record count, one
//! (unpadded size, uncompressed size) pair per block, padding, CRC32).

use std::fs::File;
use std::io;
use std::path::Path;

use crate::bytes::{array, crc32, le32};

pub(crate) const HEADER_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0];
pub(crate) const FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];

/// One block: its bytes in the `.xz` and its range in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Offset of the block header in the file.
    pub offset: u64,
    /// Header + compressed data + check, without padding (the index field).
    pub unpadded: u64,
    /// Bytes of image data the block decompresses to.
    pub uncompressed: u64,
    /// Where in the image those bytes start.
    pub image_offset: u64,
}

impl Block {
    /// The block's bytes in the file, padding included.
    pub fn stored(&self) -> u64 {
        self.unpadded.next_multiple_of(4)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The stream flags (second byte: the check type) of header and footer.
    pub flags: [u8; 2],
    pub blocks: Vec<Block>,
}

impl Layout {
    pub fn image_size(&self) -> u64 {
        self.blocks.iter().map(|b| b.uncompressed).sum()
    }
}

/// A multibyte integer of the xz format: 7 bits per byte, at most 9 bytes.
pub(crate) fn vli(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    // Byte i holds bits 7i..7i+7; the ninth byte (shift 56) is the last.
    for shift in (0u32..63).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos = pos.checked_add(1)?;
        v |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return (shift == 0 || byte != 0).then_some(v);
        }
    }
    None
}

/// Largest index read (a record is at most 18 bytes; a 2 GiB image in
/// 1 MiB blocks has 2048 of them).
const MAX_INDEX: u64 = 16 << 20;

/// The layout of `path` when it is exactly one xz stream whose header,
/// index and footer agree; `None` for anything else (several streams,
/// stream padding, a damaged index). Reads only the header, the footer
/// and the index.
pub fn read(path: &Path) -> io::Result<Option<Layout>> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path)?;
    let size = f.metadata()?.len();
    // Room for the 12-byte stream header before the 12-byte footer.
    let Some(foot_at) = size.checked_sub(12).filter(|&a| a >= 12) else {
        return Ok(None);
    };
    let (mut head, mut foot) = ([0u8; 12], [0u8; 12]);
    f.read_exact_at(&mut head, 0)?;
    f.read_exact_at(&mut foot, foot_at)?;
    // Fixed offsets inside the 12-byte arrays (bytes::array/le32 cannot
    // miss): header = magic, flags, CRC32 of the flags; footer = CRC32,
    // backward size, flags, magic.
    let head_flags = *array::<2>(&head, 6);
    let foot_flags = *array::<2>(&foot, 8);
    if *array::<6>(&head, 0) != HEADER_MAGIC
        || crc32(&head_flags) != le32(&head, 8)
        || *array::<2>(&foot, 10) != FOOTER_MAGIC
        || crc32(array::<6>(&foot, 4)) != le32(&foot, 0)
        || head_flags != foot_flags
    {
        return Ok(None);
    }
    // The backward size is the index's length / 4 - 1: from a u32 this is
    // at most 2^34, far from overflowing, but a damaged footer may still
    // claim more than the file holds (checked next).
    let Some(index_size) = u64::from(le32(&foot, 4))
        .checked_add(1)
        .and_then(|n| n.checked_mul(4))
    else {
        return Ok(None);
    };
    if index_size > MAX_INDEX {
        return Ok(None);
    }
    // The index must lie between the stream header and the footer.
    let Some(index_at) = foot_at.checked_sub(index_size).filter(|&a| a >= 12) else {
        return Ok(None);
    };
    // At most MAX_INDEX (16 MiB), which any usize holds.
    let Ok(index_len) = usize::try_from(index_size) else {
        return Ok(None);
    };
    let mut index = vec![0u8; index_len];
    f.read_exact_at(&mut index, index_at)?;
    // The index ends with the CRC32 of everything before it, and starts
    // with the index indicator 0.
    let Some((body, crc)) = index.split_last_chunk::<4>() else {
        return Ok(None);
    };
    if body.first() != Some(&0) || crc32(body) != u32::from_le_bytes(*crc) {
        return Ok(None);
    }
    let mut pos = 1usize;
    let Some(count) = vli(body, &mut pos) else {
        return Ok(None);
    };
    let mut blocks = Vec::new();
    let (mut offset, mut image_offset) = (12u64, 0u64);
    for _ in 0..count {
        let (Some(unpadded), Some(uncompressed)) = (vli(body, &mut pos), vli(body, &mut pos))
        else {
            return Ok(None);
        };
        if unpadded < 5 {
            return Ok(None);
        }
        blocks.push(Block {
            offset,
            unpadded,
            uncompressed,
            image_offset,
        });
        let Some(next) = offset.checked_add(unpadded.next_multiple_of(4)) else {
            return Ok(None);
        };
        offset = next;
        image_offset = image_offset.saturating_add(uncompressed);
    }
    // Only zero padding (at most 3 bytes) may follow the records, and the
    // blocks must end exactly where the index starts (no second stream,
    // no padding). vli leaves pos at most at the end of body.
    let Some(padding) = body.get(pos..) else {
        return Ok(None);
    };
    if padding.iter().any(|&b| b != 0) || padding.len() > 3 || offset != index_at {
        return Ok(None);
    }
    Ok(Some(Layout {
        flags: head_flags,
        blocks,
    }))
}

/// Encodes `v` as an xz multibyte integer.
pub(crate) fn put_vli(out: &mut Vec<u8>, mut v: u64) {
    // The low byte of v; the loop masks it to the 7 bits each byte holds.
    let low = |v: u64| v.to_le_bytes()[0];
    while v >= 0x80 {
        out.push((low(v) & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(low(v));
}

/// The index and stream footer for `blocks` (unpadded, uncompressed), or
/// None when the index is past what the footer's 32-bit backward size can
/// address (16 GiB of records): a footer that pointed at the wrong place
/// would make the whole stream unreadable, so the caller must refuse.
pub(crate) fn index_and_footer(flags: [u8; 2], blocks: &[(u64, u64)]) -> Option<Vec<u8>> {
    let mut index = vec![0u8];
    put_vli(&mut index, blocks.len() as u64);
    for &(unpadded, uncompressed) in blocks {
        put_vli(&mut index, unpadded);
        put_vli(&mut index, uncompressed);
    }
    while index.len() % 4 != 0 {
        index.push(0);
    }
    // The backward size is (index size with its CRC32) / 4 - 1, which is
    // the padded records' size / 4.
    let backward = u32::try_from(index.len() / 4).ok()?;
    let crc = crc32(&index);
    index.extend_from_slice(&crc.to_le_bytes());
    let mut tail = Vec::with_capacity(12);
    tail.extend_from_slice(&backward.to_le_bytes());
    tail.extend_from_slice(&flags);
    let mut footer = crc32(&tail).to_le_bytes().to_vec();
    footer.extend_from_slice(&tail);
    footer.extend_from_slice(&FOOTER_MAGIC);
    index.extend_from_slice(&footer);
    Some(index)
}

/// The 12-byte stream header with these flags.
pub(crate) fn stream_header(flags: [u8; 2]) -> Vec<u8> {
    let mut h = HEADER_MAGIC.to_vec();
    h.extend_from_slice(&flags);
    h.extend_from_slice(&crc32(&flags).to_le_bytes());
    h
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test fixtures index and size their own buffers; a panic there is a failed test"
)]
mod tests {
    use super::*;

    #[test]
    fn vli_round_trips() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX >> 1] {
            let mut b = Vec::new();
            put_vli(&mut b, v);
            let mut pos = 0;
            assert_eq!(vli(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
        }
    }

    #[test]
    fn reads_what_xz_writes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let raw = dir.path().join("d");
        std::fs::write(&raw, &data).unwrap();
        // xz (xz-utils, installed by .ci/run) is the oracle: a missing one
        // fails the test with the package to install.
        let o = std::process::Command::new("xz")
            .args(["-k", "-T1", "--block-size=65536"])
            .arg(&raw)
            .status()
            .unwrap_or_else(|e| panic!("xz: {e}: install the Debian package xz-utils"));
        assert!(o.success(), "xz failed");
        let xz = dir.path().join("d.xz");
        let l = read(&xz).unwrap().expect("one stream");
        assert_eq!(l.blocks.len(), 5);
        assert_eq!(l.image_size(), 300_000);
        assert_eq!(l.blocks[1].image_offset, 65536);
        // Header, blocks and the rebuilt index/footer give the same file.
        let bytes = std::fs::read(&xz).unwrap();
        let mut again = stream_header(l.flags);
        let end = l.blocks.last().map(|b| b.offset + b.stored()).unwrap();
        again.extend_from_slice(&bytes[12..usize::try_from(end).unwrap()]);
        let recs: Vec<(u64, u64)> = l
            .blocks
            .iter()
            .map(|b| (b.unpadded, b.uncompressed))
            .collect();
        again.extend_from_slice(&index_and_footer(l.flags, &recs).unwrap());
        assert!(again == bytes);
    }
}
