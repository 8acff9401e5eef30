//! `rpiimg fs` on Pi OS-like fixtures: edits land where the booted system
//! would see them (ext4 root, FAT /boot/firmware), checked with debugfs,
//! mtools, e2fsck and fsck.fat; a failing batch changes nothing.

use std::path::Path;

use crate::support::*;

fn fat_clean(img: &Path) {
    let (off, size) = partition(img, 1);
    let dir = tempfile::tempdir().unwrap();
    let fat = dir.path().join("fat.img");
    let data = {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(img).unwrap();
        f.seek(SeekFrom::Start(off)).unwrap();
        let mut v = vec![0u8; usize::try_from(size).unwrap()];
        f.read_exact(&mut v).unwrap();
        v
    };
    std::fs::write(&fat, data).unwrap();
    let o = tool("fsck.fat").arg("-n").arg(&fat).output().unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "fsck.fat -n: {text}");
    for l in text.lines() {
        assert!(
            l.starts_with("fsck.fat ") || l.contains(" files, ") || l.trim().is_empty(),
            "fsck.fat -n complained: {text}"
        );
    }
}

fn mtype(img: &Path, p: &str) -> String {
    let (off, _) = partition(img, 1);
    let o = tool("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{off}", img.display()))
        .arg(format!("::{p}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn root_clean(img: &Path) {
    let (off, _) = partition(img, 2);
    let p = e2fsck_problems(img, off);
    assert!(p.is_empty(), "e2fsck -fn:\n{}", p.join("\n"));
}

#[test]
fn single_edits_on_both_filesystems() {
    for flavour in ["bookworm", "trixie"] {
        let dir = tempfile::tempdir().unwrap();
        let img = copy_fixture(&["--flavour", flavour], dir.path());
        let i = img.to_str().unwrap();
        let local = dir.path().join("hostname");
        std::fs::write(&local, "ost04\n").unwrap();
        let l = local.to_str().unwrap();
        let (off, _) = partition(&img, 2);
        for args in [
            vec!["fs", i, "put", l, "/etc/hostname", "--mode", "644"],
            vec![
                "fs",
                i,
                "mkdir",
                "-p",
                "/etc/systemd/network/extra.d",
                "--owner",
                "pi:pi",
            ],
            vec![
                "fs",
                i,
                "ln",
                "-s",
                "/dev/null",
                "/etc/systemd/system/NetworkManager.service",
            ],
            vec!["fs", i, "mv", "/home/pi", "/home/ost"],
            vec!["fs", i, "chown", "-R", "1001:1001", "/home/ost"],
            vec!["fs", i, "chmod", "600", "/etc/hostname"],
            vec!["fs", i, "rm", "-r", "/etc/NetworkManager"],
            vec!["fs", i, "put", l, "/boot/firmware/ssh"],
            vec![
                "fs",
                i,
                "mkdir",
                "-p",
                "/boot/firmware/rpiimg/long-directory-name",
            ],
            vec![
                "fs",
                i,
                "put",
                l,
                "/boot/firmware/rpiimg/long-directory-name/a file with a long name.txt",
            ],
            vec!["fs", i, "rm", "/boot/firmware/issue.txt"],
        ] {
            rpiimg_ok(&[&args[..], &["-q"]].concat());
        }
        root_clean(&img);
        fat_clean(&img);
        assert_eq!(debugfs(&img, off, "cat /etc/hostname"), "ost04\n");
        assert!(debugfs(&img, off, "stat /etc/hostname").contains("Mode:  0600"));
        assert!(debugfs(&img, off, "stat /etc/systemd/network/extra.d").contains("User:  1000"));
        assert!(debugfs(&img, off, "stat /home/ost/.bashrc").contains("User:  1001"));
        assert!(
            debugfs(&img, off, "stat /etc/NetworkManager")
                .trim()
                .is_empty(),
            "removed tree still there"
        );
        assert!(
            debugfs(&img, off, "stat /etc/systemd/system/NetworkManager.service")
                .contains("Fast link dest: \"/dev/null\"")
        );
        assert_eq!(mtype(&img, "/ssh"), "ost04\n");
        assert_eq!(
            mtype(
                &img,
                "/rpiimg/long-directory-name/a file with a long name.txt"
            ),
            "ost04\n"
        );
        let cat = rpiimg_ok(&[
            "cat",
            i,
            "/boot/firmware/rpiimg/long-directory-name/a file with a long name.txt",
            "-q",
        ]);
        assert_eq!(cat, b"ost04\n");
    }
}

#[test]
fn a_failing_batch_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(&["--flavour", "bookworm"], dir.path());
    let i = img.to_str().unwrap();
    std::fs::write(dir.path().join("motd"), "welcome\n").unwrap();
    let batch = dir.path().join("edits.txt");
    std::fs::write(
        &batch,
        "# node edits\nput motd /etc/motd --mode 644\nput motd /boot/firmware/motd.txt\nmkdir -p /opt/stack --owner 1000:1000\nrm /etc/does-not-exist\n",
    )
    .unwrap();
    let before = sha256_file(&img);
    let o = rpiimg(&["fs", i, "batch", batch.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("edit 4 of 4") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(
        sha256_file(&img),
        before,
        "the image must be byte-identical"
    );
    // The same batch without the bad line applies completely.
    std::fs::write(
        &batch,
        "put motd /etc/motd --mode 644\nput motd /boot/firmware/motd.txt\nmkdir -p /opt/stack --owner 1000:1000\n",
    )
    .unwrap();
    rpiimg_ok(&["fs", i, "batch", batch.to_str().unwrap(), "-q"]);
    root_clean(&img);
    fat_clean(&img);
    assert_eq!(mtype(&img, "/motd.txt"), "welcome\n");
    let (off, _) = partition(&img, 2);
    assert_eq!(debugfs(&img, off, "cat /etc/motd"), "welcome\n");
}

#[test]
fn bad_batch_lines_and_compressed_images_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(&["--flavour", "bookworm"], dir.path());
    let batch = dir.path().join("b.txt");
    std::fs::write(&batch, "mkdir -p /x\nfrobnicate /etc\n").unwrap();
    let o = rpiimg(&[
        "fs",
        img.to_str().unwrap(),
        "batch",
        batch.to_str().unwrap(),
    ]);
    assert_stderr(&o, 2, &["b.txt:2"]);
    let xz = fixture(&["--flavour", "bookworm", "--xz", "single"]);
    let o = rpiimg(&["fs", xz.to_str().unwrap(), "mkdir", "/x"]);
    assert_stderr(&o, 2, &["decompress"]);
}

#[test]
fn diff_lists_exactly_the_edited_paths() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&["--flavour", "bookworm"]);
    let img = copy_fixture(&["--flavour", "bookworm"], dir.path());
    let i = img.to_str().unwrap();
    let o = rpiimg(&["diff", base.to_str().unwrap(), i]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "a copy has no differences: {}",
        stdout(&o)
    );
    let local = dir.path().join("x");
    std::fs::write(&local, "x\n").unwrap();
    let l = local.to_str().unwrap();
    for args in [
        vec!["fs", i, "put", l, "/etc/hostname"],
        vec!["fs", i, "put", l, "/boot/firmware/ssh"],
        vec!["fs", i, "chmod", "600", "/etc/motd"],
        vec![
            "fs",
            i,
            "ln",
            "-s",
            "/dev/null",
            "/etc/systemd/system/ssh.service",
        ],
        vec!["fs", i, "rm", "/etc/sudoers.d/010_pi-nopasswd"],
    ] {
        rpiimg_ok(&[&args[..], &["-q"]].concat());
    }
    let o = rpiimg(&["diff", base.to_str().unwrap(), i, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let paths = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e[0].as_str()
                    .map_or_else(|| e["path"].as_str().unwrap().to_string(), str::to_string)
            })
            .collect()
    };
    assert_eq!(
        paths("added"),
        vec!["/boot/firmware/ssh", "/etc/systemd/system/ssh.service"]
    );
    assert_eq!(paths("removed"), vec!["/etc/sudoers.d/010_pi-nopasswd"]);
    assert_eq!(paths("changed"), vec!["/etc/hostname", "/etc/motd"]);
}

