//! Directory edits: entries in linear leaves, and the hash index (insert
//! with leaf split, root growth to one indirect level, node split), as
//! e2fsprogs' `link.c` does them.

use super::Writer;
use crate::bytes::{le16, le32, set_le16, set_le32};
use crate::ext4::checksum;
use crate::ext4::dir::{rec_len_for, TAIL_FILE_TYPE, TAIL_SIZE};
use crate::ext4::error::{Ext4Error, Location, Result};
use crate::ext4::extent::Extent;
use crate::ext4::hash;
use crate::ext4::htree::{self, BLOCK_MASK, NODE_COUNT_OFF, ROOT_COUNT_OFF};
use crate::ext4::inode::{Inode, EXT4_INDEX_FL};
use crate::ext4::superblock::feature;
use crate::image::ReadAt;
use crate::path::PathError;

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
    let mut off = 0;
    while off < end {
        if off + 8 > end {
            return Err(Ext4Error::corrupt("truncated directory entry", at.clone()));
        }
        let rec_len = usize::from(le16(block, off + 4));
        let name_len = usize::from(block[off + 6]);
        if rec_len < 8 || off + rec_len > end || 8 + name_len > rec_len {
            return Err(Ext4Error::corrupt(
                format!("directory entry at offset {off} has invalid rec_len {rec_len}"),
                at.clone(),
            ));
        }
        out.push(Rec {
            off,
            ino: le32(block, off),
            rec_len,
            name: block[off + 8..off + 8 + name_len].to_vec(),
            ft: block[off + 7],
        });
        off += rec_len;
    }
    Ok(out)
}

fn put_rec(block: &mut [u8], off: usize, ino: u32, rec_len: usize, name: &[u8], ft: u8) {
    set_le32(block, off, ino);
    set_le16(block, off + 4, u16::try_from(rec_len).unwrap_or(0));
    block[off + 6] = u8::try_from(name.len()).unwrap_or(0);
    block[off + 7] = ft;
    block[off + 8..off + 8 + name.len()].copy_from_slice(name);
    // Stale bytes after the name are harmless but make images less reproducible.
    let used = rec_len_for(name.len()).min(rec_len);
    block[off + 8 + name.len()..off + used].fill(0);
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
        if r.rec_len >= used + need {
            if r.ino == 0 {
                put_rec(block, r.off, ino, r.rec_len, name, ft);
            } else {
                set_le16(block, r.off + 4, u16::try_from(used).unwrap_or(0));
                put_rec(block, r.off + used, ino, r.rec_len - used, name, ft);
            }
            return Ok(true);
        }
    }
    Ok(false)
}

/// Lay out entries from offset `start` of a leaf, the last one spanning to `end`.
fn pack(block: &mut [u8], start: usize, end: usize, entries: &[Ent]) {
    block[start..end].fill(0);
    if entries.is_empty() {
        put_rec(block, start, 0, end - start, &[], 0);
        return;
    }
    let mut off = start;
    for (i, e) in entries.iter().enumerate() {
        let len = if i + 1 == entries.len() {
            end - off
        } else {
            rec_len_for(e.name.len())
        };
        put_rec(block, off, e.ino, len, &e.name, e.ft);
        off += len;
    }
}

/// How many of the (hash-sorted) entries make up the lower half by bytes.
fn half_by_bytes(entries: &[Ent]) -> usize {
    let total: usize = entries.iter().map(|e| rec_len_for(e.name.len())).sum();
    let mut acc = 0;
    entries
        .iter()
        .take_while(|e| {
            acc += rec_len_for(e.name.len());
            acc <= total / 2
        })
        .count()
}

/// Index entries of a dx block (entry 0's hash reads as 0).
fn dx_entries(block: &[u8], count_off: usize) -> Vec<(u32, u32)> {
    let count = usize::from(le16(block, count_off + 2));
    (0..count)
        .map(|i| {
            let o = count_off + 8 * i;
            let h = if i == 0 { 0 } else { le32(block, o) };
            (h, le32(block, o + 4) & BLOCK_MASK)
        })
        .collect()
}

