//! The ext4 superblock (1024 bytes at byte 1024 of the filesystem).

use std::num::NonZeroU64;

use super::checksum;
use super::error::{Ext4Error, Location, Result};
use crate::bytes::{array, le16, le32, le64, set_le32};

pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const SUPERBLOCK_SIZE: usize = 1024;
const MAGIC: u16 = 0xEF53;

/// Feature bits, named as in e2fsprogs' `ext2_fs.h`.
pub mod feature {
    pub const COMPAT_DIR_PREALLOC: u32 = 0x1;
    pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
    pub const COMPAT_EXT_ATTR: u32 = 0x8;
    pub const COMPAT_RESIZE_INODE: u32 = 0x10;
    pub const COMPAT_DIR_INDEX: u32 = 0x20;
    pub const COMPAT_SPARSE_SUPER2: u32 = 0x200;
    pub const COMPAT_FAST_COMMIT: u32 = 0x400;
    pub const COMPAT_STABLE_INODES: u32 = 0x800;
    pub const COMPAT_ORPHAN_FILE: u32 = 0x1000;

    pub const INCOMPAT_COMPRESSION: u32 = 0x1;
    pub const INCOMPAT_FILETYPE: u32 = 0x2;
    pub const INCOMPAT_RECOVER: u32 = 0x4;
    pub const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
    pub const INCOMPAT_META_BG: u32 = 0x10;
    pub const INCOMPAT_EXTENTS: u32 = 0x40;
    pub const INCOMPAT_64BIT: u32 = 0x80;
    pub const INCOMPAT_MMP: u32 = 0x100;
    pub const INCOMPAT_FLEX_BG: u32 = 0x200;
    pub const INCOMPAT_EA_INODE: u32 = 0x400;
    pub const INCOMPAT_DIRDATA: u32 = 0x1000;
    pub const INCOMPAT_CSUM_SEED: u32 = 0x2000;
    pub const INCOMPAT_LARGEDIR: u32 = 0x4000;
    pub const INCOMPAT_INLINE_DATA: u32 = 0x8000;
    pub const INCOMPAT_ENCRYPT: u32 = 0x10000;
    pub const INCOMPAT_CASEFOLD: u32 = 0x20000;

    pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
    pub const RO_COMPAT_LARGE_FILE: u32 = 0x2;
    pub const RO_COMPAT_BTREE_DIR: u32 = 0x4;
    pub const RO_COMPAT_HUGE_FILE: u32 = 0x8;
    pub const RO_COMPAT_GDT_CSUM: u32 = 0x10;
    pub const RO_COMPAT_DIR_NLINK: u32 = 0x20;
    pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
    pub const RO_COMPAT_QUOTA: u32 = 0x100;
    pub const RO_COMPAT_BIGALLOC: u32 = 0x200;
    pub const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
    pub const RO_COMPAT_READONLY: u32 = 0x1000;
    pub const RO_COMPAT_PROJECT: u32 = 0x2000;
    pub const RO_COMPAT_VERITY: u32 = 0x8000;
    pub const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x10000;

