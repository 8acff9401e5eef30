//! Opening a base image: raw `.img` as is, `.img.xz` decompressed (in
//! parallel when it has several blocks) into the cache, streaming, with an
//! optional sha256 pin checked before anything is used.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::cache::{Cache, Damage};
use crate::bytes::hex;
use crate::lock::Access;
use crate::progress::Progress;

const XZ_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
const IO_CHUNK: usize = 1 << 20;
/// Runs of zeros at least this long become holes in decompressed images.
const HOLE_GRAIN: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot open the image: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: sha256 mismatch: expected {expected}, found {actual}; the file is not the pinned image (re-download it, or fix the pin)")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("invalid sha256 pin {0:?}: expected 64 hex digits")]
    BadPin(String),
    #[error("{path}: the .xz data is truncated or corrupt ({detail}); re-download the image")]
    Xz { path: PathBuf, detail: String },
    #[error("{path}: I/O error: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{entry}: the cache entry of {input} is {what}; nothing was built from it. Drop it with `{drop}` and run again: the .xz is decompressed afresh")]
    CacheEntry {
        entry: PathBuf,
        input: PathBuf,
        what: String,
        drop: String,
    },
    #[error(
        "cache directory {path}: {source} (choose another with --cache-dir or RPIIMG_CACHE_DIR)"
    )]
    Cache { path: PathBuf, source: io::Error },
    #[error("{dir}: cannot write the decompressed image of {input} into the cache: {source}{}; nothing was kept", cache_write_hint(source, *size))]
    CacheWrite {
        dir: PathBuf,
        input: PathBuf,
        /// The image's size, when the `.xz` index tells it.
        size: Option<u64>,
        source: io::Error,
    },
    #[error("{path}: is {what}, not an image file; name the .img or .img.xz file itself")]
    NotAFile { path: PathBuf, what: &'static str },
}

/// How to get past a failed cache write: a full disk needs room (about
/// the image's size) or another cache folder.
fn cache_write_hint(e: &io::Error, size: Option<u64>) -> String {
    let need = size
        .map(|n| {
            format!(
                " (the image needs up to {})",
                crate::progress::human_bytes(n)
            )
        })
        .unwrap_or_default();
    if e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull {
        format!("; free space there{need} or choose another cache folder with --cache-dir or RPIIMG_CACHE_DIR")
    } else {
        "; choose another cache folder with --cache-dir or RPIIMG_CACHE_DIR".into()
    }
}

/// An image ready for random access.
pub struct OpenedImage {
    /// The user's input file.
    pub input: PathBuf,
    /// The raw image being read: the input itself, or its cache entry.
    pub raw_path: PathBuf,
    pub file: Arc<File>,
    pub size: u64,
    pub compressed: bool,
    /// sha256 of the input file, when it was computed (pinned, or `.xz`).
    pub input_sha256: Option<String>,
    /// sha256 of the raw image when it is known: a sealed cache entry's
    /// (`build` proves the bytes it copies against it), or a pinned `.img`'s.
    pub raw_sha256: Option<String>,
}

/// Normalise and validate a user-supplied pin.
pub(crate) fn parse_pin(pin: &str) -> Result<String, ImageError> {
    let p = pin.trim().to_ascii_lowercase();
    if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(p)
    } else {
        Err(ImageError::BadPin(pin.to_string()))
    }
}

/// Whether the file starts with the xz magic (by content, not name).
pub(crate) fn is_xz(path: &Path) -> Result<bool, ImageError> {
    let mut f = File::open(path).map_err(|source| ImageError::Open {
        path: path.into(),
        source,
    })?;
    let mut m = [0u8; 6];
    let n = read_up_to(&mut f, &mut m).map_err(|source| ImageError::Io {
        path: path.into(),
        source,
    })?;
    Ok(n == 6 && m == XZ_MAGIC)
}

