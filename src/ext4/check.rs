//! One sequential pass over the metadata `rpiimg verify` vouches for: every
//! in-use inode's checksum, its `i_blocks` against the blocks it owns,
//! every extent-tree and extended attribute block reachable from one, and
//! the journal superblock; then (in `links`) one walk over the directories
//! from the root that checks their blocks and entries and every inode's
//! link count. With the bitmap and count checks (in `verify::invariants`),
//! a verify that passes means `e2fsck -fn` finds nothing wrong in those
//! structures.
//!
//! Problems are collected, not returned as the first error, so one run
//! lists what is damaged; the list is capped so a wrecked filesystem
//! gives a readable answer. The pass reads each in-use inode once and
//! each directory block once: linear in the metadata.

use super::inode::{FileType, Inode, EXT4_HUGE_FILE_FL, EXT4_INLINE_DATA_FL};
use super::{group, links, Ext4, Location, ReadAt, JOURNAL_MAGIC};
use crate::bytes::{array_mut, be32};

/// jbd2 superblock block types and the features that give it a checksum.
const JBD2_SUPERBLOCK_V1: u32 = 3;
const JBD2_SUPERBLOCK_V2: u32 = 4;
const JBD2_FEATURE_INCOMPAT_CSUM_V2: u32 = 0x8;
const JBD2_FEATURE_INCOMPAT_CSUM_V3: u32 = 0x10;
const JBD2_CRC32C_CHKSUM: u8 = 4;

impl<D: ReadAt> Ext4<D> {
    /// Damage found in inodes, extent/directory/xattr blocks and the
    /// journal superblock, at most `limit` entries (then a count of the
    /// rest). Errors reading the device itself are returned as errors.
    pub fn metadata_problems(&self, limit: usize) -> super::Result<Vec<String>> {
        let mut found = Vec::new();
        self.journal_problems(&mut found);
        let mut census = links::Census::new(self);
        if census.is_none() {
            found.push(format!(
                "the inode tables ({} inodes of {} bytes) are larger than the filesystem",
                self.sb.inodes_count(),
                self.sb.inode_size()
            ));
        }
        let sb = &self.sb;
        // dtime is the orphan list's link while inodes are on it.
        let orphans = sb.last_orphan() != 0;
        let ipg = sb.inodes_per_group();
        for g in 0..sb.group_count() {
            if self.groups.flags(g) & group::BG_INODE_UNINIT != 0 {
                continue;
            }
            let map = match self
                .read_block(self.groups.inode_bitmap(g), &Location::Bitmap { group: g })
            {
                Ok(m) => m,
                Err(e) => {
                    found.push(format!("group {g}: inode bitmap: {e}"));
                    continue;
                }
            };
            let used = ipg.saturating_sub(self.groups.itable_unused(g));
            for index in 0..used {
                let in_use = map
                    .get((index / 8) as usize)
                    .is_some_and(|b| b & (1 << (index % 8)) != 0);
                if !in_use {
                    continue;
                }
                // Below the inode count, which the superblock ties to
                // groups x inodes per group.
                let ino = g
                    .checked_mul(ipg)
                    .and_then(|first| first.checked_add(index))
                    .and_then(|n| n.checked_add(1));
                let Some(ino) = ino else {
                    found.push(format!("group {g}: inode numbers past 2^32"));
                    break;
                };
                let inode = match self.inode(ino) {
                    Ok(i) => i,
                    Err(e) => {
                        found.push(format!("inode {ino}: {e}"));
                        if let Some(c) = census.as_mut() {
                            c.unreadable(ino);
                        }
                        continue;
                    }
                };
                if let Some(c) = census.as_mut() {
                    c.record(&inode);
                }
                // Reserved inodes other than the root and the journal are
                // unused placeholders; deleted inodes own no blocks.
                if inode.links_count() == 0 || inode.mode() == 0 {
                    continue;
                }
                if inode.dtime() != 0 && !orphans {
                    found.push(format!("inode {ino} is in use but has a deletion time"));
                }
                // (Directory blocks are read by the walk over directories.)
                if let Err(e) = self.owned_blocks_problem(&inode, &mut found) {
                    found.push(format!("inode {ino}: {e}"));
                }
                if inode.file_acl() != 0 {
                    if let Err(e) = self.xattrs(&inode) {
                        found.push(format!("inode {ino}: {e}"));
                    }
                }
            }
        }
        if let Some(c) = census.as_mut() {
            c.walk(self, &mut found);
        }
        if let Some(more) = found.len().checked_sub(limit).filter(|&m| m > 0) {
            found.truncate(limit);
            found.push(format!("and {more} more"));
        }
        Ok(found)
    }

