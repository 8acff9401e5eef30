//! The MBR partition table: four primary entries in sector 0.
//!
//! Parsed here rather than through a crate because nothing more is needed
//! and an MBR read from an untrusted image must never follow a chain of
//! extended boot records (a loop there never ends). Extended partitions are
//! listed as such; their logical partitions are not read (Pi OS images have
//! none).

use super::{Partition, PartitionError};
use crate::bytes::{array, hex, le32};

/// One used primary entry: (1-based number, type byte, first LBA, sectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub number: u32,
    pub kind: u8,
    pub start: u32,
    pub sectors: u32,
}

/// The disk identifier and used entries of sector 0 (which the caller has
/// checked for the 0x55AA signature).
pub(crate) fn parse(s0: &[u8; 512]) -> Result<(String, Vec<Entry>), PartitionError> {
    let id = le32(s0, 440);
    let mut out = Vec::new();
    // Four 16-byte entries from byte 446 to the signature.
    let (entries, _) = array::<64>(s0, 446).as_chunks::<16>();
    for (number, raw) in (1u32..).zip(entries) {
        let (status, kind) = (raw[0], raw[4]);
        let (start, sectors) = (le32(raw, 8), le32(raw, 12));
        if kind == 0 || sectors == 0 {
            continue;
        }
        if status != 0 && status != 0x80 {
            return Err(PartitionError::Corrupt {
                table: "MBR",
                detail: format!(
                    "entry {number} has boot flag {status:#04x} (only 0x00 and 0x80 are valid)"
                ),
            });
        }
        out.push(Entry {
            number,
            kind,
            start,
            sectors,
        });
    }
    Ok((hex(&id.to_be_bytes()), out))
}

impl Entry {
    pub(crate) fn partition(&self, disk_id: &str, type_name: &str) -> Partition {
        Partition {
            number: self.number,
            start_sector: u64::from(self.start),
            sectors: u64::from(self.sectors),
            type_id: format!("{:#04x}", self.kind),
            type_name: type_name.to_string(),
            partuuid: format!("{disk_id}-{:02}", self.number),
            name: String::new(),
        }
    }
}
