//! The project's own ext4 engine for an unmounted filesystem behind a byte
//! window. It has three parts:
//!
//! - Reading: [`Ext4::open`] checks the superblock and every group
//!   descriptor; reads of inodes, files, directories (linear and hash
//!   indexed), symlinks and extended attributes verify every checksum they
//!   meet and give a damaged image an error, never a panic.
//! - Checking: [`Ext4::metadata_problems`] (`check`, `links`, `owned`) is
//!   the one pass over the metadata that `rpiimg verify` vouches for, as
//!   `e2fsck -fn` would judge it.
//! - Writing: [`write::Writer`] creates, replaces and removes files,
//!   directories, symlinks and hard links, renames them and changes modes
//!   and owners, as one transaction staged copy-on-write and committed
//!   whole; it refuses filesystems it cannot edit safely.
//!
//! What reader and writer accept is one table, in `features`: opening
//! refuses the features the reader cannot read, the writer also those it
//! cannot write. One module per on-disk structure; checksums live in
//! [`checksum`]. Nothing here knows about Raspberry Pis.

#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::cast_lossless
)]
// Everything here reads (or writes) bytes of an image rpiimg did not make:
// no unchecked indexing or arithmetic, in this module and all below it (a
// damaged image gets an error, never a panic or a wrapped offset).
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod check;
pub(crate) mod checksum;
pub(crate) mod dir;
pub(crate) mod error;
pub(crate) mod extent;
pub(crate) mod features;
pub(crate) mod group;
pub(crate) mod hash;
pub(crate) mod htree;
pub(crate) mod inode;
mod links;
mod owned;
pub(crate) mod superblock;
pub mod write;
pub(crate) mod xattr;

use std::io::Write;

use crate::bytes::{be32, le32};
use crate::image::ReadAt;
use crate::path::{self, Kind, ResolveError, Walk};
pub use dir::DirEntry;
pub use error::{Ext4Error, Location, Result};
use extent::Extent;
use features::Feature;
pub(crate) use inode::ROOT_INO;
pub use inode::{FileType, Inode};
use superblock::{Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
pub use xattr::Xattr;

const JOURNAL_MAGIC: u32 = 0xC03B_3998;

/// Block arithmetic on numbers from disk that does not fit 64 bits.
fn overflow(what: &str, at: Location) -> Ext4Error {
    Ext4Error::corrupt(format!("{what} lies beyond 64-bit byte offsets"), at)
}

/// The most rpiimg reads of one file into memory (configuration, unit and
/// key files are far smaller); larger content is streamed.
pub(crate) const MEMORY_CAP: u64 = 16 << 20;

/// State of the internal journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    None,
    Clean,
    /// The journal holds transactions that were never checkpointed.
    NeedsRecovery,
}

/// An opened ext4 filesystem.
pub struct Ext4<D> {
    dev: D,
    sb: Superblock,
    groups: group::GroupTable,
    seed: u32,
}

