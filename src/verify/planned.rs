//! Checking an image against a plan (or a build manifest): every planned
//! item, reading only the paths the plan names.

use std::collections::BTreeMap;

use super::Check;
use crate::error::Result;
use crate::ext4::FileType;
use crate::fs::view::SystemView;
use crate::manifest::Recorded;
use crate::plan::{Change, Plan};

/// The changes a plan would record, as a build's manifest records them.
pub(crate) fn from_plan(plan: &Plan) -> Vec<Recorded> {
    plan.steps
        .iter()
        .flat_map(|s| s.changes.iter().map(|c| Recorded::new(&s.intent, c)))
        .collect()
}

fn owner_mode(view: &SystemView, p: &str, mode: u16, uid: u32, gid: u32) -> Result<Option<String>> {
    let st = view.stat(p, false)?;
    if st.fs != "ext4" {
        return Ok(None);
    }
    let mut bad = Vec::new();
    if st.mode != mode {
        bad.push(format!("mode {:04o}, expected {mode:04o}", st.mode));
    }
    if (st.uid, st.gid) != (uid, gid) {
        bad.push(format!("owner {}:{}, expected {uid}:{gid}", st.uid, st.gid));
    }
    Ok((!bad.is_empty()).then(|| bad.join(", ")))
}

fn exists(view: &SystemView, p: &str) -> Result<bool> {
    view.exists(p)
}

/// Check the last planned item for each path.
pub(crate) fn check(view: &SystemView, expects: &[Recorded]) -> Result<Vec<Check>> {
    let mut last: BTreeMap<&str, &Recorded> = BTreeMap::new();
    for e in expects {
        last.insert(e.change.path(), e);
    }
    let mut out = Vec::new();
    for (path, e) in last {
        let c = match &e.change {
            Change::WriteFile { mode, uid, gid, .. } => {
                let what = format!("file {path}");
                if !exists(view, path)? {
                    Check::new(what, false, "missing".into())
                } else if view.stat(path, false)?.kind != FileType::Regular {
                    Check::new(what, false, "not a regular file".into())
                } else {
                    let got = crate::bytes::hex(&view.sha256(path)?);
                    if e.sha256.as_deref().is_some_and(|want| want != got) {
                        Check::new(
                            what,
                            false,
                            format!(
                                "content sha256 {got}, expected {}",
                                e.sha256.as_deref().unwrap_or("")
                            ),
                        )
                    } else {
                        let bad = owner_mode(view, path, *mode, *uid, *gid)?;
                        Check::new(what, bad.is_none(), bad.unwrap_or_default())
                    }
                }
            }
            Change::Mkdir { mode, uid, gid, .. } => {
                let what = format!("directory {path}");
                if !exists(view, path)? || view.stat(path, false)?.kind != FileType::Directory {
                    Check::new(what, false, "missing or not a directory".into())
                } else {
                    let bad = owner_mode(view, path, *mode, *uid, *gid)?;
                    Check::new(what, bad.is_none(), bad.unwrap_or_default())
                }
            }
            Change::Symlink { target, .. } => {
                let what = format!("link {path} -> {target}");
                if !exists(view, path)? {
                    Check::new(what, false, "missing".into())
                } else {
                    let st = view.stat(path, false)?;
                    let ok = st.kind == FileType::Symlink && st.target.as_deref() == Some(target);
                    Check::new(
                        what,
                        ok,
                        format!("found {:?} -> {}", st.kind, st.target.unwrap_or_default()),
                    )
                }
            }
            Change::Remove { .. } | Change::RemoveTree { .. } => {
                let gone = !exists(view, path)?;
                Check::new(format!("{path} removed"), gone, "still present".into())
            }
            Change::Rename { from, to } => {
                let ok = exists(view, to)? && !exists(view, from)?;
                Check::new(
                    format!("{from} moved to {to}"),
                    ok,
                    format!(
                        "{to} present: {}, {from} present: {}",
                        exists(view, to)?,
                        exists(view, from)?
                    ),
                )
            }
            Change::Chown { uid, gid, .. } => {
                let what = format!("owner of {path}");
                if !exists(view, path)? {
                    Check::new(what, false, "missing".into())
                } else {
                    let st = view.stat(path, false)?;
                    let ok = (st.uid, st.gid) == (*uid, *gid);
                    Check::new(
                        what,
                        ok,
                        format!("{}:{}, expected {uid}:{gid}", st.uid, st.gid),
                    )
                }
            }
        };
        out.push(c);
    }
    // The image's unit, preset and drop-in files, read once for both.
    let facts = crate::plan::ImageFacts::from_view(view)?;
    out.extend(presets(&facts, expects));
    out.extend(dropins(&facts, expects));
    Ok(out)
}

/// Every unit the plan enabled, disabled or masked keeps that state through
/// systemd's first-boot preset pass (enable-only) and a full
/// `systemctl preset-all`, under the preset files the image carries.
pub(crate) fn presets(facts: &crate::plan::ImageFacts, expects: &[Recorded]) -> Vec<Check> {
    use crate::os::presets::{Action, Presets};
    use crate::plan::units::{self, Intent};
    let intents = units::intents(expects.iter().map(|e| &e.change), facts);
    let policy = Presets::from_files(&facts.presets);
    let first_boot = facts
        .file("/etc/machine-id")
        .is_none_or(|m| m.trim() == "uninitialized");
    let mut out = Vec::new();
    for (unit, intent) in intents {
        let (file, instance) = match units::template(&unit) {
            Some((t, i)) => (t, Some(i)),
            None => (unit.clone(), None),
        };
        let v = policy.query(&file);
        let why = v
            .origin
            .clone()
            .unwrap_or_else(|| "no preset line matches it, and systemd's default is enable".into());
        // Would `systemctl preset` enable this unit (this instance)?
        let enables = v.action == Action::Enable
            && instance.as_ref().is_none_or(|i| {
                if v.instances.is_empty() {
                    facts
                        .units
                        .get(&file)
                        .and_then(|u| u.default_instance.as_ref())
                        == Some(i)
                } else {
                    v.instances.contains(i)
                }
            });
        let what = format!("unit {unit} stays {intent} through systemd's presets");
        let c = match intent {
            Intent::Masked => Check::new(what, true, String::new()),
            Intent::Disabled => Check::new(
                what,
                !enables,
                format!(
                    "{why}: {} would enable it again; mask it or add a `disable {file}` preset line before that one",
                    if first_boot {
                        "the first boot (machine-id uninitialized or missing) or `systemctl preset-all`"
                    } else {
                        "`systemctl preset-all`"
                    }
                ),
            ),
            Intent::Enabled => Check::new(
                what,
                v.action == Action::Ignore || enables,
                format!("{why}: `systemctl preset-all` would disable it; add an `enable {file}` preset line before that one"),
            ),
        };
        out.push(c);
    }
    out
}

/// Every drop-in the plan wrote still decides its settings: no other file
/// of its directory (one sorting after it where the last file wins, before
/// it where the first does) sets one of them to another value.
pub(crate) fn dropins(facts: &crate::plan::ImageFacts, expects: &[Recorded]) -> Vec<Check> {
    let mut out = Vec::new();
    for e in expects {
        let Change::WriteFile { path, .. } = &e.change else {
            continue;
        };
        if crate::os::dropins::dir_of(path).is_none() {
            continue;
        }
        let o = crate::os::dropins::overrides(path, &facts.dropins);
        out.push(Check::new(
            format!("{path} decides its settings (no other file overrides one)"),
            o.is_empty(),
            o.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    out
}
