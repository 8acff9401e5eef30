//! `rpiimg flash`: node images onto cards, several at once, only the
//! mapped blocks, every written range read back and compared, and never
//! onto a disk that is mounted, holds the running system, is fixed, is too
//! small, or is named twice.
//!
//! [`prepare`] opens the images and decides about the targets before
//! anything is written (all refusals at once); [`flash_all`] runs one
//! writer per card ([`write`]) and reports per card. Linux only: what is
//! specific to it sits in [`device`] and [`sysfs`].

// Reads .bmap files, images and sysfs text rpiimg did not make, and
// computes offsets on real disks: no unchecked indexing or arithmetic here
// or below (damage gets an error, never a panic or a wrapped offset).
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

pub(crate) mod bmapfile;
pub(crate) mod device;
pub mod preflight;
pub(crate) mod source;
pub mod sysfs;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::image::Cache;
use crate::progress::{human_bytes, Progress, Task};
use crate::term::escape;
use device::HostKind;
use preflight::{Candidate, Kind};
use source::Source;
use sysfs::{Disk, SysRoot};

/// Bytes `[start, end)` of an image that go onto the card, with the sha256
/// they must have when the block map gives one.
#[derive(Debug, Clone)]
pub(crate) struct MapRange {
    pub start: u64,
    pub end: u64,
    pub sha256: Option<String>,
}

impl MapRange {
    /// Its bytes. Every range made has `start < end` (the block map's
    /// parser and the partition table's spans see to it); one that had not
    /// would count as empty.
    pub(crate) fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// Where a card stands after `flash`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Nothing was written: the card is as it was.
    #[default]
    NotStarted,
    /// The partition table was cleared and part of the image written.
    Incomplete,
    /// Everything was written; the read-back did not finish.
    Written,
    /// Everything was written and the read-back found a difference.
    Failed,
    /// Everything was written and read back identical.
    Verified,
    /// A new file target that did not get there: removed, nothing left.
    Removed,
}

impl State {
    fn describe(self) -> &'static str {
        match self {
            State::NotStarted => "not started, card unchanged",
            State::Incomplete => {
                "INCOMPLETE: its partition table is cleared, so it holds no usable image; flash it again"
            }
            State::Written => "written, NOT verified",
            State::Failed => "FAILED verification",
            State::Verified => "verified OK",
            State::Removed => "FAILED, nothing left at the target",
        }
    }
}

pub(crate) struct Request {
    /// (image, target) in the order given.
    pub pairs: Vec<(PathBuf, PathBuf)>,
    pub to_file: bool,
    pub allow_fixed: bool,
    /// Write every mapped range without comparing with the card first.
    pub full: bool,
}

struct Card {
    source: Source,
    target: PathBuf,
    disk: Option<Disk>,
    /// Opened once, before the checks; written through this descriptor.
    opened: Mutex<device::Target>,
}

/// The images opened and the targets accepted: ready to confirm and write.
pub(crate) struct Prepared {
    cards: Vec<Card>,
    full: bool,
}

/// Pair the node images of an output directory with devices, in order.
pub(crate) fn cluster_pairs(dir: &Path, devices: &[PathBuf]) -> Result<Vec<(PathBuf, PathBuf)>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Host {
        path: dir.display().to_string(),
        source,
    })?;
    let mut imgs = Vec::new();
    let mut xzs = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if name.ends_with(".img") {
            imgs.push(e.path());
        } else if name.ends_with(".img.xz") {
            xzs.push(e.path());
        }
    }
    // The .img when both are there: it has the .bmap of itself and needs
    // no decompressing.
    for x in xzs {
        let plain = x.with_extension("");
        if !imgs.contains(&plain) {
            imgs.push(x);
        }
    }
    imgs.sort();
    if imgs.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no node images (*.img, *.img.xz) in it; run rpiimg build first",
            dir.display()
        )));
    }
    if imgs.len() != devices.len() {
        let names: Vec<String> = imgs.iter().map(|p| crate::hostpath::file_name(p)).collect();
        return Err(Error::Usage(format!(
            "{} holds {} node images ({}) but {} devices were given: give one device per image, or pairs IMAGE=DEVICE",
            dir.display(),
            imgs.len(),
            names.join(", "),
            devices.len()
        )));
    }
    Ok(imgs.into_iter().zip(devices.iter().cloned()).collect())
}

