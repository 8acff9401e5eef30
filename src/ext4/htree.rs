//! Hash-indexed directories: dx_root (block 0) and dx_node blocks.

use super::checksum;
use super::error::{Ext4Error, Location, Result};
use crate::bytes::{le16, le32};

/// Index block numbers are logical and only 28 bits wide.
pub const BLOCK_MASK: u32 = 0x0FFF_FFFF;
/// Offset of `count_limit` in a dx_root and a dx_node.
pub const ROOT_COUNT_OFF: usize = 0x20;
pub const NODE_COUNT_OFF: usize = 0x08;

#[derive(Debug, Clone)]
pub struct DxRoot {
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
    let limit = le16(block, count_off);
    let count = le16(block, count_off + 2);
    let tail = if csum { 8 } else { 0 };
    let room = (block.len() - count_off - tail) / 8;
    if count == 0 || count > limit || usize::from(limit) > room {
        return Err(Ext4Error::corrupt(
            format!("htree index has count {count} and limit {limit} (room for {room})"),
            at.clone(),
        ));
    }
    let mut out = Vec::with_capacity(usize::from(count));
    for i in 0..usize::from(count) {
        let o = count_off + i * 8;
        let hash = if i == 0 { 0 } else { le32(block, o) };
        out.push((hash, le32(block, o + 4) & BLOCK_MASK));
    }
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
    let t = count_off + 8 * usize::from(limit);
    if t + 8 > block.len() {
        return Err(Ext4Error::corrupt(
            "htree block has no room for its checksum",
            at.clone(),
        ));
    }
    let mut reserved = [0u8; 4];
    reserved.copy_from_slice(&block[t..t + 4]);
    let stored = le32(block, t + 4);
    let (seed, ino, generation) = csum;
    let computed = checksum::dx_block(
        seed,
        ino,
        generation,
        &block[..count_off + 8 * count],
        reserved,
    );
    if stored != computed {
        return Err(Ext4Error::corrupt(
            format!("htree index checksum is {stored:#010x}, should be {computed:#010x}"),
            at.clone(),
        ));
    }
    Ok(())
}

/// Parse a dx_root; `csum` = (seed, ino, generation) when metadata_csum is on.
pub fn parse_root(block: &[u8], csum: Option<(u32, u32, u32)>, at: &Location) -> Result<DxRoot> {
    if block.len() < 0x30 {
        return Err(Ext4Error::corrupt("htree root block truncated", at.clone()));
    }
    let info_len = block[0x1D];
    let levels = block[0x1E];
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
        hash_version: block[0x1C],
        indirect_levels: levels,
        entries: e,
    })
}

/// Whether a directory block is a dx_node (a fake empty entry spanning the block).
pub fn is_node(block: &[u8]) -> bool {
    le32(block, 0) == 0 && usize::from(le16(block, 4)) == block.len() && block[6] == 0
}

pub fn parse_node(
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

/// The logical block an index level sends `hash` to: the last entry whose
/// hash is <= `hash` (entry 0 covers everything below entry 1).
pub fn descend(entries: &[(u32, u32)], hash: u32) -> u32 {
    let i = entries.partition_point(|&(h, _)| h <= hash).max(1) - 1;
    entries[i].1
}
