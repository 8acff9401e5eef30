//! `rpiimg cat`.

use std::io::{self, Write};

use super::{open_view, Ctx};
use crate::cli::CatArgs;
use crate::error::{Error, Result};

pub(super) fn run(ctx: &Ctx, args: &CatArgs, out: &mut dyn Write) -> Result<i32> {
    let view = open_view(ctx, &args.image)?;
    match view.read_to(&args.path, out) {
        // A reader that stops early (`| head`) is not an error.
        Err(Error::Ext4(crate::ext4::Ext4Error::Io(e)))
            if e.kind() == io::ErrorKind::BrokenPipe =>
        {
            Ok(0)
        }
        other => other.map(|_| 0),
    }
}
