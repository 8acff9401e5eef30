//! Inodes: the on-disk record and its fields.
//!
//! A record is at least the 128 bytes of the original inode
//! ([`Inode::from_raw`] refuses less, [`Inode::new_zeroed`] makes no less),
//! so the fields there are read at fixed offsets; the fields of a large
//! inode are read only when the record and `i_extra_isize` hold them.

use super::checksum;
use super::error::{Ext4Error, Location, Result};
use crate::bytes::{array, array_mut, le16, le32, set_le16, set_le32};

/// Size of the original (ext2) inode record; larger records extend it.
pub(crate) const GOOD_OLD_INODE_SIZE: usize = 128;

pub(crate) const ROOT_INO: u32 = 2;

pub(crate) const S_IFMT: u16 = 0xF000;
pub(crate) const S_IFSOCK: u16 = 0xC000;
pub(crate) const S_IFLNK: u16 = 0xA000;
pub(crate) const S_IFREG: u16 = 0x8000;
pub(crate) const S_IFBLK: u16 = 0x6000;
pub(crate) const S_IFDIR: u16 = 0x4000;
pub(crate) const S_IFCHR: u16 = 0x2000;
pub(crate) const S_IFIFO: u16 = 0x1000;

pub(crate) const EXT4_INDEX_FL: u32 = 0x1000;
pub(crate) const EXT4_HUGE_FILE_FL: u32 = 0x40000;
pub(crate) const EXT4_EXTENTS_FL: u32 = 0x80000;
pub(crate) const EXT4_INLINE_DATA_FL: u32 = 0x10000000;

/// File type as stored in directory entries and derived from the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    Regular,
    Directory,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Symlink,
    Unknown,
}

impl FileType {
    pub fn from_mode(mode: u16) -> Self {
        match mode & S_IFMT {
            S_IFREG => FileType::Regular,
            S_IFDIR => FileType::Directory,
            S_IFCHR => FileType::CharDevice,
            S_IFBLK => FileType::BlockDevice,
            S_IFIFO => FileType::Fifo,
            S_IFSOCK => FileType::Socket,
            S_IFLNK => FileType::Symlink,
            _ => FileType::Unknown,
        }
    }

    pub(crate) fn from_dirent(t: u8) -> Self {
        match t {
            1 => FileType::Regular,
            2 => FileType::Directory,
            3 => FileType::CharDevice,
            4 => FileType::BlockDevice,
            5 => FileType::Fifo,
            6 => FileType::Socket,
            7 => FileType::Symlink,
            _ => FileType::Unknown,
        }
    }

    pub(crate) fn dirent_code(self) -> u8 {
        match self {
            FileType::Regular => 1,
            FileType::Directory => 2,
            FileType::CharDevice => 3,
            FileType::BlockDevice => 4,
            FileType::Fifo => 5,
            FileType::Socket => 6,
            FileType::Symlink => 7,
            FileType::Unknown => 0,
        }
    }

    /// The character `ls -l` prints for this type.
    pub(crate) fn ls_char(self) -> char {
        match self {
            FileType::Regular => '-',
            FileType::Directory => 'd',
            FileType::CharDevice => 'c',
            FileType::BlockDevice => 'b',
            FileType::Fifo => 'p',
            FileType::Socket => 's',
            FileType::Symlink => 'l',
            FileType::Unknown => '?',
        }
    }
}

/// One inode record, kept as its raw bytes.
#[derive(Clone, Debug)]
pub struct Inode {
    pub ino: u32,
    raw: Vec<u8>,
}

