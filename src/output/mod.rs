//! Output files: written under a temporary name in the destination
//! directory and renamed only when complete, so no partial file ever
//! carries a final name. Large data is streamed.

pub mod bmap;
pub mod copy;
pub mod image;
pub mod xz;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file being written; becomes `dest` on [`Pending::persist`], and
/// disappears if dropped first (an error, or the process being killed
/// leaves only a `.rpiimg-partial-*` file, never a final name).
pub struct Pending {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

fn out_err(path: &Path, e: io::Error) -> Error {
    let hint = match e.kind() {
        io::ErrorKind::PermissionDenied => "; choose a writable directory with --out",
        io::ErrorKind::StorageFull => "; free some space or choose another --out",
        _ => "",
    };
    Error::Usage(format!("{}: {e}{hint}", path.display()))
}

impl Pending {
    pub fn new(dest: &Path) -> Result<Self> {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.rpiimg-partial-"))
            .tempfile_in(dir)
            .map_err(|e| out_err(dir, e))?;
        Ok(Pending {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flush to disk and give the file its final name. Without `force`, an
    /// existing file of that name is an error and stays untouched.
    pub fn persist(mut self, force: bool) -> Result<PathBuf> {
        let dest = self.dest.clone();
        self.tmp
            .as_file_mut()
            .flush()
            .map_err(|e| out_err(&dest, e))?;
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| out_err(&dest, e))?;
        // Temporary files are private; outputs are ordinary files.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.tmp.path(), std::fs::Permissions::from_mode(0o644))
                .map_err(|e| out_err(&dest, e))?;
        }
        if force {
            self.tmp
                .persist(&dest)
                .map_err(|e| out_err(&dest, e.error))?;
        } else {
            self.tmp.persist_noclobber(&dest).map_err(|e| {
                if e.error.kind() == io::ErrorKind::AlreadyExists {
                    Error::Usage(format!(
                        "{}: already exists; pass --force to overwrite it",
                        dest.display()
                    ))
                } else {
                    out_err(&dest, e.error)
                }
            })?;
        }
        Ok(dest)
    }
}

/// A small text output (checksums, bmap, manifest), written atomically.
pub fn write_text(dest: &Path, text: &str, force: bool) -> Result<PathBuf> {
    let mut p = Pending::new(dest)?;
    p.file()
        .write_all(text.as_bytes())
        .map_err(|e| out_err(dest, e))?;
    p.persist(force)
}

/// `sha256sum -c` line for a file in the same directory.
pub fn sha256_line(hex: &str, file: &Path) -> String {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{hex}  {name}\n")
}
