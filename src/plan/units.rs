//! `systemctl enable/disable/mask` as file changes, from the units'
//! `[Install]` sections read from the image.

use std::collections::BTreeMap;

use super::facts::ImageFacts;
use super::Change;

const SYS: &str = "/etc/systemd/system";

/// (template file, instance) for `name@inst.service`; `None` for plain units.
pub(crate) fn template(unit: &str) -> Option<(String, String)> {
    let (base, rest) = unit.split_once('@')?;
    let (inst, suffix) = rest.rsplit_once('.')?;
    (!inst.is_empty()).then(|| (format!("{base}@.{suffix}"), inst.to_string()))
}

/// The links `systemctl enable UNIT` makes (following `Also=`).
pub(crate) fn enable(f: &ImageFacts, unit: &str) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    enable_into(f, unit, &mut out, &mut seen)?;
    Ok(out)
}

fn enable_into(
    f: &ImageFacts,
    unit: &str,
    out: &mut Vec<Change>,
    seen: &mut Vec<String>,
) -> Result<(), String> {
    if seen.iter().any(|s| s == unit) {
        return Ok(());
    }
    seen.push(unit.to_string());
    let (file, instance) = match template(unit) {
        Some((t, i)) => (t, Some(i)),
        None => (unit.to_string(), None),
    };
    let inst = f
        .units
        .get(&file)
        .ok_or_else(|| format!("unit {file} is not installed in the image"))?;
    let target = format!("{}/{file}", f.unit_dir);
    // A template enabled without an instance uses DefaultInstance.
    let instance = instance.or_else(|| {
        inst.default_instance
            .clone()
            .filter(|_| file.contains("@."))
    });
    let with_instance = |n: &str| match &instance {
        Some(i) if n.contains("@.") => n.replacen("@.", &format!("@{i}."), 1),
        _ => n.to_string(),
    };
    if instance.is_none() && file.contains("@.") {
        return Err(format!(
            "unit {file} is a template without DefaultInstance; enable an instance such as {}",
            file.replacen("@.", "@NAME.", 1)
        ));
    }
    let name = with_instance(&file);
    for (dirs, suffix) in [(&inst.wanted_by, "wants"), (&inst.required_by, "requires")] {
        for t in dirs {
            out.push(Change::Symlink {
                path: format!("{SYS}/{t}.{suffix}/{name}"),
                target: target.clone(),
            });
        }
    }
    for a in &inst.alias {
        // systemd gives a template's alias the same instance (foo@.service -> foo@tty1.service).
        out.push(Change::Symlink {
            path: format!("{SYS}/{}", with_instance(a)),
            target: target.clone(),
        });
    }
    for also in &inst.also {
        enable_into(f, also, out, seen)?;
    }
    Ok(())
}

/// Removing every enablement link and alias of a unit (and its `Also=`
/// units), as `systemctl disable` does.
pub(crate) fn disable(f: &ImageFacts, unit: &str) -> Vec<Change> {
    let mut names = vec![unit.to_string()];
    if let Some(i) = f.units.get(unit) {
        names.extend(i.also.iter().cloned());
    }
    let mut out = Vec::new();
    for (path, target) in &f.links {
        let file = target.rsplit('/').next().unwrap_or("");
        let link = path.rsplit('/').next().unwrap_or("");
        if target == "/dev/null" {
            continue;
        }
        if names.iter().any(|n| n == file || n == link) {
            out.push(Change::Remove { path: path.clone() });
        }
    }
    out
}

/// `systemctl mask`: the unit name linked to /dev/null.
/// Enable a unit rpiimg itself writes into /etc/systemd/system: its
/// `<target>.wants` directory and the link to it.
pub(crate) fn enable_own(unit: &str, target: &str) -> [Change; 2] {
    let wants = format!("/etc/systemd/system/{target}.wants");
    [
        Change::Mkdir {
            path: wants.clone(),
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
        Change::Symlink {
            path: format!("{wants}/{unit}"),
            target: format!("/etc/systemd/system/{unit}"),
        },
    ]
}

pub(crate) fn mask(unit: &str) -> Change {
    Change::Symlink {
        path: format!("{SYS}/{unit}"),
        target: "/dev/null".into(),
    }
}

/// The state a unit ends in after a plan's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Intent {
    Enabled,
    Disabled,
    Masked,
}

