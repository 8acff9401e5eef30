//! The group descriptor table (32-byte descriptors, or `s_desc_size` with 64bit).

use super::checksum;
use super::error::{Ext4Error, Location, Result};
use super::features::Feature;
use super::superblock::Superblock;
use crate::bytes::{le16, le32, set_le16, try_le16, try_le32};

pub(crate) const BG_INODE_UNINIT: u16 = 0x1;
pub(crate) const BG_BLOCK_UNINIT: u16 = 0x2;
pub(crate) const BG_INODE_ZEROED: u16 = 0x4;

/// The whole descriptor table as read from disk.
#[derive(Clone)]
pub struct GroupTable {
    raw: Vec<u8>,
    desc_size: usize,
    is_64bit: bool,
}

impl GroupTable {
    /// Parse the table and verify every descriptor checksum.
    pub fn parse(sb: &Superblock, raw: Vec<u8>) -> Result<Self> {
        let t = GroupTable {
            raw,
            desc_size: sb.desc_size(),
            is_64bit: sb.has(Feature::Bit64),
        };
        let count = sb.group_count();
        let need = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(t.desc_size));
        if need.is_none_or(|n| t.raw.len() < n) {
            return Err(Ext4Error::corrupt(
                "group descriptor table truncated",
                Location::GroupDesc(0),
            ));
        }
        let seed = sb.csum_seed();
        let blocks = sb.blocks_count();
        for g in 0..count {
            if sb.has(Feature::MetadataCsum) {
                let stored = t.checksum(g);
                let computed = checksum::group_desc(seed, g, t.desc(g));
                if stored != computed {
                    return Err(Ext4Error::corrupt(
                        format!(
                            "group descriptor checksum is {stored:#06x}, should be {computed:#06x}"
                        ),
                        Location::GroupDesc(g),
                    ));
                }
            }
            for (what, b) in [
                ("block bitmap", t.block_bitmap(g)),
                ("inode bitmap", t.inode_bitmap(g)),
                ("inode table", t.inode_table(g)),
            ] {
                if b == 0 || b >= blocks {
                    return Err(Ext4Error::corrupt(
                        format!("{what} at block {b} lies outside the filesystem"),
                        Location::GroupDesc(g),
                    ));
                }
            }
        }
        Ok(t)
    }

    /// Descriptor `g`.
    ///
    /// # Panics
    ///
    /// If `g` is not below the group count [`GroupTable::parse`] checked the
    /// table against: group numbers come from the superblock's geometry
    /// (which ties the inode count to the group count), so that is a bug.
    pub(crate) fn desc(&self, g: u32) -> &[u8] {
        let d = usize::try_from(g)
            .ok()
            .and_then(|g| self.raw.chunks_exact(self.desc_size).nth(g));
        d.unwrap_or_else(|| no_group(g))
    }

    fn desc_mut(&mut self, g: u32) -> &mut [u8] {
        let d = usize::try_from(g)
            .ok()
            .and_then(|g| self.raw.chunks_exact_mut(self.desc_size).nth(g));
        d.unwrap_or_else(|| no_group(g))
    }

    fn lo_hi32(&self, g: u32, lo: usize, hi: usize) -> u64 {
        let d = self.desc(g);
        // The high half exists in a 64-bit descriptor large enough to hold it.
        let h = try_le32(d, hi)
            .filter(|_| self.is_64bit)
            .map_or(0, u64::from);
        u64::from(le32(d, lo)) | (h << 32)
    }

    fn lo_hi16(&self, g: u32, lo: usize, hi: usize) -> u32 {
        let d = self.desc(g);
        let h = try_le16(d, hi)
            .filter(|_| self.is_64bit)
            .map_or(0, u32::from);
        u32::from(le16(d, lo)) | (h << 16)
    }

    fn set_lo_hi16(&mut self, g: u32, lo: usize, hi: usize, v: u32) {
        let is_64bit = self.is_64bit;
        let d = self.desc_mut(g);
        let wide = is_64bit && try_le16(d, hi).is_some();
        set_le16(d, lo, (v & 0xFFFF) as u16);
        if wide {
            set_le16(d, hi, (v >> 16) as u16);
        }
    }

    pub(crate) fn block_bitmap(&self, g: u32) -> u64 {
        self.lo_hi32(g, 0x00, 0x20)
    }
    pub(crate) fn inode_bitmap(&self, g: u32) -> u64 {
        self.lo_hi32(g, 0x04, 0x24)
    }
    pub(crate) fn inode_table(&self, g: u32) -> u64 {
        self.lo_hi32(g, 0x08, 0x28)
    }
    pub(crate) fn free_blocks(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x0C, 0x2C)
    }
    pub(crate) fn free_inodes(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x0E, 0x2E)
    }
    pub(crate) fn used_dirs(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x10, 0x30)
    }
    pub fn flags(&self, g: u32) -> u16 {
        le16(self.desc(g), 0x12)
    }
    pub(crate) fn itable_unused(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x1C, 0x32)
    }
    pub fn checksum(&self, g: u32) -> u16 {
        le16(self.desc(g), 0x1E)
    }
    pub(crate) fn block_bitmap_csum(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x18, 0x38)
    }
    pub(crate) fn inode_bitmap_csum(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x1A, 0x3A)
    }
    /// Whether the stored bitmap checksums carry 32 bits (64-byte descriptors) or 16.
    pub(crate) fn bitmap_csum_mask(&self) -> u32 {
        if self.is_64bit && self.desc_size >= 0x3C {
            u32::MAX
        } else {
            0xFFFF
        }
    }

    pub(crate) fn set_free_blocks(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x0C, 0x2C, v);
    }
    pub(crate) fn set_free_inodes(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x0E, 0x2E, v);
    }
    pub(crate) fn set_used_dirs(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x10, 0x30, v);
    }
    pub(crate) fn set_flags(&mut self, g: u32, v: u16) {
        set_le16(self.desc_mut(g), 0x12, v);
    }
    pub(crate) fn set_itable_unused(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x1C, 0x32, v);
    }
    pub(crate) fn set_block_bitmap_csum(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x18, 0x38, v);
    }
    pub(crate) fn set_inode_bitmap_csum(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x1A, 0x3A, v);
    }
    pub(crate) fn update_checksum(&mut self, seed: u32, g: u32) {
        let c = checksum::group_desc(seed, g, self.desc(g));
        set_le16(self.desc_mut(g), 0x1E, c);
    }
    /// Raw table bytes (for writing back).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// Whether group `g` carries a superblock backup and a copy of the
