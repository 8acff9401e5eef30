//! `rpiimg cache`: what the decompression cache holds, and clearing it
//! without pulling an entry from under a run that fills or uses it.

use std::io::Write;

use super::{emit, Ctx};
use crate::cli::{CacheArgs, CacheOp};
use crate::error::{Error, Result};
use crate::progress::human_bytes;

pub(super) fn run(ctx: &Ctx, args: &CacheArgs, out: &mut dyn Write) -> Result<i32> {
    let cache = &ctx.cache;
    let dir = cache.dir();
    match &args.op {
        CacheOp::List { json } => {
            let entries = cache.list().map_err(Error::host(dir))?;
            emit(out, &entries, *json, || {
                let mut t = String::new();
                for e in &entries {
                    t.push_str(&format!(
                        "{}  {:>10}  {:>10} on disk  {}\n",
                        e.source_sha256,
                        human_bytes(e.size),
                        human_bytes(e.disk_bytes),
                        e.state.describe()
                    ));
                }
                let disk: u64 = entries.iter().map(|e| e.disk_bytes).sum();
                t.push_str(&format!(
                    "{} entr{}, {} on disk, in {}\n",
                    entries.len(),
                    if entries.len() == 1 { "y" } else { "ies" },
                    human_bytes(disk),
                    crate::term::escape(&dir.display().to_string())
                ));
                t
            })?;
            Ok(0)
        }
        CacheOp::Clear { sha256, all } => {
            let keys = cache.all_keys().map_err(Error::host(dir))?;
            let chosen: Vec<String> = match sha256 {
                Some(want) if !*all => vec![one_key(&keys, want, dir)?],
                _ => keys,
            };
            let (mut freed, mut kept) = (0u64, 0usize);
            for k in &chosen {
                match cache.remove(k).map_err(Error::host(dir))? {
                    Some(n) => {
                        freed = freed.saturating_add(n);
                        writeln!(out, "removed {k}").map_err(Error::Output)?;
                    }
                    None => {
                        kept += 1;
                        writeln!(
                            out,
                            "kept {k}: another rpiimg run is filling or using it; clear it again once that run has ended"
                        )
                        .map_err(Error::Output)?;
                    }
                }
            }
            writeln!(
                out,
                "{} of {} entr{} removed, {} freed",
                chosen.len() - kept,
                chosen.len(),
                if chosen.len() == 1 { "y" } else { "ies" },
                human_bytes(freed)
            )
            .map_err(Error::Output)?;
            Ok(i32::from(kept > 0))
        }
    }
}

/// The one key `want` names: itself, or a unique prefix of 8+ digits.
fn one_key(keys: &[String], want: &str, dir: &std::path::Path) -> Result<String> {
    let w = want.trim().to_ascii_lowercase();
    if w.len() < 8 || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Usage(format!(
            "{}: not a cache key: give the .xz's sha256 (64 hex digits, or a unique prefix of at least 8) as `rpiimg cache list` shows it",
            crate::term::escape(want)
        )));
    }
    let hits: Vec<&String> = keys.iter().filter(|k| k.starts_with(&w)).collect();
    match hits.as_slice() {
        [k] => Ok((*k).clone()),
        [] => Err(Error::Usage(format!(
            "no cache entry {w} in {}; `rpiimg cache list` shows the entries",
            crate::term::escape(&dir.display().to_string())
        ))),
        _ => Err(Error::Usage(format!(
            "{w} names {} cache entries; give more digits",
            hits.len()
        ))),
    }
}
