//! The ext4 write engine, judged by e2fsprogs: `e2fsck -fn` by its output,
//! debugfs for what was written.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use crate::support::*;
use rpiimg::ext4::write::{Content, Meta, Writer};
use rpiimg::image::Window;

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

fn open_writer(img: &Path) -> rpiimg::ext4::Result<Writer<Window>> {
    let file = OpenOptions::new().read(true).write(true).open(img).unwrap();
    let len = file.metadata().unwrap().len();
    Writer::open(Window::new(Arc::new(file), 0, len, true), NOW)
}

fn dbg_w(img: &Path, cmds: &str) {
    for c in cmds.lines() {
        let o = tool("debugfs")
            .args(["-w", "-R", c])
            .arg(img)
            .output()
            .unwrap();
        assert!(o.status.success(), "debugfs -w {c}");
    }
}

/// A crafted image must be refused before anything is written, with a
/// message naming the problem.
fn expect_refusal(img: &Path, needle: &str) {
    let before = sha256_file(img);
    let err = match open_writer(img) {
        Ok(_) => panic!("writer accepted an image it must refuse ({needle})"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(needle),
        "error {err:?} should mention {needle:?}"
    );
    assert_eq!(sha256_file(img), before);
}

#[test]
fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str, o: &MkfsOpts| {
        let p = dir.path().join(name);
        mkfs(&p, o);
        p
    };
    let d = MkfsOpts::default();
    let img = fresh("recover.img", &d);
    dbg_w(&img, "feature needs_recovery");
    expect_refusal(&img, "journal");
    let img = fresh("state.img", &d);
    dbg_w(&img, "ssv state 0");
    expect_refusal(&img, "not cleanly unmounted");
    let img = fresh("errors.img", &d);
    dbg_w(&img, "ssv state 3");
    expect_refusal(&img, "errors");
    let img = fresh("orphan.img", &d);
    dbg_w(&img, "ssv last_orphan 12");
    expect_refusal(&img, "orphan");
    for (feat, needle) in [
        ("inline_data", "inline_data"),
        ("encrypt", "encrypt"),
        ("casefold", "casefold"),
        ("quota", "quota"),
        ("^metadata_csum", "metadata_csum"),
    ] {
        let img = fresh(
            &format!("{}.img", feat.trim_start_matches('^')),
            &MkfsOpts {
                features: &format!("^orphan_file,^metadata_csum_seed,{feat}"),
                ..Default::default()
            },
        );
        expect_refusal(&img, needle);
    }
    // A journal with transactions still in it (s_start != 0).
    let img = fresh("journal.img", &d);
    let jblk: u64 = dbg(&img, "bmap <8> 0").trim().parse().unwrap();
    let f = OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &1u32.to_be_bytes(), jblk * 4096 + 0x1C).unwrap();
    drop(f);
    expect_refusal(&img, "journal");
}

#[test]
fn block_mapped_files_are_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("old.conf"), vec![b'o'; 10_000]).unwrap();
    let img = dir.path().join("fs.img");
    mkfs(
        &img,
        &MkfsOpts {
            features: "^orphan_file,^metadata_csum_seed,^extent",
            populate: Some(&src),
            ..Default::default()
        },
    );
    let before = sha256_file(&img);
    let err = edit(&img, |w| {
        w.write_file("/new", Content::Bytes(b"fine".to_vec()), Meta::root(0o644))?;
        w.write_file(
            "/old.conf",
            Content::Bytes(b"x".to_vec()),
            Meta::root(0o644),
        )?;
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("block map"), "{err}");
    assert_eq!(sha256_file(&img), before, "nothing may be written");
}

#[test]
fn full_filesystem_leaves_the_image_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    mkfs(
        &img,
        &MkfsOpts {
            size_mib: 24,
            ..Default::default()
        },
    );
    let before = sha256_file(&img);
    let err = edit(&img, |w| {
        w.mkdir("/data", Meta::root(0o755), false)?;
        for i in 0..100 {
            w.write_file(
                &format!("/data/f{i}"),
                Content::Bytes(vec![1u8; 1 << 20]),
                Meta::root(0o644),
            )?;
        }
        Ok(())
    })
    .unwrap_err();
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_eq!(sha256_file(&img), before);
    // Inodes run out too.
    let err = edit(&img, |w| {
        for i in 0..100_000 {
            w.write_file(
                &format!("/e{i}"),
                Content::Bytes(Vec::new()),
                Meta::root(0o644),
            )?;
        }
        Ok(())
    })
    .unwrap_err();
    assert!(err.to_string().contains("no free inodes"), "{err}");
    assert_eq!(sha256_file(&img), before);
}

