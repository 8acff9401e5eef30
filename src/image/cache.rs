//! The decompression cache: each `.img.xz` is decompressed once, into
//! `<cache>/<sha256 of the .xz>.img`, and reused from then on.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    /// `$RPIIMG_CACHE_DIR`, else the platform's user cache directory + `rpiimg`.
    pub fn default_dir() -> PathBuf {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(d) = env("RPIIMG_CACHE_DIR") {
            return d;
        }
        if let Some(d) = env("XDG_CACHE_HOME") {
            return d.join("rpiimg");
        }
        if cfg!(target_os = "macos") {
            if let Some(h) = env("HOME") {
                return h.join("Library/Caches/rpiimg");
            }
        }
        if cfg!(windows) {
            if let Some(d) = env("LOCALAPPDATA") {
                return d.join("rpiimg").join("cache");
            }
        }
        if let Some(h) = env("HOME") {
            return h.join(".cache/rpiimg");
        }
        std::env::temp_dir().join("rpiimg-cache")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the decompressed image of an `.xz` with this sha256 lives.
    pub fn entry(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.img"))
    }

    /// Cached images with their sizes.
    pub fn list(&self) -> std::io::Result<Vec<(PathBuf, u64)>> {
        let mut v = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "img") {
                v.push((p, e.metadata()?.len()));
            }
        }
        v.sort();
        Ok(v)
    }

    /// Remove every cached image (and stale partial files); returns bytes freed.
    pub fn clear(&self) -> std::io::Result<u64> {
        let mut freed = 0;
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".img") || name.starts_with(".partial-") {
                // A total for the message only: saturating is exact for any
                // cache a disk holds.
                freed = e.metadata()?.len().saturating_add(freed);
                std::fs::remove_file(p)?;
            }
        }
        Ok(freed)
    }
}
