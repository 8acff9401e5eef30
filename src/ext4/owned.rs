//! e2fsck's pass 5 for [`Ext4::metadata_problems`]: the set of blocks
//! something owns (the filesystem's own metadata, and every in-use inode's
//! data, map and extended attribute blocks) against the block bitmaps.
//! Without it a bitmap that marks an owned block free, or a free block
//! used, passes every other check: debugfs `freeb`/`setb` adjust the free
//! counts to match, and so would a writer that forgets a bit.
//!
//! One bit a block, so memory is a 32768th of the filesystem at 4 KiB
//! blocks (96 KiB for 3 GB); the filesystem's size was checked against
//! the device's when it was opened, and a cap bounds it beyond that.

use std::collections::BTreeMap;

use super::features::Feature;
use super::group::{self, BG_BLOCK_UNINIT};
use super::{Ext4, Location, ReadAt};

/// The largest filesystem whose owned blocks are tracked: 2^29 blocks, a
/// 64 MiB set (2 TiB at 4 KiB blocks), far beyond a Raspberry Pi image.
const MAX_BLOCKS: u64 = 1 << 29;

/// Ranges listed per group and kind of difference before the rest are
/// only counted, so a wrecked bitmap gives a readable answer.
const RANGES_PER_GROUP: usize = 4;

pub(super) struct Owned {
    bits: Vec<u8>,
    total: u64,
    /// Per group whose block bitmap is uninitialised (so holds only the
    /// group's metadata, as e2fsck and the kernel rebuild it): the first
    /// block an inode owns there and how many it owns.
    in_uninit: BTreeMap<u32, (u64, u64)>,
}

impl Owned {
    /// The set with the filesystem's metadata marked, or `None` (with the
    /// reason among the problems) when the filesystem is too large to track.
    pub(super) fn new<D: ReadAt>(fs: &Ext4<D>, found: &mut Vec<String>) -> Option<Owned> {
        let total = fs.sb.blocks_count();
        let bytes = usize::try_from(total.div_ceil(8))
            .ok()
            .filter(|_| total <= MAX_BLOCKS);
        let Some(bytes) = bytes else {
            found.push(format!(
                "the block bitmaps were not cross-checked: {total} blocks are more than rpiimg tracks ({MAX_BLOCKS})"
            ));
            return None;
        };
        let mut owned = Owned {
            bits: vec![0; bytes],
            total,
            in_uninit: BTreeMap::new(),
        };
        owned.mark_metadata(fs);
        Some(owned)
    }

    fn get(&self, b: u64) -> bool {
        let byte = usize::try_from(b / 8).ok().and_then(|i| self.bits.get(i));
        byte.is_some_and(|v| v & (1 << (b % 8)) != 0)
    }

    /// Mark block `b`: whether it was already marked, `None` past the end.
    fn set(&mut self, b: u64) -> Option<bool> {
        if b >= self.total {
            return None;
        }
        let byte = usize::try_from(b / 8)
            .ok()
            .and_then(|i| self.bits.get_mut(i))?;
        let mask = 1u8 << (b % 8);
        let was = *byte & mask != 0;
        *byte |= mask;
        Some(was)
    }

    /// Every block the filesystem's own structures occupy, as e2fsck's
    /// `mark_table_blocks` counts them: each group's superblock backup,
    /// descriptors and reserved descriptors (where it has a backup), its
    /// bitmaps and inode table (wherever flex_bg put them), and the MMP
    /// block. The journal and resize inodes' blocks are claimed by the
    /// inode pass.
    fn mark_metadata<D: ReadAt>(&mut self, fs: &Ext4<D>) {
        let sb = &fs.sb;
        let itable = group::itable_blocks(sb).unwrap_or(0);
        for g in 0..sb.group_count() {
            let first = group::first_block(sb, g).unwrap_or(u64::MAX);
            let lead = group::super_and_gdt_blocks(sb, g).unwrap_or(0);
            let mut runs = [
                (first, lead),
                (fs.groups.block_bitmap(g), 1),
                (fs.groups.inode_bitmap(g), 1),
                (fs.groups.inode_table(g), itable),
            ];
            // A run past the end is cut short: blocks there have no bits.
            for (start, len) in &mut runs {
                *len = (*len).min(self.total.saturating_sub(*start));
            }
            for (start, len) in runs {
                for b in start..start.saturating_add(len) {
                    self.set(b);
                }
            }
        }
        if sb.has(Feature::Mmp) {
            self.set(sb.mmp_block());
        }
    }

