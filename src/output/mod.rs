//! Output files: written under a temporary name in the destination
//! directory and renamed only when complete, so no partial file ever
//! carries a final name. Large data is streamed.

// Sizes, offsets and block maps of images built from bases rpiimg did not
// make: no unchecked indexing or arithmetic here or below (a bad value gets
// an error, never a panic or a wrapped number).
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

pub(crate) mod bmap;
pub(crate) mod copy;
pub mod image;
pub(crate) mod imager;
pub(crate) mod layout;
pub(crate) mod xz;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
pub(crate) use crate::hostpath::display_path;
pub use crate::hostpath::file_name;

/// The buffer size large data is streamed in.
const PIECE: usize = 1 << 20;

/// The `(offset, length)` pieces of at most [`PIECE`] bytes that cover the
/// `len` bytes from `start` ([`crate::bytes::pieces`]).
fn pieces(start: u64, len: u64) -> impl Iterator<Item = (u64, usize)> {
    crate::bytes::pieces(start, len, PIECE)
}

/// The first `n` bytes of `buf` (all of it when it is shorter).
fn head(buf: &mut [u8], n: usize) -> &mut [u8] {
    buf.split_at_mut(n.min(buf.len())).0
}

/// A file being written; becomes `dest` on [`Pending::persist`], and
/// disappears if dropped first (an error, or the process being killed
/// leaves only a `.rpiimg-partial-*` file, never a final name).
#[derive(Debug)]
pub(crate) struct Pending {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    /// Permission bits the file gets with its final name.
    mode: u32,
    /// Locked and registered: removed on a signal, or by a later run's
    /// sweep once this one is gone (`crate::partial`).
    _tracked: crate::partial::Tracked,
}

fn out_err(path: &Path, e: io::Error) -> Error {
    let hint = match e.kind() {
        io::ErrorKind::PermissionDenied => "; choose a writable directory with --out",
        io::ErrorKind::StorageFull => "; free some space or choose another --out",
        _ => "",
    };
    Error::HostUnfit(format!("{}: {e}{hint}", path.display()))
}

/// Outputs that hold no secret (checksums, bmap, manifest: names, sizes
/// and sha256 sums only) are readable by everyone.
const PUBLIC: u32 = 0o644;

/// Node images (`.img`, `.img.xz`) hold host private keys and password
/// hashes: only their owner may read them, whatever the umask.
pub const PRIVATE: u32 = 0o600;

impl Pending {
    /// A file that becomes 0644 (see [`Pending::private`] for secrets).
    pub(crate) fn new(dest: &Path) -> Result<Self> {
        Self::with_mode(dest, PUBLIC)
    }

    /// A file that becomes 0600. The temporary file is 0600 from its
    /// creation (tempfile's `O_EXCL`, mode 0600), so no byte of it is ever
    /// readable by others, not even while it is written.
    pub(crate) fn private(dest: &Path) -> Result<Self> {
        Self::with_mode(dest, PRIVATE)
    }

    fn with_mode(dest: &Path, mode: u32) -> Result<Self> {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.rpiimg-partial-"))
            .tempfile_in(dir)
            .map_err(|e| out_err(dir, e))?;
        let tracked =
            crate::partial::track(tmp.as_file(), tmp.path()).map_err(|e| out_err(tmp.path(), e))?;
        Ok(Pending {
            tmp,
            dest: dest.to_path_buf(),
            mode,
            _tracked: tracked,
        })
    }

