//! What a build checks before any work, for every node at once: no two
//! nodes of one host into one folder, every output folder writable, no
//! output already there (without `--force`), and, once the bases are
//! open, room for the images. A refusal names every output it concerns,
//! so one run tells all, and nothing has been written.

use std::path::{Path, PathBuf};

use super::bases::BaseSet;
use super::Request;
use crate::error::{Error, Result};
use crate::progress::human_bytes;

/// Everything that can be checked without the bases.
pub(crate) fn check(req: &Request) -> Result<()> {
    check_hosts(req)?;
    for d in req.out_dirs() {
        writable(&d)?;
    }
    if !req.force {
        let existing = existing_outputs(req);
        if !existing.is_empty() {
            let n = existing.len();
            let shown: Vec<String> = existing
                .iter()
                .take(8)
                .map(|p| crate::output::display_path(p))
                .collect();
            let more = if n > shown.len() {
                format!(" and {} more", n - shown.len())
            } else {
                String::new()
            };
            return Err(Error::Exists(format!(
                "{n} output file(s) of this build already exist: {}{more}; pass --force to replace them, or build into another --out (nothing was written)",
                shown.join(", ")
            )));
        }
    }
    Ok(())
}

/// The outputs of the request that exist now: each node's files and its
/// cluster's management-host bundle.
fn existing_outputs(req: &Request) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for n in &req.nodes {
        let p = &n.profile;
        let names = crate::output::image::output_names(
            &p.hostname,
            p.output.bmap && !req.no_bmap,
            req.xz || p.output.xz,
        );
        v.extend(
            names
                .iter()
                .map(|f| n.out_dir.join(f))
                .filter(|f| f.symlink_metadata().is_ok()),
        );
        let bundle = super::bundle::bundle_dir(&n.out_dir, p);
        if !v.contains(&bundle) && has_files(&bundle) {
            v.push(bundle);
        }
    }
    v.sort();
    v
}

/// Whether a folder holds any file (the bundle is written whole: one
/// file of an earlier one is enough to refuse).
fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut rd| {
        rd.any(|e| e.is_ok_and(|e| e.file_name() != std::ffi::OsStr::new(crate::lock::OUT_LOCK)))
    })
}

/// The output folder can be written: it exists as a folder we may write,
/// or the nearest folder above it that exists can take it.
fn writable(dir: &Path) -> Result<()> {
    let mut at = dir;
    loop {
        match at.metadata() {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(Error::HostUnfit(format!(
                "output folder {}: {} is not a folder; choose another --out (nothing was written)",
                crate::output::display_path(dir),
                crate::output::display_path(at)
            )))
            }
            Err(_) => match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                _ => return Ok(()),
            },
        }
    }
    let access = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
    rustix::fs::access(at, access)
        .map_err(|e| out_dir_error(dir, &std::io::Error::from_raw_os_error(e.raw_os_error())))
}

/// An output folder that cannot be made or written, with the fix.
pub(crate) fn out_dir_error(dir: &Path, e: &std::io::Error) -> Error {
    Error::HostUnfit(format!(
        "output folder {}: cannot write there ({e}); choose a writable folder with --out or [output] dir (nothing was written)",
        crate::output::display_path(dir)
    ))
}

/// Room for the images, where it can be known: a node image takes up to
/// its base's allocated bytes (it is sparse where the base is), plus its
/// `.xz`. A folder on the base's own filesystem is not judged: a reflink
/// copy there shares the base's blocks.
pub(crate) fn check_space(req: &Request, bases: &BaseSet) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    'dirs: for d in req.out_dirs() {
        let Ok(out) = d.metadata() else { continue };
        let mut need: u64 = 0;
        let mut nodes = 0u32;
        for (k, n) in req.nodes.iter().enumerate() {
            let Some(base) = bases.of(k) else { continue };
            if n.out_dir != d {
                continue;
            }
            let Ok(m) = base.image.file.metadata() else {
                continue;
            };
            if m.dev() == out.dev() {
                continue 'dirs;
            }
            let xz = if req.xz || n.profile.output.xz {
                // Compressed, about the size of the base's .xz (or a third).
                std::fs::metadata(&base.image.input)
                    .map(|x| x.len())
                    .unwrap_or(m.blocks().saturating_mul(512) / 3)
            } else {
                0
            };
            need = need
                .saturating_add(m.blocks().saturating_mul(512))
                .saturating_add(xz);
            nodes += 1;
        }
        let Ok(vfs) = rustix::fs::statvfs(&d) else {
            continue;
        };
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        if need > free {
            return Err(Error::HostUnfit(format!(
                "output folder {}: {} free, the build needs up to {} for {nodes} node image(s); free space there or choose another --out (nothing was written)",
                crate::output::display_path(&d),
                human_bytes(free),
                human_bytes(need)
            )));
        }
    }
    Ok(())
}

/// Two nodes of one host into one folder would overwrite each other.
fn check_hosts(req: &Request) -> Result<()> {
    let mut seen: Vec<&super::Node> = Vec::new();
    for n in &req.nodes {
        if let Some(other) = seen
            .iter()
            .find(|o| o.profile.hostname == n.profile.hostname && o.out_dir == n.out_dir)
        {
            return Err(Error::Usage(format!(
                "{} and {} both build host {} into {}: build them in separate runs, or give them separate output folders ([output] dir in each cluster's profile, or --out per run)",
                other.profile.source.display(),
                n.profile.source.display(),
                n.profile.hostname,
                crate::output::display_path(&n.out_dir)
            )));
        }
        seen.push(n);
    }
    Ok(())
}
