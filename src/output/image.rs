//! One node's image: a sparse copy of the cached base, edited in one
//! transaction, then checksummed, mapped and optionally compressed. All of
//! a node's files are staged under temporary names and renamed together,
//! the manifest last; the base is only ever read.

use std::path::{Path, PathBuf};

use super::{bmap, copy, sha256_line, xz, Pending};
use crate::error::{Error, Result};
use crate::ext4::Ext4;
use crate::fs::edit::{Finished, ImageEdit};
use crate::image::OpenedImage;
use crate::partition;
use crate::progress::Progress;
use std::os::unix::fs::FileExt;

#[derive(Debug, Clone)]
pub struct ImageOptions {
    pub out_dir: PathBuf,
    pub xz: bool,
    pub bmap: bool,
    pub force: bool,
    /// xz encoder threads (0: all cores) and preset (0-9; pi-gen uses 6).
    pub threads: u32,
    pub xz_level: u32,
    /// Timestamp of every change (seconds since the epoch).
    pub now: i64,
}

/// The files written for one node (the manifest records them by file
/// name only: `crate::manifest::ImageRecord`).
#[derive(Debug, Clone)]
pub struct Written {
    pub image: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub bmap: Option<PathBuf>,
    pub xz: Option<PathBuf>,
    pub xz_sha256: Option<String>,
    /// Blocks of the `.xz` and how many were compressed again (the rest
    /// were copied from the base's `.xz`); `None` when compressed whole.
    pub xz_reuse: Option<xz::Reuse>,
}

impl From<&Written> for crate::manifest::ImageRecord {
    fn from(w: &Written) -> Self {
        let name = |p: &std::path::Path| crate::output::file_name(p);
        crate::manifest::ImageRecord {
            image: name(&w.image),
            size: w.size,
            sha256: w.sha256.clone(),
            bmap: w.bmap.as_deref().map(name),
            xz: w.xz.as_deref().map(name),
            xz_sha256: w.xz_sha256.clone(),
        }
    }
}

fn base_err(base: &OpenedImage, e: std::io::Error) -> Error {
    Error::Host {
        path: base.raw_path.display().to_string(),
        source: e,
    }
}

