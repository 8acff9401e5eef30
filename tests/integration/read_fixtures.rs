//! Reading Pi OS-like fixture images, checked against independent readers:
//! debugfs (ext4), mtools (FAT), sfdisk (partition table).

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::*;
use rpiimg::ext4::FileType;
use rpiimg::fs::view::SystemView;
use rpiimg::image::{self, Cache};
use rpiimg::partition;
use rpiimg::progress::Progress;

fn open_view(img: &Path) -> SystemView {
    let cache = Cache::new(cache_dir());
    let opened = image::open(img, None, &cache, Progress::quiet()).expect("open image");
    let table = partition::read(&opened.file, opened.size).expect("partition table");
    SystemView::open(&opened, &table).expect("system view").0
}

/// Every path under `root` in the image, depth first: (path, stat).
fn walk(view: &SystemView, root: &str, out: &mut Vec<(String, rpiimg::fs::Stat)>) {
    for (name, st) in view.list(root).expect("list") {
        let p = format!("{}/{name}", root.trim_end_matches('/'));
        let is_dir = st.kind == FileType::Directory;
        out.push((p.clone(), st));
        if is_dir {
            walk(view, &p, out);
        }
    }
}

/// /etc through rpiimg versus `debugfs rdump`: names, content, link targets, modes, owners.
fn compare_etc_with_debugfs(img: &Path) {
    let (off, _) = partition(img, 2);
    let view = open_view(img);
    let dump = tempfile::tempdir().unwrap();
    let o = tool("debugfs")
        .arg("-R")
        .arg(format!("rdump /etc {}", dump.path().display()))
        .arg(at_offset(img, off))
        .output()
        .unwrap();
    assert!(o.status.success());
    let host = dump.path().join("etc");
    let mut ours = Vec::new();
    walk(&view, "/etc", &mut ours);
    assert!(
        ours.len() > 150,
        "/etc should be realistic, got {} entries",
        ours.len()
    );
    let root = is_root();
    let mut seen = BTreeSet::new();
    for (p, st) in &ours {
        let rel = p.strip_prefix("/etc/").unwrap();
        seen.insert(rel.to_string());
        let hp = host.join(rel);
        let meta = std::fs::symlink_metadata(&hp)
            .unwrap_or_else(|e| panic!("{p}: debugfs has no such path: {e}"));
        match st.kind {
            FileType::Regular => {
                let want = std::fs::read(&hp).unwrap();
                let got = view.read(p).unwrap();
                assert_eq!(got, want, "{p}: content differs from debugfs");
                assert_eq!(st.size, want.len() as u64, "{p}: size");
            }
            FileType::Symlink => {
                let want = std::fs::read_link(&hp).unwrap();
                assert_eq!(
                    st.target.as_deref(),
                    Some(want.to_str().unwrap()),
                    "{p}: link target"
                );
            }
            FileType::Directory => assert!(meta.is_dir(), "{p}: debugfs says not a directory"),
            _ => {}
        }
        #[cfg(unix)]
        if st.kind != FileType::Symlink {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(u32::from(st.mode), meta.mode() & 0o7777, "{p}: mode");
            if root {
                assert_eq!((st.uid, st.gid), (meta.uid(), meta.gid()), "{p}: owner");
            }
        }
    }
    // Nothing debugfs sees is missing from our listing.
    for e in walkdir(&host) {
        let rel = e
            .strip_prefix(&host)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(seen.contains(&rel), "rpiimg did not list /etc/{rel}");
    }
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let is_dir = std::fs::symlink_metadata(&p).unwrap().is_dir();
        v.push(p.clone());
        if is_dir {
            v.extend(walkdir(&p));
        }
    }
    v
}

