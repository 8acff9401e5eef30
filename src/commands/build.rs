//! `rpiimg build`: the profiles named on the command line, loaded and
//! validated, become a [`crate::builder::Request`]; the library builds it
//! and this prints its report.

use std::io::Write;

use super::load;
use super::Ctx;
use crate::builder::{self, Request};
use crate::cli::BuildArgs;
use crate::error::{Error, Result};
use crate::profile::{self, Profile};
use crate::progress::Progress;

pub(super) fn run(ctx: &Ctx, args: &BuildArgs, out: &mut dyn Write) -> Result<i32> {
    let progress = ctx.progress;
    let mut profiles = load_profiles(ctx, args, progress)?;
    if args.rotate_host_keys {
        rotate_host_keys(&mut profiles, progress)?;
    }
    // The command line's pieces first, then the library's request.
    let base = load::base_choice(&args.base);
    let req = Request {
        nodes: Request::nodes_of(profiles, args.out.as_deref()),
        base,
        xz: args.xz,
        no_bmap: args.no_bmap,
        force: args.force,
        threads: args.threads,
        imager_json: args.imager_json,
    };
    let report = if args.check_reproducible {
        builder::reproducible::check(&ctx.cache, progress, &req)?.to_string()
    } else {
        builder::build(&ctx.cache, progress, &req)?.to_string()
    };
    write!(out, "{report}").map_err(Error::Output)?;
    Ok(0)
}

/// The profiles the arguments name (`--profile`, or every node profile
/// under `--all DIR`), all validated before any key store is made.
fn load_profiles(ctx: &Ctx, args: &BuildArgs, progress: Progress) -> Result<Vec<Profile>> {
    let names: Vec<String> = match &args.all {
        Some(dir) => {
            // `--all` alone: the folder profile names are looked up in.
            let dir = if dir.as_os_str().is_empty() {
                ctx.profiles.as_path()
            } else {
                dir.as_path()
            };
            let found = profile::load_dir(dir).map_err(|e| Error::Usage(e.to_string()))?;
            if found.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: no node profiles (.toml files with a hostname) in it or its folders; name the folder that holds them",
                    crate::output::display_path(dir)
                )));
            }
            found
                .iter()
                .map(|p| p.source.display().to_string())
                .collect()
        }
        None => args.profile.clone(),
    };
    load::load_profiles(&names, &ctx.profiles, progress)
}

/// `--rotate-host-keys`: new SSH host keys for these nodes, recorded in
/// their cluster's key store.
fn rotate_host_keys(profiles: &mut [Profile], progress: Progress) -> Result<()> {
    for p in profiles {
        let dir = crate::keystore::store_dir(p.dir(), &p.cluster.name);
        p.host_key_generation = crate::keystore::rotate_host_keys(&dir, &p.hostname)?;
        if !progress.is_quiet() {
            eprintln!(
                "rpiimg: {}: new SSH host keys (generation {}); known_hosts from `rpiimg cluster` must be refreshed",
                p.hostname, p.host_key_generation
            );
        }
    }
    Ok(())
}
