//! `rpiimg ls`.

use std::io::Write;

use super::{open_view, Ctx};
use crate::cli::LsArgs;
use crate::error::{Error, Result};
use crate::fs::Stat;

pub(super) fn run(ctx: &Ctx, args: &LsArgs, out: &mut dyn Write) -> Result<i32> {
    let view = open_view(ctx, &args.image)?;
    let path = &args.path;
    let st = view.stat(path, true)?;
    let entries = if st.kind == crate::ext4::FileType::Directory {
        view.list(path)?
    } else {
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        vec![(name, view.stat(path, false)?)]
    };
    for (name, st) in &entries {
        if args.long {
            writeln!(out, "{}", long_line(name, st))
        } else {
            writeln!(out, "{}", crate::term::escape(name))
        }
        .map_err(Error::Output)?;
    }
    Ok(0)
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
        crate::clock::format_time(st.mtime),
        crate::term::escape(name)
    );
    if let Some(t) = &st.target {
        l.push_str(" -> ");
        l.push_str(&crate::term::escape(t));
    }
    l
}
