//! `rpiimg build`: load every profile, open each base once, build the
//! nodes (in parallel), write the management host's files, report.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::load::{self, Base, BaseSet};
use super::Ctx;
use crate::cli::{BaseArg, BuildArgs};
use crate::error::{Error, Result};
use crate::image::Cache;
use crate::manifest::{BaseRecord, ImageRecord, Manifest, MANIFEST_VERSION};
use crate::output::image::{build_proven, ImageOptions, Written};
use crate::profile::{self, Profile};
use crate::progress::{human_bytes, Progress};

/// What `rpiimg build` was asked for.
#[derive(Clone, Copy)]
struct BuildRequest<'a> {
    profiles: &'a [String],
    all: Option<&'a Path>,
    base: &'a BaseArg,
    out_dir: Option<&'a Path>,
    xz: bool,
    no_bmap: bool,
    force: bool,
    threads: u32,
    /// Make new SSH host keys for the nodes built (recorded in the key store).
    rotate_host_keys: bool,
    /// Also write Raspberry Pi Imager's os_list JSON into each output directory.
    imager_json: bool,
}

impl<'a> BuildRequest<'a> {
    fn new(a: &'a BuildArgs) -> Self {
        BuildRequest {
            profiles: &a.profile,
            all: a.all.as_deref(),
            base: &a.base,
            out_dir: a.out.as_deref(),
            xz: a.xz,
            no_bmap: a.no_bmap,
            force: a.force,
            threads: a.threads,
            rotate_host_keys: a.rotate_host_keys,
            imager_json: a.imager_json,
        }
    }
}

pub(super) fn run(ctx: &Ctx, args: &BuildArgs, out: &mut dyn Write) -> Result<i32> {
    let req = BuildRequest::new(args);
    if args.check_reproducible {
        check_reproducible(&ctx.cache, ctx.progress, &req, out)?;
    } else {
        build_all(&ctx.cache, ctx.progress, &req, out)?;
    }
    Ok(0)
}

