//! One node's image: a sparse copy of the cached base, edited in one
//! transaction, then checksummed, mapped and optionally compressed. All of
//! a node's files are staged under temporary names and renamed together,
//! the manifest last; the base is only ever read.

use std::path::{Path, PathBuf};

use super::{bmap, copy, sha256_line, xz, Pending};
use crate::error::{Error, Result};
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
    (base, proof): (&OpenedImage, &BaseProof),
    staged: &Finished,
    layout: &super::layout::Layout,
    out: Option<&mut std::fs::File>,
    dest: &Path,
    progress: Progress,
    name: &str,
) -> Result<bmap::Scan> {
    use std::io::Write;
    let mut scanner = bmap::Scanner::new(&layout.in_use, &layout.known);
    let mut task = progress.task(&format!("write {name}"), base.size);
    let mut writer = out.map(crate::image::source::SparseWriter::new);
    // This pass reads every byte of the base: the first node's also hashes
    // them for the base's proof (see BaseProof).
    let mut claim = proof.claim();
    let mut buf = vec![0u8; super::PIECE];
    for (off, n) in super::pieces(0, base.size) {
        let chunk = super::head(&mut buf, n);
        base.file
            .read_exact_at(chunk, off)
            .map_err(|e| base_err(base, e))?;
        if let Some(c) = claim.as_mut() {
            c.feed(chunk);
        }
        staged.read_at(chunk, off).map_err(|e| base_err(base, e))?;
        scanner.feed(chunk);
        if let Some(w) = writer.as_mut() {
            w.write_all(chunk).map_err(|e| super::out_err(dest, e))?;
        }
        task.inc(n as u64);
    }
    if let Some(w) = writer {
        w.finish().map_err(|e| super::out_err(dest, e))?;
    }
    if let Some(c) = claim {
        c.finish();
    }
    task.finish();
    Ok(scanner.finish())
}

fn sha256_of(p: &Path) -> Result<String> {
    let f = std::fs::File::open(p).map_err(Error::host_op(p, "open"))?;
    crate::image::source::sha256_open(&f, Progress::quiet(), "sha256")
        .map_err(Error::host_op(p, "read"))
}

/// The files a node's build writes into its output folder, by name.
pub(crate) fn output_names(name: &str, bmap: bool, xz: bool) -> Vec<String> {
    let mut names = vec![
        format!("{name}.img"),
        format!("{name}.img.sha256"),
        format!("{name}.manifest.json"),
    ];
    if bmap {
        names.push(format!("{name}.img.bmap"));
    }
    if xz {
        names.push(format!("{name}.img.xz"));
        names.push(format!("{name}.img.xz.sha256"));
    }
    names
}

