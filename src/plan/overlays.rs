//! Overlay templates (minijinja), laid out under `overlays/` by target
//! path. The built-in ones are compiled into the binary so an installed
//! rpiimg needs no data files; a profile may add its own directories.
//! A template that renders to only whitespace writes no file (that is how
//! a template says "not for this node").

use minijinja::{context, Value};

use super::{facts::ImageFacts, Change, INTERFACES};
use crate::profile::sources::OverlayBody;
use crate::profile::{NetMode, Node, Profile};
use crate::userdb::UserDb;

/// (group, target path, template, mode)
const BUILTIN: &[(&str, &str, &str, u16)] = &[
    (
        "network",
        "/etc/systemd/network/10-rpiimg-veth0.netdev",
        include_str!("../../overlays/etc/systemd/network/10-rpiimg-veth0.netdev.j2"),
        0o644,
    ),
    (
        "network",
        "/etc/systemd/network/11-rpiimg-veth1.netdev",
        include_str!("../../overlays/etc/systemd/network/11-rpiimg-veth1.netdev.j2"),
        0o644,
    ),
    (
        "network",
        "/etc/systemd/network/20-rpiimg-brmux.netdev",
        include_str!("../../overlays/etc/systemd/network/20-rpiimg-brmux.netdev.j2"),
        0o644,
    ),
    (
        "network",
        "/etc/systemd/network/21-rpiimg-brmux.network",
        include_str!("../../overlays/etc/systemd/network/21-rpiimg-brmux.network.j2"),
        0o644,
    ),
    (
        "network",
        "/etc/systemd/network/22-rpiimg-eth0.network",
        include_str!("../../overlays/etc/systemd/network/22-rpiimg-eth0.network.j2"),
        0o644,
    ),
    (
        "network",
        "/etc/systemd/network/23-rpiimg-veth0br.network",
        include_str!("../../overlays/etc/systemd/network/23-rpiimg-veth0br.network.j2"),
        0o644,
    ),
    (
        "network",
        "/etc/systemd/network/24-rpiimg-veth1br.network",
        include_str!("../../overlays/etc/systemd/network/24-rpiimg-veth1br.network.j2"),
        0o644,
    ),
    (
        "network",
        "/etc/systemd/network/30-rpiimg-bootstrap-veth0.network",
        include_str!("../../overlays/etc/systemd/network/30-rpiimg-bootstrap-veth0.network.j2"),
        0o644,
    ),
    (
        "network",
        "/etc/systemd/network/31-rpiimg-bootstrap-veth1.network",
        include_str!("../../overlays/etc/systemd/network/31-rpiimg-bootstrap-veth1.network.j2"),
        0o644,
    ),
    (
        "network",
        "/etc/netplan/50-cloud-init.yaml",
        include_str!("../../overlays/etc/netplan/50-cloud-init.yaml.j2"),
        0o600,
    ),
    (
        "firstboot",
        "/etc/systemd/system/rpiimg-firstboot.service",
        include_str!("../../overlays/etc/systemd/system/rpiimg-firstboot.service.j2"),
        0o644,
    ),
    (
        "firstboot",
        "/etc/issue.d/rpiimg-firstboot.issue",
        include_str!("../../overlays/etc/issue.d/rpiimg-firstboot.issue.j2"),
        0o644,
    ),
    (
        "firstboot",
        "/etc/motd.d/rpiimg-firstboot",
        include_str!("../../overlays/etc/motd.d/rpiimg-firstboot.j2"),
        0o644,
    ),
    (
        "firstboot",
        "/usr/local/sbin/rpiimg-firstboot",
        include_str!("../../overlays/usr/local/sbin/rpiimg-firstboot.j2"),
        0o755,
    ),
];

pub(super) fn context(p: &Profile, f: &ImageFacts, node: &Node) -> Value {
    let macs: std::collections::BTreeMap<String, String> = INTERFACES
        .iter()
        .map(|i| ((*i).to_string(), node.mac(&p.cluster.name, i)))
        .collect();
    let prefix = p.cluster.subnet.len;
    // Templates write secrets (the Wi-Fi key, [vars]) where they belong;
    // minijinja converts the values here, eagerly, while they are revealed.
    crate::secret::reveal(|| {
        context! {
            node => Value::from(minijinja::value::Serde(node)),
            cluster => Value::from(minijinja::value::Serde(&p.cluster)),
            network => Value::from(minijinja::value::Serde(&p.network)),
            firstboot => Value::from(minijinja::value::Serde(&p.firstboot)),
            users => Value::from(minijinja::value::Serde(&p.users.iter().map(|u| &u.name).collect::<Vec<_>>())),
            vars => Value::from(minijinja::value::Serde(&p.vars)),
            macs => Value::from(minijinja::value::Serde(&macs)),
            prefix => prefix,
            vlan => p.network.mode == NetMode::Vlan,
            bootstrap => !f.has_netplan(),
            os => f.codename.clone(),
            hostname => p.hostname.clone(),
        }
    })
}

fn render(name: &str, src: &str, ctx: &Value) -> Result<String, String> {
    // Profile strings go into shell scripts and YAML: templates quote them
    // with `shquote` and `yaml`. Inline `files` keep their last line break
    // (built-in ones are normalised in `file`).
    let mut env = crate::template::environment().map_err(|e| format!("template {name}: {e}"))?;
    env.add_template(name, src)
        .map_err(|e| format!("template {name}: {e}"))?;
    env.get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("template {name}: {e}"))
}

