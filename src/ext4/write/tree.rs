//! Extent trees for files the writer creates or rewrites: up to four
//! extents in the inode, otherwise one index level over leaf blocks
//! (a Pi OS file never needs more).

use super::Writer;
use crate::bytes::{set_le16, set_le32};
use crate::ext4::checksum;
use crate::ext4::error::{Ext4Error, Location, Result};
use crate::ext4::extent::{self, Extent};
use crate::ext4::inode::{Inode, EXT4_EXTENTS_FL, EXT4_HUGE_FILE_FL};
use crate::image::ReadAt;

const MAGIC: u16 = 0xF30A;
/// Longest initialised extent.
pub(super) const MAX_LEN: u32 = 32768;
const IN_INODE: usize = 4;

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    set_le16(buf, 0, MAGIC);
    set_le16(buf, 2, u16::try_from(entries).unwrap_or(0));
    set_le16(buf, 4, u16::try_from(max).unwrap_or(0));
    set_le16(buf, 6, depth);
    set_le32(buf, 8, 0);
}

fn leaf_entry(buf: &mut [u8], at: usize, e: &Extent) {
    set_le32(buf, at, e.lblk);
    set_le16(buf, at + 4, u16::try_from(e.len).unwrap_or(0));
    set_le16(buf, at + 6, u16::try_from(e.pblk >> 32).unwrap_or(0));
    set_le32(
        buf,
        at + 8,
        u32::try_from(e.pblk & 0xFFFF_FFFF).unwrap_or(0),
    );
}

fn index_entry(buf: &mut [u8], at: usize, lblk: u32, leaf: u64) {
    set_le32(buf, at, lblk);
    set_le32(buf, at + 4, u32::try_from(leaf & 0xFFFF_FFFF).unwrap_or(0));
    set_le16(buf, at + 8, u16::try_from(leaf >> 32).unwrap_or(0));
    set_le16(buf, at + 10, 0);
}

/// Runs of physical blocks laid end to end from logical block `lblk0`,
/// cut into extents no longer than [`MAX_LEN`].
pub(super) fn runs_to_extents(lblk0: u32, runs: &[(u64, u32)]) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    let mut lblk = lblk0;
    for &(pblk, len) in runs {
        let mut done = 0u32;
        while done < len {
            let n = (len - done).min(MAX_LEN);
            let p = pblk + u64::from(done);
            match out.last_mut() {
                Some(last)
                    if last.pblk + u64::from(last.len) == p
                        && last.lblk + last.len == lblk
                        && last.len + n <= MAX_LEN =>
                {
                    last.len += n;
                }
                _ => out.push(Extent {
                    lblk,
                    pblk: p,
                    len: n,
                    uninit: false,
                }),
            }
            lblk += n;
            done += n;
        }
    }
    out
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
                let ch = extent::header(&blk, (blk.len() - 12) / 12, &cat)?;
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
        header(&mut ib, 0, IN_INODE, 0);
        inode.set_i_block(&ib);
        inode.set_flags(inode.flags() | EXT4_EXTENTS_FL);
        let ea = if inode.file_acl() != 0 { 8 } else { 0 };
        inode.set_blocks_512(ea);
        Ok(())
    }

    /// Store `extents` (sorted, non-overlapping) as the inode's block map,
    /// replacing an empty tree. Sets i_blocks for data, tree and EA block.
    pub(super) fn set_extents(&mut self, inode: &mut Inode, extents: &[Extent]) -> Result<()> {
        let bs = self.fs.block_size();
        let per_leaf = (bs - 12) / 12;
        let mut ib = [0u8; 60];
        let mut tree_blocks = 0u64;
        if extents.len() <= IN_INODE {
            header(&mut ib, extents.len(), IN_INODE, 0);
            for (i, e) in extents.iter().enumerate() {
                leaf_entry(&mut ib, 12 + 12 * i, e);
            }
        } else {
            let chunks: Vec<&[Extent]> = extents.chunks(per_leaf).collect();
            if chunks.len() > IN_INODE {
                return Err(Ext4Error::NoSpace {
                    what: format!(
                        "free space too fragmented: {} extents would need a deeper extent tree",
                        extents.len()
                    ),
                });
            }
            let goal = extents[0].pblk;
            let leaves = self.alloc_blocks(goal, chunks.len() as u64)?;
            let leaf_blocks: Vec<u64> = leaves
                .iter()
                .flat_map(|&(s, l)| (0..u64::from(l)).map(move |i| s + i))
                .collect();
            header(&mut ib, chunks.len(), IN_INODE, 1);
            for (i, (chunk, &leaf)) in chunks.iter().zip(&leaf_blocks).enumerate() {
                index_entry(&mut ib, 12 + 12 * i, chunk[0].lblk, leaf);
                let mut blk = vec![0u8; bs];
                header(&mut blk, chunk.len(), per_leaf, 0);
                for (j, e) in chunk.iter().enumerate() {
                    leaf_entry(&mut blk, 12 + 12 * j, e);
                }
                if self.fs.csum() {
                    let t = extent::tail_offset(u16::try_from(per_leaf).unwrap_or(0));
                    let c = checksum::inode_block(
                        self.fs.seed,
                        inode.ino,
                        inode.generation(),
                        &blk[..t],
                    );
                    set_le32(&mut blk, t, c);
                }
                self.write_block(leaf, &blk)?;
                tree_blocks += 1;
            }
        }
        inode.set_i_block(&ib);
        inode.set_flags(inode.flags() | EXT4_EXTENTS_FL);
        let data: u64 = extents.iter().map(|e| u64::from(e.len)).sum();
        let ea = u64::from(inode.file_acl() != 0);
        inode.set_blocks_512((data + tree_blocks + ea) * (bs as u64 / 512));
        Ok(())
    }

    /// Append one block at logical `lblk` to a (directory) inode's map,
    /// allocating it next to the current last block when possible.
    pub(super) fn append_block(&mut self, inode: &mut Inode, lblk: u32) -> Result<u64> {
        let mut ext = self.fs.extents(inode)?;
        let goal = ext
            .last()
            .map_or_else(|| self.group_goal(inode.ino), |e| e.pblk + u64::from(e.len));
        let run = self.alloc_blocks(goal, 1)?;
        let pblk = run[0].0;
        for b in self.tree_blocks(inode)? {
            self.free_blocks(b, 1)?;
        }
        match ext.last_mut() {
            Some(last)
                if last.pblk + u64::from(last.len) == pblk
                    && last.lblk + last.len == lblk
                    && last.len < MAX_LEN =>
            {
                last.len += 1;
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
    pub(super) fn group_goal(&self, ino: u32) -> u64 {
        let g = (ino - 1) / self.fs.sb.inodes_per_group();
        u64::from(self.fs.sb.first_data_block())
            + u64::from(g) * u64::from(self.fs.sb.blocks_per_group())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_cut_at_max_len_and_merged_when_adjacent() {
        let e = runs_to_extents(0, &[(100, 40000), (40100, 10)]);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].lblk, e[0].pblk, e[0].len), (0, 100, 32768));
        assert_eq!((e[1].lblk, e[1].pblk, e[1].len), (32768, 32868, 7242));
        let e = runs_to_extents(0, &[(10, 5), (20, 5)]);
        assert_eq!(e.len(), 2);
        assert_eq!((e[1].lblk, e[1].pblk), (5, 20));
    }
}
