//! Which targets `rpiimg flash` refuses, decided before anything is
//! written: every reason for every target, so one run shows them all.
//!
//! Pure over a [`SysRoot`]: the tests give it a fake `/sys` and `/proc`.

use std::path::PathBuf;

use super::sysfs::{Disk, Mount, SysRoot};
use crate::progress::human_bytes;

/// Mount points that mean "this disk runs the system".
const SYSTEM_POINTS: [&str; 6] = ["/", "/boot", "/boot/firmware", "/boot/efi", "/usr", "/var"];

/// A target as the command line named it, classified by the caller.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// As typed (shown in messages).
    pub path: PathBuf,
    pub kind: Kind,
    /// The image that goes onto it, and its size.
    pub image: String,
    pub image_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A block device with this `major:minor`.
    Device(String),
    /// A regular file (or one to create) with `--to-file`; the identity is
    /// (st_dev, st_ino) when it exists, so two names of one file match.
    File(Option<(u64, u64)>),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub allow_fixed: bool,
}

/// The disks of the targets (`None` for files), or every refusal.
pub fn check(
    sys: &SysRoot,
    targets: &[Candidate],
    opts: Options,
) -> Result<Vec<Option<Disk>>, Vec<String>> {
    let mounts = sys.mounts();
    let swaps = sys.swaps();
    let mut refusals = Vec::new();
    let mut disks = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let mut why: Vec<String> = named_before(targets.iter().take(i), t)
            .into_iter()
            .collect();
        let disk = match &t.kind {
            Kind::File(_) => None,
            Kind::Device(dev) => match sys.disk(dev) {
                Ok(disk) => {
                    why.extend(in_use(&disk, &mounts, &swaps));
                    why.extend(unfit(&disk, t, opts));
                    Some(disk)
                }
                Err(e) => {
                    why.push(e);
                    None
                }
            },
        };
        let shown = t.path.display().to_string();
        refusals.extend(why.into_iter().map(|w| format!("{shown}: {w}")));
        disks.push(disk);
    }
    if refusals.is_empty() {
        Ok(disks)
    } else {
        Err(refusals)
    }
}

/// The refusal of a target one of `earlier` names already: two writers
/// on one card (or file) would interleave.
fn named_before<'a>(
    mut earlier: impl Iterator<Item = &'a Candidate>,
    t: &Candidate,
) -> Option<String> {
    let first = earlier.find(|o| match (&o.kind, &t.kind) {
        // Files yet to be made: the caller gives them absolute paths.
        (Kind::File(None), Kind::File(None)) => o.path == t.path,
        (a, b) => a == b,
    })?;
    Some(format!(
        "the same {} as {} (named twice)",
        if matches!(t.kind, Kind::Device(_)) {
            "device"
        } else {
            "file"
        },
        first.path.display()
    ))
}

/// Why `disk` is in use: a filesystem of it mounted (the running system's
/// or another), a swap area on it, or, when neither, a holder (LVM, RAID,
/// crypt) stacked on it. Writing under any of them corrupts what they hold.
fn in_use(disk: &Disk, mounts: &[Mount], swaps: &[String]) -> Vec<String> {
    let names: Vec<&str> = std::iter::once(disk.name.as_str())
        .chain(disk.members.iter().map(|(n, _)| n.as_str()))
        .collect();
    let devs: Vec<&str> = std::iter::once(disk.dev.as_str())
        .chain(disk.members.iter().map(|(_, d)| d.as_str()))
        .collect();
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let on_disk = |dev: &str, source: &str| {
        devs.contains(&dev)
            || (source.starts_with("/dev/") && names.contains(&base(source).as_str()))
    };
    let mut why = Vec::new();
    for m in mounts.iter().filter(|m| on_disk(&m.dev, &m.source)) {
        let from = if m.source.starts_with("/dev/") {
            base(&m.source)
        } else {
            m.dev.clone()
        };
        why.push(if SYSTEM_POINTS.contains(&m.point.as_str()) {
            format!(
                "holds the running system ({} is mounted from {from}); never a flash target",
                m.point
            )
        } else {
            format!(
                "{from} is mounted at {}: unmount it first (umount {})",
                crate::term::escape(&m.point),
                crate::term::escape(&m.point)
            )
        });
    }
    for s in swaps.iter().filter(|s| names.contains(&base(s).as_str())) {
        why.push(format!("{} is in use as swap: swapoff {s} first", base(s)));
    }
    if why.is_empty() && !disk.holders.is_empty() {
        why.push(format!(
            "in use by {} (LVM, RAID or encryption): close it first",
            disk.holders.join(", ")
        ));
    }
    why
}

/// Why `disk` is no card for target `t`: read-only, fixed (unless
/// allowed), empty, or too small for its image.
fn unfit(disk: &Disk, t: &Candidate, opts: Options) -> Vec<String> {
    let mut why = Vec::new();
    if disk.read_only {
        why.push("is read-only (is the lock switch of the SD adapter on?)".into());
    }
    let removable = disk.removable || disk.transport == "usb" || disk.transport == "mmc";
    if !removable && !opts.allow_fixed {
        why.push(format!(
            "is a fixed disk (transport {}, not removable){}: add --allow-fixed only if you are sure it is the card",
            disk.transport,
            if disk.model.is_empty() { String::new() } else { format!(", {}", disk.model) }
        ));
    }
    if disk.size == 0 {
        why.push("reports size 0: is a card in the reader?".into());
    } else if disk.size < t.image_size {
        why.push(format!(
            "holds {} but {} needs {}: use a larger card",
            human_bytes(disk.size),
            t.image,
            human_bytes(t.image_size)
        ));
    }
    why
}