/// Refuse early when an output exists and `force` is off, before any work.
pub(crate) fn check_free(opts: &ImageOptions, name: &str) -> Result<()> {
    if opts.force {
        return Ok(());
    }
    for n in output_names(name, opts.bmap, opts.xz) {
        let p = opts.out_dir.join(&n);
        if p.exists() {
            return Err(Error::Exists(format!(
                "{}: already exists; pass --force to overwrite it",
                super::display_path(&p)
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
    let drop = match &base.input_sha256 {
        Some(sha) => format!("rpiimg cache clear {sha}"),
        None => String::new(),
    };
    build_proven(
        base,
        &BaseProof::new(base, drop),
        name,
        opts,
        progress,
        edit,
    )
}

/// [`build`] with the base's proof shared by every node of the run: no
/// node's outputs are kept unless the base's bytes are the sealed ones.
pub(crate) fn build_proven<T>(
    base: &OpenedImage,
    proof: &BaseProof,
    name: &str,
    opts: &ImageOptions,
    progress: Progress,
    edit: impl FnOnce(&mut ImageEdit) -> Result<T>,
) -> Result<(Staged, T)> {
    check_free(opts, name)?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| {
        Error::HostUnfit(format!(
            "{}: cannot create output directory: {e}",
            opts.out_dir.display()
        ))
    })?;
    let img_dest = opts.out_dir.join(format!("{name}.img"));
    let mut img = Pending::private(&img_dest)?;
    crate::lock::pause("node-partial");

    // The edit is staged over the base, which is only read: the node's
    // bytes are the base's with the staged ones laid over them.
    let table = partition::read(&base.file, base.size)?;
    let mut ed = ImageEdit::stage_over(base, &table, opts.now)?;
    let value = edit(&mut ed)?;
    let staged = ed.finish()?;
    let touched = staged.touched();
    let scan = write_image(
        (base, proof),
        &staged,
        &table,
        &touched,
        &mut img,
        progress,
        name,
    )?;
    drop(staged);
    // Before anything of the node is kept (its files are still temporary).
    proof.verdict(base, progress)?;

    let xz_out = if opts.xz {
        Some(compress(
            base, opts, name, &img, scan.size, &touched, progress,
        )?)
    } else {
        None
    };
    Ok((stage_outputs(opts, name, img, scan, xz_out)?, value))
}

/// The node's image into `img` in one pass over the base, with the edit
/// laid over it, hashed and mapped on the way (the returned scan): the
/// base's bytes are read once whatever the outputs. A reflinked clone of
/// the base gets only the edited ranges.
fn write_image(
    (base, proof): (&OpenedImage, &BaseProof),
    staged: &Finished,
    table: &partition::PartitionTable,
    touched: &[(u64, u64)],
    img: &mut Pending,
    progress: Progress,
    name: &str,
) -> Result<bmap::Scan> {
    // What the block map maps: every block the filesystems use (zeros
    // too: a card that held something else must get them), and none of
    // their free space.
    let layout = super::layout::of(staged, table, base.size)?;
    let cloned = copy::reflink(&base.file, img);
    if cloned {
        write_touched(base, staged, touched, img)?;
    }
    let dest = img.dest().to_path_buf();
    stream_node(
        (base, proof),
        staged,
        &layout,
        (!cloned).then(|| img.file()),
        &dest,
        progress,
        name,
    )
}

/// The node's files besides the image (its `.sha256`, `.bmap`, `.xz` and
/// the `.xz`'s `.sha256`), staged beside it under temporary names: what
/// [`Staged::commit`] renames.
fn stage_outputs(
    opts: &ImageOptions,
    name: &str,
    img: Pending,
    scan: bmap::Scan,
    xz_out: Option<(Pending, String, Option<xz::Reuse>)>,
) -> Result<Staged> {
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
    Ok(Staged {
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
    })
}

/// The proof that a base read from the cache is the image its entry was
/// sealed with, shared by the nodes built from it. The first node's copy
/// pass (which reads every byte of the base anyway) hashes the base's
/// bytes on the way; every node waits for that verdict before its outputs
/// may be kept, and hashes the base itself if that pass failed first.
pub(crate) struct BaseProof {
    /// The sealed sha256; `None`: nothing to prove (a `.img` read in place).
    expected: Option<String>,
    /// How to drop the entry, for the refusal.
    drop: String,
    state: std::sync::Mutex<Proof>,
    done: std::sync::Condvar,
}

#[derive(Clone)]
enum Proof {
    Open,
    Claimed,
    Done(std::result::Result<(), String>),
}

/// A copy pass that hashes the base for the proof; dropped unfinished
/// (the pass failed), it hands the job back.
pub(crate) struct ProofClaim<'a> {
    proof: &'a BaseProof,
    hasher: sha2::Sha256,
    finished: bool,
}

impl BaseProof {
    /// The proof for `base`: its sealed sha256 when it is a cache entry.
    pub(crate) fn new(base: &OpenedImage, drop: String) -> Self {
        let expected = base.compressed.then(|| base.raw_sha256.clone()).flatten();
        BaseProof {
            state: std::sync::Mutex::new(if expected.is_some() {
                Proof::Open
            } else {
                Proof::Done(Ok(()))
            }),
            expected,
            drop,
            done: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Proof> {
        // A poisoned state is still a state: the claim's drop resets it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The hashing job, for the first pass that asks while nobody has it.
    pub(crate) fn claim(&self) -> Option<ProofClaim<'_>> {
        let mut s = self.lock();
        matches!(*s, Proof::Open).then(|| {
            *s = Proof::Claimed;
            ProofClaim {
                proof: self,
                hasher: sha2::Digest::new(),
                finished: false,
            }
        })
    }

    fn settle(&self, found: &str) {
        let verdict = match &self.expected {
            Some(want) if want != found => Err(format!(
                "damaged: its bytes hash to {found} as they are copied, sealed with {want}"
            )),
            _ => Ok(()),
        };
        *self.lock() = Proof::Done(verdict);
        self.done.notify_all();
    }

    /// The verdict: waits for the pass that hashes, or hashes `base`
    /// itself when no pass has the job.
    pub(crate) fn verdict(&self, base: &OpenedImage, progress: Progress) -> Result<()> {
        let mut s = self.lock();
        loop {
            match &*s {
                Proof::Done(Ok(())) => return Ok(()),
                Proof::Done(Err(what)) => {
                    return Err(crate::image::ImageError::CacheEntry {
                        entry: base.raw_path.clone(),
                        input: base.input.clone(),
                        what: what.clone(),
                        drop: self.drop.clone(),
                    }
                    .into())
                }
                Proof::Claimed => {
                    s = self
                        .done
                        .wait(s)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                Proof::Open => {
                    *s = Proof::Claimed;
                    drop(s);
                    let found =
                        crate::image::source::sha256_open(&base.file, progress, "verify base");
                    match found {
                        Ok(found) => self.settle(&found),
                        Err(e) => {
                            *self.lock() = Proof::Open;
                            self.done.notify_all();
                            return Err(base_err(base, e));
                        }
                    }
                    s = self.lock();
                }
            }
        }
    }
}

impl ProofClaim<'_> {
    /// The base's own bytes (before the edit is laid over them).
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        sha2::Digest::update(&mut self.hasher, chunk);
    }

    pub(crate) fn finish(mut self) {
        self.finished = true;
        let h = std::mem::replace(&mut self.hasher, sha2::Digest::new());
        self.proof
            .settle(&crate::bytes::hex(&sha2::Digest::finalize(h)));
    }
}

impl Drop for ProofClaim<'_> {
    fn drop(&mut self) {
        if !self.finished {
            *self.proof.lock() = Proof::Open;
            self.proof.done.notify_all();
        }
    }
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
    let mut buf = vec![0u8; super::PIECE];
    for &(s, e) in touched {
        for (at, n) in super::pieces(s, e.saturating_sub(s)) {
            let piece = super::head(&mut buf, n);
            base.file
                .read_exact_at(piece, at)
                .map_err(|e| base_err(base, e))?;
            staged.read_at(piece, at).map_err(|e| base_err(base, e))?;
            img.file()
                .write_all_at(piece, at)
                .map_err(|e| super::out_err(&dest, e))?;
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
        // The test hooks' pause and fault points count renames from 1.
        for (k, f) in (1u32..).zip(self.files.into_iter().chain(std::iter::once(m))) {
            crate::lock::pause(&format!("rename-{k}"));
            let renamed = super::fault(&format!("rename-{k}"))
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