fn dx_limit(block: &[u8], count_off: usize) -> usize {
    usize::from(le16(block, count_off))
}

fn dx_store(block: &mut [u8], count_off: usize, entries: &[(u32, u32)]) {
    set_le16(
        block,
        count_off + 2,
        u16::try_from(entries.len()).unwrap_or(0),
    );
    for (i, &(h, b)) in entries.iter().enumerate() {
        let o = count_off + 8 * i;
        if i > 0 {
            set_le32(block, o, h);
        }
        set_le32(block, o + 4, b);
    }
}

impl<D: ReadAt> Writer<D> {
    fn leaf_end(&self) -> usize {
        self.fs.block_size() - if self.fs.csum() { TAIL_SIZE } else { 0 }
    }

    fn dx_room(&self, count_off: usize) -> usize {
        (self.fs.block_size() - count_off - if self.fs.csum() { 8 } else { 0 }) / 8
    }

    /// Write the checksum tail of a leaf block.
    fn seal_leaf(&self, dir: &Inode, block: &mut [u8]) {
        if !self.fs.csum() {
            return;
        }
        let t = block.len() - TAIL_SIZE;
        block[t..].fill(0);
        set_le16(block, t + 4, u16::try_from(TAIL_SIZE).unwrap_or(12));
        block[t + 7] = TAIL_FILE_TYPE;
        let c = checksum::inode_block(self.fs.seed, dir.ino, dir.generation(), &block[..t]);
        set_le32(block, t + 8, c);
    }

    /// Write the checksum tail of a dx_root or dx_node.
    fn seal_dx(&self, dir: &Inode, block: &mut [u8], count_off: usize) {
        if !self.fs.csum() {
            return;
        }
        let limit = dx_limit(block, count_off);
        let count = usize::from(le16(block, count_off + 2));
        let t = count_off + 8 * limit;
        set_le32(block, t, 0);
        let c = checksum::dx_block(
            self.fs.seed,
            dir.ino,
            dir.generation(),
            &block[..count_off + 8 * count],
            [0; 4],
        );
        set_le32(block, t + 4, c);
    }

