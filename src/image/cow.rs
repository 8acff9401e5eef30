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

/// Content staged by reference: `len` bytes of a host file from `offset`,
/// read at commit time so large files are never held in memory.
#[derive(Clone, Debug)]
pub struct FileRange {
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

    /// Number of staged bytes (pages in memory plus referenced runs).
    pub fn staged_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE + self.ranges.values().map(|(n, _)| n * PAGE).sum::<u64>()
    }

    /// The byte ranges `[start, end)` of the base a commit writes, merged
    /// and sorted: everything outside them stays as the base has it.
    pub fn touched(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = self
            .pages
            .keys()
            .map(|&p| (p, p + 1))
            .chain(self.ranges.iter().map(|(&s, (n, _))| (s, s + n)))
            .collect();
        runs.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (s, e) in runs {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        let size = self.base.size();
        out.into_iter()
            .map(|(s, e)| (s * PAGE, (e * PAGE).min(size)))
            .collect()
    }

    fn range_for(&self, page: u64) -> Option<(u64, &FileRange)> {
        let (&start, (n, r)) = self.ranges.range(..=page).next_back()?;
        (page < start + n).then_some((start, r))
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> io::Result<()> {
        if let Some(p) = self.pages.get(&page) {
            buf.copy_from_slice(p);
            return Ok(());
        }
        if let Some((start, r)) = self.range_for(page) {
            buf.fill(0);
            let rel = (page - start) * PAGE;
            if rel < r.len {
                let n = usize::try_from((r.len - rel).min(PAGE)).unwrap_or(0);
                let mut f = File::open(r.path.as_ref())?;
                f.seek(SeekFrom::Start(r.offset + rel))?;
                f.read_exact(&mut buf[..n])?;
            }
            return Ok(());
        }
        let size = self.base.size();
        let off = page * PAGE;
        let n = usize::try_from(size.saturating_sub(off).min(PAGE)).unwrap_or(0);
        buf[n..].fill(0);
        self.base.read_exact_at(&mut buf[..n], off)
    }

    /// Stage `len` bytes of a host file at page-aligned `offset`; the rest of
    /// the last page reads as zeros.
    pub fn stage_file_range(&mut self, offset: u64, range: FileRange) -> io::Result<()> {
        if !offset.is_multiple_of(PAGE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file content must start on a page",
            ));
        }
        let pages = range.len.div_ceil(PAGE);
        if offset + pages * PAGE > self.base.size() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "staged content runs past the end of the partition",
            ));
        }
        let first = offset / PAGE;
        for p in first..first + pages {
            self.pages.remove(&p);
        }
        self.ranges.insert(first, (pages, range));
        Ok(())
    }

    /// Staged in-memory pages as (offset, bytes), for fix-ups of structures
    /// a library has just written.
    pub fn staged_pages_mut(&mut self) -> impl Iterator<Item = (u64, &mut [u8])> {
        self.pages.iter_mut().map(|(k, v)| (*k * PAGE, &mut v[..]))
    }

    /// Forget staged content of whole pages (blocks that were freed again).
    pub fn discard(&mut self, offset: u64, len: u64) {
        let first = offset / PAGE;
        let last = (offset + len).div_ceil(PAGE);
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
        if let Some((start, _)) = self.range_for(page) {
            let (n, r) = self.ranges.remove(&start).expect("range present");
            let mut tmp = Cow {
                base: &self.base,
                pages: BTreeMap::new(),
                ranges: BTreeMap::new(),
                pos: 0,
            };
            tmp.ranges.insert(start, (n, r));
            for p in start..start + n {
                let mut b = vec![0u8; PAGE_US].into_boxed_slice();
                tmp.read_page(p, &mut b)?;
                self.pages.insert(p, b);
            }
        }
        Ok(())
    }
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
        if end.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the partition",
            ));
        }
        // Fast path: nothing staged in the range.
        let first = offset / PAGE;
        let last = (offset + buf.len() as u64).div_ceil(PAGE);
        if self.pages.range(first..last).next().is_none()
            && self
                .ranges
                .range(..last)
                .next_back()
                .is_none_or(|(s, (n, _))| s + n <= first)
        {
            return self.base.read_exact_at(buf, offset);
        }
        let mut page = vec![0u8; PAGE_US];
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let p = at / PAGE;
            let within = usize::try_from(at % PAGE).unwrap_or(0);
            let n = (PAGE_US - within).min(buf.len() - done);
            self.read_page(p, &mut page)?;
            buf[done..done + n].copy_from_slice(&page[within..within + n]);
            done += n;
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
        if end.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let p = at / PAGE;
            let within = usize::try_from(at % PAGE).unwrap_or(0);
            let n = (PAGE_US - within).min(buf.len() - done);
            self.materialize(p)?;
            if !self.pages.contains_key(&p) {
                let mut b = vec![0u8; PAGE_US].into_boxed_slice();
                if n < PAGE_US {
                    self.read_page(p, &mut b)?;
                }
                self.pages.insert(p, b);
            }
            let page = self.pages.get_mut(&p).expect("page staged");
            page[within..within + n].copy_from_slice(&buf[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

impl<D: WriteAt> Cow<D> {
    /// Write everything staged to the base, in ascending offset order.
    pub fn commit(self) -> io::Result<D> {
        let size = self.base.size();
        let mut buf = vec![0u8; 1 << 20];
        for (&start, (n, r)) in &self.ranges {
            let mut f = File::open(r.path.as_ref())?;
            f.seek(SeekFrom::Start(r.offset))?;
            let total = n * PAGE;
            let mut done = 0u64;
            while done < total {
                let chunk =
                    usize::try_from((total - done).min(buf.len() as u64)).unwrap_or(buf.len());
                let b = &mut buf[..chunk];
                let have =
                    usize::try_from(r.len.saturating_sub(done).min(chunk as u64)).unwrap_or(0);
                f.read_exact(&mut b[..have])?;
                b[have..].fill(0);
                let off = start * PAGE + done;
                let len = usize::try_from((size - off).min(chunk as u64)).unwrap_or(chunk);
                self.base.write_all_at(&b[..len], off)?;
                done += chunk as u64;
            }
        }
        for (&p, page) in &self.pages {
            let off = p * PAGE;
            let len = usize::try_from((size - off).min(PAGE)).unwrap_or(0);
            self.base.write_all_at(&page[..len], off)?;
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
        self.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: ReadAt> Write for Cow<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stage(buf, self.pos)?;
        self.pos += buf.len() as u64;
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