    pub(crate) fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    pub(crate) fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub(crate) fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flush to disk and give the file its final name and mode. Without
    /// `force`, an existing file of that name is an error and stays
    /// untouched; with it, the name is replaced (a rename: a file someone
    /// else made under that name is never written into).
    pub(crate) fn persist(mut self, force: bool) -> Result<PathBuf> {
        let dest = self.dest.clone();
        let mode = self.mode;
        self.tmp
            .as_file_mut()
            .flush()
            .map_err(|e| out_err(&dest, e))?;
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| out_err(&dest, e))?;
        // Temporary files are private; public outputs become 0644.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.tmp.path(), std::fs::Permissions::from_mode(mode))
                .map_err(|e| out_err(&dest, e))?;
        }
        if force {
            self.tmp
                .persist(&dest)
                .map_err(|e| out_err(&dest, e.error))?;
        } else {
            self.tmp.persist_noclobber(&dest).map_err(|e| {
                if e.error.kind() == io::ErrorKind::AlreadyExists {
                    Error::Exists(format!(
                        "{}: already exists; pass --force to overwrite it",
                        dest.display()
                    ))
                } else {
                    out_err(&dest, e.error)
                }
            })?;
        }
        Ok(dest)
    }
}

/// Test hook for the all-or-nothing output tests: with
/// `RPIIMG_FAULT=<point>` the process stops at that point as if killed
/// (`abort`, no cleanup), or with `RPIIMG_FAULT=<point>:enospc` the step
/// fails as on a full disk. Unset, this costs one environment lookup per
/// node output set.
pub(crate) fn fault(point: &str) -> io::Result<()> {
    match std::env::var("RPIIMG_FAULT") {
        Ok(v) if v == point => std::process::abort(),
        Ok(v) if v.strip_suffix(":enospc") == Some(point) => {
            Err(io::Error::from(io::ErrorKind::StorageFull))
        }
        _ => Ok(()),
    }
}

/// A small text output (checksums, bmap, manifest), written atomically.
pub(crate) fn write_text(dest: &Path, text: &str, force: bool) -> Result<PathBuf> {
    write_text_mode(dest, text, force, PUBLIC)
}

/// `write_text` with these permission bits.
pub(crate) fn write_text_mode(dest: &Path, text: &str, force: bool, mode: u32) -> Result<PathBuf> {
    let mut p = Pending::with_mode(dest, mode)?;
    p.file()
        .write_all(text.as_bytes())
        .map_err(|e| out_err(dest, e))?;
    p.persist(force)
}

/// `sha256sum -c` line for a file in the same directory.
pub(crate) fn sha256_line(hex: &str, file: &Path) -> String {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{hex}  {name}\n")
}

/// The first run of differing bytes between two files, as a half-open
/// range; `None` when they are identical. Streams both files.
pub(crate) fn first_difference(a: &Path, b: &Path) -> Result<Option<(u64, u64)>> {
    let open = |p: &Path| {
        std::fs::File::open(p).map_err(|e| Error::Host {
            path: p.display().to_string(),
            source: e,
        })
    };
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    let mut start: Option<u64> = None;
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| Error::Host {
            path: a.display().to_string(),
            source: e,
        })?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| Error::Host {
            path: b.display().to_string(),
            source: e,
        })?;
        let n = na.min(nb);
        // Equal chunks (nearly all of them) are one memcmp; only a chunk
        // where a difference starts or ends is looked at byte by byte.
        let (ca, cb) = (head(&mut ba, n), head(&mut bb, n));
        if !(ca == cb && start.is_none()) {
            // Offsets inside files: below u64::MAX.
            for (i, (x, y)) in (0u64..).zip(ca.iter().zip(cb.iter())) {
                match (start, x != y) {
                    (None, true) => start = Some(at.saturating_add(i)),
                    (Some(s), false) => return Ok(Some((s, at.saturating_add(i)))),
                    _ => {}
                }
            }
        }
        at = at.saturating_add(n as u64);
        if na != nb {
            // One file is longer: from here on they differ.
            let longer = u64::try_from(na.abs_diff(nb)).unwrap_or(u64::MAX);
            return Ok(Some((start.unwrap_or(at), at.saturating_add(longer))));
        }
        if na == 0 {
            return Ok(start.map(|s| (s, at)));
        }
    }
}

/// Fill `buf` from `f` as far as it goes; the bytes read (fewer only at
/// the end of the file).
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        match f.read(rest)? {
            0 => break,
            // `read` returns at most `rest.len()`: n stays within buf.
            k => n = n.saturating_add(k).min(buf.len()),
        }
    }
    Ok(n)
}
