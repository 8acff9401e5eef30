//! Extent trees for files the writer creates or rewrites: up to four
//! extents in the inode, otherwise one index level over leaf blocks
//! (a Pi OS file never needs more).

use super::{raw, Writer};
use crate::ext4::checksum;
use crate::ext4::error::{Ext4Error, Location, Result};
use crate::ext4::extent::{self, Extent};
use crate::ext4::inode::{Inode, EXT4_EXTENTS_FL, EXT4_HUGE_FILE_FL};
use crate::image::ReadAt;

const MAGIC: u16 = 0xF30A;
/// Longest initialised extent.
pub(super) const MAX_LEN: u32 = 32768;
const IN_INODE: usize = 4;
/// Size of the header and of each entry of an extent node.
const ENTRY: usize = 12;

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16, at: &Location) -> Result<()> {
    raw::wr16(buf, 0, MAGIC, "extent header magic", at)?;
    let entries = raw::narrow(entries, "extent entry count", at)?;
    raw::wr16(buf, 2, entries, "extent entry count", at)?;
    let max = raw::narrow(max, "extent entry limit", at)?;
    raw::wr16(buf, 4, max, "extent entry limit", at)?;
    raw::wr16(buf, 6, depth, "extent depth", at)?;
    raw::wr32(buf, 8, 0, "extent generation", at)
}

/// A 48-bit block number as its low 32 and high 16 bits, or an error.
fn split_pblk(pblk: u64, at: &Location) -> Result<(u32, u16)> {
    let [b0, b1, b2, b3, b4, b5, 0, 0] = pblk.to_le_bytes() else {
        return Err(Ext4Error::corrupt(
            format!("block {pblk} does not fit the 48 bits of an extent"),
            at.clone(),
        ));
    };
    Ok((
        u32::from_le_bytes([b0, b1, b2, b3]),
        u16::from_le_bytes([b4, b5]),
    ))
}

/// Write one leaf entry into a 12-byte slot.
fn leaf_entry(slot: &mut [u8], e: &Extent, at: &Location) -> Result<()> {
    let (lo, hi) = split_pblk(e.pblk, at)?;
    raw::wr32(slot, 0, e.lblk, "extent logical block", at)?;
    let len = raw::narrow(e.len, "extent length", at)?;
    raw::wr16(slot, 4, len, "extent length", at)?;
    raw::wr16(slot, 6, hi, "extent start (high)", at)?;
    raw::wr32(slot, 8, lo, "extent start (low)", at)
}

/// Write one index entry into a 12-byte slot.
fn index_entry(slot: &mut [u8], lblk: u32, leaf: u64, at: &Location) -> Result<()> {
    let (lo, hi) = split_pblk(leaf, at)?;
    raw::wr32(slot, 0, lblk, "extent index logical block", at)?;
    raw::wr32(slot, 4, lo, "extent index leaf (low)", at)?;
    raw::wr16(slot, 8, hi, "extent index leaf (high)", at)?;
    raw::wr16(slot, 10, 0, "extent index padding", at)
}

/// The entry slots of an extent node (after its header), as many as
/// `n`; an error if the node has fewer.
fn slots<'a>(
    node: &'a mut [u8],
    n: usize,
    at: &Location,
) -> Result<impl Iterator<Item = &'a mut [u8]>> {
    let have = (node.len() / ENTRY).saturating_sub(1);
    if n > have {
        return Err(Ext4Error::corrupt(
            format!("{n} extent entries do not fit a node with room for {have}"),
            at.clone(),
        ));
    }
    Ok(node.chunks_exact_mut(ENTRY).skip(1).take(n))
}

