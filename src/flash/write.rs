//! One card: bring the mapped ranges of one image onto it, then read back
//! what was written and compare.
//!
//! By default the card is compared first (delta): each mapped chunk is
//! read from the card and only the 4 KiB blocks that differ from the image
//! are written, so re-flashing a card that holds an earlier build of the
//! node costs about one read of the mapped data (cards read several times
//! faster than they write, and wear with every write). A card that holds
//! something else shows it in the first mapped bytes (at most [`PROBE`]); the rest is then
//! written without reading it first, so a fresh card costs a full flash
//! and that probe. `--full` writes everything without comparing.
//!
//! Order keeps a broken flash recognisable: before the first byte is
//! written, the image's first 64 KiB (the MBR or primary GPT) is cleared
//! on the card, and it is written last, after everything else is on the
//! card. A card whose writer was killed or interrupted has no partition
//! table: no system will boot or mount half an image from it, and flashing
//! it again is all it needs. A card that already holds the image is not
//! written at all.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::source::Source;
use super::{device, State};
use crate::progress::Task;

const CHUNK: usize = 4 << 20;
/// Cleared first, written last.
pub const HEAD: u64 = HEAD_US as u64;
const HEAD_US: usize = 64 << 10;
/// What delta compares and writes in: a card's unit of change.
const BLOCK: usize = 4096;
/// Mapped bytes compared before deciding whether the card holds this image
/// (or an earlier build of it): at most this, and 1/64 of the mapped bytes
/// but at least [`STEP`]. If less than half of them already match, the rest
/// is written without reading it first.
const PROBE: u64 = 16 << 20;
/// Bytes read from the card per comparison (the probe's granularity).
const STEP: usize = 1 << 20;

/// How a card's writer ended.
#[derive(Default)]
pub struct Outcome {
    pub state: State,
    /// Bytes written onto the card.
    pub written: u64,
    /// Bytes read from the card and compared with the image before writing.
    pub compared: u64,
    /// Mapped bytes the card already held, so not written.
    pub skipped: u64,
    /// The card held something else: compared only for the probe, then
    /// written in full.
    pub fell_back: bool,
    /// Bytes read back from the card after writing.
    pub read_back: u64,
    pub write_time: Duration,
    pub verify_time: Duration,
    /// Why it failed, one line.
    pub error: Option<String>,
}

pub struct Job<'a> {
    pub source: &'a Source,
    pub file: File,
    pub path: &'a std::path::Path,
    /// First in the command line's order (the test hooks act on it).
    pub first: bool,
    /// Compare with the card and write only what differs.
    pub delta: bool,
    /// A file made for this flash, removed unless verified: messages say
    /// nothing about what it holds.
    pub new_file: bool,
}

enum Stop {
    Interrupted,
    Failed(String),
}

fn fault(point: &str) -> bool {
    std::env::var("RPIIMG_FAULT").is_ok_and(|v| v.split(',').any(|f| f == point))
}

/// Bring one card to the image and verify it. Never panics on I/O; the
/// outcome says how far it got.
pub fn flash(job: Job, cancel: &AtomicBool, bar: &mut Task, total: &Mutex<Task>) -> Outcome {
    let mut out = Outcome::default();
    match run(&job, cancel, bar, total, &mut out) {
        Ok(()) => out.state = State::Verified,
        Err(Stop::Interrupted) => {
            out.error = Some(match out.state {
                State::Written => "interrupted during the read-back: written, not verified".into(),
                State::NotStarted => "interrupted before anything was written".into(),
                _ => "interrupted".into(),
            });
        }
        Err(Stop::Failed(why)) => {
            out.error = Some(why);
            if out.state == State::Written {
                out.state = State::Failed;
            }
        }
    }
    out
}

/// Bytes written during the pass, to be read back: (offset, length, sha256).
type Piece = (u64, usize, [u8; 32]);

