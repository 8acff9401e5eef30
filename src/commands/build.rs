//! `rpiimg plan` and `rpiimg build`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::BaseArg;
use crate::error::{Error, Result};
use crate::fs::view::SystemView;
use crate::image::{self, Cache, OpenedImage};
use crate::output::image::{build as build_image, ImageOptions};
use crate::partition;
use crate::plan::{make_plan, Change, ImageFacts, Plan};
use crate::profile::{self, Profile};
use crate::progress::{human_bytes, Progress};

/// Load and validate a profile: errors stop here, before any image I/O.
pub fn load_profile(name: &str, progress: Progress) -> Result<Profile> {
    load_profile_with(name, progress, true)
}

/// The profile's validation findings; an error when any is an error.
fn check_valid(p: &Profile, path: &Path) -> Result<Vec<profile::Finding>> {
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
fn attach_store(p: &mut Profile, progress: Progress) -> Result<()> {
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
pub fn load_profile_with(name: &str, progress: Progress, create: bool) -> Result<Profile> {
    let path = profile::find(name).map_err(|e| Error::Usage(e.to_string()))?;
    let mut p = profile::load(&path).map_err(|e| Error::Usage(e.to_string()))?;
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
    let findings = check_valid(&p, &path)?;
    if !progress.is_quiet() {
        for w in findings.iter().filter(|f| !f.error) {
            eprintln!("rpiimg: warning: {}: {w}", path.display());
        }
    }
    Ok(p)
}

/// The base image of a profile (or the override), opened and pinned.
pub fn open_base(
    p: &Profile,
    over: &BaseArg,
    cache: &Cache,
    progress: Progress,
) -> Result<OpenedImage> {
    let (path, pin) = base_source(p, over)?;
    Ok(image::open(&path, pin.as_deref(), cache, progress)?)
}

/// Which base image a profile builds from, with its pin.
fn base_source(p: &Profile, over: &BaseArg) -> Result<(PathBuf, Option<String>)> {
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

/// Write the management-host bundle of `p`'s cluster into `dir`.
fn write_bundle(p: &Profile, dir: &Path, stock: Option<&str>, force: bool) -> Result<Vec<PathBuf>> {
    let store = crate::keystore::store_dir(p.dir(), &p.cluster.name);
    let gens = crate::keystore::host_key_generations(&store)?;
    let files = crate::bundle::render(p, &|h| gens.get(h).copied().unwrap_or(0), stock)
        .map_err(Error::Usage)?;
    let mut written = Vec::new();
    for f in &files {
        let dest = dir.join(&f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::Host {
                path: parent.display().to_string(),
                source: e,
            })?;
        }
        written.push(crate::output::write_text_mode(
            &dest, &f.text, force, f.mode,
        )?);
    }
    Ok(written)
}

/// `rpiimg cluster`: the management host's files.
pub fn run_cluster(
    progress: Progress,
    name: &str,
    out_dir: Option<&Path>,
    stock: Option<&Path>,
    force: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let path = profile::find(name).map_err(|e| Error::Usage(e.to_string()))?;
    let mut p = profile::load_cluster(&path).map_err(|e| Error::Usage(e.to_string()))?;
    check_valid(&p, &path)?;
    attach_store(&mut p, progress)?;
    // The stock inventory is ~30 KB; 4 MiB bounds a wrong argument.
    let stock_text = stock
        .map(|f| crate::hostfile::read_text(f, None, 4 << 20))
        .transpose()
        .map_err(|e| Error::Usage(format!("--kolla-inventory {e}")))?;
    let dir = out_dir.map_or_else(
        || {
            p.resolve(&p.output.dir)
                .join(format!("mgmt-{}", p.cluster.name))
        },
        Path::to_path_buf,
    );
    let written = write_bundle(&p, &dir, stock_text.as_deref(), force)?;
    writeln!(
        out,
        "cluster {}: {} files for the management host in {} (see its README)",
        p.cluster.name,
        written.len(),
        crate::output::display_path(&dir)
    )
    .map_err(Error::Output)?;
    Ok(())
}

/// The time a build from this base stamps (see `crate::clock`).
fn build_time(base: &OpenedImage) -> Result<i64> {
    let table = partition::read(&base.file, base.size)?;
    let (view, _) = SystemView::open(base, &table)?;
    crate::clock::build_time(view.ext4().superblock().newest_time())
}

pub fn plan_for(p: &Profile, base: &OpenedImage) -> Result<Plan> {
    let table = partition::read(&base.file, base.size)?;
    let (view, _) = SystemView::open(base, &table)?;
    let facts = ImageFacts::from_view(&view)?;
    make_plan(p, &facts).map_err(|e| Error::Usage(e.to_string()))
}

/// Write the plan's files under `dir` for review, never outside it.
fn render_to(plan: &Plan, dir: &Path) -> Result<usize> {
    let mut n = 0;
    for c in plan.changes() {
        if let Change::WriteFile {
            path,
            content,
            mode,
            ..
        } = c
        {
            let rel: PathBuf = crate::path::components(&crate::path::normalize(path)).collect();
            let dest = dir.join(&rel);
            // A symlink already under DIR (say DIR/etc -> /etc) would carry
            // the write outside it: refuse rather than follow.
            let mut at = dir.to_path_buf();
            for c in rel.components() {
                at.push(c);
                if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(Error::Usage(format!(
                        "--render-to: {} is a symbolic link; render into an empty directory",
                        at.display()
                    )));
                }
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::Host {
                    path: parent.display().to_string(),
                    source: e,
                })?;
            }
            std::fs::write(&dest, content).map_err(|e| Error::Host {
                path: dest.display().to_string(),
                source: e,
            })?;
            // Modes matter to reviewers' tools (netplan refuses world-readable files).
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(u32::from(*mode)))
                    .map_err(|e| Error::Host {
                        path: dest.display().to_string(),
                        source: e,
                    })?;
            }
            n += 1;
        }
    }
    Ok(n)
}