/// Runs of physical blocks laid end to end from logical block `lblk0`,
/// cut into extents no longer than [`MAX_LEN`].
pub(super) fn runs_to_extents(
    lblk0: u32,
    runs: &[(u64, u32)],
    at: &Location,
) -> Result<Vec<Extent>> {
    let mut out: Vec<Extent> = Vec::new();
    // Kept wide so the block after a run ending at 2^32 - 1 is no wrap.
    let mut lblk = u64::from(lblk0);
    for &(pblk, len) in runs {
        let mut rest = len;
        let mut p = pblk;
        while rest > 0 {
            let n = rest.min(MAX_LEN);
            let l32: u32 = raw::narrow(lblk, "logical block of an extent", at)?;
            // Checked sums: an extent ending at the top of the block space
            // must not wrap and merge with one at its start.
            let merged = match out.last_mut() {
                Some(last)
                    if last.pblk.checked_add(u64::from(last.len)) == Some(p)
                        && u64::from(last.lblk).checked_add(u64::from(last.len)) == Some(lblk) =>
                {
                    match last.len.checked_add(n) {
                        Some(l) if l <= MAX_LEN => {
                            last.len = l;
                            true
                        }
                        _ => false,
                    }
                }
                _ => false,
            };
            if !merged {
                out.push(Extent {
                    lblk: l32,
                    pblk: p,
                    len: n,
                    uninit: false,
                });
            }
            rest = rest
                .checked_sub(n)
                .ok_or_else(|| raw::overflow("run length", at))?;
            p = p
                .checked_add(u64::from(n))
                .ok_or_else(|| raw::overflow("physical block of a run", at))?;
            lblk = lblk
                .checked_add(u64::from(n))
                .ok_or_else(|| raw::overflow("logical block of a run", at))?;
        }
    }
    Ok(out)
}

