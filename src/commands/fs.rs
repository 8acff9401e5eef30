//! `rpiimg fs`: edits of an image in place, one transaction per command
//! (or per batch file).

use crate::path::PathError;
use crate::userdb::Db;
use crate::value::{Mode, OwnerSpec};
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::cli::{BatchLine, FsArgs, FsOp};
use crate::error::{Error, Result};
use crate::ext4::write::{Content, Meta};
use crate::fs::edit::ImageEdit;
use crate::fs::view::SystemView;

/// Owners resolved against the image's own user database (the same
/// resolution a profile's `owner` gets, see `OwnerSpec::resolve`).
struct Ids {
    passwd: Db,
    group: Db,
}

impl Ids {
    fn load(edit: &ImageEdit) -> Result<Self> {
        let db =
            |p: &str| -> Result<Db> { Ok(Db::parse(&edit.read_root_text(p)?.unwrap_or_default())) };
        Ok(Ids {
            passwd: db("/etc/passwd")?,
            group: db("/etc/group")?,
        })
    }

    fn owner(&self, o: &OwnerSpec) -> Result<(u32, u32)> {
        o.resolve(&self.passwd, &self.group).map_err(Error::Usage)
    }

    /// `--owner` when given, else root (the commands' default).
    fn owner_or_root(&self, o: Option<&OwnerSpec>) -> Result<(u32, u32)> {
        o.map_or(Ok((0, 0)), |o| self.owner(o))
    }
}