impl std::fmt::Display for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Intent::Enabled => "enabled",
            Intent::Disabled => "disabled",
            Intent::Masked => "masked",
        })
    }
}

/// The unit named by a link: template links keep the instance of the link
/// name (`getty.target.wants/getty@tty1.service -> getty@.service`).
fn linked_unit(link: &str, target: &str) -> String {
    let file = target.rsplit('/').next().unwrap_or(target);
    match (template(link), file.contains("@.")) {
        (Some((_, inst)), true) => file.replacen("@.", &format!("@{inst}."), 1),
        _ => file.to_string(),
    }
}

/// Every unit the changes enable, disable or mask, with the state it ends
/// in (the last change wins). Derived from the changes alone, so a build
/// manifest gives the same answer as the plan it recorded.
pub(crate) fn intents<'a>(
    changes: impl IntoIterator<Item = &'a Change>,
    f: &ImageFacts,
) -> BTreeMap<String, Intent> {
    // Alias names (`sshd.service`, `dbus-org...`) -> the unit they alias.
    let mut aliases: BTreeMap<&str, &str> = BTreeMap::new();
    for (unit, inst) in &f.units {
        for a in &inst.alias {
            aliases.insert(a, unit);
        }
    }
    let unalias = |n: &str| aliases.get(n).map_or(n.to_string(), |u| (*u).to_string());
    let mut out = BTreeMap::new();
    for c in changes {
        let Some(rel) = c.path().strip_prefix(&format!("{SYS}/")) else {
            continue;
        };
        let (dir, name) = match rel.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, rel),
        };
        let in_deps = dir.is_some_and(|d| d.ends_with(".wants") || d.ends_with(".requires"));
        if dir.is_some() && !in_deps {
            continue;
        }
        match c {
            Change::Symlink { target, .. } if target == "/dev/null" && dir.is_none() => {
                out.insert(name.to_string(), Intent::Masked);
            }
            Change::Symlink { .. } if in_deps => {
                out.insert(name.to_string(), Intent::Enabled);
            }
            Change::Symlink { target, .. } => {
                // An alias made by enabling the unit it points to.
                out.insert(linked_unit(name, target), Intent::Enabled);
            }
            Change::Remove { .. } if in_deps || aliases.contains_key(name) => {
                out.insert(unalias(name), Intent::Disabled);
            }
            _ => {}
        }
    }
    out
}

/// The preset file that pins `intents` (see docs/first-boot.md): sorted
/// before the distribution's presets, so its lines are the first match.
pub(crate) const PRESET_FILE: &str = "/etc/systemd/system-preset/00-rpiimg.preset";

