//! `rpiimg flash` end to end, onto regular files (`--to-file`) and, as
//! root, loop devices: only mapped ranges written, read-back catches a
//! byte changed on the card, a killed or interrupted flash leaves a card
//! with no partition table, bad targets are refused before any write.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::support::*;

/// Two node images (and the .xz of each), built once per test run into
/// its scratch folder (removed when the run ends).
fn nodes() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = run_dir().join("flash-nodes");
        let base = fixture(&["--flavour", "bookworm"]);
        cli()
            .build(&["ost01-compute", "ost02-compute"], &base, &dir)
            .args(["--xz", "-q"])
            .ok();
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
        "--full",
        &format!("{}={}", img("ost01.img"), c1.display()),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["state"], "verified");
    assert_eq!(v[0]["written"].as_u64().unwrap(), mapped);
    assert_eq!(v[0]["compared"].as_u64().unwrap(), 0);
    assert_eq!(v[0]["read_back"].as_u64().unwrap(), mapped);
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
    assert_stderr(&o, 0, &["map: partition table"]);
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
    // Cards that exist, as real ones do (a new file is removed unless
    // verified, which would hide what a card is left with).
    let size = std::fs::metadata(img("ost01.img")).unwrap().len();
    used_card(c1, size);
    used_card(c2, size);
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
    let go = dir.path().join("go");
    let child = two_cards_with_fault(
        &format!("flash-slow,flash-checked:pause={}", go.display()),
        &c1,
        &c2,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Checked and ready to write: let it start, then interrupt it while
    // the hook makes writing take seconds.
    let reached = dir.path().join("go.reached");
    let t = std::time::Instant::now();
    while !reached.exists() {
        assert!(t.elapsed().as_secs() < 240, "flash never got to writing");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(&go, b"").unwrap();
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
    assert!(err.contains("an input of this flash"), "{err}");
    // A symlink to a file: named by itself only.
    std::os::unix::fs::symlink(&card, dir.path().join("link")).unwrap();
    let o = flash(&["--to-file", "--yes", &one(&dir.path().join("link"))]);
    assert_stderr(&o, 2, &["symlink"]);
    // Without --yes and without a terminal: not confirmed.
    let o = flash(&["--to-file", &one(&card)]);
    assert_stderr(&o, 2, &["not confirmed", "--yes"]);
    // Not IMAGE=DEVICE.
    let o = flash(&["--to-file", "--yes", &img("ost01.img")]);
    assert_stderr(&o, 2, &["expected IMAGE=DEVICE"]);
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
    let size = std::fs::metadata(&image).unwrap().len();
    // An edited .bmap is refused before writing.
    let bmap = dir.path().join("ost01.img.bmap");
    let text = std::fs::read_to_string(&bmap).unwrap();
    std::fs::write(&bmap, text.replacen("<ImageSize> ", "<ImageSize> 1", 1)).unwrap();
    let pair = format!("{}={}", image.display(), card.display());
    let o = flash(&["--to-file", "--yes", &pair]);
    assert_stderr(&o, 2, &["ost01.img.bmap"]);
    assert!(!card.exists());
    // An image changed after its build (with no .sha256 or manifest
    // beside it to catch it first): the writer stops at the range.
    std::fs::write(&bmap, &text).unwrap();
    used_card(&card, size);
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
    // Found while writing (the image's bytes are hashed on their way to
    // the card), told apart from a bad card, and the card left unbootable.
    assert!(stdout(&o).contains("INCOMPLETE"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("the card has part of it and no partition table"),
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
    assert_stderr(
        &o,
        2,
        &["2 node images (ost01.img, ost02.img) but 1 devices"],
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
    let detach = match loop_device(&backing) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: losetup failed: {e}");
            return;
        }
    };
    let dev = detach.dev().to_string();
    let pair = format!("{}={dev}", img("ost01.img"));
    let o = flash(&["--yes", &pair]);
    assert_stderr(&o, 2, &["fixed disk", "--allow-fixed"]);
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
    let detach2 = loop_device(&small).expect("losetup");
    let dev2 = detach2.dev();
    let o = flash(&[
        "--yes",
        "--allow-fixed",
        &format!("{}={dev2}", img("ost01.img")),
    ]);
    assert_stderr(&o, 2, &["use a larger card"]);
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
        let dev = loop_device(&by_bmaptool).expect("losetup");
        let b = tool("bmaptool")
            .args(["copy", "--bmap"])
            .arg(&bmap)
            .arg(&image)
            .arg(dev.dev())
            .output()
            .unwrap();
        drop(dev);
        assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
        cards.push(&by_bmaptool);
    } else {
        eprintln!("a_used_card_gets_intact_filesystems: not root, bmaptool's part skipped (it needs a loop device)");
    }
    for card in cards {
        assert_card(card, &image, &bmap);
        prove_card(card, &nodes().join("ost01.manifest.json"));
    }
}

/// The card's filesystems are intact by fsck.fat -n and e2fsck -fn, and
/// verify --manifest accepts it.
fn prove_card(card: &Path, manifest: &Path) {
    let dir = tempfile::tempdir().unwrap();
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
    let v = rpiimg(&[
        "verify",
        card.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--flashed",
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

/// A base whose free space holds old bytes, as a real image's does (the
/// machine that made it wrote and deleted files): 8 MiB of 0xC3 written
/// into each filesystem and deleted again.
fn dirty_base(dir: &Path) -> PathBuf {
    let base = copy_fixture(&["--flavour", "bookworm"], dir);
    let (boot, _) = partition(&base, 1);
    let (root, _) = partition(&base, 2);
    let junk = dir.join("junk");
    std::fs::write(&junk, vec![0xC3u8; 8 << 20]).unwrap();
    let fat = format!("{}@@{boot}", base.display());
    for (t, args) in [
        ("mcopy", vec!["-i", &fat, junk.to_str().unwrap(), "::junk"]),
        ("mdel", vec!["-i", &fat, "::junk"]),
    ] {
        let o = tool(t).args(&args).output().unwrap();
        assert!(
            o.status.success(),
            "{t}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    for cmd in [format!("write {} junk", junk.display()), "rm junk".into()] {
        let o = tool("debugfs")
            .args(["-w", "-R", &cmd])
            .arg(at_offset(&base, root))
            .output()
            .unwrap();
        assert!(o.status.success(), "debugfs {cmd}");
    }
    assert_eq!(e2fsck_problems(&base, root), Vec::<String>::new());
    base
}

fn mapped_blocks(bmap: &Path) -> u64 {
    bmap_blocks(bmap).iter().map(|(a, b)| b - a + 1).sum()
}

/// Non-zero 4 KiB blocks of an image that its block map leaves out.
fn unmapped_nonzero_blocks(image: &Path, bmap: &Path) -> u64 {
    let b = std::fs::read(image).unwrap();
    let mut mapped = vec![false; b.len().div_ceil(4096)];
    for (x, y) in bmap_blocks(bmap) {
        for m in &mut mapped[usize::try_from(x).unwrap()..=usize::try_from(y).unwrap()] {
            *m = true;
        }
    }
    b.chunks(4096)
        .zip(mapped)
        .filter(|(c, m)| !m && c.iter().any(|&x| x != 0))
        .count() as u64
}

/// The block map follows the filesystems: the free space of a base that
/// holds old bytes there is left out (the map is as small as from a clean
/// base), and a card that held other bytes still gets intact filesystems
/// (issue 25, part 1).
#[test]
fn free_space_with_old_bytes_is_not_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let base = dirty_base(dir.path());
    let out = dir.path().join("out");
    cli().build(&["ost01-compute"], &base, &out).arg("-q").ok();
    let (image, bmap) = (out.join("ost01.img"), out.join("ost01.img.bmap"));
    let (dirty, clean) = (
        mapped_blocks(&bmap),
        mapped_blocks(&nodes().join("ost01.img.bmap")),
    );
    // The same node from a clean base maps as much, give or take the
    // placement of a few blocks; the 4 096 blocks of old bytes are not in it.
    assert!(
        dirty.abs_diff(clean) < 64,
        "dirty base maps {dirty} blocks, clean {clean}"
    );
    let left_out = unmapped_nonzero_blocks(&image, &bmap);
    assert!(
        left_out >= 4000,
        "{left_out} non-zero blocks left out of the map: the old bytes should be"
    );
    let card = dir.path().join("card");
    let size = usize::try_from(std::fs::metadata(&image).unwrap().len()).unwrap();
    std::fs::write(&card, vec![0x55u8; size]).unwrap();
    let o = flash(&[
        "--to-file",
        "--yes",
        &format!("{}={}", image.display(), card.display()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    prove_card(&card, &out.join("ost01.manifest.json"));
    // Not the image byte for byte: the whole-image comparison fails, and
    // says that the mapped blocks match and how to check a flashed card.
    let manifest = out.join("ost01.manifest.json");
    let v = rpiimg(&[
        "verify",
        card.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert_stdout(&v, 1, &["check it with --flashed"]);
}

/// The JSON report of one card.
fn flash_json(args: &[&str]) -> serde_json::Value {
    let o = flash(&[&["--to-file", "--yes", "--json"], args].concat());
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["state"], "verified", "{v}");
    v[0].clone()
}

fn field(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// Re-flashing a card that holds the previous build of the node, after a
/// one-line profile change, writes only the blocks that differ (well under
/// 1% of the mapped bytes) and leaves the card equal to the new image in
/// every mapped block; flashing it again writes nothing; a card holding
/// something else is seen in the first 16 MiB and written in full
/// (issue 25, part 2).
#[test]
fn reflash_writes_only_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("ost01.toml");
    std::fs::write(
        &changed,
        format!(
            "extends = \"{}\"\n[sysctl]\n\"vm.swappiness\" = \"10\"\n",
            profile_path("ost01-compute")
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    cli()
        .build(
            &[changed.to_str().unwrap()],
            &fixture(&["--flavour", "bookworm"]),
            &out,
        )
        .arg("-q")
        .ok();
    let (image, bmap) = (out.join("ost01.img"), out.join("ost01.img.bmap"));
    let mapped = mapped_blocks(&bmap) * 4096;
    // A used card that got the previous build.
    let card = dir.path().join("card");
    used_card(&card, std::fs::metadata(&image).unwrap().len());
    let old = format!("{}={}", img("ost01.img"), card.display());
    flash_json(&["--full", &old]);

    let new = format!("{}={}", image.display(), card.display());
    let v = flash_json(&[&new]);
    let written = field(&v, "written");
    assert!(
        written > 0 && written * 100 <= mapped,
        "{written} of {mapped} bytes written: {v}"
    );
    assert_eq!(v["fell_back"], false, "{v}");
    assert_eq!(field(&v, "read_back"), written, "{v}");
    assert_eq!(field(&v, "skipped") + written, mapped, "{v}");
    assert_card(&card, &image, &bmap);
    prove_card(&card, &out.join("ost01.manifest.json"));

    // Nothing left to write.
    let v = flash_json(&[&new]);
    assert_eq!(
        (field(&v, "written"), field(&v, "skipped")),
        (0, mapped),
        "{v}"
    );

    // A card that holds something else: compared for the probe only.
    let foreign = dir.path().join("foreign");
    used_card(&foreign, std::fs::metadata(&image).unwrap().len());
    let v = flash_json(&[&format!("{}={}", image.display(), foreign.display())]);
    assert_eq!(v["fell_back"], true, "{v}");
    // The probe: 1/64 of the mapped bytes, at least 1 MiB, in 1 MiB steps.
    assert!(field(&v, "compared") <= (2 << 20) + (64 << 10), "{v}");
    assert_eq!(field(&v, "written"), mapped, "{v}");
    assert_card(&foreign, &image, &bmap);
}

/// `rpiimg flash ARGS` started with the `flash-checked` pause hook: it
/// stops between the checks and the writing until `go` exists. Returns
/// the child once it has reached that point.
fn flash_paused(args: &[&str], go: &Path) -> std::process::Child {
    let mut child = rpiimg_cmd()
        .env(
            "RPIIMG_FAULT",
            format!("flash-checked:pause={}", go.display()),
        )
        .arg("flash")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reached = PathBuf::from(format!("{}.reached", go.display()));
    let t = std::time::Instant::now();
    while !reached.exists() {
        if let Some(s) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            panic!(
                "flash ended ({s}) before the pause: {}{}",
                stdout(&o),
                stderr(&o)
            );
        }
        assert!(t.elapsed().as_secs() < 240, "flash never reached its pause");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child
}

/// Whatever is checked is what is written (issue 26, class 1): a second
/// flash onto a file being flashed is refused while the first holds it
/// (it was "verified OK" for a file that matched neither image), and a new
/// file appears under its name only once verified.
#[test]
fn one_flash_at_a_time_per_target_and_no_partial_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("new-card.img");
    let go = dir.path().join("go");
    let first = flash_paused(
        &[
            "--to-file",
            "--yes",
            &format!("{}={}", img("ost01.img"), card.display()),
        ],
        &go,
    );
    // Checked and locked, not yet written: no file under the final name.
    assert!(
        !card.exists(),
        "a new file must not carry its name before it is verified"
    );
    let hidden: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".new-card.img.rpiimg-partial-"))
        .collect();
    assert_eq!(hidden.len(), 1, "{hidden:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join(&hidden[0]))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "a node image holds secrets");
    // A second run onto the same (existing) file while the first holds it.
    let held = dir.path().join("held.img");
    std::fs::copy(img("ost02.img"), &held).unwrap();
    let go2 = dir.path().join("go2");
    let holder = flash_paused(
        &[
            "--to-file",
            "--yes",
            &format!("{}={}", img("ost01.img"), held.display()),
        ],
        &go2,
    );
    let o = flash(&[
        "--to-file",
        "--yes",
        &format!("{}={}", img("ost02.img"), held.display()),
    ]);
    assert_stderr(&o, 2, &["is being written by another rpiimg flash"]);
    std::fs::write(&go, b"").unwrap();
    std::fs::write(&go2, b"").unwrap();
    for child in [first, holder] {
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    }
    assert_eq!(sha256_file(&card), sha256_file(&nodes().join("ost01.img")));
    assert_card_mapped(
        &held,
        &nodes().join("ost01.img"),
        &nodes().join("ost01.img.bmap"),
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("rpiimg-partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Mapped blocks of `card` equal the image's.
fn assert_card_mapped(card: &Path, image: &Path, bmap: &Path) {
    let (c, i) = (std::fs::read(card).unwrap(), std::fs::read(image).unwrap());
    for (a, b) in bmap_blocks(bmap) {
        let (s, e) = (
            usize::try_from(a).unwrap() * 4096,
            (usize::try_from(b).unwrap() + 1) * 4096,
        );
        let e = e.min(i.len());
        assert!(c[s..e] == i[s..e], "blocks {a}-{b} differ from the image");
    }
}

/// As root: a `/dev/disk/by-id`-style link re-pointed from the card to
/// another disk between the checks and the writing changes nothing: the
/// card opened (O_EXCL) and checked before is the one written, the other
/// disk keeps every byte (issue 26, class 1).
#[test]
fn a_link_re_pointed_after_the_checks_writes_the_checked_card() {
    if !is_root() {
        eprintln!("skipped: needs root for losetup");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = std::fs::metadata(img("ost01.img")).unwrap().len();
    let (card, other) = (dir.path().join("card"), dir.path().join("other"));
    used_card(&card, size);
    std::fs::write(&other, vec![0x77u8; usize::try_from(size).unwrap()]).unwrap();
    let mut loops = Vec::new();
    for f in [&card, &other] {
        match loop_device(f) {
            Ok(d) => loops.push(d),
            Err(e) => {
                eprintln!("skipped: losetup failed: {e}");
                return;
            }
        }
    }
    let link = dir.path().join("usb-Card_Reader-0:0");
    std::os::unix::fs::symlink(loops[0].dev(), &link).unwrap();
    let go = dir.path().join("go");
    let child = flash_paused(
        &[
            "--yes",
            "--allow-fixed",
            &format!("{}={}", img("ost01.img"), link.display()),
        ],
        &go,
    );
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(loops[1].dev(), &link).unwrap();
    std::fs::write(&go, b"").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    drop(loops);
    assert!(
        std::fs::read(&other).unwrap().iter().all(|&b| b == 0x77),
        "the disk the link pointed to later was written"
    );
    assert_card(
        &card,
        &nodes().join("ost01.img"),
        &nodes().join("ost01.img.bmap"),
    );
}

/// Trust is checked before writing (issue 26, class 5): an image that no
/// longer matches its .sha256 (or, without one, its manifest) is refused
/// with nothing written; a .bmap without its own checksum is refused; a
/// target that is one of the flash's own inputs is refused.
#[test]
fn images_are_checked_and_inputs_are_never_targets() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "ost01.img",
        "ost01.img.bmap",
        "ost01.img.sha256",
        "ost01.manifest.json",
    ] {
        std::fs::copy(nodes().join(f), dir.path().join(f)).unwrap();
    }
    let image = dir.path().join("ost01.img");
    let card = dir.path().join("card");
    let pair = format!("{}={}", image.display(), card.display());
    // A byte the .bmap does not map (its sums cannot see it) changed.
    let bmap = dir.path().join("ost01.img.bmap");
    let ranges = bmap_blocks(&bmap);
    let gap = ranges
        .windows(2)
        .find(|w| w[0].1 + 1 < w[1].0)
        .map(|w| w[0].1 + 1)
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"x", gap * 4096).unwrap();
    drop(f);
    let o = flash(&["--to-file", "--yes", &pair]);
    assert_stderr(&o, 2, &["ost01.img.sha256 records"]);
    assert!(!card.exists());
    // Without the .sha256 the manifest is the record.
    std::fs::remove_file(dir.path().join("ost01.img.sha256")).unwrap();
    let o = flash(&["--to-file", "--yes", &pair]);
    assert_stderr(&o, 2, &["ost01.manifest.json records"]);
    std::fs::copy(nodes().join("ost01.img"), &image).unwrap();
    // A .bmap without its own checksum.
    let text = std::fs::read_to_string(&bmap).unwrap();
    let unsealed: String = text
        .lines()
        .filter(|l| !l.contains("BmapFileChecksum"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&bmap, unsealed).unwrap();
    let o = flash(&["--to-file", "--yes", &pair]);
    assert_stderr(&o, 2, &["no BmapFileChecksum"]);
    std::fs::write(&bmap, &text).unwrap();
    // Its own inputs as targets: the .bmap, the manifest, the image by
    // another name (a hard link).
    let twin = dir.path().join("twin.img");
    std::fs::hard_link(&image, &twin).unwrap();
    for t in [&bmap, &dir.path().join("ost01.manifest.json"), &twin] {
        let before = sha256_file(t);
        let o = flash(&[
            "--to-file",
            "--yes",
            &format!("{}={}", image.display(), t.display()),
        ]);
        assert_stderr(&o, 2, &["an input of this flash"]);
        assert_eq!(sha256_file(t), before);
    }
    // And the checked image flashes.
    let o = flash(&["--to-file", "--yes", &pair]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("sha256 matches ost01.img.sha256")
            || stderr(&o).contains("sha256 matches ost01.manifest.json"),
        "{}",
        stderr(&o)
    );
}

/// As root: a new file target on a filesystem without room for it is
/// refused before anything is written, naming the space; an existing
/// file there that fills the filesystem while being written says so and
/// is left without a partition table (issue 26, class 1; issue 27, 7).
#[test]
fn a_full_filesystem_is_named_and_leaves_no_partial_file() {
    if !is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    let _mounted = match tmpfs(&mnt, "4m") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipped: mount tmpfs failed: {e}");
            return;
        }
    };
    let new = mnt.join("card.img");
    let o = flash(&[
        "--to-file",
        "--yes",
        &format!("{}={}", img("ost01.img"), new.display()),
    ]);
    assert_stderr(&o, 2, &["free but writing ost01.img onto it needs"]);
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0, "nothing left");
    // An existing (sparse) file standing in for a card: its holes need
    // room the filesystem does not have, which is seen before writing.
    let size = std::fs::metadata(img("ost01.img")).unwrap().len();
    let f = std::fs::File::create(&new).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let o = flash(&[
        "--to-file",
        "--yes",
        "--full",
        &format!("{}={}", img("ost01.img"), new.display()),
    ]);
    assert_stderr(
        &o,
        2,
        &[
            "free but writing ost01.img onto it needs",
            "nothing was written",
        ],
    );
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(&new).unwrap();
    assert_eq!((m.len(), m.blocks()), (size, 0), "the file was written");
}
