//! Little-endian field access on raw on-disk records.
//!
//! On-disk structures are kept as the bytes read from disk and accessed
//! through these helpers, so that a writer changes exactly the fields it
//! means to and every other byte (including fields this program does not
//! know about) round-trips unchanged.
//!
//! Offsets are constants from the format specification and callers check a
//! record's length before reading its fields (a short record is reported as
//! corrupt there, where its name is known), so a field outside the record is
//! a bug in the caller, not bad input. This file is the one audited place
//! that turns such a bug into a panic naming the offset; the `try_` readers
//! are for parsing code whose offsets come from the data itself and which
//! reports a short record as an error.

#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

/// The `N` bytes of `b` at `off`, or `None` past the end of `b`.
fn try_field<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..)?.first_chunk::<N>().copied()
}

#[track_caller]
fn field<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    *array(b, off)
}

/// The panic of a field read outside its record (see the module comment).
#[track_caller]
fn short(n: usize, off: usize, len: usize) -> ! {
    panic!("{n}-byte field at offset {off} of a {len}-byte record: the caller did not check the record length")
}

/// The `N` bytes at `off` as an array (a fixed-size area of a record);
/// panics like [`le16`] when the record is too short.
#[track_caller]
pub(crate) fn array<const N: usize>(b: &[u8], off: usize) -> &[u8; N] {
    b.get(off..)
        .and_then(<[u8]>::first_chunk::<N>)
        .unwrap_or_else(|| short(N, off, b.len()))
}

/// [`array`] for writing.
#[track_caller]
pub(crate) fn array_mut<const N: usize>(b: &mut [u8], off: usize) -> &mut [u8; N] {
    let len = b.len();
    b.get_mut(off..)
        .and_then(<[u8]>::first_chunk_mut::<N>)
        .unwrap_or_else(|| short(N, off, len))
}

#[track_caller]
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(field(b, off))
}

#[track_caller]
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(field(b, off))
}

#[track_caller]
pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(field(b, off))
}

#[track_caller]
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(field(b, off))
}

/// [`le16`], or `None` when the field is not inside `b`.
pub(crate) fn try_le16(b: &[u8], off: usize) -> Option<u16> {
    try_field(b, off).map(u16::from_le_bytes)
}

/// [`le32`], or `None` when the field is not inside `b`.
pub(crate) fn try_le32(b: &[u8], off: usize) -> Option<u32> {
    try_field(b, off).map(u32::from_le_bytes)
}

#[track_caller]
pub(crate) fn set_le16(b: &mut [u8], off: usize, v: u16) {
    *array_mut(b, off) = v.to_le_bytes();
}

#[track_caller]
pub(crate) fn set_le32(b: &mut [u8], off: usize, v: u32) {
    *array_mut(b, off) = v.to_le_bytes();
}

/// Lowercase hex of a byte slice.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter().fold(
        String::with_capacity(b.len().saturating_mul(2)),
        |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        },
    )
}

/// Parse a hex string (any case) into bytes; `None` unless every character is hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    // Checked digit by digit: `from_str_radix` alone would also take a
    // leading '+' ("+f" as 0x0f).
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| match *pair {
            [hi, lo] => Some(hex_digit(hi)? << 4 | hex_digit(lo)?),
            _ => None,
        })
        .collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Format 16 bytes as a canonical UUID string.
pub fn uuid(b: &[u8; 16]) -> String {
    let h = hex(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `b` is all zero bytes. Compares 64-byte slices against a zero
/// block (memcmp), several times faster than a byte loop on image-sized data.
pub(crate) fn is_zero(b: &[u8]) -> bool {
    const Z: [u8; 64] = [0; 64];
    let mut chunks = b.chunks_exact(64);
    chunks.all(|c| c == Z) && chunks.remainder().iter().all(|&x| x == 0)
}

/// The `(offset, length)` pieces of at most `size` bytes that cover the
/// `len` bytes from `start`, in order: the walk every positioned copy of
/// large data shares (outputs, flash). The ranges walked lie inside files,
/// whose ends are u64s, so `start + len` does not overflow (it would end
/// the walk early, never wrap).
pub(crate) fn pieces(start: u64, len: u64, size: usize) -> impl Iterator<Item = (u64, usize)> {
    let size = size.max(1);
    let end = start.saturating_add(len);
    (start..end).step_by(size).map(move |at| {
        // At most `size`, so it fits a usize; `at` is below `end`.
        let n = usize::try_from(end.saturating_sub(at)).map_or(size, |n| n.min(size));
        (at, n)
    })
}

/// A `Write` that hashes what it is given (to stream content into sha256).
#[derive(Default)]
pub(crate) struct Sha256Writer(sha2::Sha256);

impl Sha256Writer {
    pub(crate) fn finish(self) -> [u8; 32] {
        sha2::Digest::finalize(self.0).into()
    }
}

impl std::io::Write for Sha256Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// CRC-32 (IEEE 802.3, reflected): GPT headers and arrays, xz headers,
/// indexes and footers.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Sorted, merged `[start, end)` ranges: overlapping or touching ones
/// become one, empty ones go.
pub(crate) fn merge_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = ranges.into_iter().filter(|(a, b)| a < b).collect();
    all.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (a, b) in all {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_empty_ones_go() {
        let m = merge_ranges([(5, 7), (0, 2), (2, 3), (6, 9), (4, 4)]);
        assert_eq!(m, vec![(0, 3), (5, 9)]);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0x5e, 0xed, 0x00, 0x01]), "5eed0001");
        assert_eq!(unhex("5EED0001"), Some(vec![0x5e, 0xed, 0, 1]));
        assert_eq!(unhex("5eed000"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("+f"), None);
    }

    #[test]
    fn uuid_format() {
        let b: [u8; 16] = [
            0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44, 0x55, 0x55, 0x55, 0x55,
            0x55, 0x55,
        ];
        assert_eq!(uuid(&b), "11111111-2222-3333-4444-555555555555");
    }
}
