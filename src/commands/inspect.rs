//! `rpiimg inspect`.

use std::io::Write;

use super::{emit, open, Ctx};
use crate::cli::InspectArgs;
use crate::error::Result;

pub(super) fn run(ctx: &Ctx, args: &InspectArgs, out: &mut dyn Write) -> Result<i32> {
    let (img, table) = open(ctx, &args.image)?;
    let report = crate::inspect::inspect(&img, &table)?;
    emit(out, &report, args.json, || report.render())?;
    Ok(0)
}