/// descriptor table, as `ext2fs_bg_has_super` decides: group 0 always;
/// with sparse_super2 only the (at most two) groups the superblock names;
/// with sparse_super groups 1 and the powers of 3, 5 and 7; otherwise all.
pub(crate) fn has_super(sb: &Superblock, g: u32) -> bool {
    if g == 0 {
        return true;
    }
    if sb.has(Feature::SparseSuper2) {
        return sb.backup_bgs().contains(&g);
    }
    if g == 1 || !sb.has(Feature::SparseSuper) {
        return true;
    }
    for base in [3u32, 5, 7] {
        let mut n = base;
        while n < g {
            match n.checked_mul(base) {
                Some(m) => n = m,
                None => break,
            }
        }
        if n == g {
            return true;
        }
    }
    false
}

/// Blocks at the start of group `g` taken by its superblock (or backup),
/// descriptor table and reserved descriptor blocks: 0 in a group without
/// a backup. (meta_bg, which places descriptors differently, is refused
/// when the filesystem is opened.) `None` if the sizes overflow.
pub(crate) fn super_and_gdt_blocks(sb: &Superblock, g: u32) -> Option<u64> {
    if !has_super(sb, g) {
        return Some(0);
    }
    let gdt = u64::from(sb.group_count())
        .checked_mul(sb.desc_size() as u64)?
        .div_ceil(sb.block_size() as u64);
    gdt.checked_add(1)?
        .checked_add(u64::from(sb.reserved_gdt_blocks()))
}

/// Blocks in one group's inode table. `None` if the size overflows.
pub(crate) fn itable_blocks(sb: &Superblock) -> Option<u64> {
    u64::from(sb.inodes_per_group())
        .checked_mul(u64::from(sb.inode_size()))
        .map(|b| b.div_ceil(sb.block_size() as u64))
}

/// The first block of group `g`. `None` if it overflows.
pub(crate) fn first_block(sb: &Superblock, g: u32) -> Option<u64> {
    u64::from(g)
        .checked_mul(u64::from(sb.blocks_per_group()))?
        .checked_add(u64::from(sb.first_data_block()))
}

#[track_caller]
fn no_group(g: u32) -> ! {
    panic!("group {g} is past the group descriptor table")
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::{has_super, super_and_gdt_blocks};
    use crate::ext4::features::Feature;
    use crate::ext4::superblock::Superblock;

    /// A 100-group, 4 KiB-block superblock with the given feature words.
    fn sb(compat: u32, ro_compat: u32, backups: [u32; 2]) -> Superblock {
        let mut raw = vec![0u8; 1024];
        let mut put = |off: usize, v: u32| raw[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put(0x00, 100 * 8192); // inodes
        put(0x04, 100 * 32768); // blocks
        put(0x18, 2); // 4 KiB blocks
        put(0x20, 32768);
        put(0x28, 8192);
        put(0x4C, 1); // dynamic revision
        put(0x5C, compat);
        put(0x64, ro_compat);
        put(0x24C, backups[0]);
        put(0x250, backups[1]);
        raw[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        raw[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        raw[0xCE..0xD0].copy_from_slice(&7u16.to_le_bytes()); // reserved GDT
        Superblock::parse(&raw).unwrap()
    }

    #[test]
    fn backup_groups() {
        let sparse = sb(0, Feature::SparseSuper.row().bit, [0, 0]);
        let with: Vec<u32> = (0..100).filter(|&g| has_super(&sparse, g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
        assert!(has_super(&sb(0, 0, [0, 0]), 42));
        let two = sb(Feature::SparseSuper2.row().bit, 0, [1, 99]);
        let with: Vec<u32> = (0..100).filter(|&g| has_super(&two, g)).collect();
        assert_eq!(with, vec![0, 1, 99]);
        // Superblock, one block of 100 32-byte descriptors, 7 reserved.
        assert_eq!(super_and_gdt_blocks(&sparse, 3), Some(9));
        assert_eq!(super_and_gdt_blocks(&sparse, 4), Some(0));
    }
}
