//! `systemctl enable/disable/mask` as file changes, from the units'
//! `[Install]` sections read from the image.

use super::facts::ImageFacts;
use super::Change;

const SYS: &str = "/etc/systemd/system";

/// (template file, instance) for `name@inst.service`; `None` for plain units.
fn template(unit: &str) -> Option<(String, String)> {
    let (base, rest) = unit.split_once('@')?;
    let (inst, suffix) = rest.rsplit_once('.')?;
    (!inst.is_empty()).then(|| (format!("{base}@.{suffix}"), inst.to_string()))
}

/// The links `systemctl enable UNIT` makes (following `Also=`).
pub fn enable(f: &ImageFacts, unit: &str) -> Result<Vec<Change>, String> {
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
pub fn disable(f: &ImageFacts, unit: &str) -> Vec<Change> {
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
pub fn mask(unit: &str) -> Change {
    Change::Symlink {
        path: format!("{SYS}/{unit}"),
        target: "/dev/null".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts::Install;
    use super::*;

    fn facts() -> ImageFacts {
        let mut f = ImageFacts {
            unit_dir: "/lib/systemd/system".into(),
            ..Default::default()
        };
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
