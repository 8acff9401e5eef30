//! Directory edits: entries in linear leaves, and the hash index (insert
//! with leaf split, root growth to one indirect level, node split), as
//! e2fsprogs' `link.c` does them.

use super::{raw, Writer};
use crate::ext4::checksum;
use crate::ext4::dir::{rec_len_for, TAIL_FILE_TYPE, TAIL_SIZE};
use crate::ext4::error::{Ext4Error, Location, Result};
use crate::ext4::extent::Extent;
use crate::ext4::features::Feature;
use crate::ext4::hash;
use crate::ext4::htree::{self, BLOCK_MASK, NODE_COUNT_OFF, ROOT_COUNT_OFF};
use crate::ext4::inode::{Inode, EXT4_INDEX_FL};
use crate::image::ReadAt;
use crate::path::PathError;

/// Bytes of a directory entry before its name (inode, rec_len, name_len, type).
const DIRENT_HEAD: usize = 8;
/// Bytes of one dx entry (hash, block); entry 0's hash holds limit and count.
const DX_ENTRY: usize = 8;
/// Offsets in a dx_root of the hash version, info length and indirect levels.
const ROOT_HASH_VERSION: usize = 0x1C;
const ROOT_INFO_LENGTH: usize = 0x1D;
const ROOT_LEVELS: usize = 0x1E;

/// One record of a leaf block.
#[derive(Debug, Clone)]
struct Rec {
    off: usize,
    ino: u32,
    rec_len: usize,
    name: Vec<u8>,
    ft: u8,
}

/// A live entry being moved between leaves.
#[derive(Debug, Clone)]
struct Ent {
    hash: u32,
    ino: u32,
    name: Vec<u8>,
    ft: u8,
}

