//! The file allocation table checked once, before any chain is followed.
//!
//! fatfs follows a cluster chain until it meets an end-of-chain mark, so a
//! FAT entry that points back into its own chain (the root directory's, a
//! file's) makes every walk, read or free-space count run forever. Rather
//! than bounding each walk inside the crate, [`check`] reads the first FAT
//! once at open and proves the table is a forest: every entry is free, bad,
//! end-of-chain or a pointer to a real cluster, and no pointer path comes
//! back to a cluster it has passed. With that, every chain fatfs follows is
//! at most `clusters` long. The check is one linear pass over the table
//! (512 KiB for a Pi OS boot partition).
//!
//! Directories get the same proof one level up: a directory entry whose
//! first cluster is an ancestor's (or any other directory's) would make a
//! recursive walk loop or grow exponentially, and FAT directories have no
//! inode number a walker could recognise. [`check`] walks the raw tree once
//! and refuses a directory cluster that two entries (or two chains) claim.

use std::io;

use crate::bytes::{le16, le32};
use crate::ext4::MEMORY_CAP;
use crate::image::ReadAt;

/// What the boot sector says about where the table is and how big it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    /// Byte offset of the first FAT.
    fat_offset: u64,
    /// Bytes of the first FAT.
    fat_bytes: u64,
    /// Data clusters; valid cluster numbers are `2..limit`.
    clusters: u32,
    /// `clusters + 2`: the table's entry count (two reserved entries first).
    limit: u32,
    /// Bits per entry: 12, 16 or 32.
    bits: u32,
    /// FAT32's root directory cluster (0 on FAT12/16, whose root is fixed).
    root_cluster: u32,
    /// Byte offset and length of FAT12/16's fixed root directory.
    root_dir: (u64, u64),
    /// Byte offset of cluster 2, and bytes per cluster.
    data_offset: u64,
    cluster_bytes: u64,
}

fn damaged(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the file allocation table is damaged: {what}; \
             check a copy with `fsck.fat -n`, or start again from an intact image"
        ),
    )
}

fn geometry(bs: &[u8; 512]) -> io::Result<Geometry> {
    let bps = u64::from(le16(bs, 11));
    let spc = u64::from(bs[13]);
    let reserved = u64::from(le16(bs, 14));
    let fats = u64::from(bs[16]);
    let root_entries = u64::from(le16(bs, 17));
    let total = match le16(bs, 19) {
        0 => u64::from(le32(bs, 32)),
        n => u64::from(n),
    };
    let fat_sectors = match le16(bs, 22) {
        0 => u64::from(le32(bs, 36)),
        n => u64::from(n),
    };
    if !matches!(bps, 512 | 1024 | 2048 | 4096) || !spc.is_power_of_two() || fats == 0 {
        return Err(damaged(format!(
            "boot sector gives {bps} bytes per sector, {spc} sectors per cluster and {fats} FATs"
        )));
    }
    // Every term is at most 32 bits wide, so a u64 holds these sums and
    // products; checked arithmetic says so without a proof per line.
    let overflow = || damaged("the boot sector's sizes overflow 64 bits".into());
    let root_sectors = root_entries
        .checked_mul(32)
        .ok_or_else(overflow)?
        .div_ceil(bps);
    let fat_end = fats
        .checked_mul(fat_sectors)
        .and_then(|f| f.checked_add(reserved))
        .ok_or_else(overflow)?;
    let data_start = fat_end.checked_add(root_sectors).ok_or_else(overflow)?;
    let clusters = total
        .checked_sub(data_start)
        .and_then(|d| d.checked_div(spc))
        .ok_or_else(|| {
            damaged(format!(
            "the data area starts at sector {data_start}, past the {total} sectors of the volume"
        ))
        })?;
    // The FAT type follows from the cluster count alone (Microsoft's rule).
    let bits = match clusters {
        0..4085 => 12,
        4085..65525 => 16,
        _ => 32,
    };
    let clusters = u32::try_from(clusters)
        .ok()
        .filter(|&c| c <= 0x0FFF_FFF5)
        .ok_or_else(|| {
            damaged(format!(
                "{clusters} clusters is more than FAT32 can address"
            ))
        })?;
    // At most 0x0FFF_FFF7: no overflow.
    let limit = clusters.checked_add(2).ok_or_else(overflow)?;
    let bytes = |sectors: u64| sectors.checked_mul(bps).ok_or_else(overflow);
    let fat_bytes = bytes(fat_sectors)?;
    let needed = u64::from(limit)
        .checked_mul(u64::from(bits))
        .ok_or_else(overflow)?
        / 8;
    if fat_bytes < needed {
        return Err(damaged(format!(
            "a {fat_bytes}-byte table cannot describe {clusters} clusters"
        )));
    }
    Ok(Geometry {
        fat_offset: bytes(reserved)?,
        fat_bytes,
        clusters,
        limit,
        bits,
        root_cluster: if bits == 32 { le32(bs, 44) } else { 0 },
        // Whole sectors, as fatfs reads it (entries past `root_entries` in
        // the last sector are still listed).
        root_dir: (bytes(fat_end)?, bytes(root_sectors)?),
        data_offset: bytes(data_start)?,
        cluster_bytes: bytes(spc)?,
    })
}

