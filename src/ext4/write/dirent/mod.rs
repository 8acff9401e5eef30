//! Directory edits: entries in linear leaves ([`leaf`]), the hash index's
//! blocks ([`dx`]) and its edits ([`index`]), as e2fsprogs' `link.c` does
//! them. Here: where a directory's blocks are, and the edits the writer
//! calls.

mod dx;
mod index;
mod leaf;

use super::{raw, Writer};
use crate::ext4::error::{Ext4Error, Location, Result};
use crate::ext4::extent::Extent;
use crate::ext4::features::Feature;
use crate::ext4::htree::{self, ROOT_COUNT_OFF};
use crate::ext4::inode::Inode;
use crate::image::ReadAt;
use crate::path::PathError;
use leaf::{insert_into_leaf, remove_from_leaf, Ent};

/// A directory block as read: its numbers, its bytes and where it is for
/// messages.
struct DirBlock {
    lblk: u32,
    pblk: u64,
    data: Vec<u8>,
    at: Location,
}

/// The location of logical block `lblk` of directory `ino`.
fn block_at(ino: u32, lblk: u32) -> Location {
    Location::Block {
        ino,
        block: u64::from(lblk),
    }
}

impl<D: ReadAt> Writer<D> {
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

    /// Read logical block `lblk` of a directory whose extents are `map`.
    fn read_dir_block(&self, map: &[Extent], dir: &Inode, lblk: u32) -> Result<DirBlock> {
        let pblk = Self::pblk_of(map, dir, lblk)?;
        let at = block_at(dir.ino, lblk);
        let data = self.fs.read_block(pblk, &at)?;
        Ok(DirBlock {
            lblk,
            pblk,
            data,
            at,
        })
    }

    /// Append a block to a directory and store its inode; returns the
    /// block's logical and physical numbers.
    fn grow_dir(&mut self, dir: &mut Inode) -> Result<(u32, u64)> {
        let lblk = self.dir_blocks(dir)?;
        let pblk = self.append_block(dir, lblk)?;
        self.size_to(dir, lblk)?;
        self.put_inode(dir)?;
        Ok((lblk, pblk))
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
            let DirBlock {
                pblk, mut data, at, ..
            } = self.read_dir_block(&map, &dir, lblk)?;
            if insert_into_leaf(&mut data, end, name, ino, ft, &at)? {
                self.seal_leaf(&dir, &mut data, &at)?;
                return self.write_block(pblk, &data);
            }
        }
        let indexable = self.fs.sb.has(Feature::DirIndex);
        if nblocks == 1 && indexable {
            // As the kernel does when a one-block directory overflows.
            self.make_indexed(dir_ino)?;
            return self.htree_insert(dir_ino, name, ino, ft);
        }
        let mut dir = dir;
        let (lblk, pblk) = self.grow_dir(&mut dir)?;
        let entry = Ent {
            hash: 0,
            ino,
            name: name.to_vec(),
            ft,
        };
        self.write_leaf(&dir, pblk, &block_at(dir_ino, lblk), &[entry])
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
            let DirBlock {
                pblk, mut data, at, ..
            } = self.read_dir_block(&map, &dir, lblk)?;
            if dir.is_htree() && (lblk == 0 || htree::is_node(&data)) {
                continue;
            }
            if let Some(ino) = remove_from_leaf(&mut data, end, name, &at)? {
                self.seal_leaf(&dir, &mut data, &at)?;
                self.write_block(pblk, &data)?;
                return Ok(ino);
            }
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
        let DirBlock {
            pblk,
            data: mut b,
            at,
            ..
        } = self.read_dir_block(&map, &dir, 0)?;
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
