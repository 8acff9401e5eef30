//! Extent trees (KD `ifork.rst`): the map from file blocks to disk blocks.

use super::checksum;
use super::error::{Ext4Error, Location, Result};
use crate::bytes::{le16, le32, try_le32};

pub(crate) const EXTENT_MAGIC: u16 = 0xF30A;
/// Deepest tree the kernel builds (`EXT4_MAX_EXTENT_DEPTH`).
pub(crate) const MAX_DEPTH: u16 = 5;
/// Lengths above this mark an uninitialised (preallocated, reads as zero) extent.
pub(crate) const INIT_MAX_LEN: u16 = 32768;

/// One mapped run of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First file block.
    pub lblk: u32,
    /// First disk block.
    pub pblk: u64,
    pub len: u32,
    /// Preallocated: the blocks are allocated but read as zeros.
    pub uninit: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub entries: u16,
    pub max: u16,
    pub depth: u16,
}

/// Parse and sanity-check a node header; `room` is how many 12-byte entries fit.
pub(crate) fn header(node: &[u8], room: usize, at: &Location) -> Result<Header> {
    if node.len() < 12 || le16(node, 0) != EXTENT_MAGIC {
        return Err(Ext4Error::corrupt(
            "extent header has a bad magic number",
            at.clone(),
        ));
    }
    let h = Header {
        entries: le16(node, 2),
        max: le16(node, 4),
        depth: le16(node, 6),
    };
    if usize::from(h.max) > room || h.entries > h.max {
        return Err(Ext4Error::corrupt(
            format!(
                "extent header claims {} of {} entries, but only {room} fit",
                h.entries, h.max
            ),
            at.clone(),
        ));
    }
    if h.depth > MAX_DEPTH {
        return Err(Ext4Error::corrupt(
            format!("extent tree depth {} is too deep", h.depth),
            at.clone(),
        ));
    }
    Ok(h)
}

/// Entries of a node after its 12-byte header; [`header`] checked that
/// `h.entries` of them fit the node.
fn raw_entries<'a>(node: &'a [u8], h: &Header) -> impl Iterator<Item = &'a [u8]> {
    node.get(12..)
        .unwrap_or_default()
        .chunks_exact(12)
        .take(usize::from(h.entries))
}

/// Leaf entries of a node whose header says depth 0.
pub(crate) fn leaf_entries(node: &[u8], h: &Header) -> Vec<Extent> {
    raw_entries(node, h)
        .map(|e| {
            let raw_len = le16(e, 4);
            let (len, uninit) = match raw_len.checked_sub(INIT_MAX_LEN) {
                Some(len) if len > 0 => (len, true),
                _ => (raw_len, false),
            };
            Extent {
                lblk: le32(e, 0),
                pblk: u64::from(le32(e, 8)) | (u64::from(le16(e, 6)) << 32),
                len: u32::from(len),
                uninit,
            }
        })
        .collect()
}

/// Index entries (first file block, child node block) of an interior node.
pub(crate) fn index_entries(node: &[u8], h: &Header) -> Vec<(u32, u64)> {
    raw_entries(node, h)
        .map(|e| {
            (
                le32(e, 0),
                u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32),
            )
        })
        .collect()
}

/// Offset of the checksum tail in a tree block with `max` entries.
/// (At most 12 * 65536, so this cannot overflow a `usize` of 32 bits or more.)
pub(crate) fn tail_offset(max: u16) -> usize {
    usize::from(max).saturating_add(1).saturating_mul(12)
}

/// Verify the checksum tail of an extent tree block owned by `ino`.
pub(crate) fn verify_block(
    block: &[u8],
    h: &Header,
    seed: u32,
    ino: u32,
    generation: u32,
    at: &Location,
) -> Result<()> {
    let off = tail_offset(h.max);
    let (Some(covered), Some(stored)) = (block.get(..off), try_le32(block, off)) else {
        return Err(Ext4Error::corrupt(
            "extent block has no room for its checksum",
            at.clone(),
        ));
    };
    let computed = checksum::inode_block(seed, ino, generation, covered);
    if stored != computed {
        return Err(Ext4Error::corrupt(
            format!("extent block checksum is {stored:#010x}, should be {computed:#010x}"),
            at.clone(),
        ));
    }
    Ok(())
}