    fn pblk_of(map: &[Extent], dir: &Inode, lblk: u32) -> Result<u64> {
        map.iter()
            .find(|e| lblk >= e.lblk && lblk - e.lblk < e.len)
            .map(|e| e.pblk + u64::from(lblk - e.lblk))
            .ok_or_else(|| {
                Ext4Error::corrupt(
                    format!("directory block {lblk} is not mapped"),
                    Location::Inode(dir.ino),
                )
            })
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

    fn dir_blocks(&self, dir: &Inode) -> u32 {
        u32::try_from(dir.size() / self.fs.block_size() as u64).unwrap_or(0)
    }

    fn name_hash(&self, dir: &Inode, root: &[u8], name: &[u8]) -> Result<u32> {
        let v = hash::effective_version(root[0x1C], self.fs.sb.unsigned_hash());
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

    /// The first block of a new directory: `.`, `..`, tail.
    pub(super) fn new_dir_block(&self, dir: &Inode, parent: u32) -> Vec<u8> {
        let bs = self.fs.block_size();
        let end = self.leaf_end();
        let mut b = vec![0u8; bs];
        put_rec(&mut b, 0, dir.ino, 12, b".", 2);
        put_rec(&mut b, 12, parent, end - 12, b"..", 2);
        self.seal_leaf(dir, &mut b);
        b
    }

    /// Add `name -> ino` to a directory (which must not already hold `name`).
    pub(super) fn add_entry(&mut self, dir_ino: u32, name: &[u8], ino: u32, ft: u8) -> Result<()> {
        let dir = self.fs.live_inode(dir_ino)?;
        if dir.is_htree() {
            return self.htree_insert(dir_ino, name, ino, ft);
        }
        let map = self.dir_map(&dir)?;
        let end = self.leaf_end();
        let nblocks = self.dir_blocks(&dir);
        for lblk in 0..nblocks {
            let pblk = Self::pblk_of(&map, &dir, lblk)?;
            let at = Location::Block {
                ino: dir_ino,
                block: u64::from(lblk),
            };
            let mut b = self.fs.read_block(pblk, &at)?;
            if insert_into_leaf(&mut b, end, name, ino, ft, &at)? {
                self.seal_leaf(&dir, &mut b);
                return self.write_block(pblk, &b);
            }
        }
        let indexable = self.fs.sb.feature_compat() & feature::COMPAT_DIR_INDEX != 0;
        if nblocks == 1 && indexable {
            // As the kernel does when a one-block directory overflows.
            self.make_indexed(dir_ino)?;
            return self.htree_insert(dir_ino, name, ino, ft);
        }
        let mut dir = dir;
        let pblk = self.append_block(&mut dir, nblocks)?;
        dir.set_size(u64::from(nblocks + 1) * self.fs.block_size() as u64);
        self.put_inode(&mut dir)?;
        let mut b = vec![0u8; self.fs.block_size()];
        pack(
            &mut b,
            0,
            end,
            &[Ent {
                hash: 0,
                ino,
                name: name.to_vec(),
                ft,
            }],
        );
        self.seal_leaf(&dir, &mut b);
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
        let recs = records(&root, self.leaf_end(), &at)?;
        let parent = recs.get(1).map_or(dir_ino, |r| r.ino);
        // Build the root header first so hashing knows the version.
        root.fill(0);
        put_rec(&mut root, 0, dir_ino, 12, b".", 2);
        put_rec(&mut root, 12, parent, bs - 12, b"..", 2);
        root[0x1C] = self.fs.sb.def_hash_version();
        root[0x1D] = 8;
        root[0x1E] = 0;
        let limit = self.dx_room(ROOT_COUNT_OFF);
        set_le16(&mut root, ROOT_COUNT_OFF, u16::try_from(limit).unwrap_or(0));
        let ents = self.sorted_by_hash(&dir, &root, recs.into_iter().skip(2))?;
        // Two leaves, split by bytes, so the pending insert has room.
        let (lo, hi) = ents.split_at(half_by_bytes(&ents));
        let parts: Vec<&[Ent]> = if hi.is_empty() {
            vec![lo]
        } else {
            vec![lo, hi]
        };
        let mut index = Vec::new();
        let end = self.leaf_end();
        for (i, part) in parts.into_iter().enumerate() {
            let lblk = u32::try_from(i + 1).unwrap_or(1);
            let pblk = self.append_block(&mut dir, lblk)?;
            dir.set_size(u64::from(lblk + 1) * bs as u64);
            let mut b = vec![0u8; bs];
            pack(&mut b, 0, end, part);
            self.seal_leaf(&dir, &mut b);
            self.write_block(pblk, &b)?;
            let h = match part.first() {
                Some(first) if i > 0 => {
                    let cont = lo.last().is_some_and(|l| l.hash == first.hash);
                    first.hash | u32::from(cont)
                }
                _ => 0,
            };
            index.push((h, lblk));
        }
        dx_store(&mut root, ROOT_COUNT_OFF, &index);
        dir.set_flags(dir.flags() | EXT4_INDEX_FL);
        self.put_inode(&mut dir)?;
        self.seal_dx(&dir, &mut root, ROOT_COUNT_OFF);
        self.write_block(root_pblk, &root)
    }

    fn htree_insert(&mut self, dir_ino: u32, name: &[u8], ino: u32, ft: u8) -> Result<()> {
        let bs = self.fs.block_size();
        let end = self.leaf_end();
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
            let pos =
                |entries: &[(u32, u32)]| entries.partition_point(|&(eh, _)| eh <= h).max(1) - 1;
            let i0 = pos(&parsed.entries);
            // (block, pblk, count_off, position) of the index block that points at the leaf
            let (mut parent, parent_pblk, parent_off, ip, node_lblk) =
                if parsed.indirect_levels == 0 {
                    (root.clone(), root_pblk, ROOT_COUNT_OFF, i0, None)
                } else {
                    let nl = parsed.entries[i0].1;
                    let npblk = Self::pblk_of(&map, &dir, nl)?;
                    let nat = Location::Block {
                        ino: dir_ino,
                        block: u64::from(nl),
                    };
                    let node = self.fs.read_block(npblk, &nat)?;
                    let e = htree::parse_node(&node, csum, &nat)?;
                    let i1 = pos(&e);
                    (node, npblk, NODE_COUNT_OFF, i1, Some(nl))
                };
            let pentries = dx_entries(&parent, parent_off);
            let leaf_lblk = pentries[ip].1;
            let leaf_pblk = Self::pblk_of(&map, &dir, leaf_lblk)?;
            let lat = Location::Block {
                ino: dir_ino,
                block: u64::from(leaf_lblk),
            };
            let mut leaf = self.fs.read_block(leaf_pblk, &lat)?;
            if insert_into_leaf(&mut leaf, end, name, ino, ft, &lat)? {
                self.seal_leaf(&dir, &mut leaf);
                return self.write_block(leaf_pblk, &leaf);
            }
            // The leaf is full: its parent needs a free index slot first.
            if pentries.len() >= dx_limit(&parent, parent_off) {
                match node_lblk {
                    None => self.grow_root(&mut dir, root_pblk, &mut root)?,
                    Some(nl) => {
                        let rentries = dx_entries(&root, ROOT_COUNT_OFF);
                        if rentries.len() >= dx_limit(&root, ROOT_COUNT_OFF) {
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
            if k == 0 || ents[0].hash == ents[ents.len() - 1].hash {
                return Err(Ext4Error::unsupported(
                    format!("directory inode {dir_ino}: a leaf full of names with one hash cannot be split"),
                    "rename some of the colliding entries",
                ));
            }
            let (lo, hi) = ents.split_at(k);
            let new_lblk = self.dir_blocks(&dir);
            let new_pblk = self.append_block(&mut dir, new_lblk)?;
            dir.set_size(u64::from(new_lblk + 1) * bs as u64);
            self.put_inode(&mut dir)?;
            pack(&mut leaf, 0, end, lo);
            self.seal_leaf(&dir, &mut leaf);
            self.write_block(leaf_pblk, &leaf)?;
            let mut nb = vec![0u8; bs];
            pack(&mut nb, 0, end, hi);
            self.seal_leaf(&dir, &mut nb);
            self.write_block(new_pblk, &nb)?;
            let cont = lo[lo.len() - 1].hash == hi[0].hash;
            let mut pe = pentries;
            pe.insert(ip + 1, (hi[0].hash | u32::from(cont), new_lblk));
            dx_store(&mut parent, parent_off, &pe);
            self.seal_dx(&dir, &mut parent, parent_off);
            self.write_block(parent_pblk, &parent)?;
        }
        Err(Ext4Error::corrupt(
            "could not make room in the directory index",
            Location::Inode(dir_ino),
        ))
    }

    /// indirect_levels 0 -> 1: the root's entries move to a new dx_node.
    fn grow_root(&mut self, dir: &mut Inode, root_pblk: u64, root: &mut [u8]) -> Result<()> {
        let bs = self.fs.block_size();
        let entries = dx_entries(root, ROOT_COUNT_OFF);
        let lblk = self.dir_blocks(dir);
        let pblk = self.append_block(dir, lblk)?;
        dir.set_size(u64::from(lblk + 1) * bs as u64);
        self.put_inode(dir)?;
        let mut node = vec![0u8; bs];
        set_le16(&mut node, 4, u16::try_from(bs).unwrap_or(0));
        let limit = self.dx_room(NODE_COUNT_OFF);
        set_le16(&mut node, NODE_COUNT_OFF, u16::try_from(limit).unwrap_or(0));
        dx_store(&mut node, NODE_COUNT_OFF, &entries);
        self.seal_dx(dir, &mut node, NODE_COUNT_OFF);
        self.write_block(pblk, &node)?;
        root[0x1E] = 1;
        dx_store(root, ROOT_COUNT_OFF, &[(0, lblk)]);
        self.seal_dx(dir, root, ROOT_COUNT_OFF);
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
        let bs = self.fs.block_size();
        let entries = dx_entries(node, NODE_COUNT_OFF);
        let k = entries.len() / 2;
        let (lo, hi) = entries.split_at(k);
        let lblk = self.dir_blocks(dir);
        let pblk = self.append_block(dir, lblk)?;
        dir.set_size(u64::from(lblk + 1) * bs as u64);
        self.put_inode(dir)?;
        let mut nn = vec![0u8; bs];
        set_le16(&mut nn, 4, u16::try_from(bs).unwrap_or(0));
        let limit = self.dx_room(NODE_COUNT_OFF);
        set_le16(&mut nn, NODE_COUNT_OFF, u16::try_from(limit).unwrap_or(0));
        dx_store(&mut nn, NODE_COUNT_OFF, hi);
        self.seal_dx(dir, &mut nn, NODE_COUNT_OFF);
        self.write_block(pblk, &nn)?;
        let lo = lo.to_vec();
        node[NODE_COUNT_OFF + 8 * lo.len()..].fill(0);
        set_le16(node, NODE_COUNT_OFF, u16::try_from(limit).unwrap_or(0));
        dx_store(node, NODE_COUNT_OFF, &lo);
        self.seal_dx(dir, node, NODE_COUNT_OFF);
        self.write_block(node_pblk, node)?;
        let mut re = dx_entries(root, ROOT_COUNT_OFF);
        debug_assert_eq!(re[i0].1, node_lblk);
        re.insert(i0 + 1, (hi[0].0, lblk));
        dx_store(root, ROOT_COUNT_OFF, &re);
        self.seal_dx(dir, root, ROOT_COUNT_OFF);
        self.write_block(root_pblk, root)
    }

    /// Remove `name` from a directory; returns the inode it named.
    /// The index is left alone: empty leaves are legal.
    pub(super) fn remove_entry(&mut self, dir_ino: u32, name: &[u8]) -> Result<u32> {
        let dir = self.fs.live_inode(dir_ino)?;
        let map = self.dir_map(&dir)?;
        let end = self.leaf_end();
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
        order.extend((0..self.dir_blocks(&dir)).filter(|b| !preferred.contains(b)));
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
            let found = recs[i].ino;
            if i == 0 {
                set_le32(&mut b, 0, 0);
            } else {
                let prev = &recs[i - 1];
                let merged = prev.rec_len + recs[i].rec_len;
                set_le16(&mut b, prev.off + 4, u16::try_from(merged).unwrap_or(0));
            }
            self.seal_leaf(&dir, &mut b);
            self.write_block(pblk, &b)?;
            return Ok(found);
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
        if b[0x12] != 2 || &b[0x14..0x16] != b".." {
            return Err(Ext4Error::corrupt(
                "directory's second entry is not '..'",
                at,
            ));
        }
        set_le32(&mut b, 12, parent);
        if dir.is_htree() {
            self.seal_dx(&dir, &mut b, ROOT_COUNT_OFF);
        } else {
            self.seal_leaf(&dir, &mut b);
        }
        self.write_block(pblk, &b)
    }

    /// Whether a directory holds nothing but `.` and `..`.
    pub(super) fn dir_is_empty(&self, dir: &Inode) -> Result<bool> {
        Ok(self.fs.read_dir(dir)?.is_empty())
    }
}