/// Streams the node's image: the base's bytes with `staged` laid over
/// them, in 1 MiB chunks, into the block map scanner and (when given)
/// sparse into `out`.
fn stream_node(
    base: &OpenedImage,
    staged: &Finished,
    in_use: &[(u64, u64)],
    out: Option<&mut std::fs::File>,
    dest: &Path,
    progress: Progress,
    name: &str,
) -> Result<bmap::Scan> {
    use std::io::Write;
    let mut scanner = bmap::Scanner::new(in_use);
    let mut task = progress.task(&format!("write {name}"), base.size);
    let mut writer = out.map(crate::image::source::SparseWriter::new);
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < base.size {
        let n = usize::try_from((base.size - off).min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = &mut buf[..n];
        base.file
            .read_exact_at(chunk, off)
            .map_err(|e| base_err(base, e))?;
        staged.read_at(chunk, off).map_err(|e| base_err(base, e))?;
        scanner.feed(chunk);
        if let Some(w) = writer.as_mut() {
            w.write_all(chunk).map_err(|e| super::out_err(dest, e))?;
        }
        off += n as u64;
        task.inc(n as u64);
    }
    if let Some(w) = writer {
        w.finish().map_err(|e| super::out_err(dest, e))?;
    }
    task.finish();
    Ok(scanner.finish())
}

fn sha256_of(p: &Path) -> Result<String> {
    let mut h = crate::bytes::Sha256Writer::default();
    copy::stream(p, &mut h, p, Progress::quiet(), "sha256")?;
    Ok(crate::bytes::hex(&h.finish()))
}

/// Refuse early when an output exists and `force` is off, before any work.
pub fn check_free(opts: &ImageOptions, name: &str) -> Result<()> {
    if opts.force {
        return Ok(());
    }
    let mut names = vec![
        format!("{name}.img"),
        format!("{name}.img.sha256"),
        format!("{name}.manifest.json"),
    ];
    if opts.bmap {
        names.push(format!("{name}.img.bmap"));
    }
    if opts.xz {
        names.push(format!("{name}.img.xz"));
        names.push(format!("{name}.img.xz.sha256"));
    }
    for n in names {
        let p = opts.out_dir.join(&n);
        if p.exists() {
            return Err(Error::Usage(format!(
                "{}: already exists; pass --force to overwrite it",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Build `<name>.img` (and friends) in `opts.out_dir` from `base`,
/// applying `edit` as one transaction. `edit` returns a value handed back
/// to the caller (e.g. the list of changes, for a manifest).
pub fn build<T>(
    base: &OpenedImage,
    name: &str,
    opts: &ImageOptions,
    progress: Progress,
    edit: impl FnOnce(&mut ImageEdit) -> Result<T>,
) -> Result<(Staged, T)> {
    check_free(opts, name)?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| {
        Error::Usage(format!(
            "{}: cannot create output directory: {e}",
            opts.out_dir.display()
        ))
    })?;
    let img_dest = opts.out_dir.join(format!("{name}.img"));
    let mut img = Pending::private(&img_dest)?;

    // The edit is staged over the base, which is only read: the node's
    // bytes are the base's with the staged ones laid over them.
    let table = partition::read(&base.file, base.size)?;
    let mut ed = ImageEdit::stage_over(base, &table, opts.now)?;
    let value = edit(&mut ed)?;
    let staged = ed.finish()?;
    let touched = staged.touched();

    // Blocks the filesystems use stay mapped even when they hold zeros: a
    // card that held something else must get them. For FAT that is the
    // whole allocation table too, whose zeros are its free entries.
    let root = staged.root();
    let first = root.base().start() / bmap::BLOCK;
    let mut in_use: Vec<(u64, u64)> = Ext4::open(root)?
        .used_block_ranges()?
        .into_iter()
        .map(|(a, b)| (first + a, first + b))
        .collect();
    for (part, fat) in staged.fats() {
        let at = fat.base().start();
        let used = crate::fs::fat_used_ranges(fat).map_err(|e| Error::Fat {
            part,
            detail: e.to_string(),
        })?;
        in_use.extend(
            used.into_iter()
                .map(|(a, b)| ((at + a) / bmap::BLOCK, (at + b).div_ceil(bmap::BLOCK))),
        );
    }
    in_use.sort_unstable();

    // One pass: read the base, lay the edit over it, write the node's image
    // (unless it is a clone of the base, which then gets only the edited
    // ranges), and hash and map what was written.
    let cloned = copy::reflink(&base.raw_path, &mut img);
    if cloned {
        write_touched(base, &staged, &touched, &mut img)?;
    }
    let scan = stream_node(
        base,
        &staged,
        &in_use,
        (!cloned).then(|| img.file()),
        &img_dest,
        progress,
        name,
    )?;
    drop(staged);

    let xz_out = if opts.xz {
        Some(compress(
            base, opts, name, &img, scan.size, &touched, progress,
        )?)
    } else {
        None
    };
    let image = img.dest().to_path_buf();
    let mut files = vec![img];
    files.push(pending_text(
        &opts.out_dir.join(format!("{name}.img.sha256")),
        &sha256_line(&scan.sha256, &image),
        Secrets::None,
    )?);
    let bmap_path = if opts.bmap {
        // Its per-range sha256 sums cover blocks that hold secrets: one
        // over a block with little else in it (netplan's file with the
        // Wi-Fi key) would let a weak key be guessed offline.
        let p = pending_text(
            &opts.out_dir.join(format!("{name}.img.bmap")),
            &bmap::render(&scan),
            Secrets::Digests,
        )?;
        let dest = p.dest().to_path_buf();
        files.push(p);
        Some(dest)
    } else {
        None
    };
    let xz_reuse = xz_out.as_ref().and_then(|x| x.2);
    let (xz_path, xz_sha256) = match xz_out {
        Some((p, sum, _)) => {
            let path = p.dest().to_path_buf();
            files.push(p);
            files.push(pending_text(
                &opts.out_dir.join(format!("{name}.img.xz.sha256")),
                &sha256_line(&sum, &path),
                Secrets::None,
            )?);
            (Some(path), Some(sum))
        }
        None => (None, None),
    };
    Ok((
        Staged {
            files,
            force: opts.force,
            written: Written {
                image,
                size: scan.size,
                sha256: scan.sha256,
                bmap: bmap_path,
                xz: xz_path,
                xz_sha256,
                xz_reuse,
            },
        },
        value,
    ))
}

/// A reflinked clone of the base gets only the edited ranges, read from
/// the base with the staged bytes laid over them, in 1 MiB pieces (a
/// staged file may be large).
fn write_touched(
    base: &OpenedImage,
    staged: &Finished,
    touched: &[(u64, u64)],
    img: &mut Pending,
) -> Result<()> {
    let dest = img.dest().to_path_buf();
    let mut buf = vec![0u8; 1 << 20];
    for &(s, e) in touched {
        let mut at = s;
        while at < e {
            let n = usize::try_from((e - at).min(buf.len() as u64)).unwrap_or(buf.len());
            let piece = &mut buf[..n];
            base.file
                .read_exact_at(piece, at)
                .map_err(|e| base_err(base, e))?;
            staged.read_at(piece, at).map_err(|e| base_err(base, e))?;
            img.file()
                .write_all_at(piece, at)
                .map_err(|e| super::out_err(&dest, e))?;
            at += n as u64;
        }
    }
    Ok(())
}

/// `NAME.img.xz` under a pending name, its sha256, and what was reused of
/// a multi-block base (its blocks the patch did not touch).
fn compress(
    base: &OpenedImage,
    opts: &ImageOptions,
    name: &str,
    img: &Pending,
    size: u64,
    touched: &[(u64, u64)],
    progress: Progress,
) -> Result<(Pending, String, Option<xz::Reuse>)> {
    let dest = opts.out_dir.join(format!("{name}.img.xz"));
    let mut p = Pending::private(&dest)?;
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
    } else {
        opts.threads
    };
    let layout = base
        .compressed
        .then(|| xz::reusable(&base.input, size, base.input_sha256.as_deref()))
        .flatten();
    let reuse = match layout {
        Some(l) => Some(xz::compress_reusing(
            img.path(),
            &base.input,
            &l,
            touched,
            &mut p,
            (threads, opts.xz_level),
            progress,
        )?),
        None => {
            xz::compress(img.path(), &mut p, threads, opts.xz_level, progress)?;
            None
        }
    };
    let sum = sha256_of(p.path())?;
    Ok((p, sum, reuse))
}

/// One node's outputs, complete but still under temporary names: nothing
/// of the node carries a final name until [`Staged::commit`].
#[derive(Debug)]
pub struct Staged {
    files: Vec<Pending>,
    force: bool,
    /// What the files will be once committed (final names).
    pub written: Written,
}

impl Staged {
    /// Gives every file its final name, `manifest` last: a node's output
    /// set is complete if and only if its manifest exists. The manifest is
    /// written (to a temporary name) before any rename, so a full disk
    /// fails with nothing renamed; a replaced set loses its old manifest
    /// first, so a kill halfway never pairs new files with an old manifest.
    /// If a rename fails, the files already renamed are removed again.
    pub fn commit(self, manifest: &Path, manifest_text: &str) -> Result<Written> {
        super::fault("manifest-write").map_err(|e| super::out_err(manifest, e))?;
        // Each written file's sha256 is in it, the netplan file with the
        // Wi-Fi key's too, beside the profile: a guessing oracle for a weak key.
        let m = pending_text(manifest, manifest_text, Secrets::Digests)?;
        if self.force {
            match std::fs::remove_file(manifest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(super::out_err(manifest, e)),
            }
        }
        let mut done: Vec<PathBuf> = Vec::new();
        for f in self.files.into_iter().chain(std::iter::once(m)) {
            let renamed = super::fault(&format!("rename-{}", done.len() + 1))
                .map_err(|e| super::out_err(f.dest(), e))
                .and_then(|()| f.persist(self.force));
            match renamed {
                Ok(p) => done.push(p),
                Err(e) => {
                    for p in &done {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(e);
                }
            }
        }
        Ok(self.written)
    }
}

/// What a small text output reveals of the image's secrets.
#[derive(Clone, Copy)]
enum Secrets {
    /// Nothing: a `.sha256` line, the digest of a whole image whose host
    /// keys come from the key store (no guess can be checked against it
    /// without the store). 0644.
    None,
    /// Digests of single files or block ranges that hold secrets. 0600.
    Digests,
}

/// A small text output, written under its temporary name.
fn pending_text(dest: &Path, text: &str, secrets: Secrets) -> Result<Pending> {
    use std::io::Write;
    let mut p = match secrets {
        Secrets::None => Pending::new(dest)?,
        Secrets::Digests => Pending::private(dest)?,
    };
    p.file()
        .write_all(text.as_bytes())
        .map_err(|e| super::out_err(dest, e))?;
    Ok(p)
}