/// Open every image and decide about every target; nothing is written.
/// `sys` is `/` except in tests.
pub(crate) fn prepare(
    req: &Request,
    sys: &SysRoot,
    cache: &Cache,
    progress: Progress,
) -> Result<Prepared> {
    if !cfg!(target_os = "linux") {
        return Err(Error::Unsupported(
            "flashing is Linux-only for now; on this system write the images with Raspberry Pi Imager (rpiimg imager-list) or bmaptool".into(),
        ));
    }
    if req.pairs.is_empty() {
        return Err(Error::Usage(
            "nothing to flash: give IMAGE=DEVICE pairs, or --cluster DIR --devices DEV,DEV..."
                .into(),
        ));
    }
    let mut sources = Vec::new();
    for (img, _) in &req.pairs {
        sources.push(Source::open(img, cache, progress)?);
    }
    let mut t = open_targets(req, &sources);
    let opts = preflight::Options {
        allow_fixed: req.allow_fixed,
    };
    let disks = match preflight::check(sys, &t.candidates, opts) {
        Ok(d) => d,
        Err(r) => {
            t.refusals.extend(r);
            Vec::new()
        }
    };
    explain_unopened(t.unopened, &mut t.refusals);
    if !t.refusals.is_empty() {
        return Err(Error::FlashRefused {
            reasons: t.refusals,
        });
    }
    let cards = sources
        .into_iter()
        .zip(req.pairs.iter())
        .zip(disks)
        .zip(t.opened)
        .filter_map(|(((source, (_, target)), disk), opened)| {
            Some(Card {
                source,
                target: target.clone(),
                disk,
                opened: Mutex::new(opened?),
            })
        })
        .collect();
    Ok(Prepared {
        cards,
        full: req.full,
    })
}

/// The targets opened, for the checks.
struct Targets {
    refusals: Vec<String>,
    /// What the checks look at, one per target not refused yet.
    candidates: Vec<Candidate>,
    /// The opened target of each candidate (`None`: a device the kernel
    /// would not open).
    opened: Vec<Option<device::Target>>,
    /// Devices the kernel would not open, as shown, and why.
    unopened: Vec<(String, std::io::Error)>,
}

/// Every file a source reads (image, .bmap, .sha256, cache entry), by
/// (st_dev, st_ino): a target must be none of them.
fn input_ids(sources: &[Source]) -> Vec<((u64, u64), PathBuf)> {
    sources
        .iter()
        .flat_map(|s| s.inputs())
        .filter_map(|p| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&p).ok()?;
            Some(((m.dev(), m.ino()), p))
        })
        .collect()
}

/// Open each target once (what is checked is what gets written) and lock
/// it for this run; a refusal for each that cannot be a target whatever
/// the checks say.
fn open_targets(req: &Request, sources: &[Source]) -> Targets {
    let inputs = input_ids(sources);
    let mut t = Targets {
        refusals: Vec::new(),
        candidates: Vec::new(),
        opened: Vec::new(),
        unopened: Vec::new(),
    };
    for ((_, target), src) in req.pairs.iter().zip(sources) {
        let shown = target.display().to_string();
        let (kind, opened) = match device::open_target(target, req.to_file) {
            Ok(o) => {
                // The same target twice is left to the checks to name; any
                // other is taken for this run (after the input check: the
                // sources hold shared locks on themselves).
                let twice = t.opened.iter().flatten().any(|p| p.id == o.id);
                let Some((kind, o)) = target_kind(o, &shown, &inputs, src, &mut t.refusals) else {
                    continue;
                };
                if let (false, Some(o)) = (twice, &o) {
                    if let Err(why) = o.lock() {
                        t.refusals.push(format!("{shown}: {why}"));
                        continue;
                    }
                }
                (kind, o)
            }
            Err(device::OpenError::Refused(why)) => {
                t.refusals.push(format!("{shown}: {why}"));
                continue;
            }
            Err(device::OpenError::Device(dev, e)) => {
                // The checks say why, if they can.
                t.unopened.push((shown.clone(), e));
                (Kind::Device(dev), None)
            }
        };
        let path = if kind == Kind::File(None) {
            std::path::absolute(target).unwrap_or_else(|_| target.clone())
        } else {
            target.clone()
        };
        t.candidates.push(Candidate {
            path,
            kind,
            image: src.name(),
            image_size: src.size,
        });
        t.opened.push(opened);
    }
    t
}

