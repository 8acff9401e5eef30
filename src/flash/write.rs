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
pub(super) const HEAD: u64 = HEAD_US as u64;
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
pub(super) struct Outcome {
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

pub(super) struct Job<'a> {
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

/// Add `n` to a byte counter of one card: the counters stay within a few
/// times the image's size, far below u64::MAX.
fn add(counter: &mut u64, n: u64) {
    *counter = counter.saturating_add(n);
}

/// Offset `rel` bytes after `off`: offsets inside an image, whose size is
/// a u64, so the sum is one too.
fn at(off: u64, rel: usize) -> u64 {
    off.saturating_add(rel as u64)
}

/// The first `n` bytes of `buf`; an error, never a panic, when `buf` is
/// shorter (each buffer is made for the largest piece put through it).
fn part(buf: &mut [u8], n: usize) -> std::io::Result<&mut [u8]> {
    buf.get_mut(..n)
        .ok_or_else(|| std::io::Error::other(format!("a {n}-byte piece is larger than its buffer")))
}

/// Bring one card to the image and verify it. Never panics on I/O; the
/// outcome says how far it got.
pub(super) fn flash(job: Job, cancel: &AtomicBool, bar: &mut Task, total: &Mutex<Task>) -> Outcome {
    let mut out = Outcome::default();
    let mut ctl = Run { cancel, bar, total };
    match run(&job, &mut ctl, &mut out) {
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

/// What every step of a card's run reports to: Ctrl-C, and the card's bar
/// and the bar of all cards.
struct Run<'a> {
    cancel: &'a AtomicBool,
    bar: &'a mut Task,
    total: &'a Mutex<Task>,
}

impl Run<'_> {
    /// Stop between pieces when Ctrl-C was pressed.
    fn check(&self) -> Result<(), Stop> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(Stop::Interrupted)
        } else {
            Ok(())
        }
    }

    /// `n` bytes of the card's work done, on both bars.
    fn advance(&mut self, n: u64) {
        self.bar.inc(n);
        if let Ok(mut t) = self.total.lock() {
            t.inc(n);
        }
    }
}

/// `map_err` for an I/O failure while `what`, as one line; a full
/// filesystem (a file standing in for a card) says what to do about it.
fn io(what: &str) -> impl Fn(std::io::Error) -> Stop {
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
}

/// The three steps of a card: every mapped range but the head, then the
/// head, then the read-back of everything written (see the module doc for
/// why in this order).
fn run(job: &Job, ctl: &mut Run, out: &mut Outcome) -> Result<(), Stop> {
    let f = &job.file;
    ctl.check()?;
    let started = Instant::now();
    let mut pass = Pass::new(job);
    if job.delta {
        // What is compared must come from the card, not the page cache
        // (a device is opened O_DIRECT; a file's cached pages are dropped).
        device::drop_cache(f).map_err(io("dropping the card's cached pages"))?;
    } else {
        pass.before_write(out).map_err(io("writing to the card"))?;
    }
    let mut buf = Aligned::new(CHUNK);
    let mut card = Aligned::new(if job.delta { CHUNK } else { 0 });
    pass.write_ranges(ctl, &mut buf, &mut card, out)?;
    if pass.cleared {
        f.sync_data().map_err(io("flushing the card"))?;
    }
    if fault("flash-abort") {
        // As if killed here: everything but the head is on the card.
        std::process::abort();
    }
    ctl.check()?;
    pass.write_head(ctl, &mut buf, out)?;
    out.write_time = started.elapsed();
    out.state = State::Written;
    if job.first && fault("flash-flip") {
        flip_one_byte(job.path, job.source).map_err(io("test hook flash-flip"))?;
    }
    let started = Instant::now();
    pass.read_back(ctl, &mut buf, out)?;
    out.verify_time = started.elapsed();
    Ok(())
}

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

