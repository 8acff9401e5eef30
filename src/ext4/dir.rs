//! Directory blocks: linear entries and the checksum tail.

use super::checksum;
use super::error::{Ext4Error, Location, Result};
use super::inode::FileType;
use crate::bytes::{le16, le32};

/// Size of the leaf checksum tail ("fake" dirent with file_type 0xDE).
pub const TAIL_SIZE: usize = 12;
pub const TAIL_FILE_TYPE: u8 = 0xDE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u32,
    pub name: Vec<u8>,
    pub file_type: FileType,
}

impl DirEntry {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Minimum record length for a name of `name_len` bytes.
pub fn rec_len_for(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// Whether the block ends in a well-formed checksum tail.
pub fn has_tail(block: &[u8]) -> bool {
    let t = block.len() - TAIL_SIZE;
    le32(block, t) == 0
        && usize::from(le16(block, t + 4)) == TAIL_SIZE
        && block[t + 6] == 0
        && block[t + 7] == TAIL_FILE_TYPE
}

pub fn verify_leaf_tail(
    block: &[u8],
    seed: u32,
    ino: u32,
    generation: u32,
    at: &Location,
) -> Result<()> {
    if !has_tail(block) {
        return Err(Ext4Error::corrupt(
            "directory block has no checksum tail",
            at.clone(),
        ));
    }
    let t = block.len() - TAIL_SIZE;
    let stored = le32(block, t + 8);
    let computed = checksum::inode_block(seed, ino, generation, &block[..t]);
    if stored != computed {
        return Err(Ext4Error::corrupt(
            format!("directory block checksum is {stored:#010x}, should be {computed:#010x}"),
            at.clone(),
        ));
    }
    Ok(())
}

/// Parse the entries of a linear directory block (or the `.`/`..` head of
/// an htree root), stopping at `end` (the tail, or the block end).
/// Every record is bounds-checked: a corrupt block is an error, never a panic.
pub fn parse_entries(
    block: &[u8],
    end: usize,
    filetype: bool,
    at: &Location,
) -> Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < end {
        if off + 8 > end {
            return Err(Ext4Error::corrupt(
                format!("directory entry at offset {off} is truncated"),
                at.clone(),
            ));
        }
        let ino = le32(block, off);
        let rec_len = usize::from(le16(block, off + 4));
        let name_len = usize::from(block[off + 6]);
        let ft = block[off + 7];
        if rec_len < 12 || rec_len % 4 != 0 || off + rec_len > end {
            return Err(Ext4Error::corrupt(
                format!("directory entry at offset {off} has invalid rec_len {rec_len}"),
                at.clone(),
            ));
        }
        if ino != 0 {
            if rec_len_for(name_len) > rec_len || name_len == 0 {
                return Err(Ext4Error::corrupt(
                    format!("directory entry at offset {off} has name length {name_len} that does not fit rec_len {rec_len}"),
                    at.clone(),
                ));
            }
            out.push(DirEntry {
                ino,
                name: block[off + 8..off + 8 + name_len].to_vec(),
                file_type: if filetype {
                    FileType::from_dirent(ft)
                } else {
                    FileType::Unknown
                },
            });
        }
        off += rec_len;
    }
    Ok(out)
}
