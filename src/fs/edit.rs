//! One all-or-nothing transaction over a whole image: paths as the booted
//! system sees them, routed to the ext4 writer (`/`) or to fatfs for the
//! FAT partitions the image's fstab mounts (`/boot/firmware`). Every write
//! is staged; [`ImageEdit::commit`] writes them only after every
//! operation succeeded.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use super::view::SystemView;
use crate::error::{Error, Result};
use crate::ext4::write::{Content, Meta, Writer};
use crate::image::{Cow, OpenedImage, ReadAt, Window};
use crate::partition::PartitionTable;
use crate::path::{self, PathError};

/// A staged FAT partition shared between fatfs (which wants to own a
/// `Read + Write + Seek`) and the transaction that commits it.
#[derive(Clone)]
struct SharedCow {
    inner: Rc<RefCell<Cow<Window>>>,
    pos: u64,
}

impl Read for SharedCow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let c = self.inner.borrow();
        let left = c.size().saturating_sub(self.pos);
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        // n <= buf.len(), so this is all or part of `buf`.
        let dst = buf.get_mut(..n).ok_or_else(past_buffer)?;
        c.read_exact_at(dst, self.pos)?;
        self.pos = self.pos.checked_add(n as u64).ok_or_else(past_end)?;
        Ok(n)
    }
}

fn past_end() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "position past 2^64 bytes")
}

fn past_buffer() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "range past the end of the buffer",
    )
}

