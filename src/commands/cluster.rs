//! `rpiimg cluster`: the management host's files for a cluster.

use std::io::Write;
use std::path::Path;

use super::{load, Ctx};
use crate::cli::ClusterArgs;
use crate::error::{Error, Result};
use crate::profile;

/// `rpiimg cluster`: the management host's files.
pub(super) fn run(ctx: &Ctx, args: &ClusterArgs, out: &mut dyn Write) -> Result<i32> {
    let ClusterArgs {
        profile: name,
        out: out_dir,
        base,
        kolla_inventory: stock,
        force,
    } = args;
    let progress = ctx.progress;
    let path = profile::find(name, &ctx.profiles).map_err(|e| Error::Usage(e.to_string()))?;
    let mut p = profile::load_cluster(&path).map_err(|e| Error::Usage(e.to_string()))?;
    load::check_valid(&p, &path)?;
    load::attach_store(&mut p, progress)?;
    // The stock inventory is ~30 KB; 4 MiB bounds a wrong argument.
    let stock_text = stock
        .as_deref()
        .map(|f| crate::hostfile::read_text(f, None, 4 << 20))
        .transpose()
        .map_err(|e| Error::Usage(format!("--kolla-inventory {e}")))?;
    let dir = out_dir.as_deref().map_or_else(
        || {
            p.resolve(&p.output.dir)
                .join(format!("mgmt-{}", p.cluster.name))
        },
        Path::to_path_buf,
    );
    // The release follows the base's OS: read its os-release.
    let img = load::open_base(&p, base, &ctx.cache, progress)?;
    let (id, codename) = load::os_release(&img)?;
    let rel = crate::kolla::choose(p.kolla.release.as_deref(), &id, &codename)
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    let written = crate::builder::write_bundle(&p, rel, &dir, stock_text.as_deref(), *force)?;
    writeln!(
        out,
        "cluster {}: {} files for the management host in {} (Kolla-Ansible {}, kolla-ansible {}; see its README)",
        p.cluster.name,
        written.len(),
        crate::output::display_path(&dir),
        rel.series,
        rel.version
    )
    .map_err(Error::Output)?;
    Ok(0)
}
