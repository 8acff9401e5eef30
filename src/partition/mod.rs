//! Partition tables: MBR (mbrman) and GPT (gpt). Partitions become byte
//! windows; nothing here knows about filesystems.

#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::fs::File;
use std::sync::Arc;

use crate::image::{ReadAt, Window};

pub(crate) mod gpt;
pub(crate) mod mbr;

pub(crate) const SECTOR: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("no partition table: sector 0 lacks the 0x55AA boot signature; this is not a disk image (a bare filesystem or a corrupt/zeroed image?)")]
    NoSignature,
    #[error("the image has {0} bytes, less than one sector: it is empty or truncated")]
    TooSmall(u64),
    #[error("corrupt {table} partition table: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("partition {number} ends at byte {end} but the image has only {size} bytes: the image is truncated (re-download or re-decompress it)")]
    Truncated { number: u32, end: u64, size: u64 },
    #[error("unsafe partition layout: {0}; a write to one would damage the other, so rpiimg does not write to this image (fix the table with fdisk/sfdisk or use an intact image)")]
    Overlap(String),
    #[error("I/O error reading the partition table: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Mbr,
    Gpt,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Partition {
    /// 1-based, as in `/dev/mmcblk0pN`.
    pub number: u32,
    pub start_sector: u64,
    pub sectors: u64,
    /// `0x0c`-style MBR type, or the GPT type GUID.
    pub type_id: String,
    /// A readable name for the type.
    pub type_name: String,
    /// `PARTUUID=` value: `<diskid>-NN` on MBR, the partition GUID on GPT.
    pub partuuid: String,
    /// GPT partition name (empty on MBR).
    pub name: String,
}

/// `start_sector` and `sectors` of a partition in a [`PartitionTable`] fit
/// inside the image ([`read`] refuses any other), so its byte and sector
/// arithmetic cannot overflow: where the types still ask, it saturates.
impl Partition {
    pub fn start(&self) -> u64 {
        self.start_sector.saturating_mul(SECTOR)
    }
    pub fn size(&self) -> u64 {
        self.sectors.saturating_mul(SECTOR)
    }
    /// The sector after the partition.
    pub(crate) fn end_sector(&self) -> u64 {
        self.start_sector.saturating_add(self.sectors)
    }
    /// The last sector of a partition that is not empty.
    fn last_sector(&self) -> u64 {
        self.end_sector().saturating_sub(1)
    }
    /// The byte after the partition; `None` past 64 bits.
    fn byte_end(&self) -> Option<u64> {
        let start = self.start_sector.checked_mul(SECTOR)?;
        self.sectors.checked_mul(SECTOR)?.checked_add(start)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionTable {
    pub kind: TableKind,
    /// MBR disk identifier as 8 hex digits, or the GPT disk GUID.
    pub disk_id: String,
    pub partitions: Vec<Partition>,
    /// Layout problems (overlapping partitions): reading is allowed, every
    /// command that writes refuses (see [`PartitionTable::check_writable`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Damage that did not stop the read (a primary GPT header replaced by
    /// its backup): said by `inspect`, writes go on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// First and last sector partitions may use.
    #[serde(skip)]
    pub usable: (u64, u64),
}

impl PartitionTable {
    pub fn get(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }

    /// Refuse to write into an image whose partitions overlap.
    pub fn check_writable(&self) -> Result<(), PartitionError> {
        match self.problems.first() {
            None => Ok(()),
            Some(p) => Err(PartitionError::Overlap(p.clone())),
        }
    }

    pub fn window(&self, file: &Arc<File>, p: &Partition, writable: bool) -> Window {
        Window::new(file.clone(), p.start(), p.size(), writable)
    }
}

fn mbr_type_name(t: u8) -> &'static str {
    match t {
        0x01 | 0x04 | 0x06 | 0x0e => "FAT16",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x05 | 0x0f | 0x85 => "Extended",
        0x07 => "HPFS/NTFS/exFAT",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8e => "Linux LVM",
        0xee => "GPT protective",
        0xef => "EFI (FAT-12/16/32)",
        _ => "unknown",
    }
}

fn gpt_type_name(guid: &str) -> &'static str {
    match guid {
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7" => "Microsoft basic data",
        "0fc63daf-8483-4772-8e79-3d69d8477de4" => "Linux filesystem",
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" => "EFI System",
        "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" => "Linux swap",
        "b921b045-1df0-41c3-af44-4c6f280d3fae" => "Linux root (ARM-64)",
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709" => "Linux root (x86-64)",
        _ => "unknown",
    }
}

