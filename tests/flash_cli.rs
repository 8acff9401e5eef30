//! `rpiimg flash` end to end, onto regular files (`--to-file`) and, as
//! root, loop devices: only mapped ranges written, read-back catches a
//! byte changed on the card, a killed or interrupted flash leaves a card
//! with no partition table, bad targets are refused before any write.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use support::*;

/// Two node images (and the .xz of each), built once for this file.
fn nodes() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("rpiimg-flash-")
            .tempdir()
            .unwrap()
            .keep();
        let base = fixture(&["--flavour", "bookworm"]);
        rpiimg_ok(&[
            "build",
            "--profile",
            &profile_path("ost01-compute"),
            "--profile",
            &profile_path("ost02-compute"),
            "--base",
            base.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--xz",
            "-q",
        ]);
        dir
    })
}

fn img(name: &str) -> String {
    nodes().join(name).display().to_string()
}

/// Block ranges `[first, last]` of a `.bmap`, read with a regex-free scan.
fn bmap_blocks(bmap: &Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(bmap)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let span = l.split_once("\"> ")?.1.split_once(" </Range>")?.0;
            let (a, b) = span.split_once('-').unwrap_or((span, span));
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// A file of `size` bytes of 0xAA: a card that held something else.
fn used_card(path: &Path, size: u64) {
    std::fs::write(path, vec![0xAAu8; usize::try_from(size).unwrap()]).unwrap();
}

/// Mapped 4 KiB blocks equal the image, unmapped ones kept 0xAA.
fn assert_card(card: &Path, image: &Path, bmap: &Path) {
    let (c, i) = (std::fs::read(card).unwrap(), std::fs::read(image).unwrap());
    let mut mapped = vec![false; i.len().div_ceil(4096)];
    for (a, b) in bmap_blocks(bmap) {
        for m in &mut mapped[usize::try_from(a).unwrap()..=usize::try_from(b).unwrap()] {
            *m = true;
        }
    }
    let mut unmapped_seen = 0;
    for (k, m) in mapped.iter().enumerate() {
        let (s, e) = (k * 4096, ((k + 1) * 4096).min(i.len()));
        if *m {
            assert!(
                c[s..e] == i[s..e],
                "mapped block {k} differs from the image"
            );
        } else {
            unmapped_seen += 1;
            assert!(
                c[s..e].iter().all(|&b| b == 0xAA),
                "unmapped block {k} was written"
            );
        }
    }
    assert!(
        unmapped_seen > 1000,
        "the image should have unmapped blocks"
    );
}

fn has_partition_table(p: &Path) -> bool {
    tool("sfdisk")
        .arg("-d")
        .arg(p)
        .output()
        .unwrap()
        .status
        .success()
}

fn flash(args: &[&str]) -> Output {
    rpiimg_within(
        &[&["flash"], args].concat(),
        std::time::Duration::from_secs(300),
    )
}

#[test]
fn only_mapped_ranges_are_written_and_verified_on_every_card() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, c2, c3) = (
        dir.path().join("c1"),
        dir.path().join("c2"),
        dir.path().join("c3"),
    );
    let size = std::fs::metadata(img("ost01.img")).unwrap().len();
    used_card(&c1, size);
    used_card(&c2, size + (1 << 20));
    // ost01 from its .img, ost02 streamed from its .img.xz (its .bmap is
    // ost02.img.bmap), the third card a new file.
    let o = flash(&[
        "--to-file",
        "--yes",
        &format!("{}={}", img("ost01.img"), c1.display()),
        &format!("{}={}", img("ost02.img.xz"), c2.display()),
        &format!("{}={}", img("ost01.img"), c3.display()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.matches("verified OK").count(), 3, "{out}");
    assert!(out.contains("3 of 3 cards written and verified"), "{out}");
    // The listing shown before writing names the map used.
    assert!(stderr(&o).contains("map: ost02.img.bmap"), "{}", stderr(&o));
    assert_card(
        &c1,
        &nodes().join("ost01.img"),
        &nodes().join("ost01.img.bmap"),
    );
    assert_card(
        &c2,
        &nodes().join("ost02.img"),
        &nodes().join("ost02.img.bmap"),
    );
    assert_eq!(
        std::fs::metadata(&c2).unwrap().len(),
        size + (1 << 20),
        "never shrunk"
    );
    assert_eq!(sha256_file(&c3), sha256_file(&nodes().join("ost01.img")));
    // The written bytes are what the .bmap maps.
    let mapped: u64 = bmap_blocks(&nodes().join("ost01.img.bmap"))
        .iter()
        .map(|(a, b)| (b - a + 1) * 4096)
        .sum();
    let o = flash(&[
        "--to-file",
        "--yes",
        "--json",
        &format!("{}={}", img("ost01.img"), c1.display()),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["state"], "verified");
    assert_eq!(v[0]["written"].as_u64().unwrap(), mapped);
}

#[test]
fn without_a_bmap_the_partitions_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    std::fs::copy(nodes().join("ost01.img"), &image).unwrap();
    let card = dir.path().join("card");
    let size = std::fs::metadata(&image).unwrap().len();
    used_card(&card, size);
    let o = flash(&[
        "--to-file",
        "-y",
        &format!("{}={}", image.display(), card.display()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("map: partition table"),
        "{}",
        stderr(&o)
    );
    // Everything from the start of the image to the end of the last
    // partition is the image's (sfdisk reads the table).
    let (start2, size2) = partition(&image, 2);
    let end = usize::try_from(start2 + size2).unwrap();
    let (c, i) = (
        std::fs::read(&card).unwrap(),
        std::fs::read(&image).unwrap(),
    );
    assert!(c[..end] == i[..end], "the partitions must be the image's");
    assert!(
        c[end..].iter().all(|&b| b == 0xAA),
        "nothing after them is written"
    );
}

/// `rpiimg flash` of ost01 and ost02 onto two files, with a test hook on.
fn two_cards_with_fault(fault: &str, c1: &Path, c2: &Path) -> Command {
    let mut c = rpiimg_cmd();
    c.env("RPIIMG_FAULT", fault)
        .args([
            "flash",
            "--to-file",
            "--yes",
            &format!("{}={}", img("ost01.img"), c1.display()),
            &format!("{}={}", img("ost02.img"), c2.display()),
        ])
        .stdin(Stdio::null());
    c
}

#[test]
fn read_back_catches_a_byte_changed_on_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, c2) = (dir.path().join("c1"), dir.path().join("c2"));
    // The hook changes one byte of the first card between write and read-back.
    let o = two_cards_with_fault("flash-flip", &c1, &c2)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(out.contains("FAILED verification"), "{out}");
    assert!(
        out.contains("read-back differs from ost01.img in bytes"),
        "{out}"
    );
    assert!(
        out.contains("ost02.img -> ") && out.contains("verified OK"),
        "{out}"
    );
    assert!(out.contains("1 of 2 cards written and verified"), "{out}");
    assert!(out.contains("partition table was cleared"), "{out}");
    assert!(
        !has_partition_table(&c1),
        "a card that failed must not boot"
    );
    assert!(has_partition_table(&c2));
}

#[test]
fn a_killed_flash_leaves_no_partition_table_and_a_new_flash_completes() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card");
    let image = nodes().join("ost01.img");
    // A card that held a valid image: after the kill it must not look like one.
    std::fs::copy(nodes().join("ost02.img"), &card).unwrap();
    assert!(has_partition_table(&card));
    let pair = format!("{}={}", image.display(), card.display());
    let o = rpiimg_cmd()
        .env("RPIIMG_FAULT", "flash-abort")
        .args(["flash", "--to-file", "--yes", &pair])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(o.status.code().is_none(), "killed, not exited");
    assert!(
        !has_partition_table(&card),
        "a cut-short card must show no partition table"
    );
    let o = flash(&["--to-file", "--yes", &pair]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(has_partition_table(&card));
    assert_eq!(sha256_file(&card), sha256_file(&image));
}

#[test]
fn ctrl_c_stops_the_writers_and_reports_each_card() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, c2) = (dir.path().join("c1"), dir.path().join("c2"));
    let child = two_cards_with_fault("flash-slow", &c1, &c2)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let st = tool("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(130), "{out}{}", stderr(&o));
    // Each card is reported; one stopped while writing (the hook makes
    // that take seconds) has no partition table.
    assert_eq!(out.matches("interrupted").count(), 2, "{out}");
    assert!(out.contains("0 of 2 cards written and verified"), "{out}");
    assert!(out.contains("INCOMPLETE"), "{out}");
    for (c, name) in [(&c1, "c1"), (&c2, "c2")] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("/{name}:")))
            .unwrap();
        if line.contains("INCOMPLETE") {
            assert!(!has_partition_table(c), "{line}");
        } else {
            assert!(line.contains("written, NOT verified"), "{line}");
        }
    }
}