impl<'a> Pass<'a> {
    fn new(job: &'a Job) -> Self {
        let src = job.source;
        Pass {
            f: &job.file,
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
        }
    }

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
        add(&mut out.written, data.len() as u64);
        Ok(())
    }

    /// Step 1: every mapped range, the head kept back in memory. The
    /// image's bytes are hashed on the way and checked against the block
    /// map's sha256 for the range, so an image changed since its build is
    /// caught before its range is read back.
    fn write_ranges(
        &mut self,
        ctl: &mut Run,
        buf: &mut Aligned,
        card: &mut Aligned,
        out: &mut Outcome,
    ) -> Result<(), Stop> {
        let src = self.src;
        let mut reader = src
            .reader()
            .map_err(|e| Stop::Failed(format!("reading {}: {e}", src.name())))?;
        for r in &src.ranges {
            let mut h = r.sha256.is_some().then(Sha256::new);
            for (off, n) in pieces(r) {
                ctl.check()?;
                if fault("flash-slow") {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                let chunk = part(buf.get(), n).map_err(io("reading the image"))?;
                reader.read_at(off, chunk).map_err(|e| {
                    Stop::Failed(format!("reading {} at byte {off}: {e}", src.name()))
                })?;
                if let Some(h) = &mut h {
                    h.update(&*chunk);
                }
                let done = self.put_chunk(chunk, off, card, out)?;
                ctl.advance(done);
            }
            if let (Some(h), Some(want)) = (h, &r.sha256) {
                if crate::bytes::hex(&h.finalize()) != *want {
                    return Err(Stop::Failed(image_changed(self, r)));
                }
            }
        }
        Ok(())
    }

    /// One piece of the image read at `off`: the part of it in the head is
    /// kept back (and compared with the card's while comparing), the rest
    /// put onto the card. Returns the work done: the piece, plus the bytes
    /// already on the card, which need no read-back.
    fn put_chunk(
        &mut self,
        chunk: &[u8],
        off: u64,
        card: &mut Aligned,
        out: &mut Outcome,
    ) -> Result<u64, Stop> {
        let n = chunk.len();
        let kept = usize::try_from(HEAD.saturating_sub(off))
            .unwrap_or(n)
            .min(n);
        let (head, rest) = chunk.split_at_checked(kept).unwrap_or((chunk, &[]));
        if !head.is_empty() {
            self.head.push((off, head.to_vec()));
            if self.comparing && !self.head_differs {
                let c = part(card.get(), kept).map_err(io("reading the card"))?;
                self.f
                    .read_exact_at(c, off)
                    .map_err(io("reading the card"))?;
                add(&mut out.compared, kept as u64);
                self.head_differs = *c != *head;
            } else {
                self.head_differs = true;
            }
        }
        let scratch = part(card.get(), if self.comparing { rest.len() } else { 0 })
            .map_err(io("reading the card"))?;
        let wrote = self
            .put(rest, scratch, at(off, kept), out)
            .map_err(io("writing to the card"))?;
        // A byte already on the card needs no read-back: count both.
        Ok((n as u64).saturating_add((rest.len() as u64).saturating_sub(wrote)))
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
        let (mut rest, mut scratch, mut here) = (img, card, off);
        while !rest.is_empty() {
            if !self.comparing {
                self.write(rest, here, out)?;
                return Ok(written.saturating_add(rest.len() as u64));
            }
            let n = STEP.min(rest.len());
            let (want, next) = rest.split_at_checked(n).unwrap_or((rest, &[]));
            let (got, next_scratch) = std::mem::take(&mut scratch)
                .split_at_mut_checked(n)
                .ok_or_else(|| {
                    std::io::Error::other("the card's scratch is shorter than the image's bytes")
                })?;
            self.f.read_exact_at(got, here)?;
            add(&mut out.compared, n as u64);
            let w = self.write_differing(want, got, here, out)?;
            add(&mut written, w);
            let same = (n as u64).saturating_sub(w);
            add(&mut out.skipped, same);
            self.probe_step(n as u64, same, out);
            (rest, scratch, here) = (next, next_scratch, at(here, n));
        }
        Ok(written)
    }

    /// Count `compared` bytes (`same` of them already on the card) towards
    /// the probe: once it is done, a card where less than half matched
    /// holds something else, and the rest is written without comparing.
    fn probe_step(&mut self, compared: u64, same: u64, out: &mut Outcome) {
        if self.probed < self.probe {
            add(&mut self.probed, compared);
            add(&mut self.matched, same);
            if self.probed >= self.probe && self.matched < self.probed / 2 {
                self.comparing = false;
                out.fell_back = true;
            }
        }
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
        if want.len() != got.len() {
            return Err(std::io::Error::other(
                "compared pieces of different lengths",
            ));
        }
        let mut written = 0u64;
        // The run of differing blocks being gathered: where it starts.
        let mut run: Option<usize> = None;
        // Whether each block differs, then a last "same" that ends a run
        // reaching the end.
        let differs = want
            .chunks(BLOCK)
            .zip(got.chunks(BLOCK))
            .map(|(w, g)| w != g)
            .chain(std::iter::once(false));
        for (k, differs) in differs.enumerate() {
            let a = k.saturating_mul(BLOCK).min(want.len());
            match (differs, run) {
                (true, None) => run = Some(a),
                (false, Some(s)) => {
                    let piece = want
                        .get(s..a)
                        .ok_or_else(|| std::io::Error::other("a run of blocks past its piece"))?;
                    self.write(piece, at(off, s), out)?;
                    add(&mut written, piece.len() as u64);
                    run = None;
                }
                _ => {}
            }
        }
        Ok(written)
    }

    /// Step 2: the head, last: when it was cleared or differs; else it was
    /// compared equal and counts as verified.
    fn write_head(
        &mut self,
        ctl: &mut Run,
        buf: &mut Aligned,
        out: &mut Outcome,
    ) -> Result<(), Stop> {
        if !(self.cleared || self.head_differs) {
            let n: u64 = self.head.iter().map(|(_, b)| b.len() as u64).sum();
            add(&mut out.skipped, n);
            ctl.advance(n);
            return Ok(());
        }
        if !self.cleared {
            // The head is the only difference: written last, as always.
            self.cleared = true;
            out.state = State::Incomplete;
        }
        let head = std::mem::take(&mut self.head);
        for (off, bytes) in &head {
            let b = part(buf.get(), bytes.len()).map_err(io("writing to the card"))?;
            b.copy_from_slice(bytes);
            self.write(b, *off, out)
                .map_err(io("writing to the card"))?;
        }
        self.f.sync_data().map_err(io("flushing the card"))
    }

    /// Step 3: read back what was written, from the card, not from the
    /// page cache (O_DIRECT on a device; dropped pages on a file). What
    /// was compared equal was read from the card already.
    fn read_back(
        &mut self,
        ctl: &mut Run,
        buf: &mut Aligned,
        out: &mut Outcome,
    ) -> Result<(), Stop> {
        device::drop_cache(self.f).map_err(io("dropping the card's cached pages"))?;
        for &(off, len, want) in &self.pieces {
            ctl.check()?;
            let b = part(buf.get(), len).map_err(io("reading the card back"))?;
            self.f
                .read_exact_at(b, off)
                .map_err(io("reading the card back"))?;
            add(&mut out.read_back, len as u64);
            ctl.advance(len as u64);
            let got: [u8; 32] = Sha256::digest(&*b).into();
            if got != want {
                return Err(Stop::Failed(self.read_back_differs(off, len)));
            }
        }
        Ok(())
    }

    /// The card did not keep bytes `off..off+len`: a card that failed must
    /// not boot what it holds, so it loses its partition table, like a card
    /// whose flash was cut short. The message says so.
    fn read_back_differs(&mut self, off: u64, len: usize) -> String {
        let blanked = clear_head(self.f, self.src, &mut self.zeros).is_ok();
        format!(
            "read-back differs from {} in bytes {off}-{}: the card did not keep what was written (a failing or fake card? try another){}",
            self.src.name(),
            at(off, len).saturating_sub(1),
            if blanked && !self.new_file {
                "; its partition table was cleared"
            } else {
                ""
            }
        )
    }
}