    /// Group of block `b` (at or past the first data block).
    fn group_of<D: ReadAt>(fs: &Ext4<D>, b: u64) -> Option<u32> {
        let rel = b.checked_sub(u64::from(fs.sb.first_data_block()))?;
        let g = rel.checked_div(u64::from(fs.sb.blocks_per_group()))?;
        u32::try_from(g).ok().filter(|&g| g < fs.sb.group_count())
    }

    fn newly_owned<D: ReadAt>(&mut self, fs: &Ext4<D>, b: u64) {
        let Some(g) = Self::group_of(fs, b) else {
            return;
        };
        if fs.groups.flags(g) & BG_BLOCK_UNINIT != 0 {
            let e = self.in_uninit.entry(g).or_insert((b, 0));
            e.1 = e.1.saturating_add(1);
        }
    }

    /// Claim an inode's own blocks (data, extent tree or indirect blocks),
    /// reporting any already owned: by another inode or by metadata, as
    /// e2fsck's multiply-claimed blocks.
    pub(super) fn claim<D: ReadAt>(
        &mut self,
        fs: &Ext4<D>,
        ino: u32,
        blocks: impl IntoIterator<Item = u64>,
        found: &mut Vec<String>,
    ) {
        let (mut dups, mut first) = (0u64, None);
        for b in blocks {
            match self.set(b) {
                Some(true) => {
                    dups = dups.saturating_add(1);
                    first.get_or_insert(b);
                }
                Some(false) => self.newly_owned(fs, b),
                None => {}
            }
        }
        if let Some(f) = first {
            found.push(format!(
                "inode {ino}: {dups} of its blocks (the first {f}) are also claimed by another inode or by the filesystem's metadata"
            ));
        }
    }

    /// Claim a block several inodes may share (an extended attribute block).
    pub(super) fn claim_shared<D: ReadAt>(&mut self, fs: &Ext4<D>, b: u64) {
        if self.set(b) == Some(false) {
            self.newly_owned(fs, b);
        }
    }

    /// Compare with every group's block bitmap.
    pub(super) fn compare<D: ReadAt>(&self, fs: &Ext4<D>, found: &mut Vec<String>) {
        let sb = &fs.sb;
        let bpg = u64::from(sb.blocks_per_group());
        for g in 0..sb.group_count() {
            if fs.groups.flags(g) & BG_BLOCK_UNINIT != 0 {
                if let Some((first, n)) = self.in_uninit.get(&g) {
                    found.push(format!(
                        "group {g}: {n} blocks owned by inodes (the first {first}) lie in a group whose block bitmap is uninitialised (free but for metadata)"
                    ));
                }
                continue;
            }
            let Some(first) = group::first_block(sb, g) else {
                continue;
            };
            let n = self.total.saturating_sub(first).min(bpg);
            let at = Location::Bitmap { group: g };
            let map = match fs.read_block(fs.groups.block_bitmap(g), &at) {
                Ok(m) => m,
                Err(e) => {
                    found.push(format!("group {g}: block bitmap: {e}"));
                    continue;
                }
            };
            let mut unmarked = Ranges::default();
            let mut unowned = Ranges::default();
            for i in 0..n {
                let marked = usize::try_from(i / 8)
                    .ok()
                    .and_then(|k| map.get(k))
                    .is_some_and(|v| v & (1 << (i % 8)) != 0);
                let b = first.saturating_add(i);
                match (self.get(b), marked) {
                    (true, false) => unmarked.add(b),
                    (false, true) => unowned.add(b),
                    _ => {}
                }
            }
            unmarked.report(g, ("is", "are"), "in use but free in the bitmap", found);
            unowned.report(
                g,
                ("is", "are"),
                "marked used in the bitmap but owned by nothing",
                found,
            );
        }
    }
}

/// Runs of blocks, the first few kept and the rest counted.
#[derive(Default)]
struct Ranges {
    runs: Vec<(u64, u64)>,
    more: u64,
}

impl Ranges {
    /// Add block `b`; blocks come in increasing order.
    fn add(&mut self, b: u64) {
        if let Some(last) = self
            .runs
            .last_mut()
            .filter(|r| r.1.checked_add(1) == Some(b))
        {
            last.1 = b;
        } else if self.runs.len() < RANGES_PER_GROUP {
            self.runs.push((b, b));
        } else {
            self.more = self.more.saturating_add(1);
        }
    }

    fn report(&self, g: u32, verb: (&str, &str), what: &str, found: &mut Vec<String>) {
        for &(a, b) in &self.runs {
            found.push(if a == b {
                format!("group {g}: block {a} {} {what}", verb.0)
            } else {
                format!("group {g}: blocks {a}-{b} {} {what}", verb.1)
            });
        }
        if self.more > 0 {
            found.push(format!(
                "group {g}: and {} more blocks {} {what}",
                self.more, verb.1
            ));
        }
    }
}
