//! The FAT boot partition, through the fatfs crate (its timestamps are
//! converted in `crate::clock`).

use std::io::{self, Read, Write};

use crate::ext4::FileType;
use crate::fs::Stat;
use crate::image::Window;

pub(crate) type FatFs = fatfs::FileSystem<Window>;
type FatDir<'a> = fatfs::Dir<'a, Window>;
/// A directory entry: name, stat, and its own handle when a directory.
type Entry<'a> = (String, Stat, Option<FatDir<'a>>);

/// Permissions Linux's vfat driver shows with Debian's `defaults` (umask 022).
const FAT_MODE: u16 = 0o755;

pub struct Fat {
    fs: FatFs,
}

/// fatfs's clock for new and changed entries: the edit's fixed time, never
/// the host's clock or time zone (fatfs wants a `'static` provider; one
/// small allocation per edited image).
#[derive(Debug)]
pub(crate) struct FixedTime(fatfs::DateTime);

impl FixedTime {
    pub(crate) fn leak(t: i64) -> &'static FixedTime {
        Box::leak(Box::new(FixedTime(crate::clock::fat_datetime(t))))
    }
}

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{path}: no such file or directory in the boot partition"),
    )
}

/// Walkers (ls -R, diff, inspect, build's probes) reach an entry again by
/// its path, so a listed name must lead back to that entry alone. An empty
/// name (a short name of spaces) would make `dir/` name `dir` itself and a
/// walk descend forever (found by the fat fuzz target); a name with `/` names
/// another path; two entries that match one name (fatfs compares long and
/// short names ignoring case) make every lookup land on the first, which
/// nested levels turn into exponentially many listings.
fn unusable_name(dir: &str, name: &str, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the boot partition is damaged: directory {} holds an entry whose name '{}' {why}; \
             check a copy with `fsck.fat -n`, or start again from an intact image",
            crate::term::escape(dir),
            crate::term::escape(name),
        ),
    )
}

impl Fat {
    /// Opens the volume and proves its table loop-free ([`super::fat_chains`])
    /// before any chain is followed.
    pub fn open(w: Window) -> io::Result<Self> {
        // fatfs validates the boot sector (and follows no chain doing so).
        let fs = fatfs::FileSystem::new(w.clone(), fatfs::FsOptions::new())?;
        super::fat_chains::check(&w)?;
        Ok(Fat { fs })
    }

    pub fn fs(&self) -> &FatFs {
        &self.fs
    }

    /// The volume label from the root directory (what `blkid` reports), else the boot sector's.
    pub fn label(&self) -> String {
        match self.fs.read_volume_label_from_root_dir() {
            Ok(Some(l)) => l.trim_end().to_string(),
            _ => self.fs.volume_label().trim_end().to_string(),
        }
    }