/// How `rpiimg plan` prints: text, or JSON (secret-bearing texts redacted
/// unless `show_secrets`).
#[derive(Clone, Copy)]
pub struct PlanFormat {
    pub json: bool,
    pub show_secrets: bool,
}

pub fn run_plan(
    cache: &Cache,
    progress: Progress,
    name: &str,
    base: &BaseArg,
    format: PlanFormat,
    render: Option<&Path>,
    out: &mut dyn Write,
) -> Result<()> {
    let PlanFormat { json, show_secrets } = format;
    let p = load_profile(name, progress)?;
    let img = open_base(&p, base, cache, progress)?;
    let plan = plan_for(&p, &img)?;
    if let Some(dir) = render {
        let n = render_to(&plan, dir)?;
        if !progress.is_quiet() {
            eprintln!("rpiimg: {n} files rendered under {}", dir.display());
        }
    }
    let text = if json {
        let secrets = if show_secrets {
            Vec::new()
        } else {
            p.secret_values()
        };
        serde_json::to_string_pretty(&plan.to_json(&secrets))
            .map_err(|e| Error::Output(e.into()))?
            + "\n"
    } else {
        plan.render()
    };
    out.write_all(text.as_bytes()).map_err(Error::Output)
}

/// The profile as recorded in a manifest: resolved; its secrets
/// ([`crate::secret::Secret`]) serialize as `<redacted>`.
fn redacted(p: &Profile) -> serde_json::Value {
    serde_json::to_value(p).unwrap_or_default()
}

/// What `rpiimg build` was asked for.
#[derive(Clone, Copy)]
pub struct BuildRequest<'a> {
    pub profiles: &'a [String],
    pub all: Option<&'a Path>,
    pub base: &'a BaseArg,
    pub out_dir: Option<&'a Path>,
    pub xz: bool,
    pub no_bmap: bool,
    pub force: bool,
    pub threads: u32,
    /// Make new SSH host keys for the nodes built (recorded in the key store).
    pub rotate_host_keys: bool,
    /// Also write Raspberry Pi Imager's os_list JSON into each output directory.
    pub imager_json: bool,
}

/// Profiles named by the request, loaded and validated.
fn load_request(req: &BuildRequest, progress: Progress) -> Result<Vec<Profile>> {
    let mut loaded = Vec::new();
    if let Some(dir) = req.all {
        for p in profile::load_dir(dir).map_err(|e| Error::Usage(e.to_string()))? {
            loaded.push(load_profile(&p.source.display().to_string(), progress)?);
        }
        if loaded.is_empty() {
            return Err(Error::Usage(format!(
                "{}: no node profiles (files with a hostname)",
                dir.display()
            )));
        }
    } else {
        for name in req.profiles {
            loaded.push(load_profile(name, progress)?);
        }
    }
    Ok(loaded)
}

