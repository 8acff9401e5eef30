//! Edits of the hash index: turning a full one-block directory into an
//! htree, inserting with leaf split, growing the root to one indirect
//! level and splitting a full node, as e2fsprogs' `link.c` does them.

use super::super::{raw, Writer};
use super::dx::{
    dx_entries, dx_limit, dx_store, DX_ENTRY, ROOT_HASH_VERSION, ROOT_INFO_LENGTH, ROOT_LEVELS,
};
use super::leaf::{half_by_bytes, insert_into_leaf, records, Ent};
use super::{block_at, DirBlock};
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
        let DirBlock {
            pblk: root_pblk,
            data: mut root,
            at,
            ..
        } = self.read_dir_block(&map, &dir, 0)?;
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
            self.write_leaf(&dir, pblk, &block_at(dir_ino, lblk), part)?;
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

    /// Add `name -> ino` to an indexed directory. Each round follows the
    /// name's hash to a leaf and inserts there, or makes room and tries
    /// again: a full leaf is split, and first a full index block above it
    /// (the root grows a level, or a node splits); a handful of rounds
    /// always suffices.
    pub(super) fn htree_insert(
        &mut self,
        dir_ino: u32,
        name: &[u8],
        ino: u32,
        ft: u8,
    ) -> Result<()> {
        for _ in 0..8 {
            let mut route = self.route(dir_ino, name)?;
            if self.insert_in_leaf(&mut route, name, ino, ft)? {
                return Ok(());
            }
            if route.parent_is_full()? {
                self.make_index_room(&mut route)?;
            } else {
                self.split_leaf(&mut route)?;
            }
        }
        Err(Ext4Error::corrupt(
            "could not make room in the directory index",
            Location::Inode(dir_ino),
        ))
    }

    /// Read the index from the root down to the leaf for `name`'s hash.
    fn route(&self, dir_ino: u32, name: &[u8]) -> Result<Route> {
        let dir = self.fs.live_inode(dir_ino)?;
        let map = self.dir_map(&dir)?;
        let csum = self
            .fs
            .csum()
            .then(|| (self.fs.seed, dir_ino, dir.generation()));
        let root = self.read_dir_block(&map, &dir, 0)?;
        let parsed = htree::parse_root(&root.data, csum, &root.at)?;
        let h = self.name_hash(&dir, &root.data, name)?;
        // The last entry whose hash is <= h (entry 0 covers everything
        // below entry 1, so the position never goes below 0).
        let pos = |entries: &[(u32, u32)]| {
            entries
                .partition_point(|&(eh, _)| eh <= h)
                .saturating_sub(1)
        };
        let root_pos = pos(&parsed.entries);
        let (node, parent_pos) = if parsed.indirect_levels == 0 {
            (None, root_pos)
        } else {
            let lblk = parsed
                .entries
                .get(root_pos)
                .map(|e| e.1)
                .ok_or_else(|| Ext4Error::corrupt("dx root has no entries", root.at.clone()))?;
            let node = self.read_dir_block(&map, &dir, lblk)?;
            let entries = htree::parse_node(&node.data, csum, &node.at)?;
            (Some(node), pos(&entries))
        };
        let (parent, count_off) = match &node {
            Some(node) => (node, NODE_COUNT_OFF),
            None => (&root, ROOT_COUNT_OFF),
        };
        let parent_entries = dx_entries(&parent.data, count_off, &parent.at)?;
        let leaf_lblk = parent_entries
            .get(parent_pos)
            .map(|e| e.1)
            .ok_or_else(|| Ext4Error::corrupt("dx block has no entries", parent.at.clone()))?;
        let leaf = self.read_dir_block(&map, &dir, leaf_lblk)?;
        Ok(Route {
            dir,
            root,
            root_pos,
            node,
            parent_entries,
            parent_pos,
            leaf,
        })
    }

    /// Put the entry into the route's leaf if it has room.
    fn insert_in_leaf(&mut self, route: &mut Route, name: &[u8], ino: u32, ft: u8) -> Result<bool> {
        let leaf = &mut route.leaf;
        let end = self.leaf_end(&leaf.at)?;
        if !insert_into_leaf(&mut leaf.data, end, name, ino, ft, &leaf.at)? {
            return Ok(false);
        }
        self.seal_leaf(&route.dir, &mut leaf.data, &leaf.at)?;
        self.write_block(leaf.pblk, &leaf.data)?;
        Ok(true)
    }

    /// Free a slot in the full index block above the leaf: grow the root
    /// a level, or split the node (refused when the root is full too).
    fn make_index_room(&mut self, route: &mut Route) -> Result<()> {
        let Some(node) = route.node.as_mut() else {
            return self.grow_root(&mut route.dir, &mut route.root);
        };
        let root = &route.root;
        let root_entries = dx_entries(&root.data, ROOT_COUNT_OFF, &root.at)?;
        if root_entries.len() >= dx_limit(&root.data, ROOT_COUNT_OFF, &root.at)? {
            return Err(Ext4Error::NoSpace {
                what: format!(
                    "directory inode {} has reached the size limit of a two-level hash index (largedir is not supported)",
                    route.dir.ino
                ),
            });
        }
        self.split_node(&mut route.dir, &mut route.root, route.root_pos, node)
    }

    /// Split the full leaf by bytes into a new block appended to the
    /// directory, and index the new block after the old one.
    fn split_leaf(&mut self, route: &mut Route) -> Result<()> {
        let dir_ino = route.dir.ino;
        let leaf = &route.leaf;
        let end = self.leaf_end(&leaf.at)?;
        let recs = records(&leaf.data, end, &leaf.at)?;
        let ents = self.sorted_by_hash(&route.dir, &route.root.data, recs.into_iter())?;
        let k = half_by_bytes(&ents).min(ents.len().saturating_sub(1));
        let (lo, hi) = ents.split_at(k);
        let (Some(lo_last), Some(hi_first)) = (lo.last(), hi.first()) else {
            return Err(Self::one_hash(dir_ino));
        };
        if ents.first().map(|e| e.hash) == ents.last().map(|e| e.hash) {
            return Err(Self::one_hash(dir_ino));
        }
        let (new_lblk, new_pblk) = self.grow_dir(&mut route.dir)?;
        self.write_leaf(&route.dir, leaf.pblk, &leaf.at, lo)?;
        self.write_leaf(&route.dir, new_pblk, &block_at(dir_ino, new_lblk), hi)?;
        let cont = lo_last.hash == hi_first.hash;
        let entry = (hi_first.hash | u32::from(cont), new_lblk);
        let mut entries = std::mem::take(&mut route.parent_entries);
        let (parent, count_off) = match &mut route.node {
            Some(node) => (node, NODE_COUNT_OFF),
            None => (&mut route.root, ROOT_COUNT_OFF),
        };
        insert_after(&mut entries, route.parent_pos, entry, &parent.at)?;
        dx_store(&mut parent.data, count_off, &entries, &parent.at)?;
        self.seal_dx(&route.dir, &mut parent.data, count_off, &parent.at)?;
        self.write_block(parent.pblk, &parent.data)
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
    fn grow_root(&mut self, dir: &mut Inode, root: &mut DirBlock) -> Result<()> {
        let entries = dx_entries(&root.data, ROOT_COUNT_OFF, &root.at)?;
        let (lblk, pblk) = self.grow_dir(dir)?;
        let node = self.new_dx_node(dir, &entries, &block_at(dir.ino, lblk))?;
        self.write_block(pblk, &node)?;
        raw::wr8(
            &mut root.data,
            ROOT_LEVELS,
            1,
            "dx indirect levels",
            &root.at,
        )?;
        dx_store(&mut root.data, ROOT_COUNT_OFF, &[(0, lblk)], &root.at)?;
        self.seal_dx(dir, &mut root.data, ROOT_COUNT_OFF, &root.at)?;
        self.write_block(root.pblk, &root.data)
    }

    /// Split a full dx_node (the root's entry `root_pos` points at it) in
    /// two and index the new half from the root.
    fn split_node(
        &mut self,
        dir: &mut Inode,
        root: &mut DirBlock,
        root_pos: usize,
        node: &mut DirBlock,
    ) -> Result<()> {
        let nat = &node.at;
        let entries = dx_entries(&node.data, NODE_COUNT_OFF, nat)?;
        let k = entries.len() / 2;
        let (lo, hi) = entries.split_at(k);
        let Some(&(hi_hash, _)) = hi.first() else {
            return Err(Ext4Error::corrupt(
                "a dx node to split has no entries",
                nat.clone(),
            ));
        };
        let (lblk, pblk) = self.grow_dir(dir)?;
        let nn = self.new_dx_node(dir, hi, &block_at(dir.ino, lblk))?;
        self.write_block(pblk, &nn)?;
        let limit = raw::narrow(self.dx_room(NODE_COUNT_OFF, nat)?, "dx limit", nat)?;
        let kept = raw::offset(NODE_COUNT_OFF, lo.len(), DX_ENTRY, "dx entry", nat)?;
        node.data
            .get_mut(kept..)
            .ok_or_else(|| Ext4Error::corrupt("dx entries lie past the block", nat.clone()))?
            .fill(0);
        raw::wr16(&mut node.data, NODE_COUNT_OFF, limit, "dx limit", nat)?;
        dx_store(&mut node.data, NODE_COUNT_OFF, lo, nat)?;
        self.seal_dx(dir, &mut node.data, NODE_COUNT_OFF, nat)?;
        self.write_block(node.pblk, &node.data)?;
        let rat = &root.at;
        let mut re = dx_entries(&root.data, ROOT_COUNT_OFF, rat)?;
        if re.get(root_pos).map(|e| e.1) != Some(node.lblk) {
            return Err(Ext4Error::corrupt(
                format!(
                    "dx root entry {root_pos} no longer points at node block {}",
                    node.lblk
                ),
                rat.clone(),
            ));
        }
        insert_after(&mut re, root_pos, (hi_hash, lblk), rat)?;
        dx_store(&mut root.data, ROOT_COUNT_OFF, &re, rat)?;
        self.seal_dx(dir, &mut root.data, ROOT_COUNT_OFF, rat)?;
        self.write_block(root.pblk, &root.data)
    }
}

