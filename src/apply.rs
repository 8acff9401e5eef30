//! Applying a plan to an image, through one edit transaction.

use crate::path::PathError;

use crate::error::{Error, Result};
use crate::ext4::write::{Content, Meta};
use crate::fs::edit::ImageEdit;
use crate::manifest::Recorded;
use crate::plan::{Change, Plan};

fn absent(e: &Error) -> bool {
    // ext4's path errors arrive as Error::Path too (one variant set).
    matches!(e, Error::Path(PathError::NotFound(_)))
}

fn parent(p: &str) -> Option<&str> {
    p.rsplit_once('/').map(|(a, _)| a).filter(|a| !a.is_empty())
}

fn ensure_parent(ed: &mut ImageEdit, p: &str) -> Result<()> {
    match parent(p) {
        Some(dir) if ed.is_dir(dir)? != Some(true) => ed.mkdir(dir, Meta::root(0o755), true),
        _ => Ok(()),
    }
}

fn on_fat(ed: &ImageEdit, p: &str) -> bool {
    ed.is_fat(p)
}

/// Apply one change. Owners and modes are skipped on FAT, which has none.
pub(crate) fn apply_change(ed: &mut ImageEdit, c: &Change) -> Result<()> {
    match c {
        Change::WriteFile {
            path,
            content,
            mode,
            uid,
            gid,
        } => {
            ensure_parent(ed, path)?;
            ed.write_file(
                path,
                Content::Bytes(content.clone()),
                Meta {
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                },
            )
        }
        Change::Mkdir {
            path,
            mode,
            uid,
            gid,
        } => {
            ed.mkdir(
                path,
                Meta {
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                },
                true,
            )?;
            if !on_fat(ed, path) {
                ed.chmod(path, *mode, false)?;
                ed.chown(path, *uid, *gid, false)?;
            }
            Ok(())
        }
        Change::Symlink { path, target } => {
            ensure_parent(ed, path)?;
            ed.symlink(path, target, 0, 0)
        }
        Change::Remove { path } => match ed.remove(path, false) {
            Err(e) if absent(&e) => Ok(()),
            r => r,
        },
        Change::RemoveTree { path } => match ed.remove(path, true) {
            Err(e) if absent(&e) => Ok(()),
            r => r,
        },
        Change::Rename { from, to } => {
            ensure_parent(ed, to)?;
            ed.rename(from, to)
        }
        Change::Chown {
            path,
            uid,
            gid,
            recursive,
        } => ed.chown(path, *uid, *gid, *recursive),
    }
}

/// Apply every change of the plan, in order; the first failure names the
/// step and the change.
pub(crate) fn apply(
    ed: &mut ImageEdit,
    plan: &Plan,
    progress: crate::progress::Progress,
) -> Result<Vec<Recorded>> {
    let mut task = progress.items(
        &format!("patch {}", plan.node),
        plan.changes().count() as u64,
    );
    let mut out = Vec::new();
    for s in &plan.steps {
        for c in &s.changes {
            apply_change(ed, c).map_err(|e| {
                Error::Usage(format!(
                    "{}: step \"{}\": {}: {e}",
                    plan.node,
                    s.intent,
                    c.describe()
                ))
            })?;
            out.push(Recorded::new(&s.intent, c));
            task.inc(1);
        }
    }
    task.finish();
    Ok(out)
}