    /// Check `i_blocks` against the blocks the inode owns: its data (holes
    /// excluded, preallocated extents included), the extent tree or
    /// indirect blocks, and its extended attribute block. Counted in
    /// 512-byte units, or in filesystem blocks for a huge_file inode, as
    /// e2fsck's pass 1 does. The resize inode is skipped: e2fsck checks
    /// it on its own terms (its blocks are the reserved descriptor blocks).
    fn owned_blocks_problem(&self, inode: &Inode, found: &mut Vec<String>) -> super::Result<()> {
        use super::superblock::feature;
        const RESIZE_INO: u32 = 7;
        if inode.ino == RESIZE_INO {
            return Ok(());
        }
        // Inline data and fast symlinks keep their bytes in the inode;
        // devices, fifos and sockets have none.
        let has_blocks = inode.flags() & EXT4_INLINE_DATA_FL == 0
            && match inode.file_type() {
                FileType::Regular | FileType::Directory => true,
                FileType::Symlink => self.symlink_has_blocks(inode),
                _ => false,
            };
        let mut owned = 0u64;
        if has_blocks {
            let (extents, map_blocks) = self.block_map(inode)?;
            // Both are bounded by the filesystem's block count.
            owned = extents
                .iter()
                .fold(map_blocks, |n, e| n.saturating_add(u64::from(e.len)));
        }
        if inode.file_acl() != 0 {
            owned = owned.saturating_add(1);
        }
        let huge_file = self.sb.ro_compat() & feature::RO_COMPAT_HUGE_FILE != 0;
        // Without huge_file the high 16 bits are not part of the count.
        let stored = if huge_file {
            inode.blocks_512()
        } else {
            inode.blocks_512() & 0xFFFF_FFFF
        };
        let (want, unit) = if huge_file && inode.flags() & EXT4_HUGE_FILE_FL != 0 {
            (owned, "filesystem blocks")
        } else {
            // A block is 1 KiB to 64 KiB: 2 to 128 sectors.
            let sectors = (self.block_size() / 512) as u64;
            (owned.saturating_mul(sectors), "512-byte units")
        };
        if stored != want {
            found.push(format!(
                "inode {}: i_blocks is {stored}, but it owns {want} ({unit})",
                inode.ino
            ));
        }
        Ok(())
    }

    /// Whether a symlink's i_block maps blocks, decided as e2fsck decides
    /// it (`ext2fs_inode_has_valid_blocks2`), so the two count the same
    /// blocks: without an xattr block, i_blocks tells; with one, a long
    /// target or a short one leaving i_block's second word zero.
    fn symlink_has_blocks(&self, inode: &Inode) -> bool {
        if inode.file_acl() == 0 {
            return inode.blocks_512() != 0;
        }
        let second = inode.i_block().get(4..8).is_some_and(|w| w == [0; 4]);
        inode.size() >= 60 || (inode.size() > 4 && second)
    }

    /// The journal superblock as e2fsck checks it: magic, type, block
    /// size, length within the journal inode, checksum; and no transactions
    /// waiting for recovery.
    fn journal_problems(&self, found: &mut Vec<String>) {
        use super::superblock::feature;
        let jino = self.sb.journal_inum();
        if self.sb.feature_compat() & feature::COMPAT_HAS_JOURNAL == 0 || jino == 0 {
            return;
        }
        if self.sb.feature_incompat() & feature::INCOMPAT_RECOVER != 0 {
            found.push(
                "the journal needs recovery (the filesystem was not cleanly unmounted)".into(),
            );
            return;
        }
        let at = Location::Inode(jino);
        let blocks = self
            .inode(jino)
            .and_then(|j| self.extents(&j))
            .and_then(|ext| {
                let first = ext.iter().find(|e| e.lblk == 0).copied().ok_or_else(|| {
                    super::Ext4Error::corrupt("journal has no first block", at.clone())
                })?;
                let total: u64 = ext.iter().map(|e| u64::from(e.len)).sum();
                Ok((self.read_block(first.pblk, &at)?, total))
            });
        let (blk, total) = match blocks {
            Ok(v) => v,
            Err(e) => {
                found.push(format!("journal inode {jino}: {e}"));
                return;
            }
        };
        let mut bad = |what: String| found.push(format!("journal superblock: {what}"));
        if be32(&blk, 0) != JOURNAL_MAGIC {
            return bad("bad magic number".into());
        }
        let kind = be32(&blk, 4);
        if kind != JBD2_SUPERBLOCK_V1 && kind != JBD2_SUPERBLOCK_V2 {
            return bad(format!("block type {kind} is not a journal superblock"));
        }
        let bs = be32(&blk, 0x0C);
        if u64::from(bs) != self.block_size() as u64 {
            bad(format!(
                "block size {bs}, the filesystem's is {}",
                self.block_size()
            ));
        }
        let maxlen = u64::from(be32(&blk, 0x10));
        if maxlen == 0 || maxlen > total {
            bad(format!(
                "{maxlen} blocks long, the journal inode has {total}"
            ));
        }
        let first = u64::from(be32(&blk, 0x14));
        if first == 0 || first >= maxlen.max(1) {
            bad(format!("first log block {first} outside the journal"));
        }
        if be32(&blk, 0x1C) != 0 {
            bad("holds transactions waiting for recovery".into());
        }
        // s_errno: the journal was aborted with this error (e2fsck clears it).
        let errno = be32(&blk, 0x20).cast_signed();
        if errno != 0 {
            bad(format!("records an aborted journal (error {errno})"));
        }
        let incompat = be32(&blk, 0x28);
        if kind == JBD2_SUPERBLOCK_V2
            && incompat & (JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3) != 0
        {
            if blk.get(0x50) != Some(&JBD2_CRC32C_CHKSUM) {
                bad("checksum type is not crc32c".into());
            } else if let Some(sb) = blk.first_chunk::<1024>() {
                // The checksum covers the superblock with its own field as zeros.
                let mut copy = *sb;
                *array_mut::<4>(&mut copy, 0xFC) = [0; 4];
                let want = super::checksum::crc32c_raw(!0, &copy);
                if want != be32(sb, 0xFC) {
                    bad("checksum does not match".into());
                }
            }
        }
    }
}
