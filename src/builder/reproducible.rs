//! `build --check-reproducible`: the request built twice into temporary
//! folders inside each output folder, the second time with an empty
//! cache; identical outputs move to the output folders, a difference
//! fails naming the first differing file and byte range.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Node, Request};
use crate::error::{Error, Result};
use crate::image::Cache;
use crate::progress::Progress;

/// What was proved and kept, per output folder: (folder, files, images).
#[derive(Debug)]
pub(crate) struct Proved {
    pub dirs: Vec<(PathBuf, usize, Vec<String>)>,
    /// Raspberry Pi Imager lists written (`--imager-json`).
    pub imager_lists: Vec<PathBuf>,
}

pub(crate) fn check(cache: &Cache, progress: Progress, req: &Request) -> Result<Proved> {
    super::preflight::check(req)?;
    let finals = req.out_dirs();
    let _locks = super::lock_output_folders(&finals)?;
    // One scratch folder inside each output folder: the kept files are
    // renamed, never copied across filesystems.
    let mut scratch = Vec::new();
    let mut tracked = Vec::new();
    for d in &finals {
        let t = tempfile::Builder::new()
            .prefix(".rpiimg-reproducible.")
            .tempdir_in(d)
            .map_err(Error::host(d))?;
        tracked.push(crate::partial::track_path(t.path()));
        scratch.push(t);
    }
    let scratch_of = |d: &Path, side: &str| -> PathBuf {
        let i = finals.iter().position(|f| f == d).unwrap_or(0);
        scratch
            .get(i)
            .map(|t| t.path().join(side))
            .unwrap_or_else(|| d.join(side))
    };
    let first = finals
        .first()
        .ok_or_else(|| Error::Internal("no node to build".into()))?;
    let cold_dir = scratch_of(first, "cache");
    let cold = Cache::new(cold_dir);
    for (side, c) in [("a", cache), ("b", &cold)] {
        let r = Request {
            nodes: req
                .nodes
                .iter()
                .map(|n| Node {
                    profile: n.profile.clone(),
                    out_dir: scratch_of(&n.out_dir, side),
                })
                .collect(),
            force: false,
            // Its URLs name where the files are: written once they are kept.
            imager_json: false,
            ..req.clone()
        };
        super::build(c, progress, &r)?;
    }
    let mut proved = Vec::new();
    let mut plans = Vec::new();
    for d in &finals {
        let (a, b) = (scratch_of(d, "a"), scratch_of(d, "b"));
        let (na, nb) = (output_names(&a)?, output_names(&b)?);
        if na != nb {
            return Err(Error::NotReproducible(format!(
                "the two builds wrote different files into {}: {na:?} and {nb:?}",
                crate::output::display_path(d)
            )));
        }
        for n in &na {
            if let Some(range) = crate::output::first_difference(&a.join(n), &b.join(n))? {
                return Err(Error::NotReproducible(format!(
                    "{n} differs between two builds at bytes {}..{}, the first differing run{}",
                    range.0,
                    range.1,
                    if n.ends_with(".img") {
                        "; compare the two builds with `rpiimg diff` and `cmp -l` to find the field"
                    } else {
                        ""
                    }
                )));
            }
        }
        // Manifests last: a node's output set is complete when its
        // manifest exists.
        let mut order = na.clone();
        order.sort_by_key(|n| n.ends_with(".manifest.json"));
        if !req.force {
            if let Some(n) = order.iter().find(|n| d.join(n).exists()) {
                return Err(Error::Exists(format!(
                    "{} exists; pass --force to replace it",
                    crate::output::display_path(&d.join(n))
                )));
            }
        }
        plans.push((a, d.clone(), order));
        let images = na.iter().filter(|n| n.ends_with(".img")).cloned().collect();
        proved.push((d.clone(), na.len(), images));
    }
    for (a, d, order) in &plans {
        keep(a, d, order)?;
    }
    let mut imager_lists = Vec::new();
    if req.imager_json {
        for d in &finals {
            let list = d.join(crate::output::imager::LIST_NAME);
            imager_lists.push(crate::output::imager::write(d, &list, true)?);
        }
    }
    drop(tracked);
    Ok(Proved {
        dirs: proved,
        imager_lists,
    })
}

impl fmt::Display for Proved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (d, files, images) in &self.dirs {
            writeln!(
                f,
                "reproducible: {files} files byte-identical across two builds (the second with an empty cache), kept in {}",
                crate::output::display_path(d)
            )?;
            for n in images {
                writeln!(f, "    {}", crate::output::display_path(&d.join(n)))?;
            }
        }
        for list in &self.imager_lists {
            writeln!(
                f,
                "Raspberry Pi Imager list (custom repository): {}",
                crate::output::display_path(list)
            )?;
        }
        Ok(())
    }
}

/// Every output file under `d`, by path relative to it (the
/// management-host bundle is a subfolder), sorted.
fn output_names(d: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = d.join(&rel);
        for e in std::fs::read_dir(&dir).map_err(Error::host(&dir))? {
            let e = e.map_err(Error::host(&dir))?;
            if e.file_name() == crate::lock::OUT_LOCK {
                continue;
            }
            let r = rel.join(e.file_name());
            if e.file_type().map_err(Error::host(&dir))?.is_dir() {
                stack.push(r);
            } else {
                v.push(r.to_string_lossy().into_owned());
            }
        }
    }
    v.sort();
    Ok(v)
}

/// Moves the files `order` names from `from` into `final_dir`, all or
/// nothing, as output::image::Staged::commit does for one build: the old
/// manifests go first, so a kill halfway never pairs new images with an
/// old manifest, and a failed rename takes back the ones done.
fn keep(from: &Path, final_dir: &Path, order: &[String]) -> Result<()> {
    for n in order.iter().filter(|n| n.ends_with(".manifest.json")) {
        let dest = final_dir.join(n);
        match std::fs::remove_file(&dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::host(&dest)(e)),
        }
    }
    let mut done: Vec<PathBuf> = Vec::new();
    for n in order {
        let dest = final_dir.join(n);
        let kept = crate::output::fault(&format!("keep-{}", done.len() + 1))
            .and_then(|()| match dest.parent() {
                Some(parent) => std::fs::create_dir_all(parent),
                None => Ok(()),
            })
            .and_then(|()| std::fs::rename(from.join(n), &dest));
        if let Err(e) = kept {
            for p in &done {
                let _ = std::fs::remove_file(p);
            }
            return Err(Error::host(&dest)(e));
        }
        done.push(dest);
    }
    Ok(())
}
