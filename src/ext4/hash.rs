//! Directory-index name hashes (E `dirhash.c`, K `fs/ext4/hash.c`).
//!
//! The hash arithmetic is C's unsigned 32-bit arithmetic, which wraps:
//! hence `wrapping_*` throughout.

pub(crate) const LEGACY: u8 = 0;
pub(crate) const HALF_MD4: u8 = 1;
pub(crate) const TEA: u8 = 2;
pub(crate) const LEGACY_UNSIGNED: u8 = 3;
pub(crate) const HALF_MD4_UNSIGNED: u8 = 4;
pub(crate) const TEA_UNSIGNED: u8 = 5;

const MD4_IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The hash variant a directory really uses: its dx_root says legacy,
/// half_md4 or tea, and the superblock's unsigned flag selects the
/// unsigned-char flavour.
pub(crate) fn effective_version(dx_version: u8, fs_unsigned: bool) -> u8 {
    match (dx_version, fs_unsigned) {
        (LEGACY, true) => LEGACY_UNSIGNED,
        (HALF_MD4, true) => HALF_MD4_UNSIGNED,
        (TEA, true) => TEA_UNSIGNED,
        _ => dx_version,
    }
}

/// Byte as C `char` would widen it: sign-extended unless `unsigned`.
fn widen(b: u8, unsigned: bool) -> u32 {
    if unsigned {
        u32::from(b)
    } else {
        i32::from(i8::from_le_bytes([b])).cast_unsigned()
    }
}

/// Pack `msg` four bytes to a word into `buf`, each word started from a
/// pad made of the length; words past the message are the pad alone.
fn str2hashbuf(msg: &[u8], buf: &mut [u32], unsigned: bool) {
    // C's `(__u32)len` (names are at most 255 bytes anyway).
    let [l0, l1, l2, l3, ..] = msg.len().to_le_bytes();
    let len32 = u32::from_le_bytes([l0, l1, l2, l3]);
    let mut pad = len32 | (len32 << 8);
    pad |= pad << 16;
    let (used, _) = msg.split_at(msg.len().min(buf.len().saturating_mul(4)));
    let mut words = buf.iter_mut();
    for chunk in used.chunks(4) {
        if let Some(w) = words.next() {
            *w = chunk
                .iter()
                .fold(pad, |val, &b| widen(b, unsigned).wrapping_add(val << 8));
        }
    }
    words.for_each(|w| *w = pad);
}

