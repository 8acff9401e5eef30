//! Loading what a command works from: profiles (validated, with their
//! cluster's key store) and base images (opened once per run).

use std::path::{Path, PathBuf};

use crate::cli::BaseArg;
use crate::error::{Error, Result};
use crate::fs::view::SystemView;
use crate::image::{self, Cache, OpenedImage};
use crate::partition;
use crate::plan::{ImageFacts, Plan};
use crate::profile::{self, Profile};
use crate::progress::Progress;

/// Load and validate a profile: errors stop here, before any image I/O.
pub(super) fn load_profile(name: &str, root: &Path, progress: Progress) -> Result<Profile> {
    load_profile_with(name, root, progress, true)
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
pub(super) fn load_profile_with(
    name: &str,
    root: &Path,
    progress: Progress,
    create: bool,
) -> Result<Profile> {
    let (mut p, findings) = load_valid(name, root)?;
    attach(&mut p, &findings, progress, create)?;
    Ok(p)
}

/// Several profiles (a build's): every one loaded and validated before
/// any key store is made, so an invalid one leaves nothing behind.
pub(super) fn load_profiles(
    names: &[String],
    root: &Path,
    progress: Progress,
) -> Result<Vec<Profile>> {
    let loaded = names
        .iter()
        .map(|n| load_valid(n, root))
        .collect::<Result<Vec<_>>>()?;
    loaded
        .into_iter()
        .map(|(mut p, findings)| {
            attach(&mut p, &findings, progress, true)?;
            Ok(p)
        })
        .collect()
}

/// A profile found, loaded and validated, with its findings; no key
/// store is touched yet (the cluster name becomes part of its path).
fn load_valid(name: &str, root: &Path) -> Result<(Profile, Vec<profile::Finding>)> {
    let path = profile::find(name, root).map_err(|e| Error::Usage(e.to_string()))?;
    let p = profile::load(&path).map_err(|e| Error::Usage(e.to_string()))?;
    let findings = check_valid(&p, &path)?;
    Ok((p, findings))
}

/// The cluster's secret and the node's host-key generation, and the
/// profile's warnings printed (under -q too: it quiets progress, not
/// findings).
fn attach(
    p: &mut Profile,
    findings: &[profile::Finding],
    progress: Progress,
    create: bool,
) -> Result<()> {
    let dir = crate::keystore::store_dir(p.dir(), &p.cluster.name);
    if create {
        attach_store(p, progress)?;
    } else {
        p.secret = Some(crate::keystore::read(&dir, &p.cluster.name)?.ok_or_else(|| {
            Error::KeyStore(format!(
                "no key store for cluster {} at {}: verify --profile recomputes what the build derived from it; run verify where the build ran, set RPIIMG_KEYS_DIR, or use verify --manifest",
                p.cluster.name,
                dir.display()
            ))
        })?);
    }
    p.host_key_generation = crate::keystore::host_key_generation(&dir, &p.hostname)?;
    for w in findings.iter().filter(|f| !f.error) {
        eprintln!("rpiimg: warning: {}: {w}", p.source.display());
    }
    Ok(())
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
    crate::builder::bases::source_of(p, &base_choice(over))
}

/// The command line's base, as the library takes it.
pub(super) fn base_choice(over: &BaseArg) -> crate::builder::BaseChoice {
    crate::builder::BaseChoice {
        path: over.base.clone(),
        sha256: over.sha256.clone(),
    }
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
    crate::builder::bases::plan_for(p, base)
}
