//! Offline edits of an unmounted ext4 filesystem.
//!
//! Every write lands in a copy-on-write stage ([`Cow`]) over the partition;
//! reads see the staged state. Bitmaps, group descriptors and the
//! superblock are kept in memory and written once, by [`Writer::finish`].
//! The caller commits the returned stage only when the whole transaction
//! succeeded, so a failure anywhere leaves the image byte-identical.
//!
//! Paths are absolute inside this filesystem; symlinks in them resolve
//! inside it. The final component is not followed (lstat semantics) except
//! by `chmod`, as chmod(1) does.

mod alloc;
mod checks;
mod dirent;
mod raw;
mod tree;

use std::path::PathBuf;
use std::sync::Arc;

use super::error::{Ext4Error, Location, Result};
use super::inode::{FileType, Inode, EXT4_EXTENTS_FL, ROOT_INO, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use super::{resolve_error, Ext4};
use crate::image::{Cow, FileRange, ReadAt};
use crate::path::{self, PathError};

/// Link count that means "many" for directories (dir_nlink).
const LINK_MAX: u16 = 65000;

/// What a new or rewritten file holds.
#[derive(Debug, Clone)]
pub enum Content {
    Bytes(Vec<u8>),
    /// A host file, streamed into the image at commit (never held in memory).
    HostFile {
        path: PathBuf,
        len: u64,
    },
}

impl Content {
    fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::HostFile { len, .. } => *len,
        }
    }
}

/// Permission bits (including setuid, setgid, sticky) and owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
}

