//! Every ext4 checksum, in one place.
//!
//! ext4 uses the *raw* CRC32C update (seed taken as given, no final
//! inversion) and chains one call's result into the next. The `crc32c`
//! crate computes the standard CRC (inverted in and out), hence the
//! inversions in [`crc32c_raw`].
//!
//! A checksum covers its own field as zeros: [`zeroed`] copies the record
//! with those bytes cleared, rather than chaining slices cut at the field,
//! so a record shorter than its format says cannot make this panic (the
//! parsers refuse such records before their checksums are computed).

use crate::bytes::le32;

/// e2fsprogs' `ext2fs_crc32c_le`: raw CRC32C update.
pub(crate) fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// The filesystem checksum seed: `s_checksum_seed` with metadata_csum_seed,
/// otherwise derived from the UUID.
pub(crate) fn fs_seed(uuid: &[u8; 16], csum_seed_field: Option<u32>) -> u32 {
    csum_seed_field.unwrap_or_else(|| crc32c_raw(!0, uuid))
}

/// Superblock checksum: over bytes [0, 0x3FC) from `~0`, not the fs seed.
/// The 1024 is the on-disk superblock's size (`superblock::SUPERBLOCK_SIZE`,
/// spelled out so that the checksums depend on no structure they check).
pub(crate) fn superblock(sb: &[u8; 1024]) -> u32 {
    let (covered, _) = sb.split_at(0x3FC);
    crc32c_raw(!0, covered)
}

/// `record` with the fields at `fields` (offset, length) cleared, as far
/// as they lie inside it.
fn zeroed(record: &[u8], fields: &[(usize, usize)]) -> Vec<u8> {
    let mut copy = record.to_vec();
    for &(off, len) in fields {
        if let Some(field) = copy.get_mut(off..) {
            field.iter_mut().take(len).for_each(|b| *b = 0);
        }
    }
    copy
}

/// Group descriptor checksum (16 bits), computed with the checksum field
/// (0x1E..0x20) treated as zero.
pub(crate) fn group_desc(seed: u32, group: u32, desc: &[u8]) -> u16 {
    let crc = crc32c_raw(seed, &group.to_le_bytes());
    let crc = crc32c_raw(crc, &zeroed(desc, &[(0x1E, 2)]));
    (crc & 0xFFFF) as u16
}

/// Block and inode bitmap checksums (no group number in the input).
pub(crate) fn bitmap(seed: u32, bitmap: &[u8]) -> u32 {
    crc32c_raw(seed, bitmap)
}

fn per_inode(seed: u32, ino: u32, generation: u32) -> u32 {
    let crc = crc32c_raw(seed, &ino.to_le_bytes());
    crc32c_raw(crc, &generation.to_le_bytes())
}

/// Inode checksum over the whole on-disk record with both checksum halves
/// (0x7C..0x7E and, when present, 0x82..0x84) treated as zero.
pub(crate) fn inode(seed: u32, ino: u32, raw: &[u8]) -> u32 {
    let generation = le32(raw, 0x64);
    // The high half exists only in a large inode (the record is then at
    // least 256 bytes, inode sizes being powers of two).
    let fields: &[(usize, usize)] = if raw.len() > 0x84 {
        &[(0x7C, 2), (0x82, 2)]
    } else {
        &[(0x7C, 2)]
    };
    crc32c_raw(per_inode(seed, ino, generation), &zeroed(raw, fields))
}

/// Checksum of the data covered by a directory leaf tail or an extent block
/// tail: the per-inode seed continued over `covered`.
pub(crate) fn inode_block(seed: u32, ino: u32, generation: u32, covered: &[u8]) -> u32 {
    crc32c_raw(per_inode(seed, ino, generation), covered)
}

/// htree (dx_root / dx_node) checksum: the counted part of the block, then
/// the tail's reserved word, then a zero word standing in for the checksum.
pub(crate) fn dx_block(
    seed: u32,
    ino: u32,
    generation: u32,
    counted: &[u8],
    reserved: [u8; 4],
) -> u32 {
    let mut crc = inode_block(seed, ino, generation, counted);
    crc = crc32c_raw(crc, &reserved);
    crc32c_raw(crc, &[0; 4])
}

/// Extended-attribute block checksum: seeded with the 64-bit block number,
/// over the block with `h_checksum` (0x10..0x14) treated as zero.
pub(crate) fn xattr_block(seed: u32, block: u64, data: &[u8]) -> u32 {
    let crc = crc32c_raw(seed, &block.to_le_bytes());
    crc32c_raw(crc, &zeroed(data, &[(0x10, 4)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from shared/docs/ext4-offline-writer.md §10.
    #[test]
    fn raw_crc_vectors() {
        assert_eq!(crc32c_raw(!0, b"123456789"), 0x1CF9_6D7C);
        let mut d = Vec::new();
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&2u32.to_le_bytes());
        assert_eq!(crc32c_raw(!0, &d), 0x858C_13D3);
        assert_eq!(crc32c_raw(123, &d), 0xFC52_7A0A);
    }

    #[test]
    fn uuid_seed_vector() {
        let uuid = [
            0x07, 0x32, 0x9f, 0xb1, 0x33, 0x49, 0x47, 0x83, 0xb4, 0x3d, 0x33, 0xb6, 0x4a, 0xbf,
            0xe3, 0x7e,
        ];
        assert_eq!(fs_seed(&uuid, None), 0xA7B3_4F66);
        assert_eq!(fs_seed(&uuid, Some(7)), 7);
    }

    #[test]
    fn chaining_equals_one_pass() {
        let data = b"the quick brown fox jumps over the lazy dog";
        let (a, b) = data.split_at(17);
        assert_eq!(crc32c_raw(crc32c_raw(5, a), b), crc32c_raw(5, data));
    }

    #[test]
    fn all_zero_inode_is_stable() {
        // An all-zero record checksums to a value independent of stored fields.
        let raw = [0u8; 256];
        let c = inode(1, 12, &raw);
        let mut raw2 = raw;
        raw2[0x7C] = 0xAA;
        raw2[0x82] = 0xBB;
        assert_eq!(inode(1, 12, &raw2), c);
    }
}
