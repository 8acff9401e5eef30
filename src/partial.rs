//! Partial files: what a run writes under a temporary name before it is
//! complete (a cache entry being filled, a node's outputs before their
//! rename). Each is locked (`flock`, exclusive) by its writer for as long
//! as it is open, and registered here while it lives, so that
//!
//! - an interrupted run (SIGINT, SIGTERM, SIGHUP) removes its own before
//!   it exits ([`remove_on_signals`]), and
//! - a later run removes those of a run that was killed outright
//!   ([`sweep`]): a partial file whose lock nobody holds has no writer.
//!
//! Only names rpiimg makes are looked at, only regular files (never
//! through a link), and only when their lock is free.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::lock::Access;

/// The partial files and folders of this process that exist now.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding it leaves a list that is still right.
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A registered partial file or folder; unregistered when dropped (it was
/// renamed to its final name, or removed).
#[derive(Debug)]
pub(crate) struct Tracked(PathBuf);

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut v = live();
        if let Some(i) = v.iter().position(|p| *p == self.0) {
            v.swap_remove(i);
        }
    }
}

/// Lock the new partial file `file` (at `path`) as its writer's and
/// register it for removal on a signal.
pub(crate) fn track(file: &File, path: &Path) -> io::Result<Tracked> {
    // A new file: nobody else has it open, so the lock is free.
    crate::lock::try_lock(file, Access::Exclusive)?;
    Ok(track_path(path))
}

/// Register a partial folder (or a file another lock protects).
pub(crate) fn track_path(path: &Path) -> Tracked {
    live().push(path.to_path_buf());
    Tracked(path.to_path_buf())
}

/// Remove every partial file and folder of this process; how many.
pub(crate) fn remove_live() -> usize {
    let v = live();
    v.iter()
        .filter(|p| match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).is_ok(),
            Ok(_) => std::fs::remove_file(p).is_ok(),
            Err(_) => false,
        })
        .count()
}

/// On SIGINT, SIGTERM or SIGHUP: remove this run's partial files, say so
/// and exit (130, 143, 129: 128 + the signal, as a shell reports it).
/// Commands that stop on a signal themselves (`flash`) do not use it.
pub(crate) fn remove_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let n = remove_live();
            let name = match sig {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            eprintln!(
                "rpiimg: interrupted ({name}): {n} partial file(s) removed; nothing is under a final name that was not complete before"
            );
            std::process::exit(128 + sig);
        }
    });
}

/// Remove the partial files in `dir` that `ours` recognises by name and
/// whose writer is gone (their lock is free); how many were removed.
/// Errors are not fatal: what cannot be looked at is left alone.
pub(crate) fn sweep(dir: &Path, ours: impl Fn(&str) -> bool) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !ours(&name) || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = e.path();
        if stale(&path) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether the partial file at `path` has no writer: it opens as a regular
/// file (not through a link) and its lock is free.
fn stale(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt as _;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(i32::try_from(flags.bits()).unwrap_or(0))
        .open(path)
    else {
        return false;
    };
    f.metadata().is_ok_and(|m| m.is_file())
        && crate::lock::try_lock(&f, Access::Exclusive).unwrap_or(false)
}

/// Whether `name` is one of a node's outputs under its temporary name
/// (`output::Pending`: `.<final name>.rpiimg-partial-<random>`).
pub(crate) fn is_output_partial(name: &str) -> bool {
    name.starts_with('.') && name.contains(".rpiimg-partial-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_partial_is_kept_and_a_stale_one_removed() {
        let d = tempfile::tempdir().unwrap();
        let live_path = d.path().join(".a.img.rpiimg-partial-x");
        let stale_path = d.path().join(".b.img.rpiimg-partial-y");
        let other = d.path().join("b.img");
        let f = File::create(&live_path).unwrap();
        let t = track(&f, &live_path).unwrap();
        std::fs::write(&stale_path, b"old").unwrap();
        std::fs::write(&other, b"final").unwrap();
        // A link under a partial's name is never followed or removed.
        std::os::unix::fs::symlink(&other, d.path().join(".c.img.rpiimg-partial-z")).unwrap();
        assert_eq!(sweep(d.path(), is_output_partial), 1);
        assert!(live_path.exists() && !stale_path.exists() && other.exists());
        assert!(d
            .path()
            .join(".c.img.rpiimg-partial-z")
            .symlink_metadata()
            .is_ok());
        assert!(live().contains(&live_path));
        drop(t);
        assert!(!live().contains(&live_path));
    }
}
