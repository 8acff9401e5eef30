//! Bounds-checked field access and checked arithmetic for the writer.
//!
//! `crate::bytes` trusts its caller with offsets (it panics past the end);
//! the writer computes offsets from on-disk values (rec_len, counts,
//! limits), so here every access and every narrowing returns an error
//! instead: a damaged image can make an edit fail, never panic.

use std::fmt::Display;

use crate::ext4::error::{Ext4Error, Location, Result};

fn out_of_range(what: &str, off: usize, len: usize, size: usize, at: &Location) -> Ext4Error {
    Ext4Error::corrupt(
        format!("{what} at offset {off} (length {len}) lies outside a {size}-byte block"),
        at.clone(),
    )
}

/// `b[off..off + len]`, or an error naming `what`.
pub(super) fn field<'a>(
    b: &'a [u8],
    off: usize,
    len: usize,
    what: &str,
    at: &Location,
) -> Result<&'a [u8]> {
    off.checked_add(len)
        .and_then(|end| b.get(off..end))
        .ok_or_else(|| out_of_range(what, off, len, b.len(), at))
}

/// `&mut b[off..off + len]`, or an error naming `what`.
pub(super) fn field_mut<'a>(
    b: &'a mut [u8],
    off: usize,
    len: usize,
    what: &str,
    at: &Location,
) -> Result<&'a mut [u8]> {
    let size = b.len();
    off.checked_add(len)
        .and_then(|end| b.get_mut(off..end))
        .ok_or_else(|| out_of_range(what, off, len, size, at))
}

fn array<const N: usize>(b: &[u8], off: usize, what: &str, at: &Location) -> Result<[u8; N]> {
    let f = field(b, off, N, what, at)?;
    // `field` returned exactly N bytes, so the conversion cannot fail.
    <[u8; N]>::try_from(f).map_err(|_| out_of_range(what, off, N, b.len(), at))
}

pub(super) fn rd8(b: &[u8], off: usize, what: &str, at: &Location) -> Result<u8> {
    array::<1>(b, off, what, at).map(u8::from_le_bytes)
}

pub(super) fn rd16(b: &[u8], off: usize, what: &str, at: &Location) -> Result<u16> {
    array::<2>(b, off, what, at).map(u16::from_le_bytes)
}

pub(super) fn rd32(b: &[u8], off: usize, what: &str, at: &Location) -> Result<u32> {
    array::<4>(b, off, what, at).map(u32::from_le_bytes)
}

/// Copy `bytes` to `b[off..]`, or an error naming `what`.
pub(super) fn put(b: &mut [u8], off: usize, bytes: &[u8], what: &str, at: &Location) -> Result<()> {
    field_mut(b, off, bytes.len(), what, at)?.copy_from_slice(bytes);
    Ok(())
}

pub(super) fn wr8(b: &mut [u8], off: usize, v: u8, what: &str, at: &Location) -> Result<()> {
    put(b, off, &[v], what, at)
}

pub(super) fn wr16(b: &mut [u8], off: usize, v: u16, what: &str, at: &Location) -> Result<()> {
    put(b, off, &v.to_le_bytes(), what, at)
}

pub(super) fn wr32(b: &mut [u8], off: usize, v: u32, what: &str, at: &Location) -> Result<()> {
    put(b, off, &v.to_le_bytes(), what, at)
}

/// `base + index * size`: the offset of entry `index` of a table of
/// `size`-byte entries at `base`, or an error naming `what`.
pub(super) fn offset(
    base: usize,
    index: usize,
    size: usize,
    what: &str,
    at: &Location,
) -> Result<usize> {
    index
        .checked_mul(size)
        .and_then(|o| o.checked_add(base))
        .ok_or_else(|| overflow(&format!("offset of {what} {index}"), at))
}

/// The error for a computation on on-disk values that overflows.
pub(super) fn overflow(what: &str, at: &Location) -> Ext4Error {
    Ext4Error::corrupt(format!("{what} overflows"), at.clone())
}

/// `x` converted to a narrower field type, or an error naming the field
/// (instead of a silent fallback value that would write a wrong field).
pub(super) fn narrow<T, U>(x: U, what: &str, at: &Location) -> Result<T>
where
    T: TryFrom<U>,
    U: Copy + Display,
{
    T::try_from(x).map_err(|_| {
        Ext4Error::corrupt(
            format!("{what} {x} does not fit its on-disk field"),
            at.clone(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let at = Location::Superblock;
        let mut b = [1u8, 2, 3, 4];
        assert_eq!(rd16(&b, 2, "x", &at).unwrap(), 0x0403);
        assert!(rd16(&b, 3, "x", &at).is_err());
        assert!(rd32(&b, usize::MAX, "x", &at).is_err());
        assert!(wr32(&mut b, 1, 0, "x", &at).is_err());
        wr16(&mut b, 0, 0xBEEF, "x", &at).unwrap();
        assert_eq!(b, [0xEF, 0xBE, 3, 4]);
        assert!(narrow::<u16, usize>(70000, "x", &at).is_err());
        assert_eq!(narrow::<u16, usize>(7, "x", &at).unwrap(), 7);
    }
}