/// /boot/firmware through rpiimg versus `mcopy -s` from mtools.
fn compare_boot_with_mtools(img: &Path) {
    let (off, _) = partition(img, 1);
    let view = open_view(img);
    let dump = tempfile::tempdir().unwrap();
    let o = tool("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-s")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@{off}", img.display()))
        .arg("::/")
        .arg(dump.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mcopy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut ours = Vec::new();
    walk(&view, "/boot/firmware", &mut ours);
    assert!(ours.iter().any(|(p, _)| p == "/boot/firmware/cmdline.txt"));
    let mut seen = BTreeSet::new();
    for (p, st) in &ours {
        let rel = p.strip_prefix("/boot/firmware/").unwrap();
        seen.insert(rel.to_string());
        let hp = dump.path().join(rel);
        if st.kind == FileType::Regular {
            assert_eq!(
                view.read(p).unwrap(),
                std::fs::read(&hp).unwrap(),
                "{p}: content differs from mtools"
            );
        } else {
            assert!(hp.is_dir(), "{p}");
        }
    }
    for e in walkdir(dump.path()) {
        let rel = e
            .strip_prefix(dump.path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            seen.contains(&rel),
            "rpiimg did not list /boot/firmware/{rel}"
        );
    }
}

fn inspect_json(img: &Path) -> serde_json::Value {
    let out = rpiimg_ok(&["inspect", img.to_str().unwrap(), "--json", "--quiet"]);
    serde_json::from_slice(&out).expect("inspect --json output is JSON")
}

fn check_common(v: &serde_json::Value, codename: &str, disk_id: &str) {
    assert_eq!(v["os"]["family"], "Raspberry Pi OS");
    assert_eq!(v["os"]["codename"], codename);
    assert_eq!(v["hostname"], "raspberrypi");
    assert_eq!(v["partition_table"]["kind"], "mbr");
    assert_eq!(v["partition_table"]["disk_id"], disk_id);
    let parts = v["partition_table"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["start_sector"], 16384);
    assert_eq!(parts[0]["type_id"], "0x0c");
    assert_eq!(parts[1]["type_id"], "0x83");
    let pi = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "pi")
        .expect("user pi");
    assert_eq!(pi["uid"], 1000);
    assert_eq!(pi["password"], "locked");
    assert_eq!(
        v["units"]["userconfig.service"].as_str().unwrap(),
        "enabled (multi-user.target)"
    );
    assert!(v["units"]["NetworkManager.service"]
        .as_str()
        .unwrap()
        .starts_with("enabled"));
    assert_eq!(v["units"]["systemd-networkd.service"], "disabled");
    assert_eq!(v["ssh"]["enabled"], false);
    assert_eq!(v["mounts"][0]["mount_point"], "/boot/firmware");
    let fs = v["filesystems"].as_array().unwrap();
    assert_eq!(fs[0]["type"], "vfat");
    assert_eq!(fs[0]["label"], "bootfs");
    assert_eq!(fs[1]["type"], "ext4");
    assert_eq!(fs[1]["label"], "rootfs");
    assert_eq!(fs[1]["uuid"], "11111111-2222-3333-4444-555555555555");
    let cmdline = v["cmdline"].as_str().unwrap();
    assert!(
        cmdline.contains(&format!("root=PARTUUID={disk_id}-02")),
        "{cmdline}"
    );
}

#[test]
fn bookworm_signed_reads_like_debugfs_and_mtools() {
    let img = fixture(&["--flavour", "bookworm", "--hash", "signed"]);
    compare_etc_with_debugfs(&img);
    compare_boot_with_mtools(&img);
    let v = inspect_json(&img);
    check_common(&v, "bookworm", "5eed0001");
    assert_eq!(v["machine_id"]["state"], "empty");
    assert_eq!(v["swap"]["mechanism"], "dphys-swapfile");
    assert_eq!(v["swap"]["size_mib"], 512);
    assert!(v["cmdline"]
        .as_str()
        .unwrap()
        .contains("init=/usr/lib/raspberrypi-sys-mods/firstboot"));
    assert!(v["filesystems"][1]["state"]
        .as_str()
        .unwrap()
        .contains("signed directory hash"));
}

#[test]
fn bookworm_unsigned_reads_like_debugfs() {
    let img = fixture(&["--flavour", "bookworm", "--hash", "unsigned"]);
    compare_etc_with_debugfs(&img);
    let v = inspect_json(&img);
    assert!(v["filesystems"][1]["state"]
        .as_str()
        .unwrap()
        .contains("unsigned directory hash"));
}

#[test]
fn trixie_signed_reads_like_debugfs_and_mtools() {
    let img = fixture(&["--flavour", "trixie", "--hash", "signed"]);
    compare_etc_with_debugfs(&img);
    compare_boot_with_mtools(&img);
    let v = inspect_json(&img);
    check_common(&v, "trixie", "5eed0002");
    assert_eq!(v["machine_id"]["state"], "uninitialized");
    assert!(v["swap"]["mechanism"]
        .as_str()
        .unwrap()
        .starts_with("rpi-swap"));
    assert!(v["cmdline"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .any(|w| w == "resize"));
    let features: Vec<&str> = v["filesystems"][1]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        features.contains(&"orphan_file") && features.contains(&"metadata_csum_seed"),
        "{features:?}"
    );
}

#[test]
fn trixie_unsigned_reads_like_debugfs() {
    let img = fixture(&["--flavour", "trixie", "--hash", "unsigned"]);
    compare_etc_with_debugfs(&img);
}

#[test]
fn gpt_fixture_reads() {
    let img = fixture(&["--flavour", "bookworm", "--table", "gpt"]);
    let v = inspect_json(&img);
    assert_eq!(v["partition_table"]["kind"], "gpt");
    assert_eq!(v["mounts"][0]["mount_point"], "/boot/firmware");
    assert_eq!(v["hostname"], "raspberrypi");
    compare_boot_with_mtools(&img);
}

