//! The management host's files (the Kolla-Ansible bundle of
//! `crate::bundle`), rendered and written into a folder.

use std::path::{Path, PathBuf};

use super::node::NodeOutput;
use super::Request;
use crate::error::{Error, Result};
use crate::profile::Profile;

/// The bundle's folder for `p`'s cluster in the output folder `out`.
pub(crate) fn bundle_dir(out: &Path, p: &Profile) -> PathBuf {
    out.join(format!("mgmt-{}", p.cluster.name))
}

/// Write the management-host bundle of `p`'s cluster into `dir`.
pub(crate) fn write_bundle(
    p: &Profile,
    rel: &crate::kolla::Release,
    dir: &Path,
    stock: Option<&str>,
    force: bool,
) -> Result<Vec<PathBuf>> {
    let store = crate::keystore::store_dir(p.dir(), &p.cluster.name);
    let gens = crate::keystore::host_key_generations(&store)?;
    let files = crate::bundle::render(p, rel, &|h| gens.get(h).copied().unwrap_or(0), stock)
        .map_err(Error::Usage)?;
    // One writer per folder: two runs with --force would leave a bundle
    // of files from both.
    let _lock = super::lock_output_folder(dir)?;
    let mut written = Vec::new();
    for f in &files {
        let dest = dir.join(&f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(Error::host(parent))?;
        }
        written.push(crate::output::write_text_mode(
            &dest, &f.text, force, f.mode,
        )?);
    }
    Ok(written)
}

/// The bundles of a request's nodes, once per cluster and output folder;
/// the (cluster, folder) pairs written.
pub(crate) fn write_all(req: &Request, outputs: &[NodeOutput]) -> Result<Vec<(String, PathBuf)>> {
    let mut clusters: Vec<(String, PathBuf)> = Vec::new();
    for (n, o) in req.nodes.iter().zip(outputs) {
        let p = &n.profile;
        let dir = bundle_dir(&n.out_dir, p);
        if clusters
            .iter()
            .any(|(c, d)| *c == p.cluster.name && *d == dir)
        {
            continue;
        }
        write_bundle(p, o.kolla, &dir, None, req.force)?;
        clusters.push((p.cluster.name.clone(), dir));
    }
    Ok(clusters)
}