impl Meta {
    pub const fn root(mode: u16) -> Self {
        Meta {
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

pub struct Writer<D: ReadAt> {
    fs: Ext4<Cow<D>>,
    bm: alloc::Bitmaps,
    now: i64,
    rng: u64,
    /// Host files referenced by staged content, checked again at finish.
    sources: Vec<(Arc<PathBuf>, u64)>,
}

/// An entry met below a directory: (parent dir, name, inode, is a directory).
type Below = (u32, Vec<u8>, u32, bool);

fn split_path(p: &str) -> Result<(String, Vec<u8>)> {
    let norm = path::normalize(p);
    let Some((parent, name)) = norm.rsplit_once('/') else {
        return Err(Ext4Error::Invalid {
            path: p.into(),
            why: "not an absolute path".into(),
        });
    };
    if name.is_empty() {
        return Err(Ext4Error::Invalid {
            path: p.into(),
            why: "the root directory cannot be created, replaced or removed".into(),
        });
    }
    if name.len() > 255 {
        return Err(Ext4Error::Invalid {
            path: p.into(),
            why: "file name longer than 255 bytes".into(),
        });
    }
    if name.contains('\0') {
        return Err(Ext4Error::Invalid {
            path: p.into(),
            why: "file name contains a NUL byte".into(),
        });
    }
    let parent = if parent.is_empty() {
        "/".to_string()
    } else {
        parent.to_string()
    };
    Ok((parent, name.as_bytes().to_vec()))
}

/// `mv` onto an existing path of the other kind: misuse, said as such
/// (mv(1) refuses it too), with what to do instead.
pub(crate) fn replace_refused(to: &str, there: &str, moved: &str) -> Ext4Error {
    Ext4Error::Invalid {
        path: to.into(),
        why: format!(
            "is {there}, which {moved} cannot replace; remove it first or choose another name"
        ),
    }
}

/// The first block of an allocation of at least one block.
fn first_block(runs: &[(u64, u32)]) -> Result<u64> {
    runs.first().map(|r| r.0).ok_or_else(|| Ext4Error::NoSpace {
        what: "the allocator returned no block".into(),
    })
}

impl<D: ReadAt> Writer<D> {
    /// Open `dev` for writing, refusing filesystems that are not safe to
    /// edit. `now` is the timestamp of every change (seconds since the epoch).
    pub fn open(dev: D, now: i64) -> Result<Self> {
        let fs = Ext4::open(Cow::new(dev))?;
        checks::writable(&fs)?;
        // Generation numbers come from a generator seeded by the filesystem
        // (UUID and superblock times), never the clock or `now`: the same
        // base gives the same numbers, and a different SOURCE_DATE_EPOCH
        // changes only time fields.
        let uuid = fs.sb.uuid();
        let mut rng = fs.sb.newest_time().cast_unsigned() ^ 0x9E37_79B9_7F4A_7C15;
        for c in uuid.chunks(8) {
            let mut w = [0u8; 8];
            for (d, s) in w.iter_mut().zip(c) {
                *d = *s;
            }
            rng ^= u64::from_le_bytes(w);
            rng = rng.rotate_left(17).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        }
        Ok(Writer {
            fs,
            bm: alloc::Bitmaps::default(),
            now,
            rng,
            sources: Vec::new(),
        })
    }

    /// The filesystem as staged so far, for reads.
    pub fn fs(&self) -> &Ext4<Cow<D>> {
        &self.fs
    }

    /// Write bitmaps, descriptors and superblock into the stage and return
    /// it; the caller commits it to the image.
    pub fn finish(mut self) -> Result<Cow<D>> {
        self.flush_metadata()?;
        for (p, len) in &self.sources {
            let now = std::fs::metadata(p.as_ref())?.len();
            if now < *len {
                return Err(Ext4Error::Invalid {
                    path: p.display().to_string(),
                    why: format!("source file shrank from {len} to {now} bytes while staged"),
                });
            }
        }
        Ok(self.fs.dev)
    }

    fn next_generation(&mut self) -> u32 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        // The high half of the output (no fallback value: it always fits).
        let [_, _, _, _, b4, b5, b6, b7] = (z ^ (z >> 31)).to_le_bytes();
        u32::from_le_bytes([b4, b5, b6, b7])
    }

    /// Byte offset of inode `ino`'s record; an error for inode 0 or a
    /// table placed where the offset overflows.
    fn inode_offset(&self, ino: u32) -> Result<u64> {
        let at = Location::Inode(ino);
        let ipg = self.fs.sb.inodes_per_group();
        let i = ino
            .checked_sub(1)
            .ok_or_else(|| Ext4Error::corrupt("inode number 0", at.clone()))?;
        let (Some(g), Some(index)) = (i.checked_div(ipg), i.checked_rem(ipg)) else {
            return Err(Ext4Error::corrupt(
                "zero inodes per group",
                Location::Superblock,
            ));
        };
        self.fs
            .groups
            .inode_table(g)
            .checked_mul(self.fs.block_size() as u64)
            .and_then(|t| {
                t.checked_add(u64::from(index).checked_mul(u64::from(self.fs.sb.inode_size()))?)
            })
            .ok_or_else(|| raw::overflow("inode table offset", &at))
    }

    fn put_inode(&mut self, inode: &mut Inode) -> Result<()> {
        inode.update_checksum(self.fs.seed);
        let off = self.inode_offset(inode.ino)?;
        self.fs.dev.stage(inode.raw(), off)?;
        Ok(())
    }

    fn write_block(&mut self, block: u64, data: &[u8]) -> Result<()> {
        if block >= self.fs.sb.blocks_count() {
            return Err(Ext4Error::corrupt(
                format!("write to block {block}, past the end of the filesystem"),
                Location::Superblock,
            ));
        }
        let off = block
            .checked_mul(self.fs.block_size() as u64)
            .ok_or_else(|| {
                raw::overflow(&format!("offset of block {block}"), &Location::Superblock)
            })?;
        self.fs.dev.stage(data, off)?;
        Ok(())
    }

    /// A fresh in-use inode of type and permissions `mode`.
    fn new_inode(&mut self, parent: u32, mode: u16, uid: u32, gid: u32) -> Result<Inode> {
        let is_dir = mode & S_IFMT == S_IFDIR;
        let ino = self.alloc_inode(parent, is_dir)?;
        let mut i = Inode::new_zeroed(ino, usize::from(self.fs.sb.inode_size()));
        i.set_mode(mode);
        i.set_uid(uid);
        i.set_gid(gid);
        i.set_times(self.now, true);
        let g = self.next_generation();
        i.set_generation(g);
        i.set_links_count(if is_dir { 2 } else { 1 });
        if mode & S_IFMT != S_IFLNK {
            self.truncate_blocks(&mut i)?;
        }
        Ok(i)
    }

    /// Resolve the directory that holds `p` and the final name.
    fn parent_of(&self, p: &str) -> Result<(u32, Vec<u8>)> {
        let (parent, name) = split_path(p)?;
        let (ino, _) = path::resolve(&self.fs, &parent, true).map_err(resolve_error)?;
        let dir = self.fs.live_inode(ino)?;
        if !dir.is_dir() {
            return Err(Ext4Error::Path(PathError::NotADirectory(parent)));
        }
        Ok((ino, name))
    }

    fn lookup(&self, dir: u32, name: &[u8]) -> Result<Option<u32>> {
        let d = self.fs.live_inode(dir)?;
        self.fs.lookup(&d, name)
    }

    /// The inode a path names, without following a final symlink.
    fn lstat_ino(&self, p: &str) -> Result<u32> {
        let (dir, name) = self.parent_of(p)?;
        self.lookup(dir, &name)?
            .ok_or_else(|| Ext4Error::Path(PathError::NotFound(p.to_string())))
    }

    fn resolve_ino(&self, p: &str, follow: bool) -> Result<u32> {
        if path::normalize(p) == "/" {
            return Ok(ROOT_INO);
        }
        if follow {
            path::resolve(&self.fs, p, true)
                .map(|(i, _)| i)
                .map_err(resolve_error)
        } else {
            self.lstat_ino(p)
        }
    }

    fn touch_dir(&mut self, dir: u32) -> Result<()> {
        let mut d = self.fs.live_inode(dir)?;
        d.set_mtime(self.now);
        d.set_ctime(self.now);
        self.put_inode(&mut d)
    }

    fn adjust_links(&mut self, ino: u32, delta: i32) -> Result<()> {
        let mut i = self.fs.live_inode(ino)?;
        let n = i.links_count();
        let new = if i.is_dir() && n == 1 {
            1 // "many" stays "many"
        } else if delta > 0 {
            match n.checked_add(1).filter(|&m| m < LINK_MAX) {
                Some(m) => m,
                // A directory past the limit becomes "many" (dir_nlink).
                None if i.is_dir() => 1,
                None => {
                    return Err(Ext4Error::Invalid {
                        path: format!("inode {ino}"),
                        why: "too many links".into(),
                    })
                }
            }
        } else {
            // A damaged count of 0 stays 0 rather than wrapping.
            n.saturating_sub(1)
        };
        i.set_links_count(new);
        i.set_ctime(self.now);
        self.put_inode(&mut i)
    }

    /// Store content as the inode's data (its block map must be empty).
    fn store_content(&mut self, inode: &mut Inode, content: Content) -> Result<()> {
        let bs = self.fs.block_size() as u64;
        let len = content.len();
        let nblocks = len.div_ceil(bs);
        if u32::try_from(nblocks).is_err() {
            return Err(Ext4Error::Invalid {
                path: format!("inode {}", inode.ino),
                why: format!("file of {len} bytes is too large"),
            });
        }
        let at = Location::Inode(inode.ino);
        let goal = self.group_goal(inode.ino)?;
        let runs = self.alloc_blocks(goal, nblocks)?;
        // Bytes of each run, in file order.
        let run_bytes = |n: u32| {
            u64::from(n)
                .checked_mul(bs)
                .ok_or_else(|| raw::overflow("run size", &at))
        };
        match &content {
            Content::Bytes(b) => {
                let mut rest: &[u8] = b;
                for &(pblk, n) in &runs {
                    let size = usize::try_from(run_bytes(n)?)
                        .map_err(|_| raw::overflow("run size", &at))?;
                    let (head, tail) = rest.split_at(size.min(rest.len()));
                    let mut chunk = head.to_vec();
                    chunk.resize(size, 0);
                    self.write_block(pblk, &chunk)?;
                    rest = tail;
                }
            }
            Content::HostFile { path, len } => {
                let p = Arc::new(path.clone());
                self.sources.push((p.clone(), *len));
                let mut off = 0u64;
                for &(pblk, n) in &runs {
                    let size = run_bytes(n)?;
                    // The runs cover `len` rounded up to blocks, so each
                    // starts before its end.
                    let left = len
                        .checked_sub(off)
                        .ok_or_else(|| raw::overflow("file range", &at))?;
                    let r = FileRange {
                        path: p.clone(),
                        offset: off,
                        len: size.min(left),
                    };
                    let dest = pblk
                        .checked_mul(bs)
                        .ok_or_else(|| raw::overflow(&format!("offset of block {pblk}"), &at))?;
                    self.fs.dev.stage_file_range(dest, r)?;
                    off = off
                        .checked_add(size)
                        .ok_or_else(|| raw::overflow("file offset", &at))?;
                }
            }
        }
        let ext = tree::runs_to_extents(0, &runs, &Location::Inode(inode.ino))?;
        self.set_extents(inode, &ext)?;
        inode.set_size(len);
        Ok(())
    }

    /// Create or replace a regular file. An existing regular file keeps its
    /// inode (so its other hard links and its xattrs); any other non-directory
    /// at the path is replaced by a new file.
    pub fn write_file(&mut self, p: &str, content: Content, meta: Meta) -> Result<u32> {
        let (dir, name) = self.parent_of(p)?;
        if let Some(old) = self.lookup(dir, &name)? {
            let mut i = self.fs.live_inode(old)?;
            match i.file_type() {
                FileType::Regular => {
                    self.check_rewritable(&i, p)?;
                    self.truncate_blocks(&mut i)?;
                    self.store_content(&mut i, content)?;
                    i.set_mode(S_IFREG | (meta.mode & 0o7777));
                    i.set_uid(meta.uid);
                    i.set_gid(meta.gid);
                    i.set_mtime(self.now);
                    i.set_ctime(self.now);
                    self.put_inode(&mut i)?;
                    return Ok(old);
                }
                FileType::Directory => {
                    return Err(Ext4Error::Path(PathError::IsADirectory(p.into())))
                }
                _ => self.unlink(dir, &name, old)?,
            }
        }
        let mut i = self.new_inode(dir, S_IFREG | (meta.mode & 0o7777), meta.uid, meta.gid)?;
        self.store_content(&mut i, content)?;
        self.put_inode(&mut i)?;
        self.add_entry(dir, &name, i.ino, FileType::Regular.dirent_code())?;
        self.touch_dir(dir)?;
        Ok(i.ino)
    }

    fn mkdir_in(&mut self, dir: u32, name: &[u8], meta: Meta) -> Result<u32> {
        let mut i = self.new_inode(dir, S_IFDIR | (meta.mode & 0o7777), meta.uid, meta.gid)?;
        let goal = self.group_goal(i.ino)?;
        let run = self.alloc_blocks(goal, 1)?;
        let pblk = first_block(&run)?;
        let block = self.new_dir_block(&i, dir)?;
        self.write_block(pblk, &block)?;
        let ext = tree::runs_to_extents(0, &run, &Location::Inode(i.ino))?;
        self.set_extents(&mut i, &ext)?;
        i.set_size(self.fs.block_size() as u64);
        self.put_inode(&mut i)?;
        self.add_entry(dir, name, i.ino, FileType::Directory.dirent_code())?;
        self.adjust_links(dir, 1)?;
        self.touch_dir(dir)?;
        Ok(i.ino)
    }

    /// Create a directory. With `parents`, missing parents are made
    /// (0755, root) and an existing directory is not an error.
    pub fn mkdir(&mut self, p: &str, meta: Meta, parents: bool) -> Result<u32> {
        if !parents {
            let (dir, name) = self.parent_of(p)?;
            if self.lookup(dir, &name)?.is_some() {
                return Err(Ext4Error::Exists { path: p.into() });
            }
            return self.mkdir_in(dir, &name, meta);
        }
        let norm = path::normalize(p);
        let mut cur = ROOT_INO;
        let mut so_far = String::new();
        let mut comps = path::components(&norm).peekable();
        while let Some(c) = comps.next() {
            so_far.push('/');
            so_far.push_str(c);
            let last = comps.peek().is_none();
            match self.lookup(cur, c.as_bytes())? {
                Some(_) => {
                    let (ino, _) = path::resolve(&self.fs, &so_far, true).map_err(resolve_error)?;
                    if !self.fs.live_inode(ino)?.is_dir() {
                        return Err(Ext4Error::Path(PathError::NotADirectory(so_far)));
                    }
                    cur = ino;
                }
                None => {
                    let m = if last { meta } else { Meta::root(0o755) };
                    cur = self.mkdir_in(cur, c.as_bytes(), m)?;
                }
            }
        }
        Ok(cur)
    }

    /// Create a symlink, replacing an existing non-directory at the path.
    pub fn symlink(&mut self, p: &str, target: &[u8], uid: u32, gid: u32) -> Result<u32> {
        let bs = self.fs.block_size();
        if target.is_empty() || target.len() >= bs || target.contains(&0) {
            return Err(Ext4Error::Invalid {
                path: p.into(),
                why: format!(
                    "symlink target must be non-empty, shorter than {bs} bytes and without NUL"
                ),
            });
        }
        let (dir, name) = self.parent_of(p)?;
        if let Some(old) = self.lookup(dir, &name)? {
            if self.fs.live_inode(old)?.is_dir() {
                return Err(Ext4Error::Path(PathError::IsADirectory(p.into())));
            }
            self.unlink(dir, &name, old)?;
        }
        let mut i = self.new_inode(dir, S_IFLNK | 0o777, uid, gid)?;
        let at = Location::Inode(i.ino);
        if target.len() < 60 {
            let mut ib = [0u8; 60];
            raw::put(&mut ib, 0, target, "symlink target", &at)?;
            i.set_i_block(&ib);
        } else {
            let goal = self.group_goal(i.ino)?;
            let run = self.alloc_blocks(goal, 1)?;
            let pblk = first_block(&run)?;
            let mut b = vec![0u8; bs];
            raw::put(&mut b, 0, target, "symlink target", &at)?;
            self.write_block(pblk, &b)?;
            i.set_flags(i.flags() | EXT4_EXTENTS_FL);
            let ext = tree::runs_to_extents(0, &run, &Location::Inode(i.ino))?;
            self.set_extents(&mut i, &ext)?;
        }
        i.set_size(target.len() as u64);
        self.put_inode(&mut i)?;
        self.add_entry(dir, &name, i.ino, FileType::Symlink.dirent_code())?;
        self.touch_dir(dir)?;
        Ok(i.ino)
    }

    /// A new name for an existing non-directory.
    pub fn link(&mut self, existing: &str, new: &str) -> Result<()> {
        let ino = self.lstat_ino(existing)?;
        let i = self.fs.live_inode(ino)?;
        if i.is_dir() {
            return Err(Ext4Error::Path(PathError::IsADirectory(existing.into())));
        }
        let (dir, name) = self.parent_of(new)?;
        if self.lookup(dir, &name)?.is_some() {
            return Err(Ext4Error::Exists { path: new.into() });
        }
        self.adjust_links(ino, 1)?;
        self.add_entry(dir, &name, ino, i.file_type().dirent_code())?;
        self.touch_dir(dir)
    }

    /// Drop an EA block reference; free the block with its last user.
    fn release_xattr_block(&mut self, inode: &Inode) -> Result<()> {
        let blk = inode.file_acl();
        if blk == 0 {
            return Ok(());
        }
        let at = Location::Block {
            ino: inode.ino,
            block: blk,
        };
        let mut b = self.fs.read_block(blk, &at)?;
        if raw::rd32(&b, 0, "extended attribute magic", &at)? != 0xEA02_0000 {
            return Err(Ext4Error::corrupt(
                "extended attribute block has a bad magic",
                at,
            ));
        }
        let refs = raw::rd32(&b, 4, "extended attribute refcount", &at)?;
        // refs >= 2 here: free the block when this was its last user.
        let Some(left) = refs.checked_sub(1).filter(|&l| l > 0) else {
            return self.free_blocks(blk, 1);
        };
        raw::wr32(&mut b, 4, left, "extended attribute refcount", &at)?;
        let c = super::checksum::xattr_block(self.fs.seed, blk, &b);
        raw::wr32(&mut b, 0x10, c, "extended attribute checksum", &at)?;
        self.write_block(blk, &b)
    }

    /// Remove the name `name` (inode `ino`) from `dir`, freeing the inode
    /// with its last link.
    fn unlink(&mut self, dir: u32, name: &[u8], ino: u32) -> Result<()> {
        let mut i = self.fs.live_inode(ino)?;
        let is_dir = i.is_dir();
        if !is_dir && i.links_count() > 1 {
            self.remove_entry(dir, name)?;
            self.adjust_links(ino, -1)?;
            return self.touch_dir(dir);
        }
        self.check_rewritable(&i, &String::from_utf8_lossy(name))?;
        self.remove_entry(dir, name)?;
        self.truncate_blocks(&mut i)?;
        self.release_xattr_block(&i)?;
        self.free_inode(ino, is_dir)?;
        if is_dir {
            self.adjust_links(dir, -1)?;
        }
        self.touch_dir(dir)
    }

    /// Remove a file, symlink or empty directory.
    pub fn remove(&mut self, p: &str) -> Result<()> {
        let (dir, name) = self.parent_of(p)?;
        let ino = self
            .lookup(dir, &name)?
            .ok_or_else(|| Ext4Error::Path(PathError::NotFound(p.into())))?;
        let i = self.fs.live_inode(ino)?;
        if i.is_dir() && !self.dir_is_empty(&i)? {
            return Err(Ext4Error::NotEmpty { path: p.into() });
        }
        self.unlink(dir, &name, ino)
    }

    /// Every inode below directory `top` as (parent dir, name, inode,
    /// is a directory), parents before children. Iterative, each directory
    /// read once by inode, so it is linear in the entries at any depth; a
    /// directory met twice (an entry pointing back at an ancestor) is
    /// reported as corruption instead of looping.
    fn below(&self, top: u32) -> Result<Vec<Below>> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::from([top]);
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            let d = self.fs.live_inode(dir)?;
            for e in self.fs.read_dir(&d)? {
                let child = self.fs.live_inode(e.ino)?;
                let is_dir = child.is_dir();
                if is_dir {
                    if !seen.insert(e.ino) {
                        return Err(Ext4Error::corrupt(
                            format!(
                                "directory entry '{}' leads back to a directory already met (a directory cycle)",
                                crate::term::escape(&e.name_lossy())
                            ),
                            Location::Inode(dir),
                        ));
                    }
                    stack.push(e.ino);
                }
                out.push((dir, e.name, e.ino, is_dir));
            }
        }
        Ok(out)
    }

