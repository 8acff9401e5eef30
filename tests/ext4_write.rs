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