fn records(block: &[u8], end: usize, at: &Location) -> Result<Vec<Rec>> {
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
fn put_rec(
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
fn insert_into_leaf(
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
fn half_by_bytes(entries: &[Ent]) -> usize {
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
fn dx_entries(block: &[u8], count_off: usize, at: &Location) -> Result<Vec<(u32, u32)>> {
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

fn dx_limit(block: &[u8], count_off: usize, at: &Location) -> Result<usize> {
    Ok(usize::from(raw::rd16(block, count_off, "dx limit", at)?))
}

fn dx_store(
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
    /// Where the entries of a leaf end (before its checksum tail).
    fn leaf_end(&self, at: &Location) -> Result<usize> {
        let tail = if self.fs.csum() { TAIL_SIZE } else { 0 };
        self.fs
            .block_size()
            .checked_sub(tail)
            .ok_or_else(|| raw::overflow("end of a directory leaf", at))
    }

    /// How many dx entries fit after `count_off` (before the dx tail).
    fn dx_room(&self, count_off: usize, at: &Location) -> Result<usize> {
        let tail = if self.fs.csum() { 8 } else { 0 };
        self.fs
            .block_size()
            .checked_sub(count_off)
            .and_then(|n| n.checked_sub(tail))
            .map(|n| n / DX_ENTRY)
            .ok_or_else(|| raw::overflow("room for dx entries", at))
    }

    /// Write the checksum tail of a leaf block.
    fn seal_leaf(&self, dir: &Inode, block: &mut [u8], at: &Location) -> Result<()> {
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

    /// Write the checksum tail of a dx_root or dx_node.
    fn seal_dx(
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

    fn pblk_of(map: &[Extent], dir: &Inode, lblk: u32) -> Result<u64> {
        let at = Location::Inode(dir.ino);
        for e in map {
            if let Some(d) = lblk.checked_sub(e.lblk).filter(|&d| d < e.len) {
                return e
                    .pblk
                    .checked_add(u64::from(d))
                    .ok_or_else(|| raw::overflow(&format!("directory block {lblk}"), &at));
            }
        }
        Err(Ext4Error::corrupt(
            format!("directory block {lblk} is not mapped"),
            at,
        ))
    }

    fn dir_map(&self, dir: &Inode) -> Result<Vec<Extent>> {
        if !dir.uses_extents() {
            return Err(Ext4Error::unsupported(
                format!("directory inode {} uses a classic block map", dir.ino),
                "rpiimg only edits extent-mapped directories",
            ));
        }
        self.fs.extents(dir)
    }

    /// Blocks of a directory by its size; an error (not 0) when the size
    /// does not fit 32-bit logical block numbers.
    fn dir_blocks(&self, dir: &Inode) -> Result<u32> {
        let at = Location::Inode(dir.ino);
        let n = dir
            .size()
            .checked_div(self.fs.block_size() as u64)
            .ok_or_else(|| raw::overflow("directory block count", &at))?;
        raw::narrow(n, "directory block count", &at)
    }

    /// Make a directory's size end after logical block `lblk`.
    fn size_to(&self, dir: &mut Inode, lblk: u32) -> Result<()> {
        let size = u64::from(lblk)
            .checked_add(1)
            .and_then(|n| n.checked_mul(self.fs.block_size() as u64))
            .ok_or_else(|| raw::overflow("directory size", &Location::Inode(dir.ino)))?;
        dir.set_size(size);
        Ok(())
    }

    fn name_hash(&self, dir: &Inode, root: &[u8], name: &[u8]) -> Result<u32> {
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
    fn sorted_by_hash(
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

    /// Write `.` (12 bytes) and `..` (to the end of `area`) at its start.
    fn dots(area: &mut [u8], ino: u32, parent: u32, at: &Location) -> Result<()> {
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

    /// The first block of a new directory: `.`, `..`, tail.
    pub(super) fn new_dir_block(&self, dir: &Inode, parent: u32) -> Result<Vec<u8>> {
        let at = Location::Block {
            ino: dir.ino,
            block: 0,
        };
        let bs = self.fs.block_size();
        let end = self.leaf_end(&at)?;
        let mut b = vec![0u8; bs];
        Self::dots(
            raw::field_mut(&mut b, 0, end, "directory block", &at)?,
            dir.ino,
            parent,
            &at,
        )?;
        self.seal_leaf(dir, &mut b, &at)?;
        Ok(b)
    }

    /// Add `name -> ino` to a directory (which must not already hold `name`).
    pub(super) fn add_entry(&mut self, dir_ino: u32, name: &[u8], ino: u32, ft: u8) -> Result<()> {
        let dir = self.fs.live_inode(dir_ino)?;
        if dir.is_htree() {
            return self.htree_insert(dir_ino, name, ino, ft);
        }
        let map = self.dir_map(&dir)?;
        let dat = Location::Inode(dir_ino);
        let end = self.leaf_end(&dat)?;
        let nblocks = self.dir_blocks(&dir)?;
        for lblk in 0..nblocks {
            let pblk = Self::pblk_of(&map, &dir, lblk)?;
            let at = Location::Block {
                ino: dir_ino,
                block: u64::from(lblk),
            };
            let mut b = self.fs.read_block(pblk, &at)?;
            if insert_into_leaf(&mut b, end, name, ino, ft, &at)? {
                self.seal_leaf(&dir, &mut b, &at)?;
                return self.write_block(pblk, &b);
            }
        }
        let indexable = self.fs.sb.has(Feature::DirIndex);
        if nblocks == 1 && indexable {
            // As the kernel does when a one-block directory overflows.
            self.make_indexed(dir_ino)?;
            return self.htree_insert(dir_ino, name, ino, ft);
        }
        let mut dir = dir;
        let pblk = self.append_block(&mut dir, nblocks)?;
        self.size_to(&mut dir, nblocks)?;
        self.put_inode(&mut dir)?;
        let at = Location::Block {
            ino: dir_ino,
            block: u64::from(nblocks),
        };
        let mut b = vec![0u8; self.fs.block_size()];
        pack(
            raw::field_mut(&mut b, 0, end, "directory block", &at)?,
            &[Ent {
                hash: 0,
                ino,
                name: name.to_vec(),
                ft,
            }],
            &at,
        )?;
        self.seal_leaf(&dir, &mut b, &at)?;
        self.write_block(pblk, &b)
    }

    /// Turn a full one-block linear directory into an htree: block 0
    /// becomes the dx_root, its entries move to new leaves.
    fn make_indexed(&mut self, dir_ino: u32) -> Result<()> {
        let mut dir = self.fs.live_inode(dir_ino)?;
        let map = self.dir_map(&dir)?;
        let bs = self.fs.block_size();
        let root_pblk = Self::pblk_of(&map, &dir, 0)?;
        let at = Location::Block {
            ino: dir_ino,
            block: 0,
        };
        let mut root = self.fs.read_block(root_pblk, &at)?;
        let end = self.leaf_end(&at)?;
        let recs = records(&root, end, &at)?;
        let parent = recs.get(1).map_or(dir_ino, |r| r.ino);
        // Build the root header first so hashing knows the version.
        root.fill(0);
        Self::dots(&mut root, dir_ino, parent, &at)?;
        raw::wr8(
            &mut root,
            ROOT_HASH_VERSION,
            self.fs.sb.def_hash_version(),
            "dx hash version",
            &at,
        )?;
        raw::wr8(&mut root, ROOT_INFO_LENGTH, 8, "dx info length", &at)?;
        raw::wr8(&mut root, ROOT_LEVELS, 0, "dx indirect levels", &at)?;
        let limit = raw::narrow(self.dx_room(ROOT_COUNT_OFF, &at)?, "dx limit", &at)?;
        raw::wr16(&mut root, ROOT_COUNT_OFF, limit, "dx limit", &at)?;
        let ents = self.sorted_by_hash(&dir, &root, recs.into_iter().skip(2))?;
        // Two leaves, split by bytes, so the pending insert has room.
        let (lo, hi) = ents.split_at(half_by_bytes(&ents).min(ents.len()));
        let parts: Vec<&[Ent]> = if hi.is_empty() {
            vec![lo]
        } else {
            vec![lo, hi]
        };
        let mut index = Vec::new();
        // The leaves are logical blocks 1 and 2.
        for (lblk, part) in (1u32..).zip(parts) {
            let pblk = self.append_block(&mut dir, lblk)?;
            self.size_to(&mut dir, lblk)?;
            let lat = Location::Block {
                ino: dir_ino,
                block: u64::from(lblk),
            };
            let mut b = vec![0u8; bs];
            pack(
                raw::field_mut(&mut b, 0, end, "directory block", &lat)?,
                part,
                &lat,
            )?;
            self.seal_leaf(&dir, &mut b, &lat)?;
            self.write_block(pblk, &b)?;
            let h = match part.first() {
                Some(first) if lblk > 1 => {
                    let cont = lo.last().is_some_and(|l| l.hash == first.hash);
                    first.hash | u32::from(cont)
                }
                _ => 0,
            };
            index.push((h, lblk));
        }
        dx_store(&mut root, ROOT_COUNT_OFF, &index, &at)?;
        dir.set_flags(dir.flags() | EXT4_INDEX_FL);
        self.put_inode(&mut dir)?;
        self.seal_dx(&dir, &mut root, ROOT_COUNT_OFF, &at)?;
        self.write_block(root_pblk, &root)
    }

    fn htree_insert(&mut self, dir_ino: u32, name: &[u8], ino: u32, ft: u8) -> Result<()> {
        let bs = self.fs.block_size();
        let end = self.leaf_end(&Location::Inode(dir_ino))?;
        // Each round either inserts or makes room (split or growth); a
        // handful of rounds always suffices.
        for _ in 0..8 {
            let mut dir = self.fs.live_inode(dir_ino)?;
            let map = self.dir_map(&dir)?;
            let csum = self
                .fs
                .csum()
                .then(|| (self.fs.seed, dir_ino, dir.generation()));
            let root_pblk = Self::pblk_of(&map, &dir, 0)?;
            let rat = Location::Block {
                ino: dir_ino,
                block: 0,
            };
            let mut root = self.fs.read_block(root_pblk, &rat)?;
            let parsed = htree::parse_root(&root, csum, &rat)?;
            let h = self.name_hash(&dir, &root, name)?;
            // The last entry whose hash is <= h (entry 0 covers everything
            // below entry 1, so the position never goes below 0).
            let pos = |entries: &[(u32, u32)]| {
                entries
                    .partition_point(|&(eh, _)| eh <= h)
                    .saturating_sub(1)
            };
            let i0 = pos(&parsed.entries);
            // (block, pblk, count_off, position, location) of the index block that points at the leaf
            let (mut parent, parent_pblk, parent_off, ip, node_lblk, pat) =
                if parsed.indirect_levels == 0 {
                    (
                        root.clone(),
                        root_pblk,
                        ROOT_COUNT_OFF,
                        i0,
                        None,
                        rat.clone(),
                    )
                } else {
                    let nl =
                        parsed.entries.get(i0).map(|e| e.1).ok_or_else(|| {
                            Ext4Error::corrupt("dx root has no entries", rat.clone())
                        })?;
                    let npblk = Self::pblk_of(&map, &dir, nl)?;
                    let nat = Location::Block {
                        ino: dir_ino,
                        block: u64::from(nl),
                    };
                    let node = self.fs.read_block(npblk, &nat)?;
                    let e = htree::parse_node(&node, csum, &nat)?;
                    let i1 = pos(&e);
                    (node, npblk, NODE_COUNT_OFF, i1, Some(nl), nat)
                };
            let pentries = dx_entries(&parent, parent_off, &pat)?;
            let leaf_lblk = pentries
                .get(ip)
                .map(|e| e.1)
                .ok_or_else(|| Ext4Error::corrupt("dx block has no entries", pat.clone()))?;
            let leaf_pblk = Self::pblk_of(&map, &dir, leaf_lblk)?;
            let lat = Location::Block {
                ino: dir_ino,
                block: u64::from(leaf_lblk),
            };
            let mut leaf = self.fs.read_block(leaf_pblk, &lat)?;
            if insert_into_leaf(&mut leaf, end, name, ino, ft, &lat)? {
                self.seal_leaf(&dir, &mut leaf, &lat)?;
                return self.write_block(leaf_pblk, &leaf);
            }
            // The leaf is full: its parent needs a free index slot first.
            if pentries.len() >= dx_limit(&parent, parent_off, &pat)? {
                match node_lblk {
                    None => self.grow_root(&mut dir, root_pblk, &mut root)?,
                    Some(nl) => {
                        let rentries = dx_entries(&root, ROOT_COUNT_OFF, &rat)?;
                        if rentries.len() >= dx_limit(&root, ROOT_COUNT_OFF, &rat)? {
                            return Err(Ext4Error::NoSpace {
                                what: format!(
                                    "directory inode {dir_ino} has reached the size limit of a two-level hash index (largedir is not supported)"
                                ),
                            });
                        }
                        self.split_node(
                            &mut dir,
                            &mut root,
                            root_pblk,
                            i0,
                            nl,
                            parent_pblk,
                            &mut parent,
                        )?;
                    }
                }
                continue;
            }
            // Split the leaf by bytes into a new block appended to the directory.
            let recs = records(&leaf, end, &lat)?;
            let ents = self.sorted_by_hash(&dir, &root, recs.into_iter())?;
            let k = half_by_bytes(&ents).min(ents.len().saturating_sub(1));
            let (lo, hi) = ents.split_at(k);
            let (Some(lo_last), Some(hi_first)) = (lo.last(), hi.first()) else {
                return Err(Self::one_hash(dir_ino));
            };
            if ents.first().map(|e| e.hash) == ents.last().map(|e| e.hash) {
                return Err(Self::one_hash(dir_ino));
            }
            let new_lblk = self.dir_blocks(&dir)?;
            let new_pblk = self.append_block(&mut dir, new_lblk)?;
            self.size_to(&mut dir, new_lblk)?;
            self.put_inode(&mut dir)?;
            pack(
                raw::field_mut(&mut leaf, 0, end, "directory block", &lat)?,
                lo,
                &lat,
            )?;
            self.seal_leaf(&dir, &mut leaf, &lat)?;
            self.write_block(leaf_pblk, &leaf)?;
            let nat = Location::Block {
                ino: dir_ino,
                block: u64::from(new_lblk),
            };
            let mut nb = vec![0u8; bs];
            pack(
                raw::field_mut(&mut nb, 0, end, "directory block", &nat)?,
                hi,
                &nat,
            )?;
            self.seal_leaf(&dir, &mut nb, &nat)?;
            self.write_block(new_pblk, &nb)?;
            let cont = lo_last.hash == hi_first.hash;
            let mut pe = pentries;
            // ip indexes pe, so ip + 1 <= pe.len() is a valid insert position.
            let after = ip
                .checked_add(1)
                .ok_or_else(|| raw::overflow("dx position", &pat))?;
            pe.insert(after, (hi_first.hash | u32::from(cont), new_lblk));
            dx_store(&mut parent, parent_off, &pe, &pat)?;
            self.seal_dx(&dir, &mut parent, parent_off, &pat)?;
            self.write_block(parent_pblk, &parent)?;
        }
        Err(Ext4Error::corrupt(
            "could not make room in the directory index",
            Location::Inode(dir_ino),
        ))
    }

    fn one_hash(dir_ino: u32) -> Ext4Error {
        Ext4Error::unsupported(
            format!(
                "directory inode {dir_ino}: a leaf full of names with one hash cannot be split"
            ),
            "rename some of the colliding entries",
        )
    }

    /// A new dx_node holding `entries`, sealed.
    fn new_dx_node(&self, dir: &Inode, entries: &[(u32, u32)], at: &Location) -> Result<Vec<u8>> {
        let mut node = vec![0u8; self.fs.block_size()];
        dx_node_header(&mut node, at)?;
        let limit = raw::narrow(self.dx_room(NODE_COUNT_OFF, at)?, "dx limit", at)?;
        raw::wr16(&mut node, NODE_COUNT_OFF, limit, "dx limit", at)?;
        dx_store(&mut node, NODE_COUNT_OFF, entries, at)?;
        self.seal_dx(dir, &mut node, NODE_COUNT_OFF, at)?;
        Ok(node)
    }

    /// indirect_levels 0 -> 1: the root's entries move to a new dx_node.
    fn grow_root(&mut self, dir: &mut Inode, root_pblk: u64, root: &mut [u8]) -> Result<()> {
        let rat = Location::Block {
            ino: dir.ino,
            block: 0,
        };
        let entries = dx_entries(root, ROOT_COUNT_OFF, &rat)?;
        let lblk = self.dir_blocks(dir)?;
        let pblk = self.append_block(dir, lblk)?;
        self.size_to(dir, lblk)?;
        self.put_inode(dir)?;
        let nat = Location::Block {
            ino: dir.ino,
            block: u64::from(lblk),
        };
        let node = self.new_dx_node(dir, &entries, &nat)?;
        self.write_block(pblk, &node)?;
        raw::wr8(root, ROOT_LEVELS, 1, "dx indirect levels", &rat)?;
        dx_store(root, ROOT_COUNT_OFF, &[(0, lblk)], &rat)?;
        self.seal_dx(dir, root, ROOT_COUNT_OFF, &rat)?;
        self.write_block(root_pblk, root)
    }

    /// Split a full dx_node in two and index the new half from the root.
    #[allow(clippy::too_many_arguments)]
    fn split_node(
        &mut self,
        dir: &mut Inode,
        root: &mut [u8],
        root_pblk: u64,
        i0: usize,
        node_lblk: u32,
        node_pblk: u64,
        node: &mut [u8],
    ) -> Result<()> {
        let rat = Location::Block {
            ino: dir.ino,
            block: 0,
        };
        let nat = Location::Block {
            ino: dir.ino,
            block: u64::from(node_lblk),
        };
        let entries = dx_entries(node, NODE_COUNT_OFF, &nat)?;
        let k = entries.len() / 2;
        let (lo, hi) = entries.split_at(k);
        let Some(&(hi_hash, _)) = hi.first() else {
            return Err(Ext4Error::corrupt("a dx node to split has no entries", nat));
        };
        let lblk = self.dir_blocks(dir)?;
        let pblk = self.append_block(dir, lblk)?;
        self.size_to(dir, lblk)?;
        self.put_inode(dir)?;
        let new_at = Location::Block {
            ino: dir.ino,
            block: u64::from(lblk),
        };
        let nn = self.new_dx_node(dir, hi, &new_at)?;
        self.write_block(pblk, &nn)?;
        let limit = raw::narrow(self.dx_room(NODE_COUNT_OFF, &nat)?, "dx limit", &nat)?;
        let lo = lo.to_vec();
        let kept = raw::offset(NODE_COUNT_OFF, lo.len(), DX_ENTRY, "dx entry", &nat)?;
        node.get_mut(kept..)
            .ok_or_else(|| Ext4Error::corrupt("dx entries lie past the block", nat.clone()))?
            .fill(0);
        raw::wr16(node, NODE_COUNT_OFF, limit, "dx limit", &nat)?;
        dx_store(node, NODE_COUNT_OFF, &lo, &nat)?;
        self.seal_dx(dir, node, NODE_COUNT_OFF, &nat)?;
        self.write_block(node_pblk, node)?;
        let mut re = dx_entries(root, ROOT_COUNT_OFF, &rat)?;
        if re.get(i0).map(|e| e.1) != Some(node_lblk) {
            return Err(Ext4Error::corrupt(
                format!("dx root entry {i0} no longer points at node block {node_lblk}"),
                rat,
            ));
        }
        // i0 indexes re, so i0 + 1 <= re.len() is a valid insert position.
        let after = i0
            .checked_add(1)
            .ok_or_else(|| raw::overflow("dx position", &rat))?;
        re.insert(after, (hi_hash, lblk));
        dx_store(root, ROOT_COUNT_OFF, &re, &rat)?;
        self.seal_dx(dir, root, ROOT_COUNT_OFF, &rat)?;
        self.write_block(root_pblk, root)
    }

    /// Remove `name` from a directory; returns the inode it named.
    /// The index is left alone: empty leaves are legal.
    pub(super) fn remove_entry(&mut self, dir_ino: u32, name: &[u8]) -> Result<u32> {
        let dir = self.fs.live_inode(dir_ino)?;
        let map = self.dir_map(&dir)?;
        let end = self.leaf_end(&Location::Inode(dir_ino))?;
        // The index names the leaves that can hold the name; other leaves
        // are scanned only if it is not there (a name filed under a stale
        // hash would otherwise stay undeletable).
        let mut order = if dir.is_htree() {
            self.fs.htree_leaves(&dir, name)?.ok_or_else(|| {
                Ext4Error::unsupported(
                    format!("directory inode {dir_ino} uses an unknown hash version"),
                    "rpiimg edits directories indexed with legacy, half_md4 or tea hashes",
                )
            })?
        } else {
            Vec::new()
        };
        let preferred = order.clone();
        order.extend((0..self.dir_blocks(&dir)?).filter(|b| !preferred.contains(b)));
        for lblk in order {
            let pblk = Self::pblk_of(&map, &dir, lblk)?;
            let at = Location::Block {
                ino: dir_ino,
                block: u64::from(lblk),
            };
            let mut b = self.fs.read_block(pblk, &at)?;
            if dir.is_htree() && (lblk == 0 || htree::is_node(&b)) {
                continue;
            }
            let recs = records(&b, end, &at)?;
            let Some(i) = recs.iter().position(|r| r.ino != 0 && r.name == name) else {
                continue;
            };
            let (before, from) = recs.split_at(i);
            let Some(rec) = from.first() else {
                continue;
            };
            match before.last() {
                // The first entry of a block cannot be merged away: free it.
                None => raw::wr32(&mut b, rec.off, 0, "directory entry inode", &at)?,
                Some(prev) => {
                    let merged = prev
                        .rec_len
                        .checked_add(rec.rec_len)
                        .ok_or_else(|| raw::overflow("merged rec_len", &at))?;
                    let merged = raw::narrow(merged, "directory entry rec_len", &at)?;
                    let p = raw::field_mut(&mut b, prev.off, prev.rec_len, "directory entry", &at)?;
                    raw::wr16(p, 4, merged, "directory entry rec_len", &at)?;
                }
            }
            self.seal_leaf(&dir, &mut b, &at)?;
            self.write_block(pblk, &b)?;
            return Ok(rec.ino);
        }
        Err(Ext4Error::Path(PathError::NotFound(format!(
            "{} in directory inode {dir_ino}",
            String::from_utf8_lossy(name)
        ))))
    }

    /// Point a directory's `..` at a new parent (after a move).
    pub(super) fn set_dotdot(&mut self, dir_ino: u32, parent: u32) -> Result<()> {
        let dir = self.fs.live_inode(dir_ino)?;
        let map = self.dir_map(&dir)?;
        let pblk = Self::pblk_of(&map, &dir, 0)?;
        let at = Location::Block {
            ino: dir_ino,
            block: 0,
        };
        let mut b = self.fs.read_block(pblk, &at)?;
        if raw::rd8(&b, 0x12, "'..' name length", &at)? != 2
            || raw::field(&b, 0x14, 2, "'..' name", &at)? != b".."
        {
            return Err(Ext4Error::corrupt(
                "directory's second entry is not '..'",
                at,
            ));
        }
        raw::wr32(&mut b, 12, parent, "'..' inode", &at)?;
        if dir.is_htree() {
            self.seal_dx(&dir, &mut b, ROOT_COUNT_OFF, &at)?;
        } else {
            self.seal_leaf(&dir, &mut b, &at)?;
        }
        self.write_block(pblk, &b)
    }

    /// Whether a directory holds nothing but `.` and `..`.
    pub(super) fn dir_is_empty(&self, dir: &Inode) -> Result<bool> {
        Ok(self.fs.read_dir(dir)?.is_empty())
    }
}
