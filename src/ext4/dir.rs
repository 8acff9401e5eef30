//! Directory blocks: linear entries and the checksum tail.

use super::checksum;
use super::error::{Ext4Error, Location, Result};
use super::inode::FileType;
use crate::bytes::le32;

/// Size of the leaf checksum tail ("fake" dirent with file_type 0xDE).
pub(crate) const TAIL_SIZE: usize = 12;
pub(crate) const TAIL_FILE_TYPE: u8 = 0xDE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u32,
    pub name: Vec<u8>,
    pub file_type: FileType,
}

impl DirEntry {
    pub(crate) fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Minimum record length for a name of `name_len` bytes.
/// (A name too long to have a record saturates to a length no record has.)
pub(crate) fn rec_len_for(name_len: usize) -> usize {
    name_len.saturating_add(8 + 3) & !3
}

/// Whether the block ends in a well-formed checksum tail.
pub(crate) fn has_tail(block: &[u8]) -> bool {
    let Some(tail) = block.last_chunk::<TAIL_SIZE>() else {
        return false;
    };
    // inode 0, rec_len TAIL_SIZE, name_len 0, file type 0xDE, checksum.
    let [0, 0, 0, 0, r0, r1, 0, TAIL_FILE_TYPE, ..] = *tail else {
        return false;
    };
    usize::from(u16::from_le_bytes([r0, r1])) == TAIL_SIZE
}

/// Verify a leaf block's checksum tail; returns the entry area before it.
pub(crate) fn verify_leaf_tail<'a>(
    block: &'a [u8],
    seed: u32,
    ino: u32,
    generation: u32,
    at: &Location,
) -> Result<&'a [u8]> {
    let tail = block
        .split_last_chunk::<TAIL_SIZE>()
        .filter(|_| has_tail(block));
    let Some((area, tail)) = tail else {
        return Err(Ext4Error::corrupt(
            "directory block has no checksum tail",
            at.clone(),
        ));
    };
    let stored = le32(tail, 8);
    let computed = checksum::inode_block(seed, ino, generation, area);
    if stored != computed {
        return Err(Ext4Error::corrupt(
            format!("directory block checksum is {stored:#010x}, should be {computed:#010x}"),
            at.clone(),
        ));
    }
    Ok(area)
}

/// Parse the entries of a linear directory block's entry `area` (the block
/// before its tail, the whole block, or the `.`/`..` head of an htree root).
/// Every record is bounds-checked: a corrupt block is an error, never a panic.
pub(crate) fn parse_entries(area: &[u8], filetype: bool, at: &Location) -> Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let Some(rest) = area.get(off..).filter(|r| !r.is_empty()) {
        let Some(&[i0, i1, i2, i3, r0, r1, name_len, ft]) = rest.first_chunk::<8>() else {
            return Err(Ext4Error::corrupt(
                format!("directory entry at offset {off} is truncated"),
                at.clone(),
            ));
        };
        let ino = u32::from_le_bytes([i0, i1, i2, i3]);
        let rec_len = usize::from(u16::from_le_bytes([r0, r1]));
        let name_len = usize::from(name_len);
        let rec = rest
            .get(..rec_len)
            .filter(|_| rec_len >= 12 && rec_len.is_multiple_of(4));
        let Some(rec) = rec else {
            return Err(Ext4Error::corrupt(
                format!("directory entry at offset {off} has invalid rec_len {rec_len}"),
                at.clone(),
            ));
        };
        if ino != 0 {
            // rec_len_for(name_len) <= rec_len keeps the name inside `rec`.
            let name = rec
                .get(8..)
                .and_then(|n| n.get(..name_len))
                .filter(|_| rec_len_for(name_len) <= rec_len && name_len != 0);
            let Some(name) = name else {
                return Err(Ext4Error::corrupt(
                    format!("directory entry at offset {off} has name length {name_len} that does not fit rec_len {rec_len}"),
                    at.clone(),
                ));
            };
            out.push(DirEntry {
                ino,
                name: name.to_vec(),
                file_type: if filetype {
                    FileType::from_dirent(ft)
                } else {
                    FileType::Unknown
                },
            });
        }
        // `rec` lies inside `area`, so this stays within its length.
        off = off.saturating_add(rec_len);
    }
    Ok(out)
}