/// Read the partition table of the image `file` of `size` bytes.
pub fn read(file: &Arc<File>, size: u64) -> Result<PartitionTable, PartitionError> {
    if size < SECTOR {
        return Err(PartitionError::TooSmall(size));
    }
    let whole = Window::new(file.clone(), 0, size, false);
    let mut s0 = [0u8; 512];
    whole.read_exact_at(&mut s0, 0)?;
    if s0[510..512] != [0x55, 0xAA] {
        return Err(PartitionError::NoSignature);
    }
    let (disk_id, entries) = mbr::parse(&s0)?;
    let sectors = size / SECTOR;
    let mut table = if entries.iter().any(|e| e.kind == 0xee) {
        let g = gpt::read(&whole, sectors)?;
        let partitions = g
            .entries
            .iter()
            .map(|e| {
                // gpt::read checked last_lba >= first_lba; all of 2^64
                // sectors do not fit a u64.
                let n = e
                    .last_lba
                    .checked_sub(e.first_lba)
                    .and_then(|n| n.checked_add(1));
                let sectors = n.ok_or_else(|| PartitionError::Corrupt {
                    table: "GPT",
                    detail: format!(
                        "partition {} spans sectors {} to {}",
                        e.number, e.first_lba, e.last_lba
                    ),
                })?;
                Ok(Partition {
                    number: e.number,
                    start_sector: e.first_lba,
                    sectors,
                    type_name: gpt_type_name(&e.type_guid).to_string(),
                    type_id: e.type_guid.clone(),
                    partuuid: e.part_guid.clone(),
                    name: e.name.clone(),
                })
            })
            .collect::<Result<_, PartitionError>>()?;
        let warnings = g
            .primary_damage
            .iter()
            .map(|why| {
                format!(
                    "the primary GPT header is damaged ({why}); the table was read from the backup header in the last sector. Repair the primary from the backup (gdisk: r, then b to use the backup header, then w; or `sfdisk --dump IMAGE > table && sfdisk IMAGE < table`) before other tools write the disk"
                )
            })
            .collect();
        PartitionTable {
            kind: TableKind::Gpt,
            disk_id: g.disk_guid,
            partitions,
            problems: Vec::new(),
            warnings,
            usable: (g.first_usable, g.last_usable),
        }
    } else {
        PartitionTable {
            kind: TableKind::Mbr,
            partitions: entries
                .iter()
                .map(|e| e.partition(&disk_id, mbr_type_name(e.kind)))
                .collect(),
            disk_id,
            problems: Vec::new(),
            warnings: Vec::new(),
            usable: (1, sectors.saturating_sub(1)),
        }
    };
    for p in &table.partitions {
        // (A GPT entry at sector 2^55 or later used to wrap in start()
        // and could pass this check with a window at a wrong offset.)
        let Some(end) = p.byte_end() else {
            return Err(PartitionError::Corrupt {
                table: match table.kind {
                    TableKind::Mbr => "MBR",
                    TableKind::Gpt => "GPT",
                },
                detail: format!(
                    "partition {} (sector {}, {} sectors) lies beyond 64-bit byte offsets",
                    p.number, p.start_sector, p.sectors
                ),
            });
        };
        if end > size {
            return Err(PartitionError::Truncated {
                number: p.number,
                end,
                size,
            });
        }
    }
    table.problems = layout_problems(&table);
    Ok(table)
}

