//! Block and inode allocation: bitmaps loaded on first use (rebuilt for
//! never-initialised groups), kept in memory, and written back with their
//! checksums, group counts and superblock totals when the transaction ends.

use std::collections::BTreeMap;

use super::{raw, Writer};
use crate::ext4::checksum;
use crate::ext4::error::{Ext4Error, Location, Result};
use crate::ext4::group::{self, BG_BLOCK_UNINIT, BG_INODE_UNINIT, BG_INODE_ZEROED};
use crate::image::ReadAt;

/// In-memory bitmaps of the groups touched so far.
#[derive(Default)]
pub(super) struct Bitmaps {
    /// group -> block bitmap (`None`: the group cannot be used, see `load_block_bitmap`)
    block: BTreeMap<u32, Option<Vec<u8>>>,
    inode: BTreeMap<u32, Vec<u8>>,
    dirty_block: std::collections::BTreeSet<u32>,
    dirty_inode: std::collections::BTreeSet<u32>,
}

fn bit_out_of_range(i: usize, map: &[u8], at: &Location) -> Ext4Error {
    Ext4Error::corrupt(
        format!("bit {i} lies outside a {}-byte bitmap", map.len()),
        at.clone(),
    )
}

fn test_bit(map: &[u8], i: usize, at: &Location) -> Result<bool> {
    map.get(i / 8)
        .map(|b| b & (1 << (i % 8)) != 0)
        .ok_or_else(|| bit_out_of_range(i, map, at))
}
fn set_bit(map: &mut [u8], i: usize, at: &Location) -> Result<()> {
    let e = bit_out_of_range(i, map, at);
    *map.get_mut(i / 8).ok_or(e)? |= 1 << (i % 8);
    Ok(())
}
fn clear_bit(map: &mut [u8], i: usize, at: &Location) -> Result<()> {
    let e = bit_out_of_range(i, map, at);
    *map.get_mut(i / 8).ok_or(e)? &= !(1 << (i % 8));
    Ok(())
}

/// Clear bits among the first `n` of a bitmap; an error if it has fewer.
fn count_free(map: &[u8], n: usize, at: &Location) -> Result<u32> {
    if map.len().checked_mul(8).is_none_or(|bits| bits < n) {
        return Err(bit_out_of_range(n.saturating_sub(1), map, at));
    }
    let free = (0..n)
        .filter(|&i| map.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) == 0))
        .count();
    raw::narrow(free, "free count", at)
}

/// Take up to `want` clear bits of `map[..n]`, lowest first, setting them;
/// returns the runs taken as (first bit, length).
fn take_free(map: &mut [u8], n: usize, want: u64, at: &Location) -> Result<Vec<(usize, u32)>> {
    let step = |i: usize, by: usize| {
        i.checked_add(by)
            .ok_or_else(|| raw::overflow("bitmap position", at))
    };
    let mut runs = Vec::new();
    let mut left = want;
    let mut i = 0usize;
    while i < n && left > 0 {
        // Skip full bytes whole.
        if i.is_multiple_of(8) && map.get(i / 8) == Some(&0xFF) {
            i = step(i, 8)?;
            continue;
        }
        if test_bit(map, i, at)? {
            i = step(i, 1)?;
            continue;
        }
        let start = i;
        let mut len = 0u32;
        while i < n && u64::from(len) < left && !test_bit(map, i, at)? {
            set_bit(map, i, at)?;
            i = step(i, 1)?;
            len = len
                .checked_add(1)
                .ok_or_else(|| raw::overflow("run length", at))?;
        }
        left = left
            .checked_sub(u64::from(len))
            .ok_or_else(|| raw::overflow("blocks left to allocate", at))?;
        runs.push((start, len));
    }
    Ok(runs)
}

/// Groups in the order an allocation near group `first` visits them:
/// `first` to the last, then from 0 (wrapping without arithmetic).
fn groups_from(first: u32, ngroups: u32) -> impl Iterator<Item = u32> {
    let first = first.min(ngroups);
    (first..ngroups).chain(0..first)
}