impl<D: ReadAt> Ext4<D> {
    /// Open the filesystem in `dev`, checking the superblock and every group descriptor.
    pub fn open(dev: D) -> Result<Self> {
        const SUPERBLOCK_END: u64 = SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64;
        if dev.size() < SUPERBLOCK_END {
            return Err(Ext4Error::corrupt(
                "partition too small to hold an ext4 superblock",
                Location::Superblock,
            ));
        }
        let mut raw = vec![0u8; SUPERBLOCK_SIZE];
        dev.read_exact_at(&mut raw, SUPERBLOCK_OFFSET)?;
        let sb = Superblock::parse(&raw)?;
        let bs = sb.block_size() as u64;
        let fs_bytes = sb.blocks_count().saturating_mul(bs);
        if fs_bytes > dev.size() {
            return Err(Ext4Error::corrupt(
                format!(
                    "filesystem claims {fs_bytes} bytes but its partition holds only {}: the image is truncated",
                    dev.size()
                ),
                Location::Superblock,
            ));
        }
        // The descriptor table starts in the block after the superblock's.
        let gdt = u64::from(sb.first_data_block())
            .checked_add(1)
            .and_then(|b| b.checked_mul(bs));
        let gdt_len = usize::try_from(sb.group_count())
            .ok()
            .and_then(|n| n.checked_mul(sb.desc_size()));
        let (Some(gdt), Some(gdt_len)) = (gdt, gdt_len) else {
            return Err(overflow(
                "the group descriptor table",
                Location::GroupDesc(0),
            ));
        };
        let mut graw = vec![0u8; gdt_len];
        dev.read_exact_at(&mut graw, gdt)?;
        let groups = group::GroupTable::parse(&sb, graw)?;
        let seed = sb.csum_seed();
        Ok(Ext4 {
            dev,
            sb,
            groups,
            seed,
        })
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn groups(&self) -> &group::GroupTable {
        &self.groups
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    pub(crate) fn csum_seed(&self) -> u32 {
        self.seed
    }

    fn csum(&self) -> bool {
        self.sb.has(Feature::MetadataCsum)
    }

    pub(crate) fn block_size(&self) -> usize {
        self.sb.block_size()
    }

    /// Read one filesystem block, refusing block numbers outside the filesystem.
    pub(crate) fn read_block(&self, block: u64, at: &Location) -> Result<Vec<u8>> {
        if block >= self.sb.blocks_count() {
            return Err(Ext4Error::corrupt(
                format!("reference to block {block}, past the end of the filesystem"),
                at.clone(),
            ));
        }
        // Within the filesystem, whose size `open` checked against the device.
        let off = block
            .checked_mul(self.block_size() as u64)
            .ok_or_else(|| overflow(&format!("block {block}"), at.clone()))?;
        let mut buf = vec![0u8; self.block_size()];
        self.dev.read_exact_at(&mut buf, off)?;
        Ok(buf)
    }

    /// The group of inode `ino` and its index there, refusing numbers
    /// outside the inode table.
    fn inode_place(&self, ino: u32) -> Result<(u32, u32)> {
        let ipg = self.sb.inodes_per_group();
        let n = ino.checked_sub(1).filter(|_| ino <= self.sb.inodes_count());
        // `ipg` is not zero (the superblock checks its geometry).
        let place = n.and_then(|n| Some((n.checked_div(ipg)?, n.checked_rem(ipg)?)));
        place.ok_or_else(|| {
            Ext4Error::corrupt(
                format!("inode number {ino} is out of range"),
                Location::Inode(ino),
            )
        })
    }

    /// Read an inode record and verify its checksum.
    pub fn inode(&self, ino: u32) -> Result<Inode> {
        let at = Location::Inode(ino);
        let (g, index) = self.inode_place(ino)?;
        let isz = u64::from(self.sb.inode_size());
        let off = self
            .groups
            .inode_table(g)
            .checked_mul(self.block_size() as u64)
            .and_then(|t| t.checked_add(u64::from(index).checked_mul(isz)?))
            .ok_or_else(|| overflow("the inode's record", at.clone()))?;
        let mut raw = vec![0u8; usize::from(self.sb.inode_size())];
        self.dev.read_exact_at(&mut raw, off)?;
        let inode = Inode::from_raw(ino, raw)?;
        if self.csum() && !inode.checksum_ok(self.seed) {
            return Err(Ext4Error::corrupt("inode checksum does not match", at));
        }
        if inode.mode() != 0 {
            self.check_size(&inode)?;
        }
        Ok(inode)
    }

    /// An in-use inode's size must be one the filesystem can address, as
    /// e2fsck requires: logical block numbers are 32 bits, so no file ends
    /// past 2^32 blocks, and without `large_dir` a directory's size has no
    /// high word. A size of petabytes would otherwise have every reader
    /// stream zeros for days (found by the ext4 fuzz target).
    fn check_size(&self, inode: &Inode) -> Result<()> {
        let size = inode.size();
        let max = (1u64 << 32).saturating_mul(self.block_size() as u64);
        let dir_max = if self.sb.has(Feature::LargeDir) {
            max
        } else {
            1u64 << 32
        };
        let (limit, what) = if inode.is_dir() {
            (dir_max, "directory")
        } else {
            (max, "file")
        };
        if size >= limit {
            return Err(Ext4Error::corrupt(
                format!("a {what} size of {size} bytes is past the largest this filesystem can address ({limit} bytes)"),
                Location::Inode(inode.ino),
            ));
        }
        Ok(())
    }

    /// Read an inode that a directory entry refers to: it must be in use.
    pub(crate) fn live_inode(&self, ino: u32) -> Result<Inode> {
        if self.csum() {
            let ipg = self.sb.inodes_per_group();
            let (g, index) = self.inode_place(ino)?;
            let unused_from = ipg.saturating_sub(self.groups.itable_unused(g));
            if self.groups.flags(g) & group::BG_INODE_UNINIT != 0 || index >= unused_from {
                return Err(Ext4Error::corrupt(
                    format!(
                        "a directory entry refers to inode {ino} in group {g}'s unused inode area"
                    ),
                    Location::Inode(ino),
                ));
            }
        }
        let inode = self.inode(ino)?;
        if inode.links_count() == 0 || inode.mode() == 0 {
            return Err(Ext4Error::corrupt(
                format!("a directory entry refers to deleted inode {ino}"),
                Location::Inode(ino),
            ));
        }
        Ok(inode)
    }

    /// The file's block map as sorted extents (extent tree or classic block map).
    pub fn extents(&self, inode: &Inode) -> Result<Vec<Extent>> {
        self.block_map(inode).map(|(extents, _)| extents)
    }

    /// The file's extents and the blocks holding the map itself (extent
    /// tree nodes below the inode, or indirect blocks), which the inode
    /// owns as much as its data: `i_blocks` counts both, and the block
    /// bitmap must mark both. The list is no longer than the blocks read.
    pub(crate) fn block_map(&self, inode: &Inode) -> Result<(Vec<Extent>, Vec<u64>)> {
        let mut out = Vec::new();
        let mut map_blocks = Vec::new();
        if inode.flags() & inode::EXT4_INLINE_DATA_FL != 0 {
            return Err(Ext4Error::unsupported(
                format!("inode {} stores its data inline", inode.ino),
                "inline_data filesystems are not supported",
            ));
        }
        if inode.uses_extents() {
            let root = inode.i_block();
            let at = Location::Inode(inode.ino);
            let h = extent::header(root, 4, &at)?;
            self.walk_extents(inode, root, h, &mut out, &mut map_blocks)?;
        } else {
            self.walk_block_map(inode, &mut out, &mut map_blocks)?;
        }
        out.sort_by_key(|e| e.lblk);
        let blocks = self.sb.blocks_count();
        for e in &out {
            if e.pblk
                .checked_add(u64::from(e.len))
                .is_none_or(|end| end > blocks)
                || e.pblk == 0
            {
                return Err(Ext4Error::corrupt(
                    format!(
                        "extent maps file block {} to disk blocks {}..{}, outside the filesystem",
                        e.lblk,
                        e.pblk,
                        e.pblk.saturating_add(u64::from(e.len))
                    ),
                    Location::Inode(inode.ino),
                ));
            }
        }
        for w in out.windows(2) {
            let [a, b] = w else { continue };
            // An extent reaching past file block 2^32 - 1 overlaps any next one.
            if a.lblk.checked_add(a.len).is_none_or(|end| end > b.lblk) {
                return Err(Ext4Error::corrupt(
                    format!("extents overlap at file block {}", b.lblk),
                    Location::Inode(inode.ino),
                ));
            }
        }
        Ok((out, map_blocks))
    }

    fn walk_extents(
        &self,
        inode: &Inode,
        node: &[u8],
        h: extent::Header,
        out: &mut Vec<Extent>,
        map_blocks: &mut Vec<u64>,
    ) -> Result<()> {
        if h.depth == 0 {
            out.extend(extent::leaf_entries(node, &h));
            return Ok(());
        }
        for (_, child) in extent::index_entries(node, &h) {
            let cat = Location::Block {
                ino: inode.ino,
                block: child,
            };
            let blk = self.read_block(child, &cat)?;
            map_blocks.push(child);
            // 12-byte entries after the 12-byte header.
            let room = blk.len().saturating_sub(12) / 12;
            let ch = extent::header(&blk, room, &cat)?;
            if ch.depth.checked_add(1) != Some(h.depth) {
                return Err(Ext4Error::corrupt(
                    format!(
                        "extent node depth {} under a node of depth {}",
                        ch.depth, h.depth
                    ),
                    cat,
                ));
            }
            if self.csum() {
                extent::verify_block(&blk, &ch, self.seed, inode.ino, inode.generation(), &cat)?;
            }
            self.walk_extents(inode, &blk, ch, out, map_blocks)?;
        }
        Ok(())
    }

    /// Classic ext2/3 block map: 12 direct, then single, double, triple indirect.
    fn walk_block_map(
        &self,
        inode: &Inode,
        out: &mut Vec<Extent>,
        map_blocks: &mut Vec<u64>,
    ) -> Result<()> {
        let bs = self.block_size() as u64;
        let nblocks = inode.size().div_ceil(bs);
        let per = bs / 4;
        let ib = inode.i_block();
        let mut push = |lblk: u64, pblk: u32| {
            if pblk == 0 {
                return;
            }
            let Ok(lblk) = u32::try_from(lblk) else {
                return;
            };
            if let Some(last) = out.last_mut() {
                let contiguous = last.lblk.checked_add(last.len) == Some(lblk)
                    && last.pblk.checked_add(u64::from(last.len)) == Some(u64::from(pblk));
                if let Some(len) = last.len.checked_add(1).filter(|_| contiguous) {
                    last.len = len;
                    return;
                }
            }
            out.push(Extent {
                lblk,
                pblk: u64::from(pblk),
                len: 1,
                uninit: false,
            });
        };
        for (lblk, ptr) in (0..nblocks).zip(ib.chunks_exact(4).take(12)) {
            push(lblk, le32(ptr, 0));
        }
        // (first logical block, pointer, levels of indirection). With blocks
        // of at most 64 KiB these cannot overflow; a saturated first block
        // would lie past the file and be skipped.
        let double = per.saturating_add(12);
        let triple = per.saturating_mul(per).saturating_add(double);
        let roots = [
            (12, le32(ib, 48), 1u32),
            (double, le32(ib, 52), 2),
            (triple, le32(ib, 56), 3),
        ];
        let mut stack: Vec<(u64, u32, u32)> = roots.iter().rev().copied().collect();
        while let Some((first, ptr, level)) = stack.pop() {
            if ptr == 0 || first >= nblocks {
                continue;
            }
            let at = Location::Block {
                ino: inode.ino,
                block: u64::from(ptr),
            };
            let blk = self.read_block(u64::from(ptr), &at)?;
            map_blocks.push(u64::from(ptr));
            // Levels below this block's children, and the file blocks each
            // child covers.
            let below = level.saturating_sub(1);
            let span = per.saturating_pow(below);
            let mut children = Vec::new();
            for (j, p) in (0u64..).zip(blk.chunks_exact(4)) {
                let p = le32(p, 0);
                let lb = span.checked_mul(j).and_then(|o| o.checked_add(first));
                let Some(lb) = lb.filter(|&lb| lb < nblocks) else {
                    break;
                };
                if below == 0 {
                    push(lb, p);
                } else {
                    children.push((lb, p, below));
                }
            }
            stack.extend(children.into_iter().rev());
        }
        Ok(())
    }

    /// Stream a regular file's content to `w`; holes and preallocated
    /// extents read as zeros. Returns the number of bytes written.
    pub fn read_to(&self, inode: &Inode, w: &mut dyn Write) -> Result<u64> {
        const CHUNK_BLOCKS: usize = 256;
        let at = Location::Inode(inode.ino);
        let bs_usize = self.block_size();
        let bs = bs_usize as u64;
        // Blocks are at most 64 KiB, so a chunk is at most 16 MiB.
        let chunk = bs_usize.saturating_mul(CHUNK_BLOCKS);
        let size = inode.size();
        let mut pos = 0u64;
        let zeros = vec![0u8; chunk];
        let mut buf = vec![0u8; chunk];
        // The next piece of at most `chunk` bytes before `upto`, if any.
        let piece = |upto: u64, pos: u64| {
            let left = upto.checked_sub(pos).filter(|&l| l > 0)?;
            // (A remainder too large for a usize is larger than a chunk.)
            Some(usize::try_from(left).map_or(chunk, |l| l.min(chunk)))
        };
        let fill_zero = |w: &mut dyn Write, upto: u64, pos: &mut u64| -> Result<()> {
            while let Some(n) = piece(upto, *pos) {
                let (part, _) = zeros.split_at(n);
                w.write_all(part)?;
                // n <= upto - pos
                *pos = pos.saturating_add(n as u64);
            }
            Ok(())
        };
        for e in self.extents(inode)? {
            let Some(start) = u64::from(e.lblk).checked_mul(bs) else {
                break;
            };
            if start >= size {
                break;
            }
            fill_zero(w, start, &mut pos)?;
            // Past the end of the file is as good as the file's end.
            let end = u64::from(e.len)
                .checked_mul(bs)
                .and_then(|l| l.checked_add(start))
                .map_or(size, |end| end.min(size));
            if e.uninit {
                fill_zero(w, end, &mut pos)?;
                continue;
            }
            let mut b = e.pblk;
            while let Some(n) = piece(end, pos) {
                let (dst, _) = buf.split_at_mut(n);
                // `extents` checked the extent lies inside the filesystem.
                let off = b
                    .checked_mul(bs)
                    .ok_or_else(|| overflow(&format!("block {b}"), at.clone()))?;
                self.dev.read_exact_at(dst, off)?;
                w.write_all(dst)?;
                pos = pos.saturating_add(n as u64);
                b = b.saturating_add(CHUNK_BLOCKS as u64);
            }
        }
        fill_zero(w, size, &mut pos)?;
        Ok(pos)
    }

    /// A whole file in memory (for small files: configuration, unit files).
    /// Refused above 16 MiB: a legal sparse file of a terabyte must not
    /// exhaust memory; large content is streamed with [`Ext4::read_to`].
    pub(crate) fn read_all(&self, inode: &Inode) -> Result<Vec<u8>> {
        let cap = usize::try_from(inode.size())
            .ok()
            .filter(|_| inode.size() <= MEMORY_CAP);
        let Some(cap) = cap else {
            return Err(Ext4Error::unsupported(
                format!(
                    "inode {} holds {} bytes, more than the {} MiB rpiimg reads into memory",
                    inode.ino,
                    inode.size(),
                    MEMORY_CAP >> 20
                ),
                "this file is not what rpiimg expects there (a damaged or hostile image?)",
            ));
        };
        let mut v = Vec::with_capacity(cap);
        self.read_to(inode, &mut v)?;
        Ok(v)
    }

    /// The target of a symlink.
    pub(crate) fn readlink(&self, inode: &Inode) -> Result<Vec<u8>> {
        let size = inode.size();
        let Some(len) = usize::try_from(size)
            .ok()
            .filter(|&n| n < self.block_size())
        else {
            return Err(Ext4Error::corrupt(
                format!("symlink target of {size} bytes is too long"),
                Location::Inode(inode.ino),
            ));
        };
        if inode.is_fast_symlink() && !inode.uses_extents() {
            // A fast symlink is shorter than its 60-byte i_block.
            let (target, _) = inode.i_block().split_at(len.min(60));
            return Ok(target.to_vec());
        }
        self.read_all(inode)
    }

    /// Every entry of a directory (without `.` and `..`), verifying leaf
    /// and index checksums.
    pub fn read_dir(&self, dir: &Inode) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        self.for_each_dir_block(dir, |_, entries| {
            out.extend(
                entries
                    .into_iter()
                    .filter(|e| e.name != b"." && e.name != b".."),
            );
            Ok(false)
        })?;
        Ok(out)
    }

    /// Visit the leaf entries of each block of a directory in order; the
    /// callback returns `true` to stop early.
    fn for_each_dir_block(
        &self,
        dir: &Inode,
        mut f: impl FnMut(u32, Vec<DirEntry>) -> Result<bool>,
    ) -> Result<()> {
        if !dir.is_dir() {
            return Err(Ext4Error::Path(path::PathError::NotADirectory(format!(
                "inode {}",
                dir.ino
            ))));
        }
        let bs = self.block_size() as u64;
        let at = Location::Inode(dir.ino);
        for e in self.extents(dir)? {
            for (lblk, pblk) in (e.lblk..=u32::MAX).zip(e.pblk..).take(e.len as usize) {
                if u64::from(lblk)
                    .checked_mul(bs)
                    .is_none_or(|o| o >= dir.size())
                {
                    return Ok(());
                }
                let block = self.read_block(pblk, &at)?;
                let entries = self.parse_dir_block(dir, lblk, &block)?;
                if f(lblk, entries)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn dir_csum(&self, dir: &Inode) -> Option<(u32, u32, u32)> {
        self.csum().then(|| (self.seed, dir.ino, dir.generation()))
    }

    /// Parse one directory block: a leaf, the htree root, or an htree node.
    fn parse_dir_block(&self, dir: &Inode, lblk: u32, block: &[u8]) -> Result<Vec<DirEntry>> {
        let at = Location::Block {
            ino: dir.ino,
            block: u64::from(lblk),
        };
        let ft = self.sb.has(Feature::Filetype);
        if dir.is_htree() && lblk == 0 {
            htree::parse_root(block, self.dir_csum(dir), &at)?;
            return dir::parse_entries(block, ft, &at);
        }
        if dir.is_htree() && htree::is_node(block) {
            htree::parse_node(block, self.dir_csum(dir), &at)?;
            return Ok(Vec::new());
        }
        let area = if self.csum() {
            dir::verify_leaf_tail(block, self.seed, dir.ino, dir.generation(), &at)?
        } else {
            block
        };
        dir::parse_entries(area, ft, &at)
    }

    /// Find `name` in a directory, through the hash index when it has one.
    pub fn lookup(&self, dir: &Inode, name: &[u8]) -> Result<Option<u32>> {
        // `.` and `..` live in the first block, outside the hash index: the
        // index has no leaf for them (asking it for `..` in an indexed
        // directory answered "absent", which rename took for damage).
        if dir.is_htree() && name != b"." && name != b".." {
            if let Some(found) = self.htree_lookup(dir, name)? {
                return Ok(found);
            }
        }
        let mut found = None;
        self.for_each_dir_block(dir, |_, entries| {
            found = entries.into_iter().find(|e| e.name == name).map(|e| e.ino);
            Ok(found.is_some())
        })?;
        Ok(found)
    }

    /// `Some(result)` when the index answered; `None` when the directory's
    /// hash version is unknown to this engine (then the caller scans).
    fn htree_lookup(&self, dir: &Inode, name: &[u8]) -> Result<Option<Option<u32>>> {
        let Some(leaves) = self.htree_leaves(dir, name)? else {
            return Ok(None);
        };
        let ext = self.extents(dir)?;
        for lblk in leaves {
            let block = self.dir_lblock(dir, &ext, lblk)?;
            let entries = self.parse_dir_block(dir, lblk, &block)?;
            if let Some(e) = entries.iter().find(|e| e.name == name) {
                return Ok(Some(Some(e.ino)));
            }
        }
        Ok(Some(None))
    }

    /// Block `lblk` of a directory whose extents are `ext`.
    fn dir_lblock(&self, dir: &Inode, ext: &[Extent], lblk: u32) -> Result<Vec<u8>> {
        let pblk = ext
            .iter()
            .find_map(|e| {
                let i = lblk.checked_sub(e.lblk).filter(|&i| i < e.len)?;
                e.pblk.checked_add(u64::from(i))
            })
            .ok_or_else(|| {
                Ext4Error::corrupt(
                    format!("htree index points to unmapped directory block {lblk}"),
                    Location::Inode(dir.ino),
                )
            })?;
        self.read_block(pblk, &Location::Inode(dir.ino))
    }

    /// The leaves of an indexed directory that can hold `name`: the one its
    /// hash selects, then those continuing a hash collision across a leaf
    /// split (their index entries carry the hash with the low bit set).
    /// `None` when the directory's hash version is unknown to this engine.
    pub(crate) fn htree_leaves(&self, dir: &Inode, name: &[u8]) -> Result<Option<Vec<u32>>> {
        let ext = self.extents(dir)?;
        let root_at = Location::Block {
            ino: dir.ino,
            block: 0,
        };
        let root = htree::parse_root(
            &self.dir_lblock(dir, &ext, 0)?,
            self.dir_csum(dir),
            &root_at,
        )?;
        let version = hash::effective_version(root.hash_version, self.sb.unsigned_hash());
        let Some(h) = hash::name_hash(name, version, self.sb.hash_seed()) else {
            return Ok(None);
        };
        let empty = || Ext4Error::corrupt("htree index level has no entries", root_at.clone());
        let mut level = root.entries;
        for _ in 0..root.indirect_levels {
            let lblk = htree::descend(&level, h).ok_or_else(empty)?;
            let at = Location::Block {
                ino: dir.ino,
                block: u64::from(lblk),
            };
            level = htree::parse_node(&self.dir_lblock(dir, &ext, lblk)?, self.dir_csum(dir), &at)?;
        }
        let mut rest = level
            .get(htree::covering(&level, h)..)
            .unwrap_or_default()
            .iter();
        let &(_, first) = rest.next().ok_or_else(empty)?;
        let mut out = vec![first];
        out.extend(
            rest.take_while(|&&(eh, _)| eh & !1 == h)
                .map(|&(_, lblk)| lblk),
        );
        Ok(Some(out))
    }

    /// Extended attributes of an inode (in-inode area, then EA block).
    pub fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut v = xattr::in_inode(inode.raw(), inode.extra_isize(), inode.ino)?;
        let blk = inode.file_acl();
        if blk != 0 {
            let at = Location::Block {
                ino: inode.ino,
                block: blk,
            };
            let data = self.read_block(blk, &at)?;
            v.extend(xattr::in_block(
                &data,
                blk,
                self.csum().then_some(self.seed),
                inode.ino,
            )?);
        }
        Ok(v)
    }

    /// State of the internal journal, read from its superblock.
    pub fn journal_state(&self) -> Result<JournalState> {
        let jino = self.sb.journal_inum();
        if !self.sb.has(Feature::HasJournal) || jino == 0 {
            return Ok(JournalState::None);
        }
        if self.sb.has(Feature::NeedsRecovery) {
            return Ok(JournalState::NeedsRecovery);
        }
        let j = self.inode(jino)?;
        let ext = self.extents(&j)?;
        let first = ext.first().filter(|e| e.lblk == 0).ok_or_else(|| {
            Ext4Error::corrupt("journal has no first block", Location::Inode(jino))
        })?;
        let blk = self.read_block(first.pblk, &Location::Inode(jino))?;
        if be32(&blk, 0) != JOURNAL_MAGIC {
            return Err(Ext4Error::corrupt(
                "journal superblock has a bad magic number",
                Location::Inode(jino),
            ));
        }
        Ok(if be32(&blk, 0x1C) == 0 {
            JournalState::Clean
        } else {
            JournalState::NeedsRecovery
        })
    }

    /// Every block a reader of this filesystem gives meaning to, as sorted,
    /// merged `[start, end)` block ranges: what a card must get from the
    /// image, whatever it held before; the rest is free space, which neither
    /// e2fsck nor the kernel reads.
    ///
    /// That is the blocks marked in use in the initialised block bitmaps
    /// (data, directories, extent blocks, the journal in full: a used card
    /// may hold an old journal of the same base, whose transactions carry
    /// the sequence numbers and checksum seed the new one continues, so
    /// replaying after a crash could pick them up), plus, named explicitly
    /// because a group's bitmap may be uninitialised (`BLOCK_UNINIT`): every
    /// superblock and descriptor copy, every group's bitmaps and inode table.
    pub fn used_block_ranges(&self) -> Result<Vec<(u64, u64)>> {
        let total = self.sb.blocks_count();
        let mut meta: Vec<(u64, u64)> = Vec::new();
        // The superblock sits at byte 1024: in block 0 or, with 1 KiB
        // blocks, block 1 (first_data_block).
        let sb_end = u64::from(self.sb.first_data_block()).saturating_add(1);
        meta.push((0, sb_end.min(total)));
        let itable = group::itable_blocks(&self.sb)
            .ok_or_else(|| overflow("the inode table", Location::Superblock))?;
        for g in 0..self.sb.group_count() {
            let at = Location::Bitmap { group: g };
            let first = group::first_block(&self.sb, g)
                .ok_or_else(|| overflow("the group's first block", at.clone()))?;
            let copies = group::super_and_gdt_blocks(&self.sb, g)
                .ok_or_else(|| overflow("the descriptor table", at.clone()))?;
            meta.push((first, first.saturating_add(copies)));
            for b in [self.groups.block_bitmap(g), self.groups.inode_bitmap(g)] {
                meta.push((b, b.saturating_add(1)));
            }
            let t = self.groups.inode_table(g);
            meta.push((t, t.saturating_add(itable)));
        }
        let mut all = self.bitmap_used_ranges()?;
        all.extend(
            meta.into_iter()
                .map(|(a, b)| (a.min(total), b.min(total)))
                .filter(|(a, b)| a < b),
        );
        Ok(crate::bytes::merge_ranges(all))
    }

    /// Blocks marked in use in the block bitmaps, as `[start, end)` ranges.
    /// Groups whose bitmap was never initialised are skipped: they hold only
    /// metadata, which [`Ext4::used_block_ranges`] adds by location.
    fn bitmap_used_ranges(&self) -> Result<Vec<(u64, u64)>> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let bpg = u64::from(self.sb.blocks_per_group());
        let total = self.sb.blocks_count();
        for g in 0..self.sb.group_count() {
            if self.groups.flags(g) & group::BG_BLOCK_UNINIT != 0 {
                continue;
            }
            let at = Location::Bitmap { group: g };
            let first = u64::from(g)
                .checked_mul(bpg)
                .and_then(|o| o.checked_add(u64::from(self.sb.first_data_block())))
                .ok_or_else(|| overflow("the group's first block", at.clone()))?;
            let end = total.min(first.saturating_add(bpg));
            let map = self.read_block(self.groups.block_bitmap(g), &at)?;
            let bits = map
                .iter()
                .flat_map(|&byte| (0..8).map(move |k| byte & (1 << k) != 0));
            for (b, used) in (first..end).zip(bits) {
                if !used {
                    continue;
                }
                // b < total, so b + 1 does not saturate.
                let next = b.saturating_add(1);
                match out.last_mut() {
                    Some(last) if last.1 == b => last.1 = next,
                    _ => out.push((b, next)),
                }
            }
        }
        Ok(out)
    }

    /// Resolve an absolute path inside this filesystem (symlinks confined to it).
    pub fn resolve(&self, p: &str, follow_last: bool) -> Result<Inode> {
        match path::resolve(self, p, follow_last) {
            Ok((ino, _)) => self.live_inode(ino),
            Err(e) => Err(resolve_error(e)),
        }
    }
}

/// Map a generic resolution failure to this engine's error.
pub(crate) fn resolve_error(e: ResolveError<Ext4Error>) -> Ext4Error {
    e.into_fs()
}

impl<D: ReadAt> Walk for Ext4<D> {
    type Node = u32;
    type Error = Ext4Error;

    fn root(&self) -> Result<u32> {
        Ok(ROOT_INO)
    }

    fn child(&self, _: &str, dir: &u32, name: &str) -> Result<Option<u32>> {
        let d = self.live_inode(*dir)?;
        self.lookup(&d, name.as_bytes())
    }

    fn kind(&self, node: &u32) -> Result<Kind> {
        let i = self.live_inode(*node)?;
        Ok(match i.file_type() {
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink(self.readlink(&i)?),
            _ => Kind::Other,
        })
    }
}