#[test]
fn bad_targets_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card");
    used_card(&card, 1 << 20);
    let before = sha256_file(&card);
    let one = |target: &Path| format!("{}={}", img("ost01.img"), target.display());
    // A regular file without --to-file; a missing device; a directory.
    let o = flash(&[
        "--yes",
        &one(&card),
        &one(Path::new("/dev/rpiimg-no-such-card")),
        &one(dir.path()),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("refusing to flash, nothing was written"),
        "{err}"
    );
    assert!(
        err.contains("not a block device") && err.contains("--to-file"),
        "{err}"
    );
    assert!(err.contains("rpiimg-no-such-card: no such device"), "{err}");
    assert!(err.contains("is a directory"), "{err}");
    // The same file twice (two names), and the image itself.
    let link_dir = dir.path().join("again");
    std::fs::create_dir(&link_dir).unwrap();
    std::fs::hard_link(&card, link_dir.join("card")).unwrap();
    let o = flash(&[
        "--to-file",
        "--yes",
        &one(&card),
        &one(&link_dir.join("card")),
        &format!("{}={}", img("ost02.img"), img("ost02.img")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("named twice"), "{err}");
    assert!(err.contains("is one of the images being flashed"), "{err}");
    // A symlink to a file: named by itself only.
    std::os::unix::fs::symlink(&card, dir.path().join("link")).unwrap();
    let o = flash(&["--to-file", "--yes", &one(&dir.path().join("link"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("symlink"), "{}", stderr(&o));
    // Without --yes and without a terminal: not confirmed.
    let o = flash(&["--to-file", &one(&card)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not confirmed") && stderr(&o).contains("--yes"),
        "{}",
        stderr(&o)
    );
    // Not IMAGE=DEVICE.
    let o = flash(&["--to-file", "--yes", &img("ost01.img")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected IMAGE=DEVICE"),
        "{}",
        stderr(&o)
    );
    assert_eq!(sha256_file(&card), before, "nothing may be written");
    assert!(!has_partition_table(&card));
}

#[test]
fn an_image_that_does_not_match_its_bmap_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["ost01.img", "ost01.img.bmap"] {
        std::fs::copy(nodes().join(f), dir.path().join(f)).unwrap();
    }
    let image = dir.path().join("ost01.img");
    let card = dir.path().join("card");
    // An edited .bmap is refused before writing.
    let bmap = dir.path().join("ost01.img.bmap");
    let text = std::fs::read_to_string(&bmap).unwrap();
    std::fs::write(&bmap, text.replacen("<ImageSize> ", "<ImageSize> 1", 1)).unwrap();
    let pair = format!("{}={}", image.display(), card.display());
    let o = flash(&["--to-file", "--yes", &pair]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("ost01.img.bmap"), "{}", stderr(&o));
    assert!(!card.exists());
    // An image changed after its build: the writer stops at the range.
    std::fs::write(&bmap, &text).unwrap();
    let (start, _) = partition(&image, 2);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"changed", start + 1024).unwrap();
    let o = flash(&["--to-file", "--yes", &pair]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("does not match its block map"),
        "{}",
        stdout(&o)
    );
    // Found by the read-back (the .bmap's sums are trusted while
    // writing), told apart from a bad card, and the card left unbootable.
    assert!(stdout(&o).contains("FAILED verification"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("partition table was cleared"),
        "{}",
        stdout(&o)
    );
    assert!(!has_partition_table(&card));
}

#[test]
fn cluster_pairs_images_with_devices_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let devices = format!("{},{}", a.display(), b.display());
    let out = nodes().to_str().unwrap();
    let o = flash(&[
        "--cluster",
        out,
        "--devices",
        &devices,
        "--to-file",
        "--yes",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // The .img is preferred to its .img.xz; ost01 onto the first device.
    assert_eq!(sha256_file(&a), sha256_file(&nodes().join("ost01.img")));
    assert_eq!(sha256_file(&b), sha256_file(&nodes().join("ost02.img")));
    let o = flash(&[
        "--cluster",
        out,
        "--devices",
        &a.display().to_string(),
        "--to-file",
        "--yes",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("2 node images (ost01.img, ost02.img) but 1 devices"),
        "{}",
        stderr(&o)
    );
}

/// As root: a loop device stands in for a card. It is refused as a fixed
/// disk, accepted with --allow-fixed, and keeps its unmapped bytes.
#[test]
fn loop_devices_as_cards_when_root() {
    if !is_root() {
        eprintln!("skipped: needs root for losetup");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("card");
    let size = std::fs::metadata(img("ost01.img")).unwrap().len();
    used_card(&backing, size + (4 << 20));
    let o = tool("losetup")
        .args(["-f", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    if !o.status.success() {
        eprintln!("skipped: losetup failed: {}", stderr(&o));
        return;
    }
    let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = tool("losetup").args(["-d", &self.0]).status();
        }
    }
    let detach = Detach(dev.clone());
    let pair = format!("{}={dev}", img("ost01.img"));
    let o = flash(&["--yes", &pair]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("fixed disk") && stderr(&o).contains("--allow-fixed"),
        "{}",
        stderr(&o)
    );
    let o = flash(&["--yes", "--allow-fixed", &pair]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("verified OK"), "{}", stdout(&o));
    drop(detach);
    assert_card(
        &backing,
        &nodes().join("ost01.img"),
        &nodes().join("ost01.img.bmap"),
    );
    // Too small a device.
    let small = dir.path().join("small");
    used_card(&small, 64 << 20);
    let o = tool("losetup")
        .args(["-f", "--show"])
        .arg(&small)
        .output()
        .unwrap();
    let dev2 = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let _detach2 = Detach(dev2.clone());
    let o = flash(&[
        "--yes",
        "--allow-fixed",
        &format!("{}={dev2}", img("ost01.img")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("use a larger card"), "{}", stderr(&o));
}

/// A card full of old data (0xAA) gets intact filesystems, with `rpiimg
/// flash` and with `bmaptool copy` and our .bmap: the map covers both FAT
/// copies in full (their zeros are the free entries) and every block a
/// filesystem uses, so fsck.fat, e2fsck and verify --manifest all pass on
/// the card (issue 25, part 1).
#[test]
fn a_used_card_gets_intact_filesystems() {
    let dir = tempfile::tempdir().unwrap();
    let image = nodes().join("ost01.img");
    let bmap = nodes().join("ost01.img.bmap");
    let size = std::fs::metadata(&image).unwrap().len();
    let (by_flash, by_bmaptool) = (dir.path().join("flash"), dir.path().join("bmaptool"));
    used_card(&by_flash, size);
    used_card(&by_bmaptool, size);
    let o = flash(&[
        "--to-file",
        "--yes",
        &format!("{}={}", image.display(), by_flash.display()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // bmaptool truncates a regular file it copies onto (unmapped blocks
    // become holes), so the used card it writes is a loop device over the
    // 0xAA file: that needs root.
    let mut cards = vec![&by_flash];
    if is_root() {
        let l = tool("losetup")
            .args(["-f", "--show"])
            .arg(&by_bmaptool)
            .output()
            .unwrap();
        assert!(l.status.success(), "{}", String::from_utf8_lossy(&l.stderr));
        let dev = String::from_utf8_lossy(&l.stdout).trim().to_string();
        let b = tool("bmaptool")
            .args(["copy", "--bmap"])
            .arg(&bmap)
            .arg(&image)
            .arg(&dev)
            .output()
            .unwrap();
        let _ = tool("losetup").args(["-d", &dev]).status();
        assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
        cards.push(&by_bmaptool);
    } else {
        eprintln!("a_used_card_gets_intact_filesystems: not root, bmaptool's part skipped (it needs a loop device)");
    }
    for card in cards {
        assert_card(card, &image, &bmap);
        let (boot, _) = partition(card, 1);
        let (root, _) = partition(card, 2);
        let fat = dir.path().join("fat.img");
        let bytes = std::fs::read(card).unwrap();
        let (b0, b1) = (
            usize::try_from(boot).unwrap(),
            usize::try_from(root).unwrap(),
        );
        std::fs::write(&fat, &bytes[b0..b1]).unwrap();
        let f = tool("fsck.fat").arg("-n").arg(&fat).output().unwrap();
        assert!(
            f.status.success(),
            "{}: {}",
            card.display(),
            String::from_utf8_lossy(&f.stdout)
        );
        assert_eq!(
            e2fsck_problems(card, root),
            Vec::<String>::new(),
            "{}",
            card.display()
        );
        let manifest = nodes().join("ost01.manifest.json");
        // --fast: a card written by its block map keeps its old bytes
        // where nothing is mapped, so it is not the image byte for byte
        // (assert_card proved the mapped ranges).
        let v = rpiimg(&[
            "verify",
            card.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--fast",
            "-q",
        ]);
        assert_eq!(
            v.status.code(),
            Some(0),
            "{}: {}",
            card.display(),
            stdout(&v)
        );
    }
}
