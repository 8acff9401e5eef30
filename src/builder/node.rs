//! One node's build: plan it from its base, apply the plan to an edit
//! staged over the base, write its outputs and its manifest last; and
//! every node of a request on all cores.

use std::fmt;
use std::path::PathBuf;

use super::bases::{Base, BaseSet};
use super::{Node, Request};
use crate::error::{Error, Result};
use crate::manifest::{BaseRecord, ImageRecord, Manifest, MANIFEST_VERSION};
use crate::output::image::{build_proven, ImageOptions, Written};
use crate::progress::{human_bytes, Progress};

/// What one node's build wrote; `Display` is its lines of the summary.
#[derive(Debug)]
pub(crate) struct NodeOutput {
    pub host: String,
    pub written: Written,
    pub manifest: PathBuf,
    /// The Kolla-Ansible release its plan chose.
    pub kolla: &'static crate::kolla::Release,
}

/// Build the nodes on all cores (each streams its base once); with xz
/// one at a time, as its compression already uses every core (and bounds
/// memory: ~94 MiB per encoder). Results in request order.
pub(crate) fn build_all(
    req: &Request,
    bases: &BaseSet,
    progress: Progress,
) -> Result<Vec<NodeOutput>> {
    let nodes = &req.nodes;
    let any_xz = req.xz || nodes.iter().any(|n| n.profile.output.xz);
    let workers = if any_xz {
        1
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let one = |k: usize| -> Result<NodeOutput> {
        let (node, base) = nodes
            .get(k)
            .zip(bases.of(k))
            .ok_or_else(|| Error::Internal(format!("node {k} has no base")))?;
        build_node(node, base, req, progress)
    };
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
                        done.push((k, one(k)));
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
                        Err(Error::Internal("a node's build thread panicked".into())),
                    )]
                })
            })
            .collect()
    });
    results.sort_by_key(|(k, _)| *k);
    results.into_iter().map(|(_, r)| r).collect()
}

/// One node: plan, edit staged over the base, outputs, manifest last.
fn build_node(node: &Node, base: &Base, req: &Request, progress: Progress) -> Result<NodeOutput> {
    let p = &node.profile;
    let img = &base.image;
    let (plan, _) = super::bases::plan_for(p, img)?;
    let opts = ImageOptions {
        out_dir: node.out_dir.clone(),
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
        // Resolved; its secrets (crate::secret::Secret) serialize as
        // `<redacted>`.
        resolved_profile: serde_json::to_value(p).unwrap_or_default(),
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
                    "; {} of {} blocks compressed again, the rest copied from the base",
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
