//! Block and inode allocation: bitmaps loaded on first use (rebuilt for
//! never-initialised groups), kept in memory, and written back with their
//! checksums, group counts and superblock totals when the transaction ends.

use std::collections::BTreeMap;

use super::Writer;
use crate::ext4::checksum;
use crate::ext4::error::{Ext4Error, Location, Result};
use crate::ext4::group::{BG_BLOCK_UNINIT, BG_INODE_UNINIT, BG_INODE_ZEROED};
use crate::ext4::superblock::feature;
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

fn test_bit(map: &[u8], i: usize) -> bool {
    map[i / 8] & (1 << (i % 8)) != 0
}
fn set_bit(map: &mut [u8], i: usize) {
    map[i / 8] |= 1 << (i % 8);
}
fn clear_bit(map: &mut [u8], i: usize) {
    map[i / 8] &= !(1 << (i % 8));
}

/// Whether group `g` carries a superblock backup (sparse_super: 0, 1 and
/// powers of 3, 5 and 7).
fn has_super(g: u32, sparse: bool) -> bool {
    if !sparse || g <= 1 {
        return true;
    }
    for base in [3u32, 5, 7] {
        let mut n = base;
        while n < g {
            match n.checked_mul(base) {
                Some(m) => n = m,
                None => break,
            }
        }
        if n == g {
            return true;
        }
    }
    false
}

impl<D: ReadAt> Writer<D> {
    fn bpg(&self) -> u32 {
        self.fs.sb.blocks_per_group()
    }
    fn ipg(&self) -> u32 {
        self.fs.sb.inodes_per_group()
    }
    fn group_first_block(&self, g: u32) -> u64 {
        u64::from(self.fs.sb.first_data_block()) + u64::from(g) * u64::from(self.bpg())
    }
    /// Blocks in group `g` (the last group may be short).
    fn blocks_in_group(&self, g: u32) -> u32 {
        let end = self.fs.sb.blocks_count();
        let start = self.group_first_block(g);
        u32::try_from((end - start).min(u64::from(self.bpg()))).unwrap_or(self.bpg())
    }
    fn itable_blocks(&self) -> u64 {
        let bs = self.fs.block_size() as u64;
        (u64::from(self.ipg()) * u64::from(self.fs.sb.inode_size())).div_ceil(bs)
    }

    /// The block bitmap of a never-initialised group, computed the way the
    /// kernel does (`ext4_init_block_bitmap`): superblock backup and GDT,
    /// then every group's metadata that lies inside this group.
    fn rebuild_block_bitmap(&self, g: u32) -> Vec<u8> {
        let bs = self.fs.block_size();
        let mut map = vec![0u8; bs];
        let first = self.group_first_block(g);
        let n = self.blocks_in_group(g) as usize;
        let sparse = self.fs.sb.ro_compat() & feature::RO_COMPAT_SPARSE_SUPER != 0;
        if has_super(g, sparse) {
            let gdt_blocks =
                (self.fs.sb.group_count() as usize * self.fs.sb.desc_size()).div_ceil(bs);
            let meta = 1 + gdt_blocks + usize::from(self.fs.sb.reserved_gdt_blocks());
            for i in 0..meta.min(n) {
                set_bit(&mut map, i);
            }
        }
        let inside = |b: u64| {
            (b >= first && b < first + n as u64).then(|| usize::try_from(b - first).unwrap_or(0))
        };
        for h in 0..self.fs.sb.group_count() {
            for b in [
                self.fs.groups.block_bitmap(h),
                self.fs.groups.inode_bitmap(h),
            ] {
                if let Some(i) = inside(b) {
                    set_bit(&mut map, i);
                }
            }
            let t = self.fs.groups.inode_table(h);
            for b in t..t + self.itable_blocks() {
                if let Some(i) = inside(b) {
                    set_bit(&mut map, i);
                }
            }
        }
        for i in n..bs * 8 {
            set_bit(&mut map, i);
        }
        map
    }

    fn count_free(map: &[u8], n: usize) -> u32 {
        let mut free = 0u32;
        for i in 0..n {
            if !test_bit(map, i) {
                free += 1;
            }
        }
        free
    }

