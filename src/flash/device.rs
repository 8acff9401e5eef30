//! The Linux-specific parts of flashing, in one place: identifying a
//! block device, opening it exclusively, dropping its cached pages so the
//! read-back comes from the card, and asking the kernel to re-read its
//! partition table.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// What a target is, read from its opened descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostKind {
    /// A block device, `major:minor`.
    Block(String),
    /// A regular file; its (st_dev, st_ino).
    File(u64, u64),
}

/// A target opened once, before the checks: what is checked (its
/// `st_rdev` or file identity, read from the descriptor) is what gets
/// written, through the same descriptor, whatever happens to the path
/// meanwhile (a `/dev/disk/by-id` link re-pointed during the prompt).
#[derive(Debug)]
pub(crate) struct Target {
    pub file: File,
    /// `Block(major:minor)` or `File(st_dev, st_ino)`, from the descriptor.
    pub id: HostKind,
    /// A file that did not exist: written under this hidden name in the
    /// same directory and renamed to the target only when verified
    /// ([`Target::keep`]); removed when dropped before that.
    pub temp: Option<TempName>,
}

/// A new file's temporary name; the file is removed when this is dropped.
#[derive(Debug)]
pub(crate) struct TempName(Option<std::path::PathBuf>);

impl TempName {
    pub(crate) fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// The file got its name: nothing to remove.
    fn kept(mut self) {
        self.0 = None;
    }
}

impl Drop for TempName {
    fn drop(&mut self) {
        // Not kept: nothing under the target's name, nothing hidden left.
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Why a target could not be opened.
pub(crate) enum OpenError {
    /// Refused outright: the reason, one line.
    Refused(String),
    /// A block device the kernel would not open (in use, read-only, no
    /// permission): the checks on its path say why, else this error.
    Device(String, io::Error),
}

/// Open `path` for writing and reading back, once. A block device is
/// opened `O_EXCL`, so the kernel refuses one that is mounted, held by
/// LVM/RAID/crypt or opened exclusively by another flash; a symlink is
/// followed only to a block device (checked on the opened descriptor); a
/// regular file only with `to_file`, never through a symlink; a missing
/// file with `to_file` is created 0600 (node images hold secrets) under a
/// hidden temporary name. [`Target::lock`] then takes it for this run.
pub(crate) fn open_target(path: &Path, to_file: bool) -> Result<Target, OpenError> {
    let lmeta = match std::fs::symlink_metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(refused(format!("cannot look at it: {e}"))),
    };
    let via_link = lmeta.as_ref().is_some_and(|m| m.file_type().is_symlink());
    let (file, temp) = open_by_type(path, lmeta, to_file)?;
    let id = identify(&file, path, via_link, to_file)?;
    Ok(Target { file, id, temp })
}

fn refused(why: String) -> OpenError {
    OpenError::Refused(why)
}

/// Open `path` read-write as what `lmeta` (its `lstat`, `None`: missing)
/// says it is: a missing file with `to_file` created under a temporary
/// name; a block device, or a symlink to one, `O_EXCL`; an existing file
/// only with `to_file` and not through a link; anything else refused.
fn open_by_type(
    path: &Path,
    lmeta: Option<std::fs::Metadata>,
    to_file: bool,
) -> Result<(File, Option<TempName>), OpenError> {
    use rustix::fs::OFlags;
    let rw = |flags: OFlags| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flag(flags | OFlags::CLOEXEC))
            .open(path)
    };
    match lmeta {
        None if to_file => {
            let (f, t) = create_temp(path).map_err(|e| {
                refused(format!(
                    "cannot create it: {e}{}",
                    if e.kind() == io::ErrorKind::NotFound {
                        " (its directory does not exist)"
                    } else {
                        ""
                    }
                ))
            })?;
            Ok((f, Some(TempName(Some(t)))))
        }
        None => Err(refused(
            "no such device (is the card reader plugged in? lsblk lists the cards; add --to-file to write an image file)".into(),
        )),
        Some(m) if m.file_type().is_symlink() => {
            let f = rw(OFlags::EXCL).map_err(|e| match std::fs::metadata(path) {
                Ok(t) if t.file_type().is_block_device() => OpenError::Device(block_id(&t), e),
                _ => refused(
                    "a symlink that does not lead to a block device; name the file itself".into(),
                ),
            })?;
            Ok((f, None))
        }
        Some(m) if m.file_type().is_block_device() => {
            let f = rw(OFlags::EXCL | OFlags::NOFOLLOW)
                .map_err(|e| OpenError::Device(block_id(&m), e))?;
            Ok((f, None))
        }
        Some(m) if m.file_type().is_file() && to_file => {
            let f = rw(OFlags::NOFOLLOW)
                .map_err(|e| refused(format!("cannot open it for writing: {e}")))?;
            Ok((f, None))
        }
        Some(m) if m.file_type().is_file() => Err(refused(
            "not a block device (a card is /dev/sdX or /dev/mmcblkN; add --to-file to write an image file)".into(),
        )),
        Some(m) if m.is_dir() => Err(refused("is a directory".into())),
        Some(m) if m.file_type().is_char_device() => {
            Err(refused("is a character device".into()))
        }
        Some(_) => Err(refused("is not a block device or regular file".into())),
    }
}