/// A device the kernel would not open and the checks found nothing
/// against: the kernel's reason is the refusal.
fn explain_unopened(unopened: Vec<(String, std::io::Error)>, refusals: &mut Vec<String>) {
    for (shown, e) in unopened {
        if !refusals
            .iter()
            .any(|r| r.starts_with(&format!("{shown}: ")))
        {
            refusals.push(format!(
                "{shown}: the kernel would not open it for writing: {e}{}",
                if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
                    " (in use: mounted, held, or being flashed by another run)"
                } else {
                    ""
                }
            ));
        }
    }
}

/// What the checks see of an opened target; `None` (with the reason in
/// `refusals`) for a file that is one of the flash's inputs, or a new
/// file with no room for the image.
fn target_kind(
    t: device::Target,
    shown: &str,
    inputs: &[((u64, u64), PathBuf)],
    src: &Source,
    refusals: &mut Vec<String>,
) -> Option<(Kind, Option<device::Target>)> {
    let (d, i) = match &t.id {
        HostKind::Block(dev) => return Some((Kind::Device(dev.clone()), Some(t))),
        HostKind::File(d, i) => (*d, *i),
    };
    if let Some((_, p)) = inputs.iter().find(|(id, _)| *id == (d, i)) {
        refusals.push(format!(
            "{shown}: is an input of this flash ({}); name another file",
            p.display()
        ));
        return None;
    }
    // A file takes room as it is written: a new one the mapped bytes, an
    // existing one at most those that are not allocated in it yet.
    let need = match t.temp {
        Some(_) => src.mapped(),
        None => src.mapped().saturating_sub(t.allocated()),
    };
    if let Some(free) = t.free_space().filter(|f| *f < need) {
        refusals.push(format!(
            "{shown}: its filesystem has {} free but writing {} onto it needs up to {}: free some space or write elsewhere",
            human_bytes(free),
            src.name(),
            human_bytes(need)
        ));
        return None;
    }
    if t.temp.is_none() {
        return Some((Kind::File(Some((d, i))), Some(t)));
    }
    // A file yet to be named: two pairs naming it match by path.
    Some((Kind::File(None), Some(t)))
}

impl Prepared {
    /// What will be written where, for the confirmation.
    pub(crate) fn listing(&self) -> String {
        let mut s = String::new();
        for c in &self.cards {
            let what = match &c.disk {
                Some(d) => format!(
                    "{}, {}, {}{}",
                    if d.model.is_empty() {
                        "unknown model"
                    } else {
                        &d.model
                    },
                    human_bytes(d.size),
                    d.transport,
                    if d.removable { ", removable" } else { "" }
                ),
                None => "image file".into(),
            };
            let sum = match &c.source.checked {
                Some(f) => format!("sha256 matches {}", escape(f)),
                None => "no .sha256 or manifest beside it: not checked".into(),
            };
            s.push_str(&format!(
                "  {} ({} mapped of {}, map: {}, {sum})\n      -> {}  [{}]\n",
                escape(&c.source.name()),
                human_bytes(c.source.mapped()),
                human_bytes(c.source.size),
                escape(&c.source.map),
                escape(&c.target.display().to_string()),
                escape(&what)
            ));
        }
        s
    }

    pub(crate) fn has_devices(&self) -> bool {
        self.cards.iter().any(|c| c.disk.is_some())
    }
}

/// One card's result.
#[derive(Debug, serde::Serialize)]
pub struct CardReport {
    pub image: String,
    pub target: String,
    pub state: State,
    /// Bytes written onto the card.
    pub written: u64,
    /// Bytes read from the card and compared with the image before
    /// writing (0 with `--full`).
    pub compared: u64,
    /// Mapped bytes the card already held, not written again.
    pub skipped: u64,
    /// The card held something else: compared only at the start, then
    /// written in full.
    pub fell_back: bool,
    /// Bytes read back from the card after writing.
    pub read_back: u64,
    /// Write speed, bytes per second (0 when it did not finish).
    pub write_bytes_per_sec: u64,
    pub verify_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A device whose partition table the kernel was asked to re-read and
    /// refused (the card works; replug it to see its partitions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reread_warning: Option<String>,
}

