//! A node image to flash: `.img` or `.img.xz`, and the byte ranges of it
//! that go onto the card, from its `.bmap` (with a sha256 per range) or,
//! without one, from its own partition table.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{bmapfile, MapRange};
use crate::error::{Error, Result};
use crate::image::Cache;
use crate::progress::Progress;

/// An MBR's or GPT's own sectors lie before the first partition; a GPT's
/// backup lies in the last 33 sectors.
const GPT_BACKUP: u64 = 33 * 512;

#[derive(Debug)]
pub(crate) struct Source {
    /// As the user named it.
    pub path: PathBuf,
    /// The file the bytes come from: the path, or a cache entry for an
    /// `.xz` that has no `.bmap`.
    read_path: PathBuf,
    pub compressed: bool,
    pub size: u64,
    pub ranges: Vec<MapRange>,
    /// Where the ranges came from, for the listing: the `.bmap`'s name or
    /// "partition table".
    pub map: String,
    /// The `.bmap` read, if any.
    bmap: Option<PathBuf>,
    /// What the image's sha256 was checked against before writing
    /// (`.sha256` or manifest file name), for the listing; `None`: neither
    /// was there.
    pub checked: Option<String>,
    /// Held open with a shared lock for the whole flash, so an `rpiimg fs`
    /// edit of the image (or a cache fill) cannot change it underneath.
    _held: Arc<File>,
}

/// `out/ost01.img.bmap` for `out/ost01.img` and for `out/ost01.img.xz`.
fn bmap_beside(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let mut names = vec![format!("{name}.bmap")];
    if let Some(stem) = name.strip_suffix(".xz") {
        names.push(format!("{stem}.bmap"));
    }
    names
        .into_iter()
        .map(|n| path.with_file_name(n))
        .find(|p| p.is_file())
}

impl Source {
    pub(crate) fn open(path: &Path, cache: &Cache, progress: Progress) -> Result<Source> {
        let meta = std::fs::metadata(path).map_err(Error::host_op(path, "open the image"))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!(
                "{}: not an image file (give a node image, .img or .img.xz)",
                path.display()
            )));
        }
        let compressed = crate::image::source::is_xz(path)?;
        match bmap_beside(path) {
            Some(bmap) => Self::open_mapped(path, &meta, compressed, bmap, progress),
            None => Self::open_by_table(path, cache, progress),
        }
    }

    /// An image with a `.bmap` beside it: the map says what goes onto the
    /// card, and the image is read as it is (an `.xz` streamed), held
    /// with a shared lock and checked against its recorded sha256 first.
    fn open_mapped(
        path: &Path,
        meta: &std::fs::Metadata,
        compressed: bool,
        bmap: PathBuf,
        progress: Progress,
    ) -> Result<Source> {
        let held = File::open(path).map_err(Error::host_op(path, "open the image"))?;
        crate::lock::lock(
            &held,
            path,
            crate::lock::Access::Shared,
            "it is being edited",
        )
        .map_err(Error::host(path))?;
        let checked = check_digest(path, progress)?;
        let size = if compressed {
            crate::image::xz_index::read(path)
                .map_err(Error::host(path))?
                .map(|l| l.image_size())
        } else {
            Some(meta.len())
        };
        let text = read_capped(&bmap)?;
        let map = bmapfile::parse(&text).map_err(|why| {
            Error::BadFile(format!(
                "{}: {why}; rebuild the image, or remove the .bmap to flash by partition table",
                bmap.display()
            ))
        })?;
        if let Some(size) = size.filter(|s| *s != map.image_size) {
            return Err(Error::BadFile(format!(
                "{} describes a {}-byte image but {} is {size} bytes: they are not from the same build (rebuild, or remove the .bmap)",
                bmap.display(),
                map.image_size,
                path.display()
            )));
        }
        Ok(Source {
            path: path.to_path_buf(),
            read_path: path.to_path_buf(),
            compressed,
            size: map.image_size,
            ranges: map.ranges,
            map: crate::hostpath::file_name(&bmap),
            bmap: Some(bmap),
            checked,
            _held: Arc::new(held),
        })
    }

    /// An image without a block map: the partition table says what is in
    /// use. An .xz is decompressed into the cache once, as every other
    /// command does.
    fn open_by_table(path: &Path, cache: &Cache, progress: Progress) -> Result<Source> {
        let img = crate::image::open(path, None, cache, progress)?;
        let checked = check_digest(path, progress)?;
        let table = crate::partition::read(&img.file, img.size)?;
        Ok(Source {
            path: path.to_path_buf(),
            read_path: img.raw_path.clone(),
            compressed: false,
            size: img.size,
            ranges: table_ranges(&table, img.size),
            map: "partition table".into(),
            bmap: None,
            checked,
            _held: img.file.clone(),
        })
    }

    /// Every file this source reads: the image, its `.bmap` and
    /// `.sha256`, the cache entry behind an `.xz`.
    pub(crate) fn inputs(&self) -> Vec<PathBuf> {
        let mut v = vec![self.path.clone(), self.read_path.clone()];
        v.extend(self.bmap.clone());
        v.push(sidecar(&self.path, ".sha256"));
        v.push(manifest_beside(&self.path));
        v
    }

    /// The file name, for listings and reports.
    pub(crate) fn name(&self) -> String {
        crate::hostpath::file_name(&self.path)
    }

    /// Bytes that go onto the card.
    pub(crate) fn mapped(&self) -> u64 {
        self.ranges.iter().map(MapRange::size).sum()
    }

    /// A reader for the mapped ranges, asked for in increasing order.
    pub(crate) fn reader(&self) -> Result<RangeReader> {
        let f = File::open(&self.read_path).map_err(Error::host(&self.read_path))?;
        Ok(if self.compressed {
            RangeReader::Xz {
                dec: Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(
                    BufReader::with_capacity(1 << 20, f),
                )),
                pos: 0,
            }
        } else {
            RangeReader::Raw(Arc::new(f))
        })
    }
}