    /// Remove a path and everything under it.
    pub fn remove_tree(&mut self, p: &str) -> Result<()> {
        let (dir, name) = self.parent_of(p)?;
        let ino = self
            .lookup(dir, &name)?
            .ok_or_else(|| Ext4Error::Path(PathError::NotFound(p.into())))?;
        if self.fs.live_inode(ino)?.is_dir() {
            // Children after parents in `below`: unlink in reverse, so each
            // directory is empty when its turn comes.
            for (parent, child_name, child, _) in self.below(ino)?.into_iter().rev() {
                self.unlink(parent, &child_name, child)?;
            }
        }
        self.unlink(dir, &name, ino)
    }

    /// `ino`, and with `recursive` every inode below it.
    fn tree_inodes(&self, ino: u32, recursive: bool) -> Result<Vec<u32>> {
        let mut all = vec![ino];
        if recursive && self.fs.live_inode(ino)?.is_dir() {
            all.extend(self.below(ino)?.into_iter().map(|(_, _, i, _)| i));
        }
        Ok(all)
    }

    /// Change the owner of `p` (not following a final symlink) and, with
    /// `recursive`, of everything below it (symlinks themselves, not their
    /// targets).
    pub(crate) fn chown_tree(
        &mut self,
        p: &str,
        uid: u32,
        gid: u32,
        recursive: bool,
    ) -> Result<()> {
        for i in self.tree_inodes(self.resolve_ino(p, false)?, recursive)? {
            let mut inode = self.fs.live_inode(i)?;
            inode.set_uid(uid);
            inode.set_gid(gid);
            inode.set_ctime(self.now);
            self.put_inode(&mut inode)?;
        }
        Ok(())
    }