#[test]
fn xattrs_survive_overwrite_and_ea_blocks_are_released() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("usr/bin")).unwrap();
    std::fs::write(src.join("usr/bin/ping"), b"old ping").unwrap();
    std::fs::write(src.join("usr/bin/big"), b"big xattr").unwrap();
    let img = dir.path().join("fs.img");
    mkfs(
        &img,
        &MkfsOpts {
            populate: Some(&src),
            ..Default::default()
        },
    );
    let cap = dir.path().join("cap");
    std::fs::write(
        &cap,
        [
            2, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    )
    .unwrap();
    let big = dir.path().join("bigval");
    std::fs::write(&big, vec![b'v'; 1500]).unwrap();
    dbg_w(
        &img,
        &format!(
            "ea_set -f {} /usr/bin/ping security.capability\nea_set -f {} /usr/bin/big user.big",
            cap.display(),
            big.display()
        ),
    );
    let st = dbg(&img, "stat /usr/bin/big");
    let acl: u64 = st
        .lines()
        .find_map(|l| l.split("File ACL: ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("EA block");
    assert!(acl > 0);
    edit(&img, |w| {
        w.write_file(
            "/usr/bin/ping",
            Content::Bytes(vec![b'p'; 50_000]),
            Meta::root(0o755),
        )?;
        w.remove("/usr/bin/big")?;
        Ok(())
    })
    .unwrap();
    clean(&img);
    assert!(dbg(&img, "ea_list /usr/bin/ping").contains("security.capability (20)"));
    assert!(
        dbg(&img, &format!("testb {acl}")).contains("not in use"),
        "EA block must be freed"
    );
}

#[test]
fn rename_directories_across_parents_and_hard_links() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    mkfs(&img, &MkfsOpts::default());
    edit(&img, |w| {
        w.mkdir(
            "/home/pi/.ssh",
            Meta {
                mode: 0o700,
                uid: 1000,
                gid: 1000,
            },
            true,
        )?;
        w.write_file(
            "/home/pi/.ssh/authorized_keys",
            Content::Bytes(b"ssh-ed25519 AAAA".to_vec()),
            Meta {
                mode: 0o600,
                uid: 1000,
                gid: 1000,
            },
        )?;
        w.mkdir("/srv/users", Meta::root(0o755), true)?;
        w.write_file("/a", Content::Bytes(b"shared".to_vec()), Meta::root(0o644))?;
        w.link("/a", "/srv/b")?;
        Ok(())
    })
    .unwrap();
    edit(&img, |w| {
        w.rename("/home/pi", "/srv/users/ost")?;
        w.remove("/a")?;
        Ok(())
    })
    .unwrap();
    clean(&img);
    let ls = dbg(&img, "ls -p /srv/users/ost");
    let parent_line = ls
        .lines()
        .find(|l| l.split('/').nth(5) == Some(".."))
        .unwrap();
    let users_ino = dbg(&img, "ls -p /srv/users");
    let users_self = users_ino
        .lines()
        .find(|l| l.split('/').nth(5) == Some("."))
        .unwrap();
    assert_eq!(
        parent_line.split('/').nth(1),
        users_self.split('/').nth(1),
        "'..' of the moved directory must be its new parent"
    );
    assert_eq!(dbg(&img, "cat /srv/b"), "shared");
    assert!(dbg(&img, "stat /srv/b").contains("Links: 1"));
    assert!(
        edit(&img, |w| w.rename("/srv", "/srv/users/ost/x")).is_err(),
        "a directory cannot move into itself"
    );
}

#[test]
fn large_file_gets_a_depth_one_tree_or_few_extents() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    mkfs(
        &img,
        &MkfsOpts {
            size_mib: 400,
            ..Default::default()
        },
    );
    let src = dir.path().join("blob");
    let data: Vec<u8> = (0..(256u32 << 20) / 4)
        .flat_map(|i| i.to_le_bytes())
        .collect();
    std::fs::write(&src, &data).unwrap();
    edit(&img, |w| {
        w.write_file(
            "/blob",
            Content::HostFile {
                path: src.clone(),
                len: data.len() as u64,
            },
            Meta::root(0o644),
        )?;
        Ok(())
    })
    .unwrap();
    clean(&img);
    let out = dir.path().join("back");
    dbg(&img, &format!("dump /blob {}", out.display()));
    assert!(
        std::fs::read(&out).unwrap() == data,
        "256 MiB file reads back identical"
    );
}