    /// Names as `dumpe2fs` prints them, for reports and error messages.
    pub const COMPAT_NAMES: &[(u32, &str)] = &[
        (COMPAT_DIR_PREALLOC, "dir_prealloc"),
        (0x2, "imagic_inodes"),
        (COMPAT_HAS_JOURNAL, "has_journal"),
        (COMPAT_EXT_ATTR, "ext_attr"),
        (COMPAT_RESIZE_INODE, "resize_inode"),
        (COMPAT_DIR_INDEX, "dir_index"),
        (0x40, "lazy_bg"),
        (0x100, "snapshot_bitmap"),
        (COMPAT_SPARSE_SUPER2, "sparse_super2"),
        (COMPAT_FAST_COMMIT, "fast_commit"),
        (COMPAT_STABLE_INODES, "stable_inodes"),
        (COMPAT_ORPHAN_FILE, "orphan_file"),
    ];
    pub const INCOMPAT_NAMES: &[(u32, &str)] = &[
        (INCOMPAT_COMPRESSION, "compression"),
        (INCOMPAT_FILETYPE, "filetype"),
        (INCOMPAT_RECOVER, "needs_recovery"),
        (INCOMPAT_JOURNAL_DEV, "journal_dev"),
        (INCOMPAT_META_BG, "meta_bg"),
        (INCOMPAT_EXTENTS, "extent"),
        (INCOMPAT_64BIT, "64bit"),
        (INCOMPAT_MMP, "mmp"),
        (INCOMPAT_FLEX_BG, "flex_bg"),
        (INCOMPAT_EA_INODE, "ea_inode"),
        (INCOMPAT_DIRDATA, "dirdata"),
        (INCOMPAT_CSUM_SEED, "metadata_csum_seed"),
        (INCOMPAT_LARGEDIR, "large_dir"),
        (INCOMPAT_INLINE_DATA, "inline_data"),
        (INCOMPAT_ENCRYPT, "encrypt"),
        (INCOMPAT_CASEFOLD, "casefold"),
    ];
    pub const RO_COMPAT_NAMES: &[(u32, &str)] = &[
        (RO_COMPAT_SPARSE_SUPER, "sparse_super"),
        (RO_COMPAT_LARGE_FILE, "large_file"),
        (RO_COMPAT_BTREE_DIR, "btree_dir"),
        (RO_COMPAT_HUGE_FILE, "huge_file"),
        (RO_COMPAT_GDT_CSUM, "uninit_bg"),
        (RO_COMPAT_DIR_NLINK, "dir_nlink"),
        (RO_COMPAT_EXTRA_ISIZE, "extra_isize"),
        (0x80, "has_snapshot"),
        (RO_COMPAT_QUOTA, "quota"),
        (RO_COMPAT_BIGALLOC, "bigalloc"),
        (RO_COMPAT_METADATA_CSUM, "metadata_csum"),
        (0x800, "replica"),
        (RO_COMPAT_READONLY, "read-only"),
        (RO_COMPAT_PROJECT, "project"),
        (0x4000, "shared_blocks"),
        (RO_COMPAT_VERITY, "verity"),
        (RO_COMPAT_ORPHAN_PRESENT, "orphan_present"),
    ];

    /// Incompatible features that change how files, names or directories
    /// are stored in ways this reader does not implement.
    pub const INCOMPAT_UNREADABLE: u32 = INCOMPAT_COMPRESSION
        | INCOMPAT_JOURNAL_DEV
        | INCOMPAT_META_BG
        | INCOMPAT_DIRDATA
        | INCOMPAT_INLINE_DATA
        | INCOMPAT_ENCRYPT
        | INCOMPAT_CASEFOLD;

    /// Every incompat bit this reader knows; anything else is refused.
    pub const INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
        | INCOMPAT_RECOVER
        | INCOMPAT_EXTENTS
        | INCOMPAT_64BIT
        | INCOMPAT_MMP
        | INCOMPAT_FLEX_BG
        | INCOMPAT_EA_INODE
        | INCOMPAT_CSUM_SEED
        | INCOMPAT_LARGEDIR
        | INCOMPAT_UNREADABLE;

    /// Feature names set in `bits`, unknown bits as hex.
    pub fn names(bits: u32, table: &[(u32, &str)]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = bits;
        for &(bit, name) in table {
            if bits & bit != 0 {
                out.push(name.to_string());
                rest &= !bit;
            }
        }
        for i in 0..32 {
            if rest & (1 << i) != 0 {
                out.push(format!("FEATURE_{:#x}", 1u32 << i));
            }
        }
        out
    }
}

/// `s_flags` values.
pub const FLAG_UNSIGNED_HASH: u32 = 0x2;

