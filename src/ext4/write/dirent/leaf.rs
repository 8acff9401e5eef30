//! Linear directory blocks (leaves): their records, where a new entry
//! fits, packing moved entries, and the checksum tail.

use super::super::{raw, Writer};
use crate::ext4::checksum;
use crate::ext4::dir::{rec_len_for, TAIL_FILE_TYPE, TAIL_SIZE};
use crate::ext4::error::{Ext4Error, Location, Result};
use crate::ext4::inode::Inode;
use crate::image::ReadAt;

/// Bytes of a directory entry before its name (inode, rec_len, name_len, type).
const DIRENT_HEAD: usize = 8;

/// One record of a leaf block.
#[derive(Debug, Clone)]
pub(super) struct Rec {
    pub(super) off: usize,
    pub(super) ino: u32,
    pub(super) rec_len: usize,
    pub(super) name: Vec<u8>,
    pub(super) ft: u8,
}

/// A live entry being moved between leaves.
#[derive(Debug, Clone)]
pub(super) struct Ent {
    pub(super) hash: u32,
    pub(super) ino: u32,
    pub(super) name: Vec<u8>,
    pub(super) ft: u8,
}

pub(super) fn records(block: &[u8], end: usize, at: &Location) -> Result<Vec<Rec>> {
    let mut out = Vec::new();
    let mut rest = raw::field(block, 0, end, "directory entries", at)?;
    let mut off = 0usize;
    while !rest.is_empty() {
        let Some((&[i0, i1, i2, i3, r0, r1, name_len, ft], _)) =
            rest.split_first_chunk::<DIRENT_HEAD>()
        else {
            return Err(Ext4Error::corrupt("truncated directory entry", at.clone()));
        };
        let rec_len = usize::from(u16::from_le_bytes([r0, r1]));
        let name_len = usize::from(name_len);
        // rec_len covers the head and the name and stays inside the leaf.
        let split = rest
            .split_at_checked(rec_len)
            .filter(|_| rec_len >= DIRENT_HEAD)
            .and_then(|(rec, tail)| {
                let name = rec.get(DIRENT_HEAD..)?.get(..name_len)?;
                Some((name, tail))
            });
        let Some((name, tail)) = split else {
            return Err(Ext4Error::corrupt(
                format!("directory entry at offset {off} has invalid rec_len {rec_len}"),
                at.clone(),
            ));
        };
        out.push(Rec {
            off,
            ino: u32::from_le_bytes([i0, i1, i2, i3]),
            rec_len,
            name: name.to_vec(),
            ft,
        });
        // Bounded by `end`: the record was inside the leaf.
        off = off
            .checked_add(rec_len)
            .ok_or_else(|| raw::overflow("directory entry offset", at))?;
        rest = tail;
    }
    Ok(out)
}

/// Write an entry of `rec_len` bytes at `off`; the bytes after the name
/// (up to the entry's own size) are zeroed.
pub(super) fn put_rec(
    block: &mut [u8],
    off: usize,
    ino: u32,
    rec_len: usize,
    name: &[u8],
    ft: u8,
    at: &Location,
) -> Result<()> {
    let rec = raw::field_mut(block, off, rec_len, "directory entry", at)?;
    // Stale bytes after the name are harmless but make images less reproducible.
    let used = rec_len_for(name.len()).min(rec_len);
    raw::field_mut(rec, 0, used, "directory entry", at)?.fill(0);
    let [i0, i1, i2, i3] = ino.to_le_bytes();
    let [r0, r1] = raw::narrow::<u16, usize>(rec_len, "directory entry rec_len", at)?.to_le_bytes();
    let name_len = raw::narrow(name.len(), "directory entry name length", at)?;
    raw::put(
        rec,
        0,
        &[i0, i1, i2, i3, r0, r1, name_len, ft],
        "directory entry",
        at,
    )?;
    raw::put(rec, DIRENT_HEAD, name, "directory entry name", at)
}

/// Put a new entry into the first gap big enough; false when the leaf is full.
pub(super) fn insert_into_leaf(
    block: &mut [u8],
    end: usize,
    name: &[u8],
    ino: u32,
    ft: u8,
    at: &Location,
) -> Result<bool> {
    let need = rec_len_for(name.len());
    for r in records(block, end, at)? {
        let used = if r.ino == 0 {
            0
        } else {
            rec_len_for(r.name.len())
        };
        // The gap after the record's own bytes, if the new entry fits in it.
        let Some(gap) = r.rec_len.checked_sub(used).filter(|&g| g >= need) else {
            continue;
        };
        let rec = raw::field_mut(block, r.off, r.rec_len, "directory entry", at)?;
        if r.ino == 0 {
            put_rec(rec, 0, ino, r.rec_len, name, ft, at)?;
        } else {
            let used16 = raw::narrow(used, "directory entry rec_len", at)?;
            raw::wr16(rec, 4, used16, "directory entry rec_len", at)?;
            put_rec(rec, used, ino, gap, name, ft, at)?;
        }
        return Ok(true);
    }
    Ok(false)
}