/// Misuse of the `fs` verbs is a usage error, never a "corrupt" verdict
/// (issue 26, class 8): a directory onto a file, a file onto a directory,
/// a directory into itself, the root, across filesystems, mkdir over a
/// file, on both filesystems. Each: exit 2, the message says what is wrong
/// and not "corrupt", and the image is byte-identical; e2fsck -fn and
/// fsck.fat -n find it clean.
#[test]
fn misuse_is_a_usage_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(&["--flavour", "trixie"], dir.path());
    let i = img.to_str().unwrap();
    let local = dir.path().join("local.txt");
    std::fs::write(&local, "x\n").unwrap();
    let l = local.to_str().unwrap();
    let batch = dir.path().join("edits.txt");
    std::fs::write(&batch, "mkdir /etc/newdir\nmv /home/pi /etc/hostname\n").unwrap();
    let b = batch.to_str().unwrap();
    let dir_onto_file = "is a file, which a directory cannot replace; remove it first";
    let into_itself = "into itself";
    let root = "the root directory cannot be created, replaced or removed";
    let across = "cannot move between filesystems (or a mount point); copy and remove instead";
    let cases: &[(&[&str], &str)] = &[
        // /etc is a hashed (htree) directory: its '..' is outside the index.
        (&["mv", "/home/pi", "/etc/hostname"], dir_onto_file),
        (&["mv", "/etc/ssh", "/etc/hostname"], dir_onto_file),
        (&["mv", "/home/pi", "/home/pi/sub"], into_itself),
        (&["mv", "/home", "/home/pi/x"], into_itself),
        (&["mv", "/etc", "/etc"], into_itself),
        (&["mv", "/", "/tmp/x"], root),
        (&["rm", "/"], root),
        (&["rm", "-r", "/"], root),
        (&["mkdir", "/"], root),
        (&["ln", "-s", "/x", "/"], root),
        (&["rm", "/home"], "/home: directory not empty"),
        (&["mkdir", "/etc/hostname"], "/etc/hostname: file exists"),
        (
            &["mkdir", "-p", "/etc/hostname/x"],
            "/etc/hostname: not a directory",
        ),
        (
            &["put", l, "/etc/hostname/x"],
            "/etc/hostname: not a directory",
        ),
        (&["ln", "/etc", "/etc/x"], "/etc: is a directory"),
        (&["ln", "-s", "/x", "/etc"], "/etc: is a directory"),
        (
            &["ln", "/etc/hostname", "/etc/passwd"],
            "/etc/passwd: file exists",
        ),
        (&["mv", "/etc/hostname", "/boot/firmware/hostname"], across),
        (
            &["mv", "/boot/firmware/config.txt", "/etc/config.txt"],
            across,
        ),
        (&["mv", "/boot/firmware", "/mnt/fw"], across),
        (&["mv", "/boot/firmware/overlays", "/"], across),
        (
            &["ln", "/etc/hostname", "/boot/firmware/h"],
            "a hard link is not possible on the FAT",
        ),
        (
            &["chmod", "644", "/boot/firmware/config.txt"],
            "chmod is not possible on the FAT",
        ),
        (
            &["mv", "/boot/firmware/overlays", "/boot/firmware/overlays/x"],
            into_itself,
        ),
        (
            &["mv", "/boot/firmware/overlays", "/boot/firmware/overlays"],
            into_itself,
        ),
        (
            &["mv", "/boot/firmware/overlays", "/boot/firmware/config.txt"],
            dir_onto_file,
        ),
        (
            &[
                "mv",
                "/boot/firmware/config.txt",
                "/boot/firmware/CONFIG.TXT",
            ],
            "FAT names ignore case",
        ),
        (
            &["mv", "/boot/firmware/nope", "/boot/firmware/x"],
            "/boot/firmware/nope: no such file",
        ),
        (
            &["mv", "/boot/firmware/config.txt", "/boot/firmware/nope/x"],
            "/boot/firmware/nope: no such file",
        ),
        (
            &["mkdir", "/boot/firmware/config.txt"],
            "/boot/firmware/config.txt: file exists",
        ),
        (
            &["mkdir", "-p", "/boot/firmware/config.txt/x"],
            "/boot/firmware/config.txt: not a directory",
        ),
        (
            &["mkdir", "/boot/firmware/nope/x"],
            "/boot/firmware/nope: no such file",
        ),
        (
            &["put", l, "/boot/firmware/config.txt/x"],
            "/boot/firmware/config.txt: not a directory",
        ),
        (
            &["put", l, "/boot/firmware/nope/x"],
            "/boot/firmware/nope: no such file",
        ),
        (
            &["rm", "/boot/firmware/overlays"],
            "/boot/firmware/overlays: directory not empty; rm -r",
        ),
        (&["rm", "/boot/firmware"], "a mount point cannot be removed"),
        (&["batch", b], dir_onto_file),
    ];
    let before = sha256_file(&img);
    // Per case, a cheap proof that nothing was written (any write moves
    // ctime); the sha256 after the table proves the bytes.
    let stamp = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).unwrap();
        (m.len(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
    };
    let at_start = stamp(&img);
    for (args, want) in cases {
        let mut full = vec![i];
        full.extend_from_slice(args);
        let mut cmd = vec!["fs"];
        cmd.extend(full);
        let o = rpiimg(&cmd);
        let e = assert_stderr(&o, 2, &[want]);
        // Damage is for damage: neither the ext4 verdict nor a bare fatfs error.
        assert!(
            !e.contains("corrupt") && !e.contains("(FAT, partition"),
            "{args:?}: {e}"
        );
        assert_eq!(stamp(&img), at_start, "{args:?} wrote to the image");
    }
    assert_eq!(
        sha256_file(&img),
        before,
        "the image must be byte-identical"
    );
    root_clean(&img);
    fat_clean(&img);

    // What the misuse was mistaken for works: a directory moves into the
    // hashed /etc (its '..' was taken for missing), a file replaces a file
    // on FAT as on ext4.
    rpiimg_ok(&["fs", i, "-q", "mv", "/home/pi", "/etc/pi"]);
    rpiimg_ok(&["fs", i, "-q", "put", l, "/boot/firmware/a.txt"]);
    rpiimg_ok(&[
        "fs",
        i,
        "-q",
        "mv",
        "/boot/firmware/a.txt",
        "/boot/firmware/issue.txt",
    ]);
    root_clean(&img);
    fat_clean(&img);
    let (off, _) = partition(&img, 2);
    assert!(debugfs(&img, off, "ls -l /etc/pi").contains(".bashrc"));
    assert_eq!(mtype(&img, "/issue.txt"), "x\n");
    assert_eq!(mtype(&img, "/a.txt"), "");
}