#[test]
fn kernel_mount_reads_what_was_written() {
    if !is_root() {
        eprintln!("skipped: kernel loop mount needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    mkfs(
        &img,
        &MkfsOpts {
            features: "orphan_file,metadata_csum_seed",
            ..Default::default()
        },
    );
    edit(&img, |w| {
        w.mkdir("/etc/netplan", Meta::root(0o755), true)?;
        w.write_file(
            "/etc/netplan/50-cloud-init.yaml",
            Content::Bytes(b"network: {version: 2}\n".to_vec()),
            Meta::root(0o600),
        )?;
        w.symlink("/etc/slow", "/x".repeat(40).as_bytes(), 0, 0)?;
        for i in 0..400 {
            w.write_file(
                &format!("/etc/f{i:04}"),
                Content::Bytes(vec![b'k'; i]),
                Meta::root(0o644),
            )?;
        }
        Ok(())
    })
    .unwrap();
    let mnt = dir.path().join("mnt");
    let mounted = match mount(&["-o", "loop,ro"], &img, &mnt) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipped: loop mount unavailable here: {e}");
            return;
        }
    };
    {
        assert_eq!(
            std::fs::read(mnt.join("etc/netplan/50-cloud-init.yaml")).unwrap(),
            b"network: {version: 2}\n"
        );
        assert_eq!(
            std::fs::read_link(mnt.join("etc/slow"))
                .unwrap()
                .to_str()
                .unwrap(),
            "/x".repeat(40)
        );
        for i in [0usize, 1, 399] {
            assert_eq!(
                std::fs::read(mnt.join(format!("etc/f{i:04}"))).unwrap(),
                vec![b'k'; i]
            );
        }
        assert_eq!(std::fs::read_dir(mnt.join("etc")).unwrap().count(), 402);
    }
    drop(mounted);
    clean(&img);
}

/// `stable_inodes` (compat 0x800) promises that inode numbers and the UUID
/// never change, which fscrypt's inode-number-based keys rely on. The writer
/// keeps both by construction: it allocates new inodes and frees removed
/// ones but never moves one, and it never sets the UUID. So the feature is
/// supported by its table row; this test holds the writer to the promise.
#[test]
fn stable_inodes_keeps_inode_numbers_and_uuid() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), "raspberrypi\n").unwrap();
    std::fs::write(src.join("etc/old.conf"), "old\n").unwrap();
    let img = dir.path().join("fs.img");
    mkfs(
        &img,
        &MkfsOpts {
            features: "^orphan_file,^metadata_csum_seed,stable_inodes",
            populate: Some(&src),
            ..Default::default()
        },
    );
    let uuid = |img: &Path| {
        let text = dbg(img, "stats");
        assert!(text.contains("stable_inodes"), "{text}");
        text.lines()
            .find(|l| l.starts_with("Filesystem UUID:"))
            .unwrap()
            .to_string()
    };
    let ino = |img: &Path, p: &str| {
        dbg(img, &format!("stat {p}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let before = (uuid(&img), ino(&img, "/etc/hostname"), ino(&img, "/etc"));
    edit(&img, |w| {
        w.write_file(
            "/etc/hostname",
            Content::Bytes(b"ost04\n".to_vec()),
            Meta::root(0o644),
        )?;
        w.remove("/etc/old.conf")?;
        w.mkdir("/etc/systemd/network", Meta::root(0o755), true)?;
        w.write_file(
            "/etc/systemd/network/10-eth0.network",
            Content::Bytes(b"[Match]\nName=eth0\n".to_vec()),
            Meta::root(0o644),
        )?;
        Ok(())
    })
    .expect("a stable_inodes filesystem is written");
    clean(&img);
    assert_eq!(dbg(&img, "cat /etc/hostname"), "ost04\n");
    let after = (uuid(&img), ino(&img, "/etc/hostname"), ino(&img, "/etc"));
    assert_eq!(before, after, "the UUID or an inode number changed");
}
