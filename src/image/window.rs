//! Byte windows over an image file: a partition is a window, and every
//! filesystem engine reads and writes through one, never past its ends.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

/// Positioned reads, so several readers can share one file handle.
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Size in bytes.
    fn size(&self) -> u64;
}

/// Positioned writes.
pub trait WriteAt: ReadAt {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
}

#[cfg(unix)]
fn file_read_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, off)
}

#[cfg(windows)]
fn file_read_at(f: &File, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, off)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            // seek_read returns at most buf.len() bytes.
            n => {
                buf = std::mem::take(&mut buf)
                    .get_mut(n..)
                    .ok_or_else(|| io::Error::other("read returned more bytes than asked"))?;
                off = off
                    .checked_add(n as u64)
                    .ok_or_else(|| io::Error::other("read past the largest file offset"))?;
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn file_write_at(f: &File, buf: &[u8], off: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, off)
}

#[cfg(windows)]
fn file_write_at(f: &File, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        // seek_write returns at most buf.len() bytes.
        let n = f.seek_write(buf, off)?;
        buf = buf
            .get(n..)
            .ok_or_else(|| io::Error::other("wrote more bytes than asked"))?;
        off = off
            .checked_add(n as u64)
            .ok_or_else(|| io::Error::other("write past the largest file offset"))?;
    }
    Ok(())
}

/// A window `[start, start + len)` of a shared file, with its own cursor
/// for the `Read`/`Write`/`Seek` users (fatfs, gpt).
#[derive(Clone, Debug)]
pub struct Window {
    file: Arc<File>,
    start: u64,
    len: u64,
    pos: u64,
    writable: bool,
}

impl Window {
    pub fn new(file: Arc<File>, start: u64, len: u64, writable: bool) -> Self {
        Window {
            file,
            start,
            len,
            pos: 0,
            writable,
        }
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file offset of `n` bytes at `off` in the window, and where in
    /// the window they end; an error when they do not lie inside it. The
    /// start comes from a partition table, so even inside the window the
    /// file offset may lie past u64 in a damaged one.
    fn check(&self, off: u64, n: usize) -> io::Result<(u64, u64)> {
        match off.checked_add(n as u64) {
            Some(end) if end <= self.len => {
                let at = self.start.checked_add(off).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "partition start {} + offset {off} lies past the largest file offset",
                            self.start
                        ),
                    )
                })?;
                Ok((at, end))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "access at byte {off} (+{n}) lies beyond the end of a {}-byte partition",
                    self.len
                ),
            )),
        }
    }
}

impl ReadAt for Window {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let (at, _) = self.check(offset, buf.len())?;
        file_read_at(&self.file, buf, at)
    }
    fn size(&self) -> u64 {
        self.len
    }
}

impl WriteAt for Window {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "image opened read-only",
            ));
        }
        let (at, _) = self.check(offset, buf.len())?;
        file_write_at(&self.file, buf, at)
    }
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        // n is at most buf.len().
        let (head, _) = buf.split_at_mut(n);
        let (at, end) = self.check(self.pos, n)?;
        file_read_at(&self.file, head, at)?;
        self.pos = end;
        Ok(n)
    }
}

impl Write for Window {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX));
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        // n is at most buf.len().
        let (head, _) = buf.split_at(n);
        let (_, end) = self.check(self.pos, n)?;
        self.write_all_at(head, self.pos)?;
        self.pos = end;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Window {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )),
        }
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start =
            usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}
