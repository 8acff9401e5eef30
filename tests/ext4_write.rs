//! The ext4 write engine, judged by e2fsprogs: `e2fsck -fn` by its output,
//! debugfs for what was written.

mod support;

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use rpiimg::ext4::write::{Content, Meta, Writer};
use rpiimg::image::Window;
use support::*;

const NOW: i64 = 1_760_000_000;

/// Run `f` on the filesystem in `img` as one transaction and commit it.
fn edit(
    img: &Path,
    f: impl FnOnce(&mut Writer<Window>) -> rpiimg::ext4::Result<()>,
) -> rpiimg::ext4::Result<()> {
    let file = OpenOptions::new().read(true).write(true).open(img).unwrap();
    let len = file.metadata().unwrap().len();
    let win = Window::new(Arc::new(file), 0, len, true);
    let mut w = Writer::open(win, NOW)?;
    f(&mut w)?;
    let stage = w.finish()?;
    stage.commit()?;
    Ok(())
}

fn clean(img: &Path) {
    let p = e2fsck_problems(img, 0);
    assert!(p.is_empty(), "e2fsck -fn found problems:\n{}", p.join("\n"));
}

fn dbg(img: &Path, cmd: &str) -> String {
    debugfs(img, 0, cmd)
}

#[test]
fn basic_operations_are_fsck_clean() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    mkfs(&img, &MkfsOpts::default());
    edit(&img, |w| {
        w.mkdir("/etc/systemd/network", Meta::root(0o755), true)?;
        w.write_file(
            "/etc/hostname",
            Content::Bytes(b"ost04\n".to_vec()),
            Meta::root(0o644),
        )?;
        w.write_file(
            "/etc/systemd/network/10-eth0.network",
            Content::Bytes(b"[Match]\nName=eth0\n".to_vec()),
            Meta::root(0o644),
        )?;
        w.symlink("/etc/localtime", b"/usr/share/zoneinfo/Etc/UTC", 0, 0)?;
        w.symlink("/etc/slow", &[b'x'; 100], 0, 0)?;
        w.write_file(
            "/big.bin",
            Content::Bytes(vec![7u8; 3 << 20]),
            Meta {
                mode: 0o600,
                uid: 1000,
                gid: 1000,
            },
        )?;
        w.link("/etc/hostname", "/etc/hostname.bak")?;
        Ok(())
    })
    .unwrap();
    if let Ok(keep) = std::env::var("KEEP_IMG") {
        std::fs::copy(&img, keep).unwrap();
    }
    clean(&img);
    assert_eq!(dbg(&img, "cat /etc/hostname"), "ost04\n");
    let st = dbg(&img, "stat /big.bin");
    assert!(st.contains("User:  1000"), "{st}");
    assert!(st.contains("Links: 1"), "{st}");
    assert!(dbg(&img, "stat /etc/hostname").contains("Links: 2"));
}

fn count_entries(img: &Path, dir: &str) -> usize {
    dbg(img, &format!("ls -p {dir}"))
        .lines()
        .filter(|l| l.starts_with('/') && !l.starts_with("/0/"))
        .count()
        - 2
}

fn htree_levels(img: &Path, dir: &str) -> Option<u32> {
    let d = dbg(img, &format!("htree_dump {dir}"));
    d.lines()
        .find_map(|l| l.trim().strip_prefix("Indirect levels: "))
        .and_then(|v| v.trim().parse().ok())
}

fn long_name(i: usize) -> String {
    // Non-ASCII bytes hash differently under the signed and unsigned variants.
    format!("{i:05}-café-ñ-{}", "x".repeat(150 + i % 60))
}

fn htree_grow_delete_regrow(unsigned: bool) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    mkfs(
        &img,
        &MkfsOpts {
            size_mib: 256,
            unsigned_hash: unsigned,
            ..Default::default()
        },
    );
    edit(&img, |w| {
        w.mkdir("/d", Meta::root(0o755), false)?;
        for i in 0..10_000 {
            w.write_file(
                &format!("/d/{}", long_name(i)),
                Content::Bytes(Vec::new()),
                Meta::root(0o644),
            )?;
        }
        Ok(())
    })
    .unwrap();
    if let Ok(keep) = std::env::var("KEEP_IMG") {
        std::fs::copy(&img, keep).unwrap();
    }
    clean(&img);
    assert_eq!(count_entries(&img, "/d"), 10_000);
    assert_eq!(
        htree_levels(&img, "/d"),
        Some(1),
        "10 000 long names need a two-level index"
    );
    for i in [0, 4_999, 9_999] {
        let s = dbg(&img, &format!("stat \"/d/{}\"", long_name(i)));
        assert!(
            s.contains("Type: regular"),
            "lookup of {} failed: {s}",
            long_name(i)
        );
    }
    edit(&img, |w| {
        for i in (0..10_000).step_by(2) {
            w.remove(&format!("/d/{}", long_name(i)))?;
        }
        Ok(())
    })
    .unwrap();
    clean(&img);
    assert_eq!(count_entries(&img, "/d"), 5_000);
    edit(&img, |w| {
        for i in 10_000..15_000 {
            w.write_file(
                &format!("/d/{}", long_name(i)),
                Content::Bytes(b"x".to_vec()),
                Meta::root(0o644),
            )?;
        }
        Ok(())
    })
    .unwrap();
    clean(&img);
    assert_eq!(count_entries(&img, "/d"), 10_000);
}

#[test]
fn htree_10000_entries_signed() {
    htree_grow_delete_regrow(false);
}

#[test]
fn htree_10000_entries_unsigned() {
    htree_grow_delete_regrow(true);
}
