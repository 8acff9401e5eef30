//! `rpiimg imager-list`.

use std::io::Write;

use super::Ctx;
use crate::cli::ImagerListArgs;
use crate::error::{Error, Result};
use crate::output::imager;

pub(super) fn run(_: &Ctx, args: &ImagerListArgs, out: &mut dyn Write) -> Result<i32> {
    let dest = args
        .output
        .clone()
        .unwrap_or_else(|| args.dir.join(imager::LIST_NAME));
    let written = imager::write(&args.dir, &dest, args.force)?;
    writeln!(out, "{}", crate::output::display_path(&written)).map_err(Error::Output)?;
    Ok(0)
}
