//! Copy-on-write staging over a window: every write of a transaction lands
//! in memory (or, for bulk file content, as a reference to a host file), and
//! reaches the image only at `commit`. A failed transaction is dropped and
//! leaves the image byte-identical.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::window::{ReadAt, WriteAt};

const PAGE: u64 = 4096;
const PAGE_US: usize = 4096;

/// `n` as a length of at most `cap` bytes (a u64 past usize is past `cap`).
fn at_most(n: u64, cap: usize) -> usize {
    usize::try_from(n).map_or(cap, |n| n.min(cap))
}

/// An offset past u64. Staged pages and runs lie inside the base (`stage`
/// and `stage_file_range` check that), so this is reported, never wrapped.
fn past_u64(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} lies past the largest offset"),
    )
}

/// The byte offset of page `p`.
fn page_offset(p: u64) -> io::Result<u64> {
    p.checked_mul(PAGE)
        .ok_or_else(|| past_u64(format!("page {p}")))
}

/// `pos` moved past `n` bytes that were just read or staged there.
fn advance(pos: u64, n: usize) -> io::Result<u64> {
    pos.checked_add(n as u64)
        .ok_or_else(|| past_u64(format!("{n} bytes at offset {pos}")))
}

/// Content staged by reference: `len` bytes of a host file from `offset`,
/// read at commit time so large files are never held in memory.
#[derive(Clone, Debug)]
pub(crate) struct FileRange {
    pub path: Arc<PathBuf>,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug)]
pub struct Cow<D> {
    base: D,
    pages: BTreeMap<u64, Box<[u8]>>,
    /// Page-aligned runs (first page -> content) staged from host files;
    /// bytes past the content's end read as zeros up to the run's page count.
    ranges: BTreeMap<u64, (u64, FileRange)>,
    pos: u64,
}

impl<D: ReadAt> Cow<D> {
    pub fn new(base: D) -> Self {
        Cow {
            base,
            pages: BTreeMap::new(),
            ranges: BTreeMap::new(),
            pos: 0,
        }
    }

    pub fn base(&self) -> &D {
        &self.base
    }

