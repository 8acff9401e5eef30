//! One streaming pass over a finished image: its sha256, and a block map in
//! bmaptool's format (version 2.0, sha256 range checksums).
//!
//! The map follows the filesystems, not the bytes: a card that held
//! something else gets exactly what a reader of the image gives meaning
//! to. Inside a filesystem rpiimg understands (the [`Layout`]'s `known`
//! spans) a block is mapped when the filesystem uses it, zeros or not (a
//! FAT's zeros are its free entries), and left out when it is free, even
//! where the base holds old non-zero bytes there. Elsewhere (the gaps
//! between partitions, partitions rpiimg does not read) a block is mapped
//! when it is not all zeros, as `bmaptool create` does; the partition
//! tables' own sectors are always mapped. See `output::layout`.

use sha2::{Digest, Sha256};

pub(crate) const BLOCK: u64 = 4096;
const BLOCK_US: usize = 4096;

pub(crate) struct Scan {
    pub size: u64,
    pub sha256: String,
    /// Mapped ranges (first block, last block inclusive, sha256 of the range).
    pub ranges: Vec<(u64, u64, String)>,
}

/// The block map and sha256 of an image fed to it in order, in chunks that
/// are whole 4 KiB blocks (except the last): the one pass a node's bytes
/// take on their way to the output.
pub(crate) struct Scanner<'a> {
    in_use: Cursor<'a>,
    known: Cursor<'a>,
    whole: Sha256,
    ranges: Vec<(u64, u64, String)>,
    /// The mapped run being fed: its first and last block, and its hash.
    cur: Option<(u64, u64, Sha256)>,
    /// The next block fed.
    block: u64,
    size: u64,
}

impl<'a> Scanner<'a> {
    /// `in_use` lists the block ranges `[start, end)` (4 KiB image blocks,
    /// sorted) that are mapped whatever they hold; `known` those where
    /// only `in_use` is mapped (a filesystem's free space).
    pub(crate) fn new(in_use: &'a [(u64, u64)], known: &'a [(u64, u64)]) -> Self {
        Scanner {
            in_use: Cursor::new(in_use),
            known: Cursor::new(known),
            whole: Sha256::new(),
            ranges: Vec::new(),
            cur: None,
            block: 0,
            size: 0,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.whole.update(data);
        // The size and block count of one image: below u64::MAX.
        self.size = self.size.saturating_add(data.len() as u64);
        for chunk in data.chunks(BLOCK_US) {
            let b = self.block;
            let used = self.in_use.covers(b);
            let known = self.known.covers(b);
            if used || (!known && !crate::bytes::is_zero(chunk)) {
                let run = self.cur.get_or_insert_with(|| (b, b, Sha256::new()));
                run.1 = b;
                run.2.update(chunk);
            } else if let Some((start, last, h)) = self.cur.take() {
                self.ranges.push((start, last, hex(&h.finalize())));
            }
            self.block = self.block.saturating_add(1);
        }
    }

    pub(crate) fn finish(mut self) -> Scan {
        if let Some((start, last, h)) = self.cur.take() {
            self.ranges.push((start, last, hex(&h.finalize())));
        }
        Scan {
            size: self.size,
            sha256: hex(&self.whole.finalize()),
            ranges: self.ranges,
        }
    }
}

/// A position in sorted ranges, for blocks asked about in increasing order:
/// the ranges not yet passed.
struct Cursor<'a> {
    ranges: &'a [(u64, u64)],
}

impl<'a> Cursor<'a> {
    fn new(ranges: &'a [(u64, u64)]) -> Self {
        Cursor { ranges }
    }

    fn covers(&mut self, b: u64) -> bool {
        while let Some((_, rest)) = self.ranges.split_first().filter(|(r, _)| r.1 <= b) {
            self.ranges = rest;
        }
        self.ranges.first().is_some_and(|r| r.0 <= b)
    }
}

fn hex(b: &[u8]) -> String {
    crate::bytes::hex(b)
}

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The `.bmap` XML. bmaptool checks `BmapFileChecksum` as the sha256 of the
/// file with that field set to all zeros.
pub(crate) fn render(scan: &Scan) -> String {
    let blocks = scan.size.div_ceil(BLOCK);
    // The scanner's ranges run from a block to a later or the same one,
    // within the image's block count.
    let mapped: u64 = scan
        .ranges
        .iter()
        .map(|(a, b, _)| b.saturating_sub(*a).saturating_add(1))
        .sum();
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" ?>\n");
    x.push_str("<!-- Block map made by rpiimg; use it with: bmaptool copy IMAGE DEVICE -->\n");
    x.push_str("<bmap version=\"2.0\">\n");
    x.push_str(&format!("    <ImageSize> {} </ImageSize>\n", scan.size));
    x.push_str(&format!("    <BlockSize> {BLOCK} </BlockSize>\n"));
    x.push_str(&format!("    <BlocksCount> {blocks} </BlocksCount>\n"));
    x.push_str(&format!(
        "    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n"
    ));
    x.push_str("    <ChecksumType> sha256 </ChecksumType>\n");
    x.push_str(&format!(
        "    <BmapFileChecksum> {ZEROS} </BmapFileChecksum>\n"
    ));
    x.push_str("    <BlockMap>\n");
    for (a, b, sum) in &scan.ranges {
        if a == b {
            x.push_str(&format!("        <Range chksum=\"{sum}\"> {a} </Range>\n"));
        } else {
            x.push_str(&format!(
                "        <Range chksum=\"{sum}\"> {a}-{b} </Range>\n"
            ));
        }
    }
    x.push_str("    </BlockMap>\n</bmap>\n");
    let sum = hex(&Sha256::digest(x.as_bytes()));
    x.replacen(ZEROS, &sum, 1)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_unmapped_unless_in_use() {
        let mut data = vec![0u8; 10 * BLOCK_US];
        data[0] = 1; // block 0
        data[3 * BLOCK_US + 5] = 1; // block 3
        data[4 * BLOCK_US] = 1; // block 4
        let in_use = [(7, 9)];
        let mut scanner = Scanner::new(&in_use, &[]);
        // Fed in two chunks of whole blocks, as the build streams it.
        scanner.feed(&data[..6 * BLOCK_US]);
        scanner.feed(&data[6 * BLOCK_US..]);
        let s = scanner.finish();
        let r: Vec<(u64, u64)> = s.ranges.iter().map(|(a, b, _)| (*a, *b)).collect();
        assert_eq!(r, vec![(0, 0), (3, 4), (7, 8)]);
        assert_eq!(s.sha256, hex(&Sha256::digest(&data)));
        let x = render(&s);
        assert!(x.contains("<MappedBlocksCount> 5 </MappedBlocksCount>"));
        assert!(!x.contains(ZEROS));
    }

    #[test]
    fn free_space_of_a_known_filesystem_is_unmapped_whatever_it_holds() {
        // Blocks 2-7 are a filesystem using 3 and 5; 1 and 8 lie outside.
        let mut data = vec![0xAAu8; 10 * BLOCK_US];
        data[5 * BLOCK_US..6 * BLOCK_US].fill(0); // used, and zero
        data[9 * BLOCK_US..].fill(0); // outside, zero
        let (in_use, known) = ([(3, 4), (5, 6)], [(2, 8)]);
        let mut scanner = Scanner::new(&in_use, &known);
        scanner.feed(&data);
        let r: Vec<(u64, u64)> = scanner
            .finish()
            .ranges
            .iter()
            .map(|(a, b, _)| (*a, *b))
            .collect();
        assert_eq!(r, vec![(0, 1), (3, 3), (5, 5), (8, 8)]);
    }
}
