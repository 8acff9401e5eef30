//! One sequential pass over the metadata `rpiimg verify` vouches for: every
//! in-use inode's checksum, every extent-tree, directory and extended
//! attribute block reachable from one, and the journal superblock. With
//! the bitmap and count checks (in `verify::invariants`), a verify that
//! passes means `e2fsck -fn` finds nothing wrong in those structures.
//!
//! Problems are collected, not returned as the first error, so one run
//! lists what is damaged; the list is capped so a wrecked filesystem
//! gives a readable answer. The pass reads each in-use inode once and
//! each directory block once: linear in the metadata.

use super::{group, Ext4, Location, ReadAt, JOURNAL_MAGIC};
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
        let sb = &self.sb;
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
                        continue;
                    }
                };
                // Reserved inodes other than the root and the journal are
                // unused placeholders; deleted inodes own no blocks.
                if inode.links_count() == 0 || inode.mode() == 0 {
                    continue;
                }
                if inode.is_dir() {
                    if let Err(e) = self.read_dir(&inode) {
                        found.push(format!("directory inode {ino}: {e}"));
                    }
                } else if !inode.is_fast_symlink() {
                    if let Err(e) = self.extents(&inode) {
                        found.push(format!("inode {ino}: {e}"));
                    }
                }
                if inode.file_acl() != 0 {
                    if let Err(e) = self.xattrs(&inode) {
                        found.push(format!("inode {ino}: {e}"));
                    }
                }
            }
        }
        if let Some(more) = found.len().checked_sub(limit).filter(|&m| m > 0) {
            found.truncate(limit);
            found.push(format!("and {more} more"));
        }
        Ok(found)
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
