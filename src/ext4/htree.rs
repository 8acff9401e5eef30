//! Hash-indexed directories: dx_root (block 0) and dx_node blocks.

use super::checksum;
use super::error::{Ext4Error, Location, Result};
use crate::bytes::{le32, try_le16};

/// Index block numbers are logical and only 28 bits wide.
pub(crate) const BLOCK_MASK: u32 = 0x0FFF_FFFF;
/// Offset of `count_limit` in a dx_root and a dx_node.
pub(crate) const ROOT_COUNT_OFF: usize = 0x20;
pub(crate) const NODE_COUNT_OFF: usize = 0x08;

#[derive(Debug, Clone)]
pub(crate) struct DxRoot {
    pub hash_version: u8,
    pub indirect_levels: u8,
    pub entries: Vec<(u32, u32)>,
}

/// (hash, logical block) pairs of an index block; entry 0's hash is implicit 0.
fn entries(
    block: &[u8],
    count_off: usize,
    at: &Location,
    csum: bool,
) -> Result<(Vec<(u32, u32)>, u16)> {
    // From `count_limit` on, the block is 8-byte entries (the first holds
    // limit and count in place of a hash), then the 8-byte checksum tail.
    let index = block.get(count_off..).unwrap_or_default();
    let (Some(limit), Some(count)) = (try_le16(index, 0), try_le16(index, 2)) else {
        return Err(Ext4Error::corrupt(
            "htree index block truncated",
            at.clone(),
        ));
    };
    let tail = if csum { 8 } else { 0 };
    let room = index.len().saturating_sub(tail) / 8;
    if count == 0 || count > limit || usize::from(limit) > room {
        return Err(Ext4Error::corrupt(
            format!("htree index has count {count} and limit {limit} (room for {room})"),
            at.clone(),
        ));
    }
    let out = index
        .chunks_exact(8)
        .take(usize::from(count))
        .enumerate()
        .map(|(i, e)| {
            let hash = if i == 0 { 0 } else { le32(e, 0) };
            (hash, le32(e, 4) & BLOCK_MASK)
        })
        .collect();
    Ok((out, limit))
}

/// `csum` is (fs seed, directory inode, its generation).
fn verify(
    block: &[u8],
    count_off: usize,
    limit: u16,
    count: usize,
    csum: (u32, u32, u32),
    at: &Location,
) -> Result<()> {
    // Offset just past `n` index entries.
    let end_of = |n: usize| n.checked_mul(8)?.checked_add(count_off);
    let tail = end_of(usize::from(limit))
        .and_then(|t| block.get(t..))
        .and_then(<[u8]>::first_chunk::<8>);
    let covered = end_of(count).and_then(|e| block.get(..e));
    let (Some(&[r0, r1, r2, r3, s0, s1, s2, s3]), Some(covered)) = (tail, covered) else {
        return Err(Ext4Error::corrupt(
            "htree block has no room for its checksum",
            at.clone(),
        ));
    };
    let stored = u32::from_le_bytes([s0, s1, s2, s3]);
    let (seed, ino, generation) = csum;
    let computed = checksum::dx_block(seed, ino, generation, covered, [r0, r1, r2, r3]);
    if stored != computed {
        return Err(Ext4Error::corrupt(
            format!("htree index checksum is {stored:#010x}, should be {computed:#010x}"),
            at.clone(),
        ));
    }
    Ok(())
}

/// Parse a dx_root; `csum` = (seed, ino, generation) when metadata_csum is on.
pub(crate) fn parse_root(
    block: &[u8],
    csum: Option<(u32, u32, u32)>,
    at: &Location,
) -> Result<DxRoot> {
    let Some(head) = block.first_chunk::<0x30>() else {
        return Err(Ext4Error::corrupt("htree root block truncated", at.clone()));
    };
    let info_len = head[0x1D];
    let levels = head[0x1E];
    if info_len != 8 || levels > 2 {
        return Err(Ext4Error::corrupt(
            format!("htree root has info length {info_len} and {levels} indirect levels"),
            at.clone(),
        ));
    }
    let (e, limit) = entries(block, ROOT_COUNT_OFF, at, csum.is_some())?;
    if let Some(c) = csum {
        verify(block, ROOT_COUNT_OFF, limit, e.len(), c, at)?;
    }
    Ok(DxRoot {
        hash_version: head[0x1C],
        indirect_levels: levels,
        entries: e,
    })
}

/// Whether a directory block is a dx_node (a fake empty entry spanning the block).
pub(crate) fn is_node(block: &[u8]) -> bool {
    match block.first_chunk::<8>() {
        Some(&[0, 0, 0, 0, r0, r1, 0, _]) => {
            usize::from(u16::from_le_bytes([r0, r1])) == block.len()
        }
        _ => false,
    }
}

pub(crate) fn parse_node(
    block: &[u8],
    csum: Option<(u32, u32, u32)>,
    at: &Location,
) -> Result<Vec<(u32, u32)>> {
    let (e, limit) = entries(block, NODE_COUNT_OFF, at, csum.is_some())?;
    if let Some(c) = csum {
        verify(block, NODE_COUNT_OFF, limit, e.len(), c, at)?;
    }
    Ok(e)
}

/// The position in an index level whose entry covers `hash`: the last entry
/// whose hash is <= `hash` (entry 0 covers everything below entry 1).
pub(crate) fn covering(entries: &[(u32, u32)], hash: u32) -> usize {
    entries
        .partition_point(|&(h, _)| h <= hash)
        .saturating_sub(1)
}

/// The logical block an index level sends `hash` to; `None` for an empty
/// level (which [`parse_root`] and [`parse_node`] never return).
pub(crate) fn descend(entries: &[(u32, u32)], hash: u32) -> Option<u32> {
    entries.get(covering(entries, hash)).map(|&(_, lblk)| lblk)
}
