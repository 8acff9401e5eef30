//! The refusal logic of `rpiimg flash` against a fake `/sys` and `/proc`
//! (the root directory parameter of `SysRoot`): every refusal the command
//! promises, and the cards it must accept.

use std::fs;
use std::path::{Path, PathBuf};

use rpiimg::flash::preflight::{check, Candidate, Kind, Options};
use rpiimg::flash::sysfs::SysRoot;

const GIB: u64 = 1 << 30;

struct Tree {
    dir: tempfile::TempDir,
    mountinfo: String,
    swaps: String,
}

impl Tree {
    fn new() -> Self {
        let t = Tree {
            dir: tempfile::tempdir().unwrap(),
            mountinfo: String::new(),
            swaps: "Filename\tType\tSize\tUsed\tPriority\n".into(),
        };
        fs::create_dir_all(t.root().join("sys/dev/block")).unwrap();
        fs::create_dir_all(t.root().join("sys/class/block")).unwrap();
        fs::create_dir_all(t.root().join("proc/self")).unwrap();
        t
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A disk under `parent` (a device path in sysfs: its transport),
    /// with partitions `name1..=nameN` (or `namepN` for mmcblk/loop).
    fn disk(
        &self,
        parent: &str,
        name: &str,
        (major, minor): (u32, u32),
        gib: u64,
        removable: bool,
        parts: u32,
    ) -> PathBuf {
        let dir = self
            .root()
            .join("sys/devices")
            .join(parent)
            .join("block")
            .join(name);
        fs::create_dir_all(dir.join("holders")).unwrap();
        fs::create_dir_all(dir.join("device")).unwrap();
        fs::write(dir.join("dev"), format!("{major}:{minor}\n")).unwrap();
        fs::write(dir.join("size"), format!("{}\n", gib * GIB / 512)).unwrap();
        fs::write(dir.join("removable"), if removable { "1\n" } else { "0\n" }).unwrap();
        fs::write(dir.join("ro"), "0\n").unwrap();
        fs::write(dir.join("device/model"), "Card Reader\n").unwrap();
        self.link(&dir, major, minor, name);
        let sep = if name.starts_with("mmcblk") || name.starts_with("loop") {
            "p"
        } else {
            ""
        };
        for n in 1..=parts {
            let pname = format!("{name}{sep}{n}");
            let p = dir.join(&pname);
            fs::create_dir_all(p.join("holders")).unwrap();
            fs::write(p.join("partition"), format!("{n}\n")).unwrap();
            fs::write(p.join("dev"), format!("{major}:{}\n", minor + n)).unwrap();
            self.link(&p, major, minor + n, &pname);
        }
        dir
    }

    fn link(&self, target: &Path, major: u32, minor: u32, name: &str) {
        let rel = |from: &str| {
            // Relative links, as sysfs has: ../../devices/...
            let t = target.strip_prefix(self.root().join("sys")).unwrap();
            PathBuf::from(from).join(t)
        };
        std::os::unix::fs::symlink(
            rel("../.."),
            self.root().join(format!("sys/dev/block/{major}:{minor}")),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            rel("../.."),
            self.root().join(format!("sys/class/block/{name}")),
        )
        .unwrap();
    }

    fn mount(&mut self, dev: &str, point: &str, source: &str) {
        let n = self.mountinfo.lines().count() + 20;
        self.mountinfo.push_str(&format!(
            "{n} 1 {dev} / {point} rw,relatime shared:1 - ext4 {source} rw\n"
        ));
    }

    fn check(
        &self,
        targets: &[(&str, &str, u64)],
        allow_fixed: bool,
    ) -> Result<Vec<String>, Vec<String>> {
        fs::write(self.root().join("proc/self/mountinfo"), &self.mountinfo).unwrap();
        fs::write(self.root().join("proc/swaps"), &self.swaps).unwrap();
        let cands: Vec<Candidate> = targets
            .iter()
            .map(|(path, dev, size)| Candidate {
                path: PathBuf::from(path),
                kind: Kind::Device(dev.to_string()),
                image: "ost01.img".into(),
                image_size: *size,
            })
            .collect();
        check(&SysRoot::new(self.root()), &cands, Options { allow_fixed }).map(|disks| {
            disks
                .into_iter()
                .map(|d| d.map(|d| d.name).unwrap_or_default())
                .collect()
        })
    }
}

const USB: &str = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0";
const MMC: &str = "platform/fe340000.mmc/mmc_host/mmc1/mmc1:aaaa";
const SATA: &str = "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0";

/// The usual lab desk: the system on a SATA disk, two USB readers, an SD slot.
fn desk() -> Tree {
    let t = Tree::new();
    t.disk(SATA, "sda", (8, 0), 500, false, 3);
    t.disk(USB, "sdb", (8, 16), 32, true, 2);
    t.disk(&USB.replace("2-1", "2-2"), "sdc", (8, 32), 32, false, 2);
    t.disk(MMC, "mmcblk0", (179, 0), 16, false, 2);
    t
}

fn refusals(r: Result<Vec<String>, Vec<String>>) -> String {
    r.expect_err("must be refused").join("\n")
}

#[test]
fn removable_cards_on_usb_and_mmc_are_accepted() {
    let mut t = desk();
    t.mount("8:2", "/", "/dev/sda2");
    t.mount("8:1", "/boot/efi", "/dev/sda1");
    // sdc has removable=0 (many USB readers say so) but is on USB.
    let r = t.check(
        &[
            ("/dev/sdb", "8:16", 3 * GIB),
            ("/dev/sdc", "8:32", 3 * GIB),
            ("/dev/mmcblk0", "179:0", 3 * GIB),
        ],
        false,
    );
    assert_eq!(r.unwrap(), vec!["sdb", "sdc", "mmcblk0"]);
}

#[test]
fn the_disk_of_the_running_system_is_refused_even_with_allow_fixed() {
    let mut t = desk();
    t.mount("8:2", "/", "/dev/sda2");
    let e = refusals(t.check(&[("/dev/sda", "8:0", 3 * GIB)], true));
    assert!(
        e.contains("/dev/sda: holds the running system (/ is mounted from sda2)"),
        "{e}"
    );
    // /boot alone, by device number only (source not a /dev path).
    let mut t = desk();
    t.mount("8:17", "/boot", "UUID=x");
    let e = refusals(t.check(&[("/dev/sdb", "8:16", GIB)], false));
    assert!(
        e.contains("holds the running system (/boot is mounted from 8:17)"),
        "{e}"
    );
}

#[test]
fn mounted_partitions_and_swap_are_refused() {
    let mut t = desk();
    t.mount("8:18", "/media/pi/rootfs", "/dev/sdb2");
    t.swaps
        .push_str("/dev/mmcblk0p2\tpartition\t1048572\t0\t-2\n");
    let e = refusals(t.check(
        &[("/dev/sdb", "8:16", GIB), ("/dev/mmcblk0", "179:0", GIB)],
        false,
    ));
    assert!(
        e.contains("/dev/sdb: sdb2 is mounted at /media/pi/rootfs: unmount it first"),
        "{e}"
    );
    assert!(
        e.contains("/dev/mmcblk0: mmcblk0p2 is in use as swap: swapoff /dev/mmcblk0p2"),
        "{e}"
    );
}

#[test]
fn mountinfo_escapes_are_decoded() {
    let mut t = desk();
    t.mount("8:17", "/media/a\\040b", "/dev/sdb1");
    let e = refusals(t.check(&[("/dev/sdb", "8:16", GIB)], false));
    assert!(e.contains("mounted at /media/a b"), "{e}");
}

#[test]
fn holders_on_a_partition_are_refused() {
    let t = desk();
    // dm-0 (LVM or crypt) stacked on sdb2, and dm-1 on dm-0.
    let dm0 = t.root().join("sys/devices/virtual/block/dm-0");
    let dm1 = t.root().join("sys/devices/virtual/block/dm-1");
    for (d, minor) in [(&dm0, 0), (&dm1, 1)] {
        fs::create_dir_all(d.join("holders")).unwrap();
        fs::write(d.join("dev"), format!("254:{minor}\n")).unwrap();
        t.link(d, 254, minor, &format!("dm-{minor}"));
    }
    let sdb2 = t
        .root()
        .join("sys/devices")
        .join(USB)
        .join("block/sdb/sdb2");
    fs::write(sdb2.join("holders/dm-0"), "").unwrap();
    fs::write(dm0.join("holders/dm-1"), "").unwrap();
    // A cycle in the fake tree must not hang the walk.
    fs::write(dm1.join("holders/dm-0"), "").unwrap();
    let e = refusals(t.check(&[("/dev/sdb", "8:16", GIB)], false));
    assert!(
        e.contains("in use by dm-0, dm-1 (LVM, RAID or encryption)"),
        "{e}"
    );
    // And a mount of the stacked device counts as a mount of the card.
    let mut t2 = t;
    t2.mount("254:1", "/srv", "/dev/mapper/vg-srv");
    let e = refusals(t2.check(&[("/dev/sdb", "8:16", GIB)], false));
    assert!(e.contains("is mounted at /srv"), "{e}");
}

#[test]
fn fixed_disks_need_allow_fixed() {
    let t = desk();
    let e = refusals(t.check(&[("/dev/sda", "8:0", GIB)], false));
    assert!(e.contains("/dev/sda: is a fixed disk (transport sata, not removable), Card Reader: add --allow-fixed"), "{e}");
    assert_eq!(
        t.check(&[("/dev/sda", "8:0", GIB)], true).unwrap(),
        vec!["sda"]
    );
}

#[test]
fn too_small_read_only_partition_and_twice_are_refused() {
    let t = desk();
    fs::write(
        t.root()
            .join("sys/devices")
            .join(MMC)
            .join("block/mmcblk0/ro"),
        "1\n",
    )
    .unwrap();
    let e = refusals(t.check(
        &[
            ("/dev/sdb", "8:16", 40 * GIB),
            ("/dev/sdc1", "8:33", GIB),
            ("/dev/mmcblk0", "179:0", GIB),
            ("/dev/disk/by-id/usb-Reader", "8:16", GIB),
            ("/dev/sdx", "8:240", GIB),
        ],
        false,
    ));
    assert!(
        e.contains("/dev/sdb: holds 32.0 GiB but ost01.img needs 40.0 GiB"),
        "{e}"
    );
    assert!(
        e.contains("/dev/sdc1: sdc1 is a partition of sdc: give the whole card, /dev/sdc"),
        "{e}"
    );
    assert!(e.contains("/dev/mmcblk0: is read-only"), "{e}");
    assert!(
        e.contains("/dev/disk/by-id/usb-Reader: the same device as /dev/sdb (named twice)"),
        "{e}"
    );
    assert!(
        e.contains("/dev/sdx: device 8:240 is not in /sys/dev/block"),
        "{e}"
    );
}

#[test]
fn an_empty_reader_is_refused() {
    let t = desk();
    fs::write(
        t.root()
            .join("sys/devices")
            .join(USB)
            .join("block/sdb/size"),
        "0\n",
    )
    .unwrap();
    let e = refusals(t.check(&[("/dev/sdb", "8:16", GIB)], false));
    assert!(
        e.contains("reports size 0: is a card in the reader?"),
        "{e}"
    );
}
