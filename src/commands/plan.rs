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
    let p = load::load_profile(&args.profile, &ctx.profiles, progress)?;
    let img = load::open_base(&p, &args.base, &ctx.cache, progress)?;
    let (plan, facts) = load::plan_and_facts(&p, &img)?;
    // Which texts depend on a secret is needed under --show-secrets too:
    // those files are rendered private.
    let secret = Redaction::of(&plan, &p, &facts);
    let hidden = if args.show_secrets {
        Redaction::none()
    } else {
        secret.clone()
    };
    if let Some(dir) = &args.render_to {
        let n = render_to(&plan, &hidden, &secret, dir)?;
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
/// text `hidden` hides is written as the line saying why. A file whose text
/// depends on a secret (`secret`) is rendered without group and other
/// permission bits. Every path is checked before anything is written.
fn render_to(plan: &Plan, hidden: &Redaction, secret: &Redaction, dir: &Path) -> Result<usize> {
    let mut files = Vec::new();
    for (i, c) in plan.changes().enumerate() {
        if let Change::WriteFile {
            path,
            content,
            mode,
            ..
        } = c
        {
            let rel: PathBuf = crate::path::components(&crate::path::normalize(path)).collect();
            check_render_path(dir, &rel)?;
            let why = hidden.of_change(i).map(|why| format!("{why}\n"));
            let mut mode = u32::from(*mode) & 0o7777;
            if why.is_none() && secret.of_change(i).is_some() {
                mode &= !0o077;
            }
            files.push((dir.join(&rel), why, content, mode));
        }
    }
    for (dest, why, content, mode) in &files {
        let content = why.as_ref().map_or(&content[..], |w| w.as_bytes());
        write_fresh(dest, content, *mode)?;
    }
    Ok(files.len())
}

/// Refuse what under `dir` would carry a write elsewhere or into someone
/// else's hands: a symbolic link on the way (say DIR/etc -> /etc), or a
/// directory or file there that another user owns (they could swap a
/// directory for a link between this check and the write, or read what is
/// written into their file).
fn check_render_path(dir: &Path, rel: &Path) -> Result<()> {
    let mut at = dir.to_path_buf();
    let check = |at: &Path| -> Result<()> {
        let Ok(m) = std::fs::symlink_metadata(at) else {
            return Ok(());
        };
        if m.file_type().is_symlink() {
            return Err(Error::Usage(format!(
                "--render-to: {} is a symbolic link; render into an empty directory",
                at.display()
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let me = rustix::process::geteuid().as_raw();
            if m.uid() != me {
                return Err(Error::Usage(format!(
                    "--render-to: {} belongs to another user (uid {}); render into a directory of your own",
                    at.display(),
                    m.uid()
                )));
            }
        }
        Ok(())
    };
    check(&at)?;
    for c in rel.components() {
        at.push(c);
        check(&at)?;
    }
    Ok(())
}

/// Write `dest` as a new file: the bytes go into a temporary file made
/// 0600 beside it, which gets `mode` and then the name. A file already
/// there is replaced, never written into, so whoever could read it (or
/// holds another link to it) never sees the new text.
fn write_fresh(dest: &Path, content: &[u8], mode: u32) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(Error::host(parent))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".rpiimg-render-")
        .tempfile_in(parent)
        .map_err(Error::host(parent))?;
    tmp.write_all(content).map_err(Error::host(tmp.path()))?;
    // Modes matter to reviewers' tools (netplan refuses world-readable files).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
            .map_err(Error::host(tmp.path()))?;
    }
    tmp.persist(dest).map_err(|e| Error::host(dest)(e.error))?;
    Ok(())
}
