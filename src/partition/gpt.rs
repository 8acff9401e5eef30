//! The GUID partition table (UEFI 2.10, section 5.3), read-only.
//!
//! Parsed here rather than through a crate: every header field comes from
//! an untrusted image and is checked against the spec and the disk size
//! before anything is sized or read from it (the `gpt` crate asserted on an
//! entry size other than 128, and sized reads from `num_entries`).

use super::{PartitionError, SECTOR};
use crate::bytes::{array_mut, crc32, le32, le64};
use crate::image::ReadAt;
use crate::image::Window;

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Header bytes covered by the spec's fields (UEFI: HeaderSize >= 92).
const MIN_HEADER: usize = 92;
/// The spec's entry size is 128 * 2^n; more than 4 KiB per entry is not a
/// table any tool writes.
const MAX_ENTRY_SIZE: u32 = 4096;
/// Bound on the entry array read into memory (16 KiB is the usual size;
/// the spec sets no maximum).
const MAX_ARRAY: u64 = 1 << 20;

/// One used entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub number: u32,
    pub type_guid: String,
    pub part_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gpt {
    pub disk_guid: String,
    pub first_usable: u64,
    pub last_usable: u64,
    pub entries: Vec<Entry>,
    /// Why the primary header (or its entry array) was not used, when the
    /// table was read from the backup header.
    pub primary_damage: Option<String>,
}

fn corrupt(detail: impl Into<String>) -> PartitionError {
    PartitionError::Corrupt {
        table: "GPT",
        detail: detail.into(),
    }
}

/// `N` bytes at `at` (zeros past the end).
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..)
        .and_then(<[u8]>::first_chunk::<N>)
        .copied()
        .unwrap_or([0; N])
}

/// Byte offset of sector `lba`, refused past 64 bits.
fn sector_offset(lba: u64) -> Result<u64, PartitionError> {
    lba.checked_mul(SECTOR)
        .ok_or_else(|| corrupt(format!("sector {lba} lies beyond 64-bit byte offsets")))
}

/// A GUID as stored on disk (first three fields little-endian), in the
/// canonical lower-case form.
pub(crate) fn guid(b: &[u8; 16]) -> String {
    let mut be = *b;
    be[0..4].reverse();
    be[4..6].reverse();
    be[6..8].reverse();
    crate::bytes::uuid(&be)
}

/// Read the table of a disk of `sectors` sectors: the primary header, or
/// the backup in the last sector when the primary is damaged.
pub(crate) fn read(disk: &Window, sectors: u64) -> Result<Gpt, PartitionError> {
    match read_at(disk, sectors, 1) {
        Ok(g) => Ok(g),
        Err(primary) => match sectors.checked_sub(1) {
            Some(last) if last > 1 => match read_at(disk, sectors, last) {
                Ok(mut g) => {
                    // Said, never silent (gdisk warns the same way): the
                    // next tool to write the disk may trust the primary.
                    g.primary_damage = Some(match &primary {
                        PartitionError::Corrupt { detail, .. } => detail.clone(),
                        e => e.to_string(),
                    });
                    Ok(g)
                }
                Err(_) => Err(primary),
            },
            _ => Err(primary),
        },
    }
}

