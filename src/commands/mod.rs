//! What each subcommand does: open the image, call the library, print.

mod build;
mod flash;
mod fs;

use std::io::{self, Write};

use crate::cli::{Cli, Command, ImageArg};
use crate::error::{Error, Result};
use crate::fs::view::SystemView;
use crate::fs::Stat;
use crate::image::{self, Cache, OpenedImage};
use crate::partition::{self, PartitionTable};
use crate::progress::Progress;

struct Ctx {
    cache: Cache,
    progress: Progress,
}

fn open(ctx: &Ctx, arg: &ImageArg) -> Result<(OpenedImage, PartitionTable)> {
    let img = image::open(&arg.image, arg.sha256.as_deref(), &ctx.cache, ctx.progress)?;
    let table = partition::read(&img.file, img.size)?;
    Ok((img, table))
}

fn open_view(ctx: &Ctx, arg: &ImageArg) -> Result<SystemView> {
    let (img, table) = open(ctx, arg)?;
    Ok(SystemView::open(&img, &table)?.0)
}

/// Run a parsed command line; the exit status on success (1: differences found).
pub fn run(cli: Cli) -> Result<i32> {
    let mut status = 0;
    let ctx = Ctx {
        cache: Cache::new(cli.cache_dir.clone().unwrap_or_else(Cache::default_dir)),
        progress: Progress::auto(cli.quiet),
    };
    let out = io::stdout();
    let mut out = io::BufWriter::new(out.lock());
    let res = match &cli.command {
        Command::Inspect { image, json } => {
            let (img, table) = open(&ctx, image)?;
            let report = crate::inspect::inspect(&img, &table)?;
            if *json {
                let s =
                    serde_json::to_string_pretty(&report).map_err(|e| Error::Output(e.into()))?;
                writeln!(out, "{s}").map_err(Error::Output)
            } else {
                write!(out, "{}", report.render()).map_err(Error::Output)
            }
        }
        Command::Ls { image, path, long } => {
            let view = open_view(&ctx, image)?;
            let st = view.stat(path, true)?;
            let entries = if st.kind == crate::ext4::FileType::Directory {
                view.list(path)?
            } else {
                let name = path.rsplit('/').next().unwrap_or(path).to_string();
                vec![(name, view.stat(path, false)?)]
            };
            entries
                .iter()
                .try_for_each(|(name, st)| {
                    if *long {
                        writeln!(out, "{}", long_line(name, st))
                    } else {
                        writeln!(out, "{}", crate::term::escape(name))
                    }
                })
                .map_err(Error::Output)
        }
        Command::Cat { image, path } => {
            let view = open_view(&ctx, image)?;
            match view.read_to(path, &mut out) {
                Err(Error::Ext4(crate::ext4::Ext4Error::Io(e)))
                    if e.kind() == io::ErrorKind::BrokenPipe =>
                {
                    Ok(())
                }
                other => other.map(|_| ()),
            }
        }
        Command::Flash(args) => {
            status = flash::run(&ctx, args, &mut out)?;
            Ok(())
        }
        Command::ImagerList(args) => {
            let dest = args
                .output
                .clone()
                .unwrap_or_else(|| args.dir.join(crate::output::imager::LIST_NAME));
            let written = crate::output::imager::write(&args.dir, &dest, args.force)?;
            writeln!(out, "{}", crate::output::display_path(&written)).map_err(Error::Output)
        }
        Command::Fs { image, op } => fs::run(&ctx.cache, ctx.progress, image, op, &mut out),
        Command::Plan {
            profile,
            base,
            json,
            render_to,
            show_secrets,
        } => build::run_plan(
            &ctx.cache,
            ctx.progress,
            profile,
            base,
            build::PlanFormat {
                json: *json,
                show_secrets: *show_secrets,
            },
            render_to.as_deref(),
            &mut out,
        ),
        Command::Build {
            profile,
            all,
            base,
            out: out_dir,
            xz,
            no_bmap,
            force,
            threads,
            check_reproducible,
            rotate_host_keys,
            imager_json,
        } => {
            let req = build::BuildRequest {
                profiles: profile,
                all: all.as_deref(),
                base,
                out_dir: out_dir.as_deref(),
                xz: *xz,
                no_bmap: *no_bmap,
                force: *force,
                threads: *threads,
                rotate_host_keys: *rotate_host_keys,
                imager_json: *imager_json,
            };
            if *check_reproducible {
                build::check_reproducible(&ctx.cache, ctx.progress, &req, &mut out)
            } else {
                build::run_build(&ctx.cache, ctx.progress, &req, &mut out)
            }
        }
        Command::Verify {
            images,
            profile,
            base,
            manifest,
            cluster,
            json,
        } => {
            let (checks, st) = build::run_verify(
                &ctx.cache,
                ctx.progress,
                images,
                profile.as_deref(),
                base,
                manifest.as_deref().map(std::path::Path::new),
                *cluster,
            )?;
            status = st;
            if *json {
                let s =
                    serde_json::to_string_pretty(&checks).map_err(|e| Error::Output(e.into()))?;
                writeln!(out, "{s}").map_err(Error::Output)
            } else {
                write!(out, "{}", crate::verify::render(&checks)).map_err(Error::Output)
            }
        }
        Command::Cluster {
            profile,
            out: dir,
            kolla_inventory,
            force,
        } => build::run_cluster(
            ctx.progress,
            profile,
            dir.as_deref(),
            kolla_inventory.as_deref(),
            *force,
            &mut out,
        ),
        Command::Diff { a, b, json, full } => {
            let arg = |p: &std::path::PathBuf| ImageArg {
                image: p.clone(),
                sha256: None,
            };
            let va = open_view(&ctx, &arg(a))?;
            let vb = open_view(&ctx, &arg(b))?;
            let d = crate::diff::diff(&va, &vb, *full)?;
            if !d.is_empty() {
                status = 1;
            }
            if *json {
                let s = serde_json::to_string_pretty(&d).map_err(|e| Error::Output(e.into()))?;
                writeln!(out, "{s}").map_err(Error::Output)
            } else {
                write!(out, "{}", d.render()).map_err(Error::Output)
            }
        }
    };
    // A reader that stops early (`| head`) is not an error.
    match res.and_then(|()| out.flush().map_err(Error::Output)) {
        Err(Error::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(status),
        other => other.map(|()| status),
    }
}

/// `YYYY-MM-DD HH:MM` in UTC.
pub fn format_time(t: i64) -> String {
    let (y, m, d, hh, mm, _) = crate::clock::civil(t);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

fn long_line(name: &str, st: &Stat) -> String {
    // Names and targets come from the image: escaped as `ls -b` does.
    let mut l = format!(
        "{} {:>3} {:>5} {:>5} {:>10} {} {}",
        st.mode_string(),
        st.nlink,
        st.uid,
        st.gid,
        st.size,
        format_time(st.mtime),
        crate::term::escape(name)
    );
    if let Some(t) = &st.target {
        l.push_str(" -> ");
        l.push_str(&crate::term::escape(t));
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00");
    }
}