/// The ranges of an image of `size` bytes that a card needs, by its
/// partition table: the table's own sectors before the first partition,
/// every partition, and a GPT's backup at the end; sorted and merged.
fn table_ranges(table: &crate::partition::PartitionTable, size: u64) -> Vec<MapRange> {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let first = table
        .partitions
        .iter()
        .map(|p| p.start())
        .min()
        .unwrap_or(size);
    spans.push((0, first.min(size)));
    for p in &table.partitions {
        spans.push((p.start(), p.start().saturating_add(p.size()).min(size)));
    }
    if table.kind == crate::partition::TableKind::Gpt {
        spans.push((size.saturating_sub(GPT_BACKUP), size));
    }
    spans.retain(|(a, b)| a < b);
    spans.sort_unstable();
    let mut ranges: Vec<MapRange> = Vec::new();
    for (a, b) in spans {
        match ranges.last_mut() {
            Some(r) if a <= r.end => r.end = r.end.max(b),
            _ => ranges.push(MapRange {
                start: a,
                end: b,
                sha256: None,
            }),
        }
    }
    ranges
}

/// Check the image file (the `.img` or `.img.xz` as named) against the
/// sha256 its build recorded, before anything is written: its `.sha256`
/// beside it, else the node's manifest. Returns the file checked against;
/// a mismatch is refused (exit 2), naming both digests.
fn check_digest(path: &Path, progress: Progress) -> Result<Option<String>> {
    let Some((want, against)) = recorded_digest(path)? else {
        return Ok(None);
    };
    let name = crate::hostpath::file_name(path);
    let file = File::open(path).map_err(Error::host_op(path, "open the image"))?;
    let got = crate::image::source::sha256_open(&file, progress, &format!("check {name}"))
        .map_err(Error::host_op(path, "read the image"))?;
    if !got.eq_ignore_ascii_case(&want) {
        return Err(Error::BadFile(format!(
            "{}: its sha256 is {got} but {against} records {want}: the image changed or was damaged after its build (rebuild it; nothing was written)",
            path.display()
        )));
    }
    Ok(Some(against))
}

/// The sha256 recorded for `path`: from `<path>.sha256` (`HEX  NAME`), or
/// from `<node>.manifest.json` beside it whose image or `.xz` is this file.
fn recorded_digest(path: &Path) -> Result<Option<(String, String)>> {
    let name = crate::hostpath::file_name(path);
    let side = sidecar(path, ".sha256");
    if side.is_file() {
        let text = read_capped(&side)?;
        let hex = text.split_whitespace().next().unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::BadFile(format!(
                "{}: not a sha256 line (HEX  NAME): rebuild the image, or remove it to flash unchecked",
                side.display()
            )));
        }
        return Ok(Some((
            hex.to_ascii_lowercase(),
            crate::hostpath::file_name(&side),
        )));
    }
    let manifest = manifest_beside(path);
    if !manifest.is_file() {
        return Ok(None);
    }
    let shown = crate::hostpath::file_name(&manifest);
    let m = crate::manifest::Manifest::parse(&read_capped(&manifest)?, &shown)?;
    let want = if m.image.image == name {
        Some(m.image.sha256)
    } else if m.image.xz.as_deref() == Some(name.as_str()) {
        m.image.xz_sha256
    } else {
        None
    };
    Ok(want.map(|w| (w.to_ascii_lowercase(), shown)))
}

/// `out/ost01.manifest.json` for `out/ost01.img` and `out/ost01.img.xz`.
fn manifest_beside(path: &Path) -> PathBuf {
    let name = crate::hostpath::file_name(path);
    let stem = name
        .strip_suffix(".img.xz")
        .or_else(|| name.strip_suffix(".img"))
        .unwrap_or(&name);
    path.with_file_name(format!("{stem}.manifest.json"))
}

/// `path` with `suffix` added to its file name.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn read_capped(p: &Path) -> Result<String> {
    let mut s = String::new();
    File::open(p)
        .map_err(Error::host(p))?
        .take(bmapfile::MAX_BMAP)
        .read_to_string(&mut s)
        .map_err(Error::host(p))?;
    Ok(s)
}

/// Positioned reads on an `.img`; a forward-only stream through an `.xz`.
pub(crate) enum RangeReader {
    Raw(Arc<File>),
    Xz {
        dec: Box<liblzma::bufread::XzDecoder<BufReader<File>>>,
        pos: u64,
    },
}

impl RangeReader {
    /// Fill `buf` from image offset `off`; offsets only grow on an `.xz`.
    pub(crate) fn read_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            RangeReader::Raw(f) => f.read_exact_at(buf, off),
            RangeReader::Xz { dec, pos } => {
                let Some(skip) = off.checked_sub(*pos) else {
                    return Err(io::Error::other("xz source read backwards"));
                };
                io::copy(&mut (&mut **dec).take(skip), &mut io::sink()).and_then(|n| {
                    if n < skip {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    } else {
                        Ok(())
                    }
                })?;
                dec.read_exact(buf)?;
                // Bytes just read from the stream lie below u64::MAX.
                *pos = off.saturating_add(buf.len() as u64);
                Ok(())
            }
        }
    }
}
