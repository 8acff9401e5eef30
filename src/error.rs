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
    /// The command line or a profile asks for what cannot be done.
    #[error("{0}")]
    Usage(String),
    /// Outputs already there, kept (without `--force`).
    #[error("{0}")]
    Exists(String),
    /// `build --check-reproducible`: two builds differ.
    #[error("not reproducible: {0}")]
    NotReproducible(String),
    /// The cluster's key store is missing, unsafe or unreadable.
    #[error("{0}")]
    KeyStore(String),
    /// A file rpiimg reads beside an image or output (a `.bmap`, a
    /// `.sha256`, a node manifest) is damaged or belongs to another build.
    #[error("{0}")]
    BadFile(String),
    /// An input uses what this rpiimg does not handle (a newer manifest,
    /// flashing on another OS); ext4's own are [`Ext4Error::Unsupported`].
    #[error("{0}")]
    Unsupported(String),
    /// A host folder cannot take the outputs: not a folder, not writable,
    /// not enough free space (the checks before any work).
    #[error("{0}")]
    HostUnfit(String),
    /// A fault of rpiimg itself (a panicked worker): a bug to report.
    #[error("internal error (please report it): {0}")]
    Internal(String),
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

/// What kind of failure an error is, for scripts (`--json` error objects)
/// and tests: stable names, unlike the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A damaged image, partition table or filesystem.
    InputDamaged,
    /// A real image using what rpiimg does not read or write.
    Unsupported,
    /// The command line or a profile (invalid profiles too).
    Usage,
    /// Outputs exist (pass --force).
    Exists,
    NotReproducible,
    KeyStore,
    /// `flash` refused its targets.
    DeviceRefused,
    /// Reading or writing host files.
    HostIo,
    Internal,
}

impl Error {
    /// The kind of this failure.
    pub fn kind(&self) -> Kind {
        use crate::ext4::Ext4Error as E;
        match self {
            Error::Image(
                crate::image::ImageError::Checksum { .. } | crate::image::ImageError::BadPin(_),
            ) => Kind::Usage,
            Error::Image(
                crate::image::ImageError::Open { .. }
                | crate::image::ImageError::Io { .. }
                | crate::image::ImageError::Cache { .. }
                | crate::image::ImageError::CacheWrite { .. }
                | crate::image::ImageError::NotAFile { .. },
            ) => Kind::HostIo,
            Error::Image(_)
            | Error::Partition(_)
            | Error::Fat { .. }
            | Error::Damaged { .. }
            | Error::TooLarge { .. }
            | Error::Layout(_)
            | Error::BadFile(_) => Kind::InputDamaged,
            Error::Ext4(E::Unsupported { .. } | E::Features { .. }) | Error::Unsupported(_) => {
                Kind::Unsupported
            }
            Error::Ext4(_) => Kind::InputDamaged,
            Error::Path(_) | Error::Usage(_) | Error::InvalidProfile { .. } => Kind::Usage,
            Error::Exists(_) => Kind::Exists,
            Error::NotReproducible(_) => Kind::NotReproducible,
            Error::KeyStore(_) => Kind::KeyStore,
            Error::FlashRefused { .. } => Kind::DeviceRefused,
            Error::Host { .. } | Error::HostOp { .. } | Error::HostUnfit(_) | Error::Output(_) => {
                Kind::HostIo
            }
            Error::Internal(_) => Kind::Internal,
        }
    }

    /// The exit status: 1 for a check that ran and failed (two builds
    /// differ), 2 for everything that stopped the command.
    pub fn exit_status(&self) -> i32 {
        match self.kind() {
            Kind::NotReproducible => 1,
            _ => 2,
        }
    }

    /// The error as a JSON object for `--json` runs:
    /// `{"error": {"kind": "...", "message": "..."}}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({"error": {"kind": self.kind(), "message": self.to_string()}}).to_string()
    }

    /// `map_err` for host I/O on `path`: the error names the file.
    pub fn host(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
        move |source| Error::Host {
            path: path.display().to_string(),
            source,
        }
    }

    /// `map_err` for host I/O on `path` that names the operation
    /// (`"open the image"`, `"create the output folder"`).
    pub(crate) fn host_op<'a>(
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
    pub(crate) fn in_path(self, path: &str) -> Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_exit_statuses_and_json() {
        let e = Error::NotReproducible("ost04.img differs".into());
        assert_eq!((e.kind(), e.exit_status()), (Kind::NotReproducible, 1));
        let e = Error::KeyStore("open".into());
        assert_eq!((e.kind(), e.exit_status()), (Kind::KeyStore, 2));
        let v: serde_json::Value =
            serde_json::from_str(&Error::Exists("out/x.img exists".into()).to_json()).unwrap();
        assert_eq!(v["error"]["kind"], "exists");
        assert_eq!(v["error"]["message"], "out/x.img exists");
        let e = Error::from(crate::image::ImageError::BadPin("x".into()));
        assert_eq!(e.kind(), Kind::Usage);
    }
}
