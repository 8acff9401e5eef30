//! Filesystem views over an image: the FAT and ext4 engines behind one
//! path namespace, as the booted system sees it.

// FAT parsing and the edits of both filesystems handle bytes of an image
// rpiimg did not make: no unchecked indexing or arithmetic here and below.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

pub(crate) mod edit;
pub mod fat;
mod fat_chains;
pub(crate) use fat_chains::used_ranges as fat_used_ranges;
pub(crate) mod fstab;
pub mod view;

use crate::ext4::FileType;

/// A whole ext4 file in memory, for the configuration files rpiimg reads
/// (fstab, passwd, group): refused above [`crate::ext4::MEMORY_CAP`] with an
/// error naming `path` and the cap, and read errors reported against `path`.
pub(crate) fn read_config<D: crate::image::ReadAt>(
    fs: &crate::ext4::Ext4<D>,
    inode: &crate::ext4::Inode,
    path: &str,
) -> crate::error::Result<Vec<u8>> {
    let size = inode.size();
    if size > crate::ext4::MEMORY_CAP {
        return Err(crate::error::Error::TooLarge {
            path: path.to_string(),
            size,
            cap: crate::ext4::MEMORY_CAP,
        });
    }
    fs.read_all(inode)
        .map_err(|e| crate::error::Error::from(e).in_path(path))
}

/// Metadata of one path, whichever filesystem holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stat {
    pub kind: FileType,
    /// Permission bits (0o7777).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub nlink: u32,
    /// Inode number on ext4, 0 on FAT.
    pub ino: u32,
    /// Symlink target.
    pub target: Option<String>,
    /// `ext4` or `vfat`.
    pub fs: &'static str,
}

// No unchecked indexing or arithmetic here; set on the item, as a module
// attribute would reach `edit` (converted separately).
impl Stat {
    /// `-rw-r--r--`-style mode string.
    pub(crate) fn mode_string(&self) -> String {
        let m = self.mode;
        let mut s = String::with_capacity(10);
        s.push(self.kind.ls_char());
        let bits = [
            (0o400, 'r'),
            (0o200, 'w'),
            (0o100, 'x'),
            (0o040, 'r'),
            (0o020, 'w'),
            (0o010, 'x'),
            (0o004, 'r'),
            (0o002, 'w'),
            (0o001, 'x'),
        ];
        for (i, (bit, c)) in bits.iter().enumerate() {
            let set = m & bit != 0;
            let special = match i {
                2 => m & 0o4000 != 0,
                5 => m & 0o2000 != 0,
                8 => m & 0o1000 != 0,
                _ => false,
            };
            s.push(match (special, set, i) {
                (true, true, 8) => 't',
                (true, false, 8) => 'T',
                (true, true, _) => 's',
                (true, false, _) => 'S',
                (false, true, _) => *c,
                (false, false, _) => '-',
            });
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(kind: FileType, mode: u16) -> Stat {
        Stat {
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            nlink: 1,
            ino: 0,
            target: None,
            fs: "ext4",
        }
    }

    #[test]
    fn mode_strings() {
        assert_eq!(st(FileType::Regular, 0o640).mode_string(), "-rw-r-----");
        assert_eq!(st(FileType::Directory, 0o1777).mode_string(), "drwxrwxrwt");
        assert_eq!(st(FileType::Regular, 0o4755).mode_string(), "-rwsr-xr-x");
        assert_eq!(st(FileType::Symlink, 0o777).mode_string(), "lrwxrwxrwx");
    }
}
