//! Edits of the hash index: turning a full one-block directory into an
//! htree, inserting with leaf split, growing the root to one indirect
//! level and splitting a full node, as e2fsprogs' `link.c` does them.

use super::super::{raw, Writer};
use super::dx::{
    dx_entries, dx_limit, dx_store, DX_ENTRY, ROOT_HASH_VERSION, ROOT_INFO_LENGTH, ROOT_LEVELS,
};
use super::leaf::{half_by_bytes, insert_into_leaf, pack, records, Ent};
use crate::ext4::error::{Ext4Error, Location, Result};
use crate::ext4::htree::{self, NODE_COUNT_OFF, ROOT_COUNT_OFF};
use crate::ext4::inode::{Inode, EXT4_INDEX_FL};
use crate::image::ReadAt;

impl<D: ReadAt> Writer<D> {
    /// Turn a full one-block linear directory into an htree: block 0
    /// becomes the dx_root, its entries move to new leaves.
    pub(super) fn make_indexed(&mut self, dir_ino: u32) -> Result<()> {
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

    pub(super) fn htree_insert(
        &mut self,
        dir_ino: u32,
        name: &[u8],
        ino: u32,
        ft: u8,
    ) -> Result<()> {
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

    pub(super) fn one_hash(dir_ino: u32) -> Ext4Error {
        Ext4Error::unsupported(
            format!(
                "directory inode {dir_ino}: a leaf full of names with one hash cannot be split"
            ),
            "rename some of the colliding entries",
        )
    }

    /// indirect_levels 0 -> 1: the root's entries move to a new dx_node.
    pub(super) fn grow_root(
        &mut self,
        dir: &mut Inode,
        root_pblk: u64,
        root: &mut [u8],
    ) -> Result<()> {
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
    pub(super) fn split_node(
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
}
