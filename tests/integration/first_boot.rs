//! systemd's first boot, offline: node images keep every unit state the
//! plan set through the preset pass PID 1 runs when machine-id says
//! `uninitialized` (`systemctl preset-all --preset-mode=enable-only`), and
//! through a full `systemctl preset-all`. systemd's own tool is the oracle,
//! on root trees extracted from the built images with debugfs rdump.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::*;

/// Build `node` from the fixture of `flavour` into `out`; returns (base, image).
fn build(flavour: &str, node: &str, out: &Path) -> (PathBuf, PathBuf) {
    let base = fixture(&["--flavour", flavour]);
    cli().build(&[node], &base, out).arg("-q").ok();
    let host = node.split('-').next().unwrap();
    (base, out.join(format!("{host}.img")))
}

/// The unit states the plan sets, read from `plan --json` by this test's
/// own reading of the changes (links in `.wants/`, masks, removed links).
fn planned_states(node: &str, base: &Path) -> BTreeMap<String, &'static str> {
    let json = cli().plan(node, base).arg("--json").ok().stdout;
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let mut states = BTreeMap::new();
    for step in v["steps"].as_array().unwrap() {
        for c in step["changes"].as_array().unwrap() {
            let path = c["path"].as_str().unwrap_or("");
            let Some(rel) = path.strip_prefix("/etc/systemd/system/") else {
                continue;
            };
            let name = rel.rsplit('/').next().unwrap().to_string();
            let in_wants = rel.contains(".wants/") || rel.contains(".requires/");
            match (c["op"].as_str().unwrap(), c["target"].as_str()) {
                ("symlink", Some("/dev/null")) if !rel.contains('/') => {
                    states.insert(name, "masked");
                }
                ("symlink", Some(_)) if in_wants => {
                    states.insert(name, "enabled");
                }
                ("remove", None) if in_wants => {
                    states.insert(name, "disabled");
                }
                _ => {}
            }
        }
    }
    states
}

fn rdump(img: &Path, dir: &Path) {
    let (off, _) = partition(img, 2);
    std::fs::create_dir_all(dir).unwrap();
    let o = tool("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", dir.display()))
        .arg(at_offset(img, off))
        .output()
        .expect("debugfs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.join("etc/systemd/system").is_dir());
}

fn systemctl(root: &Path, args: &[&str]) -> String {
    let o = tool("systemctl")
        .arg(format!("--root={}", root.display()))
        .args(args)
        .output()
        .expect("systemctl");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn is_enabled(root: &Path, unit: &str) -> String {
    systemctl(root, &["is-enabled", unit])
}

#[test]
fn planned_unit_states_survive_systemd_first_boot_presets() {
    for flavour in ["bookworm", "trixie"] {
        let dir = tempfile::tempdir().unwrap();
        let (base, img) = build(flavour, "ost04-control", &dir.path().join("out"));
        let states = planned_states("ost04-control", &base);
        for (u, s) in [
            ("NetworkManager.service", "masked"),
            ("userconfig.service", "masked"),
            ("systemd-networkd.service", "enabled"),
            ("ssh.service", "enabled"),
            ("rpiimg-firstboot.service", "enabled"),
        ] {
            assert_eq!(states.get(u).copied(), Some(s), "{flavour}: {states:?}");
        }
        let root = dir.path().join("root");
        rdump(&img, &root);
        for (unit, want) in &states {
            assert_eq!(&is_enabled(&root, unit), want, "{flavour}: {unit} as built");
        }
        // What PID 1 does on a first boot, then what an admin's preset-all does.
        for mode in [
            &["preset-all", "--preset-mode=enable-only"][..],
            &["preset-all"],
        ] {
            systemctl(&root, mode);
            for (unit, want) in &states {
                assert_eq!(
                    &is_enabled(&root, unit),
                    want,
                    "{flavour}: {unit} after systemctl {mode:?}"
                );
            }
        }

        // The control: without rpiimg's preset file and masks, the same
        // pass brings NetworkManager and the wizard back, as on a real trixie.
        let bare = dir.path().join("bare");
        rdump(&img, &bare);
        std::fs::remove_file(bare.join("etc/systemd/system-preset/00-rpiimg.preset")).unwrap();
        for u in ["NetworkManager.service", "userconfig.service"] {
            std::fs::remove_file(bare.join("etc/systemd/system").join(u)).unwrap();
            assert_eq!(is_enabled(&bare, u), "disabled");
        }
        systemctl(&bare, &["preset-all", "--preset-mode=enable-only"]);
        for u in ["NetworkManager.service", "userconfig.service"] {
            assert_eq!(is_enabled(&bare, u), "enabled", "{flavour}: control {u}");
        }
    }
}

/// verify names the unit a first boot would bring back.
#[test]
fn verify_names_units_that_first_boot_would_undo() {
    let dir = tempfile::tempdir().unwrap();
    let (_, img) = build("trixie", "ost04-control", &dir.path().join("out"));
    let manifest = dir.path().join("out/ost04.manifest.json");
    let verify = || {
        let o = rpiimg(&[
            "verify",
            img.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ]);
        (o.status.code(), stdout(&o))
    };
    let (code, text) = verify();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("ok   unit NetworkManager.service stays masked through systemd's presets"),
        "{text}"
    );
    // A preset file that says nothing about the units: the distribution's
    // default (enable) would win on the first boot.
    let empty = dir.path().join("empty.preset");
    std::fs::write(&empty, "# nothing\n").unwrap();
    rpiimg_ok(&[
        "fs",
        img.to_str().unwrap(),
        "put",
        empty.to_str().unwrap(),
        "/etc/systemd/system-preset/00-rpiimg.preset",
        "--mode",
        "644",
    ]);
    let (code, text) = verify();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "FAIL unit NetworkManager-wait-online.service stays disabled through systemd's presets"
        ),
        "{text}"
    );
    assert!(
        text.contains("the first boot (machine-id uninitialized"),
        "{text}"
    );
    // Masked units stay masked whatever the presets say.
    assert!(
        text.contains("ok   unit userconfig.service stays masked"),
        "{text}"
    );
    // A preset that disables a unit the plan enabled: preset-all would undo it.
    std::fs::write(&empty, "disable ssh.service\n").unwrap();
    rpiimg_ok(&[
        "fs",
        img.to_str().unwrap(),
        "put",
        empty.to_str().unwrap(),
        "/etc/systemd/system-preset/00-aaa.preset",
        "--mode",
        "644",
    ]);
    let (code, text) = verify();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("FAIL unit ssh.service stays enabled through systemd's presets\n     /etc/systemd/system-preset/00-aaa.preset:1: `systemctl preset-all` would disable it"),
        "{text}"
    );
}
