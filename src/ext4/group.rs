//! The group descriptor table (32-byte descriptors, or `s_desc_size` with 64bit).

use super::checksum;
use super::error::{Ext4Error, Location, Result};
use super::superblock::Superblock;
use crate::bytes::{le16, le32, set_le16, try_le16, try_le32};

pub const BG_INODE_UNINIT: u16 = 0x1;
pub const BG_BLOCK_UNINIT: u16 = 0x2;
pub const BG_INODE_ZEROED: u16 = 0x4;

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
            is_64bit: sb.is_64bit(),
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
            if sb.has_metadata_csum() {
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
    pub fn desc(&self, g: u32) -> &[u8] {
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

    pub fn block_bitmap(&self, g: u32) -> u64 {
        self.lo_hi32(g, 0x00, 0x20)
    }
    pub fn inode_bitmap(&self, g: u32) -> u64 {
        self.lo_hi32(g, 0x04, 0x24)
    }
    pub fn inode_table(&self, g: u32) -> u64 {
        self.lo_hi32(g, 0x08, 0x28)
    }
    pub fn free_blocks(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x0C, 0x2C)
    }
    pub fn free_inodes(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x0E, 0x2E)
    }
    pub fn used_dirs(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x10, 0x30)
    }
    pub fn flags(&self, g: u32) -> u16 {
        le16(self.desc(g), 0x12)
    }
    pub fn itable_unused(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x1C, 0x32)
    }
    pub fn checksum(&self, g: u32) -> u16 {
        le16(self.desc(g), 0x1E)
    }
    pub fn block_bitmap_csum(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x18, 0x38)
    }
    pub fn inode_bitmap_csum(&self, g: u32) -> u32 {
        self.lo_hi16(g, 0x1A, 0x3A)
    }
    /// Whether the stored bitmap checksums carry 32 bits (64-byte descriptors) or 16.
    pub fn bitmap_csum_mask(&self) -> u32 {
        if self.is_64bit && self.desc_size >= 0x3C {
            u32::MAX
        } else {
            0xFFFF
        }
    }

    pub fn set_free_blocks(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x0C, 0x2C, v);
    }
    pub fn set_free_inodes(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x0E, 0x2E, v);
    }
    pub fn set_used_dirs(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x10, 0x30, v);
    }
    pub fn set_flags(&mut self, g: u32, v: u16) {
        set_le16(self.desc_mut(g), 0x12, v);
    }
    pub fn set_itable_unused(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x1C, 0x32, v);
    }
    pub fn set_block_bitmap_csum(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x18, 0x38, v);
    }
    pub fn set_inode_bitmap_csum(&mut self, g: u32, v: u32) {
        self.set_lo_hi16(g, 0x1A, 0x3A, v);
    }
    pub fn update_checksum(&mut self, seed: u32, g: u32) {
        let c = checksum::group_desc(seed, g, self.desc(g));
        set_le16(self.desc_mut(g), 0x1E, c);
    }
    /// Raw table bytes (for writing back).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
    pub fn desc_size(&self) -> usize {
        self.desc_size
    }
}

#[track_caller]
fn no_group(g: u32) -> ! {
    panic!("group {g} is past the group descriptor table")
}