/// Take the entry named `name` out of a leaf; the inode it named, or
/// `None` when the leaf does not hold it. The entry's bytes join the one
/// before it; the first entry of a block, which cannot be merged away, is
/// freed (inode 0).
pub(super) fn remove_from_leaf(
    block: &mut [u8],
    end: usize,
    name: &[u8],
    at: &Location,
) -> Result<Option<u32>> {
    let recs = records(block, end, at)?;
    let Some(i) = recs.iter().position(|r| r.ino != 0 && r.name == name) else {
        return Ok(None);
    };
    let (before, from) = recs.split_at(i);
    let Some(rec) = from.first() else {
        return Ok(None);
    };
    match before.last() {
        None => raw::wr32(block, rec.off, 0, "directory entry inode", at)?,
        Some(prev) => {
            let merged = prev
                .rec_len
                .checked_add(rec.rec_len)
                .ok_or_else(|| raw::overflow("merged rec_len", at))?;
            let merged = raw::narrow(merged, "directory entry rec_len", at)?;
            let p = raw::field_mut(block, prev.off, prev.rec_len, "directory entry", at)?;
            raw::wr16(p, 4, merged, "directory entry rec_len", at)?;
        }
    }
    Ok(Some(rec.ino))
}

/// Lay out entries over `area` (a leaf up to its tail), the last one
/// spanning to its end; an error if they do not fit.
fn pack(area: &mut [u8], entries: &[Ent], at: &Location) -> Result<()> {
    area.fill(0);
    let Some((last, init)) = entries.split_last() else {
        let len = area.len();
        return put_rec(area, 0, 0, len, &[], 0, at);
    };
    let mut off = 0usize;
    for e in init {
        let len = rec_len_for(e.name.len());
        put_rec(area, off, e.ino, len, &e.name, e.ft, at)?;
        off = off
            .checked_add(len)
            .ok_or_else(|| raw::overflow("directory entry offset", at))?;
    }
    let len = area
        .len()
        .checked_sub(off)
        .ok_or_else(|| Ext4Error::corrupt("directory entries do not fit one block", at.clone()))?;
    put_rec(area, off, last.ino, len, &last.name, last.ft, at)
}

/// How many of the (hash-sorted) entries make up the lower half by bytes.
pub(super) fn half_by_bytes(entries: &[Ent]) -> usize {
    let total: usize = entries.iter().map(|e| rec_len_for(e.name.len())).sum();
    let half = total / 2;
    // Running sum of sizes; an (impossible) overflow ends the half.
    entries
        .iter()
        .scan(0usize, |acc, e| {
            *acc = acc.checked_add(rec_len_for(e.name.len()))?;
            Some(*acc)
        })
        .take_while(|&acc| acc <= half)
        .count()
}

impl<D: ReadAt> Writer<D> {
    /// Where the entries of a leaf end (before its checksum tail).
    pub(super) fn leaf_end(&self, at: &Location) -> Result<usize> {
        let tail = if self.fs.csum() { TAIL_SIZE } else { 0 };
        self.fs
            .block_size()
            .checked_sub(tail)
            .ok_or_else(|| raw::overflow("end of a directory leaf", at))
    }

    /// Write a new leaf block at `pblk` holding `entries`, the last one
    /// spanning to the checksum tail.
    pub(super) fn write_leaf(
        &mut self,
        dir: &Inode,
        pblk: u64,
        at: &Location,
        entries: &[Ent],
    ) -> Result<()> {
        let end = self.leaf_end(at)?;
        let mut b = vec![0u8; self.fs.block_size()];
        pack(
            raw::field_mut(&mut b, 0, end, "directory block", at)?,
            entries,
            at,
        )?;
        self.seal_leaf(dir, &mut b, at)?;
        self.write_block(pblk, &b)
    }

    /// Write the checksum tail of a leaf block.
    pub(super) fn seal_leaf(&self, dir: &Inode, block: &mut [u8], at: &Location) -> Result<()> {
        if !self.fs.csum() {
            return Ok(());
        }
        let t = block.len().checked_sub(TAIL_SIZE).ok_or_else(|| {
            Ext4Error::corrupt("directory block too small for a checksum tail", at.clone())
        })?;
        let (body, tail) = block.split_at_mut(t);
        tail.fill(0);
        let tail_len = raw::narrow(TAIL_SIZE, "directory tail rec_len", at)?;
        raw::wr16(tail, 4, tail_len, "directory tail rec_len", at)?;
        raw::wr8(tail, 7, TAIL_FILE_TYPE, "directory tail type", at)?;
        let c = checksum::inode_block(self.fs.seed, dir.ino, dir.generation(), body);
        raw::wr32(tail, 8, c, "directory tail checksum", at)
    }

    /// Write `.` (12 bytes) and `..` (to the end of `area`) at its start.
    pub(super) fn dots(area: &mut [u8], ino: u32, parent: u32, at: &Location) -> Result<()> {
        let Some((dot, dotdot)) = area.split_at_mut_checked(12) else {
            return Err(Ext4Error::corrupt(
                "directory block too small for '.' and '..'",
                at.clone(),
            ));
        };
        put_rec(dot, 0, ino, 12, b".", 2, at)?;
        let len = dotdot.len();
        put_rec(dotdot, 0, parent, len, b"..", 2, at)
    }
}