/// The index on the way from the root to the leaf a name's hash selects,
/// as read at the start of one round of [`Writer::htree_insert`].
struct Route {
    dir: Inode,
    /// The dx_root (logical block 0).
    root: DirBlock,
    /// The root's entry followed.
    root_pos: usize,
    /// The dx_node the root's entry points at, with one indirect level.
    node: Option<DirBlock>,
    /// The entries of the index block that points at the leaf (the node,
    /// else the root), and the position there of the leaf's entry.
    parent_entries: Vec<(u32, u32)>,
    parent_pos: usize,
    leaf: DirBlock,
}

impl Route {
    /// The index block that points at the leaf, and where its count is.
    fn parent(&self) -> (&DirBlock, usize) {
        match &self.node {
            Some(node) => (node, NODE_COUNT_OFF),
            None => (&self.root, ROOT_COUNT_OFF),
        }
    }

    /// Whether the index block above the leaf has no free slot.
    fn parent_is_full(&self) -> Result<bool> {
        let (parent, count_off) = self.parent();
        let limit = dx_limit(&parent.data, count_off, &parent.at)?;
        Ok(self.parent_entries.len() >= limit)
    }
}

/// Insert `entry` after position `pos` of `entries` (which `pos` indexes,
/// so `pos + 1` is at most their length).
fn insert_after(
    entries: &mut Vec<(u32, u32)>,
    pos: usize,
    entry: (u32, u32),
    at: &Location,
) -> Result<()> {
    let after = pos
        .checked_add(1)
        .filter(|&a| a <= entries.len())
        .ok_or_else(|| raw::overflow("dx position", at))?;
    entries.insert(after, entry);
    Ok(())
}
