//! `rpiimg plan`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{emit, load, Ctx};
use crate::cli::PlanArgs;
use crate::error::{Error, Result};
use crate::plan::{Change, Plan, Redaction};

/// `rpiimg plan`: the changes a build would make, as text or JSON (the
/// texts that depend on the profile's secrets redacted, in the JSON and
/// under `--render-to`, unless `--show-secrets`).
pub(super) fn run(ctx: &Ctx, args: &PlanArgs, out: &mut dyn Write) -> Result<i32> {
    let progress = ctx.progress;
    let p = load::load_profile(&args.profile, progress)?;
    let img = load::open_base(&p, &args.base, &ctx.cache, progress)?;
    let (plan, facts) = load::plan_and_facts(&p, &img)?;
    let hidden = if args.show_secrets {
        Redaction::none()
    } else {
        Redaction::of(&plan, &p, &facts)
    };
    if let Some(dir) = &args.render_to {
        let n = render_to(&plan, &hidden, dir)?;
        if !progress.is_quiet() {
            eprintln!(
                "rpiimg: {n} files rendered under {}",
                crate::output::display_path(dir)
            );
        }
    }
    emit(out, &plan.to_json(&hidden), args.json, || plan.render())?;
    Ok(0)
}

/// Write the plan's files under `dir` for review, never outside it; a
/// text `hidden` hides is written as the line saying why.
fn render_to(plan: &Plan, hidden: &Redaction, dir: &Path) -> Result<usize> {
    let mut n = 0;
    for (i, c) in plan.changes().enumerate() {
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
            let why = hidden.of_change(i).map(|why| format!("{why}\n"));
            let content = why.as_ref().map_or(&content[..], |w| w.as_bytes());
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