/// Write every card, one writer thread each; `cancel` (set by Ctrl-C)
/// stops them all between chunks.
pub(crate) fn flash_all(
    prep: Prepared,
    progress: Progress,
    cancel: &AtomicBool,
) -> Vec<CardReport> {
    // Each card's work: its mapped bytes written and read back (a u64
    // twice over is still far from overflowing for any image).
    let per_card: Vec<u64> = prep
        .cards
        .iter()
        .map(|c| c.source.mapped().saturating_mul(2))
        .collect();
    let total = Mutex::new(progress.task("all cards (write + read-back)", per_card.iter().sum()));
    let failed = AtomicBool::new(false);
    let run = Writers {
        progress,
        cancel,
        total: &total,
        failed: &failed,
        delta: !prep.full,
    };
    let reports: Vec<CardReport> = std::thread::scope(|s| {
        let handles: Vec<_> = prep
            .cards
            .iter()
            .zip(&per_card)
            .enumerate()
            .map(|(i, (c, &work))| {
                let run = &run;
                s.spawn(move || run.card(c, i == 0, work))
            })
            .collect();
        handles
            .into_iter()
            .zip(&prep.cards)
            .map(|(h, c)| h.join().unwrap_or_else(|_| panicked(c)))
            .collect()
    });
    if let Ok(t) = total.into_inner() {
        if failed.load(std::sync::atomic::Ordering::Relaxed) {
            t.fail("not every card was written, see the report");
        } else {
            t.finish();
        }
    }
    reports
}

/// What every card's writer shares.
struct Writers<'a> {
    progress: Progress,
    cancel: &'a AtomicBool,
    /// The bar of all cards.
    total: &'a Mutex<Task>,
    /// Set when a card's writer stopped with an error.
    failed: &'a AtomicBool,
    /// Compare with the card and write only what differs (not `--full`).
    delta: bool,
}

impl Writers<'_> {
    /// Write one card (`first` in the command line's order) on its own
    /// bar of `work` bytes, settle a new file's name, and report.
    fn card(&self, c: &Card, first: bool, work: u64) -> CardReport {
        let label = format!(
            "{} -> {}",
            c.source.name(),
            c.target.file_name().map_or_else(
                || c.target.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        );
        let mut bar = self.progress.task(&escape(&label), work);
        let mut target = match c.opened.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        let written_at = target
            .temp
            .as_ref()
            .map_or_else(|| c.target.clone(), |t| t.path().to_path_buf());
        let mut outcome = match open_for_writing(c, &target) {
            Ok(file) => write::flash(
                write::Job {
                    source: &c.source,
                    file,
                    path: &written_at,
                    first,
                    delta: self.delta,
                    new_file: target.temp.is_some(),
                },
                self.cancel,
                &mut bar,
                self.total,
            ),
            Err(e) => write::Outcome {
                error: Some(format!(
                    "cannot open it for writing: {e}{}",
                    if e.raw_os_error() == Some(16) {
                        " (in use: mounted or held since the checks?)"
                    } else {
                        ""
                    }
                )),
                ..write::Outcome::default()
            },
        };
        if outcome.error.is_some() {
            bar.fail("stopped, see the report");
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        } else {
            bar.finish();
        }
        settle_new_file(&mut target, &c.target, &mut outcome);
        report(c, outcome)
    }
}

/// The descriptor a card's writer writes through. A device gets O_DIRECT
/// when every range starts and ends at its logical blocks (O_DIRECT needs
/// every write at and of whole ones: ranges end at them unless the image's
/// size is odd); a file is grown to the image's size first.
fn open_for_writing(c: &Card, target: &device::Target) -> std::io::Result<std::fs::File> {
    match &c.disk {
        Some(d) => {
            let lb = d.logical_block;
            let aligned =
                c.source.ranges.iter().all(|r| {
                    r.start.checked_rem(lb) == Some(0) && r.end.checked_rem(lb) == Some(0)
                });
            if aligned {
                target.direct();
            }
            target.file.try_clone()
        }
        None => target
            .grow(c.source.size)
            .and_then(|()| target.file.try_clone()),
    }
}