/// The first `n` bytes of `buf`, which a reader reported it filled: more
/// than `buf` holds is a broken reader, an error rather than a panic.
fn filled(buf: &[u8], n: usize) -> io::Result<&[u8]> {
    buf.get(..n).ok_or_else(|| {
        io::Error::other(format!(
            "read reported {n} bytes into a {}-byte buffer",
            buf.len()
        ))
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let (len, mut n) = (buf.len(), 0);
    while let Some(rest) = buf.get_mut(n..).filter(|rest| !rest.is_empty()) {
        match r.read(rest) {
            Ok(0) => break,
            // At most rest.len() from a working reader.
            Ok(k) => {
                n = n.checked_add(k).filter(|&m| m <= len).ok_or_else(|| {
                    io::Error::other(format!(
                        "read reported {k} bytes into a {}-byte buffer",
                        rest.len()
                    ))
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// sha256 of a whole file, streamed.
pub fn sha256_file(path: &Path, progress: Progress, what: &str) -> Result<String, ImageError> {
    let f = File::open(path).map_err(|source| ImageError::Open {
        path: path.into(),
        source,
    })?;
    sha256_open(&f, progress, what).map_err(|source| ImageError::Io {
        path: path.into(),
        source,
    })
}

/// sha256 of an open file from its first byte (positioned reads: the
/// descriptor's offset is left alone).
pub(crate) fn sha256_open(f: &File, progress: Progress, what: &str) -> io::Result<String> {
    let len = f.metadata()?.len();
    let mut task = progress.task(what, len);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; IO_CHUNK];
    let mut r = PosReader { file: f, pos: 0 };
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(filled(&buf, n)?);
        task.inc(n as u64);
    }
    task.finish();
    Ok(hex(&h.finalize()))
}

/// Reads an open file from its start with positioned reads.
struct PosReader<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for PosReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos = self
            .pos
            .checked_add(n as u64)
            .ok_or_else(|| io::Error::other("read past 2^64"))?;
        Ok(n)
    }
}

/// Whether an open file starts with the xz magic.
fn starts_with_xz(f: &File) -> io::Result<bool> {
    let mut m = [0u8; 6];
    let n = read_up_to(&mut PosReader { file: f, pos: 0 }, &mut m)?;
    Ok(n == 6 && m == XZ_MAGIC)
}

/// Open `path` for reading, verifying `pin` and decompressing `.xz` into
/// `cache`, with a shared lock (see [`open_for`]).
pub fn open(
    path: &Path,
    pin: Option<&str>,
    cache: &Cache,
    progress: Progress,
) -> Result<OpenedImage, ImageError> {
    open_for(path, pin, cache, progress, Access::Shared)
}

/// [`open`] for readers (`Access::Shared`) or for the one run that edits
/// the image in place (`Access::Exclusive`, `rpiimg fs`). The lock is taken
/// on the input before its first byte is read and lasts as long as the
/// returned [`OpenedImage`]: a reader never sees an edit half committed,
/// and an edit never starts from what another edit is about to replace.
/// An `.xz` is locked too, and its cache entry shared while it is used.
pub(crate) fn open_for(
    path: &Path,
    pin: Option<&str>,
    cache: &Cache,
    progress: Progress,
    access: Access,
) -> Result<OpenedImage, ImageError> {
    let pin = pin.map(parse_pin).transpose()?;
    let io_err = |source| ImageError::Io {
        path: path.into(),
        source,
    };
    let input = File::open(path).map_err(|source| ImageError::Open {
        path: path.into(),
        source,
    })?;
    let meta = input.metadata().map_err(io_err)?;
    if meta.is_dir() {
        return Err(ImageError::NotAFile {
            path: path.into(),
            what: "a directory",
        });
    }
    let why = match access {
        Access::Shared => "it is editing this image",
        Access::Exclusive => "it is reading or editing this image",
    };
    crate::lock::lock(&input, path, access, why).map_err(io_err)?;
    crate::lock::pause("image-locked");
    let compressed = starts_with_xz(&input).map_err(io_err)?;
    let (raw_path, file, input_sha256, raw_sha256) = if compressed {
        let (p, f, sha, raw) = decompress_cached(path, &input, pin.as_deref(), cache, progress)?;
        (p, f, Some(sha), Some(raw))
    } else {
        let sha = match &pin {
            Some(expected) => {
                let actual = sha256_open(&input, progress, "checksum").map_err(io_err)?;
                if &actual != expected {
                    return Err(ImageError::Checksum {
                        path: path.into(),
                        expected: expected.clone(),
                        actual,
                    });
                }
                Some(actual)
            }
            None => None,
        };
        (path.to_path_buf(), input, sha.clone(), sha)
    };
    let size = file
        .metadata()
        .map_err(|source| ImageError::Io {
            path: raw_path.clone(),
            source,
        })?
        .len();
    Ok(OpenedImage {
        input: path.to_path_buf(),
        raw_path,
        file: Arc::new(file),
        size,
        compressed,
        input_sha256,
        raw_sha256,
    })
}

/// The cache entry of the `.xz` `input` (open as `path`): checked against
/// its seal, or filled and sealed, under the entry's fill lock; returned
/// open, with a shared lock on it (so `rpiimg cache clear` leaves it
/// alone), its path, the `.xz`'s sha256 and the image's.
fn decompress_cached(
    path: &Path,
    input: &File,
    pin: Option<&str>,
    cache: &Cache,
    progress: Progress,
) -> Result<(PathBuf, File, String, String), ImageError> {
    // With a pin the cache can answer before reading the input at all: the
    // entry is keyed by the sha256 its .xz had when it was filled.
    let sha = match pin {
        Some(p) => p.to_string(),
        None => sha256_open(input, progress, "checksum").map_err(|source| ImageError::Io {
            path: path.into(),
            source,
        })?,
    };
    let cache_err = |source| ImageError::Cache {
        path: cache.dir().to_path_buf(),
        source,
    };
    let entry = cache.entry(&sha);
    let fill = cache.lock_entry(&sha).map_err(cache_err)?;
    crate::lock::pause("cache-locked");
    let hash = |f: &File| sha256_open(f, progress, "verify cache entry");
    let entry_err = |source| ImageError::Io {
        path: entry.clone(),
        source,
    };
    match cache.open_sealed(&sha, hash).map_err(entry_err)? {
        Some(Ok((file, seal))) => {
            crate::lock::lock(
                &file,
                &entry,
                Access::Shared,
                "it is removing this cache entry",
            )
            .map_err(entry_err)?;
            drop(fill);
            return Ok((entry, file, sha, seal.sha256));
        }
        Some(Err(damage)) => {
            let what = match damage {
                Damage::Size { sealed, found } if found < sealed => {
                    format!("truncated: {found} bytes, sealed with {sealed}")
                }
                Damage::Size { sealed, found } => format!(
                    "damaged: {found} bytes, sealed with {sealed} (changed after it was filled)"
                ),
                Damage::Content { sealed, found } => format!(
                    "damaged: its sha256 is {found}, sealed with {sealed} (changed after it was filled)"
                ),
            };
            return Err(ImageError::CacheEntry {
                entry,
                input: path.into(),
                what,
                drop: cache.drop_command(&sha),
            });
        }
        None => {}
    }
    // Partial entries of runs that were killed (their lock is free).
    crate::partial::sweep(cache.dir(), |n| {
        n.starts_with(".partial-") && n.ends_with(".img")
    });
    // A wrong pin is told before minutes of decompressing, not after:
    // hashing the .xz costs one read of it.
    if let Some(expected) = pin {
        let actual = sha256_open(input, progress, "checksum").map_err(|source| ImageError::Io {
            path: path.into(),
            source,
        })?;
        if actual != expected {
            return Err(ImageError::Checksum {
                path: path.into(),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(&Cache::partial_prefix(&sha))
        .suffix(".img")
        .tempfile_in(cache.dir())
        .map_err(cache_err)?;
    let _tracked = crate::partial::track(tmp.as_file(), tmp.path()).map_err(cache_err)?;
    crate::lock::pause("cache-partial");
    let done = decompress_open(path, input, tmp.as_file_mut(), cache.dir(), progress)?;
    if let Some(expected) = pin {
        if done.input_sha256 != expected {
            return Err(ImageError::Checksum {
                path: path.into(),
                expected: expected.to_string(),
                actual: done.input_sha256,
            });
        }
    }
    let file = tmp.persist(&entry).map_err(|e| cache_err(e.error))?;
    // Nobody else can hold it: it is new, and clearing it takes the fill lock.
    crate::lock::lock(
        &file,
        &entry,
        Access::Shared,
        "it is removing this cache entry",
    )
    .map_err(entry_err)?;
    cache
        .write_seal(&done.input_sha256, &file, done.size, &done.image_sha256)
        .map_err(cache_err)?;
    drop(fill);
    Ok((entry, file, done.input_sha256, done.image_sha256))
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(filled(buf, n)?);
        Ok(n)
    }
}

/// Counts bytes for the progress bar.
struct CountingReader<'a, R> {
    inner: R,
    task: &'a mut crate::progress::Task,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.task.inc(n as u64);
        Ok(n)
    }
}

/// What decompressing an `.xz` gave.
pub(crate) struct Decompressed {
    /// sha256 of the compressed input, and of the image and its length.
    pub input_sha256: String,
    pub image_sha256: String,
    pub size: u64,
}

/// Decompress every xz stream of `path` into `out` (holes for zero runs);
/// returns the sha256 of the compressed input.
pub fn decompress(path: &Path, out: &mut File, progress: Progress) -> Result<String, ImageError> {
    let f = File::open(path).map_err(|source| ImageError::Open {
        path: path.into(),
        source,
    })?;
    let dir = Path::new(".");
    Ok(decompress_open(path, &f, out, dir, progress)?.input_sha256)
}

/// [`decompress`] from an open `.xz` (read from its first byte), hashing
/// the input and the image on the way.
pub(crate) fn decompress_open(
    path: &Path,
    f: &File,
    out: &mut File,
    cache_dir: &Path,
    progress: Progress,
) -> Result<Decompressed, ImageError> {
    let io_err = |source| ImageError::Io {
        path: path.into(),
        source,
    };
    let xz_err = |e: io::Error| ImageError::Xz {
        path: path.into(),
        detail: e.to_string(),
    };
    let len = f.metadata().map_err(io_err)?.len();
    let mut task = progress.task("decompress", len);
    let hashing = HashingReader {
        inner: PosReader { file: f, pos: 0 },
        hasher: Sha256::new(),
    };
    let counting = CountingReader {
        inner: hashing,
        task: &mut task,
    };
    let mut input = BufReader::with_capacity(IO_CHUNK, counting);
    let mut writer = HashingWriter {
        inner: SparseWriter::new(out),
        hasher: Sha256::new(),
        failed: None,
    };
    let write_err = |source| ImageError::CacheWrite {
        dir: cache_dir.to_path_buf(),
        input: path.into(),
        size: crate::image::xz_index::read(path)
            .ok()
            .flatten()
            .map(|l| l.image_size()),
        source,
    };
    let mut any_stream = false;
    loop {
        // Stream padding (zero bytes) may separate concatenated streams.
        loop {
            let buf = input.fill_buf().map_err(io_err)?;
            let zeros = buf.iter().take_while(|&&b| b == 0).count();
            if zeros == 0 || buf.is_empty() {
                break;
            }
            input.consume(zeros);
        }
        if input.fill_buf().map_err(io_err)?.is_empty() {
            break;
        }
        let mut dec = liblzma::bufread::XzDecoder::new_parallel(input);
        if let Err(e) = io::copy(&mut dec, &mut writer) {
            // io::copy does not say which side failed: the writer keeps
            // its own error, so a full cache disk is not called a corrupt .xz.
            return Err(match writer.failed.take() {
                Some(source) => write_err(source),
                None => xz_err(e),
            });
        }
        input = dec.into_inner();
        any_stream = true;
    }
    if !any_stream {
        return Err(ImageError::Xz {
            path: path.into(),
            detail: "no xz stream".into(),
        });
    }
    let image_sha256 = hex(&writer.hasher.finalize());
    let size = writer.inner.pos;
    writer.inner.finish().map_err(write_err)?;
    let counting = input.into_inner();
    let input_sha256 = hex(&counting.inner.hasher.finalize());
    task.finish();
    Ok(Decompressed {
        input_sha256,
        image_sha256,
        size,
    })
}

/// Hashes everything written through it, and keeps the error of a
/// failed write (an `io::copy` error alone does not say which side failed).
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    failed: Option<io::Error>,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self.inner.write(buf) {
            Ok(n) => n,
            Err(e) => {
                let kept = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                return Err(kept);
            }
        };
        self.hasher.update(filled(buf, n)?);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes data, seeking over long zero runs so that they stay holes.
pub(crate) struct SparseWriter<'a> {
    out: &'a mut File,
    pos: u64,
}

impl<'a> SparseWriter<'a> {
    pub(crate) fn new(out: &'a mut File) -> Self {
        SparseWriter { out, pos: 0 }
    }

    /// Fix the final length (a trailing hole is not written by `write`).
    pub(crate) fn finish(self) -> io::Result<()> {
        self.out.set_len(self.pos)?;
        self.out.flush()
    }
}

impl Write for SparseWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for chunk in buf.chunks(HOLE_GRAIN) {
            // Where the chunk ends; past u64 only for a stream claiming
            // more than any file holds.
            let end = self.pos.checked_add(chunk.len() as u64).ok_or_else(|| {
                io::Error::other(format!(
                    "decompressed image runs past byte {} (the largest file offset)",
                    self.pos
                ))
            })?;
            if crate::bytes::is_zero(chunk) {
                self.out.seek(SeekFrom::Start(end))?;
            } else {
                self.out.write_all(chunk)?;
            }
            self.pos = end;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
