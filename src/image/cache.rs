//! The decompression cache: each `.img.xz` is decompressed once, into
//! `<cache>/<sha256 of the .xz>.img`, and reused from then on.
//!
//! An entry is trusted only as far as it is proven. When it is filled,
//! its seal (`<sha>.seal`) records the image's size and sha256 (hashed
//! while decompressing) and the identity of the file (device, inode,
//! modification and change times). Every use compares the file's
//! identity with the seal, which costs one `fstat`: any write to the
//! entry, its truncation or its replacement changes its change time
//! (which no unprivileged program can set back) or inode. An entry whose
//! identity changed is hashed in full and used only if it still has the
//! sealed sha256 (a cache copied elsewhere: resealed), else refused,
//! naming the entry and the command that drops it. `build` also hashes
//! the base's bytes in the pass that copies them into a node image, so no
//! node is kept from an entry that is not the sealed one, whatever the
//! stat says (damage below the filesystem, a clock set back by root).
//!
//! Locks: `<sha>.lock` is held exclusively while an entry is checked or
//! filled (a second run decompressing the same `.xz` waits, then uses the
//! entry), and every run using an entry holds a shared lock on the entry
//! itself, so `rpiimg cache clear` leaves alone what is filled or used.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lock::{Access, LockFile};

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// What a filled entry was when it was sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seal {
    pub seal_version: u32,
    /// sha256 of the `.xz` the entry was decompressed from (its name).
    pub source_sha256: String,
    /// The decompressed image's length and sha256.
    pub size: u64,
    pub sha256: String,
    /// The entry file's identity when sealed.
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

const SEAL_VERSION: u32 = 1;

/// Where an entry stands, as `rpiimg cache list` reports it (without
/// hashing: that happens on use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Sealed, and the file is the one sealed.
    Sealed,
    /// Sealed, but the file changed since (its next use hashes it).
    Changed,
    /// Shorter or longer than sealed.
    WrongSize,
    /// No seal: an entry of an older rpiimg or an interrupted fill;
    /// filled again on its next use.
    Unsealed,
    /// Another run is filling it right now.
    Filling,
}

impl State {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            State::Sealed => "sealed",
            State::Changed => "changed since sealed (hashed on next use)",
            State::WrongSize => "damaged: not the sealed size",
            State::Unsealed => "unsealed (filled again on next use)",
            State::Filling => "being filled by another run",
        }
    }
}

/// One entry of the cache, for `rpiimg cache list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// sha256 of the source `.xz` (the entry's key).
    pub source_sha256: String,
    pub path: PathBuf,
    /// Apparent size and the bytes the (sparse) file occupies.
    pub size: u64,
    pub disk_bytes: u64,
    /// The decompressed image's sha256, from the seal.
    pub image_sha256: Option<String>,
    pub state: State,
}

/// Why an entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Damage {
    Size { sealed: u64, found: u64 },
    Content { sealed: String, found: String },
}

fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn identity(md: &std::fs::Metadata) -> (u64, u64, i128, i128) {
    // Exact for any time an i64 of seconds holds.
    let ns = |s: i64, n: i64| {
        i128::from(s)
            .saturating_mul(1_000_000_000)
            .saturating_add(i128::from(n))
    };
    (
        md.dev(),
        md.ino(),
        ns(md.mtime(), md.mtime_nsec()),
        ns(md.ctime(), md.ctime_nsec()),
    )
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    /// `$RPIIMG_CACHE_DIR`, else the platform's user cache directory + `rpiimg`.
    pub(crate) fn default_dir() -> PathBuf {
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

    pub fn seal_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.seal"))
    }

    fn lock_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.lock"))
    }

    /// The prefix of an entry's partial files while it is filled.
    pub(crate) fn partial_prefix(sha256: &str) -> String {
        format!(".partial-{sha256}-")
    }

    /// The command that drops an entry, for messages.
    pub(crate) fn drop_command(&self, sha256: &str) -> String {
        let d = self.dir.display().to_string();
        // Quoted only when the shell would split or expand it.
        let d = if d
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@".contains(&b))
        {
            d
        } else {
            crate::template::shquote(&d)
        };
        format!(
            "rpiimg --cache-dir {} cache clear {sha256}",
            crate::term::escape(&d)
        )
    }

    /// Hold the entry's fill lock (waiting for a run that fills it).
    pub(crate) fn lock_entry(&self, sha256: &str) -> io::Result<LockFile> {
        std::fs::create_dir_all(&self.dir)?;
        LockFile::acquire(
            &self.lock_path(sha256),
            Access::Exclusive,
            "it is decompressing this .xz into the cache",
        )
    }

    pub(crate) fn read_seal(&self, sha256: &str) -> Option<Seal> {
        let text = std::fs::read_to_string(self.seal_path(sha256)).ok()?;
        serde_json::from_str::<Seal>(&text)
            .ok()
            .filter(|s| s.seal_version == SEAL_VERSION && s.source_sha256 == sha256)
    }

    /// Record `file` (the entry, under its final name) as filled with an
    /// image of `size` bytes and this sha256. Written atomically: a seal
    /// is whole or absent.
    pub(crate) fn write_seal(
        &self,
        sha256: &str,
        file: &File,
        size: u64,
        image_sha256: &str,
    ) -> io::Result<()> {
        let (dev, ino, mtime_ns, ctime_ns) = identity(&file.metadata()?);
        let seal = Seal {
            seal_version: SEAL_VERSION,
            source_sha256: sha256.to_string(),
            size,
            sha256: image_sha256.to_string(),
            dev,
            ino,
            mtime_ns,
            ctime_ns,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(&Self::partial_prefix(sha256))
            .suffix(".seal")
            .tempfile_in(&self.dir)?;
        let text = serde_json::to_string_pretty(&seal).map_err(io::Error::other)?;
        io::Write::write_all(tmp.as_file_mut(), text.as_bytes())?;
        tmp.persist(self.seal_path(sha256)).map_err(|e| e.error)?;
        Ok(())
    }

    /// The sealed entry of `sha256`, checked (see the module comment),
    /// with its seal; `None` when there is none to use (missing or
    /// unsealed: fill it). The caller holds the entry's fill lock.
    pub(crate) fn open_sealed(
        &self,
        sha256: &str,
        hash: impl FnOnce(&File) -> io::Result<String>,
    ) -> io::Result<Option<std::result::Result<(File, Seal), Damage>>> {
        let file = match File::open(self.entry(sha256)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(seal) = self.read_seal(sha256) else {
            return Ok(None);
        };
        let md = file.metadata()?;
        if md.len() != seal.size {
            return Ok(Some(Err(Damage::Size {
                sealed: seal.size,
                found: md.len(),
            })));
        }
        if identity(&md) == (seal.dev, seal.ino, seal.mtime_ns, seal.ctime_ns) {
            return Ok(Some(Ok((file, seal))));
        }
        let found = hash(&file)?;
        if found != seal.sha256 {
            return Ok(Some(Err(Damage::Content {
                sealed: seal.sha256,
                found,
            })));
        }
        // The same bytes in another file (a restored or copied cache).
        self.write_seal(sha256, &file, seal.size, &seal.sha256)?;
        let seal = self.read_seal(sha256).unwrap_or(seal);
        Ok(Some(Ok((file, seal))))
    }

    /// Every entry (by key) with its state, without hashing anything.
    pub fn list(&self) -> io::Result<Vec<Listed>> {
        let mut v = Vec::new();
        for key in self.keys()? {
            let path = self.entry(&key);
            let md = match std::fs::metadata(&path) {
                Ok(md) => Some(md),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            let filling = match LockFile::try_acquire(&self.lock_path(&key), Access::Exclusive)? {
                Some(_held) => false,
                None => true,
            };
            let seal = self.read_seal(&key);
            let state = match (&md, &seal) {
                _ if filling => State::Filling,
                (None, _) => continue,
                (Some(_), None) => State::Unsealed,
                (Some(md), Some(s)) if md.len() != s.size => State::WrongSize,
                (Some(md), Some(s)) if identity(md) != (s.dev, s.ino, s.mtime_ns, s.ctime_ns) => {
                    State::Changed
                }
                _ => State::Sealed,
            };
            v.push(Listed {
                source_sha256: key,
                path,
                size: md.as_ref().map_or(0, std::fs::Metadata::len),
                disk_bytes: md.as_ref().map_or(0, |m| m.blocks().saturating_mul(512)),
                image_sha256: seal.map(|s| s.sha256),
                state,
            });
        }
        Ok(v)
    }

    /// The keys that have any file in the cache (entry, seal, lock or
    /// partial file), sorted.
    fn keys(&self) -> io::Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut keys = Vec::new();
        for e in rd {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            let key = name
                .strip_prefix(".partial-")
                .and_then(|r| r.get(..64))
                .or_else(|| name.split_once('.').map(|(k, _)| k));
            if let Some(k) = key.filter(|k| is_key(k)) {
                keys.push(k.to_string());
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Remove the entry of `sha256` (image, seal, partial files, lock)
    /// unless another run fills or uses it; the bytes freed, or `None`
    /// when it was busy (and left alone).
    pub fn remove(&self, sha256: &str) -> io::Result<Option<u64>> {
        let Some(fill) = LockFile::try_acquire(&self.lock_path(sha256), Access::Exclusive)? else {
            return Ok(None);
        };
        let mut freed = 0u64;
        let entry = self.entry(sha256);
        match File::open(&entry) {
            Ok(f) => {
                // Readers hold a shared lock on the entry itself.
                if !crate::lock::try_lock(&f, Access::Exclusive)? {
                    return Ok(None);
                }
                freed = f.metadata()?.blocks().saturating_mul(512);
                std::fs::remove_file(&entry)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let prefix = Self::partial_prefix(sha256);
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                // A total for the message only: saturating is exact for
                // any cache a disk holds.
                freed = e
                    .metadata()?
                    .blocks()
                    .saturating_mul(512)
                    .saturating_add(freed);
                std::fs::remove_file(e.path())?;
            }
        }
        match std::fs::remove_file(self.seal_path(sha256)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fill.remove()?;
        Ok(Some(freed))
    }

    /// Every key in the cache (for `cache clear --all`).
    pub(crate) fn all_keys(&self) -> io::Result<Vec<String>> {
        self.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_in_use_or_being_filled_is_not_removed() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        for k in [&a, &b] {
            std::fs::write(c.entry(k), b"image").unwrap();
            let f = File::open(c.entry(k)).unwrap();
            c.write_seal(k, &f, 5, "x").unwrap();
        }
        assert_eq!(
            c.list()
                .unwrap()
                .iter()
                .map(|l| l.state)
                .collect::<Vec<_>>(),
            [State::Sealed, State::Sealed]
        );
        // In use: a reader's shared lock on the entry.
        let user = File::open(c.entry(&a)).unwrap();
        crate::lock::lock(&user, &c.entry(&a), Access::Shared, "test").unwrap();
        assert_eq!(c.remove(&a).unwrap(), None);
        // Being filled: the fill lock.
        let fill = c.lock_entry(&b).unwrap();
        assert_eq!(
            c.list().unwrap().get(1).map(|l| l.state),
            Some(State::Filling)
        );
        assert_eq!(c.remove(&b).unwrap(), None);
        drop((user, fill));
        assert!(c.remove(&a).unwrap().is_some());
        assert!(!c.entry(&a).exists() && !c.seal_path(&a).exists());
        assert!(c.entry(&b).exists());
        // A changed entry is reported, without hashing.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(c.entry(&b))
            .unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"I", 0).unwrap();
        assert_eq!(
            c.list().unwrap().first().map(|l| l.state),
            Some(State::Changed)
        );
    }
}