#[test]
fn xz_fixtures_read_like_raw() {
    let raw_b = fixture(&["--flavour", "bookworm", "--hash", "signed"]);
    let raw_t = fixture(&["--flavour", "trixie", "--hash", "signed"]);
    for (xz_opts, raw) in [
        (vec!["--flavour", "bookworm", "--xz", "multi"], &raw_b),
        (vec!["--flavour", "trixie", "--xz", "single"], &raw_t),
    ] {
        let xz = fixture(&xz_opts);
        assert!(xz.to_str().unwrap().ends_with(".img.xz"));
        for p in [
            "/etc/passwd",
            "/etc/os-release",
            "/boot/firmware/config.txt",
        ] {
            let a = rpiimg_ok(&["cat", xz.to_str().unwrap(), p, "-q"]);
            let b = rpiimg_ok(&["cat", raw.to_str().unwrap(), p, "-q"]);
            assert_eq!(
                a,
                b,
                "{p} differs between {} and {}",
                xz.display(),
                raw.display()
            );
        }
    }
}

#[test]
fn special_files_match_debugfs() {
    let img = fixture(&["--flavour", "bookworm", "--hash", "signed"]);
    let (off, _) = partition(&img, 2);
    let view = open_view(&img);
    // The depth-1 extent tree file reads back byte-identical.
    let dump = tempfile::tempdir().unwrap();
    let out = dump.path().join("frag");
    let o = tool("debugfs")
        .arg("-R")
        .arg(format!("dump /usr/lib/fragmented.bin {}", out.display()))
        .arg(at_offset(&img, off))
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        debugfs(&img, off, "stat /usr/lib/fragmented.bin").contains("(ETB0)"),
        "fixture file must have a depth-1 extent tree"
    );
    assert_eq!(
        view.read("/usr/lib/fragmented.bin").unwrap(),
        std::fs::read(&out).unwrap()
    );
    // The xattr, as debugfs lists it.
    let xa = view
        .ext4()
        .xattrs(&view.ext4().resolve("/usr/bin/ping", true).unwrap())
        .unwrap();
    assert!(
        xa.iter()
            .any(|x| x.name == "security.capability" && x.value.len() == 20),
        "{xa:?}"
    );
    assert!(debugfs(&img, off, "ea_list /usr/bin/ping").contains("security.capability"));
    // Link counts agree with debugfs for every path whose count is above one.
    let mut all = Vec::new();
    walk(&view, "/usr/share/doc", &mut all);
    let multi: Vec<_> = all
        .iter()
        .filter(|(_, s)| s.kind == FileType::Regular && s.nlink > 1)
        .collect();
    assert!(
        !multi.is_empty(),
        "fixture must have hard links under /usr/share/doc"
    );
    for (p, st) in multi {
        let s = debugfs(&img, off, &format!("stat {p}"));
        assert!(
            s.contains(&format!("Links: {}", st.nlink)),
            "{p}: debugfs stat says {s}"
        );
    }
}

/// A GPT whose primary header is damaged is read from the backup, and
/// `inspect` says so with the fix, in text and JSON (issue 26, class 8), as
/// gdisk and sfdisk do; inspect changes nothing, and the fix it names works.
#[test]
fn a_damaged_primary_gpt_header_is_said_and_the_backup_used() {
    let opts = ["--flavour", "bookworm", "--table", "gpt"];
    let intact = inspect_json(&fixture(&opts));
    assert!(intact["partition_table"].get("warnings").is_none());
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(&opts, dir.path());
    {
        // One byte of the disk GUID in the primary header (sector 1): its
        // CRC no longer matches.
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&[0xFF], 512 + 60).unwrap();
    }
    let before = sha256_file(&img);
    let want = "the primary GPT header is damaged (the primary header checksum does not match); the table was read from the backup header";
    let text = stdout(&rpiimg(&["inspect", img.to_str().unwrap(), "-q"]));
    assert!(text.contains(&format!("WARNING: {want}")), "{text}");
    assert!(
        text.contains("gdisk: r, then b") && text.contains("sfdisk --dump"),
        "{text}"
    );
    let v = inspect_json(&img);
    let w = v["partition_table"]["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1);
    assert!(w[0].as_str().unwrap().starts_with(want), "{w:?}");
    // The backup's table is the intact one.
    assert_eq!(
        v["partition_table"]["partitions"],
        intact["partition_table"]["partitions"]
    );
    assert_eq!(
        v["partition_table"]["disk_id"],
        intact["partition_table"]["disk_id"]
    );
    assert_eq!(
        sha256_file(&img),
        before,
        "inspect must not change the image"
    );
    // The fix named: sfdisk rewrites the primary from the backup.
    let dump = tool("sfdisk").arg("--dump").arg(&img).output().unwrap();
    assert!(dump.status.success());
    let o = tool("sfdisk")
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&dump.stdout)?;
            c.wait()
        })
        .unwrap();
    assert!(o.success());
    let repaired = inspect_json(&img);
    assert!(repaired["partition_table"].get("warnings").is_none());
    assert_eq!(
        repaired["partition_table"]["partitions"],
        intact["partition_table"]["partitions"]
    );
}
