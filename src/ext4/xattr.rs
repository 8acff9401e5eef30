//! Extended attributes: in-inode area and external EA block.

use super::checksum;
use super::error::{Ext4Error, Location, Result};
use crate::bytes::{le16, le32, try_le32};

pub(crate) const XATTR_MAGIC: u32 = 0xEA02_0000;
const BLOCK_HEADER: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub name: String,
    pub value: Vec<u8>,
}

fn prefix(index: u8) -> Option<&'static str> {
    Some(match index {
        1 => "user.",
        2 => "system.posix_acl_access",
        3 => "system.posix_acl_default",
        4 => "trusted.",
        6 => "security.",
        7 => "system.",
        8 => "system.richacl",
        _ => return None,
    })
}

/// Parse entries starting at `first` in `area`; value offsets are relative
/// to the start of `area`. Entries end at a zero word.
fn parse_entries(area: &[u8], first: usize, at: &Location) -> Result<Vec<Xattr>> {
    let mut out = Vec::new();
    let mut off = first;
    loop {
        let entry = area.get(off..).unwrap_or_default();
        let Some(word) = try_le32(entry, 0) else {
            return Err(Ext4Error::corrupt(
                "extended attribute list runs past its area",
                at.clone(),
            ));
        };
        if word == 0 {
            return Ok(out);
        }
        let Some(head) = entry.first_chunk::<16>() else {
            return Err(Ext4Error::corrupt(
                "extended attribute entry truncated",
                at.clone(),
            ));
        };
        let name_len = usize::from(head[0]);
        let index = head[1];
        let value_offs = usize::from(le16(head, 2));
        let value_inum = le32(head, 4);
        let size = le32(head, 8) as usize;
        let Some(name) = entry.get(16..).and_then(|n| n.get(..name_len)) else {
            return Err(Ext4Error::corrupt(
                "extended attribute name runs past its area",
                at.clone(),
            ));
        };
        if value_inum != 0 {
            return Err(Ext4Error::unsupported(
                "extended attribute stored in its own inode (ea_inode)",
                "this image's attributes cannot be read by rpiimg",
            ));
        }
        let value = area
            .get(value_offs..)
            .and_then(|v| v.get(..size))
            .ok_or_else(|| {
                Ext4Error::corrupt("extended attribute value lies outside its area", at.clone())
            })?
            .to_vec();
        let suffix = String::from_utf8_lossy(name);
        let name = match prefix(index) {
            Some(p) => format!("{p}{suffix}"),
            None => format!("index{index}.{suffix}"),
        };
        out.push(Xattr { name, value });
        // The 16-byte head and the name padded to 4 bytes. A saturated
        // offset lies past the area and is reported on the next turn.
        off = off.saturating_add(name_len.next_multiple_of(4).saturating_add(16));
    }
}

/// Attributes stored in the inode body after `128 + extra_isize`.
pub(crate) fn in_inode(raw: &[u8], extra_isize: u16, ino: u32) -> Result<Vec<Xattr>> {
    let body = raw
        .get(128..)
        .and_then(|r| r.get(usize::from(extra_isize)..))
        .unwrap_or_default();
    match body.split_first_chunk::<4>() {
        Some((magic, area)) if u32::from_le_bytes(*magic) == XATTR_MAGIC => {
            parse_entries(area, 0, &Location::Inode(ino))
        }
        _ => Ok(Vec::new()),
    }
}

/// Attributes of an external EA block, its checksum verified when `seed` is given.
pub(crate) fn in_block(data: &[u8], block: u64, seed: Option<u32>, ino: u32) -> Result<Vec<Xattr>> {
    let at = Location::Block { ino, block };
    if data.len() < BLOCK_HEADER || le32(data, 0) != XATTR_MAGIC {
        return Err(Ext4Error::corrupt(
            "extended attribute block has a bad magic number",
            at,
        ));
    }
    if le32(data, 8) != 1 {
        return Err(Ext4Error::corrupt(
            "extended attribute block spans more than one block",
            at,
        ));
    }
    if let Some(seed) = seed {
        let stored = le32(data, 0x10);
        let computed = checksum::xattr_block(seed, block, data);
        if stored != computed {
            return Err(Ext4Error::corrupt(
                format!("extended attribute block checksum is {stored:#010x}, should be {computed:#010x}"),
                at,
            ));
        }
    }
    parse_entries(data, BLOCK_HEADER, &at)
}
