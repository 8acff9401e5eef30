//! Which bytes of a node image a card must get: the partition tables'
//! own sectors and every byte the filesystems rpiimg understands give
//! meaning to, over the spans of those filesystems. The block map
//! ([`super::bmap`]) maps these, and leaves out the free space in the
//! spans whatever the base holds there (old bytes of the machine that made
//! it, rarely zeros on a real image); outside the spans it falls back to
//! mapping what is not zero.

use super::bmap::BLOCK;
use crate::error::{Error, Result};
use crate::ext4::Ext4;
use crate::fs::edit::Finished;
use crate::image::ReadAt;
use crate::partition::{PartitionTable, TableKind, SECTOR};

/// Sorted, merged 4 KiB block ranges `[start, end)` of the image.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    /// Mapped whatever they hold.
    pub in_use: Vec<(u64, u64)>,
    /// The filesystems' spans: only `in_use` is mapped inside them.
    pub known: Vec<(u64, u64)>,
}

/// The layout of the node image `staged` describes (as it reads once
/// committed), over the partition table `table` of an image of `size`
/// bytes.
pub(crate) fn of(staged: &Finished, table: &PartitionTable, size: u64) -> Result<Layout> {
    let mut used: Vec<(u64, u64)> = table_sectors(table, size);
    let mut spans: Vec<(u64, u64)> = Vec::new();

    let root = staged.root();
    let at = root.base().start();
    let fs = Ext4::open(root)?;
    let bs = fs.block_size() as u64;
    for (a, b) in fs.used_block_ranges()? {
        used.push(shifted(at, a.saturating_mul(bs), b.saturating_mul(bs)));
    }
    spans.push(shifted(at, 0, root.base().size()));

    for (part, fat) in staged.fats() {
        let at = fat.base().start();
        let ranges = crate::fs::fat_used_ranges(fat).map_err(|e| Error::Fat {
            part,
            detail: e.to_string(),
        })?;
        used.extend(ranges.into_iter().map(|(a, b)| shifted(at, a, b)));
        spans.push(shifted(at, 0, fat.base().size()));
    }
    Ok(Layout {
        // A used byte maps its whole block; a span covers only the blocks
        // wholly inside it, so a block shared with a neighbour is judged by
        // its content.
        in_use: crate::bytes::merge_ranges(
            used.into_iter()
                .map(|(a, b)| (a / BLOCK, b.div_ceil(BLOCK))),
        ),
        known: crate::bytes::merge_ranges(
            spans
                .into_iter()
                .map(|(a, b)| (a.div_ceil(BLOCK), b / BLOCK)),
        ),
    })
}

/// The partition table's own sectors, zeros included: an MBR's sector 0;
/// a GPT's protective MBR, header and entry array at the start and its
/// backup at the end (a card's old entries in the array would break its
/// CRC).
fn table_sectors(table: &PartitionTable, size: u64) -> Vec<(u64, u64)> {
    match table.kind {
        TableKind::Mbr => vec![(0, SECTOR.min(size))],
        TableKind::Gpt => {
            let (first, last) = table.usable;
            vec![
                (0, first.saturating_mul(SECTOR).min(size)),
                (
                    last.saturating_add(1).saturating_mul(SECTOR).min(size),
                    size,
                ),
            ]
        }
    }
}

fn shifted(at: u64, a: u64, b: u64) -> (u64, u64) {
    (at.saturating_add(a), at.saturating_add(b))
}
