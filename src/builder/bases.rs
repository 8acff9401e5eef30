//! The bases of a build: which image each profile builds from (its
//! `base.image`, or the one the command line names), each opened
//! (hashed, and for `.xz` decompressed) once however many nodes use it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::view::SystemView;
use crate::image::{self, Cache, OpenedImage};
use crate::partition;
use crate::plan::{make_plan, ImageFacts, Plan};
use crate::profile::Profile;
use crate::progress::Progress;

/// A base image named on the command line instead of the profiles' own.
#[derive(Debug, Clone, Default)]
pub(crate) struct BaseChoice {
    /// `--base`: this image for every node.
    pub path: Option<PathBuf>,
    /// `--sha256`: its pin (over the profile's `base.sha256`).
    pub sha256: Option<String>,
}

/// Which base image a profile builds from, with its pin.
pub(crate) fn source_of(p: &Profile, over: &BaseChoice) -> Result<(PathBuf, Option<String>)> {
    let path = match &over.path {
        Some(b) => b.clone(),
        None => {
            if p.base.image.as_os_str().is_empty() {
                return Err(Error::Usage(format!(
                    "{}: no base.image; set it in the profile or pass --base IMAGE",
                    p.source.display()
                )));
            }
            p.resolve(&p.base.image)
        }
    };
    if !path.exists() {
        let from = match &over.path {
            Some(_) => "--base names".to_string(),
            None => format!("{} names (base.image)", p.source.display()),
        };
        let hint = if path.to_string_lossy().contains("demo/base.img") {
            "; run scripts/demo once to make the demo base".to_string()
        } else if over.path.is_some() {
            "; check the path".to_string()
        } else {
            "; fix base.image, or pass --base IMAGE".to_string()
        };
        return Err(Error::Usage(format!(
            "base image {} does not exist ({from} it){hint}",
            crate::output::display_path(&path)
        )));
    }
    let pin = over.sha256.clone().or_else(|| {
        if over.path.is_some() {
            None
        } else {
            p.base.sha256.clone()
        }
    });
    Ok((path, pin))
}

/// The time a build from this base stamps (see `crate::clock`).
pub(crate) fn build_time(base: &OpenedImage) -> Result<i64> {
    let table = partition::read(&base.file, base.size)?;
    let (view, _) = SystemView::open(base, &table)?;
    crate::clock::build_time(view.ext4().superblock().newest_time())
}

/// The plan of `p` on `base`, and the base's facts it was made from.
pub(crate) fn plan_for(p: &Profile, base: &OpenedImage) -> Result<(Plan, ImageFacts)> {
    let table = partition::read(&base.file, base.size)?;
    let (view, _) = SystemView::open(base, &table)?;
    let facts = ImageFacts::from_view(&view)?;
    let plan = make_plan(p, &facts).map_err(|e| Error::Usage(e.to_string()))?;
    Ok((plan, facts))
}

/// Which file `path` is: its canonical path (links and `..` resolved). A
/// path that cannot be resolved stays as given, and image::open reports why.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// One base image of a run, opened once however many nodes build from it.
pub(crate) struct Base {
    /// The base's identity: the file (its canonical path, so
    /// `profiles/../demo/x.img` and `demo/x.img` are one base) and its pin.
    key: (PathBuf, Option<String>),
    pub image: OpenedImage,
    /// The time a build from it stamps (see `crate::clock`).
    pub time: i64,
    /// That its bytes are its cache entry's sealed ones, proved once
    /// for all the nodes built from it.
    pub proof: crate::output::image::BaseProof,
}

/// The bases of the profiles of a run, keyed by identity, and which one
/// each profile builds from.
pub(crate) struct BaseSet {
    bases: Vec<Base>,
    of_node: Vec<usize>,
}

impl BaseSet {
    pub(crate) fn open(
        profiles: &[&Profile],
        over: &BaseChoice,
        cache: &Cache,
        progress: Progress,
    ) -> Result<BaseSet> {
        let mut set = BaseSet {
            bases: Vec::new(),
            of_node: Vec::new(),
        };
        for p in profiles {
            let (path, pin) = source_of(p, over)?;
            let key = (identity(&path), pin);
            let i = match set.bases.iter().position(|b| b.key == key) {
                Some(i) => i,
                None => {
                    let image = image::open(&path, key.1.as_deref(), cache, progress)?;
                    let time = build_time(&image)?;
                    let drop = image
                        .input_sha256
                        .as_deref()
                        .map(|sha| cache.drop_command(sha))
                        .unwrap_or_default();
                    let proof = crate::output::image::BaseProof::new(&image, drop);
                    set.bases.push(Base {
                        key,
                        image,
                        time,
                        proof,
                    });
                    set.bases.len() - 1
                }
            };
            set.of_node.push(i);
        }
        Ok(set)
    }

    /// The base of the `k`-th node.
    pub(crate) fn of(&self, k: usize) -> Option<&Base> {
        self.of_node.get(k).and_then(|&i| self.bases.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_base_file_is_one_identity_however_it_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("profiles/sub")).unwrap();
        std::fs::write(d.path().join("base.img"), b"x").unwrap();
        std::os::unix::fs::symlink("../base.img", d.path().join("profiles/link.img")).unwrap();
        let plain = identity(&d.path().join("base.img"));
        assert_eq!(
            identity(&d.path().join("profiles/sub/../../base.img")),
            plain
        );
        assert_eq!(identity(&d.path().join("profiles/link.img")), plain);
        std::fs::write(d.path().join("other.img"), b"x").unwrap();
        assert_ne!(identity(&d.path().join("other.img")), plain);
        let missing = d.path().join("profiles/../missing.img");
        assert_eq!(identity(&missing), missing);
    }
}