fn half_md4_transform(buf: &mut [u32; 4], inp: &[u32; 8]) {
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let (mut a, mut b, mut c, mut d) = (buf[0], buf[1], buf[2], buf[3]);
    macro_rules! round {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a.wrapping_add($f($b, $c, $d)).wrapping_add($x);
            $a = $a.rotate_left($s);
        };
    }
    round!(f, a, b, c, d, inp[0], 3);
    round!(f, d, a, b, c, inp[1], 7);
    round!(f, c, d, a, b, inp[2], 11);
    round!(f, b, c, d, a, inp[3], 19);
    round!(f, a, b, c, d, inp[4], 3);
    round!(f, d, a, b, c, inp[5], 7);
    round!(f, c, d, a, b, inp[6], 11);
    round!(f, b, c, d, a, inp[7], 19);

    round!(g, a, b, c, d, inp[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, inp[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, inp[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, inp[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, inp[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, inp[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, inp[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, inp[6].wrapping_add(K2), 13);

    round!(h, a, b, c, d, inp[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, inp[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, inp[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, inp[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, inp[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, inp[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, inp[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, inp[4].wrapping_add(K3), 15);

    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

fn tea_transform(buf: &mut [u32; 4], inp: &[u32; 4]) {
    const DELTA: u32 = 0x9E37_79B9;
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let (a, b, c, d) = (inp[0], inp[1], inp[2], inp[3]);
    let mut sum: u32 = 0;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(
            (b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b),
        );
        b1 = b1.wrapping_add(
            (b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

fn legacy(name: &[u8], unsigned: bool) -> u32 {
    let (mut hash0, mut hash1): (u32, u32) = (0x12a3_fe2d, 0x37ab_e8f9);
    for &b in name {
        let c = widen(b, unsigned);
        let mut hash = hash1.wrapping_add(hash0 ^ c.wrapping_mul(7_152_373));
        if hash & 0x8000_0000 != 0 {
            hash = hash.wrapping_sub(0x7fff_ffff);
        }
        hash1 = hash0;
        hash0 = hash;
    }
    hash0 << 1
}

/// What is left of `name` at each `step` bytes: the hashes consume the name
/// a block at a time but pad each block by the length still to come.
fn suffixes(name: &[u8], step: usize) -> impl Iterator<Item = &[u8]> {
    (0..name.len())
        .step_by(step)
        .filter_map(|start| name.get(start..))
}

/// The major hash of `name` for a directory using `version` (already
/// adjusted by [`effective_version`]); `None` for an unknown version.
pub(crate) fn name_hash(name: &[u8], version: u8, seed: [u32; 4]) -> Option<u32> {
    let mut buf = if seed.iter().any(|&w| w != 0) {
        seed
    } else {
        MD4_IV
    };
    let hash = match version {
        LEGACY | LEGACY_UNSIGNED => legacy(name, version == LEGACY_UNSIGNED),
        HALF_MD4 | HALF_MD4_UNSIGNED => {
            let unsigned = version == HALF_MD4_UNSIGNED;
            let mut inp = [0u32; 8];
            // An empty name still runs zero rounds, as in e2fsprogs.
            for rest in suffixes(name, 32) {
                str2hashbuf(rest, &mut inp, unsigned);
                half_md4_transform(&mut buf, &inp);
            }
            buf[1]
        }
        TEA | TEA_UNSIGNED => {
            let unsigned = version == TEA_UNSIGNED;
            let mut inp = [0u32; 4];
            for rest in suffixes(name, 16) {
                str2hashbuf(rest, &mut inp, unsigned);
                tea_transform(&mut buf, &inp);
            }
            buf[0]
        }
        _ => return None,
    };
    let hash = hash & !1;
    // The kernel reserves the top value as its end-of-directory cookie.
    Some(if hash == 0xFFFF_FFFE {
        0xFFFF_FFFC
    } else {
        hash
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from shared/docs/ext4-offline-writer.md §5 (identical to `debugfs dx_hash`),
    // seed 66666666-7777-8888-9999-aaaaaaaaaaaa.
    const SEED: [u32; 4] = [0x6666_6666, 0x8888_7777, 0xaaaa_9999, 0xaaaa_aaaa];

    #[test]
    fn vectors() {
        let cases: [(&str, u32, u32, u32, u32); 3] = [
            ("pi", 0xc90bfa5c, 0xc90bfa5c, 0xf2ce6ee0, 0xd55f8d30),
            ("ubuntu", 0x02fdcd8c, 0x02fdcd8c, 0xf9a8361a, 0x77f0cece),
            ("café", 0x2e24c96a, 0x60d84d3e, 0x8e6c32c0, 0x96ca5a2c),
        ];
        for (name, md4s, md4u, tea, leg) in cases {
            let n = name.as_bytes();
            assert_eq!(
                name_hash(n, HALF_MD4, SEED),
                Some(md4s),
                "md4 signed {name}"
            );
            assert_eq!(
                name_hash(n, HALF_MD4_UNSIGNED, SEED),
                Some(md4u),
                "md4 unsigned {name}"
            );
            assert_eq!(name_hash(n, TEA, SEED), Some(tea), "tea {name}");
            assert_eq!(name_hash(n, LEGACY, SEED), Some(leg), "legacy {name}");
        }
    }

    #[test]
    fn unknown_version_is_none() {
        assert_eq!(name_hash(b"x", 6, SEED), None);
    }

    #[test]
    fn effective_versions() {
        assert_eq!(effective_version(HALF_MD4, true), HALF_MD4_UNSIGNED);
        assert_eq!(effective_version(HALF_MD4, false), HALF_MD4);
        assert_eq!(
            effective_version(HALF_MD4_UNSIGNED, false),
            HALF_MD4_UNSIGNED
        );
    }
}
