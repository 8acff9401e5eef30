//! What Linux says about a block device, read from `/sys` and `/proc` under
//! a root directory (`/` in use; a fake tree in tests): the disk a device
//! number belongs to, its size, model, transport, removable flag,
//! partitions and holders, and every mount and swap area on any of them.
//!
//! Every walk is bounded: names come from the kernel (or a fake tree), but
//! a damaged or hostile tree must not make the refusal logic loop.

use std::fs;
use std::path::{Path, PathBuf};

/// More partitions or stacked holders than any card has.
const MAX_NODES: usize = 256;

/// A whole disk as sysfs describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Disk {
    /// Kernel name: `sdb`, `mmcblk0`, `loop3`.
    pub name: String,
    /// `major:minor`.
    pub dev: String,
    pub size: u64,
    pub model: String,
    /// usb, mmc, sata, nvme, virtio, loop, or unknown.
    pub transport: String,
    pub removable: bool,
    pub read_only: bool,
    /// Whether the kernel reads partition tables on it (a loop device set
    /// up without `--partscan` does not).
    #[serde(skip)]
    pub partscan: bool,
    /// The smallest write it takes (`queue/logical_block_size`).
    #[serde(skip)]
    pub logical_block: u64,
    /// Partitions, then holders (device mapper, md) stacked on any of them,
    /// as `(name, major:minor)`.
    #[serde(skip)]
    pub members: Vec<(String, String)>,
    /// Holders by name (dm-0, md127): the disk is in use by LVM, RAID or crypt.
    #[serde(skip)]
    pub holders: Vec<String>,
}

/// One line of `/proc/self/mountinfo` that matters here.
#[derive(Debug, Clone)]
pub struct Mount {
    pub dev: String,
    pub point: String,
    pub source: String,
}

/// The view of one system: `/` on a real run.
pub struct SysRoot {
    root: PathBuf,
}

fn read_trim(p: &Path) -> Option<String> {
    // sysfs attributes are tiny; a fake tree's are bounded by this cap.
    let s = fs::read(p).ok()?;
    if s.len() > 4096 {
        return None;
    }
    Some(String::from_utf8_lossy(&s).trim().to_string())
}

impl SysRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SysRoot { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The sysfs directory of device number `dev`, and whether it is a
    /// partition (then the disk is its parent directory).
    fn node_dir(&self, dev: &str) -> Option<PathBuf> {
        let link = self.path(&format!("sys/dev/block/{dev}"));
        let dir = fs::canonicalize(link).ok()?;
        // Stay inside the tree being looked at.
        let root = fs::canonicalize(&self.root).ok()?;
        dir.starts_with(root).then_some(dir)
    }

    /// Describe the block device `dev` (`major:minor`). `Err` names why it
    /// cannot be a target: unknown, or a partition (the whole disk is).
    pub fn disk(&self, dev: &str) -> Result<Disk, String> {
        let dir = self
            .node_dir(dev)
            .ok_or_else(|| format!("device {dev} is not in /sys/dev/block"))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if dir.join("partition").exists() {
            let disk = dir
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(format!(
                "{name} is a partition of {disk}: give the whole card, /dev/{disk}"
            ));
        }
        let attr = |a: &str| read_trim(&dir.join(a));
        let sectors: u64 = attr("size").and_then(|s| s.parse().ok()).unwrap_or(0);
        let model = [
            attr("device/vendor"),
            attr("device/model"),
            attr("device/name"),
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
        let path = dir.to_string_lossy();
        let transport = if path.contains("/usb") {
            "usb"
        } else if path.contains("/mmc") || name.starts_with("mmcblk") {
            "mmc"
        } else if path.contains("/nvme") {
            "nvme"
        } else if path.contains("/ata") {
            "sata"
        } else if path.contains("/virtio") {
            "virtio"
        } else if name.starts_with("loop") {
            "loop"
        } else {
            "unknown"
        };
        let mut members: Vec<(String, String)> = Vec::new();
        let mut holders = Vec::new();
        let mut queue = vec![dir.clone()];
        // Partitions are subdirectories holding a `partition` file.
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten().take(MAX_NODES) {
                let p = e.path();
                if p.join("partition").is_file() {
                    if let Some(d) = read_trim(&p.join("dev")) {
                        members.push((e.file_name().to_string_lossy().into_owned(), d));
                    }
                    queue.push(p);
                }
            }
        }
        // Holders stacked on the disk or a partition, and on those (LVM on
        // crypt on a partition), breadth first, each visited once.
        let mut seen: Vec<String> = Vec::new();
        while let Some(d) = queue.pop() {
            if seen.len() >= MAX_NODES {
                break;
            }
            let Ok(rd) = fs::read_dir(d.join("holders")) else {
                continue;
            };
            for e in rd.flatten().take(MAX_NODES) {
                let h = e.file_name().to_string_lossy().into_owned();
                if seen.contains(&h) {
                    continue;
                }
                seen.push(h.clone());
                let hdir = self.path(&format!("sys/class/block/{h}"));
                if let Some(dv) = read_trim(&hdir.join("dev")) {
                    members.push((h.clone(), dv));
                }
                holders.push(h);
                if let Ok(c) = fs::canonicalize(&hdir) {
                    queue.push(c);
                }
            }
        }
        Ok(Disk {
            dev: dev.to_string(),
            size: sectors.saturating_mul(512),
            model,
            transport: transport.to_string(),
            removable: attr("removable").as_deref() == Some("1"),
            read_only: attr("ro").as_deref() == Some("1"),
            partscan: attr("partscan").as_deref() != Some("0"),
            logical_block: attr("queue/logical_block_size")
                .and_then(|s| s.parse().ok())
                .filter(|b: &u64| b.is_power_of_two() && *b <= 4096)
                .unwrap_or(4096),
            name,
            members,
            holders,
        })
    }

    /// Mounts from `/proc/self/mountinfo` (nothing when unreadable).
    pub fn mounts(&self) -> Vec<Mount> {
        let text = read_big(&self.path("proc/self/mountinfo")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let dash = f.iter().position(|x| *x == "-")?;
                Some(Mount {
                    dev: f.get(2)?.to_string(),
                    point: unescape(f.get(4)?),
                    source: f.get(dash + 2).map(|s| unescape(s)).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Device paths of active swap areas, from `/proc/swaps`.
    pub fn swaps(&self) -> Vec<String> {
        let text = read_big(&self.path("proc/swaps")).unwrap_or_default();
        text.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(unescape))
            .collect()
    }
}

/// `/proc` files are small; a fake one is read up to 16 MiB.
fn read_big(p: &Path) -> Option<String> {
    use std::io::Read;
    let mut s = String::new();
    fs::File::open(p)
        .ok()?
        .take(16 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// mountinfo and swaps escape space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(v) = oct {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