/// The writing pass's state for one card.
struct Pass<'a> {
    f: &'a File,
    src: &'a Source,
    /// Still comparing with the card (delta, and the probe not failed).
    comparing: bool,
    new_file: bool,
    /// The card's head was cleared: it must get the image's head at the end.
    cleared: bool,
    /// The card's head differs from the image's.
    head_differs: bool,
    /// The image's head bytes, written last.
    head: Vec<(u64, Vec<u8>)>,
    pieces: Vec<Piece>,
    /// Bytes to compare before deciding, compared so far during the probe,
    /// and how many of them matched.
    probe: u64,
    probed: u64,
    matched: u64,
    zeros: Aligned,
}

impl Pass<'_> {
    /// Clear the card's head once, before the first write.
    fn before_write(&mut self, out: &mut Outcome) -> std::io::Result<()> {
        if !self.cleared {
            clear_head(self.f, self.src, &mut self.zeros)?;
            self.cleared = true;
            out.state = State::Incomplete;
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8], off: u64, out: &mut Outcome) -> std::io::Result<()> {
        self.before_write(out)?;
        self.f.write_all_at(data, off)?;
        let sum: [u8; 32] = Sha256::digest(data).into();
        self.pieces.push((off, data.len(), sum));
        out.written += data.len() as u64;
        Ok(())
    }

    /// Bring `img` (the image's bytes at `off`, the head's part already
    /// kept back) onto the card: compared block by block, [`STEP`] bytes
    /// at a time, while comparing; else written whole. `card` is scratch of
    /// the same length. Returns the bytes written.
    fn put(
        &mut self,
        img: &[u8],
        card: &mut [u8],
        off: u64,
        out: &mut Outcome,
    ) -> std::io::Result<u64> {
        let mut written = 0u64;
        let mut at = 0usize;
        while at < img.len() {
            let here = off + at as u64;
            if !self.comparing {
                self.write(&img[at..], here, out)?;
                return Ok(written + (img.len() - at) as u64);
            }
            let end = (at + STEP).min(img.len());
            let (want, got) = (&img[at..end], &mut card[at..end]);
            self.f.read_exact_at(got, here)?;
            out.compared += want.len() as u64;
            let w = self.write_differing(want, got, here, out)?;
            written += w;
            let same = want.len() as u64 - w;
            out.skipped += same;
            if self.probed < self.probe {
                self.probed += want.len() as u64;
                self.matched += same;
                if self.probed >= self.probe && self.matched < self.probed / 2 {
                    self.comparing = false;
                    out.fell_back = true;
                }
            }
            at = end;
        }
        Ok(written)
    }

    /// Write the runs of 4 KiB blocks where `want` (the image at `off`)
    /// and `got` (the card) differ, each as one piece. Returns the bytes
    /// written.
    fn write_differing(
        &mut self,
        want: &[u8],
        got: &[u8],
        off: u64,
        out: &mut Outcome,
    ) -> std::io::Result<u64> {
        let mut written = 0u64;
        let mut run: Option<usize> = None;
        let blocks = want.len().div_ceil(BLOCK);
        for k in 0..=blocks {
            let a = (k * BLOCK).min(want.len());
            let differs = k < blocks && {
                let b = (a + BLOCK).min(want.len());
                want[a..b] != got[a..b]
            };
            match (differs, run) {
                (true, None) => run = Some(a),
                (false, Some(s)) => {
                    self.write(&want[s..a], off + s as u64, out)?;
                    written += (a - s) as u64;
                    run = None;
                }
                _ => {}
            }
        }
        Ok(written)
    }
}