pub(crate) fn preset_text(intents: &BTreeMap<String, Intent>) -> String {
    let mut s = String::from(
        "# Written by rpiimg: the unit states of this node's plan as preset policy.\n\
         # systemd applies presets on the first boot (/etc/machine-id missing or\n\
         # \"uninitialized\") and on `systemctl preset-all`; a unit no line matches\n\
         # is enabled. This file sorts before the distribution's presets, so its\n\
         # lines win. Units that must never run are also masked.\n",
    );
    // Enabled instances of one template share one line.
    let mut templates: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (unit, intent) in intents {
        match (intent, template(unit)) {
            (Intent::Enabled, Some((t, inst))) => templates.entry(t).or_default().push(inst),
            // Disabling a template would disable its other instances too.
            (_, Some(_)) => {}
            (Intent::Enabled, None) => s.push_str(&format!("enable {unit}\n")),
            (Intent::Disabled | Intent::Masked, None) => s.push_str(&format!("disable {unit}\n")),
        }
    }
    for (t, inst) in templates {
        s.push_str(&format!("enable {t} {}\n", inst.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::facts::Install;
    use super::*;

    fn facts() -> ImageFacts {
        let none = super::super::facts::Probed::answer(|_| Ok::<bool, ()>(false)).unwrap();
        let mut f = ImageFacts::new("/lib/systemd/system", none);
        f.units.insert(
            "systemd-networkd.service".into(),
            Install::parse("[Install]\nWantedBy=multi-user.target\nAlso=systemd-networkd.socket\nAlias=dbus-org.freedesktop.network1.service\n"),
        );
        f.units.insert(
            "systemd-networkd.socket".into(),
            Install::parse("[Install]\nWantedBy=sockets.target\n"),
        );
        f.units.insert(
            "getty@.service".into(),
            Install::parse("[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n"),
        );
        f.units.insert(
            "wpa_supplicant@.service".into(),
            Install::parse("[Install]\nWantedBy=multi-user.target\nAlias=wpa@.service\n"),
        );
        f.units.insert(
            "NetworkManager.service".into(),
            Install::parse(
                "[Install]\nWantedBy=multi-user.target\nAlso=NetworkManager-dispatcher.service\n",
            ),
        );
        f.links.insert(
            "/etc/systemd/system/multi-user.target.wants/NetworkManager.service".into(),
            "/lib/systemd/system/NetworkManager.service".into(),
        );
        f.links.insert(
            "/etc/systemd/system/dbus-org.freedesktop.nm-dispatcher.service".into(),
            "/lib/systemd/system/NetworkManager-dispatcher.service".into(),
        );
        f.links.insert(
            "/etc/systemd/system/other.service".into(),
            "/lib/systemd/system/other.service".into(),
        );
        f
    }

    fn paths(c: &[Change]) -> Vec<String> {
        c.iter().map(|c| c.path().to_string()).collect()
    }

    #[test]
    fn enable_follows_also_and_alias() {
        let c = enable(&facts(), "systemd-networkd.service").unwrap();
        assert_eq!(
            paths(&c),
            vec![
                "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
                "/etc/systemd/system/dbus-org.freedesktop.network1.service",
                "/etc/systemd/system/sockets.target.wants/systemd-networkd.socket",
            ]
        );
    }

    #[test]
    fn templates_use_the_instance() {
        let c = enable(&facts(), "getty@tty1.service").unwrap();
        assert_eq!(
            paths(&c),
            vec!["/etc/systemd/system/getty.target.wants/getty@tty1.service"]
        );
        assert!(
            matches!(&c[0], Change::Symlink { target, .. } if target == "/lib/systemd/system/getty@.service")
        );
        let c = enable(&facts(), "getty@.service").unwrap();
        assert_eq!(
            paths(&c),
            vec!["/etc/systemd/system/getty.target.wants/getty@tty1.service"]
        );
    }

    #[test]
    fn template_aliases_take_the_instance() {
        let c = enable(&facts(), "wpa_supplicant@wlan0.service").unwrap();
        assert_eq!(
            paths(&c),
            vec![
                "/etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service",
                "/etc/systemd/system/wpa@wlan0.service",
            ]
        );
        // As systemctl: a template needs an instance or a DefaultInstance.
        let e = enable(&facts(), "wpa_supplicant@.service").unwrap_err();
        assert!(e.contains("DefaultInstance"), "{e}");
    }

    #[test]
    fn disable_removes_links_and_also_aliases() {
        let c = disable(&facts(), "NetworkManager.service");
        assert_eq!(
            paths(&c),
            vec![
                "/etc/systemd/system/dbus-org.freedesktop.nm-dispatcher.service",
                "/etc/systemd/system/multi-user.target.wants/NetworkManager.service",
            ]
        );
        assert!(enable(&facts(), "nope.service").is_err());
    }
}