/// The report of a card whose writer thread panicked: nothing is known
/// of how far it got, so the card counts as incomplete.
fn panicked(c: &Card) -> CardReport {
    CardReport {
        image: c.source.name(),
        target: c.target.display().to_string(),
        state: State::Incomplete,
        written: 0,
        compared: 0,
        skipped: 0,
        fell_back: false,
        read_back: 0,
        write_bytes_per_sec: 0,
        verify_seconds: 0.0,
        error: Some("its writer thread panicked".into()),
        reread_warning: None,
    }
}

/// A target that did not exist was written under a hidden name: verified,
/// it gets its name; otherwise it is removed, so no partial file is ever
/// left under the target's name.
fn settle_new_file(target: &mut device::Target, path: &Path, o: &mut write::Outcome) {
    if target.temp.is_none() {
        return;
    }
    if o.state == State::Verified {
        if let Err(why) = target.keep(path) {
            o.state = State::Removed;
            o.error = Some(why);
        }
        return;
    }
    // Dropping the name removes the file.
    target.temp = None;
    o.state = State::Removed;
    let why = o.error.take().unwrap_or_else(|| "not verified".into());
    o.error = Some(format!(
        "{why}; the new file was removed: nothing is at {}",
        path.display()
    ));
}

fn report(c: &Card, o: write::Outcome) -> CardReport {
    let mut r = CardReport {
        image: c.source.name(),
        target: c.target.display().to_string(),
        state: o.state,
        written: o.written,
        compared: o.compared,
        skipped: o.skipped,
        fell_back: o.fell_back,
        read_back: o.read_back,
        // A u64 times 1000 fits a u128; no time measured, no speed.
        write_bytes_per_sec: u128::from(o.written)
            .saturating_mul(1000)
            .checked_div(o.write_time.as_millis())
            .map_or(0, |v| u64::try_from(v).unwrap_or(u64::MAX)),
        verify_seconds: o.verify_time.as_secs_f64(),
        error: o.error,
        reread_warning: None,
    };
    // The card's partitions, as the kernel sees them, are the new ones.
    if c.disk.as_ref().is_some_and(|d| d.partscan) && o.state == State::Verified {
        r.reread_warning = device::reread_partitions(&c.target).err();
    }
    r
}

/// Exit status: 0 every card verified, 130 interrupted, 1 otherwise.
pub fn status(reports: &[CardReport], interrupted: bool) -> i32 {
    if interrupted {
        130
    } else if reports.iter().all(|r| r.state == State::Verified) {
        0
    } else {
        1
    }
}

/// The per-card table.
pub fn render(reports: &[CardReport]) -> String {
    let mut s = String::new();
    for r in reports {
        let speed = if r.write_bytes_per_sec > 0 {
            format!("{}/s", human_bytes(r.write_bytes_per_sec))
        } else {
            "-".into()
        };
        let compared = match (r.compared, r.fell_back) {
            (0, _) => String::new(),
            (c, false) => format!(
                ", {} compared ({} already on it)",
                human_bytes(c),
                human_bytes(r.skipped)
            ),
            (c, true) => format!(
                ", {} compared (it held something else: written in full)",
                human_bytes(c)
            ),
        };
        s.push_str(&format!(
            "{}  {} -> {}: {} written{compared}, {speed}, {}\n",
            if r.state == State::Verified {
                "ok  "
            } else {
                "FAIL"
            },
            escape(&r.image),
            escape(&r.target),
            human_bytes(r.written),
            r.state.describe()
        ));
        if let Some(e) = &r.error {
            s.push_str(&format!("      {}\n", escape(e)));
        }
        if let Some(w) = &r.reread_warning {
            s.push_str(&format!(
                "      the kernel did not re-read its partition table ({}): unplug and replug the card\n",
                escape(w)
            ));
        }
    }
    let ok = reports
        .iter()
        .filter(|r| r.state == State::Verified)
        .count();
    s.push_str(&format!(
        "{ok} of {} cards written and verified\n",
        reports.len()
    ));
    s
}