fn run(
    job: &Job,
    cancel: &AtomicBool,
    bar: &mut Task,
    total: &Mutex<Task>,
    out: &mut Outcome,
) -> Result<(), Stop> {
    let src = job.source;
    let f = &job.file;
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| {
            Stop::Failed(
                if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
                    format!("{what}: no space left on the filesystem it is on; free space there or flash onto a file elsewhere, then flash again")
                } else {
                    format!("{what}: {e}")
                },
            )
        }
    };
    let advance = |bar: &mut Task, n: u64| {
        bar.inc(n);
        if let Ok(mut t) = total.lock() {
            t.inc(n);
        }
    };
    let check = || {
        if cancel.load(Ordering::Relaxed) {
            Err(Stop::Interrupted)
        } else {
            Ok(())
        }
    };
    check()?;

    let started = Instant::now();
    let mut pass = Pass {
        f,
        src,
        comparing: job.delta,
        new_file: job.new_file,
        cleared: false,
        head_differs: false,
        head: Vec::new(),
        pieces: Vec::new(),
        probe: (src.mapped() / 64).clamp(STEP as u64, PROBE),
        probed: 0,
        matched: 0,
        zeros: Aligned::new(HEAD_US),
    };
    if job.delta {
        // What is compared must come from the card, not the page cache
        // (a device is opened O_DIRECT; a file's cached pages are dropped).
        device::drop_cache(f).map_err(io("dropping the card's cached pages"))?;
    } else {
        pass.before_write(out).map_err(io("writing to the card"))?;
    }

    // 1. Every mapped range, the head kept back in memory. The image's
    // bytes are hashed on the way and checked against the block map's
    // sha256 for the range, so an image changed since its build is caught
    // before its range is read back.
    let mut reader = src
        .reader()
        .map_err(|e| Stop::Failed(format!("reading {}: {e}", src.name())))?;
    let mut buf = Aligned::new(CHUNK);
    let mut card = Aligned::new(if job.delta { CHUNK } else { 0 });
    for r in &src.ranges {
        let mut h = r.sha256.is_some().then(Sha256::new);
        for (off, n) in pieces(r) {
            check()?;
            if fault("flash-slow") {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            let chunk = &mut buf.get()[..n];
            reader
                .read_at(off, chunk)
                .map_err(|e| Stop::Failed(format!("reading {} at byte {off}: {e}", src.name())))?;
            if let Some(h) = &mut h {
                h.update(&*chunk);
            }
            let kept = usize::try_from(HEAD.saturating_sub(off))
                .unwrap_or(n)
                .min(n);
            if kept > 0 {
                pass.head.push((off, chunk[..kept].to_vec()));
                if pass.comparing && !pass.head_differs {
                    let c = &mut card.get()[..kept];
                    f.read_exact_at(c, off).map_err(io("reading the card"))?;
                    out.compared += kept as u64;
                    pass.head_differs = *c != chunk[..kept];
                } else {
                    pass.head_differs = true;
                }
            }
            let rest = &chunk[kept..];
            let scratch = &mut card.get()[..if pass.comparing { rest.len() } else { 0 }];
            let wrote = pass
                .put(rest, scratch, off + kept as u64, out)
                .map_err(io("writing to the card"))?;
            // A byte already on the card needs no read-back: count both.
            advance(bar, n as u64 + (rest.len() as u64 - wrote));
        }
        if let (Some(h), Some(want)) = (h, &r.sha256) {
            if crate::bytes::hex(&h.finalize()) != *want {
                return Err(Stop::Failed(image_changed(&mut pass, r)));
            }
        }
    }
    if pass.cleared {
        f.sync_data().map_err(io("flushing the card"))?;
    }
    if fault("flash-abort") {
        // As if killed here: everything but the head is on the card.
        std::process::abort();
    }
    check()?;

    // 2. The head, last: when it was cleared or differs.
    if pass.cleared || pass.head_differs {
        if !pass.cleared {
            // The head is the only difference: written last, as always.
            pass.cleared = true;
            out.state = State::Incomplete;
        }
        let head = std::mem::take(&mut pass.head);
        for (off, bytes) in &head {
            let b = &mut buf.get()[..bytes.len()];
            b.copy_from_slice(bytes);
            pass.write(b, *off, out)
                .map_err(io("writing to the card"))?;
        }
        f.sync_data().map_err(io("flushing the card"))?;
    } else {
        // Compared equal: count it as verified.
        let n: u64 = pass.head.iter().map(|(_, b)| b.len() as u64).sum();
        out.skipped += n;
        advance(bar, n);
    }
    out.write_time = started.elapsed();
    out.state = State::Written;
    if job.first && fault("flash-flip") {
        flip_one_byte(job.path, src).map_err(io("test hook flash-flip"))?;
    }

    // 3. Read back what was written, from the card, not from the page
    // cache (O_DIRECT on a device; dropped pages on a file). What was
    // compared equal was read from the card already.
    let started = Instant::now();
    device::drop_cache(f).map_err(io("dropping the card's cached pages"))?;
    for &(off, len, want) in &pass.pieces {
        check()?;
        let b = &mut buf.get()[..len];
        f.read_exact_at(b, off)
            .map_err(io("reading the card back"))?;
        out.read_back += len as u64;
        advance(bar, len as u64);
        let got: [u8; 32] = Sha256::digest(&*b).into();
        if got != want {
            // A card that failed must not boot what it holds: it loses
            // its partition table, like a card whose flash was cut short.
            let blanked = clear_head(f, src, &mut pass.zeros).is_ok();
            return Err(Stop::Failed(format!(
                "read-back differs from {} in bytes {off}-{}: the card did not keep what was written (a failing or fake card? try another){}",
                src.name(),
                off + len as u64 - 1,
                if blanked && !job.new_file {
                    "; its partition table was cleared"
                } else {
                    ""
                }
            )));
        }
    }
    out.verify_time = started.elapsed();
    Ok(())
}

