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
        let (mut members, queue) = partitions(&dir);
        let holders = self.holders(queue, &mut members);
        Ok(Disk {
            dev: dev.to_string(),
            size: sectors.saturating_mul(512),
            model,
            transport: transport(&dir, &name).to_string(),
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

    /// Holders stacked on the disk or a partition (the directories in
    /// `queue`), and on those (LVM on crypt on a partition), breadth first,
    /// each visited once and at most [`MAX_NODES`] of them: their names,
    /// with each one's `(name, major:minor)` added to `members`, since a
    /// mount or swap on a holder is on the card too.
    fn holders(&self, mut queue: Vec<PathBuf>, members: &mut Vec<(String, String)>) -> Vec<String> {
        let mut holders = Vec::new();
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
        holders
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
                    // The mount source is the second field after the "-".
                    source: f
                        .get(dash..)
                        .and_then(|after| after.get(2))
                        .map(|s| unescape(s))
                        .unwrap_or_default(),
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

/// How the disk at sysfs directory `dir` is attached, from the bus in its
/// path (a removable transport is what makes a disk a card reader's).
fn transport(dir: &Path, name: &str) -> &'static str {
    let path = dir.to_string_lossy();
    if path.contains("/usb") {
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
    }
}

/// The disk's partitions (subdirectories holding a `partition` file, at
/// most [`MAX_NODES`]) as `(name, major:minor)`, and the directories to
/// look for holders in: the disk's and every partition's.
fn partitions(dir: &Path) -> (Vec<(String, String)>, Vec<PathBuf>) {
    let mut members = Vec::new();
    let mut queue = vec![dir.to_path_buf()];
    if let Ok(rd) = fs::read_dir(dir) {
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
    (members, queue)
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
    let mut rest = s.as_bytes();
    let mut out = Vec::with_capacity(rest.len());
    while let Some((&c, after)) = rest.split_first() {
        let escaped = (c == b'\\')
            .then(|| after.split_at_checked(3))
            .flatten()
            .and_then(|(digits, tail)| Some((octal_byte(digits)?, tail)));
        match escaped {
            Some((v, tail)) => {
                out.push(v);
                rest = tail;
            }
            None => {
                out.push(c);
                rest = after;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Three octal digits as the byte they name; `None` for anything else,
/// or past 0o377.
fn octal_byte(digits: &[u8]) -> Option<u8> {
    if !digits.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescapes_three_octal_digits_up_to_a_byte() {
        assert_eq!(super::unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(super::unescape(r"\011x\134"), "\tx\\");
        // Past a byte, too short, not octal, or a trailing backslash: kept.
        assert_eq!(super::unescape(r"\400"), r"\400");
        assert_eq!(super::unescape(r"a\04"), r"a\04");
        assert_eq!(super::unescape(r"\08x"), r"\08x");
        assert_eq!(super::unescape(r"x\"), r"x\");
        assert_eq!(super::unescape("é\\101"), "éA");
    }
}