fn basename(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

/// Apply one edit to the open transaction. `base` anchors relative local paths.
fn apply(edit: &mut ImageEdit, ids: &Ids, op: &FsOp, base: &Path) -> Result<String> {
    Ok(match op {
        FsOp::Put {
            local,
            path,
            mode,
            owner,
        } => put(edit, ids, local, path, *mode, owner.as_ref(), base)?,
        FsOp::Mkdir {
            parents,
            path,
            mode,
            owner,
        } => {
            let (uid, gid) = ids.owner_or_root(owner.as_ref())?;
            edit.mkdir(
                path,
                Meta {
                    mode: mode.bits(),
                    uid,
                    gid,
                },
                *parents,
            )?;
            format!("mkdir {path}")
        }
        FsOp::Ln {
            symbolic,
            target,
            path,
            owner,
        } => {
            if *symbolic {
                let (uid, gid) = ids.owner_or_root(owner.as_ref())?;
                edit.symlink(path, target, uid, gid)?;
                format!("ln -s {target} {path}")
            } else {
                edit.link(target, path)?;
                format!("ln {target} {path}")
            }
        }
        FsOp::Rm {
            recursive,
            force,
            path,
        } => match edit.remove(path, *recursive) {
            Err(Error::Path(PathError::NotFound(_))) if *force => {
                format!("rm {path} (absent)")
            }
            other => {
                other?;
                format!("rm {path}")
            }
        },
        FsOp::Mv { from, to } => {
            let dest = if edit.is_dir(to)? == Some(true) && edit.is_dir(from)?.is_some() {
                format!("{}/{}", to.trim_end_matches('/'), basename(from))
            } else {
                to.clone()
            };
            edit.rename(from, &dest)?;
            format!("mv {from} {dest}")
        }
        FsOp::Chmod {
            mode,
            path,
            recursive,
        } => {
            edit.chmod(path, mode.bits(), *recursive)?;
            format!("chmod {mode} {path}")
        }
        FsOp::Chown {
            owner,
            path,
            recursive,
        } => {
            let (uid, gid) = ids.owner(owner)?;
            edit.chown(path, uid, gid, *recursive)?;
            format!("chown {owner} {path}")
        }
        FsOp::Stat { .. } | FsOp::Batch { .. } => {
            return Err(Error::Usage(
                "stat and batch cannot appear inside a batch file".into(),
            ))
        }
    })
}

/// `fs put`: a host file streamed into the image; an existing directory
/// (or a path ending in `/`) receives it under its own name.
fn put(
    edit: &mut ImageEdit,
    ids: &Ids,
    local: &Path,
    path: &str,
    mode: Option<Mode>,
    owner: Option<&OwnerSpec>,
    base: &Path,
) -> Result<String> {
    let local = if local.is_absolute() {
        local.to_path_buf()
    } else {
        base.join(local)
    };
    let md = std::fs::metadata(&local).map_err(Error::host(&local))?;
    if !md.is_file() {
        return Err(Error::Usage(format!(
            "{}: not a regular file",
            local.display()
        )));
    }
    let mode = match mode {
        Some(m) => m.bits(),
        None => local_mode(&md),
    };
    let (uid, gid) = ids.owner_or_root(owner)?;
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = if path.ends_with('/') || edit.is_dir(path)? == Some(true) {
        format!("{}/{name}", path.trim_end_matches('/'))
    } else {
        path.to_string()
    };
    edit.write_file(
        &dest,
        Content::HostFile {
            path: local.clone(),
            len: md.len(),
        },
        Meta { mode, uid, gid },
    )?;
    Ok(format!(
        "put {} -> {dest} ({} bytes)",
        local.display(),
        md.len()
    ))
}

#[cfg(unix)]
fn local_mode(md: &std::fs::Metadata) -> u16 {
    use std::os::unix::fs::PermissionsExt;
    u16::try_from(md.permissions().mode() & 0o7777).unwrap_or(0o644)
}

#[cfg(not(unix))]
fn local_mode(_: &std::fs::Metadata) -> u16 {
    0o644
}

/// Split a batch line into words: whitespace-separated, with '…' and "…"
/// quoting and backslash escapes.
pub(super) fn split_words(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                have = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => match chars.next() {
                Some(n) => {
                    cur.push(n);
                    have = true;
                }
                None => return Err("line ends with a backslash".into()),
            },
            (_, c) => {
                cur.push(c);
                have = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if have {
        out.push(cur);
    }
    Ok(out)
}

/// Read a batch file into edits, reporting the first bad line with its number.
pub(super) fn parse_batch(file: &Path) -> Result<Vec<FsOp>> {
    // A batch file is a short list of edits; a FIFO or a device would
    // be read forever.
    let text =
        crate::hostfile::read_text(file, None, crate::hostfile::TEXT_CAP).map_err(Error::Usage)?;
    let mut ops = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let bad = |why: String| Error::Usage(format!("{}:{}: {why}", file.display(), n + 1));
        let words = split_words(t).map_err(bad)?;
        let parsed = BatchLine::try_parse_from(words).map_err(|e| {
            let msg = e.to_string();
            bad(msg
                .lines()
                .next()
                .unwrap_or("invalid line")
                .trim_start_matches("error: ")
                .to_string())
        })?;
        ops.push(parsed.op);
    }
    Ok(ops)
}

/// `rpiimg fs`: one edit, or a batch of them, as one transaction.
pub(super) fn run(ctx: &super::Ctx, args: &FsArgs, out: &mut dyn Write) -> Result<i32> {
    let (arg, op) = (&args.image, &args.op);
    // An edit holds the image's lock exclusively from before its first
    // read until its commit is done: two edits at once would each stage
    // over what the other is replacing (a lost edit, broken ref counts).
    let access = if matches!(op, FsOp::Stat { .. }) {
        crate::lock::Access::Shared
    } else {
        crate::lock::Access::Exclusive
    };
    let (opened, table) = super::open_for(ctx, arg, access)?;
    if let FsOp::Stat { path, json } = op {
        let (view, _) = SystemView::open(&opened, &table)?;
        let st = view.stat(path, false)?;
        super::emit(out, &st, *json, || {
            format!(
                "path   {path}\nfs     {}\ntype   {:?}\nmode   {:04o} ({})\nowner  {}:{}\nsize   {}\nlinks  {}\nmtime  {} UTC{}\n",
                st.fs,
                st.kind,
                st.mode,
                st.mode_string(),
                st.uid,
                st.gid,
                st.size,
                st.nlink,
                crate::clock::format_time(st.mtime),
                st.target.as_ref().map(|t| format!("\ntarget {t}")).unwrap_or_default()
            )
        })?;
        return Ok(0);
    }
    let (ops, base): (Vec<FsOp>, PathBuf) = match op {
        FsOp::Batch { file } => (
            parse_batch(file)?,
            file.parent().map(Path::to_path_buf).unwrap_or_default(),
        ),
        other => (vec![other.clone()], PathBuf::from(".")),
    };
    let mut edit = ImageEdit::open(&arg.image, &opened, &table, crate::clock::edit_time()?)?;
    let ids = Ids::load(&edit)?;
    let mut done = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let what = apply(&mut edit, &ids, op, &base).map_err(|e| {
            if ops.len() > 1 {
                Error::Usage(format!(
                    "edit {} of {}: {e}; nothing was changed",
                    i + 1,
                    ops.len()
                ))
            } else {
                e
            }
        })?;
        done.push(what);
    }
    crate::lock::pause("fs-commit");
    edit.commit()?;
    if !ctx.progress.is_quiet() {
        for d in &done {
            eprintln!("rpiimg: {d}");
        }
        eprintln!(
            "rpiimg: {} edit(s) committed to {}",
            done.len(),
            crate::output::display_path(&arg.image)
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"put "a b" '/etc/x y' c\ d"#).unwrap(),
            vec!["put", "a b", "/etc/x y", "c d"]
        );
        assert_eq!(
            split_words("ln -s '' x").unwrap(),
            vec!["ln", "-s", "", "x"]
        );
        assert!(split_words("put 'a").is_err());
    }

    #[test]
    fn owners_come_from_the_image() {
        // The resolution itself is value::OwnerSpec's (tested there).
        let ids = Ids {
            passwd: Db::parse("root:x:0:0::/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n"),
            group: Db::parse("root:x:0:\nadm:x:4:pi\npi:x:1000:\n"),
        };
        let o = |s: &str| ids.owner(&s.parse().unwrap());
        assert_eq!(o("pi:adm").unwrap(), (1000, 4));
        assert_eq!(o("pi").unwrap(), (1000, 1000));
        assert_eq!(o("5:6").unwrap(), (5, 6));
        assert!(o("nobody").is_err());
    }
}
