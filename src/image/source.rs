//! Opening a base image: raw `.img` as is, `.img.xz` decompressed (in
//! parallel when it has several blocks) into the cache, streaming, with an
//! optional sha256 pin checked before anything is used.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::cache::Cache;
use crate::bytes::hex;
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
    #[error(
        "cache directory {path}: {source} (choose another with --cache-dir or RPIIMG_CACHE_DIR)"
    )]
    Cache { path: PathBuf, source: io::Error },
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
}

/// Normalise and validate a user-supplied pin.
pub fn parse_pin(pin: &str) -> Result<String, ImageError> {
    let p = pin.trim().to_ascii_lowercase();
    if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(p)
    } else {
        Err(ImageError::BadPin(pin.to_string()))
    }
}

/// Whether the file starts with the xz magic (by content, not name).
pub fn is_xz(path: &Path) -> Result<bool, ImageError> {
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
    let io_err = |source| ImageError::Io {
        path: path.into(),
        source,
    };
    let mut f = File::open(path).map_err(|source| ImageError::Open {
        path: path.into(),
        source,
    })?;
    let len = f.metadata().map_err(io_err)?.len();
    let mut task = progress.task(what, len);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; IO_CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        h.update(filled(&buf, n).map_err(io_err)?);
        task.inc(n as u64);
    }
    task.finish();
    Ok(hex(&h.finalize()))
}

/// Open `path` for reading, verifying `pin` and decompressing `.xz` into `cache`.
pub fn open(
    path: &Path,
    pin: Option<&str>,
    cache: &Cache,
    progress: Progress,
) -> Result<OpenedImage, ImageError> {
    let pin = pin.map(parse_pin).transpose()?;
    let compressed = is_xz(path)?;
    let (raw_path, input_sha256) = if compressed {
        let (p, sha) = decompress_cached(path, pin.as_deref(), cache, progress)?;
        (p, Some(sha))
    } else {
        let sha = match &pin {
            Some(expected) => {
                let actual = sha256_file(path, progress, "checksum")?;
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
        (path.to_path_buf(), sha)
    };
    let file = File::open(&raw_path).map_err(|source| ImageError::Open {
        path: raw_path.clone(),
        source,
    })?;
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
    })
}

fn decompress_cached(
    path: &Path,
    pin: Option<&str>,
    cache: &Cache,
    progress: Progress,
) -> Result<(PathBuf, String), ImageError> {
    // With a pin the cache can answer before reading the input at all; the
    // entry was renamed into place only after its hash was verified.
    if let Some(p) = pin {
        let e = cache.entry(p);
        if e.is_file() {
            return Ok((e, p.to_string()));
        }
    } else {
        let sha = sha256_file(path, progress, "checksum")?;
        let e = cache.entry(&sha);
        if e.is_file() {
            return Ok((e, sha));
        }
    }
    let cache_err = |source| ImageError::Cache {
        path: cache.dir().to_path_buf(),
        source,
    };
    std::fs::create_dir_all(cache.dir()).map_err(cache_err)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .suffix(".img")
        .tempfile_in(cache.dir())
        .map_err(cache_err)?;
    let sha = decompress(path, tmp.as_file_mut(), progress)?;
    if let Some(expected) = pin {
        if sha != expected {
            return Err(ImageError::Checksum {
                path: path.into(),
                expected: expected.to_string(),
                actual: sha,
            });
        }
    }
    let dest = cache.entry(&sha);
    tmp.persist(&dest).map_err(|e| cache_err(e.error))?;
    Ok((dest, sha))
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

/// Decompress every xz stream of `path` into `out` (holes for zero runs);
/// returns the sha256 of the compressed input.
pub fn decompress(path: &Path, out: &mut File, progress: Progress) -> Result<String, ImageError> {
    let io_err = |source| ImageError::Io {
        path: path.into(),
        source,
    };
    let xz_err = |e: io::Error| ImageError::Xz {
        path: path.into(),
        detail: e.to_string(),
    };
    let f = File::open(path).map_err(|source| ImageError::Open {
        path: path.into(),
        source,
    })?;
    let len = f.metadata().map_err(io_err)?.len();
    let mut task = progress.task("decompress", len);
    let hashing = HashingReader {
        inner: f,
        hasher: Sha256::new(),
    };
    let counting = CountingReader {
        inner: hashing,
        task: &mut task,
    };
    let mut input = BufReader::with_capacity(IO_CHUNK, counting);
    let mut writer = SparseWriter::new(out);
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
        io::copy(&mut dec, &mut writer).map_err(xz_err)?;
        input = dec.into_inner();
        any_stream = true;
    }
    if !any_stream {
        return Err(ImageError::Xz {
            path: path.into(),
            detail: "no xz stream".into(),
        });
    }
    writer.finish().map_err(io_err)?;
    let counting = input.into_inner();
    let sha = hex(&counting.inner.hasher.finalize());
    task.finish();
    Ok(sha)
}

/// Writes data, seeking over long zero runs so that they stay holes.
pub struct SparseWriter<'a> {
    out: &'a mut File,
    pos: u64,
}

impl<'a> SparseWriter<'a> {
    pub fn new(out: &'a mut File) -> Self {
        SparseWriter { out, pos: 0 }
    }

    /// Fix the final length (a trailing hole is not written by `write`).
    pub fn finish(self) -> io::Result<()> {
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