fn file(path: &str, text: String, mode: u16) -> Option<Change> {
    // Templates start with control blocks; files end with one newline.
    (!text.trim().is_empty()).then(|| Change::WriteFile {
        path: path.to_string(),
        content: format!("{}\n", text.trim()).into_bytes(),
        mode,
        uid: 0,
        gid: 0,
    })
}

/// The built-in templates of one group, rendered.
pub(super) fn render_builtin(ctx: &Value, group: &str) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    for (g, path, src, mode) in BUILTIN {
        if *g == group {
            out.extend(file(path, render(path, src, ctx)?, *mode));
        }
    }
    Ok(out)
}

/// The profile's `files` entries and overlay directories, from what the
/// loader read ([`crate::profile::sources`]): planning reads no host file.
pub(super) fn extra(p: &Profile, ctx: &Value, db: &UserDb) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    for f in &p.files {
        let text = match (&f.content, &f.source, &f.data) {
            (Some(c), None, _) => render(&f.path, c, ctx)?.into_bytes(),
            (None, Some(_), Some(data)) => data.clone(),
            (None, Some(s), None) => {
                return Err(format!(
                    "files {}: {} was not read with the profile (load profiles with profile::load)",
                    f.path,
                    s.display()
                ))
            }
            _ => {
                return Err(format!(
                    "files {}: give exactly one of content or source",
                    f.path
                ))
            }
        };
        let mode = f.mode.bits();
        let (uid, gid) = f
            .owner
            .resolve(&db.passwd, &db.group)
            .map_err(|e| format!("files {}: {e} on the node", f.path))?;
        // No Mkdir for the parent: a Mkdir sets mode and owner, which would
        // hand an existing directory (a user's home) to root. Writing a file
        // creates missing parents as 0755 root anyway.
        out.push(Change::WriteFile {
            path: f.path.clone(),
            content: text,
            mode,
            uid,
            gid,
        });
    }
    for o in &p.overlay_files {
        match &o.body {
            OverlayBody::Template(src) => {
                out.extend(file(&o.target, render(&o.target, src, ctx)?, 0o644));
            }
            OverlayBody::Data(data) => out.push(Change::WriteFile {
                path: o.target.clone(),
                content: data.clone(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{make_plan, testing};
    use std::path::Path;

    /// The plan uses what the loader read: with the overlay directory and
    /// the `[[files]]` source gone from the host afterwards, the plan is
    /// the same, so planning cannot have read them.
    #[test]
    fn the_plan_reads_no_host_file() {
        let d = tempfile::tempdir().unwrap();
        let cluster =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/ost/cluster-ost.toml");
        std::fs::create_dir_all(d.path().join("ov/etc")).unwrap();
        std::fs::write(d.path().join("ov/etc/data"), "data\n").unwrap();
        std::fs::write(d.path().join("ov/etc/motd.j2"), "hello {{ hostname }}\n").unwrap();
        std::fs::write(d.path().join("src.txt"), "from the host\n").unwrap();
        let node = d.path().join("node.toml");
        std::fs::write(
            &node,
            format!(
                "extends = {:?}\nhostname = \"ost04\"\noverlays = [\"ov\"]\n\
                 [[files]]\npath = \"/etc/x\"\nsource = \"src.txt\"\n",
                cluster.display().to_string()
            ),
        )
        .unwrap();
        let mut p = crate::profile::load(&node).unwrap();
        p.secret = Some(testing::test_secret(&p.cluster.name));
        std::fs::remove_dir_all(d.path().join("ov")).unwrap();
        std::fs::remove_file(d.path().join("src.txt")).unwrap();
        let plan = make_plan(&p, &testing::facts("trixie")).unwrap();
        let content = |path: &str| {
            plan.changes().find_map(|c| match c {
                Change::WriteFile {
                    path: p, content, ..
                } if p == path => Some(String::from_utf8_lossy(content).into_owned()),
                _ => None,
            })
        };
        assert_eq!(content("/etc/x").as_deref(), Some("from the host\n"));
        assert_eq!(content("/etc/data").as_deref(), Some("data\n"));
        assert_eq!(content("/etc/motd").as_deref(), Some("hello ost04\n"));
    }

    /// Every template under overlays/ is compiled in, so they cannot drift.
    #[test]
    fn all_overlay_files_are_builtin() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("overlays");
        let mut found = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = format!("/{}", p.strip_prefix(&root).unwrap().to_string_lossy());
                    found.push(rel.trim_end_matches(".j2").to_string());
                }
            }
        }
        found.sort();
        // overlays/mgmt/ holds the management-host bundle's templates.
        let mut listed: Vec<String> = BUILTIN
            .iter()
            .map(|b| b.1.to_string())
            .chain(
                crate::bundle::TEMPLATES
                    .iter()
                    .map(|t| format!("/mgmt/{}", t.0)),
            )
            .collect();
        listed.sort();
        assert_eq!(found, listed);
    }

    #[test]
    fn shell_quoting_survives_the_shell() {
        for s in ["plain", "it's", "$(reboot) `x` \"q\" \\ ;|&", ""] {
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", crate::template::shquote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(o.stdout).unwrap(), s);
        }
    }
}