    /// `XXXX-XXXX`, as `UUID=` in fstab spells a FAT volume id.
    pub fn uuid(&self) -> String {
        let id = self.fs.volume_id();
        format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)
    }

    pub fn fat_type(&self) -> &'static str {
        match self.fs.fat_type() {
            fatfs::FatType::Fat12 => "FAT12",
            fatfs::FatType::Fat16 => "FAT16",
            fatfs::FatType::Fat32 => "FAT32",
        }
    }

    /// (total bytes, free bytes) of the data area.
    pub fn space(&self) -> io::Result<(u64, u64)> {
        let s = self.fs.stats()?;
        let c = u64::from(s.cluster_size());
        // Two 32-bit factors: the products fit 64 bits.
        let bytes = |n: u32| {
            u64::from(n)
                .checked_mul(c)
                .ok_or_else(|| io::Error::other("cluster count times cluster size overflows"))
        };
        Ok((bytes(s.total_clusters())?, bytes(s.free_clusters())?))
    }

    fn rel(path: &str) -> String {
        path.trim_matches('/').to_string()
    }

    /// Metadata of `path` (relative to the partition root); `None` if absent.
    pub fn stat(&self, path: &str) -> io::Result<Option<Stat>> {
        let rel = Self::rel(path);
        if rel.is_empty() {
            return Ok(Some(Stat::fat(FileType::Directory, 0, 0)));
        }
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p.to_string(), n.to_string()),
            None => (String::new(), rel.clone()),
        };
        let dir = if parent.is_empty() {
            self.fs.root_dir()
        } else {
            match self.fs.root_dir().open_dir(&parent) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        };
        for e in dir.iter() {
            let e = e?;
            if e.file_name().eq_ignore_ascii_case(&name) {
                let kind = if e.is_dir() {
                    FileType::Directory
                } else {
                    FileType::Regular
                };
                return Ok(Some(Stat::fat(
                    kind,
                    e.len(),
                    crate::clock::from_fat(e.modified()),
                )));
            }
        }
        Ok(None)
    }

    /// Entries of a directory as (name, stat), without `.` and `..`.
    pub fn list(&self, path: &str) -> io::Result<Vec<(String, Stat)>> {
        let rel = Self::rel(path);
        let dir = if rel.is_empty() {
            self.fs.root_dir()
        } else {
            self.fs.root_dir().open_dir(&rel)?
        };
        Ok(Self::entries(&dir, path)?
            .into_iter()
            .map(|(name, st, _)| (name, st))
            .collect())
    }

    /// Every entry of the volume as (path relative to its root, stat),
    /// parents before children. Iterative, and each directory is opened
    /// from its own entry (no path is resolved again), so the walk is
    /// linear in the entries however deep the tree; `Fat::open` proved the
    /// directories loop-free, so it ends.
    pub fn walk(&self) -> io::Result<Vec<(String, Stat)>> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), self.fs.root_dir())];
        while let Some((rel, dir)) = stack.pop() {
            for (name, st, sub) in Self::entries(&dir, &format!("/{rel}"))? {
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if let Some(d) = sub {
                    stack.push((path.clone(), d));
                }
                out.push((path, st));
            }
        }
        Ok(out)
    }

    /// The entries of an open directory (found at `path`, for messages),
    /// without `.` and `..`, each with its own handle when a directory.
    /// Names a path-based walk could not come back to are damage.
    fn entries<'a>(dir: &FatDir<'a>, path: &str) -> io::Result<Vec<Entry<'a>>> {
        let mut out = Vec::new();
        // Upper-cased long and short names already listed: fatfs finds an
        // entry by either, ignoring case (see `unusable_name`).
        let mut taken = std::collections::HashSet::new();
        for e in dir.iter() {
            let e = e?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            if name.is_empty() || name.contains(['/', '\0']) {
                return Err(unusable_name(path, &name, "is empty or holds '/' or NUL"));
            }
            let short = e.short_file_name().to_uppercase();
            let long = name.to_uppercase();
            if !taken.insert(long.clone()) || (short != long && !taken.insert(short)) {
                return Err(unusable_name(path, &name, "is listed twice"));
            }
            let kind = if e.is_dir() {
                FileType::Directory
            } else {
                FileType::Regular
            };
            let st = Stat::fat(kind, e.len(), crate::clock::from_fat(e.modified()));
            let sub = e.is_dir().then(|| e.to_dir());
            out.push((name, st, sub));
        }
        Ok(out)
    }

    /// Stream a file's content to `w`.
    pub fn read_to(&self, path: &str, w: &mut dyn Write) -> io::Result<u64> {
        let rel = Self::rel(path);
        let mut f = self.fs.root_dir().open_file(&rel).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                not_found(path)
            } else {
                e
            }
        })?;
        // fatfs stops at the end of the cluster chain even when the entry
        // claims more: a short chain is damage, not a short file.
        let size = self.stat(path)?.map_or(0, |s| s.size);
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                if total != size {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{path}: its directory entry says {size} bytes but its cluster chain holds {total} (a damaged FAT; fsck.fat repairs it)"
                        ),
                    ));
                }
                return Ok(total);
            }
            // `read` returns at most the buffer's length.
            let data = buf
                .get(..n)
                .ok_or_else(|| io::Error::other("read returned more than it was given"))?;
            w.write_all(data)?;
            total = total
                .checked_add(n as u64)
                .ok_or_else(|| io::Error::other("file longer than 2^64 bytes"))?;
        }
    }
}

impl Stat {
    fn fat(kind: FileType, size: u64, mtime: i64) -> Stat {
        Stat {
            kind,
            mode: FAT_MODE,
            uid: 0,
            gid: 0,
            size: if kind == FileType::Directory { 0 } else { size },
            mtime,
            nlink: 1,
            ino: 0,
            target: None,
            fs: "vfat",
        }
    }
}
