//! Reading the few host files a profile names (profiles, `[[files]]`
//! sources, overlay directories, bundle templates), never more; and the
//! other small files a command line names (manifests, `fs batch` files).
//!
//! Every read is bounded and refuses what is not a regular file (a FIFO or
//! `/dev/zero` would be read forever), and a symbolic link is followed only
//! when its target stays inside the directory the profile allows (a link
//! in an overlay to the host's /etc/shadow would copy it into the image).

use std::io::Read;
use std::path::Path;

/// The most a profile or template may hold.
pub(crate) const TEXT_CAP: u64 = 1 << 20;
/// The most a single file copied into an image from the host may hold
/// (plans keep file contents in memory).
pub(crate) const DATA_CAP: u64 = 64 << 20;
/// The most a manifest rpiimg reads back (verify, imager-list) may hold:
/// one records a node's changes by hash, so real ones are kilobytes.
pub(crate) const MANIFEST_CAP: u64 = 16 << 20;

/// Read `path`, a regular file of at most `cap` bytes, whose real location
/// (links resolved) lies under `inside` when given. Errors name the file
/// and say what to do.
pub(crate) fn read(path: &Path, inside: Option<&Path>, cap: u64) -> Result<Vec<u8>, String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(root) = inside {
        let root = root
            .canonicalize()
            .map_err(|e| format!("{}: {e}", root.display()))?;
        if !real.starts_with(&root) {
            return Err(format!(
                "{}: a symbolic link to {}, outside {}: rpiimg reads only what the profile names; copy the file into that directory instead",
                path.display(),
                real.display(),
                root.display()
            ));
        }
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "{}: not a regular file (a device, FIFO or socket would never end); name a regular file",
            path.display()
        ));
    }
    if meta.len() > cap {
        return Err(format!(
            "{}: {} bytes, more than the {} bytes rpiimg reads from such a file",
            path.display(),
            meta.len(),
            cap
        ));
    }
    let mut buf = Vec::new();
    std::fs::File::open(&real)
        .and_then(|f| f.take(cap + 1).read_to_end(&mut buf))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if buf.len() as u64 > cap {
        return Err(format!(
            "{}: grew past {cap} bytes while read",
            path.display()
        ));
    }
    Ok(buf)
}

/// `read` as UTF-8 text.
pub(crate) fn read_text(path: &Path, inside: Option<&Path>, cap: u64) -> Result<String, String> {
    String::from_utf8(read(path, inside, cap)?)
        .map_err(|_| format!("{}: not UTF-8 text", path.display()))
}
