//! One module per subcommand, each `run(ctx, args, out)` returning the
//! exit status; here only what they share: the context, opening an image,
//! and printing a report as text or JSON.

mod build;
mod cache;
mod cat;
mod cluster;
mod diff;
mod flash;
mod fs;
mod imager_list;
mod inspect;
mod load;
mod ls;
mod plan;
mod verify;

use std::io::{self, Write};

use crate::cli::{Cli, Command, ImageArg};
use crate::error::{Error, Result};
use crate::fs::view::SystemView;
use crate::image::{self, Cache, OpenedImage};
use crate::partition::{self, PartitionTable};
use crate::progress::Progress;

/// What every command gets: the cache of decompressed bases and how to
/// report progress.
struct Ctx {
    cache: Cache,
    progress: Progress,
    /// Where profile names are looked up (`--profiles`, `RPIIMG_PROFILES`).
    profiles: std::path::PathBuf,
}

/// Open an image to read it (a shared lock: see `image::open_for`).
fn open(ctx: &Ctx, arg: &ImageArg) -> Result<(OpenedImage, PartitionTable)> {
    open_for(ctx, arg, crate::lock::Access::Shared)
}

fn open_for(
    ctx: &Ctx,
    arg: &ImageArg,
    access: crate::lock::Access,
) -> Result<(OpenedImage, PartitionTable)> {
    let img = image::open_for(
        &arg.image,
        arg.sha256.as_deref(),
        &ctx.cache,
        ctx.progress,
        access,
    )?;
    let table = partition::read(&img.file, img.size)?;
    Ok((img, table))
}

fn open_view(ctx: &Ctx, arg: &ImageArg) -> Result<SystemView> {
    let (img, table) = open(ctx, arg)?;
    Ok(SystemView::open(&img, &table)?.0)
}

/// Print a report: pretty JSON with `json`, else its text.
fn emit<T: serde::Serialize>(
    out: &mut dyn Write,
    report: &T,
    json: bool,
    text: impl FnOnce() -> String,
) -> Result<()> {
    if json {
        let s = serde_json::to_string_pretty(report).map_err(|e| Error::Output(e.into()))?;
        writeln!(out, "{s}").map_err(Error::Output)
    } else {
        write!(out, "{}", text()).map_err(Error::Output)
    }
}

/// Whether the command line asks for JSON: its errors are then a JSON
/// object too (see [`Error::to_json`]).
pub fn wants_json(cli: &Cli) -> bool {
    match &cli.command {
        Command::Inspect(a) => a.json,
        Command::Plan(a) => a.json,
        Command::Verify(a) => a.json,
        Command::Diff(a) => a.json,
        Command::Flash(a) => a.json,
        Command::Cache(a) => matches!(a.op, crate::cli::CacheOp::List { json: true }),
        Command::Fs(a) => matches!(a.op, crate::cli::FsOp::Stat { json: true, .. }),
        _ => false,
    }
}

/// Run a parsed command line; the exit status on success (1: differences
/// found or a check failed; 130: interrupted).
pub fn run(cli: Cli) -> Result<i32> {
    let ctx = Ctx {
        cache: Cache::new(cli.cache_dir.clone().unwrap_or_else(Cache::default_dir)),
        progress: Progress::auto(cli.quiet),
        profiles: crate::profile::search_root(cli.profiles.as_deref()),
    };
    // An interrupted run removes its partial files before it exits; flash
    // stops its writers on a signal itself and reports what each card holds.
    if !matches!(cli.command, Command::Flash(_)) {
        crate::partial::remove_on_signals();
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let out: &mut dyn Write = &mut out;
    let res = match &cli.command {
        Command::Inspect(a) => inspect::run(&ctx, a, out),
        Command::Ls(a) => ls::run(&ctx, a, out),
        Command::Cat(a) => cat::run(&ctx, a, out),
        Command::Plan(a) => plan::run(&ctx, a, out),
        Command::Build(a) => build::run(&ctx, a, out),
        Command::Verify(a) => verify::run(&ctx, a, out),
        Command::Cluster(a) => cluster::run(&ctx, a, out),
        Command::Diff(a) => diff::run(&ctx, a, out),
        Command::Flash(a) => flash::run(&ctx, a, out),
        Command::ImagerList(a) => imager_list::run(&ctx, a, out),
        Command::Fs(a) => fs::run(&ctx, a, out),
        Command::Cache(a) => cache::run(&ctx, a, out),
    };
    // A reader that stops early (`| head`) is not an error.
    match res.and_then(|status| out.flush().map(|()| status).map_err(Error::Output)) {
        Err(Error::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        other => other,
    }
}