/// Profiles named by the request, loaded and validated.
fn load_request(req: &BuildRequest, progress: Progress) -> Result<Vec<Profile>> {
    let mut loaded = Vec::new();
    if let Some(dir) = req.all {
        for p in profile::load_dir(dir).map_err(|e| Error::Usage(e.to_string()))? {
            loaded.push(load::load_profile(
                &p.source.display().to_string(),
                progress,
            )?);
        }
        if loaded.is_empty() {
            return Err(Error::Usage(format!(
                "{}: no node profiles (files with a hostname)",
                dir.display()
            )));
        }
    } else {
        for name in req.profiles {
            loaded.push(load::load_profile(name, progress)?);
        }
    }
    Ok(loaded)
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

/// `build --check-reproducible`: two builds into temporary folders beside
/// the output directory, the second with an empty cache; identical outputs
/// move to the output directory, a difference fails naming the first
/// differing file and byte range.
fn check_reproducible(
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
    std::fs::create_dir_all(&final_dir).map_err(Error::host(&final_dir))?;
    let _lock = crate::lock::output_folder(&final_dir)?;
    let tmp = tempfile::Builder::new()
        .prefix(".rpiimg-reproducible.")
        .tempdir_in(&final_dir)
        .map_err(Error::host(&final_dir))?;
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
        build_all(c, progress, &r, &mut std::io::sink())?;
    }
    let (na, nb) = (output_names(&a)?, output_names(&b)?);
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
                crate::output::display_path(&dest)
            )));
        }
    }
    keep(&a, &final_dir, &order)?;
    writeln!(
        out,
        "reproducible: {} files byte-identical across two builds (the second with an empty cache), kept in {}",
        na.len(),
        crate::output::display_path(&final_dir)
    )
    .map_err(Error::Output)?;
    for n in na.iter().filter(|n| n.ends_with(".img")) {
        writeln!(
            out,
            "    {}",
            crate::output::display_path(&final_dir.join(n))
        )
        .map_err(Error::Output)?;
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

/// Build every node of the request; each node's outputs appear complete
/// or not at all, and the first failure (in profile order) is the error.
fn build_all(
    cache: &Cache,
    progress: Progress,
    req: &BuildRequest,
    out: &mut dyn Write,
) -> Result<()> {
    // Load and validate everything before touching an image.
    let nodes = load_nodes(req, progress)?;
    let bases = BaseSet::open(&nodes, req.base, cache, progress)?;
    // Each output folder is this run's alone from before its existing
    // files are looked at until its last file is renamed: two builds of a
    // node into one folder happen one after the other, so its set is
    // wholly one build's. Sorted, so two runs lock in the same order.
    let mut dirs: Vec<PathBuf> = nodes.iter().map(|p| out_dir(req, p)).collect();
    dirs.sort();
    dirs.dedup();
    let _locks = dirs
        .iter()
        .map(|d| crate::lock::output_folder(d))
        .collect::<Result<Vec<_>>>()?;
    crate::lock::pause("out-locked");
    let outputs = build_nodes(&nodes, &bases, req, progress)?;
    let clusters = write_bundles(&nodes, &outputs, req)?;
    for o in &outputs {
        write!(out, "{o}").map_err(Error::Output)?;
    }
    if req.imager_json {
        let mut dirs: Vec<PathBuf> = outputs
            .iter()
            .filter_map(|o| o.written.image.parent().map(Path::to_path_buf))
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
            "cluster {c}: management-host files (Kolla-Ansible inventory, globals drop-in, deploy.sh, known_hosts; see its README) in {}",
            crate::output::display_path(d)
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

/// Where a node's outputs go: `--out`, else its profile's `output.dir`.
fn out_dir(req: &BuildRequest, p: &Profile) -> PathBuf {
    req.out_dir
        .map_or_else(|| p.resolve(&p.output.dir), Path::to_path_buf)
}

/// The request's profiles, loaded and validated, host keys rotated when
/// asked; two profiles of one host in one run are an error.
fn load_nodes(req: &BuildRequest, progress: Progress) -> Result<Vec<Profile>> {
    let mut nodes = load_request(req, progress)?;
    if req.rotate_host_keys {
        for p in &mut nodes {
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
    for p in &nodes {
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
    Ok(nodes)
}

/// Build the nodes on all cores (each streams its base once); with --xz
/// one at a time, as its compression already uses every core (and bounds
/// memory: ~94 MiB per encoder). Results in profile order.
fn build_nodes(
    nodes: &[Profile],
    bases: &BaseSet,
    req: &BuildRequest,
    progress: Progress,
) -> Result<Vec<NodeOutput>> {
    let any_xz = req.xz || nodes.iter().any(|p| p.output.xz);
    let workers = if any_xz {
        1
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<NodeOutput>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.min(nodes.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if k >= nodes.len() {
                            return done;
                        }
                        done.push((k, build_node(&nodes[k], bases.of(k), req, progress)));
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
    results.sort_by_key(|(k, _)| *k);
    results.into_iter().map(|(_, r)| r).collect()
}

/// One node: plan, edit staged over the base, outputs, manifest last.
fn build_node(
    p: &Profile,
    base: &Base,
    req: &BuildRequest,
    progress: Progress,
) -> Result<NodeOutput> {
    let img = &base.image;
    let plan = load::plan_for(p, img)?;
    let opts = ImageOptions {
        out_dir: out_dir(req, p),
        xz: req.xz || p.output.xz,
        bmap: p.output.bmap && !req.no_bmap,
        force: req.force,
        threads: req.threads,
        xz_level: 6,
        now: base.time,
    };
    let (staged, applied) = build_proven(img, &base.proof, &p.hostname, &opts, progress, |ed| {
        crate::apply::apply(ed, &plan, progress)
    })?;
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        rpiimg: env!("CARGO_PKG_VERSION").into(),
        node: p.hostname.clone(),
        build_time: Some(base.time),
        // File names, not host paths: manifests are relocatable and the
        // same on every machine.
        profile: crate::output::file_name(&p.source),
        os: plan.os,
        base: BaseRecord {
            path: crate::output::file_name(&img.input),
            sha256: img.input_sha256.clone(),
        },
        image: ImageRecord::from(&staged.written),
        resolved_profile: load::redacted(p),
        warnings: plan.warnings.clone(),
        changes: applied,
    };
    let text = manifest.to_text()?;
    let mpath = opts.out_dir.join(format!("{}.manifest.json", p.hostname));
    let written = staged.commit(&mpath, &text)?;
    Ok(NodeOutput {
        host: p.hostname.clone(),
        written,
        manifest: mpath,
        kolla: plan.kolla,
    })
}

/// The management host's files, once per cluster and output directory of
/// this run; the (cluster, directory) pairs written.
fn write_bundles(
    nodes: &[Profile],
    outputs: &[NodeOutput],
    req: &BuildRequest,
) -> Result<Vec<(String, PathBuf)>> {
    let mut clusters: Vec<(String, PathBuf)> = Vec::new();
    for (p, o) in nodes.iter().zip(outputs) {
        let dir = req
            .out_dir
            .map_or_else(|| p.resolve(&p.output.dir), Path::to_path_buf)
            .join(format!("mgmt-{}", p.cluster.name));
        if clusters
            .iter()
            .any(|(c, d)| *c == p.cluster.name && *d == dir)
        {
            continue;
        }
        super::cluster::write_bundle(p, o.kolla, &dir, None, req.force)?;
        clusters.push((p.cluster.name.clone(), dir));
    }
    Ok(clusters)
}

/// What one node's build wrote; `Display` is its lines of the summary.
struct NodeOutput {
    host: String,
    written: Written,
    manifest: PathBuf,
    /// The Kolla-Ansible release its plan chose.
    kolla: &'static crate::bundle::release::Release,
}

impl fmt::Display for NodeOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.written;
        let img = crate::output::display_path(&w.image);
        writeln!(
            f,
            "{}: {img} ({}), sha256 {}",
            self.host,
            human_bytes(w.size),
            w.sha256
        )?;
        if let Some(x) = &w.xz {
            let how = match w.xz_reuse {
                Some(r) => format!(
                    " ({} of {} blocks compressed again, the rest copied from the base)",
                    r.recompressed, r.blocks
                ),
                None => String::new(),
            };
            writeln!(f, "    {}{how}", crate::output::display_path(x))?;
        }
        writeln!(
            f,
            "    manifest {}",
            crate::output::display_path(&self.manifest)
        )?;
        match &w.bmap {
            Some(_) => writeln!(
                f,
                "    flash: rpiimg flash {img}=/dev/sdX   (or: bmaptool copy {img} /dev/sdX)"
            ),
            None => writeln!(f, "    flash: rpiimg flash {img}=/dev/sdX"),
        }
    }
}
