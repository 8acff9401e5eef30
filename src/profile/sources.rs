//! The host files a profile names (`[[files]]` sources, overlay
//! directories and their `mgmt/` templates), read once when the profile is
//! loaded.
//!
//! Planning is a pure function of the profile and the image: reading the
//! host here, and nowhere later, means a plan never touches the host's
//! filesystem, a missing or refused file is reported with the profile that
//! named it before any image is opened, and every node of a build sees the
//! same bytes. `crate::hostfile` does the bounded, containment-checked
//! reads.

use std::path::{Component, Path};

use super::{invalid, Profile, ProfileError};
use crate::hostfile;

/// One file of an overlay directory, by its path in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayFile {
    /// Absolute path in the image (`.j2` removed from templates).
    pub target: String,
    pub body: OverlayBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayBody {
    /// A `.j2` file, rendered with the node's context when planning.
    Template(String),
    /// Any other file, copied as it is.
    Data(Vec<u8>),
}

/// Reads every `[[files]]` source (into `ExtraFile::data`) and every
/// overlay directory (into `Profile::overlay_files`). A `[[files]]` entry
/// that gives both or neither of content and source is left to
/// `validate`, which names the mistake.
pub(crate) fn read(p: &mut Profile) -> Result<(), ProfileError> {
    let profile = p.source.clone();
    for i in 0..p.files.len() {
        let Some(f) = p.files.get(i) else { break };
        let (None, Some(s)) = (&f.content, &f.source) else {
            continue;
        };
        linked_dir(p, s, false).map_err(|e| invalid(&profile, format!("files {}: {e}", f.path)))?;
        let path = p.resolve(s);
        // A link is followed only within its own directory.
        let is_link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        let inside = is_link.then(|| path.parent()).flatten();
        let data = hostfile::read(&path, inside, hostfile::DATA_CAP)
            .map_err(|e| invalid(&profile, format!("files {}: {e}", f.path)))?;
        if let Some(f) = p.files.get_mut(i) {
            f.data = Some(data);
        }
    }
    let mut out = Vec::new();
    let mut mgmt = std::collections::BTreeMap::new();
    for dir in &p.overlays {
        linked_dir(p, dir, true).map_err(|e| invalid(&profile, e))?;
        let root = p.resolve(dir);
        walk(&root, &root, &mut out).map_err(|e| invalid(&profile, e))?;
        let templates = root.join("mgmt");
        if let Ok(m) = std::fs::symlink_metadata(&templates) {
            if !m.is_dir() {
                return Err(invalid(
                    &profile,
                    format!(
                        "overlay {}: not a directory (a link is not followed)",
                        templates.display()
                    ),
                ));
            }
            // Walked from the overlay's root, so links inside may point
            // anywhere in the overlay, as for the image's files.
            let mut found = Vec::new();
            walk(&root, &templates, &mut found).map_err(|e| invalid(&profile, e))?;
            for f in found {
                // Only templates: a mgmt/ file without .j2 is not used.
                if let (OverlayBody::Template(src), Some(name)) =
                    (f.body, f.target.strip_prefix("/mgmt/"))
                {
                    mgmt.entry(name.to_string()).or_insert(src);
                }
            }
        }
    }
    p.overlay_files = out;
    p.mgmt_templates = mgmt;
    Ok(())
}

/// Refuses a relative path the profile names when one of its directories
/// below the profile's own directory (and with `whole`, the path itself) is
/// a symbolic link: the link could lead anywhere on the host (an overlay
/// `ov -> /etc`, a source `keys/dir -> /root/.ssh`), and the profile would
/// copy what it never named. An absolute path is the profile's own choice.
fn linked_dir(p: &Profile, named: &Path, whole: bool) -> Result<(), String> {
    if named.is_absolute() {
        return Ok(());
    }
    let parts: Vec<Component> = named.components().collect();
    let upto = if whole {
        parts.len()
    } else {
        parts.len().saturating_sub(1)
    };
    let mut at = p.dir().to_path_buf();
    for c in parts.iter().take(upto) {
        at.push(c);
        if matches!(c, Component::Normal(_))
            && std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
        {
            return Err(format!(
                "{} is a symbolic link: rpiimg does not follow links in the directories a profile names (they could lead anywhere on the host); name the real directory instead",
                at.display()
            ));
        }
    }
    Ok(())
}

/// The files under `dir`, in name order, directories depth-first.
fn walk(root: &Path, dir: &Path, out: &mut Vec<OverlayFile>) -> Result<(), String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("overlay {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(root).map_err(|e| e.to_string())?;
        let target = format!("/{}", rel.to_string_lossy().replace('\\', "/"));
        // overlay/mgmt/ holds templates for the management host's files
        // (`rpiimg cluster`), not files for the image.
        if dir == root && e.file_name() == "mgmt" {
            continue;
        }
        let kind = e
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_dir() {
            // Directories come with the files in them; a link to a
            // directory is not followed (see hostfile).
            walk(root, &path, out)?;
        } else if let Some(t) = target.strip_suffix(".j2") {
            let src = hostfile::read_text(&path, Some(root), hostfile::TEXT_CAP)
                .map_err(|e| format!("overlay {e}"))?;
            out.push(OverlayFile {
                target: t.to_string(),
                body: OverlayBody::Template(src),
            });
        } else {
            let data = hostfile::read(&path, Some(root), hostfile::DATA_CAP)
                .map_err(|e| format!("overlay {e}"))?;
            out.push(OverlayFile {
                target,
                body: OverlayBody::Data(data),
            });
        }
    }
    Ok(())
}
