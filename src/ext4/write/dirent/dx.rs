//! Hash-index (dx) blocks: the entries of a dx_root or dx_node, their
//! room and checksum tail, and the name hash that orders them.

use super::super::{raw, Writer};
use super::leaf::{Ent, Rec};
use crate::ext4::checksum;
use crate::ext4::error::{Ext4Error, Location, Result};
use crate::ext4::hash;
use crate::ext4::htree::{BLOCK_MASK, NODE_COUNT_OFF};
use crate::ext4::inode::Inode;
use crate::image::ReadAt;

/// Bytes of one dx entry (hash, block); entry 0's hash holds limit and count.
pub(super) const DX_ENTRY: usize = 8;
/// Offsets in a dx_root of the hash version, info length and indirect levels.
pub(super) const ROOT_HASH_VERSION: usize = 0x1C;
pub(super) const ROOT_INFO_LENGTH: usize = 0x1D;
pub(super) const ROOT_LEVELS: usize = 0x1E;

/// The dx count/limit slot and the entries after it: `block[count_off..]`.
fn dx_area<'a>(block: &'a [u8], count_off: usize, at: &Location) -> Result<&'a [u8]> {
    block.get(count_off..).ok_or_else(|| {
        Ext4Error::corrupt(
            format!("dx entries at offset {count_off} lie past the block"),
            at.clone(),
        )
    })
}

/// Index entries of a dx block (entry 0's hash reads as 0).
pub(super) fn dx_entries(block: &[u8], count_off: usize, at: &Location) -> Result<Vec<(u32, u32)>> {
    let area = dx_area(block, count_off, at)?;
    let count = usize::from(raw::rd16(area, 2, "dx count", at)?);
    let mut out = Vec::with_capacity(count);
    for (i, e) in area.chunks_exact(DX_ENTRY).take(count).enumerate() {
        let h = if i == 0 {
            0
        } else {
            raw::rd32(e, 0, "dx hash", at)?
        };
        out.push((h, raw::rd32(e, 4, "dx block", at)? & BLOCK_MASK));
    }
    if out.len() != count {
        return Err(Ext4Error::corrupt(
            format!("dx count {count} runs past the end of the block"),
            at.clone(),
        ));
    }
    Ok(out)
}

pub(super) fn dx_limit(block: &[u8], count_off: usize, at: &Location) -> Result<usize> {
    Ok(usize::from(raw::rd16(block, count_off, "dx limit", at)?))
}

pub(super) fn dx_store(
    block: &mut [u8],
    count_off: usize,
    entries: &[(u32, u32)],
    at: &Location,
) -> Result<()> {
    let count = raw::narrow(entries.len(), "dx count", at)?;
    let area = block.get_mut(count_off..).ok_or_else(|| {
        Ext4Error::corrupt(
            format!("dx entries at offset {count_off} lie past the block"),
            at.clone(),
        )
    })?;
    raw::wr16(area, 2, count, "dx count", at)?;
    let mut slots = area.chunks_exact_mut(DX_ENTRY);
    for (i, &(h, b)) in entries.iter().enumerate() {
        let Some(slot) = slots.next() else {
            return Err(Ext4Error::corrupt(
                format!("{} dx entries do not fit the block", entries.len()),
                at.clone(),
            ));
        };
        if i > 0 {
            raw::wr32(slot, 0, h, "dx hash", at)?;
        }
        raw::wr32(slot, 4, b, "dx block", at)?;
    }
    Ok(())
}

/// A fake directory entry spanning the whole of a dx_node block: `..` of
/// an empty name, as e2fsprogs writes it.
fn dx_node_header(node: &mut [u8], at: &Location) -> Result<()> {
    let len = raw::narrow(node.len(), "dx node rec_len", at)?;
    raw::wr16(node, 4, len, "dx node rec_len", at)
}

impl<D: ReadAt> Writer<D> {
    /// How many dx entries fit after `count_off` (before the dx tail).
    pub(super) fn dx_room(&self, count_off: usize, at: &Location) -> Result<usize> {
        let tail = if self.fs.csum() { 8 } else { 0 };
        self.fs
            .block_size()
            .checked_sub(count_off)
            .and_then(|n| n.checked_sub(tail))
            .map(|n| n / DX_ENTRY)
            .ok_or_else(|| raw::overflow("room for dx entries", at))
    }

    /// Write the checksum tail of a dx_root or dx_node.
    pub(super) fn seal_dx(
        &self,
        dir: &Inode,
        block: &mut [u8],
        count_off: usize,
        at: &Location,
    ) -> Result<()> {
        if !self.fs.csum() {
            return Ok(());
        }
        let limit = dx_limit(block, count_off, at)?;
        let count_at = count_off
            .checked_add(2)
            .ok_or_else(|| raw::overflow("dx count offset", at))?;
        let count = usize::from(raw::rd16(block, count_at, "dx count", at)?);
        let t = raw::offset(count_off, limit, DX_ENTRY, "dx tail at entry", at)?;
        let covered = raw::offset(count_off, count, DX_ENTRY, "dx entry", at)?;
        raw::wr32(block, t, 0, "dx tail", at)?;
        let c = checksum::dx_block(
            self.fs.seed,
            dir.ino,
            dir.generation(),
            raw::field(block, 0, covered, "dx entries", at)?,
            [0; 4],
        );
        let t4 = t
            .checked_add(4)
            .ok_or_else(|| raw::overflow("dx tail offset", at))?;
        raw::wr32(block, t4, c, "dx tail checksum", at)
    }

    pub(super) fn name_hash(&self, dir: &Inode, root: &[u8], name: &[u8]) -> Result<u32> {
        let at = Location::Block {
            ino: dir.ino,
            block: 0,
        };
        let version = raw::rd8(root, ROOT_HASH_VERSION, "dx hash version", &at)?;
        let v = hash::effective_version(version, self.fs.sb.unsigned_hash());
        hash::name_hash(name, v, self.fs.sb.hash_seed()).ok_or_else(|| {
            Ext4Error::unsupported(
                format!("directory inode {} uses unknown hash version {v}", dir.ino),
                "rpiimg edits directories indexed with legacy, half_md4 or tea hashes",
            )
        })
    }

    /// The live records of a leaf with their hashes, sorted by hash.
    pub(super) fn sorted_by_hash(
        &self,
        dir: &Inode,
        root: &[u8],
        recs: impl Iterator<Item = Rec>,
    ) -> Result<Vec<Ent>> {
        let mut ents = Vec::new();
        for r in recs.filter(|r| r.ino != 0) {
            ents.push(Ent {
                hash: self.name_hash(dir, root, &r.name)?,
                ino: r.ino,
                name: r.name,
                ft: r.ft,
            });
        }
        ents.sort_by_key(|e| e.hash);
        Ok(ents)
    }

    /// A new dx_node holding `entries`, sealed.
    pub(super) fn new_dx_node(
        &self,
        dir: &Inode,
        entries: &[(u32, u32)],
        at: &Location,
    ) -> Result<Vec<u8>> {
        let mut node = vec![0u8; self.fs.block_size()];
        dx_node_header(&mut node, at)?;
        let limit = raw::narrow(self.dx_room(NODE_COUNT_OFF, at)?, "dx limit", at)?;
        raw::wr16(&mut node, NODE_COUNT_OFF, limit, "dx limit", at)?;
        dx_store(&mut node, NODE_COUNT_OFF, entries, at)?;
        self.seal_dx(dir, &mut node, NODE_COUNT_OFF, at)?;
        Ok(node)
    }
}