/// Partitions that overlap each other or the partition table itself: an
/// image with these reads, but a write to one partition would land in
/// another (or in the table).
fn layout_problems(t: &PartitionTable) -> Vec<String> {
    let mut out = Vec::new();
    let (first, last) = t.usable;
    for p in &t.partitions {
        if p.sectors == 0 {
            continue;
        }
        let p_last = p.last_sector();
        if p.start_sector < first || p_last > last {
            out.push(format!(
                "partition {} (sectors {} to {p_last}) lies outside the usable sectors {first} to {last} and overlaps the partition table",
                p.number, p.start_sector
            ));
        }
    }
    let mut sorted: Vec<&Partition> = t.partitions.iter().filter(|p| p.sectors > 0).collect();
    sorted.sort_by_key(|p| (p.start_sector, p.number));
    let mut rest = sorted.as_slice();
    while let Some((a, later)) = rest.split_first() {
        rest = later;
        for b in later {
            if b.start_sector >= a.end_sector() {
                break;
            }
            // An MBR extended partition contains its logical ones by design.
            if t.kind == TableKind::Mbr
                && [&a.type_id, &b.type_id]
                    .iter()
                    .any(|k| ["0x05", "0x0f", "0x85"].contains(&k.as_str()))
            {
                continue;
            }
            out.push(format!(
                "partitions {} (sectors {} to {}) and {} (sectors {} to {}) overlap",
                a.number,
                a.start_sector,
                a.last_sector(),
                b.number,
                b.start_sector,
                b.last_sector()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::{array_mut, crc32};
    use std::os::unix::fs::FileExt;

    fn put<const N: usize>(b: &mut [u8], off: usize, v: [u8; N]) {
        *array_mut::<N>(b, off) = v;
    }

    /// A 64-sector image whose GPT (valid checksums) has one entry at
    /// `first_lba..=last_lba`.
    fn gpt_image(first_lba: u64, last_lba: u64) -> Arc<File> {
        let mut img = vec![0u8; 64 * 512];
        let (s0, rest) = img.split_at_mut(512);
        let (h, array) = rest.split_at_mut(512);
        put(s0, 446 + 4, [0xee]);
        put(s0, 446 + 8, 1u32.to_le_bytes());
        put(s0, 446 + 12, 63u32.to_le_bytes());
        put(s0, 510, [0x55, 0xAA]);
        let entry = array.get_mut(..128).unwrap();
        put(entry, 0, [1; 16]);
        put(entry, 32, first_lba.to_le_bytes());
        put(entry, 40, last_lba.to_le_bytes());
        let array_crc = crc32(array.get(..4 * 128).unwrap());
        put(h, 0, *b"EFI PART");
        put(h, 12, 92u32.to_le_bytes());
        put(h, 24, 1u64.to_le_bytes());
        put(h, 40, 34u64.to_le_bytes());
        put(h, 48, 62u64.to_le_bytes());
        put(h, 72, 2u64.to_le_bytes());
        put(h, 80, 4u32.to_le_bytes());
        put(h, 84, 128u32.to_le_bytes());
        put(h, 88, array_crc.to_le_bytes());
        let crc = crc32(h.get(..92).unwrap());
        put(h, 16, crc.to_le_bytes());
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(&img, 0).unwrap();
        Arc::new(f)
    }

    #[test]
    fn gpt_partition_read() {
        let t = read(&gpt_image(34, 40), 64 * 512).unwrap();
        let p = t.get(1).unwrap();
        assert_eq!((p.start(), p.size()), (34 * 512, 7 * 512));
    }

    /// A partition whose byte offset does not fit 64 bits used to wrap in
    /// `start()` (a panic in a debug build; in release a window at byte 0
    /// that passed the truncation check).
    #[test]
    fn gpt_partition_past_64_bit_offsets() {
        let e = read(&gpt_image(1 << 55, (1 << 55) + 6), 64 * 512).unwrap_err();
        assert!(e.to_string().contains("beyond 64-bit"), "{e}");
        let e = read(&gpt_image(0, u64::MAX), 64 * 512).unwrap_err();
        assert!(e.to_string().contains("spans sectors 0 to"), "{e}");
    }
}