    /// The byte ranges `[start, end)` of the base a commit writes, merged
    /// and sorted: everything outside them stays as the base has it.
    pub(crate) fn touched(&self) -> Vec<(u64, u64)> {
        let size = self.base.size();
        // Byte runs clipped to the end of the base (its last page may be
        // partial): saturating is that clip for one reaching past u64.
        let bytes = |first: u64, pages: u64| {
            (
                first.saturating_mul(PAGE).min(size),
                first.saturating_add(pages).saturating_mul(PAGE).min(size),
            )
        };
        let mut runs: Vec<(u64, u64)> = self
            .pages
            .keys()
            .map(|&p| bytes(p, 1))
            .chain(self.ranges.iter().map(|(&s, (n, _))| bytes(s, *n)))
            .collect();
        runs.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (s, e) in runs {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        out
    }

    /// The run holding `page`: its first page, its page count, the page's
    /// place in it and its content.
    fn range_for(&self, page: u64) -> Option<(u64, u64, u64, &FileRange)> {
        let (&start, &(n, ref r)) = self.ranges.range(..=page).next_back()?;
        // start <= page (the range asked for), so this is the place.
        let at = page.checked_sub(start)?;
        (at < n).then_some((start, n, at, r))
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> io::Result<()> {
        if let Some(p) = self.pages.get(&page) {
            buf.copy_from_slice(p);
            return Ok(());
        }
        if let Some((_, _, at, r)) = self.range_for(page) {
            buf.fill(0);
            let rel = page_offset(at)?;
            // Content left from this page on; none in the zero tail of the
            // run's last page.
            let left = r.len.saturating_sub(rel);
            if left > 0 {
                let from = r.offset.checked_add(rel).ok_or_else(|| {
                    past_u64(format!(
                        "byte {rel} of {} from offset {}",
                        r.path.display(),
                        r.offset
                    ))
                })?;
                let mut f = File::open(r.path.as_ref())?;
                f.seek(SeekFrom::Start(from))?;
                let (content, _) = buf.split_at_mut(at_most(left, buf.len()));
                f.read_exact(content)?;
            }
            return Ok(());
        }
        let size = self.base.size();
        let off = page_offset(page)?;
        // The part of the page inside the base; past its end reads as zeros.
        let (inside, past) = buf.split_at_mut(at_most(size.saturating_sub(off), buf.len()));
        past.fill(0);
        self.base.read_exact_at(inside, off)
    }

    /// Stage `len` bytes of a host file at page-aligned `offset`; the rest of
    /// the last page reads as zeros.
    pub(crate) fn stage_file_range(&mut self, offset: u64, range: FileRange) -> io::Result<()> {
        if !offset.is_multiple_of(PAGE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file content must start on a page",
            ));
        }
        let pages = range.len.div_ceil(PAGE);
        let end = pages
            .checked_mul(PAGE)
            .and_then(|n| offset.checked_add(n))
            .filter(|&end| end <= self.base.size());
        let Some(end) = end else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "staged content runs past the end of the partition",
            ));
        };
        // offset is page-aligned, so end / PAGE is first + pages.
        let first = offset / PAGE;
        for p in first..end / PAGE {
            self.pages.remove(&p);
        }
        self.ranges.insert(first, (pages, range));
        Ok(())
    }

    /// Staged in-memory pages as (offset, bytes), for fix-ups of structures
    /// a library has just written.
    pub(crate) fn staged_pages_mut(&mut self) -> impl Iterator<Item = (u64, &mut [u8])> {
        // Page numbers are u64 offsets / PAGE, so this is exact.
        self.pages
            .iter_mut()
            .map(|(k, v)| (k.saturating_mul(PAGE), &mut v[..]))
    }

    /// Forget staged content of whole pages (blocks that were freed again).
    pub(crate) fn discard(&mut self, offset: u64, len: u64) {
        let first = offset / PAGE;
        // To the end of the last page touched; past u64 means to the end.
        let last = offset.saturating_add(len).div_ceil(PAGE);
        for p in first..last {
            self.pages.remove(&p);
        }
        let doomed: Vec<u64> = self.ranges.range(first..last).map(|(k, _)| *k).collect();
        for k in doomed {
            self.ranges.remove(&k);
        }
    }

    /// Turn a referenced run into in-memory pages before it is partly overwritten.
    fn materialize(&mut self, page: u64) -> io::Result<()> {
        if self.pages.contains_key(&page) {
            return Ok(());
        }
        if let Some((start, n, _, _)) = self.range_for(page) {
            let end = start
                .checked_add(n)
                .ok_or_else(|| past_u64(format!("staged run of {n} pages at page {start}")))?;
            let (n, r) = self.ranges.remove(&start).expect("range present");
            let mut tmp = Cow {
                base: &self.base,
                pages: BTreeMap::new(),
                ranges: BTreeMap::new(),
                pos: 0,
            };
            tmp.ranges.insert(start, (n, r));
            for p in start..end {
                let mut b = vec![0u8; PAGE_US].into_boxed_slice();
                tmp.read_page(p, &mut b)?;
                self.pages.insert(p, b);
            }
        }
        Ok(())
    }
}

/// `buf` cut at page boundaries when it starts `skip` bytes into a page
/// (`skip` < PAGE_US): the rest of that page, then whole pages.
fn page_chunks(buf: &[u8], skip: usize) -> impl Iterator<Item = &[u8]> {
    let (head, rest) = buf.split_at(PAGE_US.saturating_sub(skip).min(buf.len()));
    std::iter::once(head).chain(rest.chunks(PAGE_US))
}

