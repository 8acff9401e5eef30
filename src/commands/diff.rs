//! `rpiimg diff`.

use std::io::Write;

use super::{emit, open_view, Ctx};
use crate::cli::{DiffArgs, ImageArg};
use crate::error::Result;

/// Exit status 1 when the images differ.
pub(super) fn run(ctx: &Ctx, args: &DiffArgs, out: &mut dyn Write) -> Result<i32> {
    let arg = |p: &std::path::PathBuf| ImageArg {
        image: p.clone(),
        sha256: None,
    };
    let a = open_view(ctx, &arg(&args.a))?;
    let b = open_view(ctx, &arg(&args.b))?;
    let d = crate::diff::diff(&a, &b, args.full)?;
    emit(out, &d, args.json, || d.render())?;
    Ok(i32::from(!d.is_empty()))
}