/// `s_state` values.
pub const STATE_VALID: u16 = 0x1;
pub const STATE_ERROR: u16 = 0x2;

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
        if sb.has_metadata_csum() {
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
        if self.is_64bit() {
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
        let incompat = self.feature_incompat();
        let unknown = incompat & !feature::INCOMPAT_KNOWN;
        let unreadable = incompat & feature::INCOMPAT_UNREADABLE;
        let bad = unknown | unreadable;
        if bad != 0 {
            let names = feature::names(bad, feature::INCOMPAT_NAMES).join(", ");
            return Err(Ext4Error::unsupported(
                format!("incompatible feature(s) {names}"),
                "rpiimg reads Raspberry Pi OS and Ubuntu root filesystems; use an image made with standard mkfs.ext4 features",
            ));
        }
        if self.ro_compat() & feature::RO_COMPAT_BIGALLOC != 0 {
            return Err(Ext4Error::unsupported(
                "feature bigalloc (cluster allocation)",
                "use an image whose root filesystem has 1:1 blocks and clusters",
            ));
        }
        Ok(())
    }

    pub fn raw(&self) -> &[u8; SUPERBLOCK_SIZE] {
        &self.raw
    }

    /// Recompute and store the checksum (after a field was changed).
    pub fn update_checksum(&mut self) {
        let c = checksum::superblock(&self.raw);
        set_le32(&mut self.raw[..], 0x3FC, c);
    }

    /// Store the free-block count (both halves with 64bit).
    pub fn set_free_blocks_count(&mut self, v: u64) {
        set_le32(&mut self.raw[..], 0x0C, (v & 0xFFFF_FFFF) as u32);
        if self.is_64bit() {
            set_le32(&mut self.raw[..], 0x158, (v >> 32) as u32);
        }
    }
    pub fn set_free_inodes_count(&mut self, v: u32) {
        set_le32(&mut self.raw[..], 0x10, v);
    }
    /// Number of errors the kernel recorded (`s_error_count`).
    /// The newest of the times the superblock records (last mount, last
    /// write, last check, creation), with their high bytes.
    pub fn newest_time(&self) -> i64 {
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

    pub fn error_count(&self) -> u32 {
        le32(&self.raw[..], 0x194)
    }
    pub fn has_feature_compat(&self, bit: u32) -> bool {
        self.feature_compat() & bit != 0
    }

    pub fn inodes_count(&self) -> u32 {
        le32(&self.raw[..], 0x00)
    }
    pub fn blocks_count(&self) -> u64 {
        let lo = u64::from(le32(&self.raw[..], 0x04));
        let hi = if self.is_64bit() {
            u64::from(le32(&self.raw[..], 0x150))
        } else {
            0
        };
        lo | (hi << 32)
    }
    pub fn reserved_blocks_count(&self) -> u64 {
        let lo = u64::from(le32(&self.raw[..], 0x08));
        let hi = if self.is_64bit() {
            u64::from(le32(&self.raw[..], 0x154))
        } else {
            0
        };
        lo | (hi << 32)
    }
    pub fn free_blocks_count(&self) -> u64 {
        let lo = u64::from(le32(&self.raw[..], 0x0C));
        let hi = if self.is_64bit() {
            u64::from(le32(&self.raw[..], 0x158))
        } else {
            0
        };
        lo | (hi << 32)
    }
    pub fn free_inodes_count(&self) -> u32 {
        le32(&self.raw[..], 0x10)
    }
    pub fn first_data_block(&self) -> u32 {
        le32(&self.raw[..], 0x14)
    }
    pub fn log_block_size(&self) -> u32 {
        le32(&self.raw[..], 0x18)
    }
    /// Block size in bytes (validated to be 1 KiB..64 KiB in `parse`).
    pub fn block_size(&self) -> usize {
        1024usize << self.log_block_size().min(6)
    }
    pub fn blocks_per_group(&self) -> u32 {
        le32(&self.raw[..], 0x20)
    }
    pub fn inodes_per_group(&self) -> u32 {
        le32(&self.raw[..], 0x28)
    }
    pub fn magic(&self) -> u16 {
        le16(&self.raw[..], 0x38)
    }
    pub fn state(&self) -> u16 {
        le16(&self.raw[..], 0x3A)
    }
    pub fn rev_level(&self) -> u32 {
        le32(&self.raw[..], 0x4C)
    }
    pub fn first_ino(&self) -> u32 {
        le32(&self.raw[..], 0x54)
    }
    pub fn inode_size(&self) -> u16 {
        le16(&self.raw[..], 0x58)
    }
    pub fn feature_compat(&self) -> u32 {
        le32(&self.raw[..], 0x5C)
    }
    pub fn feature_incompat(&self) -> u32 {
        le32(&self.raw[..], 0x60)
    }
    pub fn ro_compat(&self) -> u32 {
        le32(&self.raw[..], 0x64)
    }
    pub fn uuid(&self) -> [u8; 16] {
        *array(&self.raw[..], 0x68)
    }
    pub fn volume_name(&self) -> String {
        let n: &[u8; 16] = array(&self.raw[..], 0x78);
        let name = n.split(|&b| b == 0).next().unwrap_or_default();
        String::from_utf8_lossy(name).into_owned()
    }
    pub fn reserved_gdt_blocks(&self) -> u16 {
        le16(&self.raw[..], 0xCE)
    }
    pub fn journal_inum(&self) -> u32 {
        le32(&self.raw[..], 0xE0)
    }
    /// `s_backup_bgs`: the (at most two) groups holding superblock
    /// backups under sparse_super2; 0 means none.
    pub fn backup_bgs(&self) -> [u32; 2] {
        [le32(&self.raw[..], 0x24C), le32(&self.raw[..], 0x250)]
    }
    /// `s_mmp_block`: the multi-mount protection block (with `mmp`).
    pub fn mmp_block(&self) -> u64 {
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
    pub fn def_hash_version(&self) -> u8 {
        self.raw()[0xFC]
    }
    pub fn desc_size(&self) -> usize {
        if self.is_64bit() {
            usize::from(le16(&self.raw[..], 0xFE))
        } else {
            32
        }
    }
    pub fn flags(&self) -> u32 {
        le32(&self.raw[..], 0x160)
    }
    pub fn log_groups_per_flex(&self) -> u8 {
        self.raw()[0x174]
    }
    pub fn checksum_type(&self) -> u8 {
        self.raw()[0x175]
    }
    pub fn checksum_seed_field(&self) -> u32 {
        le32(&self.raw[..], 0x270)
    }
    pub fn orphan_file_inum(&self) -> u32 {
        le32(&self.raw[..], 0x280)
    }
    pub fn checksum(&self) -> u32 {
        le32(&self.raw[..], 0x3FC)
    }

    pub fn is_64bit(&self) -> bool {
        self.feature_incompat() & feature::INCOMPAT_64BIT != 0
    }
    pub fn has_metadata_csum(&self) -> bool {
        self.ro_compat() & feature::RO_COMPAT_METADATA_CSUM != 0
    }
    pub fn has_filetype(&self) -> bool {
        self.feature_incompat() & feature::INCOMPAT_FILETYPE != 0
    }
    pub fn unsigned_hash(&self) -> bool {
        self.flags() & FLAG_UNSIGNED_HASH != 0
    }

    /// The seed all metadata checksums start from.
    pub fn csum_seed(&self) -> u32 {
        let explicit = (self.feature_incompat() & feature::INCOMPAT_CSUM_SEED != 0)
            .then(|| self.checksum_seed_field());
        checksum::fs_seed(&self.uuid(), explicit)
    }

    pub fn group_count(&self) -> u32 {
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

    /// All enabled feature names, compat then incompat then ro_compat.
    pub fn feature_names(&self) -> Vec<String> {
        let mut v = feature::names(self.feature_compat(), feature::COMPAT_NAMES);
        v.extend(feature::names(
            self.feature_incompat(),
            feature::INCOMPAT_NAMES,
        ));
        v.extend(feature::names(self.ro_compat(), feature::RO_COMPAT_NAMES));
        v
    }
}