/// Entry kinds, normalised across FAT12/16/32.
const FREE: u32 = 0;
const END: u32 = u32::MAX;
const BAD: u32 = u32::MAX - 1;

/// The table as one `u32` per cluster: FREE, END, BAD or the next cluster.
fn load(dev: &impl ReadAt, g: &Geometry) -> io::Result<Vec<u32>> {
    let entries = g.limit as usize;
    let bytes = u64::from(g.limit)
        .checked_mul(u64::from(g.bits))
        .map_or(u64::MAX, |b| b.div_ceil(8));
    let len = usize::try_from(bytes).ok().filter(|_| bytes <= MEMORY_CAP);
    let Some(len) = len else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "a {bytes}-byte file allocation table is larger than rpiimg reads \
                 ({MEMORY_CAP} bytes); boot partitions of Pi OS images are far smaller"
            ),
        ));
    };
    let mut raw = vec![0u8; len];
    dev.read_exact_at(&mut raw, g.fat_offset)?;
    let (eoc, bad) = match g.bits {
        12 => (0xFF8, 0xFF7),
        16 => (0xFFF8, 0xFFF7),
        _ => (0x0FFF_FFF8, 0x0FFF_FFF7),
    };
    let values: Box<dyn Iterator<Item = u32>> = match g.bits {
        // Two 12-bit entries in each 3 bytes: low nibble of the middle byte
        // to the first, high nibble to the second.
        12 => Box::new(raw.chunks(3).flat_map(|t| {
            let b = |i: usize| t.get(i).copied().map_or(0, u32::from);
            [b(0) | (b(1) & 0xF) << 8, b(1) >> 4 | b(2) << 4]
        })),
        16 => Box::new(raw.chunks_exact(2).map(|e| u32::from(le16(e, 0)))),
        _ => Box::new(raw.chunks_exact(4).map(|e| le32(e, 0) & 0x0FFF_FFFF)),
    };
    // `raw` holds entries * bits / 8 bytes (rounded up): enough for all.
    let next: Vec<u32> = values
        .take(entries)
        .map(|v| match v {
            0 => FREE,
            v if v >= eoc => END,
            v if v == bad => BAD,
            v => v,
        })
        .collect();
    Ok(next)
}