/// What the opened descriptor is: from here on it decides, not the path
/// (which may have been re-pointed since it was looked at).
fn identify(
    file: &File,
    path: &Path,
    via_link: bool,
    to_file: bool,
) -> Result<HostKind, OpenError> {
    let meta = file
        .metadata()
        .map_err(|e| refused(format!("cannot stat the opened {}: {e}", path.display())))?;
    let ft = meta.file_type();
    if ft.is_block_device() {
        Ok(HostKind::Block(block_id(&meta)))
    } else if via_link {
        // Only device names (by-id, by-path) are followed; a link to a
        // file could be re-pointed anywhere on the host.
        Err(refused(
            "a symlink that does not lead to a block device; name the file itself".into(),
        ))
    } else if ft.is_file() && to_file {
        Ok(HostKind::File(meta.dev(), meta.ino()))
    } else {
        Err(refused(
            "changed while it was opened: it is no longer a block device or file".into(),
        ))
    }
}

fn block_id(m: &std::fs::Metadata) -> String {
    let rdev = m.rdev();
    format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

/// `dir/.name.rpiimg-partial-PID-N`, created 0600, never an existing file.
fn create_temp(path: &Path) -> io::Result<(File, std::path::PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
        .to_string_lossy()
        .into_owned();
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut last = None;
    for n in 0..100u32 {
        let t = format!(".{name}.rpiimg-partial-{}-{n}", std::process::id());
        let t = dir.map_or_else(|| std::path::PathBuf::from(&t), |d| d.join(&t));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(flag(
                rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            ))
            .open(&t)
        {
            Ok(f) => return Ok((f, t)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

impl Target {
    /// Lock the target for this run (`flock`, exclusive), so two flashes of
    /// one file or card never interleave. `Err` is a one-line reason.
    pub(crate) fn lock(&self) -> Result<(), String> {
        match rustix::fs::flock(&self.file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(
                "is being written by another rpiimg flash (it holds a lock on it): wait for that to finish".into(),
            ),
            Err(e) => Err(format!("cannot lock it: {e}")),
        }
    }

    /// Turn `O_DIRECT` on for a device whose writes are all aligned:
    /// writes then go to the card without filling the page cache (no long
    /// flush at the end, honest progress) and reads come from the card.
    /// Returns whether it is on (a device that refuses it stays buffered).
    pub(crate) fn direct(&self) -> bool {
        let Ok(flags) = rustix::fs::fcntl_getfl(&self.file) else {
            return false;
        };
        rustix::fs::fcntl_setfl(&self.file, flags | rustix::fs::OFlags::DIRECT).is_ok()
    }

    /// A file target is grown to `size` but never shrunk (a file standing
    /// in for a card keeps what lies beyond).
    pub(crate) fn grow(&self, size: u64) -> io::Result<()> {
        if matches!(self.id, HostKind::File(..)) && self.file.metadata()?.len() < size {
            self.file.set_len(size)?;
        }
        Ok(())
    }

    /// Free bytes where a new file target is written (`None`: not a new
    /// file, or unknown).
    /// Free bytes on the filesystem of a file target (`None` for a device).
    pub(crate) fn free_space(&self) -> Option<u64> {
        if matches!(self.id, HostKind::Block(_)) {
            return None;
        }
        let v = rustix::fs::fstatvfs(&self.file).ok()?;
        v.f_bavail.checked_mul(v.f_frsize)
    }

    /// Bytes a file target already has allocated (0 for a device).
    pub(crate) fn allocated(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        match self.id {
            HostKind::Block(_) => 0,
            HostKind::File(..) => self
                .file
                .metadata()
                .map_or(0, |m| m.blocks().saturating_mul(512)),
        }
    }

    /// A verified new file gets its name: renamed from the temporary one,
    /// never over a file that appeared meanwhile. `Err` is a one-line
    /// reason (the temporary file is then removed).
    pub(crate) fn keep(&mut self, path: &Path) -> Result<(), String> {
        let Some(temp) = self.temp.take() else {
            return Ok(());
        };
        let cwd = rustix::fs::CWD;
        match rustix::fs::renameat_with(
            cwd,
            temp.path(),
            cwd,
            path,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                temp.kept();
                Ok(())
            }
            Err(e) => {
                drop(temp);
                Err(if e == rustix::io::Errno::EXIST {
                    format!(
                        "{} was created by something else during the flash; it was left alone and this run's file removed",
                        path.display()
                    )
                } else {
                    format!("cannot name the written file {}: {e}", path.display())
                })
            }
        }
    }
}

fn flag(f: rustix::fs::OFlags) -> i32 {
    i32::try_from(f.bits()).unwrap_or(0)
}

/// After `sync_data`, drop the cached pages so reads come from the medium.
pub(crate) fn drop_cache(f: &File) -> io::Result<()> {
    rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed).map_err(io::Error::from)
}

/// Ask the kernel to re-read a card's partition table (`blockdev
/// --rereadpt`, util-linux: the ioctl itself would need unsafe code).
/// `Err` is a one-line reason.
pub(crate) fn reread_partitions(path: &Path) -> Result<(), String> {
    match std::process::Command::new("blockdev")
        .arg("--rereadpt")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("blockdev: {e} (install util-linux)")),
    }
}
