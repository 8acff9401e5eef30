//! Partition tables: MBR (mbrman) and GPT (gpt). Partitions become byte
//! windows; nothing here knows about filesystems.

use std::fs::File;
use std::sync::Arc;

use crate::image::{ReadAt, Window};

pub(crate) mod gpt;
pub(crate) mod mbr;

pub const SECTOR: u64 = 512;

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

impl Partition {
    pub fn start(&self) -> u64 {
        self.start_sector * SECTOR
    }
    pub fn size(&self) -> u64 {
        self.sectors * SECTOR
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
            .map(|e| Partition {
                number: e.number,
                start_sector: e.first_lba,
                sectors: e.last_lba - e.first_lba + 1,
                type_name: gpt_type_name(&e.type_guid).to_string(),
                type_id: e.type_guid.clone(),
                partuuid: e.part_guid.clone(),
                name: e.name.clone(),
            })
            .collect();
        PartitionTable {
            kind: TableKind::Gpt,
            disk_id: g.disk_guid,
            partitions,
            problems: Vec::new(),
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
            usable: (1, sectors.saturating_sub(1)),
        }
    };
    for p in &table.partitions {
        let end = p.start().saturating_add(p.size());
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
        let p_last = p.start_sector + p.sectors - 1;
        if p.start_sector < first || p_last > last {
            out.push(format!(
                "partition {} (sectors {} to {p_last}) lies outside the usable sectors {first} to {last} and overlaps the partition table",
                p.number, p.start_sector
            ));
        }
    }
    let mut sorted: Vec<&Partition> = t.partitions.iter().filter(|p| p.sectors > 0).collect();
    sorted.sort_by_key(|p| (p.start_sector, p.number));
    for (i, a) in sorted.iter().enumerate() {
        let a_end = a.start_sector + a.sectors;
        for b in sorted.iter().skip(i + 1) {
            if b.start_sector >= a_end {
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
                a_end - 1,
                b.number,
                b.start_sector,
                b.start_sector + b.sectors - 1
            ));
        }
    }
    out
}
