//! `rpiimg flash`: pair images with cards, show them, confirm, write.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::Ctx;
use crate::cli::FlashArgs;
use crate::error::{Error, Result};
use crate::flash::{self, sysfs::SysRoot};

fn pairs(args: &FlashArgs) -> Result<Vec<(PathBuf, PathBuf)>> {
    if let Some(dir) = &args.cluster {
        return flash::cluster_pairs(dir, &args.devices);
    }
    args.pairs
        .iter()
        .map(|p| {
            // Devices have no '=' in their names; an image path may.
            p.rsplit_once('=')
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{}: expected IMAGE=DEVICE, e.g. out/ost01.img=/dev/sdb",
                        crate::term::escape(p)
                    ))
                })
        })
        .collect()
}

/// Ask on the terminal; without one, only `--yes` goes ahead.
fn confirm(listing: &str, devices: bool) -> Result<()> {
    eprint!("{listing}");
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Usage(
            "not confirmed: stdin is not a terminal; check the list above and add --yes".into(),
        ));
    }
    eprint!(
        "Everything on {} is overwritten. Type yes to write: ",
        if devices {
            "these cards"
        } else {
            "these files"
        }
    );
    let _ = io::stderr().flush();
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(Error::Output)?;
    if line.trim() == "yes" {
        Ok(())
    } else {
        Err(Error::Usage("not confirmed: nothing was written".into()))
    }
}

pub(super) fn run(ctx: &Ctx, args: &FlashArgs, out: &mut dyn Write) -> Result<i32> {
    let req = flash::Request {
        pairs: pairs(args)?,
        to_file: args.to_file,
        allow_fixed: args.allow_fixed,
        full: args.full,
    };
    let prep = flash::prepare(&req, &SysRoot::new("/"), &ctx.cache, ctx.progress)?;
    if args.yes {
        if !ctx.progress.is_quiet() {
            eprint!("{}", prep.listing());
        }
    } else {
        confirm(&prep.listing(), prep.has_devices())?;
    }
    // Ctrl-C (or SIGTERM) stops every writer between chunks; a second one
    // ends the process at once (the cards then show no partition table).
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let registered =
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&cancel))
                .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&cancel)));
        if let Err(e) = registered {
            return Err(Error::Internal(format!("cannot handle Ctrl-C: {e}")));
        }
    }
    // Between the checks and the writing: the tests re-point a target here.
    crate::lock::pause("flash-checked");
    let reports = flash::flash_all(prep, ctx.progress, &cancel);
    let interrupted = cancel.load(Ordering::SeqCst);
    super::emit(out, &reports, args.json, || flash::render(&reports))?;
    Ok(flash::status(&reports, interrupted))
}
