//! One card: write the mapped ranges of one image, then read every one of
//! them back from the card and compare.
//!
//! Order keeps a broken flash recognisable: the image's first 64 KiB (the
//! MBR or primary GPT) is cleared on the card first and written last, after
//! everything else is on the card. A card whose writer was killed or
//! interrupted has no partition table: no system will boot or mount half
//! an image from it, and flashing it again is all it needs.

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
pub const HEAD: u64 = 64 << 10;

/// How a card's writer ended.
pub struct Outcome {
    pub state: State,
    /// Bytes written onto the card (mapped bytes of the image).
    pub written: u64,
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
}

enum Stop {
    Interrupted,
    Failed(String),
}

fn fault(point: &str) -> bool {
    std::env::var("RPIIMG_FAULT").is_ok_and(|v| v == point)
}

/// Write and verify one card. Never panics on I/O; the outcome says how
/// far it got.
pub fn flash(job: Job, cancel: &AtomicBool, bar: &mut Task, total: &Mutex<Task>) -> Outcome {
    let mut out = Outcome {
        state: State::NotStarted,
        written: 0,
        write_time: Duration::ZERO,
        verify_time: Duration::ZERO,
        error: None,
    };
    match run(&job, cancel, bar, total, &mut out) {
        Ok(()) => out.state = State::Verified,
        Err(Stop::Interrupted) => {
            out.error = Some(match out.state {
                State::Written => "interrupted during the read-back: written, not verified".into(),
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
        move |e: std::io::Error| Stop::Failed(format!("{what}: {e}"))
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

    // 1. Clear the head's mapped bytes on the card.
    let started = Instant::now();
    let mut buf = Aligned::new(CHUNK);
    clear_head(f, src, &mut buf).map_err(io("writing to the card"))?;
    out.state = State::Incomplete;

    // 2. Every mapped range, the head kept back in memory. A range the
    // block map gives a sha256 for is checked against it on the way back
    // from the card (one hash per byte instead of two); the others are
    // hashed here, for that check.
    let mut reader = src
        .reader()
        .map_err(|e| Stop::Failed(format!("reading {}: {e}", src.name())))?;
    let mut head: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut sums = Vec::with_capacity(src.ranges.len());
    for r in &src.ranges {
        let mut h = r.sha256.is_none().then(Sha256::new);
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
                head.push((off, chunk[..kept].to_vec()));
            }
            if kept < n {
                f.write_all_at(&chunk[kept..], off + kept as u64)
                    .map_err(io("writing to the card"))?;
            }
            out.written += n as u64;
            advance(bar, n as u64);
        }
        sums.push(match (h, &r.sha256) {
            (Some(h), _) => crate::bytes::hex(&h.finalize()),
            (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        });
    }
    f.sync_data().map_err(io("flushing the card"))?;
    if fault("flash-abort") {
        // As if killed here: everything but the head is on the card.
        std::process::abort();
    }
    check()?;

    // 3. The head, last.
    for (off, bytes) in &head {
        let b = &mut buf.get()[..bytes.len()];
        b.copy_from_slice(bytes);
        f.write_all_at(b, *off).map_err(io("writing to the card"))?;
    }
    f.sync_data().map_err(io("flushing the card"))?;
    out.write_time = started.elapsed();
    out.state = State::Written;
    if job.first && fault("flash-flip") {
        flip_one_byte(job.path, src).map_err(io("test hook flash-flip"))?;
    }

    // 4. Read every range back from the card, not from the page cache
    // (O_DIRECT on a device; dropped pages on a file).
    let started = Instant::now();
    device::drop_cache(f).map_err(io("dropping the card's cached pages"))?;
    for (r, want) in src.ranges.iter().zip(&sums) {
        let mut h = Sha256::new();
        for (off, n) in pieces(r) {
            check()?;
            let b = &mut buf.get()[..n];
            f.read_exact_at(b, off)
                .map_err(io("reading the card back"))?;
            h.update(&*b);
            advance(bar, n as u64);
        }
        if crate::bytes::hex(&h.finalize()) != *want {
            // A card that failed must not boot what it holds: it loses
            // its partition table, like a card whose flash was cut short.
            let blanked = clear_head(f, src, &mut buf).is_ok();
            return Err(Stop::Failed(format!(
                "{}{}",
                mismatch(src, r),
                if blanked {
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

/// Why a range read back differs: the card, or (when the block map's
/// sha256 was trusted while writing) an image that no longer matches it.
fn mismatch(src: &Source, r: &super::MapRange) -> String {
    let image_ok = r.sha256.as_ref().is_none_or(|want| {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let Ok(mut reader) = src.reader() else {
            return true;
        };
        for (off, n) in pieces(r) {
            if reader.read_at(off, &mut buf[..n]).is_err() {
                return true;
            }
            h.update(&buf[..n]);
        }
        crate::bytes::hex(&h.finalize()) == *want
    });
    if image_ok {
        format!(
            "read-back differs from {} in bytes {}-{}: the card did not keep what was written (a failing or fake card? try another)",
            src.name(),
            r.start,
            r.end - 1
        )
    } else {
        format!(
            "{} does not match its block map at bytes {}-{} (the image changed after it was built: rebuild it, or check it with sha256sum -c); the card holds the changed bytes",
            src.name(),
            r.start,
            r.end - 1
        )
    }
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
