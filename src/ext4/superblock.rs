//! The ext4 superblock (1024 bytes at byte 1024 of the filesystem).

use std::num::NonZeroU64;

use super::checksum;
use super::error::{Ext4Error, Location, Result};
use super::features::{Feature, FeatureSet, Gate};
use crate::bytes::{array, le16, le32, le64, set_le32};

pub(crate) const SUPERBLOCK_OFFSET: u64 = 1024;
pub(crate) const SUPERBLOCK_SIZE: usize = 1024;
const MAGIC: u16 = 0xEF53;

/// `s_flags` values.
pub(crate) const FLAG_UNSIGNED_HASH: u32 = 0x2;

/// `s_state` values.
pub(crate) const STATE_VALID: u16 = 0x1;
pub(crate) const STATE_ERROR: u16 = 0x2;

#[derive(Clone)]
pub struct Superblock {
    raw: Box<[u8; SUPERBLOCK_SIZE]>,
    /// The number of block groups, counted once the geometry was checked.
    groups: u32,
}

impl Superblock {
    /// Parse and validate enough of the superblock to read the filesystem.
    pub fn parse(raw: &[u8]) -> Result<Self> {
        let raw: Box<[u8; SUPERBLOCK_SIZE]> = raw
            .get(..SUPERBLOCK_SIZE)
            .and_then(|s| <[u8; SUPERBLOCK_SIZE]>::try_from(s).ok())
            .map(Box::new)
            .ok_or_else(|| Ext4Error::corrupt("superblock truncated", Location::Superblock))?;
        let mut sb = Superblock { raw, groups: 0 };
        if sb.magic() != MAGIC {
            return Err(Ext4Error::corrupt(
                format!(
                    "bad superblock magic {:#06x} (expected 0xef53): not an ext2/3/4 filesystem",
                    sb.magic()
                ),
                Location::Superblock,
            ));
        }
        if sb.has(Feature::MetadataCsum) {
            let stored = sb.checksum();
            let computed = checksum::superblock(&sb.raw);
            if stored != computed {
                return Err(Ext4Error::corrupt(
                    format!("superblock checksum is {stored:#010x}, should be {computed:#010x}"),
                    Location::Superblock,
                ));
            }
        }
        sb.groups = sb.check_geometry()?;
        sb.check_readable_features()?;
        Ok(sb)
    }

    /// Check the geometry; returns the number of block groups.
    fn check_geometry(&self) -> Result<u32> {
        let bad = |what: String| Err(Ext4Error::corrupt(what, Location::Superblock));
        if self.rev_level() < 1 {
            return Err(Ext4Error::unsupported(
                "revision 0 (ext2 \"good old\") filesystem",
                "only dynamic-revision ext4 filesystems are supported",
            ));
        }
        if self.log_block_size() > 6 {
            return bad(format!(
                "block size exponent {} is out of range",
                self.log_block_size()
            ));
        }
        let isz = usize::from(self.inode_size());
        if isz < 128 || !isz.is_power_of_two() || isz > self.block_size() {
            return bad(format!("inode size {isz} is invalid"));
        }
        if self.blocks_per_group() == 0 || self.inodes_per_group() == 0 {
            return bad("zero blocks or inodes per group".into());
        }
        // A group's bitmap is one block, 8 bits a byte.
        let bitmap_block = self.block_size() as u64;
        if u64::from(self.blocks_per_group()).div_ceil(8) > bitmap_block {
            return bad(format!(
                "{} blocks per group do not fit one bitmap block",
                self.blocks_per_group()
            ));
        }
        if u64::from(self.inodes_per_group()).div_ceil(8) > bitmap_block {
            return bad(format!(
                "{} inodes per group do not fit one bitmap block",
                self.inodes_per_group()
            ));
        }
        if self.blocks_count() <= u64::from(self.first_data_block()) {
            return bad("block count smaller than the first data block".into());
        }
        if self.has(Feature::Bit64) {
            let ds = self.desc_size();
            if ds < 32 || !ds.is_power_of_two() || ds > 1024 {
                return bad(format!("group descriptor size {ds} is invalid"));
            }
        }
        let groups = self.count_groups()?;
        if u64::from(groups).checked_mul(u64::from(self.inodes_per_group()))
            != Some(u64::from(self.inodes_count()))
        {
            return bad(format!(
                "inode count {} is not {} groups x {} inodes",
                self.inodes_count(),
                groups,
                self.inodes_per_group()
            ));
        }
        Ok(groups)
    }

    fn check_readable_features(&self) -> Result<()> {
        let unreadable = self.features().unreadable();
        if !unreadable.is_empty() {
            return Err(Ext4Error::Features {
                gate: Gate::Read,
                features: unreadable,
            });
        }
        Ok(())
    }