impl<D: ReadAt> Writer<D> {
    fn bpg(&self) -> u32 {
        self.fs.sb.blocks_per_group()
    }
    fn ipg(&self) -> u32 {
        self.fs.sb.inodes_per_group()
    }
    fn group_first_block(&self, g: u32) -> Result<u64> {
        group::first_block(&self.fs.sb, g)
            .ok_or_else(|| raw::overflow("first block of the group", &Location::GroupDesc(g)))
    }
    /// Blocks in group `g` (the last group may be short).
    fn blocks_in_group(&self, g: u32) -> Result<u32> {
        let end = self.fs.sb.blocks_count();
        let start = self.group_first_block(g)?;
        let left = end.checked_sub(start).ok_or_else(|| {
            Ext4Error::corrupt(
                format!("group {g} starts at block {start}, past the end of the filesystem"),
                Location::Superblock,
            )
        })?;
        raw::narrow(
            left.min(u64::from(self.bpg())),
            "blocks in group",
            &Location::GroupDesc(g),
        )
    }
    fn itable_blocks(&self) -> Result<u64> {
        group::itable_blocks(&self.fs.sb)
            .ok_or_else(|| raw::overflow("inode table size", &Location::Superblock))
    }
    /// Bits in a one-block bitmap.
    fn bitmap_bits(&self, at: &Location) -> Result<usize> {
        self.fs
            .block_size()
            .checked_mul(8)
            .ok_or_else(|| raw::overflow("bitmap size", at))
    }

    /// The block bitmap of a never-initialised group, computed the way the
    /// kernel does (`ext4_init_block_bitmap`): superblock backup and GDT,
    /// then every group's metadata that lies inside this group.
    fn rebuild_block_bitmap(&self, g: u32) -> Result<Vec<u8>> {
        let at = Location::Bitmap { group: g };
        let bs = self.fs.block_size();
        let mut map = vec![0u8; bs];
        let first = self.group_first_block(g)?;
        let n = self.blocks_in_group(g)? as usize;
        // Superblock backup, descriptors and reserved descriptors lead the group.
        let meta = group::super_and_gdt_blocks(&self.fs.sb, g)
            .and_then(|m| usize::try_from(m).ok())
            .ok_or_else(|| raw::overflow("group metadata size", &at))?;
        for i in 0..meta.min(n) {
            set_bit(&mut map, i, &at)?;
        }
        // Bit of block `b` when it lies inside this group.
        let inside = |b: u64| {
            b.checked_sub(first)
                .filter(|&d| d < n as u64)
                .and_then(|d| usize::try_from(d).ok())
        };
        let itable_blocks = self.itable_blocks()?;
        for h in 0..self.fs.sb.group_count() {
            for b in [
                self.fs.groups.block_bitmap(h),
                self.fs.groups.inode_bitmap(h),
            ] {
                if let Some(i) = inside(b) {
                    set_bit(&mut map, i, &at)?;
                }
            }
            let t = self.fs.groups.inode_table(h);
            let t_end = t
                .checked_add(itable_blocks)
                .ok_or_else(|| raw::overflow("inode table end", &Location::GroupDesc(h)))?;
            for b in t..t_end {
                if let Some(i) = inside(b) {
                    set_bit(&mut map, i, &at)?;
                }
            }
        }
        for i in n..self.bitmap_bits(&at)? {
            set_bit(&mut map, i, &at)?;
        }
        Ok(map)
    }

    /// Load (once) the block bitmap of `g`; `None` when the group is
    /// uninitialised and its rebuilt bitmap disagrees with the descriptor's
    /// free count, in which case the group is simply not used.
    fn load_block_bitmap(&mut self, g: u32) -> Result<Option<&mut Vec<u8>>> {
        if !self.bm.block.contains_key(&g) {
            let at = Location::Bitmap { group: g };
            let n = self.blocks_in_group(g)? as usize;
            let loaded = if self.fs.groups.flags(g) & BG_BLOCK_UNINIT != 0 {
                let map = self.rebuild_block_bitmap(g)?;
                (count_free(&map, n, &at)? == self.fs.groups.free_blocks(g)).then_some(map)
            } else {
                let map = self.fs.read_block(self.fs.groups.block_bitmap(g), &at)?;
                if self.fs.csum() {
                    let bytes = (self.bpg() / 8) as usize;
                    let want = self.fs.groups.block_bitmap_csum(g);
                    let got = checksum::bitmap(
                        self.fs.seed,
                        raw::field(&map, 0, bytes, "block bitmap", &at)?,
                    ) & self.fs.groups.bitmap_csum_mask();
                    if want != got {
                        return Err(Ext4Error::corrupt(
                            format!("block bitmap checksum is {want:#x}, should be {got:#x}"),
                            at,
                        ));
                    }
                }
                if count_free(&map, n, &at)? != self.fs.groups.free_blocks(g) {
                    return Err(Ext4Error::corrupt(
                        "free block count disagrees with the block bitmap",
                        Location::GroupDesc(g),
                    ));
                }
                Some(map)
            };
            self.bm.block.insert(g, loaded);
        }
        Ok(self.bm.block.get_mut(&g).and_then(|m| m.as_mut()))
    }