/// The image no longer matches its block map in range `r`: say so, and
/// leave a card that was written to without a partition table.
fn image_changed(pass: &mut Pass, r: &super::MapRange) -> String {
    let blanked = pass.cleared && clear_head(pass.f, pass.src, &mut pass.zeros).is_ok();
    format!(
        "{} does not match its block map at bytes {}-{} (the image changed after it was built: rebuild it, or check it with sha256sum -c){}",
        pass.src.name(),
        r.start,
        // Mapped ranges are never empty.
        r.end.saturating_sub(1),
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
    crate::bytes::pieces(r.start, r.end.saturating_sub(r.start), CHUNK)
}

/// Zero the mapped bytes of the image's head on the card, and flush.
fn clear_head(f: &File, src: &Source, buf: &mut Aligned) -> std::io::Result<()> {
    for r in src.ranges.iter().filter(|r| r.start < HEAD) {
        // Less than HEAD bytes: fits a usize.
        let len = usize::try_from(r.end.min(HEAD).saturating_sub(r.start)).unwrap_or(0);
        let zeros = part(buf.get(), len)?;
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
        // The buffers are CHUNK bytes at most: no overflow.
        let v = vec![0u8; len.saturating_add(4096)];
        // Always below 4096 for bytes; the guard keeps the window inside.
        let off = v.as_ptr().align_offset(4096).min(4096);
        Aligned { v, off, len }
    }

    /// The aligned `len` bytes. `v` holds `len + 4096` bytes and `off` is
    /// at most 4096, so they are always there; were they not, the buffer
    /// would be empty and every piece refused by [`part`], not a panic.
    fn get(&mut self) -> &mut [u8] {
        let (off, len) = (self.off, self.len);
        self.v
            .get_mut(off..)
            .and_then(|v| v.get_mut(..len))
            .unwrap_or_default()
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
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
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