impl Inode {
    /// Wrap a raw record (`inode_size` bytes, at least 128).
    pub(crate) fn from_raw(ino: u32, raw: Vec<u8>) -> Result<Self> {
        if raw.len() < GOOD_OLD_INODE_SIZE {
            return Err(Ext4Error::corrupt(
                format!("inode record of {} bytes is truncated", raw.len()),
                Location::Inode(ino),
            ));
        }
        Ok(Inode { ino, raw })
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn mode(&self) -> u16 {
        le16(&self.raw, 0x00)
    }
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(self.mode())
    }
    pub fn permissions(&self) -> u16 {
        self.mode() & 0o7777
    }
    pub fn uid(&self) -> u32 {
        u32::from(le16(&self.raw, 0x02)) | (u32::from(le16(&self.raw, 0x78)) << 16)
    }
    pub fn gid(&self) -> u32 {
        u32::from(le16(&self.raw, 0x18)) | (u32::from(le16(&self.raw, 0x7A)) << 16)
    }
    pub fn size(&self) -> u64 {
        u64::from(le32(&self.raw, 0x04)) | (u64::from(le32(&self.raw, 0x6C)) << 32)
    }
    pub fn ctime(&self) -> i64 {
        self.time(0x0C, 0x84)
    }
    pub fn mtime(&self) -> i64 {
        self.time(0x10, 0x88)
    }
    pub(crate) fn dtime(&self) -> u32 {
        le32(&self.raw, 0x14)
    }
    pub fn links_count(&self) -> u16 {
        le16(&self.raw, 0x1A)
    }
    /// i_blocks in 512-byte units (without huge_file scaling, which is refused for writing).
    pub(crate) fn blocks_512(&self) -> u64 {
        u64::from(le32(&self.raw, 0x1C)) | (u64::from(le16(&self.raw, 0x74)) << 32)
    }
    pub fn flags(&self) -> u32 {
        le32(&self.raw, 0x20)
    }
    pub(crate) fn i_block(&self) -> &[u8; 60] {
        array(&self.raw, 0x28)
    }
    pub(crate) fn generation(&self) -> u32 {
        le32(&self.raw, 0x64)
    }
    pub(crate) fn file_acl(&self) -> u64 {
        u64::from(le32(&self.raw, 0x68)) | (u64::from(le16(&self.raw, 0x76)) << 32)
    }
    pub(crate) fn extra_isize(&self) -> u16 {
        if self.raw.len() > 0x82 {
            le16(&self.raw, 0x80)
        } else {
            0
        }
    }
    pub(crate) fn uses_extents(&self) -> bool {
        self.flags() & EXT4_EXTENTS_FL != 0
    }
    pub(crate) fn is_htree(&self) -> bool {
        self.flags() & EXT4_INDEX_FL != 0
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }
    /// A symlink whose target lives in i_block (e2fsprogs: size < 60).
    pub(crate) fn is_fast_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
            && self.flags() & EXT4_INLINE_DATA_FL == 0
            && self.size() < 60
    }

    /// Whether the 4-byte extra field at `off` is inside both the record
    /// and the extra area `i_extra_isize` says is in use.
    fn has_extra(&self, off: usize) -> bool {
        let in_use = usize::from(self.extra_isize()).saturating_add(GOOD_OLD_INODE_SIZE);
        let end = off.saturating_add(4);
        end <= in_use && end <= self.raw.len()
    }

    /// Seconds since the epoch, with the extra epoch bits of a large inode.
    fn time(&self, lo: usize, extra: usize) -> i64 {
        let base = i64::from(le32(&self.raw, lo).cast_signed());
        if self.has_extra(extra) {
            let e = le32(&self.raw, extra);
            // At most 2^31 + 3 * 2^32: far inside an i64.
            base.saturating_add(i64::from(e & 3) << 32)
        } else {
            base
        }
    }

    /// Stored checksum and the number of significant bits it carries.
    pub(crate) fn stored_checksum(&self) -> (u32, u32) {
        let lo = u32::from(le16(&self.raw, 0x7C));
        if self.has_csum_hi() {
            (lo | (u32::from(le16(&self.raw, 0x82)) << 16), u32::MAX)
        } else {
            (lo, 0xFFFF)
        }
    }

    /// (A large inode: the record holds the field, 0x82..0x84, and
    /// `i_extra_isize` counts it; `checksum::inode` agrees.)
    fn has_csum_hi(&self) -> bool {
        self.raw.len() > 0x84 && self.extra_isize() >= 4
    }

    pub(crate) fn checksum_ok(&self, seed: u32) -> bool {
        if self.raw.iter().all(|&b| b == 0) {
            return true;
        }
        let (stored, mask) = self.stored_checksum();
        checksum::inode(seed, self.ino, &self.raw) & mask == stored
    }

    pub(crate) fn update_checksum(&mut self, seed: u32) {
        let c = checksum::inode(seed, self.ino, &self.raw);
        set_le16(&mut self.raw, 0x7C, (c & 0xFFFF) as u16);
        if self.has_csum_hi() {
            set_le16(&mut self.raw, 0x82, (c >> 16) as u16);
        }
    }

    // Setters, used by the writer. Each keeps the record's other bytes as they were.

    /// A zeroed record of `size` bytes, with the large-inode fields set up.
    /// (The superblock allows no `size` below 128; a smaller one is raised
    /// to 128 so that every field of the original inode exists.)
    pub(crate) fn new_zeroed(ino: u32, size: usize) -> Self {
        let mut raw = vec![0u8; size.max(GOOD_OLD_INODE_SIZE)];
        if size > 128 {
            // Room for the ctime/mtime/atime/crtime extra words and csum_hi,
            // as mke2fs and the kernel lay out new inodes.
            set_le16(&mut raw, 0x80, 32);
        }
        Inode { ino, raw }
    }

    pub(crate) fn set_mode(&mut self, mode: u16) {
        set_le16(&mut self.raw, 0x00, mode);
    }
    pub(crate) fn set_uid(&mut self, uid: u32) {
        set_le16(&mut self.raw, 0x02, (uid & 0xFFFF) as u16);
        set_le16(&mut self.raw, 0x78, (uid >> 16) as u16);
    }
    pub(crate) fn set_gid(&mut self, gid: u32) {
        set_le16(&mut self.raw, 0x18, (gid & 0xFFFF) as u16);
        set_le16(&mut self.raw, 0x7A, (gid >> 16) as u16);
    }
    pub(crate) fn set_size(&mut self, size: u64) {
        set_le32(&mut self.raw, 0x04, (size & 0xFFFF_FFFF) as u32);
        set_le32(&mut self.raw, 0x6C, (size >> 32) as u32);
    }
    pub(crate) fn set_links_count(&mut self, n: u16) {
        set_le16(&mut self.raw, 0x1A, n);
    }
    pub(crate) fn set_blocks_512(&mut self, n: u64) {
        set_le32(&mut self.raw, 0x1C, (n & 0xFFFF_FFFF) as u32);
        set_le16(&mut self.raw, 0x74, ((n >> 32) & 0xFFFF) as u16);
    }
    pub(crate) fn set_flags(&mut self, f: u32) {
        set_le32(&mut self.raw, 0x20, f);
    }
    pub(crate) fn set_i_block(&mut self, b: &[u8; 60]) {
        *array_mut(&mut self.raw, 0x28) = *b;
    }
    pub(crate) fn set_generation(&mut self, g: u32) {
        set_le32(&mut self.raw, 0x64, g);
    }

    fn set_time(&mut self, lo: usize, extra: usize, secs: i64, nsec: u32) {
        // The low word holds the signed 32-bit seconds; the extra word adds
        // two epoch bits (years 2038..2446) and the nanoseconds.
        let [b0, b1, b2, b3, ..] = secs.to_le_bytes();
        let lo_val = u32::from_le_bytes([b0, b1, b2, b3]);
        set_le32(&mut self.raw, lo, lo_val);
        if self.has_extra(extra) {
            // Bits 32 and 33 of what the signed low word leaves over; the
            // two's-complement difference has them even where it wraps.
            let rest = secs.wrapping_sub(i64::from(lo_val.cast_signed()));
            let [_, _, _, _, e, ..] = rest.to_le_bytes();
            let epoch = u32::from(e & 3);
            set_le32(&mut self.raw, extra, (nsec << 2) | epoch);
        }
    }
    /// Set atime, ctime and mtime (and crtime when `created`).
    pub(crate) fn set_times(&mut self, secs: i64, created: bool) {
        self.set_time(0x08, 0x8C, secs, 0);
        self.set_time(0x0C, 0x84, secs, 0);
        self.set_time(0x10, 0x88, secs, 0);
        if created {
            self.set_time(0x90, 0x94, secs, 0);
        }
    }
    pub(crate) fn set_mtime(&mut self, secs: i64) {
        self.set_time(0x10, 0x88, secs, 0);
    }
    pub(crate) fn set_ctime(&mut self, secs: i64) {
        self.set_time(0x0C, 0x84, secs, 0);
    }
}