impl<D: ReadAt> Writer<D> {
    /// The index/leaf blocks of an inode's extent tree (not its data).
    pub(super) fn tree_blocks(&self, inode: &Inode) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        if !inode.uses_extents() {
            return Ok(out);
        }
        let at = Location::Inode(inode.ino);
        let root = inode.i_block();
        let h = extent::header(root, 4, &at)?;
        let mut stack: Vec<(Vec<u8>, extent::Header)> = vec![(root.to_vec(), h)];
        while let Some((node, h)) = stack.pop() {
            if h.depth == 0 {
                continue;
            }
            for (_, child) in extent::index_entries(&node, &h) {
                let cat = Location::Block {
                    ino: inode.ino,
                    block: child,
                };
                let blk = self.fs.read_block(child, &cat)?;
                // A block too small for a header is refused by `header`.
                let room = blk.len().checked_sub(ENTRY).map_or(0, |b| b / ENTRY);
                let ch = extent::header(&blk, room, &cat)?;
                out.push(child);
                stack.push((blk, ch));
            }
        }
        Ok(out)
    }

    /// Refuse inodes this writer must not rewrite in place.
    pub(super) fn check_rewritable(&self, inode: &Inode, path: &str) -> Result<()> {
        if inode.flags() & EXT4_HUGE_FILE_FL != 0 {
            return Err(Ext4Error::unsupported(
                format!("{path} is a huge_file inode (block-unit i_blocks)"),
                "rpiimg does not rewrite such files",
            ));
        }
        let blocky = !inode.uses_extents()
            && !inode.is_fast_symlink()
            && !matches!(
                inode.file_type(),
                crate::ext4::FileType::CharDevice
                    | crate::ext4::FileType::BlockDevice
                    | crate::ext4::FileType::Fifo
                    | crate::ext4::FileType::Socket
            )
            && inode.size() > 0;
        if blocky {
            return Err(Ext4Error::unsupported(
                format!("{path} uses a classic block map (no extents)"),
                "rpiimg only rewrites extent-mapped files; replace the file by a new one (remove, then write) on a writable system",
            ));
        }
        Ok(())
    }

    /// Free every data and tree block of an inode and empty its block map.
    pub(super) fn truncate_blocks(&mut self, inode: &mut Inode) -> Result<()> {
        if inode.is_fast_symlink() && !inode.uses_extents() {
            inode.set_i_block(&[0; 60]);
            return Ok(());
        }
        if inode.uses_extents() {
            for e in self.fs.extents(inode)? {
                self.free_blocks(e.pblk, u64::from(e.len))?;
            }
            for b in self.tree_blocks(inode)? {
                self.free_blocks(b, 1)?;
            }
        }
        let mut ib = [0u8; 60];
        header(&mut ib, 0, IN_INODE, 0, &Location::Inode(inode.ino))?;
        inode.set_i_block(&ib);
        inode.set_flags(inode.flags() | EXT4_EXTENTS_FL);
        let ea = if inode.file_acl() != 0 { 8 } else { 0 };
        inode.set_blocks_512(ea);
        Ok(())
    }

    /// Store `extents` (sorted, non-overlapping) as the inode's block map,
    /// replacing an empty tree. Sets i_blocks for data, tree and EA block.
    pub(super) fn set_extents(&mut self, inode: &mut Inode, extents: &[Extent]) -> Result<()> {
        let at = Location::Inode(inode.ino);
        let bs = self.fs.block_size();
        let per_leaf = bs.checked_sub(ENTRY).map_or(0, |b| b / ENTRY);
        let mut ib = [0u8; 60];
        let mut tree_blocks = 0u64;
        if extents.len() <= IN_INODE {
            header(&mut ib, extents.len(), IN_INODE, 0, &at)?;
            for (slot, e) in slots(&mut ib, extents.len(), &at)?.zip(extents) {
                leaf_entry(slot, e, &at)?;
            }
        } else {
            let chunks: Vec<&[Extent]> = extents.chunks(per_leaf.max(1)).collect();
            if chunks.len() > IN_INODE {
                return Err(Ext4Error::NoSpace {
                    what: format!(
                        "free space too fragmented: {} extents would need a deeper extent tree",
                        extents.len()
                    ),
                });
            }
            // More than IN_INODE extents, so there is a first one.
            let goal = extents.first().map_or(0, |e| e.pblk);
            let leaves = self.alloc_blocks(goal, chunks.len() as u64)?;
            let mut leaf_blocks = Vec::new();
            for &(s, l) in &leaves {
                let end = s
                    .checked_add(u64::from(l))
                    .ok_or_else(|| raw::overflow("allocated run", &at))?;
                leaf_blocks.extend(s..end);
            }
            header(&mut ib, chunks.len(), IN_INODE, 1, &at)?;
            let index = slots(&mut ib, chunks.len(), &at)?;
            for ((slot, chunk), &leaf) in index.zip(&chunks).zip(&leaf_blocks) {
                let lat = Location::Block {
                    ino: inode.ino,
                    block: leaf,
                };
                let first = chunk.first().map_or(0, |e| e.lblk); // chunks are never empty
                index_entry(slot, first, leaf, &at)?;
                let mut blk = vec![0u8; bs];
                header(&mut blk, chunk.len(), per_leaf, 0, &lat)?;
                for (slot, e) in slots(&mut blk, chunk.len(), &lat)?.zip(chunk.iter()) {
                    leaf_entry(slot, e, &lat)?;
                }
                if self.fs.csum() {
                    let t = extent::tail_offset(raw::narrow(per_leaf, "extent entry limit", &lat)?);
                    let c = checksum::inode_block(
                        self.fs.seed,
                        inode.ino,
                        inode.generation(),
                        raw::field(&blk, 0, t, "extent leaf", &lat)?,
                    );
                    raw::wr32(&mut blk, t, c, "extent leaf checksum", &lat)?;
                }
                self.write_block(leaf, &blk)?;
                tree_blocks = tree_blocks
                    .checked_add(1)
                    .ok_or_else(|| raw::overflow("extent tree block count", &at))?;
            }
        }
        inode.set_i_block(&ib);
        inode.set_flags(inode.flags() | EXT4_EXTENTS_FL);
        let mut blocks = u64::from(inode.file_acl() != 0);
        for n in extents
            .iter()
            .map(|e| u64::from(e.len))
            .chain([tree_blocks])
        {
            blocks = blocks
                .checked_add(n)
                .ok_or_else(|| raw::overflow("block count", &at))?;
        }
        let sectors = blocks
            .checked_mul(bs as u64 / 512)
            .ok_or_else(|| raw::overflow("i_blocks", &at))?;
        inode.set_blocks_512(sectors);
        Ok(())
    }

    /// Append one block at logical `lblk` to a (directory) inode's map,
    /// allocating it next to the current last block when possible.
    pub(super) fn append_block(&mut self, inode: &mut Inode, lblk: u32) -> Result<u64> {
        let at = Location::Inode(inode.ino);
        let mut ext = self.fs.extents(inode)?;
        let goal = match ext.last() {
            Some(e) => e
                .pblk
                .checked_add(u64::from(e.len))
                .ok_or_else(|| raw::overflow("end of the last extent", &at))?,
            None => self.group_goal(inode.ino)?,
        };
        let run = self.alloc_blocks(goal, 1)?;
        let pblk = super::first_block(&run)?;
        for b in self.tree_blocks(inode)? {
            self.free_blocks(b, 1)?;
        }
        match ext.last_mut() {
            Some(last)
                if last.pblk.checked_add(u64::from(last.len)) == Some(pblk)
                    && last.lblk.checked_add(last.len) == Some(lblk)
                    && last.len < MAX_LEN =>
            {
                // Below MAX_LEN, so this cannot overflow.
                last.len = last
                    .len
                    .checked_add(1)
                    .ok_or_else(|| raw::overflow("extent length", &at))?;
            }
            _ => ext.push(Extent {
                lblk,
                pblk,
                len: 1,
                uninit: false,
            }),
        }
        self.set_extents(inode, &ext)?;
        Ok(pblk)
    }

    /// A block near the start of the inode's group: where its data should go.
    pub(super) fn group_goal(&self, ino: u32) -> Result<u64> {
        let at = Location::Inode(ino);
        let g = ino
            .checked_sub(1)
            .and_then(|i| i.checked_div(self.fs.sb.inodes_per_group()))
            .ok_or_else(|| raw::overflow("group of inode", &at))?;
        u64::from(g)
            .checked_mul(u64::from(self.fs.sb.blocks_per_group()))
            .and_then(|b| b.checked_add(u64::from(self.fs.sb.first_data_block())))
            .ok_or_else(|| raw::overflow("first block of the inode's group", &at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_cut_at_max_len_and_merged_when_adjacent() {
        let at = Location::Superblock;
        let triples = |e: Vec<Extent>| -> Vec<(u32, u64, u32)> {
            e.iter().map(|x| (x.lblk, x.pblk, x.len)).collect()
        };
        let e = runs_to_extents(0, &[(100, 40000), (40100, 10)], &at).unwrap();
        assert_eq!(triples(e), [(0, 100, 32768), (32768, 32868, 7242)]);
        let e = runs_to_extents(0, &[(10, 5), (20, 5)], &at).unwrap();
        assert_eq!(triples(e), [(0, 10, 5), (5, 20, 5)]);
        // The last logical block is usable; one past it is an error, not a wrap.
        let e = runs_to_extents(u32::MAX, &[(7, 1)], &at).unwrap();
        assert_eq!(triples(e), [(u32::MAX, 7, 1)]);
        assert!(runs_to_extents(u32::MAX, &[(7, 1), (9, 1)], &at).is_err());
        // Block numbers past 48 bits are refused rather than truncated.
        assert_eq!(
            split_pblk(0xFFFF_FFFF_FFFF, &at).unwrap(),
            (u32::MAX, u16::MAX)
        );
        assert!(split_pblk(0x1_0000_0000_0000, &at).is_err());
    }
}