/// The image no longer matches its block map in range `r`: say so, and
/// leave a card that was written to without a partition table.
fn image_changed(pass: &mut Pass, r: &super::MapRange) -> String {
    let blanked = pass.cleared && clear_head(pass.f, pass.src, &mut pass.zeros).is_ok();
    format!(
        "{} does not match its block map at bytes {}-{} (the image changed after it was built: rebuild it, or check it with sha256sum -c){}",
        pass.src.name(),
        r.start,
        r.end - 1,
        if pass.new_file {
            ""
        } else if blanked {
            "the card has part of it and no partition table"
        } else if pass.cleared {
            "the card has part of it"
        } else {
            "nothing was written to the card"
        }
    )
}

/// The (offset, length) pieces of at most CHUNK bytes that cover `r`, in
/// order: the one walk the write, read-back and mismatch loops share.
fn pieces(r: &super::MapRange) -> impl Iterator<Item = (u64, usize)> {
    let end = r.end;
    (r.start..end).step_by(CHUNK).map(move |off| {
        // At most CHUNK, so it fits a usize.
        let n = usize::try_from((end - off).min(CHUNK as u64)).unwrap_or(CHUNK);
        (off, n)
    })
}

/// Zero the mapped bytes of the image's head on the card, and flush.
fn clear_head(f: &File, src: &Source, buf: &mut Aligned) -> std::io::Result<()> {
    for r in src.ranges.iter().filter(|r| r.start < HEAD) {
        let len = usize::try_from(r.end.min(HEAD) - r.start).unwrap_or(0);
        let zeros = &mut buf.get()[..len];
        zeros.fill(0);
        f.write_all_at(zeros, r.start)?;
    }
    f.sync_data()
}

/// A buffer whose start is 4 KiB-aligned in memory, as O_DIRECT needs.
struct Aligned {
    v: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let v = vec![0u8; len + 4096];
        // Always below 4096 for bytes; the guard keeps indexing in bounds.
        let off = v.as_ptr().align_offset(4096).min(4096);
        Aligned { v, off, len }
    }

    fn get(&mut self) -> &mut [u8] {
        &mut self.v[self.off..self.off + self.len]
    }
}

/// Test hook: change one byte on the card, between write and read-back,
/// in the last mapped range (as a failing card would); through a second,
/// buffered handle, as the card's own handle may be O_DIRECT.
fn flip_one_byte(path: &std::path::Path, src: &Source) -> std::io::Result<()> {
    let Some(r) = src.ranges.last() else {
        return Ok(());
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, r.start)?;
    b[0] ^= 0xFF;
    f.write_all_at(&b, r.start)?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_a_range_in_order_without_gaps() {
        let chunk = CHUNK as u64;
        for (start, len) in [(0, 0), (5, 1), (7, chunk), (4096, 2 * chunk + 3)] {
            let r = super::super::MapRange {
                start,
                end: start + len,
                sha256: None,
            };
            let mut next = start;
            for (off, n) in pieces(&r) {
                assert_eq!(off, next);
                assert!(n > 0 && n <= CHUNK);
                next += n as u64;
            }
            assert_eq!(next, start + len, "{start}+{len}");
        }
    }
}