/// `build --check-reproducible`: two builds into temporary folders beside
/// the output directory, the second with an empty cache; identical outputs
/// move to the output directory, a difference fails naming the first
/// differing file and byte range.
pub fn check_reproducible(
    cache: &Cache,
    progress: Progress,
    req: &BuildRequest,
    out: &mut dyn Write,
) -> Result<()> {
    let loaded = load_request(req, progress)?;
    let dirs: std::collections::BTreeSet<PathBuf> = loaded
        .iter()
        .map(|p| {
            req.out_dir
                .map_or_else(|| p.resolve(&p.output.dir), Path::to_path_buf)
        })
        .collect();
    if dirs.len() != 1 {
        return Err(Error::Usage(
            "--check-reproducible: the nodes have different output directories; give one with --out".into(),
        ));
    }
    let final_dir = dirs.into_iter().next().unwrap_or_default();
    let host = |path: &Path, e: std::io::Error| Error::Host {
        path: path.display().to_string(),
        source: e,
    };
    std::fs::create_dir_all(&final_dir).map_err(|e| host(&final_dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".rpiimg-reproducible.")
        .tempdir_in(&final_dir)
        .map_err(|e| host(&final_dir, e))?;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let cold = Cache::new(tmp.path().join("cache"));
    for (dir, c) in [(&a, cache), (&b, &cold)] {
        let r = BuildRequest {
            out_dir: Some(dir),
            force: false,
            rotate_host_keys: false,
            // Its URLs name where the files are: written once they are kept.
            imager_json: false,
            ..*req
        };
        run_build(c, progress, &r, &mut std::io::sink())?;
    }
    // Every output file, by path relative to its build folder (the
    // management-host bundle is a subfolder).
    let names = |d: &Path| -> Result<Vec<String>> {
        let mut v = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = d.join(&rel);
            for e in std::fs::read_dir(&dir).map_err(|e| host(&dir, e))? {
                let e = e.map_err(|e| host(&dir, e))?;
                let r = rel.join(e.file_name());
                if e.file_type().map_err(|e| host(&dir, e))?.is_dir() {
                    stack.push(r);
                } else {
                    v.push(r.to_string_lossy().into_owned());
                }
            }
        }
        v.sort();
        Ok(v)
    };
    let (na, nb) = (names(&a)?, names(&b)?);
    if na != nb {
        return Err(Error::Usage(format!(
            "not reproducible: the two builds wrote different files ({na:?} and {nb:?})"
        )));
    }
    for n in &na {
        if let Some(range) = crate::output::first_difference(&a.join(n), &b.join(n))? {
            return Err(Error::Usage(format!(
                "not reproducible: {n} differs between two builds at bytes {}..{} (first differing run){}",
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
    // Identical: the first build's outputs become the real ones, manifests
    // last (a node's output set is complete when its manifest exists).
    let mut order = na.clone();
    order.sort_by_key(|n| n.ends_with(".manifest.json"));
    for n in &order {
        let dest = final_dir.join(n);
        if dest.exists() && !req.force {
            return Err(Error::Usage(format!(
                "{} exists; pass --force to replace it",
                dest.display()
            )));
        }
    }
    for n in &order {
        let dest = final_dir.join(n);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| host(parent, e))?;
        }
        std::fs::rename(a.join(n), &dest).map_err(|e| host(&dest, e))?;
    }
    writeln!(
        out,
        "reproducible: {} files byte-identical across two builds (the second with an empty cache), kept in {}",
        na.len(),
        final_dir.display()
    )
    .map_err(Error::Output)?;
    for n in na.iter().filter(|n| n.ends_with(".img")) {
        writeln!(out, "    {}", final_dir.join(n).display()).map_err(Error::Output)?;
    }
    if req.imager_json {
        let list = final_dir.join(crate::output::imager::LIST_NAME);
        crate::output::imager::write(&final_dir, &list, true)?;
        writeln!(
            out,
            "Raspberry Pi Imager list (custom repository): {}",
            crate::output::display_path(&list)
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

pub fn run_build(
    cache: &Cache,
    progress: Progress,
    req: &BuildRequest,
    out: &mut dyn Write,
) -> Result<()> {
    let BuildRequest {
        base,
        out_dir,
        xz,
        no_bmap,
        force,
        threads,
        ..
    } = *req;
    // Load and validate everything before touching an image.
    let mut loaded = load_request(req, progress)?;
    if req.rotate_host_keys {
        for p in &mut loaded {
            let dir = crate::keystore::store_dir(p.dir(), &p.cluster.name);
            p.host_key_generation = crate::keystore::rotate_host_keys(&dir, &p.hostname)?;
            if !progress.is_quiet() {
                eprintln!(
                    "rpiimg: {}: new SSH host keys (generation {}); known_hosts from `rpiimg cluster` must be refreshed",
                    p.hostname, p.host_key_generation
                );
            }
        }
    }
    let mut hosts: Vec<(&str, &Path)> = Vec::new();
    for p in &loaded {
        if let Some((_, other)) = hosts.iter().find(|(h, _)| *h == p.hostname) {
            return Err(Error::Usage(format!(
                "{} and {} both build host {}: build them in separate runs or output directories",
                other.display(),
                p.source.display(),
                p.hostname
            )));
        }
        hosts.push((&p.hostname, &p.source));
    }
    // Nodes sharing a base open (hash, and for .xz decompress) it once.
    // (the time a build from a base stamps is the base's, so it is read once too)
    let mut bases: Vec<((PathBuf, Option<String>), OpenedImage, i64)> = Vec::new();
    let mut base_of = Vec::new();
    for p in &loaded {
        let key = base_source(p, base)?;
        let i = match bases.iter().position(|(k, _, _)| *k == key) {
            Some(i) => i,
            None => {
                let img = image::open(&key.0, key.1.as_deref(), cache, progress)?;
                let t = build_time(&img)?;
                bases.push((key, img, t));
                bases.len() - 1
            }
        };
        base_of.push(i);
    }
    // Nodes are independent: build them on all cores (each one streams
    // its base once). With --xz one node at a time, as its compression
    // already uses every core (and bounds memory: ~94 MiB per encoder).
    let any_xz = xz || loaded.iter().any(|p| p.output.xz);
    let workers = if any_xz {
        1
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    };
    let build_node = |k: usize| -> Result<(String, crate::output::image::Written, PathBuf)> {
        let p = &loaded[k];
        let (_, img, now) = &bases[base_of[k]];
        let plan = plan_for(p, img)?;
        let opts = ImageOptions {
            out_dir: out_dir.map_or_else(|| p.resolve(&p.output.dir), Path::to_path_buf),
            xz: xz || p.output.xz,
            bmap: p.output.bmap && !no_bmap,
            force,
            threads,
            xz_level: 6,
            now: *now,
        };
        let (staged, applied) = build_image(img, &p.hostname, &opts, progress, |ed| {
            crate::apply::apply(ed, &plan, progress)
        })?;
        let manifest = serde_json::json!({
            "rpiimg": env!("CARGO_PKG_VERSION"),
            "node": p.hostname,
            // The build's time (SOURCE_DATE_EPOCH or the base's), not the clock.
            "build_time": now,
            // File names, not host paths: manifests are relocatable and
            // the same on every machine.
            "profile": crate::output::file_name(&p.source),
            "os": plan.os,
            "base": {
                "path": crate::output::file_name(&img.input),
                "sha256": img.input_sha256,
            },
            "image": staged.written,
            "resolved_profile": redacted(p),
            "warnings": plan.warnings,
            "changes": applied,
        });
        let text =
            serde_json::to_string_pretty(&manifest).map_err(|e| Error::Output(e.into()))? + "\n";
        let mpath = opts.out_dir.join(format!("{}.manifest.json", p.hostname));
        let written = staged.commit(&mpath, &text)?;
        Ok((p.hostname.clone(), written, mpath))
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<_>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.min(loaded.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if k >= loaded.len() {
                            return done;
                        }
                        done.push((k, build_node(k)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(
                        usize::MAX,
                        Err(Error::Layout("a node's build thread panicked".into())),
                    )]
                })
            })
            .collect()
    });
    // Report in profile order; the first failure (in that order) is the error.
    results.sort_by_key(|(k, _)| *k);
    let mut summary = Vec::new();
    for (_, r) in results {
        summary.push(r?);
    }
    // The management host's files, once per cluster of this run.
    let mut clusters: Vec<(String, PathBuf)> = Vec::new();
    for p in &loaded {
        let dir = out_dir
            .map_or_else(|| p.resolve(&p.output.dir), Path::to_path_buf)
            .join(format!("mgmt-{}", p.cluster.name));
        if clusters
            .iter()
            .any(|(c, d)| *c == p.cluster.name && *d == dir)
        {
            continue;
        }
        write_bundle(p, &dir, None, force)?;
        clusters.push((p.cluster.name.clone(), dir));
    }
    for (host, w, m) in &summary {
        writeln!(
            out,
            "{host}: {} ({}), sha256 {}",
            crate::output::display_path(&w.image),
            human_bytes(w.size),
            w.sha256
        )
        .map_err(Error::Output)?;
        if let Some(x) = &w.xz {
            let how = match w.xz_reuse {
                Some(r) => format!(
                    " ({} of {} blocks compressed again, the rest copied from the base)",
                    r.recompressed, r.blocks
                ),
                None => String::new(),
            };
            writeln!(out, "    {}{how}", crate::output::display_path(x)).map_err(Error::Output)?;
        }
        writeln!(out, "    manifest {}", crate::output::display_path(m)).map_err(Error::Output)?;
        let img = crate::output::display_path(&w.image);
        let flash = match &w.bmap {
            Some(_) => format!("rpiimg flash {img}=/dev/sdX   (or: bmaptool copy {img} /dev/sdX)"),
            None => format!("rpiimg flash {img}=/dev/sdX"),
        };
        writeln!(out, "    flash: {flash}").map_err(Error::Output)?;
    }
    if req.imager_json {
        let mut dirs: Vec<PathBuf> = summary
            .iter()
            .filter_map(|(_, w, _)| w.image.parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            let list =
                crate::output::imager::write(&d, &d.join(crate::output::imager::LIST_NAME), true)?;
            writeln!(
                out,
                "Raspberry Pi Imager list (custom repository): {}",
                crate::output::display_path(&list)
            )
            .map_err(Error::Output)?;
        }
    }
    for (c, d) in &clusters {
        writeln!(
            out,
            "cluster {c}: management-host files (hosts, known_hosts, Kolla-Ansible inventory) in {}",
            crate::output::display_path(d)
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

/// The manifest `--manifest` names, or for a bare `--manifest` the one a
/// build writes beside `image` (`ost04.img[.xz]` -> `ost04.manifest.json`).
fn manifest_for(image: &Path, given: &Path) -> PathBuf {
    if !given.as_os_str().is_empty() {
        return given.to_path_buf();
    }
    let name = crate::output::file_name(image);
    let stem = name
        .strip_suffix(".img.xz")
        .or_else(|| name.strip_suffix(".img"))
        .unwrap_or(&name);
    image.with_file_name(format!("{stem}.manifest.json"))
}

/// `rpiimg verify`: invariants for each image, the plan or manifest, and
/// cross-image identity. Returns the checks and the exit status.
pub fn run_verify(
    cache: &Cache,
    progress: Progress,
    images: &[PathBuf],
    profile: Option<&str>,
    base: &BaseArg,
    manifest: Option<&Path>,
    cluster: bool,
) -> Result<(Vec<crate::verify::Check>, i32)> {
    use crate::verify::{self, planned, Check};
    if images.len() > 1 && (profile.is_some() || manifest.is_some()) {
        return Err(Error::Usage("--profile and --manifest check one image; verify node images one by one, with --cluster for identities".into()));
    }
    let expects = match (profile, manifest) {
        (Some(name), _) => {
            let p = load_profile_with(name, Progress::quiet(), false)?;
            let b = open_base(&p, base, cache, Progress::quiet())?;
            Some(planned::from_plan(&plan_for(&p, &b)?))
        }
        (None, Some(m)) => {
            let m = &manifest_for(&images[0], m);
            if !m.exists() {
                return Err(Error::Usage(format!(
                    "{}: no manifest at {}: a node's outputs are complete only once its manifest is written, so this image may come from an interrupted build; rebuild it with `rpiimg build` (or name the manifest with --manifest FILE)",
                    images[0].display(),
                    m.display()
                )));
            }
            let text = std::fs::read_to_string(m).map_err(|e| Error::Host {
                path: m.display().to_string(),
                source: e,
            })?;
            Some(planned::from_manifest(&text, &m.display().to_string())?)
        }
        _ => None,
    };
    let mut checks: Vec<Check> = Vec::new();
    let mut ids = Vec::new();
    for img in images {
        let opened = image::open(img, None, cache, progress)?;
        let table = partition::read(&opened.file, opened.size)?;
        let (view, _) = SystemView::open(&opened, &table)?;
        let prefix = |mut c: Check| {
            if images.len() > 1 {
                c.what = format!("{}: {}", img.display(), c.what);
            }
            c
        };
        checks.extend(
            verify::invariants::check(&view, &table)?
                .into_iter()
                .map(prefix),
        );
        if let Some(e) = &expects {
            checks.extend(planned::check(&view, e)?.into_iter().map(prefix));
        }
        if cluster {
            ids.push((img.display().to_string(), verify::identity(&view)?));
        }
    }
    if cluster {
        checks.extend(verify::distinct(&ids));
    }
    let status = i32::from(checks.iter().any(|c| !c.ok));
    Ok((checks, status))
}