    pub fn raw(&self) -> &[u8; SUPERBLOCK_SIZE] {
        &self.raw
    }

    /// Recompute and store the checksum (after a field was changed).
    pub(crate) fn update_checksum(&mut self) {
        let c = checksum::superblock(&self.raw);
        set_le32(&mut self.raw[..], 0x3FC, c);
    }

    /// Store the free-block count (both halves with 64bit).
    pub(crate) fn set_free_blocks_count(&mut self, v: u64) {
        set_le32(&mut self.raw[..], 0x0C, (v & 0xFFFF_FFFF) as u32);
        if self.has(Feature::Bit64) {
            set_le32(&mut self.raw[..], 0x158, (v >> 32) as u32);
        }
    }
    pub(crate) fn set_free_inodes_count(&mut self, v: u32) {
        set_le32(&mut self.raw[..], 0x10, v);
    }
    /// Number of errors the kernel recorded (`s_error_count`).
    /// The newest of the times the superblock records (last mount, last
    /// write, last check, creation), with their high bytes.
    pub(crate) fn newest_time(&self) -> i64 {
        let t = |lo: usize, hi: usize| {
            let lo = i64::from(le32(&self.raw[..], lo));
            let hi = i64::from(self.raw.get(hi).copied().unwrap_or(0));
            lo | (hi << 32)
        };
        [
            t(0x2C, 0x275),
            t(0x30, 0x274),
            t(0x40, 0x277),
            t(0x108, 0x276),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    pub(crate) fn error_count(&self) -> u32 {
        le32(&self.raw[..], 0x194)
    }
    pub(crate) fn inodes_count(&self) -> u32 {
        le32(&self.raw[..], 0x00)
    }
    pub(crate) fn blocks_count(&self) -> u64 {
        let lo = u64::from(le32(&self.raw[..], 0x04));
        let hi = if self.has(Feature::Bit64) {
            u64::from(le32(&self.raw[..], 0x150))
        } else {
            0
        };
        lo | (hi << 32)
    }
    pub(crate) fn reserved_blocks_count(&self) -> u64 {
        let lo = u64::from(le32(&self.raw[..], 0x08));
        let hi = if self.has(Feature::Bit64) {
            u64::from(le32(&self.raw[..], 0x154))
        } else {
            0
        };
        lo | (hi << 32)
    }
    pub(crate) fn free_blocks_count(&self) -> u64 {
        let lo = u64::from(le32(&self.raw[..], 0x0C));
        let hi = if self.has(Feature::Bit64) {
            u64::from(le32(&self.raw[..], 0x158))
        } else {
            0
        };
        lo | (hi << 32)
    }
    pub(crate) fn free_inodes_count(&self) -> u32 {
        le32(&self.raw[..], 0x10)
    }
    pub(crate) fn first_data_block(&self) -> u32 {
        le32(&self.raw[..], 0x14)
    }
    pub(crate) fn log_block_size(&self) -> u32 {
        le32(&self.raw[..], 0x18)
    }
    /// Block size in bytes (validated to be 1 KiB..64 KiB in `parse`).
    pub(crate) fn block_size(&self) -> usize {
        1024usize << self.log_block_size().min(6)
    }
    pub(crate) fn blocks_per_group(&self) -> u32 {
        le32(&self.raw[..], 0x20)
    }
    pub(crate) fn inodes_per_group(&self) -> u32 {
        le32(&self.raw[..], 0x28)
    }
    pub fn magic(&self) -> u16 {
        le16(&self.raw[..], 0x38)
    }
    pub fn state(&self) -> u16 {
        le16(&self.raw[..], 0x3A)
    }
    pub(crate) fn rev_level(&self) -> u32 {
        le32(&self.raw[..], 0x4C)
    }
    pub(crate) fn first_ino(&self) -> u32 {
        le32(&self.raw[..], 0x54)
    }
    pub(crate) fn inode_size(&self) -> u16 {
        le16(&self.raw[..], 0x58)
    }
    /// `s_feature_compat`, `s_feature_incompat` and `s_feature_ro_compat`.
    pub fn features(&self) -> FeatureSet {
        FeatureSet::new(
            le32(&self.raw[..], 0x5C),
            le32(&self.raw[..], 0x60),
            le32(&self.raw[..], 0x64),
        )
    }
    pub fn has(&self, f: Feature) -> bool {
        self.features().contains(f)
    }
    pub fn uuid(&self) -> [u8; 16] {
        *array(&self.raw[..], 0x68)
    }
    pub(crate) fn volume_name(&self) -> String {
        let n: &[u8; 16] = array(&self.raw[..], 0x78);
        let name = n.split(|&b| b == 0).next().unwrap_or_default();
        String::from_utf8_lossy(name).into_owned()
    }
    pub(crate) fn reserved_gdt_blocks(&self) -> u16 {
        le16(&self.raw[..], 0xCE)
    }
    pub(crate) fn journal_inum(&self) -> u32 {
        le32(&self.raw[..], 0xE0)
    }
    /// `s_backup_bgs`: the (at most two) groups holding superblock
    /// backups under sparse_super2; 0 means none.
    pub(crate) fn backup_bgs(&self) -> [u32; 2] {
        [le32(&self.raw[..], 0x24C), le32(&self.raw[..], 0x250)]
    }
    /// `s_mmp_block`: the multi-mount protection block (with `mmp`).
    pub(crate) fn mmp_block(&self) -> u64 {
        le64(&self.raw[..], 0x168)
    }
    pub fn last_orphan(&self) -> u32 {
        le32(&self.raw[..], 0xE8)
    }
    /// `s_hash_seed` as four little-endian words.
    pub fn hash_seed(&self) -> [u32; 4] {
        [
            le32(&self.raw[..], 0xEC),
            le32(&self.raw[..], 0xF0),
            le32(&self.raw[..], 0xF4),
            le32(&self.raw[..], 0xF8),
        ]
    }
    pub(crate) fn def_hash_version(&self) -> u8 {
        self.raw()[0xFC]
    }
    pub(crate) fn desc_size(&self) -> usize {
        if self.has(Feature::Bit64) {
            usize::from(le16(&self.raw[..], 0xFE))
        } else {
            32
        }
    }
    pub fn flags(&self) -> u32 {
        le32(&self.raw[..], 0x160)
    }
    pub(crate) fn checksum_type(&self) -> u8 {
        self.raw()[0x175]
    }
    pub(crate) fn checksum_seed_field(&self) -> u32 {
        le32(&self.raw[..], 0x270)
    }
    pub(crate) fn orphan_file_inum(&self) -> u32 {
        le32(&self.raw[..], 0x280)
    }
    pub fn checksum(&self) -> u32 {
        le32(&self.raw[..], 0x3FC)
    }

    pub fn unsigned_hash(&self) -> bool {
        self.flags() & FLAG_UNSIGNED_HASH != 0
    }

    /// The seed all metadata checksums start from.
    pub(crate) fn csum_seed(&self) -> u32 {
        let explicit = self
            .has(Feature::MetadataCsumSeed)
            .then(|| self.checksum_seed_field());
        checksum::fs_seed(&self.uuid(), explicit)
    }

    pub(crate) fn group_count(&self) -> u32 {
        self.groups
    }

    /// The groups the blocks after the first data block fill (the last one
    /// perhaps partly); refused when group numbers (32 bits) cannot count
    /// them. The caller has checked both terms are nonzero.
    fn count_groups(&self) -> Result<u32> {
        let data = self
            .blocks_count()
            .checked_sub(u64::from(self.first_data_block()));
        let per = NonZeroU64::new(u64::from(self.blocks_per_group()));
        let n = data
            .zip(per)
            .map(|(data, per)| data.div_ceil(per.get()))
            .ok_or_else(|| {
                Ext4Error::corrupt("no blocks to form groups from", Location::Superblock)
            })?;
        u32::try_from(n).map_err(|_| {
            Ext4Error::corrupt(
                format!("{n} block groups are more than ext4 can number"),
                Location::Superblock,
            )
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::Superblock;

    /// A valid 4 KiB-block superblock of one group with the given feature
    /// words, parsed.
    fn parse(compat: u32, incompat: u32, ro_compat: u32) -> String {
        let mut raw = vec![0u8; 1024];
        let mut put = |off: usize, v: u32| raw[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put(0x00, 8192); // inodes
        put(0x04, 32768); // blocks
        put(0x18, 2); // 4 KiB blocks
        put(0x20, 32768);
        put(0x28, 8192);
        put(0x4C, 1); // dynamic revision
        put(0x5C, compat);
        put(0x60, incompat);
        put(0x64, ro_compat);
        raw[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        raw[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        match Superblock::parse(&raw) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_reader_gate_names_what_it_refuses() {
        // Unknown compat and ro_compat bits are readable; needs_recovery too.
        assert_eq!(parse(0x8000_0000, 0x4, 0x8000_0000), "ok");
        assert_eq!(
            parse(0, 0x8000 | 0x40_0000, 0),
            "unsupported ext4 filesystem: incompatible feature(s) inline_data, FEATURE_0x400000; \
             rpiimg reads Raspberry Pi OS and Ubuntu root filesystems; use an image made with standard mkfs.ext4 features"
        );
        assert!(
            parse(0, 0x10000, 0x200).contains(": feature(s) encrypt, bigalloc; "),
            "{}",
            parse(0, 0x10000, 0x200)
        );
    }
}
