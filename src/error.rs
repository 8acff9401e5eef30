//! The crate-level error: one variant per layer, each message naming the
//! problem and what to do about it.

use crate::ext4::Ext4Error;
use crate::image::ImageError;
use crate::partition::PartitionError;
use crate::path::PathError;

impl From<Ext4Error> for Error {
    fn from(e: Ext4Error) -> Self {
        match e {
            Ext4Error::Path(p) => Error::Path(p),
            e => Error::Ext4(e),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// Never holds a path error: those become [`Error::Path`] (see `From`).
    #[error(transparent)]
    Ext4(Ext4Error),
    #[error("boot partition (FAT, partition {part}): {detail}")]
    Fat { part: u32, detail: String },
    #[error("{0}")]
    Layout(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{path}: {size} bytes is more than the {} MiB rpiimg reads into memory; this file is not what rpiimg expects there (a damaged or hostile image?)", cap >> 20)]
    TooLarge { path: String, size: u64, cap: u64 },
    #[error("{path}: {source}")]
    Damaged { path: String, source: Ext4Error },
    #[error("{0}")]
    Usage(String),
    /// The one message of several lines: one per validation error.
    #[error("{path}: invalid profile:\n{}", errors.iter().map(|e| format!("  {}", crate::term::defuse(e))).collect::<Vec<_>>().join("\n"))]
    InvalidProfile { path: String, errors: Vec<String> },
    /// Every reason `flash` will not write, one per line.
    #[error("refusing to flash, nothing was written:\n{}", reasons.iter().map(|e| format!("  {}", crate::term::defuse(e))).collect::<Vec<_>>().join("\n"))]
    FlashRefused { reasons: Vec<String> },
    #[error("{path}: {source}")]
    Host {
        path: String,
        source: std::io::Error,
    },
    /// Host I/O that says what it tried: `{path}: cannot {op}: why; fix`.
    #[error("{path}: cannot {op}: {source}{}", io_hint(source))]
    HostOp {
        path: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("writing output: {0}")]
    Output(std::io::Error),
}

/// What usually fixes a host I/O error of this kind.
fn io_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => "; check the path",
        std::io::ErrorKind::PermissionDenied => "; check its permissions, or run as a user who may",
        std::io::ErrorKind::StorageFull => "; free space there",
        _ => "",
    }
}

impl Error {
    /// `map_err` for host I/O on `path`: the error names the file.
    pub fn host(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
        move |source| Error::Host {
            path: path.display().to_string(),
            source,
        }
    }

    /// `map_err` for host I/O on `path` that names the operation
    /// (`"open the image"`, `"create the output folder"`).
    pub fn host_op<'a>(
        path: &'a std::path::Path,
        op: &'static str,
    ) -> impl Fn(std::io::Error) -> Error + 'a {
        move |source| Error::HostOp {
            path: path.display().to_string(),
            op,
            source,
        }
    }

    /// The message as the terminal gets it: nothing in it can act on the
    /// terminal or start a line of its own (image-derived names inside
    /// were escaped with [`crate::term::escape`] where they were formed;
    /// this is the last line of defence). Only an invalid profile's list
    /// keeps its line breaks, one per finding.
    pub fn for_terminal(&self) -> String {
        match self {
            Error::InvalidProfile { .. } | Error::FlashRefused { .. } => self.to_string(),
            e => crate::term::defuse(&e.to_string()),
        }
    }

    /// Name the image path on whose way a damaged structure was met (an
    /// ext4 error by itself names only an inode or block).
    pub fn in_path(self, path: &str) -> Error {
        match self {
            Error::Ext4(source @ (Ext4Error::Corrupt { .. } | Ext4Error::Io(_))) => {
                Error::Damaged {
                    path: crate::term::escape(path),
                    source,
                }
            }
            e => e,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
