//! One sequential pass over the metadata `rpiimg verify` vouches for: every
//! in-use inode's checksum, its `i_blocks` against the blocks it owns,
//! every extent-tree and extended attribute block reachable from one, and
//! the journal superblock; the block and inode bitmaps against what is in
//! use (blocks in `owned`: e2fsck's pass 5); then (in `links`) one walk
//! over the directories from the root that checks their blocks and entries
//! and every inode's link count. With the bitmap and count checks (in `verify::invariants`),
//! a verify that passes means `e2fsck -fn` finds nothing wrong in those
//! structures.
//!
//! Problems are collected, not returned as the first error, so one run
//! lists what is damaged; the list is capped so a wrecked filesystem
//! gives a readable answer. The pass reads each in-use inode once and
//! each directory block once: linear in the metadata.

use super::inode::{FileType, Inode, EXT4_HUGE_FILE_FL, EXT4_INLINE_DATA_FL};
use super::owned::Owned;
use super::{group, links, Ext4, Location, ReadAt, JOURNAL_MAGIC};
use crate::bytes::{array_mut, be32, le32, try_le16};

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
        let mut owned = Owned::new(self, &mut found);
        let sb = &self.sb;
        // dtime is the orphan list's link while inodes are on it.
        let orphans = sb.last_orphan() != 0;
        let ipg = sb.inodes_per_group();
        // Reserved inodes are in use whatever they hold, as e2fsck has it.
        let first_ino = sb.first_ino();
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
            let marked = |index: u32| {
                map.get((index / 8) as usize)
                    .is_some_and(|b| b & (1 << (index % 8)) != 0)
            };
            // Below the inode count, which the superblock ties to groups x
            // inodes per group; so are the inodes past `used` below.
            let number = |index: u32| {
                g.checked_mul(ipg)
                    .and_then(|first| first.checked_add(index))
                    .and_then(|n| n.checked_add(1))
            };
            let used = ipg.saturating_sub(self.groups.itable_unused(g));
            // The inode table block last read for an inode the bitmap calls free.
            let mut table = None;
            for index in 0..used {
                let Some(ino) = number(index) else {
                    found.push(format!("group {g}: inode numbers past 2^32"));
                    break;
                };
                let reserved = ino < first_ino;
                if !marked(index) {
                    // e2fsck reads every inode below the unused area, and
                    // one with links is in use whatever the bitmap says.
                    let links = match self.raw_links(g, index, ino, &mut table) {
                        Ok(n) => n,
                        Err(e) => {
                            found.push(format!("inode {ino}: {e}"));
                            continue;
                        }
                    };
                    if links == 0 && !reserved {
                        continue;
                    }
                    found.push(format!("inode {ino} is in use but free in the bitmap"));
                    if links == 0 {
                        continue;
                    }
                }
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
                // Orphans keep their bit until the kernel releases them.
                if inode.links_count() == 0 && !reserved && !orphans {
                    found.push(format!(
                        "inode {ino} is marked used in the bitmap but has no links"
                    ));
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
                if let Err(e) = self.owned_blocks_problem(&inode, owned.as_mut(), &mut found) {
                    found.push(format!("inode {ino}: {e}"));
                }
                if inode.file_acl() != 0 {
                    if let Err(e) = self.xattrs(&inode) {
                        found.push(format!("inode {ino}: {e}"));
                    }
                }
            }
            // e2fsck counts nothing in the unused area as in use.
            for index in used..ipg {
                if marked(index) {
                    if let Some(ino) = number(index) {
                        found.push(format!(
                            "inode {ino} is marked used in the bitmap but lies in the group's unused inode area"
                        ));
                    }
                }
            }
        }
        if let Some(o) = &owned {
            o.compare(self, &mut found);
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
    fn owned_blocks_problem(
        &self,
        inode: &Inode,
        mut owned: Option<&mut Owned>,
        found: &mut Vec<String>,
    ) -> super::Result<()> {
        use super::features::Feature;
        const RESIZE_INO: u32 = 7;
        if inode.ino == RESIZE_INO {
            // Its other blocks are the reserved descriptor blocks, owned
            // as metadata; e2fsck claims only the double indirect block.
            let dind = u64::from(le32(inode.i_block(), 52));
            if let Some(o) = owned.as_mut().filter(|_| dind != 0) {
                o.claim(self, inode.ino, [dind], found);
            }
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
        let mut owned_set = owned;
        let mut owned = 0u64;
        if has_blocks {
            let (extents, map_blocks) = self.block_map(inode)?;
            // Both are bounded by the filesystem's block count.
            owned = extents.iter().fold(map_blocks.len() as u64, |n, e| {
                n.saturating_add(u64::from(e.len))
            });
            if let Some(o) = owned_set.as_mut() {
                // block_map checked each extent lies inside the filesystem.
                let data = extents
                    .iter()
                    .flat_map(|e| e.pblk..e.pblk.saturating_add(u64::from(e.len)));
                o.claim(self, inode.ino, data.chain(map_blocks), found);
            }
        }
        if inode.file_acl() != 0 {
            owned = owned.saturating_add(1);
            if let Some(o) = owned_set.as_mut() {
                o.claim_shared(self, inode.file_acl());
            }
        }
        let huge_file = self.sb.has(Feature::HugeFile);
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

    /// The link count of inode `index` of group `g`, read from its inode
    /// table block without the checksum check (the bitmap calls it free,
    /// and a free inode's checksum is not kept). `table` caches the block
    /// last read: free inodes come in runs.
    fn raw_links(
        &self,
        g: u32,
        index: u32,
        ino: u32,
        table: &mut Option<(u64, Vec<u8>)>,
    ) -> super::Result<u16> {
        let at = Location::Inode(ino);
        let bs = self.block_size() as u64;
        let off = u64::from(index).checked_mul(u64::from(self.sb.inode_size()));
        let place = off.and_then(|off| {
            let blk = self
                .groups
                .inode_table(g)
                .checked_add(off.checked_div(bs)?)?;
            Some((blk, usize::try_from(off.checked_rem(bs)?).ok()?))
        });
        let Some((blk, within)) = place else {
            return Err(super::Ext4Error::corrupt("inode past 2^64 bytes", at));
        };
        if table.as_ref().is_none_or(|(b, _)| *b != blk) {
            *table = Some((blk, self.read_block(blk, &at)?));
        }
        // i_links_count is at 0x1A in the record.
        let links = table
            .as_ref()
            .and_then(|(_, data)| within.checked_add(0x1A).and_then(|o| try_le16(data, o)));
        Ok(links.unwrap_or(0))
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
        use super::features::Feature;
        let jino = self.sb.journal_inum();
        if !self.sb.has(Feature::HasJournal) || jino == 0 {
            return;
        }
        if self.sb.has(Feature::NeedsRecovery) {
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
