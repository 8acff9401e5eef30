//! Loading what a command works from: profiles (validated, with their
//! cluster's key store) and base images (opened once per run).

use std::path::{Path, PathBuf};

use crate::cli::BaseArg;
use crate::error::{Error, Result};
use crate::fs::view::SystemView;
use crate::image::{self, Cache, OpenedImage};
use crate::partition;
use crate::plan::{make_plan, ImageFacts, Plan};
use crate::profile::{self, Profile};
use crate::progress::Progress;

/// Load and validate a profile: errors stop here, before any image I/O.
pub(super) fn load_profile(name: &str, progress: Progress) -> Result<Profile> {
    load_profile_with(name, progress, true)
}

/// The profile's validation findings; an error when any is an error.
pub(super) fn check_valid(p: &Profile, path: &std::path::Path) -> Result<Vec<profile::Finding>> {
    let findings = profile::validate(p);
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.error)
        .map(ToString::to_string)
        .collect();
    if !errors.is_empty() {
        return Err(Error::InvalidProfile {
            path: path.display().to_string(),
            errors,
        });
    }
    Ok(findings)
}

/// Attach the cluster's secret, making its key store when missing.
pub(super) fn attach_store(p: &mut Profile, progress: Progress) -> Result<()> {
    let dir = crate::keystore::store_dir(p.dir(), &p.cluster.name);
    let (secret, made) = crate::keystore::open_or_create(&dir, &p.cluster.name)?;
    if made && !progress.is_quiet() {
        eprintln!(
            "rpiimg: made the key store of cluster {} in {} (keep it and back it up: rebuilds derive the same password salts and host keys from it)",
            p.cluster.name,
            dir.display()
        );
    }
    p.secret = Some(secret);
    Ok(())
}

/// Load, validate and attach the cluster's secret; with `create`, a
/// missing key store is made (plan, build), else it must exist (verify
/// recomputes hashes and keys the build derived).
pub(super) fn load_profile_with(name: &str, progress: Progress, create: bool) -> Result<Profile> {
    let path = profile::find(name).map_err(|e| Error::Usage(e.to_string()))?;
    let mut p = profile::load(&path).map_err(|e| Error::Usage(e.to_string()))?;
    // Validate before the key store is touched: the cluster name becomes
    // part of its path, and an invalid profile must leave nothing behind.
    let findings = check_valid(&p, &path)?;
    let dir = crate::keystore::store_dir(p.dir(), &p.cluster.name);
    if create {
        attach_store(&mut p, progress)?;
    } else {
        p.secret = Some(crate::keystore::read(&dir, &p.cluster.name)?.ok_or_else(|| {
            Error::Usage(format!(
                "no key store for cluster {} at {}: verify --profile recomputes what the build derived from it; run verify where the build ran, set RPIIMG_KEYS_DIR, or use verify --manifest",
                p.cluster.name,
                dir.display()
            ))
        })?);
    }
    p.host_key_generation = crate::keystore::host_key_generation(&dir, &p.hostname)?;
    if !progress.is_quiet() {
        for w in findings.iter().filter(|f| !f.error) {
            eprintln!("rpiimg: warning: {}: {w}", path.display());
        }
    }
    Ok(p)
}

/// The base image of a profile (or the override), opened and pinned.
pub(super) fn open_base(
    p: &Profile,
    over: &BaseArg,
    cache: &Cache,
    progress: Progress,
) -> Result<OpenedImage> {
    let (path, pin) = base_source(p, over)?;
    Ok(image::open(&path, pin.as_deref(), cache, progress)?)
}

/// Which base image a profile builds from, with its pin.
pub(super) fn base_source(p: &Profile, over: &BaseArg) -> Result<(PathBuf, Option<String>)> {
    let path = match &over.base {
        Some(b) => b.clone(),
        None => {
            if p.base.image.as_os_str().is_empty() {
                return Err(Error::Usage(format!(
                    "{}: no base.image; set it or pass --base",
                    p.source.display()
                )));
            }
            p.resolve(&p.base.image)
        }
    };
    if !path.exists() {
        let hint = if path.to_string_lossy().contains("demo/base.img") {
            " (run scripts/demo once to make the demo base, or pass --base)"
        } else {
            ""
        };
        return Err(Error::Usage(format!(
            "base image {} does not exist{hint}",
            path.display()
        )));
    }
    let pin = over.sha256.clone().or_else(|| {
        if over.base.is_some() {
            None
        } else {
            p.base.sha256.clone()
        }
    });
    Ok((path, pin))
}

/// The time a build from this base stamps (see `crate::clock`).
pub(super) fn build_time(base: &OpenedImage) -> Result<i64> {
    let table = partition::read(&base.file, base.size)?;
    let (view, _) = SystemView::open(base, &table)?;
    crate::clock::build_time(view.ext4().superblock().newest_time())
}

/// The base's OS as /etc/os-release says: (`ID`, `VERSION_CODENAME`).
pub(super) fn os_release(base: &OpenedImage) -> Result<(String, String)> {
    let table = partition::read(&base.file, base.size)?;
    let (view, _) = SystemView::open(base, &table)?;
    let text = view.read_text_opt("/etc/os-release")?.unwrap_or_default();
    let rel = crate::os::release::parse(&text);
    Ok((rel.id, rel.version_codename))
}

pub(super) fn plan_for(p: &Profile, base: &OpenedImage) -> Result<Plan> {
    Ok(plan_and_facts(p, base)?.0)
}

/// The plan and the base's facts it was made from (`plan` plans again
/// from them to tell which texts depend on a secret).
pub(super) fn plan_and_facts(p: &Profile, base: &OpenedImage) -> Result<(Plan, ImageFacts)> {
    let table = partition::read(&base.file, base.size)?;
    let (view, _) = SystemView::open(base, &table)?;
    let facts = ImageFacts::from_view(&view)?;
    let plan = make_plan(p, &facts).map_err(|e| Error::Usage(e.to_string()))?;
    Ok((plan, facts))
}

/// The profile as recorded in a manifest: resolved; its secrets
/// ([`crate::secret::Secret`]) serialize as `<redacted>`.
pub(super) fn redacted(p: &Profile) -> serde_json::Value {
    serde_json::to_value(p).unwrap_or_default()
}

/// Which file `path` is: its canonical path (links and `..` resolved). A
/// path that cannot be resolved stays as given, and image::open reports why.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// One base image of a run, opened (hashed, and for `.xz` decompressed)
/// once however many nodes build from it.
pub(super) struct Base {
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
pub(super) struct BaseSet {
    bases: Vec<Base>,
    of_node: Vec<usize>,
}

impl BaseSet {
    pub(super) fn open(
        profiles: &[Profile],
        over: &BaseArg,
        cache: &Cache,
        progress: Progress,
    ) -> Result<BaseSet> {
        let mut set = BaseSet {
            bases: Vec::new(),
            of_node: Vec::new(),
        };
        for p in profiles {
            let (path, pin) = base_source(p, over)?;
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

    /// The base of the `k`-th profile.
    pub(super) fn of(&self, k: usize) -> &Base {
        &self.bases[self.of_node[k]]
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