/// The byte ranges `[start, end)` of the volume on `dev` that a reader
/// gives meaning to, sorted and merged: the boot sector, reserved sectors,
/// every FAT copy in full and FAT12/16's fixed root directory (the zeros of
/// a FAT are its free entries: they must reach a card as zeros), then every
/// allocated cluster. Free clusters are left out, whatever they hold.
pub(crate) fn used_ranges(dev: &impl ReadAt) -> io::Result<Vec<(u64, u64)>> {
    let mut bs = [0u8; 512];
    dev.read_exact_at(&mut bs, 0)?;
    let g = geometry(&bs)?;
    let next = load(dev, &g)?;
    let mut out: Vec<(u64, u64)> = vec![(0, g.data_offset.min(dev.size()))];
    for (c, &n) in next.iter().enumerate().skip(2) {
        if n == FREE {
            continue;
        }
        // c < limit <= 2^28 and cluster_bytes <= 2^15 * 2^12: no overflow
        // in u64, but say so with checked arithmetic all the same.
        let Some(start) = (c as u64)
            .checked_sub(2)
            .and_then(|k| k.checked_mul(g.cluster_bytes))
            .and_then(|o| o.checked_add(g.data_offset))
        else {
            continue;
        };
        let end = start.saturating_add(g.cluster_bytes).min(dev.size());
        if start >= end {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 >= start => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    Ok(out)
}

/// Proves the first FAT of the volume on `dev` is free of loops and stray
/// pointers. Linear in the cluster count; memory bounded by [`MEMORY_CAP`].
pub(super) fn check(dev: &impl ReadAt) -> io::Result<()> {
    let mut bs = [0u8; 512];
    dev.read_exact_at(&mut bs, 0)?;
    let g = geometry(&bs)?;
    if g.fat_offset.saturating_add(g.fat_bytes) > dev.size() {
        return Err(damaged(format!(
            "the table ends at byte {}, past the end of the {}-byte partition",
            g.fat_offset.saturating_add(g.fat_bytes),
            dev.size()
        )));
    }
    let next = load(dev, &g)?;
    let limit = g.limit;
    for (c, &n) in next.iter().enumerate().skip(2) {
        if n != FREE && n != END && n != BAD && !(2..limit).contains(&n) {
            return Err(damaged(format!(
                "cluster {c} points to cluster {n}, outside the volume's 2..{limit}"
            )));
        }
    }
    if g.bits == 32 && !(2..limit).contains(&g.root_cluster) {
        return Err(damaged(format!(
            "the root directory starts at cluster {}, outside the volume",
            g.root_cluster
        )));
    }
    // Each cluster has one successor, so the table is a functional graph:
    // follow each unvisited path, marking clusters "on this path" (1) and
    // then "proved to reach an end" (2). Meeting a 1 again is a loop.
    let mut state = vec![0u8; next.len()];
    let mut path = Vec::new();
    // Every pointer was checked to be below `limit` = next.len() above, so
    // the `get`s below always find their cluster.
    let is_pointer = |c: usize| next.get(c).is_some_and(|n| !matches!(*n, FREE | END | BAD));
    for start in 2..next.len() {
        let mut c = start;
        while let (Some(s @ 0), Some(&n)) = (state.get_mut(c), next.get(c)) {
            *s = 1;
            path.push(c);
            match n {
                FREE | END | BAD => break,
                n => c = n as usize,
            }
        }
        if state.get(c) == Some(&1) && is_pointer(c) {
            let what = if g.bits == 32 && path.contains(&(g.root_cluster as usize)) {
                "the root directory's"
            } else {
                "a"
            };
            return Err(damaged(format!(
                "{what} cluster chain loops: cluster {} leads back to cluster {c}",
                path.last().copied().unwrap_or(c)
            )));
        }
        for &p in &path {
            if let Some(s) = state.get_mut(p) {
                *s = 2;
            }
        }
        path.clear();
    }
    check_directories(dev, &g, &next)
}

/// FAT directories hold at most 65536 entries of 32 bytes (the spec's
/// limit), which also bounds what the walk below holds in memory.
const MAX_DIR_BYTES: u64 = 65536 * 32;

/// Walks the raw directory tree from the root, reading each directory
/// cluster at most once: a cluster reached a second time (an entry naming
/// an ancestor or another directory, or two directory chains joining) is
/// damage, reported with the entry's name.
fn check_directories(dev: &impl ReadAt, g: &Geometry, next: &[u32]) -> io::Result<()> {
    let mut claimed = vec![false; next.len()];
    // (path, first cluster); cluster 0 is FAT12/16's fixed root.
    let mut stack = vec![(String::from("/"), g.root_cluster)];
    // Both are at most a few MiB (a cluster of 128 sectors of 4 KiB, a root
    // directory of 65535 entries).
    let size =
        |n: u64| usize::try_from(n).map_err(|_| damaged(format!("a {n}-byte directory area")));
    let mut buf = vec![0u8; size(g.cluster_bytes)?];
    while let Some((dir, first)) = stack.pop() {
        let mut entries = Vec::new();
        if first == 0 {
            entries.resize(size(g.root_dir.1)?, 0);
            dev.read_exact_at(&mut entries, g.root_dir.0)?;
        } else {
            let mut c = first;
            while let Some(seen) = claimed.get_mut(c as usize) {
                if *seen {
                    return Err(damaged(format!(
                        "directory {} reuses cluster {c}, which belongs to another directory",
                        crate::term::escape(&dir)
                    )));
                }
                *seen = true;
                let len = (entries.len() as u64).checked_add(g.cluster_bytes);
                if len.is_none_or(|len| len > MAX_DIR_BYTES) {
                    return Err(damaged(format!(
                        "directory {} is longer than FAT's limit of 65536 entries",
                        crate::term::escape(&dir)
                    )));
                }
                // Cluster c (2 or more: pointers and first clusters were
                // checked) starts (c - 2) clusters into the data area.
                let off = c
                    .checked_sub(2)
                    .and_then(|i| u64::from(i).checked_mul(g.cluster_bytes))
                    .and_then(|o| o.checked_add(g.data_offset))
                    .ok_or_else(|| damaged(format!("cluster {c} lies outside the volume")))?;
                dev.read_exact_at(&mut buf, off)?;
                entries.extend_from_slice(&buf);
                match next.get(c as usize) {
                    Some(&n) if !matches!(n, FREE | END | BAD) => c = n,
                    _ => break,
                }
            }
        }
        // Whether long-name parts precede the entry: fatfs then lists it
        // under the long name, so a short name "." or ".." with a long name
        // is an ordinary child (a loop if it points back), not a dot entry.
        let mut long_name = false;
        let (entries, _) = entries.as_chunks::<32>();
        for e in entries {
            match e[0] {
                0 => break, // end of directory
                0xE5 => {
                    long_name = false;
                    continue; // deleted
                }
                _ => {}
            }
            let attr = e[11];
            if attr & 0x0F == 0x0F {
                long_name = true;
                continue;
            }
            let named = std::mem::take(&mut long_name);
            if attr & 0x08 != 0 || attr & 0x10 == 0 {
                continue; // volume label, or a file
            }
            let name = &e[..11];
            if !named && (name == b".          " || name == b"..         ") {
                continue;
            }
            let cluster = (u32::from(le16(e, 20)) << 16) | u32::from(le16(e, 26));
            let cluster = if g.bits == 32 {
                cluster
            } else {
                cluster & 0xFFFF
            };
            let shown = String::from_utf8_lossy(name).trim_end().to_string();
            let path = format!("{}{}/", dir, shown);
            if cluster == 0 || cluster == g.root_cluster {
                return Err(damaged(format!(
                    "directory {} points back at the root directory",
                    crate::term::escape(&path)
                )));
            }
            let allocated = next.get(cluster as usize).is_some_and(|&n| n != FREE);
            if !(2..g.limit).contains(&cluster) || !allocated {
                return Err(damaged(format!(
                    "directory {} starts at cluster {cluster}, which is not allocated",
                    crate::term::escape(&path)
                )));
            }
            stack.push((path, cluster));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test fixtures index and size their own buffers; a panic there is a failed test"
)]
mod tests {
    use super::*;

    struct Mem(Vec<u8>);
    impl ReadAt for Mem {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let s = usize::try_from(offset).unwrap();
            let src = self
                .0
                .get(s..s + buf.len())
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
    }

    /// A FAT16 volume: 512-byte sectors, 1 sector per cluster, 1 reserved,
    /// 1 FAT of 32 sectors, 512 root entries, 5000 clusters.
    fn fat16() -> Mem {
        let mut v = vec![0u8; (1 + 32 + 32 + 5000) * 512];
        v[11..13].copy_from_slice(&512u16.to_le_bytes());
        v[13] = 1;
        v[14..16].copy_from_slice(&1u16.to_le_bytes());
        v[16] = 1;
        v[17..19].copy_from_slice(&512u16.to_le_bytes());
        v[19..21].copy_from_slice(&5065u16.to_le_bytes());
        v[22..24].copy_from_slice(&32u16.to_le_bytes());
        Mem(v)
    }

    fn set(m: &mut Mem, c: usize, v: u16) {
        m.0[512 + c * 2..512 + c * 2 + 2].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn chains_that_end_pass() {
        let mut m = fat16();
        set(&mut m, 2, 3);
        set(&mut m, 3, 4);
        set(&mut m, 4, 0xFFFF);
        set(&mut m, 10, 3); // two chains may not share, but a join is not a loop
        check(&m).unwrap();
    }

    #[test]
    fn a_loop_is_reported() {
        let mut m = fat16();
        set(&mut m, 2, 3);
        set(&mut m, 3, 4);
        set(&mut m, 4, 2);
        let e = check(&m).unwrap_err().to_string();
        assert!(e.contains("loops"), "{e}");
        let mut m = fat16();
        set(&mut m, 7, 7);
        assert!(check(&m).unwrap_err().to_string().contains("cluster 7"));
    }

    #[test]
    fn stray_pointer_is_reported() {
        let mut m = fat16();
        set(&mut m, 2, 6000);
        let e = check(&m).unwrap_err().to_string();
        assert!(e.contains("outside"), "{e}");
    }

    #[test]
    fn fat12_entries_are_unpacked() {
        let mut m = fat16();
        // 1000 clusters makes it FAT12: entries are 12 bits, two per 3 bytes.
        m.0[19..21].copy_from_slice(&1065u16.to_le_bytes());
        m.0.truncate((1 + 32 + 32 + 1000) * 512);
        // cluster 2 -> 3, cluster 3 -> 2: bytes for entries 2,3 at offset 3.
        let (a, b) = (3u32, 2u32);
        let packed = a | b << 12;
        m.0[512 + 3..512 + 6].copy_from_slice(&packed.to_le_bytes()[..3]);
        let e = check(&m).unwrap_err().to_string();
        assert!(e.contains("loops"), "{e}");
    }

    /// A FAT16 directory entry in the fixed root: `name` starting at `cluster`.
    fn dir_entry(m: &mut Mem, slot: usize, name: &[u8; 11], cluster: u16) {
        let off = (1 + 32) * 512 + slot * 32;
        m.0[off..off + 11].copy_from_slice(name);
        m.0[off + 11] = 0x10;
        m.0[off + 26..off + 28].copy_from_slice(&cluster.to_le_bytes());
    }

    #[test]
    fn directories_claimed_twice_are_reported() {
        let mut m = fat16();
        set(&mut m, 2, 0xFFFF);
        dir_entry(&mut m, 0, b"A          ", 2);
        check(&m).unwrap();
        // A second entry naming the same directory: a walk would visit it twice.
        dir_entry(&mut m, 1, b"B          ", 2);
        let e = check(&m).unwrap_err().to_string();
        assert!(e.contains("reuses cluster 2"), "{e}");
        // A subdirectory whose entry points at its parent: a loop.
        let mut m = fat16();
        set(&mut m, 2, 0xFFFF);
        dir_entry(&mut m, 0, b"A          ", 2);
        let sub = (1 + 32 + 32) * 512;
        m.0[sub..sub + 11].copy_from_slice(b"LOOP       ");
        m.0[sub + 11] = 0x10;
        m.0[sub + 26..sub + 28].copy_from_slice(&2u16.to_le_bytes());
        let e = check(&m).unwrap_err().to_string();
        assert!(e.contains("/A/LOOP/"), "{e}");
    }

    /// Found by the fat fuzz target (a hang): the root directory region is
    /// read in whole sectors by fatfs, so an entry past `root_entries` in
    /// the last sector is listed too; here it names the root as a
    /// subdirectory, which made every walk descend forever.
    #[test]
    fn root_entries_past_the_count_are_checked() {
        let mut m = fat16();
        m.0[17..19].copy_from_slice(&7u16.to_le_bytes());
        // 7 entries: the root is 1 sector, data starts right after it.
        let total = 1 + 32 + 1 + 5000;
        m.0[19..21].copy_from_slice(&u16::try_from(total).unwrap().to_le_bytes());
        for slot in 0..9 {
            dir_entry(&mut m, slot, b"FILE       ", 0);
            m.0[(1 + 32) * 512 + slot * 32 + 11] = 0x20; // a file
        }
        dir_entry(&mut m, 9, b"LOOP       ", 0);
        let e = check(&m).unwrap_err().to_string();
        assert!(e.contains("points back at the root"), "{e}");
    }

    /// A short name "." behind long-name parts is listed under the long
    /// name: an ordinary child, and a loop when it points at itself.
    #[test]
    fn a_dot_entry_with_a_long_name_is_a_child() {
        let mut m = fat16();
        set(&mut m, 2, 0xFFFF);
        dir_entry(&mut m, 0, b"A          ", 2);
        let sub = (1 + 32 + 32) * 512;
        m.0[sub + 11] = 0x0F; // a long-name part
        m.0[sub] = 0x41;
        m.0[sub + 32..sub + 43].copy_from_slice(b".          ");
        m.0[sub + 43] = 0x10;
        m.0[sub + 32 + 26..sub + 32 + 28].copy_from_slice(&2u16.to_le_bytes());
        let e = check(&m).unwrap_err().to_string();
        assert!(e.contains("reuses cluster 2"), "{e}");
    }
}
