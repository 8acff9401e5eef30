//! Errors of the ext4 engine.
//!
//! Corrupt input (a structure that violates the format) and unsupported
//! input (a valid filesystem using something this engine does not handle)
//! call for different fixes, so they are different variants.

use std::fmt;

use super::features::{FeatureSet, Gate};

/// Where in the filesystem a problem was found, for messages a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Superblock,
    GroupDesc(u32),
    Bitmap { group: u32 },
    Inode(u32),
    Block { ino: u32, block: u64 },
    Path(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Superblock => write!(f, "superblock"),
            Location::GroupDesc(g) => write!(f, "group descriptor {g}"),
            Location::Bitmap { group } => write!(f, "bitmap of group {group}"),
            Location::Inode(i) => write!(f, "inode {i}"),
            Location::Block { ino, block } => write!(f, "block {block} of inode {ino}"),
            Location::Path(p) => write!(f, "{p}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("ext4 filesystem is corrupt: {what} ({at}); run `e2fsck -f` on the partition or use an intact image")]
    Corrupt { what: String, at: Location },

    #[error("unsupported ext4 filesystem: {what}; {hint}")]
    Unsupported { what: String, hint: String },

    /// A gate refused features the superblock sets, named from the table
    /// in `ext4/features.rs`.
    #[error("unsupported ext4 filesystem: {}; {}", .gate.what(.features), .gate.hint())]
    Features { gate: Gate, features: FeatureSet },

    #[error(transparent)]
    Path(#[from] crate::path::PathError),

    #[error("{path}: file exists")]
    Exists { path: String },

    #[error("{path}: directory not empty")]
    NotEmpty { path: String },

    #[error("{path}: {why}")]
    Invalid { path: String, why: String },

    #[error("no space left in the ext4 filesystem: {what}; free space in the image or enlarge the root partition first")]
    NoSpace { what: String },

    #[error("I/O error on the ext4 filesystem: {0}")]
    Io(#[from] std::io::Error),
}

impl Ext4Error {
    pub fn corrupt(what: impl Into<String>, at: Location) -> Self {
        Ext4Error::Corrupt {
            what: what.into(),
            at,
        }
    }

    pub(crate) fn unsupported(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Ext4Error::Unsupported {
            what: what.into(),
            hint: hint.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Ext4Error>;
