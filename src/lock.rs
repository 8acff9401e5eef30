//! Advisory locks (`flock`) between rpiimg runs: exclusive for a writer,
//! shared for readers. A run that finds the lock taken says on stderr
//! that it waits and for which file, then waits: two edits of one image,
//! a verify beside an edit, two builds into one folder or two fills of one
//! cache entry then happen one after the other instead of interleaving.
//!
//! `flock` rather than `fcntl` locks: they belong to the open file (not
//! the process), so a lock taken on one descriptor is not dropped when
//! another descriptor of the same file is closed, and they are released
//! by the kernel when the process dies, however it dies (no stale lock
//! to clean up). They bind rpiimg runs only: other programs do not ask.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

/// What the holder of a lock may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Readers: any number at once, never beside a writer.
    Shared,
    /// A writer: alone.
    Exclusive,
}

/// Lock `file` (open as `path`, which the waiting message names; `why`
/// says what the lock protects), waiting while another run holds it.
/// The lock lasts as long as the file stays open.
pub fn lock(file: &File, path: &Path, access: Access, why: &str) -> io::Result<()> {
    if try_lock(file, access)? {
        return Ok(());
    }
    eprintln!(
        "rpiimg: waiting for {}: another rpiimg run holds its lock ({why}); this run goes on when that one ends",
        crate::term::escape(&path.display().to_string())
    );
    let op = match access {
        Access::Shared => FlockOperation::LockShared,
        Access::Exclusive => FlockOperation::LockExclusive,
    };
    loop {
        match rustix::fs::flock(file, op) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Take the lock if it is free; whether it was.
pub fn try_lock(file: &File, access: Access) -> io::Result<bool> {
    let op = match access {
        Access::Shared => FlockOperation::NonBlockingLockShared,
        Access::Exclusive => FlockOperation::NonBlockingLockExclusive,
    };
    loop {
        match rustix::fs::flock(file, op) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A held lock on a lock file of its own (an output folder's, a cache
/// entry's); released when dropped.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Lock `path` (created empty if missing), waiting for another holder.
    pub fn acquire(path: &Path, access: Access, why: &str) -> io::Result<LockFile> {
        // Waiting, `take` returns only with the lock.
        Self::take(path, access, Some(why))?.ok_or_else(|| io::Error::other("lock not taken"))
    }

    /// Lock `path` only if it is free right now (`None`: another run holds it).
    pub fn try_acquire(path: &Path, access: Access) -> io::Result<Option<LockFile>> {
        Self::take(path, access, None)
    }

    fn take(path: &Path, access: Access, wait: Option<&str>) -> io::Result<Option<LockFile>> {
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            match wait {
                Some(why) => lock(&file, path, access, why)?,
                None => {
                    if !try_lock(&file, access)? {
                        return Ok(None);
                    }
                }
            }
            // A lock file removed (`rpiimg cache clear`) while this run
            // waited on it locks nothing any more: another run may already
            // hold a new file of that name. Locked is only the file the
            // name still leads to.
            let held = file.metadata()?;
            match std::fs::metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(LockFile {
                        file,
                        path: path.to_path_buf(),
                    }))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the lock file while it is held (a run that waits on it then
    /// finds the name gone or new, see `take`).
    pub fn remove(self) -> io::Result<()> {
        std::fs::remove_file(&self.path)?;
        drop(self.file);
        Ok(())
    }
}

/// Test hook for the concurrency tests: with
/// `RPIIMG_FAULT=<point>:pause=<FILE>` the run, on reaching `point`
/// (holding whatever locks it holds there), creates `<FILE>.reached` and
/// waits until `<FILE>` exists, so a test can start a second run at
/// exactly that moment. It gives up waiting after a minute (a test that
/// died never lets it go). Unset, this costs one environment lookup.
pub fn pause(point: &str) {
    let Ok(v) = std::env::var("RPIIMG_FAULT") else {
        return;
    };
    // One of a comma-separated list (flash's tests pair it with flash-slow).
    let Some(go) = v
        .split(',')
        .find_map(|f| f.strip_prefix(point)?.strip_prefix(":pause="))
        .map(PathBuf::from)
    else {
        return;
    };
    let mut reached = go.clone().into_os_string();
    reached.push(".reached");
    let _ = std::fs::write(&reached, b"");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !go.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The lock file of an output folder: one per folder, hidden.
pub const OUT_LOCK: &str = ".rpiimg.lock";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_beside_shared_exclusive_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        let a = LockFile::try_acquire(&p, Access::Shared).unwrap().unwrap();
        let b = LockFile::try_acquire(&p, Access::Shared).unwrap().unwrap();
        assert!(LockFile::try_acquire(&p, Access::Exclusive)
            .unwrap()
            .is_none());
        drop((a, b));
        let x = LockFile::try_acquire(&p, Access::Exclusive)
            .unwrap()
            .unwrap();
        assert!(LockFile::try_acquire(&p, Access::Shared).unwrap().is_none());
        x.remove().unwrap();
        assert!(!p.exists());
    }
}