/// [`page_chunks`] for reading into.
fn page_chunks_mut(buf: &mut [u8], skip: usize) -> impl Iterator<Item = &mut [u8]> {
    let len = buf.len();
    let (head, rest) = buf.split_at_mut(PAGE_US.saturating_sub(skip).min(len));
    std::iter::once(head).chain(rest.chunks_mut(PAGE_US))
}

impl<D: ReadAt> ReadAt for &D {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
}

impl<D: ReadAt> ReadAt for Cow<D> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.base.size());
        let Some(end) = end else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the partition",
            ));
        };
        if buf.is_empty() {
            return Ok(());
        }
        // Fast path: nothing staged in the range. (Runs end inside the
        // base, so s + n never saturates.)
        let first = offset / PAGE;
        let last = end.div_ceil(PAGE);
        if self.pages.range(first..last).next().is_none()
            && self
                .ranges
                .range(..last)
                .next_back()
                .is_none_or(|(s, (n, _))| s.saturating_add(*n) <= first)
        {
            return self.base.read_exact_at(buf, offset);
        }
        let mut page = vec![0u8; PAGE_US];
        let mut skip = at_most(offset % PAGE, PAGE_US);
        for (chunk, p) in page_chunks_mut(buf, skip).zip(first..last) {
            self.read_page(p, &mut page)?;
            // skip + chunk.len() <= PAGE_US by page_chunks_mut.
            let (_, src) = page.split_at(skip);
            let (src, _) = src.split_at(chunk.len());
            chunk.copy_from_slice(src);
            skip = 0;
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.base.size()
    }
}

impl<D: ReadAt> Cow<D> {
    /// Stage a write (the `WriteAt` of a transaction).
    pub fn stage(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.base.size());
        let Some(end) = end else {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        };
        if buf.is_empty() {
            return Ok(());
        }
        let first = offset / PAGE;
        let last = end.div_ceil(PAGE);
        let mut skip = at_most(offset % PAGE, PAGE_US);
        for (chunk, p) in page_chunks(buf, skip).zip(first..last) {
            self.materialize(p)?;
            if !self.pages.contains_key(&p) {
                let mut b = vec![0u8; PAGE_US].into_boxed_slice();
                if chunk.len() < PAGE_US {
                    self.read_page(p, &mut b)?;
                }
                self.pages.insert(p, b);
            }
            let page = self.pages.get_mut(&p).expect("page staged");
            // skip + chunk.len() <= PAGE_US by page_chunks.
            let (_, dst) = page.split_at_mut(skip);
            let (dst, _) = dst.split_at_mut(chunk.len());
            dst.copy_from_slice(chunk);
            skip = 0;
        }
        Ok(())
    }
}

impl<D: WriteAt> Cow<D> {
    /// Write everything staged to the base, in ascending offset order.
    pub fn commit(self) -> io::Result<D> {
        let size = self.base.size();
        const BUF: usize = 1 << 20;
        let mut buf = vec![0u8; BUF];
        for (&start, &(n, ref r)) in &self.ranges {
            let mut f = File::open(r.path.as_ref())?;
            f.seek(SeekFrom::Start(r.offset))?;
            let at = page_offset(start)?;
            let total = page_offset(n)?;
            let mut done = 0u64;
            while let Some(left) = total.checked_sub(done).filter(|&left| left > 0) {
                let (b, _) = buf.split_at_mut(at_most(left, BUF));
                // The run's content, then zeros to the end of its last page.
                let (content, zeros) = b.split_at_mut(at_most(r.len.saturating_sub(done), b.len()));
                f.read_exact(content)?;
                zeros.fill(0);
                let off = at
                    .checked_add(done)
                    .ok_or_else(|| past_u64(format!("byte {done} of the run at {at}")))?;
                // The last page may run past the end of the base.
                let (inside, _) = b.split_at(at_most(size.saturating_sub(off), b.len()));
                self.base.write_all_at(inside, off)?;
                done = advance(done, b.len())?;
            }
        }
        for (k, (&p, page)) in self.pages.iter().enumerate() {
            let off = page_offset(p)?;
            // The last page may run past the end of the base.
            let (inside, _) = page.split_at(at_most(size.saturating_sub(off), page.len()));
            self.base.write_all_at(inside, off)?;
            if k == 0 {
                // Half written: what a reader without the image's lock
                // would see (the concurrency tests stop here).
                crate::lock::pause("commit-midway");
            }
        }
        Ok(self.base)
    }
}