    /// Change permission bits of `p` (following a final symlink, as
    /// chmod(1) does) and, with `recursive`, of everything below it except
    /// symlinks (whose own mode means nothing).
    pub(crate) fn chmod_tree(&mut self, p: &str, mode: u16, recursive: bool) -> Result<()> {
        for i in self.tree_inodes(self.resolve_ino(p, true)?, recursive)? {
            let mut inode = self.fs.live_inode(i)?;
            if inode.file_type() == crate::ext4::FileType::Symlink {
                continue;
            }
            inode.set_mode((inode.mode() & S_IFMT) | (mode & 0o7777));
            inode.set_ctime(self.now);
            self.put_inode(&mut inode)?;
        }
        Ok(())
    }

    /// Move `from` to `to`. An existing non-directory at `to` is replaced,
    /// as is an empty directory when `from` is a directory.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (fdir, fname) = self.parent_of(from)?;
        let ino = self
            .lookup(fdir, &fname)?
            .ok_or_else(|| Ext4Error::Path(PathError::NotFound(from.into())))?;
        let (tdir, tname) = self.parent_of(to)?;
        if fdir == tdir && fname == tname {
            return Ok(());
        }
        let src = self.fs.live_inode(ino)?;
        let is_dir = src.is_dir();
        if is_dir {
            // Refuse to move a directory under itself.
            let mut cur = tdir;
            loop {
                if cur == ino {
                    return Err(Ext4Error::Invalid {
                        path: to.into(),
                        why: format!("cannot move {from} into itself"),
                    });
                }
                if cur == ROOT_INO {
                    break;
                }
                cur = self.lookup(cur, b"..")?.ok_or_else(|| {
                    Ext4Error::corrupt("directory has no '..'", Location::Inode(cur))
                })?;
            }
        }
        if let Some(t) = self.lookup(tdir, &tname)? {
            if t == ino {
                return Ok(());
            }
            let ti = self.fs.live_inode(t)?;
            match (is_dir, ti.is_dir()) {
                (false, true) => return Err(replace_refused(to, "a directory", "a file")),
                (true, false) => return Err(replace_refused(to, "a file", "a directory")),
                (true, true) if !self.dir_is_empty(&ti)? => {
                    return Err(Ext4Error::NotEmpty { path: to.into() })
                }
                _ => self.unlink(tdir, &tname, t)?,
            }
        }
        self.add_entry(tdir, &tname, ino, src.file_type().dirent_code())?;
        self.remove_entry(fdir, &fname)?;
        if is_dir && fdir != tdir {
            self.set_dotdot(ino, tdir)?;
            self.adjust_links(fdir, -1)?;
            self.adjust_links(tdir, 1)?;
        }
        let mut i = self.fs.live_inode(ino)?;
        i.set_ctime(self.now);
        self.put_inode(&mut i)?;
        self.touch_dir(fdir)?;
        if tdir != fdir {
            self.touch_dir(tdir)?;
        }
        Ok(())
    }

    /// Change permission bits (follows a final symlink, as chmod(1) does).
    pub fn chmod(&mut self, p: &str, mode: u16) -> Result<()> {
        self.chmod_tree(p, mode, false)
    }

    /// Change owner and group of the path itself (a symlink is not followed).
    pub fn chown(&mut self, p: &str, uid: u32, gid: u32) -> Result<()> {
        self.chown_tree(p, uid, gid, false)
    }
}
