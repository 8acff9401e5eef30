//! Mounts and loop devices for the root-only tests, undone when their
//! guard drops (when the test fails too), so that no run leaves a mount or
//! an attached loop device behind.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::{stderr, tool};

/// A mount point, unmounted when dropped.
pub(crate) struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = tool("umount").arg(&self.0).status();
    }
}

/// `mount OPTS SOURCE AT` (AT made if missing); mount's message if it fails.
pub(crate) fn mount(
    opts: &[&str],
    source: impl AsRef<OsStr>,
    at: &Path,
) -> Result<Mounted, String> {
    std::fs::create_dir_all(at).map_err(|e| format!("{}: {e}", at.display()))?;
    let o = tool("mount")
        .args(opts)
        .arg(source)
        .arg(at)
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(Mounted(at.to_path_buf()))
    } else {
        Err(stderr(&o))
    }
}

/// A tmpfs of `size` (as mount says it: "1M", "4m") at `at`.
pub(crate) fn tmpfs(at: &Path, size: &str) -> Result<Mounted, String> {
    mount(&["-t", "tmpfs", "-o", &format!("size={size}")], "tmpfs", at)
}

/// An attached loop device, detached when dropped.
pub(crate) struct LoopDev(String);

impl LoopDev {
    /// Its device path, `/dev/loopN`.
    pub(crate) fn dev(&self) -> &str {
        &self.0
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = tool("losetup").args(["-d", &self.0]).status();
    }
}

/// `losetup -f --show BACKING`; losetup's message if it fails.
pub(crate) fn loop_device(backing: &Path) -> Result<LoopDev, String> {
    let o = tool("losetup")
        .args(["-f", "--show"])
        .arg(backing)
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(LoopDev(
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        ))
    } else {
        Err(stderr(&o))
    }
}