    /// Load (once) the block bitmap of `g`; `None` when the group is
    /// uninitialised and its rebuilt bitmap disagrees with the descriptor's
    /// free count, in which case the group is simply not used.
    fn load_block_bitmap(&mut self, g: u32) -> Result<Option<&mut Vec<u8>>> {
        if !self.bm.block.contains_key(&g) {
            let n = self.blocks_in_group(g) as usize;
            let loaded = if self.fs.groups.flags(g) & BG_BLOCK_UNINIT != 0 {
                let map = self.rebuild_block_bitmap(g);
                (Self::count_free(&map, n) == self.fs.groups.free_blocks(g)).then_some(map)
            } else {
                let at = Location::Bitmap { group: g };
                let map = self.fs.read_block(self.fs.groups.block_bitmap(g), &at)?;
                if self.fs.csum() {
                    let bytes = (self.bpg() / 8) as usize;
                    let want = self.fs.groups.block_bitmap_csum(g);
                    let got = checksum::bitmap(self.fs.seed, &map[..bytes])
                        & self.fs.groups.bitmap_csum_mask();
                    if want != got {
                        return Err(Ext4Error::corrupt(
                            format!("block bitmap checksum is {want:#x}, should be {got:#x}"),
                            at,
                        ));
                    }
                }
                if Self::count_free(&map, n) != self.fs.groups.free_blocks(g) {
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
            let bs = self.fs.block_size();
            let ipg = self.ipg() as usize;
            let map = if self.fs.groups.flags(g) & BG_INODE_UNINIT != 0 {
                let mut m = vec![0u8; bs];
                for i in ipg..bs * 8 {
                    set_bit(&mut m, i);
                }
                m
            } else {
                let at = Location::Bitmap { group: g };
                let m = self.fs.read_block(self.fs.groups.inode_bitmap(g), &at)?;
                if self.fs.csum() {
                    let want = self.fs.groups.inode_bitmap_csum(g);
                    let got = checksum::bitmap(self.fs.seed, &m[..ipg / 8])
                        & self.fs.groups.bitmap_csum_mask();
                    if want != got {
                        return Err(Ext4Error::corrupt(
                            format!("inode bitmap checksum is {want:#x}, should be {got:#x}"),
                            at,
                        ));
                    }
                }
                if Self::count_free(&m, ipg) != self.fs.groups.free_inodes(g) {
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
        let goal_group = u32::try_from(
            goal.saturating_sub(u64::from(self.fs.sb.first_data_block())) / u64::from(self.bpg()),
        )
        .unwrap_or(0)
        .min(ngroups - 1);
        let mut runs: Vec<(u64, u32)> = Vec::new();
        let mut left = count;
        for pass in 0..2 {
            for k in 0..ngroups {
                if left == 0 {
                    break;
                }
                let g = (goal_group + k) % ngroups;
                let uninit = self.fs.groups.flags(g) & BG_BLOCK_UNINIT != 0;
                if (pass == 0) == uninit || self.fs.groups.free_blocks(g) == 0 {
                    continue;
                }
                let n = self.blocks_in_group(g) as usize;
                let first = self.group_first_block(g);
                let Some(map) = self.load_block_bitmap(g)? else {
                    continue;
                };
                let mut taken = 0u32;
                let mut i = 0usize;
                while i < n && left > 0 {
                    if map[i / 8] == 0xFF && i.is_multiple_of(8) {
                        i += 8;
                        continue;
                    }
                    if test_bit(map, i) {
                        i += 1;
                        continue;
                    }
                    let start = i;
                    while i < n && !test_bit(map, i) && ((i - start) as u64) < left {
                        set_bit(map, i);
                        i += 1;
                    }
                    let len = u32::try_from(i - start).unwrap_or(u32::MAX);
                    taken += len;
                    left -= u64::from(len);
                    let pblk = first + start as u64;
                    match runs.last_mut() {
                        Some((s, l)) if *s + u64::from(*l) == pblk => *l += len,
                        _ => runs.push((pblk, len)),
                    }
                }
                if taken > 0 {
                    self.bm.dirty_block.insert(g);
                    let free = self.fs.groups.free_blocks(g) - taken;
                    self.fs.groups.set_free_blocks(g, free);
                }
            }
        }
        if left > 0 {
            // Only reachable when uninitialised groups could not be used.
            return Err(Ext4Error::NoSpace {
                what: format!("{count} blocks needed, {} could be allocated", count - left),
            });
        }
        Ok(runs)
    }

    /// Return blocks to the free pool.
    pub(super) fn free_blocks(&mut self, start: u64, len: u64) -> Result<()> {
        let bpg = u64::from(self.bpg());
        let fdb = u64::from(self.fs.sb.first_data_block());
        let mut b = start;
        while b < start + len {
            let g = u32::try_from((b - fdb) / bpg).map_err(|_| {
                Ext4Error::corrupt(format!("block {b} out of range"), Location::Superblock)
            })?;
            let first = self.group_first_block(g);
            let end = (first + bpg).min(start + len);
            let Some(map) = self.load_block_bitmap(g)? else {
                return Err(Ext4Error::corrupt(
                    format!("block {b} is in use but its group has no usable bitmap"),
                    Location::GroupDesc(g),
                ));
            };
            let mut freed = 0u32;
            for x in b..end {
                let i = usize::try_from(x - first).unwrap_or(0);
                if !test_bit(map, i) {
                    return Err(Ext4Error::corrupt(
                        format!("block {x} is in use by a file but marked free"),
                        Location::Bitmap { group: g },
                    ));
                }
                clear_bit(map, i);
                freed += 1;
            }
            self.bm.dirty_block.insert(g);
            let free = self.fs.groups.free_blocks(g) + freed;
            self.fs.groups.set_free_blocks(g, free);
            let bs = self.fs.block_size() as u64;
            self.fs.dev.discard(b * bs, (end - b) * bs);
            b = end;
        }
        Ok(())
    }

    /// Allocate an inode, near the parent's group. Lowers the group's
    /// unused-inode watermark and zeroes the slots it uncovers.
    pub(super) fn alloc_inode(&mut self, parent: u32, is_dir: bool) -> Result<u32> {
        let ipg = self.ipg();
        let ngroups = self.fs.sb.group_count();
        let pg = (parent - 1) / ipg;
        let first_ino = self.fs.sb.first_ino();
        for k in 0..ngroups {
            let g = (pg + k) % ngroups;
            if self.fs.groups.free_inodes(g) == 0 {
                continue;
            }
            let start = if g == 0 { (first_ino - 1) as usize } else { 0 };
            let map = self.load_inode_bitmap(g)?;
            let Some(idx) = (start..ipg as usize).find(|&i| !test_bit(map, i)) else {
                continue;
            };
            set_bit(map, idx);
            self.bm.dirty_inode.insert(g);
            let idx = u32::try_from(idx).unwrap_or(0);
            let ino = g * ipg + idx + 1;
            let unused = self.fs.groups.itable_unused(g);
            let used_end = ipg - unused;
            if idx >= used_end {
                // Slots between the old watermark and this one were never
                // initialised unless the table was zeroed at mkfs time.
                if self.fs.groups.flags(g) & BG_INODE_ZEROED == 0 {
                    for j in used_end..idx {
                        let zero = vec![0u8; usize::from(self.fs.sb.inode_size())];
                        let off = self.inode_offset(g * ipg + j + 1)?;
                        self.fs.dev.stage(&zero, off)?;
                    }
                }
                self.fs.groups.set_itable_unused(g, ipg - (idx + 1));
            }
            let flags = self.fs.groups.flags(g) & !BG_INODE_UNINIT;
            self.fs.groups.set_flags(g, flags);
            let fi = self.fs.groups.free_inodes(g) - 1;
            self.fs.groups.set_free_inodes(g, fi);
            if is_dir {
                let d = self.fs.groups.used_dirs(g) + 1;
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
        let ipg = self.ipg();
        let g = (ino - 1) / ipg;
        let idx = ((ino - 1) % ipg) as usize;
        let map = self.load_inode_bitmap(g)?;
        if !test_bit(map, idx) {
            return Err(Ext4Error::corrupt(
                "inode in use but marked free in the bitmap",
                Location::Inode(ino),
            ));
        }
        clear_bit(map, idx);
        self.bm.dirty_inode.insert(g);
        let fi = self.fs.groups.free_inodes(g) + 1;
        self.fs.groups.set_free_inodes(g, fi);
        if is_dir {
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
        for g in std::mem::take(&mut self.bm.dirty_block) {
            let Some(Some(map)) = self.bm.block.get(&g) else {
                continue;
            };
            let c = checksum::bitmap(self.fs.seed, &map[..(self.bpg() / 8) as usize]) & mask;
            let at = self.fs.groups.block_bitmap(g) * bs;
            self.fs.dev.stage(map, at)?;
            self.fs.groups.set_block_bitmap_csum(g, c);
            let flags = self.fs.groups.flags(g) & !BG_BLOCK_UNINIT;
            self.fs.groups.set_flags(g, flags);
        }
        for g in std::mem::take(&mut self.bm.dirty_inode) {
            let map = &self.bm.inode[&g];
            let c = checksum::bitmap(self.fs.seed, &map[..(self.ipg() / 8) as usize]) & mask;
            let at = self.fs.groups.inode_bitmap(g) * bs;
            self.fs.dev.stage(map, at)?;
            self.fs.groups.set_inode_bitmap_csum(g, c);
        }
        let mut free_blocks = 0u64;
        let mut free_inodes = 0u32;
        for g in 0..self.fs.sb.group_count() {
            free_blocks += u64::from(self.fs.groups.free_blocks(g));
            free_inodes += self.fs.groups.free_inodes(g);
            if self.fs.csum() {
                self.fs.groups.update_checksum(self.fs.seed, g);
            }
        }
        let gdt = (u64::from(self.fs.sb.first_data_block()) + 1) * bs;
        let len = self.fs.sb.desc_size() * self.fs.sb.group_count() as usize;
        let raw = self.fs.groups.raw()[..len].to_vec();
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

#[cfg(test)]
mod tests {
    use super::has_super;

    #[test]
    fn sparse_super_groups() {
        let with: Vec<u32> = (0..100).filter(|&g| has_super(g, true)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
        assert!(has_super(42, false));
    }
}
