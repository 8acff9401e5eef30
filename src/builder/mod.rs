//! Building node images, as a library: a [`Request`] (profiles loaded
//! and validated, each node's output folder resolved once) is checked as
//! a whole before any work ([`preflight`]), each base is opened once
//! ([`bases`]), the nodes are built in parallel ([`node`]), the management
//! host's files are written once per cluster and folder ([`bundle`]), and
//! what was written comes back as a [`Report`]. `--check-reproducible`
//! is [`reproducible`]. `commands/build.rs` only turns arguments into a
//! request and prints the report.

pub(crate) mod bases;
pub(crate) mod bundle;
pub(crate) mod node;
pub(crate) mod preflight;
pub(crate) mod reproducible;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::image::Cache;
use crate::lock::LockFile;
use crate::profile::Profile;
use crate::progress::Progress;

pub(crate) use bases::BaseChoice;
pub(crate) use bundle::write_bundle;
pub(crate) use node::NodeOutput;

/// One node of a request: its profile and where its outputs go.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub profile: Profile,
    /// `--out`, else the profile's `output.dir` (resolved against the
    /// profile's folder).
    pub out_dir: PathBuf,
}

/// What a build was asked for, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub nodes: Vec<Node>,
    pub base: BaseChoice,
    pub xz: bool,
    pub no_bmap: bool,
    pub force: bool,
    /// xz encoder threads (0: all cores).
    pub threads: u32,
    /// Also write Raspberry Pi Imager's os_list JSON into each output folder.
    pub imager_json: bool,
}

impl Request {
    /// The nodes of `profiles`, each into `out` when given, else into its
    /// profile's `output.dir`.
    pub(crate) fn nodes_of(profiles: Vec<Profile>, out: Option<&Path>) -> Vec<Node> {
        profiles
            .into_iter()
            .map(|p| Node {
                out_dir: out.map_or_else(|| p.resolve(&p.output.dir), Path::to_path_buf),
                profile: p,
            })
            .collect()
    }

    /// The output folders, sorted (two runs lock them in the same order).
    pub(crate) fn out_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.nodes.iter().map(|n| n.out_dir.clone()).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// What a build wrote; `Display` is the summary `rpiimg build` prints.
#[derive(Debug)]
pub(crate) struct Report {
    pub nodes: Vec<NodeOutput>,
    /// Raspberry Pi Imager lists written (`--imager-json`).
    pub imager_lists: Vec<PathBuf>,
    /// The management-host bundles: (cluster, folder).
    pub bundles: Vec<(String, PathBuf)>,
}

/// Build every node of the request; each node's outputs appear complete
/// or not at all, and the first failure (in profile order) is the error.
/// Everything that can be checked without the base is checked first.
pub(crate) fn build(cache: &Cache, progress: Progress, req: &Request) -> Result<Report> {
    preflight::check(req)?;
    // Each output folder is this run's alone from before its existing
    // files are looked at until its last file is renamed: two builds of a
    // node into one folder happen one after the other.
    let dirs = req.out_dirs();
    let _locks = lock_output_folders(&dirs)?;
    crate::lock::pause("out-locked");
    for d in &dirs {
        crate::partial::sweep(d, crate::partial::is_output_partial);
    }
    // Again under the locks: another run may have written meanwhile.
    preflight::check(req)?;
    let profiles: Vec<&Profile> = req.nodes.iter().map(|n| &n.profile).collect();
    let bases = bases::BaseSet::open(&profiles, &req.base, cache, progress)?;
    preflight::check_space(req, &bases)?;
    let outputs = node::build_all(req, &bases, progress)?;
    let bundles = bundle::write_all(req, &outputs)?;
    let mut imager_lists = Vec::new();
    if req.imager_json {
        for d in &dirs {
            imager_lists.push(crate::output::imager::write(
                d,
                &d.join(crate::output::imager::LIST_NAME),
                true,
            )?);
        }
    }
    Ok(Report {
        nodes: outputs,
        imager_lists,
        bundles,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.nodes {
            write!(f, "{o}")?;
        }
        for list in &self.imager_lists {
            writeln!(
                f,
                "Raspberry Pi Imager list (custom repository): {}",
                crate::output::display_path(list)
            )?;
        }
        for (c, d) in &self.bundles {
            writeln!(
                f,
                "cluster {c}: management-host files (Kolla-Ansible inventory, globals drop-in, deploy.sh, known_hosts; see its README) in {}",
                crate::output::display_path(d)
            )?;
        }
        Ok(())
    }
}

/// Lock the output folder `dir` (created if missing) for a run that
/// writes into it: a second `build` or `cluster` into the same folder
/// waits until this one has renamed its last file. (It lives here, not in
/// `lock`, because it speaks the crate's errors: `lock` stays below them.)
pub(crate) fn lock_output_folder(dir: &Path) -> Result<LockFile> {
    std::fs::create_dir_all(dir).map_err(|e| preflight::out_dir_error(dir, &e))?;
    let path = dir.join(crate::lock::OUT_LOCK);
    LockFile::acquire(
        &path,
        crate::lock::Access::Exclusive,
        "it is writing into this output folder",
    )
    .map_err(crate::error::Error::host(&path))
}

/// [`lock_output_folder`] for each of `dirs`, in order: the locks a run
/// holds until its last file is renamed.
pub(crate) fn lock_output_folders(dirs: &[PathBuf]) -> Result<Vec<LockFile>> {
    dirs.iter().map(|d| lock_output_folder(d)).collect()
}
