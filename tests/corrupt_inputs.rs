//! Damaged images give one clear error and a non-zero exit, never a panic,
//! and the input is left as it was.

mod support;

use std::fs::OpenOptions;
use std::path::Path;

use support::*;

const BOOKWORM: &[&str] = &["--flavour", "bookworm", "--hash", "signed"];

/// Run `rpiimg args`, expect exit 2 with `needle` in the message; the image is unchanged.
fn expect_error(img: &Path, args: &[&str], needle: &str) {
    let before = std::fs::read(img).unwrap();
    let o = rpiimg(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2 for {args:?}, got {:?}: {err}",
        o.status.code()
    );
    assert!(
        err.contains(needle),
        "error for {args:?} should mention {needle:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(std::fs::read(img).unwrap() == before, "input changed");
}

fn patch(img: &Path, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn flip(img: &Path, off: u64) {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new().read(true).write(true).open(img).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], off).unwrap();
}

/// First number after `key` in debugfs output.
fn number_after(text: &str, key: &str) -> u64 {
    let i = text
        .find(key)
        .unwrap_or_else(|| panic!("{key:?} not in {text}"))
        + key.len();
    let rest = text[i..].trim_start();
    // debugfs prints some numbers in hex ("offset 0x0c00").
    if let Some(hex) = rest.strip_prefix("0x") {
        let digits: String = hex.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        return u64::from_str_radix(&digits, 16).unwrap();
    }
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn truncated_xz() {
    let dir = tempfile::tempdir().unwrap();
    let xz = copy_fixture(&["--flavour", "bookworm", "--xz", "multi"], dir.path());
    let len = std::fs::metadata(&xz).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&xz)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    expect_error(
        &xz,
        &["inspect", xz.to_str().unwrap(), "-q"],
        "truncated or corrupt",
    );
}

#[test]
fn wrong_sha256_pin() {
    let img = fixture(BOOKWORM);
    let pin = "0".repeat(64);
    expect_error(
        &img,
        &["inspect", img.to_str().unwrap(), "--sha256", &pin, "-q"],
        "sha256 mismatch",
    );
    expect_error(
        &img,
        &["inspect", img.to_str().unwrap(), "--sha256", "abc", "-q"],
        "invalid sha256 pin",
    );
}

#[test]
fn truncated_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(BOOKWORM, dir.path());
    let len = std::fs::metadata(&img).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(len - 10 * 1024 * 1024)
        .unwrap();
    expect_error(&img, &["inspect", img.to_str().unwrap(), "-q"], "truncated");
}

#[test]
fn bad_mbr_signature() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(BOOKWORM, dir.path());
    patch(&img, 510, &[0, 0]);
    expect_error(
        &img,
        &["inspect", img.to_str().unwrap(), "-q"],
        "boot signature",
    );
}

#[test]
fn zeroed_superblock() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(BOOKWORM, dir.path());
    let (off, _) = partition(&img, 2);
    patch(&img, off + 1024, &[0u8; 1024]);
    expect_error(
        &img,
        &["inspect", img.to_str().unwrap(), "-q"],
        "bad superblock magic",
    );
}

#[test]
fn flipped_byte_in_an_inode() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(BOOKWORM, dir.path());
    let (off, _) = partition(&img, 2);
    let imap = debugfs(&img, off, "imap /etc/hostname");
    let block = number_after(&imap, "located at block");
    let offset = number_after(&imap, "offset");
    // The uid byte: still a plausible inode, only the checksum can tell.
    flip(&img, off + block * 4096 + offset + 2);
    expect_error(
        &img,
        &["cat", img.to_str().unwrap(), "/etc/hostname"],
        "inode checksum does not match",
    );
}

#[test]
fn flipped_byte_in_a_directory_block() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(BOOKWORM, dir.path());
    let (off, _) = partition(&img, 2);
    let block = number_after(&debugfs(&img, off, "bmap /etc/ssh 0"), "");
    // The first byte of the first real name (after the 12-byte "." and ".." records).
    flip(&img, off + block * 4096 + 32);
    expect_error(
        &img,
        &["cat", img.to_str().unwrap(), "/etc/ssh/sshd_config"],
        "directory block checksum",
    );
}

#[test]
fn flipped_byte_in_an_extent_block() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(BOOKWORM, dir.path());
    let (off, _) = partition(&img, 2);
    let stat = debugfs(&img, off, "stat /usr/lib/fragmented.bin");
    let etb = number_after(&stat, "(ETB0):");
    flip(&img, off + etb * 4096 + 12 + 4);
    expect_error(
        &img,
        &["cat", img.to_str().unwrap(), "/usr/lib/fragmented.bin"],
        "extent block checksum",
    );
}

#[test]
fn not_a_disk_image() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.img");
    std::fs::write(&p, vec![b'x'; 4096]).unwrap();
    expect_error(
        &p,
        &["inspect", p.to_str().unwrap(), "-q"],
        "boot signature",
    );
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    expect_error(
        &empty,
        &["inspect", empty.to_str().unwrap(), "-q"],
        "empty or truncated",
    );
    let missing = dir.path().join("missing.img");
    let o = rpiimg(&["inspect", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot open"), "{}", stderr(&o));
}

#[test]
fn missing_path_inside_image() {
    let img = fixture(BOOKWORM);
    expect_error(
        &img,
        &["cat", img.to_str().unwrap(), "/etc/nope"],
        "/etc/nope: no such file",
    );
    expect_error(
        &img,
        &["cat", img.to_str().unwrap(), "/etc"],
        "is a directory",
    );
}
