//! The Linux-specific parts of flashing, in one place: identifying a
//! block device, opening it exclusively, dropping its cached pages so the
//! read-back comes from the card, and asking the kernel to re-read its
//! partition table.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// What a target path is on this host.
pub enum HostKind {
    /// A block device, `major:minor`.
    Block(String),
    /// A regular file; its (st_dev, st_ino).
    File(u64, u64),
    /// Nothing there yet.
    Missing,
    /// A symlink that does not lead to a block device.
    Symlink,
    /// A directory, character device, socket, ...
    Other(&'static str),
}

pub fn classify(path: &Path) -> io::Result<HostKind> {
    let lmeta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HostKind::Missing),
        Err(e) => return Err(e),
    };
    // /dev/disk/by-id/usb-... names are symlinks to the device: follow
    // those, and only those.
    let meta = if lmeta.file_type().is_symlink() {
        match std::fs::metadata(path) {
            Ok(m) if m.file_type().is_block_device() => m,
            _ => return Ok(HostKind::Symlink),
        }
    } else {
        lmeta
    };
    let ft = meta.file_type();
    Ok(if ft.is_block_device() {
        let rdev = meta.rdev();
        HostKind::Block(format!(
            "{}:{}",
            rustix::fs::major(rdev),
            rustix::fs::minor(rdev)
        ))
    } else if ft.is_file() {
        HostKind::File(meta.dev(), meta.ino())
    } else if ft.is_dir() {
        HostKind::Other("a directory")
    } else if ft.is_char_device() {
        HostKind::Other("a character device")
    } else {
        HostKind::Other("not a block device or regular file")
    })
}

/// Open a card for writing and reading back. `O_EXCL` on a block device
/// makes the kernel refuse it while anything (a mount, a holder, another
/// exclusive opener) uses it, closing the gap after the checks. With
/// `direct`, `O_DIRECT`: writes go to the card without filling the page
/// cache (no long flush at the end, honest progress) and the read-back
/// comes from the card. Returns whether `O_DIRECT` is on.
pub fn open_device(path: &Path, direct: bool) -> io::Result<(File, bool)> {
    let open = |flags: rustix::fs::OFlags| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flag(flags))
            .open(path)
    };
    if direct {
        match open(rustix::fs::OFlags::EXCL | rustix::fs::OFlags::DIRECT) {
            Ok(f) => return Ok((f, true)),
            // A device (or a file system under a loop device) without it.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((open(rustix::fs::OFlags::EXCL)?, false))
}

/// Open (or create) an image file target, never through a symlink; it is
/// grown to `size` but never shrunk (a file standing in for a card keeps
/// what lies beyond).
pub fn open_file(path: &Path, size: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        // A new file gets the image, host private keys and all: its owner's
        // alone, like build's images (an existing file keeps its mode).
        .mode(0o600)
        .custom_flags(flag(rustix::fs::OFlags::NOFOLLOW))
        .open(path)?;
    if f.metadata()?.len() < size {
        f.set_len(size)?;
    }
    Ok(f)
}

fn flag(f: rustix::fs::OFlags) -> i32 {
    i32::try_from(f.bits()).unwrap_or(0)
}

/// After `sync_data`, drop the cached pages so reads come from the medium.
pub fn drop_cache(f: &File) -> io::Result<()> {
    rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed).map_err(io::Error::from)
}

/// Ask the kernel to re-read a card's partition table (`blockdev
/// --rereadpt`, util-linux: the ioctl itself would need unsafe code).
/// `Err` is a one-line reason.
pub fn reread_partitions(path: &Path) -> Result<(), String> {
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