impl Write for SharedCow {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self
            .pos
            .checked_add(buf.len() as u64)
            .ok_or_else(past_end)?;
        self.inner.borrow_mut().stage(buf, self.pos)?;
        self.pos = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SharedCow {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let size = self.inner.borrow().size();
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

struct FatMount {
    point: String,
    part: u32,
    stage: Option<Rc<RefCell<Cow<Window>>>>,
    fs: Option<fatfs::FileSystem<SharedCow>>,
}

impl FatMount {
    fn fs(&self) -> &fatfs::FileSystem<SharedCow> {
        self.fs.as_ref().expect("mounted until commit")
    }
    fn err(&self, e: io::Error) -> Error {
        Error::Fat {
            part: self.part,
            detail: e.to_string(),
        }
    }

    /// The path as the booted system names it (`rel` "" is the mount point).
    fn full(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.point.clone()
        } else {
            format!("{}/{rel}", self.point)
        }
    }

    /// What `rel` is: `None` absent, `Some(true)` a directory, `Some(false)`
    /// a file; a file or absent name on the way is the path error saying
    /// so. fatfs reports misuse (a file where a directory is wanted, a
    /// missing parent) as bare I/O errors, which read like damage: each FAT
    /// operation asks this first, so what fatfs still reports is damage.
    fn kind(&self, rel: &str) -> Result<Option<bool>> {
        let mut dir = self.fs().root_dir();
        let mut so_far = String::new();
        let mut comps = path::components(rel).peekable();
        while let Some(c) = comps.next() {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(c);
            let last = comps.peek().is_none();
            match dir.open_dir(c) {
                Ok(d) => {
                    if last {
                        return Ok(Some(true));
                    }
                    dir = d;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return if last {
                        Ok(None)
                    } else {
                        Err(Error::Path(PathError::NotFound(self.full(&so_far))))
                    };
                }
                // fatfs: the name is there but not a directory.
                Err(_) => {
                    dir.open_file(c).map_err(|e| self.err(e))?;
                    return if last {
                        Ok(Some(false))
                    } else {
                        Err(Error::Path(PathError::NotADirectory(self.full(&so_far))))
                    };
                }
            }
        }
        Ok(Some(true))
    }

    /// `rel`'s parent must be a directory that exists.
    fn check_parent(&self, rel: &str) -> Result<()> {
        let parent = rel.rsplit_once('/').map_or("", |(d, _)| d);
        match self.kind(parent)? {
            Some(true) => Ok(()),
            Some(false) => Err(Error::Path(PathError::NotADirectory(self.full(parent)))),
            None => Err(Error::Path(PathError::NotFound(self.full(parent)))),
        }
    }

    /// Whether directory `rel` has no entries but `.` and `..`.
    fn dir_is_empty(&self, rel: &str) -> Result<bool> {
        let d = self
            .fs()
            .root_dir()
            .open_dir(rel)
            .map_err(|e| self.err(e))?;
        for e in d.iter() {
            let n = e.map_err(|e| self.err(e))?.file_name();
            if n != "." && n != ".." {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// FAT names compare without case: two paths that differ only in case name
/// the same entry.
fn fat_same(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// Whether `inner` is `outer` or lies below it, as FAT compares names.
fn fat_within(outer: &str, inner: &str) -> bool {
    let (o, i) = (outer.to_lowercase(), inner.to_lowercase());
    i == o || i.strip_prefix(&o).is_some_and(|r| r.starts_with('/'))
}

/// Which filesystem a path lives on.
enum Target {
    Ext4(String),
    /// Mount index and the path relative to the partition root ("" = the root).
    Fat(usize, String),
}

pub struct ImageEdit {
    root: Writer<Window>,
    fats: Vec<FatMount>,
}

impl ImageEdit {
    /// The FAT mount a [`Target::Fat`] names (its index comes from `target`).
    fn fat(&self, i: usize) -> Result<&FatMount> {
        self.fats
            .get(i)
            .ok_or_else(|| Error::Layout(format!("no FAT mount number {i}")))
    }
}

fn unsupported_on_fat(op: &str, p: &str) -> Error {
    Error::Usage(format!(
        "{p}: {op} is not possible on the FAT boot partition (vfat has no owners, permissions or links)"
    ))
}

/// fatfs 0.3.6 writes a long-name entry before `.` and before `..` in a new
/// directory, which fsck.fat rejects ("Expected a valid '.' entry in this
/// slot"). A new directory's first cluster is always freshly staged, so
/// find that pattern in the staged pages and rewrite it as FAT requires:
/// `.`, `..`, then the two long-name slots marked deleted. fatfs also
/// points `..` of a top-level directory at the FAT32 root cluster, where
/// FAT wants cluster 0.
fn fix_fatfs_dot_entries(stage: &mut Cow<Window>) {
    let mut bpb = [0u8; 48];
    let root_cluster = match stage.read_exact_at(&mut bpb, 0) {
        // FAT32 when the 16-bit sectors-per-FAT field is 0.
        Ok(()) if bpb[22] == 0 && bpb[23] == 0 => Some(crate::bytes::le32(&bpb, 44)),
        _ => None,
    };
    for (_, page) in stage.staged_pages_mut() {
        for at in (0..page.len().saturating_sub(127)).step_by(32) {
            // Four directory slots from `at` (all there: at + 128 <= len).
            if let Some(win) = page.get_mut(at..).and_then(|p| p.first_chunk_mut::<128>()) {
                fix_dot_window(win, root_cluster);
            }
        }
    }
}

/// [`fix_fatfs_dot_entries`] on four consecutive 32-byte slots.
fn fix_dot_window(win: &mut [u8; 128], root_cluster: Option<u32>) {
    const DOT_SFN: &[u8; 12] = b".          \x10";
    const DOTDOT_SFN: &[u8; 12] = b"..         \x10";
    let is_lfn = |e: &[u8; 32], dots: usize| {
        e[0] == 0x41
            && e[11] == 0x0F
            && e[1] == b'.'
            && e[2] == 0
            && (dots == 1 || (e[3] == b'.' && e[4] == 0))
    };
    let (slots, _) = win.as_chunks::<32>();
    let &[lfn1, dot, lfn2, mut dotdot] = slots else {
        return;
    };
    if !(is_lfn(&lfn1, 1)
        && dot.starts_with(DOT_SFN)
        && is_lfn(&lfn2, 2)
        && dotdot.starts_with(DOTDOT_SFN))
    {
        return;
    }
    let cluster = (u32::from(u16::from_le_bytes([dotdot[20], dotdot[21]])) << 16)
        | u32::from(u16::from_le_bytes([dotdot[26], dotdot[27]]));
    if Some(cluster) == root_cluster {
        dotdot[20..22].fill(0);
        dotdot[26..28].fill(0);
    }
    let (mut del1, mut del2) = (lfn1, lfn2);
    del1[0] = 0xE5;
    del2[0] = 0xE5;
    let (out, _) = win.as_chunks_mut::<32>();
    if let [a, b, c, d] = out {
        (*a, *b, *c, *d) = (dot, dotdot, del1, del2);
    }
}

impl ImageEdit {
    /// Open the image file at `image` for editing in place. `opened` and
    /// `table` are the read-only view used to find the root and its mounts.
    pub fn open(
        image: &Path,
        opened: &OpenedImage,
        table: &PartitionTable,
        now: i64,
    ) -> Result<Self> {
        if opened.compressed {
            return Err(Error::Usage(format!(
                "{}: a compressed image cannot be edited in place; decompress it first (xz -dk) or use `rpiimg build`",
                image.display()
            )));
        }
        table.check_writable()?;
        let (view, _) = SystemView::open(opened, table)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(image)
            .map_err(|e| {
                Error::HostUnfit(format!("{}: cannot open for writing: {e}", image.display()))
            })?;
        // What is written must be what was read and locked: the name may
        // lead to another file by now (replaced by a rename).
        let same = |a: &File, b: &File| -> io::Result<bool> {
            use std::os::unix::fs::MetadataExt;
            let (a, b) = (a.metadata()?, b.metadata()?);
            Ok(a.dev() == b.dev() && a.ino() == b.ino())
        };
        if !same(&file, &opened.file).map_err(Error::host(image))? {
            return Err(Error::Usage(format!(
                "{}: the file was replaced while it was being opened; nothing was written, run the edit again",
                image.display()
            )));
        }
        Self::over(&Arc::new(file), true, &view, table, now)
    }

    /// A transaction over `opened` that is never committed to it: build
    /// reads the base through [`Finished::read_at`] while writing each node's
    /// image, so the base is read once and never written.
    pub(crate) fn stage_over(
        opened: &OpenedImage,
        table: &PartitionTable,
        now: i64,
    ) -> Result<Self> {
        table.check_writable()?;
        let (view, _) = SystemView::open(opened, table)?;
        Self::over(&opened.file, false, &view, table, now)
    }

    fn over(
        file: &Arc<File>,
        writable: bool,
        view: &SystemView,
        table: &PartitionTable,
        now: i64,
    ) -> Result<Self> {
        let window = |n: u32| -> Result<Window> {
            let p = table
                .get(n)
                .ok_or_else(|| Error::Layout(format!("partition {n} disappeared")))?;
            Ok(table.window(file, p, writable))
        };
        let root = Writer::open(window(view.root_partition())?, now)?;
        let mut fats = Vec::new();
        for m in view.mounts() {
            let stage = Rc::new(RefCell::new(Cow::new(window(m.part)?)));
            let io = SharedCow {
                inner: stage.clone(),
                pos: 0,
            };
            let opts = fatfs::FsOptions::new().time_provider(super::fat::FixedTime::leak(now));
            let fs = fatfs::FileSystem::new(io, opts).map_err(|e| Error::Fat {
                part: m.part,
                detail: e.to_string(),
            })?;
            fats.push(FatMount {
                point: m.point.clone(),
                part: m.part,
                stage: Some(stage),
                fs: Some(fs),
            });
        }
        Ok(ImageEdit { root, fats })
    }

    fn target(&self, p: &str) -> Result<Target> {
        if !p.starts_with('/') {
            return Err(Error::Usage(format!(
                "{p}: paths inside the image must be absolute"
            )));
        }
        let norm = path::normalize(p);
        for (i, m) in self.fats.iter().enumerate() {
            if norm == m.point {
                return Ok(Target::Fat(i, String::new()));
            }
            if let Some(rest) = norm
                .strip_prefix(&m.point)
                .and_then(|r| r.strip_prefix('/'))
            {
                return Ok(Target::Fat(i, rest.to_string()));
            }
        }
        Ok(Target::Ext4(norm))
    }

    /// Create or replace a regular file. On FAT, mode and owner do not exist.
    pub fn write_file(&mut self, p: &str, content: Content, meta: Meta) -> Result<()> {
        match self.target(p)? {
            Target::Ext4(q) => {
                self.root.write_file(&q, content, meta)?;
            }
            Target::Fat(i, rel) => {
                let m = self.fat(i)?;
                if rel.is_empty() {
                    return Err(Error::Path(PathError::IsADirectory(p.into())));
                }
                m.check_parent(&rel)?;
                if m.kind(&rel)? == Some(true) {
                    return Err(Error::Path(PathError::IsADirectory(p.into())));
                }
                let mut f = m.fs().root_dir().create_file(&rel).map_err(|e| m.err(e))?;
                f.truncate().map_err(|e| m.err(e))?;
                match content {
                    Content::Bytes(b) => f.write_all(&b).map_err(|e| m.err(e))?,
                    Content::HostFile { path, .. } => {
                        let mut src = File::open(&path).map_err(|e| Error::Host {
                            path: path.display().to_string(),
                            source: e,
                        })?;
                        io::copy(&mut src, &mut f).map_err(|e| m.err(e))?;
                    }
                }
                f.flush().map_err(|e| m.err(e))?;
            }
        }
        Ok(())
    }

    pub fn mkdir(&mut self, p: &str, meta: Meta, parents: bool) -> Result<()> {
        match self.target(p)? {
            Target::Ext4(q) => {
                self.root.mkdir(&q, meta, parents)?;
            }
            Target::Fat(i, rel) => {
                let m = self.fat(i)?;
                let root = m.fs().root_dir();
                let mut comps = path::components(&rel).peekable();
                // Each level is opened from the root by its full path: a
                // `Dir` handle returned by fatfs's create_dir must not be used
                // to create entries (fatfs 0.3 then overwrites its `.` slot).
                let mut so_far = String::new();
                while let Some(c) = comps.next() {
                    if !so_far.is_empty() {
                        so_far.push('/');
                    }
                    so_far.push_str(c);
                    let last = comps.peek().is_none();
                    match m.kind(&so_far)? {
                        Some(true) if parents || !last => {}
                        Some(_) if last => return Err(Error::Usage(format!("{p}: file exists"))),
                        Some(_) => {
                            return Err(Error::Path(PathError::NotADirectory(m.full(&so_far))))
                        }
                        None if !parents && !last => {
                            return Err(Error::Path(PathError::NotFound(m.full(&so_far))))
                        }
                        None => {
                            root.create_dir(&so_far).map_err(|e| m.err(e))?;
                            if let Some(stage) = &m.stage {
                                fix_fatfs_dot_entries(&mut stage.borrow_mut());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn symlink(&mut self, p: &str, target: &str, uid: u32, gid: u32) -> Result<()> {
        match self.target(p)? {
            Target::Ext4(q) => {
                self.root.symlink(&q, target.as_bytes(), uid, gid)?;
                Ok(())
            }
            Target::Fat(..) => Err(unsupported_on_fat("a symlink", p)),
        }
    }

    pub fn link(&mut self, existing: &str, new: &str) -> Result<()> {
        match (self.target(existing)?, self.target(new)?) {
            (Target::Ext4(a), Target::Ext4(b)) => Ok(self.root.link(&a, &b)?),
            _ => Err(unsupported_on_fat("a hard link", new)),
        }
    }

    /// Remove `rel` from a FAT mount; with `recursive`, a whole tree,
    /// children first. Iterative, and every step works on an open directory
    /// handle by name, never by re-resolving the full path, so a tree
    /// thousands deep is removed in time linear in its entries. (The volume
    /// was proved loop-free when opened, so the walk ends.)
    fn fat_remove(m: &FatMount, rel: &str, recursive: bool) -> Result<()> {
        let not_found = |e: io::Error| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::Path(PathError::NotFound(format!("{}/{rel}", m.point)))
            } else {
                m.err(e)
            }
        };
        let root = m.fs().root_dir();
        let (parent, name) = match rel.rsplit_once('/') {
            Some((dir, name)) => (root.open_dir(dir).map_err(not_found)?, name),
            None => (root, rel),
        };
        let subdir = if recursive {
            match parent.open_dir(name) {
                Ok(d) => Some(d),
                // A file (or nothing: remove says which).
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::Other) => {
                    None
                }
                Err(e) => return Err(m.err(e)),
            }
        } else {
            None
        };
        if let Some(top) = subdir {
            // Each frame: an open directory, its entries still to remove,
            // and its name in the frame below (the parent).
            type Dir<'a> = fatfs::Dir<'a, SharedCow>;
            /// (name, is a directory)
            type Pending = Vec<(String, bool)>;
            let entries = |d: &Dir| -> io::Result<Pending> {
                let mut v = Vec::new();
                for e in d.iter() {
                    let e = e?;
                    let n = e.file_name();
                    if n != "." && n != ".." {
                        v.push((n, e.is_dir()));
                    }
                }
                Ok(v)
            };
            let mut stack: Vec<(Dir, Pending, String)> = Vec::new();
            let first = entries(&top).map_err(|e| m.err(e))?;
            stack.push((top, first, name.to_string()));
            while let Some((dir, pending, _)) = stack.last_mut() {
                match pending.pop() {
                    Some((n, true)) => {
                        let d = dir.open_dir(&n).map_err(|e| m.err(e))?;
                        let kids = entries(&d).map_err(|e| m.err(e))?;
                        stack.push((d, kids, n));
                    }
                    Some((n, false)) => dir.remove(&n).map_err(|e| m.err(e))?,
                    None => {
                        let Some((_, _, done)) = stack.pop() else {
                            break;
                        };
                        match stack.last() {
                            Some((up, _, _)) => up.remove(&done).map_err(|e| m.err(e))?,
                            None => parent.remove(&done).map_err(not_found)?,
                        }
                    }
                }
            }
            return Ok(());
        }
        parent.remove(name).map_err(not_found)
    }

    /// `mv` on one FAT mount, with the ext4 rules: an existing file at `b`
    /// is replaced by a file, an empty directory by a directory; anything
    /// else, and a directory into itself, is refused as the misuse it is.
    fn fat_rename(m: &FatMount, a: &str, b: &str) -> Result<()> {
        let is_dir = match m.kind(a)? {
            Some(d) => d,
            None => return Err(Error::Path(PathError::NotFound(m.full(a)))),
        };
        m.check_parent(b)?;
        if fat_same(a, b) {
            if a == b {
                return Ok(());
            }
            return Err(Error::Usage(format!(
                "{} -> {}: FAT names ignore case, so these are one name; rename through another name (mv A TMP, then mv TMP B)",
                m.full(a),
                m.full(b)
            )));
        }
        if is_dir && fat_within(a, b) {
            return Err(crate::ext4::Ext4Error::Invalid {
                path: m.full(b),
                why: format!("cannot move {} into itself", m.full(a)),
            }
            .into());
        }
        let root = m.fs().root_dir();
        match (is_dir, m.kind(b)?) {
            (_, None) => {}
            (false, Some(false)) => root.remove(b).map_err(|e| m.err(e))?,
            (true, Some(true)) if m.dir_is_empty(b)? => root.remove(b).map_err(|e| m.err(e))?,
            (true, Some(true)) => {
                return Err(Error::Usage(format!("{}: directory not empty", m.full(b))))
            }
            (false, Some(true)) => {
                return Err(crate::ext4::write::replace_refused(
                    &m.full(b),
                    "a directory",
                    "a file",
                )
                .into())
            }
            (true, Some(false)) => {
                return Err(crate::ext4::write::replace_refused(
                    &m.full(b),
                    "a file",
                    "a directory",
                )
                .into())
            }
        }
        root.rename(a, &root, b).map_err(|e| m.err(e))
    }

    /// Remove a file, symlink or empty directory; with `recursive`, a whole tree.
    pub fn remove(&mut self, p: &str, recursive: bool) -> Result<()> {
        match self.target(p)? {
            Target::Ext4(q) if recursive => Ok(self.root.remove_tree(&q)?),
            Target::Ext4(q) => Ok(self.root.remove(&q)?),
            Target::Fat(_, rel) if rel.is_empty() => Err(Error::Usage(format!(
                "{p}: a mount point cannot be removed"
            ))),
            Target::Fat(i, rel) => {
                let m = self.fat(i)?;
                match m.kind(&rel)? {
                    None => Err(Error::Path(PathError::NotFound(p.into()))),
                    Some(true) if !recursive && !m.dir_is_empty(&rel)? => Err(Error::Usage(
                        format!("{p}: directory not empty; rm -r removes it with everything in it"),
                    )),
                    Some(_) => Self::fat_remove(m, &rel, recursive),
                }
            }
        }
    }

    /// Move a path; both ends must be on the same filesystem.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        match (self.target(from)?, self.target(to)?) {
            (Target::Ext4(a), Target::Ext4(b)) => Ok(self.root.rename(&a, &b)?),
            (Target::Fat(i, a), Target::Fat(j, b)) if i == j && !a.is_empty() && !b.is_empty() => {
                Self::fat_rename(self.fat(i)?, &a, &b)
            }
            _ => Err(Error::Usage(format!(
                "{from} -> {to}: cannot move between filesystems (or a mount point); copy and remove instead"
            ))),
        }
    }

    /// chmod, with `recursive` the whole tree below `p` too.
    pub fn chmod(&mut self, p: &str, mode: u16, recursive: bool) -> Result<()> {
        match self.target(p)? {
            Target::Ext4(q) => Ok(self.root.chmod_tree(&q, mode, recursive)?),
            Target::Fat(..) => Err(unsupported_on_fat("chmod", p)),
        }
    }

    /// chown of the path itself, with `recursive` the whole tree below it too.
    pub fn chown(&mut self, p: &str, uid: u32, gid: u32, recursive: bool) -> Result<()> {
        match self.target(p)? {
            Target::Ext4(q) => Ok(self.root.chown_tree(&q, uid, gid, recursive)?),
            Target::Fat(..) => Err(unsupported_on_fat("chown", p)),
        }
    }

    /// Whether a path exists in the staged state, and is a directory.
    pub fn is_dir(&self, p: &str) -> Result<Option<bool>> {
        match self.target(p)? {
            Target::Ext4(q) => match self.root.fs().resolve(&q, true) {
                Ok(i) => Ok(Some(i.is_dir())),
                Err(crate::ext4::Ext4Error::Path(PathError::NotFound(_))) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Target::Fat(_, rel) if rel.is_empty() => Ok(Some(true)),
            Target::Fat(i, rel) => {
                let root = self.fat(i)?.fs().root_dir();
                if root.open_dir(&rel).is_ok() {
                    Ok(Some(true))
                } else if root.open_file(&rel).is_ok() {
                    Ok(Some(false))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Whether a path lies on a FAT partition (no owners, modes or links).
    pub(crate) fn is_fat(&self, p: &str) -> bool {
        matches!(self.target(p), Ok(Target::Fat(..)))
    }

    /// A text file from the staged ext4 root, if it exists.
    pub(crate) fn read_root_text(&self, p: &str) -> Result<Option<String>> {
        let fs = self.root.fs();
        match fs.resolve(p, true) {
            Ok(i) if !i.is_dir() => Ok(Some(
                String::from_utf8_lossy(&super::read_config(fs, &i, p)?).into_owned(),
            )),
            Ok(_) | Err(crate::ext4::Ext4Error::Path(PathError::NotFound(_))) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Write everything staged to the image: FAT partitions, then ext4.
    /// Writes the transaction; returns the image byte ranges `[start, end)`
    /// it wrote (everything else is as it was: `output::xz` reuses the base's
    /// compressed blocks outside them).
    pub fn commit(self) -> Result<Vec<(u64, u64)>> {
        self.finish()?.commit()
    }

    /// Ends the transaction without writing it: what it would write, to be
    /// committed or read through ([`Finished::read_at`]).
    pub fn finish(mut self) -> Result<Finished> {
        let mut fat_stages = Vec::new();
        for m in &mut self.fats {
            if let Some(fs) = m.fs.take() {
                let part = m.part;
                fs.unmount().map_err(|e| Error::Fat {
                    part,
                    detail: e.to_string(),
                })?;
            }
            let Some(stage) = m.stage.take() else {
                continue;
            };
            let cow = Rc::try_unwrap(stage)
                .map_err(|_| Error::Layout("FAT stage still shared at commit".into()))?
                .into_inner();
            fat_stages.push((m.part, cow));
        }
        let ext4 = self.root.finish()?;
        let mut touched = Vec::new();
        for cow in fat_stages.iter().map(|(_, c)| c).chain([&ext4]) {
            let at = cow.base().start();
            let mut ranges = Vec::new();
            for (s, e) in cow.touched() {
                let (Some(s), Some(e)) = (at.checked_add(s), at.checked_add(e)) else {
                    return Err(Error::Layout(format!(
                        "a range staged in the partition at byte {at} lies past 2^64"
                    )));
                };
                ranges.push((s, e));
            }
            touched.push(ranges);
        }
        Ok(Finished {
            fat_stages,
            ext4,
            touched,
        })
    }
}

/// A finished transaction: the staged partitions, not yet written.
pub struct Finished {
    fat_stages: Vec<(u32, Cow<Window>)>,
    ext4: Cow<Window>,
    /// Per stage (FAT stages, then ext4): its touched image ranges.
    touched: Vec<Vec<(u64, u64)>>,
}

impl Finished {
    fn stages(&self) -> impl Iterator<Item = &Cow<Window>> {
        self.fat_stages.iter().map(|(_, c)| c).chain([&self.ext4])
    }

    /// The image byte ranges `[start, end)` a commit writes, sorted.
    pub(crate) fn touched(&self) -> Vec<(u64, u64)> {
        let mut all: Vec<(u64, u64)> = self.touched.concat();
        all.sort_unstable();
        all
    }

    /// The staged FAT filesystems with their partition numbers (each reads
    /// as the committed one would).
    pub(crate) fn fats(&self) -> impl Iterator<Item = (u32, &Cow<Window>)> {
        self.fat_stages.iter().map(|(p, c)| (*p, c))
    }

    /// The staged root filesystem (it reads as the committed one would).
    pub fn root(&self) -> &Cow<Window> {
        &self.ext4
    }

    /// Replaces the bytes of `buf` (image bytes at `offset`, as read from
    /// the image) that the transaction changes, so `buf` reads as the
    /// committed image would, without writing the image.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(past_end)?;
        for (cow, ranges) in self.stages().zip(&self.touched) {
            let at = cow.base().start();
            // Ranges are sorted: skip to the first that may reach `offset`.
            let first = ranges.partition_point(|&(_, e)| e <= offset);
            for &(s, e) in ranges.iter().skip(first) {
                if s >= end {
                    break;
                }
                let (s, e) = (s.max(offset), e.min(end));
                if s < e {
                    // offset <= s < e <= end: the overlap lies inside `buf`,
                    // and touched ranges start at or after the partition.
                    let (Some(b), Some(n), Some(src)) =
                        (s.checked_sub(offset), e.checked_sub(s), s.checked_sub(at))
                    else {
                        return Err(past_buffer());
                    };
                    let (Ok(b), Ok(n)) = (usize::try_from(b), usize::try_from(n)) else {
                        return Err(past_buffer());
                    };
                    let dst = b
                        .checked_add(n)
                        .and_then(|bn| buf.get_mut(b..bn))
                        .ok_or_else(past_buffer)?;
                    cow.read_exact_at(dst, src)?;
                }
            }
        }
        Ok(())
    }

    /// Writes everything staged to the image; returns [`Finished::touched`].
    pub fn commit(self) -> Result<Vec<(u64, u64)>> {
        let touched = self.touched();
        for (part, cow) in self.fat_stages {
            cow.commit().map_err(|e| Error::Fat {
                part,
                detail: format!("writing the partition: {e}"),
            })?;
        }
        self.ext4
            .commit()
            .map_err(|e| Error::from(crate::ext4::Ext4Error::from(e)))?;
        Ok(touched)
    }
}

#[cfg(test)]
mod tests {
    use super::fix_dot_window;

    fn slot(head: &[u8]) -> [u8; 32] {
        let mut s = [0u8; 32];
        for (d, b) in s.iter_mut().zip(head) {
            *d = *b;
        }
        s
    }

    fn window(slots: [[u8; 32]; 4]) -> [u8; 128] {
        slots.concat().try_into().unwrap()
    }

    #[test]
    fn fatfs_dot_entries_are_put_first_and_root_dotdot_is_cleared() {
        let mut lfn1 = slot(b"\x41.\0");
        lfn1[11] = 0x0F;
        let dot = slot(b".          \x10");
        let mut lfn2 = slot(b"\x41.\0.\0");
        lfn2[11] = 0x0F;
        let mut dotdot = slot(b"..         \x10");
        dotdot[26] = 2; // cluster 2, the FAT32 root
        let mut win = window([lfn1, dot, lfn2, dotdot]);
        fix_dot_window(&mut win, Some(2));
        let mut cleared = dotdot;
        cleared[26] = 0;
        let (mut del1, mut del2) = (lfn1, lfn2);
        del1[0] = 0xE5;
        del2[0] = 0xE5;
        assert_eq!(win, window([dot, cleared, del1, del2]));

        // `..` of a deeper directory keeps its cluster.
        let mut win = window([lfn1, dot, lfn2, dotdot]);
        fix_dot_window(&mut win, Some(5));
        assert_eq!(win, window([dot, dotdot, del1, del2]));

        // Anything else is left alone.
        let other = window([dot, dotdot, lfn1, lfn2]);
        let mut win = other;
        fix_dot_window(&mut win, Some(2));
        assert_eq!(win, other);
    }
}
