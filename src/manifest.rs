//! The build manifest, `<host>.manifest.json`: what a node image contains
//! and how it was made. `build` writes it last (a node's output set is
//! complete once it exists); `verify --manifest` checks every recorded
//! change against the image; `imager-list` reads the image's facts.
//!
//! Typed and versioned: a reader refuses a manifest from a newer rpiimg
//! rather than misread it. Names in it are file names, never host paths,
//! so a manifest is the same on every machine and moves with its files.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::{Change, OsFlavour};

/// The version this rpiimg writes. Manifests from before the field was
/// written read as version 0 (the same shape).
pub(crate) const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    #[serde(default)]
    pub manifest_version: u32,
    /// The rpiimg version that built the image.
    pub rpiimg: String,
    /// The node's hostname.
    pub node: String,
    /// The time stamped on what the build wrote (`SOURCE_DATE_EPOCH` or the
    /// base's), seconds since 1970; never the clock.
    #[serde(default)]
    pub build_time: Option<i64>,
    /// The node profile's file name.
    pub profile: String,
    pub os: OsFlavour,
    pub base: BaseRecord,
    pub image: ImageRecord,
    /// The profile as resolved (extends applied), secrets as `<redacted>`.
    pub resolved_profile: serde_json::Value,
    pub warnings: Vec<String>,
    /// Every change made, in order.
    pub changes: Vec<Recorded>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BaseRecord {
    /// File name of the base image.
    pub path: String,
    /// sha256 of the base file, when it was computed (pinned, or `.xz`).
    pub sha256: Option<String>,
}

/// The node's output files (names in the manifest's directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub image: String,
    pub size: u64,
    pub sha256: String,
    pub bmap: Option<String>,
    pub xz: Option<String>,
    pub xz_sha256: Option<String>,
}

/// One change as applied by `build` and checked by `verify`: the change,
/// the plan step it belongs to, and for a written file its content's sha256
/// (the content itself is not recorded).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Recorded {
    #[serde(default)]
    pub intent: String,
    pub change: Change,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Recorded {
    pub(crate) fn new(intent: &str, change: &Change) -> Self {
        Recorded {
            intent: intent.to_string(),
            sha256: change.content_sha256(),
            change: change.clone(),
        }
    }
}

impl Manifest {
    /// The manifest's text: pretty JSON and a final newline.
    pub(crate) fn to_text(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self).map_err(|e| Error::Output(e.into()))? + "\n")
    }

    /// Read a manifest; `file` names it in errors.
    pub(crate) fn parse(text: &str, file: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_str(text)
            .map_err(|e| Error::BadFile(format!("{file}: not an rpiimg manifest: {e}")))?;
        if m.manifest_version > MANIFEST_VERSION {
            return Err(Error::Unsupported(format!(
                "{file}: manifest version {} is newer than this rpiimg reads ({MANIFEST_VERSION}); use rpiimg {} or newer",
                m.manifest_version, m.rpiimg
            )));
        }
        Ok(m)
    }
}