fn read_at(disk: &Window, sectors: u64, lba: u64) -> Result<Gpt, PartitionError> {
    let which = if lba == 1 { "primary" } else { "backup" };
    let mut h = [0u8; 512];
    disk.read_exact_at(&mut h, sector_offset(lba)?)?;
    if &h[0..8] != SIGNATURE {
        return Err(corrupt(format!(
            "the {which} header (sector {lba}) lacks the \"EFI PART\" signature"
        )));
    }
    let size = le32(&h, 12);
    let stored = le32(&h, 16);
    // The checksum covers the header's `size` bytes with its own field as zeros.
    let mut copy = h;
    *array_mut::<4>(&mut copy, 16) = [0; 4];
    let covered = usize::try_from(size)
        .ok()
        .filter(|&n| n >= MIN_HEADER)
        .and_then(|n| copy.get(..n));
    let Some(covered) = covered else {
        return Err(corrupt(format!(
            "the {which} header claims {size} bytes (valid: {MIN_HEADER} to {})",
            h.len()
        )));
    };
    if crc32(covered) != stored {
        return Err(corrupt(format!(
            "the {which} header checksum does not match"
        )));
    }
    let (my_lba, first_usable, last_usable) = (le64(&h, 24), le64(&h, 40), le64(&h, 48));
    let (array_lba, count, entry_size) = (le64(&h, 72), le32(&h, 80), le32(&h, 84));
    if my_lba != lba {
        return Err(corrupt(format!(
            "the {which} header at sector {lba} says it is at sector {my_lba}"
        )));
    }
    if !(128..=MAX_ENTRY_SIZE).contains(&entry_size) || !entry_size.is_power_of_two() {
        return Err(corrupt(format!(
            "the {which} header gives a partition entry size of {entry_size} bytes (valid: 128, 256, ... {MAX_ENTRY_SIZE})"
        )));
    }
    let array_len = u64::from(count)
        .checked_mul(u64::from(entry_size))
        .filter(|&n| count != 0 && n <= MAX_ARRAY);
    let Some(array_len) = array_len else {
        return Err(corrupt(format!(
            "the {which} header gives {count} partition entries of {entry_size} bytes (1 to {} KiB of entries are supported)",
            MAX_ARRAY >> 10
        )));
    };
    let array_sectors = array_len.div_ceil(SECTOR);
    let array_end = array_lba.saturating_add(array_sectors);
    if array_lba < 2 || array_end > sectors {
        return Err(corrupt(format!(
            "the {which} partition entry array (sectors {array_lba} to {array_end}) lies outside the disk of {sectors} sectors"
        )));
    }
    if first_usable > last_usable.saturating_add(1) || last_usable >= sectors {
        return Err(corrupt(format!(
            "the {which} header gives usable sectors {first_usable} to {last_usable} on a disk of {sectors} sectors"
        )));
    }
    // At most MAX_ARRAY, checked above.
    let array_len = usize::try_from(array_len)
        .map_err(|_| corrupt(format!("a partition entry array of {array_len} bytes")))?;
    let mut array = vec![0u8; array_len];
    disk.read_exact_at(&mut array, sector_offset(array_lba)?)?;
    if crc32(&array) != le32(&h, 88) {
        return Err(corrupt(format!(
            "the {which} partition entry array checksum does not match"
        )));
    }
    let mut entries = Vec::new();
    // Between 128 and MAX_ENTRY_SIZE, checked above.
    let step = usize::try_from(entry_size)
        .map_err(|_| corrupt(format!("partition entry size {entry_size}")))?;
    for (number, e) in (1u32..).zip(array.chunks_exact(step)) {
        let type_raw: [u8; 16] = bytes_at(e, 0);
        if type_raw == [0; 16] {
            continue;
        }
        let (first_lba, last_lba) = (le64(e, 32), le64(e, 40));
        if last_lba < first_lba {
            return Err(corrupt(format!(
                "partition {number} ends (sector {last_lba}) before it starts (sector {first_lba})"
            )));
        }
        // The name: 36 UTF-16LE units from byte 56.
        let name = bytes_at::<72>(e, 56);
        let (units, _) = name.as_chunks::<2>();
        let units: Vec<u16> = units
            .iter()
            .map(|&c| u16::from_le_bytes(c))
            .take_while(|&u| u != 0)
            .collect();
        entries.push(Entry {
            number,
            type_guid: guid(&type_raw),
            part_guid: guid(&bytes_at(e, 16)),
            first_lba,
            last_lba,
            name: String::from_utf16_lossy(&units),
        });
    }
    Ok(Gpt {
        disk_guid: guid(&bytes_at(&h, 56)),
        first_usable,
        last_usable,
        entries,
        primary_damage: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crate::bytes::crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn mixed_endian_guid() {
        // The Linux filesystem type GUID as stored on disk.
        let b = [
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ];
        assert_eq!(guid(&b), "0fc63daf-8483-4772-8e79-3d69d8477de4");
    }
}