impl<D: ReadAt> Read for Cow<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.base.size().saturating_sub(self.pos))
            .map_or(buf.len(), |r| r.min(buf.len()));
        if n == 0 {
            return Ok(0);
        }
        let (head, _) = buf.split_at_mut(n);
        self.read_exact_at(head, self.pos)?;
        self.pos = advance(self.pos, n)?;
        Ok(n)
    }
}

impl<D: ReadAt> Write for Cow<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stage(buf, self.pos)?;
        self.pos = advance(self.pos, buf.len())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<D: ReadAt> Seek for Cow<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.base.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test fixtures index and size their own buffers; a panic there is a failed test"
)]
mod tests {
    use super::*;

    #[test]
    fn staged_writes_are_visible_and_base_untouched() {
        let base: Vec<u8> = (0..3 * PAGE).map(|i| (i % 251) as u8).collect();
        let mut c = Cow::new(base.clone());
        c.stage(b"hello", PAGE - 2).unwrap();
        let mut got = [0u8; 5];
        c.read_exact_at(&mut got, PAGE - 2).unwrap();
        assert_eq!(&got, b"hello");
        let mut around = [0u8; 4];
        c.read_exact_at(&mut around, PAGE - 4).unwrap();
        assert_eq!(around, [base[PAGE_US - 4], base[PAGE_US - 3], b'h', b'e']);
        assert_eq!(c.base(), &base, "nothing reaches the base before commit");
        assert!(c.stage(b"x", 3 * PAGE).is_err());
    }

    #[test]
    fn unaligned_writes_across_pages_match_a_plain_buffer() {
        let size = 5 * PAGE_US - 100;
        let base: Vec<u8> = (0..size).map(|i| u8::try_from(i % 253).unwrap()).collect();
        let mut model = base.clone();
        let mut c = Cow::new(base);
        for (at, len) in [(10, 3 * PAGE_US), (PAGE_US - 1, 2), (size - 7, 7), (0, 0)] {
            let data: Vec<u8> = (0..len).map(|i| u8::try_from(i % 7 + 1).unwrap()).collect();
            c.stage(&data, at as u64).unwrap();
            model[at..at + len].copy_from_slice(&data);
        }
        for (at, len) in [(0, size), (5, 2 * PAGE_US + 3), (size - 1, 1), (PAGE_US, 0)] {
            let mut got = vec![0u8; len];
            c.read_exact_at(&mut got, at as u64).unwrap();
            assert_eq!(got, model[at..at + len], "read of {len} at {at}");
        }
        assert!(c.stage(b"xy", size as u64 - 1).is_err());
        assert!(c.stage(b"x", u64::MAX).is_err());
    }

    #[test]
    fn file_ranges_read_back_zero_padded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("src");
        std::fs::write(&p, vec![7u8; 5000]).unwrap();
        let mut c = Cow::new(vec![1u8; 4 * PAGE_US]);
        c.stage_file_range(
            PAGE,
            FileRange {
                path: Arc::new(p),
                offset: 0,
                len: 5000,
            },
        )
        .unwrap();
        let mut b = vec![0u8; 2 * PAGE_US];
        c.read_exact_at(&mut b, PAGE).unwrap();
        assert!(b[..5000].iter().all(|&x| x == 7));
        assert!(b[5000..].iter().all(|&x| x == 0));
        // Overwriting part of a referenced run keeps the rest.
        c.stage(&[9], PAGE + 1).unwrap();
        c.read_exact_at(&mut b, PAGE).unwrap();
        assert_eq!(&b[..3], &[7, 9, 7]);
    }
}
