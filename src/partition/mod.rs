//! Partition tables: MBR (mbrman) and GPT (gpt). Partitions become byte
//! windows; nothing here knows about filesystems.

use std::fs::File;
use std::sync::Arc;

use crate::bytes::hex;
use crate::image::{ReadAt, Window};

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
}

impl PartitionTable {
    pub fn get(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
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
    let mut reader = whole.clone();
    let mbr = mbrman::MBR::read_from(&mut reader, 512).map_err(|e| PartitionError::Corrupt {
        table: "MBR",
        detail: e.to_string(),
    })?;
    let table = if mbr.iter().any(|(_, p)| p.is_used() && p.sys == 0xee) {
        read_gpt(&whole)?
    } else {
        let id = mbr.header.disk_signature;
        let disk_id = hex(&[id[3], id[2], id[1], id[0]]);
        let mut partitions: Vec<Partition> = mbr
            .iter()
            .filter(|(_, p)| p.is_used())
            .map(|(i, p)| Partition {
                number: u32::try_from(i).unwrap_or(u32::MAX),
                start_sector: u64::from(p.starting_lba),
                sectors: u64::from(p.sectors),
                type_id: format!("{:#04x}", p.sys),
                type_name: mbr_type_name(p.sys).to_string(),
                partuuid: format!("{disk_id}-{i:02}"),
                name: String::new(),
            })
            .collect();
        partitions.sort_by_key(|p| p.number);
        PartitionTable {
            kind: TableKind::Mbr,
            disk_id,
            partitions,
        }
    };
    for p in &table.partitions {
        let end = p.start() + p.size();
        if end > size {
            return Err(PartitionError::Truncated {
                number: p.number,
                end,
                size,
            });
        }
    }
    Ok(table)
}

fn read_gpt(whole: &Window) -> Result<PartitionTable, PartitionError> {
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(whole.clone())
        .map_err(|e| PartitionError::Corrupt {
            table: "GPT",
            detail: e.to_string(),
        })?;
    let partitions = disk
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(&n, p)| {
            let type_id = p.part_type_guid.guid.to_string().to_lowercase();
            Partition {
                number: n,
                start_sector: p.first_lba,
                sectors: (p.last_lba + 1).saturating_sub(p.first_lba),
                type_name: gpt_type_name(&type_id).to_string(),
                type_id,
                partuuid: p.part_guid.to_string().to_lowercase(),
                name: p.name.clone(),
            }
        })
        .collect();
    Ok(PartitionTable {
        kind: TableKind::Gpt,
        disk_id: disk.guid().to_string().to_lowercase(),
        partitions,
    })
}