    fn load_inode_bitmap(&mut self, g: u32) -> Result<&mut Vec<u8>> {
        if !self.bm.inode.contains_key(&g) {
            let at = Location::Bitmap { group: g };
            let bs = self.fs.block_size();
            let ipg = self.ipg() as usize;
            let map = if self.fs.groups.flags(g) & BG_INODE_UNINIT != 0 {
                let mut m = vec![0u8; bs];
                for i in ipg..self.bitmap_bits(&at)? {
                    set_bit(&mut m, i, &at)?;
                }
                m
            } else {
                let m = self.fs.read_block(self.fs.groups.inode_bitmap(g), &at)?;
                if self.fs.csum() {
                    let want = self.fs.groups.inode_bitmap_csum(g);
                    let got = checksum::bitmap(
                        self.fs.seed,
                        raw::field(&m, 0, ipg / 8, "inode bitmap", &at)?,
                    ) & self.fs.groups.bitmap_csum_mask();
                    if want != got {
                        return Err(Ext4Error::corrupt(
                            format!("inode bitmap checksum is {want:#x}, should be {got:#x}"),
                            at,
                        ));
                    }
                }
                if count_free(&m, ipg, &at)? != self.fs.groups.free_inodes(g) {
                    return Err(Ext4Error::corrupt(
                        "free inode count disagrees with the inode bitmap",
                        Location::GroupDesc(g),
                    ));
                }
                m
            };
            self.bm.inode.insert(g, map);
        }
        Ok(self.bm.inode.get_mut(&g).expect("just loaded"))
    }

    /// Blocks a new file may still take, keeping the root-reserved blocks free
    /// so the system can boot and log.
    pub(super) fn available_blocks(&self) -> u64 {
        let free: u64 = (0..self.fs.sb.group_count())
            .map(|g| u64::from(self.fs.groups.free_blocks(g)))
            .sum();
        free.saturating_sub(self.fs.sb.reserved_blocks_count())
    }

    /// Allocate `count` blocks, as few runs as possible, starting near
    /// `goal` (a block number). Initialised groups are used before groups
    /// whose bitmap would have to be rebuilt.
    pub(super) fn alloc_blocks(&mut self, goal: u64, count: u64) -> Result<Vec<(u64, u32)>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        if count > self.available_blocks() {
            return Err(Ext4Error::NoSpace {
                what: format!(
                    "{count} blocks needed, {} available (not counting {} blocks reserved for root)",
                    self.available_blocks(),
                    self.fs.sb.reserved_blocks_count()
                ),
            });
        }
        let ngroups = self.fs.sb.group_count();
        // The goal is a hint: one before the first data block counts as
        // group 0, one past the last group as the last group.
        let last = ngroups
            .checked_sub(1)
            .ok_or_else(|| Ext4Error::corrupt("no block groups", Location::Superblock))?;
        let goal_group = goal
            .saturating_sub(u64::from(self.fs.sb.first_data_block()))
            .checked_div(u64::from(self.bpg()))
            .ok_or_else(|| Ext4Error::corrupt("zero blocks per group", Location::Superblock))?;
        let goal_group = u32::try_from(goal_group).map_or(last, |g| g.min(last));
        let mut runs: Vec<(u64, u32)> = Vec::new();
        let mut left = count;
        for pass in 0..2 {
            for g in groups_from(goal_group, ngroups) {
                if left == 0 {
                    break;
                }
                let uninit = self.fs.groups.flags(g) & BG_BLOCK_UNINIT != 0;
                if (pass == 0) == uninit || self.fs.groups.free_blocks(g) == 0 {
                    continue;
                }
                let at = Location::Bitmap { group: g };
                let n = self.blocks_in_group(g)? as usize;
                let first = self.group_first_block(g)?;
                let Some(map) = self.load_block_bitmap(g)? else {
                    continue;
                };
                let mut taken = 0u32;
                for (start, len) in take_free(map, n, left, &at)? {
                    taken = taken
                        .checked_add(len)
                        .ok_or_else(|| raw::overflow("blocks taken", &at))?;
                    left = left
                        .checked_sub(u64::from(len))
                        .ok_or_else(|| raw::overflow("blocks left to allocate", &at))?;
                    let pblk = first
                        .checked_add(start as u64)
                        .ok_or_else(|| raw::overflow("allocated block", &at))?;
                    // Extend the previous run when this one follows it
                    // (and the sum still fits a run's length).
                    match runs.last_mut() {
                        Some((s, l))
                            if s.checked_add(u64::from(*l)) == Some(pblk)
                                && l.checked_add(len).is_some() =>
                        {
                            *l = l
                                .checked_add(len)
                                .ok_or_else(|| raw::overflow("run length", &at))?;
                        }
                        _ => runs.push((pblk, len)),
                    }
                }
                if taken > 0 {
                    self.bm.dirty_block.insert(g);
                    let free = self
                        .fs
                        .groups
                        .free_blocks(g)
                        .checked_sub(taken)
                        .ok_or_else(|| {
                            Ext4Error::corrupt(
                                "more blocks taken than the group counts free",
                                Location::GroupDesc(g),
                            )
                        })?;
                    self.fs.groups.set_free_blocks(g, free);
                }
            }
        }
        if left > 0 {
            // Only reachable when uninitialised groups could not be used.
            let got: u64 = runs.iter().map(|r| u64::from(r.1)).sum();
            return Err(Ext4Error::NoSpace {
                what: format!("{count} blocks needed, {got} could be allocated"),
            });
        }
        Ok(runs)
    }

    /// Return blocks to the free pool.
    pub(super) fn free_blocks(&mut self, start: u64, len: u64) -> Result<()> {
        let bpg = u64::from(self.bpg());
        let fdb = u64::from(self.fs.sb.first_data_block());
        let bs = self.fs.block_size() as u64;
        let out_of_range =
            |b: u64| Ext4Error::corrupt(format!("block {b} out of range"), Location::Superblock);
        let stop = start.checked_add(len).ok_or_else(|| out_of_range(start))?;
        let mut b = start;
        while b < stop {
            let g = b
                .checked_sub(fdb)
                .and_then(|r| r.checked_div(bpg))
                .and_then(|g| u32::try_from(g).ok())
                .ok_or_else(|| out_of_range(b))?;
            let at = Location::Bitmap { group: g };
            let first = self.group_first_block(g)?;
            let end = first
                .checked_add(bpg)
                .ok_or_else(|| out_of_range(b))?
                .min(stop);
            let Some(map) = self.load_block_bitmap(g)? else {
                return Err(Ext4Error::corrupt(
                    format!("block {b} is in use but its group has no usable bitmap"),
                    Location::GroupDesc(g),
                ));
            };
            for x in b..end {
                let i = x
                    .checked_sub(first)
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| out_of_range(x))?;
                if !test_bit(map, i, &at)? {
                    return Err(Ext4Error::corrupt(
                        format!("block {x} is in use by a file but marked free"),
                        at,
                    ));
                }
                clear_bit(map, i, &at)?;
            }
            // b < end <= first + bpg, so the count fits a group's u32.
            let n = end.checked_sub(b).ok_or_else(|| out_of_range(b))?;
            let freed: u32 = raw::narrow(n, "blocks freed", &at)?;
            self.bm.dirty_block.insert(g);
            let free = self
                .fs
                .groups
                .free_blocks(g)
                .checked_add(freed)
                .ok_or_else(|| raw::overflow("free block count", &Location::GroupDesc(g)))?;
            self.fs.groups.set_free_blocks(g, free);
            let (Some(off), Some(bytes)) = (b.checked_mul(bs), n.checked_mul(bs)) else {
                return Err(out_of_range(b));
            };
            self.fs.dev.discard(off, bytes);
            b = end;
        }
        Ok(())
    }

    /// Group and index in it of inode `ino` (which is not 0).
    fn inode_group(&self, ino: u32) -> Result<(u32, u32)> {
        let i = ino
            .checked_sub(1)
            .ok_or_else(|| Ext4Error::corrupt("inode number 0", Location::Inode(ino)))?;
        match (i.checked_div(self.ipg()), i.checked_rem(self.ipg())) {
            (Some(g), Some(idx)) => Ok((g, idx)),
            _ => Err(Ext4Error::corrupt(
                "zero inodes per group",
                Location::Superblock,
            )),
        }
    }

    /// Inode number of slot `idx` of group `g`.
    fn inode_number(&self, g: u32, idx: u32) -> Result<u32> {
        g.checked_mul(self.ipg())
            .and_then(|n| n.checked_add(idx))
            .and_then(|n| n.checked_add(1))
            .ok_or_else(|| raw::overflow("inode number", &Location::GroupDesc(g)))
    }

    /// Allocate an inode, near the parent's group. Lowers the group's
    /// unused-inode watermark and zeroes the slots it uncovers.
    pub(super) fn alloc_inode(&mut self, parent: u32, is_dir: bool) -> Result<u32> {
        let ipg = self.ipg();
        let ngroups = self.fs.sb.group_count();
        let (pg, _) = self.inode_group(parent)?;
        let first_ino = self.fs.sb.first_ino();
        for g in groups_from(pg, ngroups) {
            let gat = Location::GroupDesc(g);
            if self.fs.groups.free_inodes(g) == 0 {
                continue;
            }
            let start = if g == 0 {
                first_ino
                    .checked_sub(1)
                    .ok_or_else(|| Ext4Error::corrupt("first inode is 0", Location::Superblock))?
                    as usize
            } else {
                0
            };
            let at = Location::Bitmap { group: g };
            let map = self.load_inode_bitmap(g)?;
            let mut found = None;
            for i in start..ipg as usize {
                if !test_bit(map, i, &at)? {
                    found = Some(i);
                    break;
                }
            }
            let Some(idx) = found else {
                continue;
            };
            set_bit(map, idx, &at)?;
            self.bm.dirty_inode.insert(g);
            let idx: u32 = raw::narrow(idx, "inode index", &at)?;
            let ino = self.inode_number(g, idx)?;
            let unused = self.fs.groups.itable_unused(g);
            // A damaged descriptor can claim more unused slots than the
            // group has; that used to wrap (or panic) here.
            let used_end = ipg.checked_sub(unused).ok_or_else(|| {
                Ext4Error::corrupt(
                    format!("{unused} unused inodes in a group of {ipg}"),
                    gat.clone(),
                )
            })?;
            if idx >= used_end {
                // Slots between the old watermark and this one were never
                // initialised unless the table was zeroed at mkfs time.
                if self.fs.groups.flags(g) & BG_INODE_ZEROED == 0 {
                    for j in used_end..idx {
                        let zero = vec![0u8; usize::from(self.fs.sb.inode_size())];
                        let off = self.inode_offset(self.inode_number(g, j)?)?;
                        self.fs.dev.stage(&zero, off)?;
                    }
                }
                // idx < ipg, so at least 0 slots stay unused.
                let left = ipg
                    .checked_sub(idx)
                    .and_then(|l| l.checked_sub(1))
                    .ok_or_else(|| raw::overflow("unused inodes", &gat))?;
                self.fs.groups.set_itable_unused(g, left);
            }
            let flags = self.fs.groups.flags(g) & !BG_INODE_UNINIT;
            self.fs.groups.set_flags(g, flags);
            // Not 0: checked at the top of the loop.
            let fi = self
                .fs
                .groups
                .free_inodes(g)
                .checked_sub(1)
                .ok_or_else(|| raw::overflow("free inode count", &gat))?;
            self.fs.groups.set_free_inodes(g, fi);
            if is_dir {
                let d = self
                    .fs
                    .groups
                    .used_dirs(g)
                    .checked_add(1)
                    .ok_or_else(|| raw::overflow("used directory count", &gat))?;
                self.fs.groups.set_used_dirs(g, d);
            }
            return Ok(ino);
        }
        Err(Ext4Error::NoSpace {
            what: "no free inodes".into(),
        })
    }

    /// Release an inode number and zero its record (an all-zero record
    /// is valid under metadata_csum).
    pub(super) fn free_inode(&mut self, ino: u32, is_dir: bool) -> Result<()> {
        let (g, idx) = self.inode_group(ino)?;
        let at = Location::Bitmap { group: g };
        let idx = idx as usize;
        let map = self.load_inode_bitmap(g)?;
        if !test_bit(map, idx, &at)? {
            return Err(Ext4Error::corrupt(
                "inode in use but marked free in the bitmap",
                Location::Inode(ino),
            ));
        }
        clear_bit(map, idx, &at)?;
        self.bm.dirty_inode.insert(g);
        let fi = self
            .fs
            .groups
            .free_inodes(g)
            .checked_add(1)
            .ok_or_else(|| raw::overflow("free inode count", &Location::GroupDesc(g)))?;
        self.fs.groups.set_free_inodes(g, fi);
        if is_dir {
            // A damaged count of 0 stays 0 rather than wrapping.
            let d = self.fs.groups.used_dirs(g).saturating_sub(1);
            self.fs.groups.set_used_dirs(g, d);
        }
        let zero = vec![0u8; usize::from(self.fs.sb.inode_size())];
        let off = self.inode_offset(ino)?;
        self.fs.dev.stage(&zero, off)?;
        Ok(())
    }

    /// Write dirty bitmaps, every group descriptor and the superblock.
    pub(super) fn flush_metadata(&mut self) -> Result<()> {
        let bs = self.fs.block_size() as u64;
        let mask = self.fs.groups.bitmap_csum_mask();
        let byte_offset = |block: u64, at: &Location| {
            block
                .checked_mul(bs)
                .ok_or_else(|| raw::overflow(&format!("offset of block {block}"), at))
        };
        for g in std::mem::take(&mut self.bm.dirty_block) {
            let Some(Some(map)) = self.bm.block.get(&g) else {
                continue;
            };
            let at = Location::Bitmap { group: g };
            let bytes = (self.bpg() / 8) as usize;
            let c = checksum::bitmap(
                self.fs.seed,
                raw::field(map, 0, bytes, "block bitmap", &at)?,
            ) & mask;
            let off = byte_offset(self.fs.groups.block_bitmap(g), &at)?;
            self.fs.dev.stage(map, off)?;
            self.fs.groups.set_block_bitmap_csum(g, c);
            let flags = self.fs.groups.flags(g) & !BG_BLOCK_UNINIT;
            self.fs.groups.set_flags(g, flags);
        }
        for g in std::mem::take(&mut self.bm.dirty_inode) {
            let at = Location::Bitmap { group: g };
            // Dirty groups were loaded first.
            let Some(map) = self.bm.inode.get(&g) else {
                continue;
            };
            let bytes = (self.ipg() / 8) as usize;
            let c = checksum::bitmap(
                self.fs.seed,
                raw::field(map, 0, bytes, "inode bitmap", &at)?,
            ) & mask;
            let off = byte_offset(self.fs.groups.inode_bitmap(g), &at)?;
            self.fs.dev.stage(map, off)?;
            self.fs.groups.set_inode_bitmap_csum(g, c);
        }
        let mut free_blocks = 0u64;
        let mut free_inodes = 0u32;
        for g in 0..self.fs.sb.group_count() {
            let gat = Location::GroupDesc(g);
            free_blocks = free_blocks
                .checked_add(u64::from(self.fs.groups.free_blocks(g)))
                .ok_or_else(|| raw::overflow("free block total", &gat))?;
            free_inodes = free_inodes
                .checked_add(self.fs.groups.free_inodes(g))
                .ok_or_else(|| raw::overflow("free inode total", &gat))?;
            if self.fs.csum() {
                self.fs.groups.update_checksum(self.fs.seed, g);
            }
        }
        let sat = Location::Superblock;
        let gdt_block = u64::from(self.fs.sb.first_data_block())
            .checked_add(1)
            .ok_or_else(|| raw::overflow("descriptor table block", &sat))?;
        let gdt = byte_offset(gdt_block, &sat)?;
        let len = self
            .fs
            .sb
            .desc_size()
            .checked_mul(self.fs.sb.group_count() as usize)
            .ok_or_else(|| raw::overflow("descriptor table size", &sat))?;
        let raw = raw::field(self.fs.groups.raw(), 0, len, "descriptor table", &sat)?.to_vec();
        self.fs.dev.stage(&raw, gdt)?;
        self.fs.sb.set_free_blocks_count(free_blocks);
        self.fs.sb.set_free_inodes_count(free_inodes);
        if self.fs.csum() {
            self.fs.sb.update_checksum();
        }
        let raw = self.fs.sb.raw().to_vec();
        self.fs
            .dev
            .stage(&raw, crate::ext4::superblock::SUPERBLOCK_OFFSET)?;
        Ok(())
    }
}
