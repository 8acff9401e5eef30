//! The main job end to end: plans for every example profile (golden files),
//! the seed cluster built from bookworm and trixie fixtures and checked only
//! with independent tools, verify on good and tampered images, diff against
//! the base, interrupted builds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::support::*;

const NODES: &[&str] = &[
    "ost01-compute",
    "ost02-compute",
    "ost03-network",
    "ost04-control",
];

fn profile(name: &str) -> String {
    profile_path(name)
}

/// `rpiimg plan` text for each example profile on each fixture flavour, and
/// the text of every file it writes (from `--json`), compared with the
/// reviewed files in tests/golden (UPDATE_GOLDEN=1 rewrites them).
#[test]
fn plans_match_golden_files() {
    // Every node profile of every cluster folder (scripts/demo leaves a
    // key store beside them; cluster files name no hostname).
    let mut names: Vec<String> = rpiimg::profile::load_dir(&repo().join("profiles"))
        .unwrap()
        .iter()
        .map(|p| p.source.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 9, "{names:?}");
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    for flavour in ["bookworm", "trixie"] {
        let base = fixture(&["--flavour", flavour]);
        for n in &names {
            let out = cli().plan(n, &base).arg("-q").ok().stdout;
            let mut text = String::from_utf8(out).unwrap();
            // The content of every text file, so the golden can be reviewed.
            let json = cli().plan(n, &base).args(["--json", "-q"]).ok().stdout;
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            for step in v["steps"].as_array().unwrap() {
                for c in step["changes"].as_array().unwrap() {
                    if let Some(t) = c["text"].as_str() {
                        text.push_str(&format!("\n---- {}\n{t}", c["path"].as_str().unwrap()));
                        if !t.is_empty() && !t.ends_with('\n') {
                            text.push_str("\n(no newline at end)\n");
                        }
                    }
                }
            }
            let golden = repo()
                .join("tests/golden")
                .join(format!("{n}.{flavour}.txt"));
            if update {
                std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
                std::fs::write(&golden, &text).unwrap();
            } else {
                let want = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
                    panic!(
                        "{}: missing; run UPDATE_GOLDEN=1 cargo test --test integration build_cluster::plans_match_golden_files",
                        golden.display()
                    )
                });
                assert_eq!(
                    text,
                    want,
                    "plan for {n} on {flavour} differs from {}",
                    golden.display()
                );
            }
        }
    }
}

/// `pwck -r` (read-only) finds the passwd and shadow files in `etc` sound.
fn pwck(etc: &Path, what: &str) {
    let o = tool("pwck")
        .arg("-r")
        .arg("-q")
        .arg(etc.join("passwd"))
        .arg(etc.join("shadow"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{what}: pwck -r: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The rendered files pass the tools that own their formats.
#[test]
fn rendered_files_pass_their_own_checkers() {
    for flavour in ["bookworm", "trixie"] {
        let base = fixture(&["--flavour", flavour]);
        for n in ["ost04-control", "ost04-control-vlan", "devstack-aio"] {
            let dir = tempfile::tempdir().unwrap();
            cli()
                .plan(n, &base)
                .args([
                    "--render-to",
                    dir.path().to_str().unwrap(), // pwck reads the real /etc/shadow, not its redaction.
                    "--show-secrets",
                    "-q",
                ])
                .ok();
            let etc = dir.path().join("etc");
            pwck(&etc, &format!("{n}/{flavour}"));
            // grpck checks members against the passwd of its root: chroot into the render.
            if is_root() {
                let o = tool("grpck")
                    .arg("-r")
                    .arg("-R")
                    .arg(dir.path())
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "{n}/{flavour}: grpck -r: {}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            } else {
                eprintln!("skipped grpck -r -R: needs root");
            }
            for e in std::fs::read_dir(etc.join("sudoers.d")).unwrap() {
                let p = e.unwrap().path();
                let o = tool("visudo").arg("-cf").arg(&p).output().unwrap();
                assert!(
                    o.status.success(),
                    "visudo -cf {}: {}",
                    p.display(),
                    String::from_utf8_lossy(&o.stdout)
                );
            }
            let y = etc.join("netplan/50-cloud-init.yaml");
            let o = tool("python3")
                .args(["-c", "import sys,yaml; d=yaml.safe_load(open(sys.argv[1])); assert d['network']['version']==2; print(sorted(d['network']['ethernets']))"])
                .arg(&y)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{n}: netplan YAML: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let eths = String::from_utf8_lossy(&o.stdout).into_owned();
            // networkd files: sections and keys systemd knows; no interface in both places.
            let mut networkd_names = BTreeSet::new();
            for e in std::fs::read_dir(etc.join("systemd/network")).unwrap() {
                let p = e.unwrap().path();
                let text = std::fs::read_to_string(&p).unwrap();
                for l in text
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                {
                    assert!(
                        (l.starts_with('[') && l.ends_with(']'))
                            || l.split_once('=')
                                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_alphanumeric())),
                        "{}: bad line {l:?}",
                        p.display()
                    );
                }
                if p.extension().is_some_and(|x| x == "network")
                    && !text.to_ascii_lowercase().contains("bootstrap")
                {
                    if let Some(name) = text.lines().find_map(|l| l.strip_prefix("Name=")) {
                        networkd_names.insert(name.to_string());
                    }
                }
            }
            for name in networkd_names {
                assert!(
                    !eths.contains(&format!("'{name}'")),
                    "{n}: {name} defined in netplan and networkd"
                );
            }
            // netplan itself renders the YAML (where it is installed), without complaints.
            if tool("netplan").arg("--help").output().is_ok() {
                let o = tool("netplan")
                    .arg("generate")
                    .arg("--root-dir")
                    .arg(dir.path())
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(
                    o.status.success() && !err.contains("WARNING") && !err.contains("ERROR"),
                    "{n}/{flavour}: netplan generate: {err}"
                );
                let generated = dir.path().join("run/systemd/network");
                assert!(
                    generated.join("10-netplan-veth0.network").exists(),
                    "{n}: netplan rendered no veth0"
                );
            } else {
                eprintln!("skipped netplan generate: netplan.io is not installed");
            }
            if n == "devstack-aio" {
                let lc = std::fs::read_to_string(dir.path().join("opt/stack/local.conf")).unwrap();
                assert!(
                    lc.contains("ADMIN_PASSWORD=secret") && lc.contains("HOST_IP=192.168.10.30"),
                    "{lc}"
                );
            }
        }
    }
}

/// The partition table as `sfdisk -d` prints it, without the file names.
fn sfdisk_dump(img: &Path) -> String {
    let o = tool("sfdisk").arg("-d").arg(img).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with("device:"))
        .map(|l| l.split(" : ").last().unwrap_or(l).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn build(flavour: &str, out: &Path, nodes: &[&str]) -> PathBuf {
    let base = fixture(&["--flavour", flavour]);
    let mut args: Vec<String> = vec!["build".into()];
    for n in nodes {
        args.push("--profile".into());
        args.push(profile(n));
    }
    args.extend([
        "--base".into(),
        base.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "-q".into(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    rpiimg_ok(&a);
    base
}

#[test]
fn seed_cluster_builds_and_checks_with_independent_tools() {
    for flavour in ["bookworm", "trixie"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let base = build(flavour, &out, NODES);
        let base_table = sfdisk_dump(&base);
        let render = dir.path().join("render");
        for (i, n) in NODES.iter().enumerate() {
            let host = format!("ost0{}", i + 1);
            let img = out.join(format!("{host}.img"));
            assert_eq!(
                sfdisk_dump(&img),
                base_table,
                "{host}: partition table changed"
            );
            let (off, _) = partition(&img, 2);
            let p = e2fsck_problems(&img, off);
            assert!(
                p.is_empty(),
                "{host}/{flavour}: e2fsck -fn:\n{}",
                p.join("\n")
            );
            // Every planned file reads back identical, with mode and owner, through debugfs/mtools.
            let r = render.join(&host);
            cli()
                .plan(n, &base)
                .args([
                    "--render-to",
                    r.to_str().unwrap(), // Compared byte for byte with the image, secrets and all.
                    "--show-secrets",
                    "-q",
                ])
                .ok();
            let plan: serde_json::Value =
                serde_json::from_slice(&cli().plan(n, &base).args(["--json", "-q"]).ok().stdout)
                    .unwrap();
            for step in plan["steps"].as_array().unwrap() {
                for c in step["changes"].as_array().unwrap() {
                    let path = c["path"].as_str().unwrap_or("");
                    match c["op"].as_str().unwrap() {
                        "write_file" if path.starts_with("/boot/firmware/") => {
                            let (foff, _) = partition(&img, 1);
                            let o = tool("mtype")
                                .env("MTOOLS_SKIP_CHECK", "1")
                                .arg("-i")
                                .arg(format!("{}@@{foff}", img.display()))
                                .arg(format!("::{}", &path["/boot/firmware".len()..]))
                                .output()
                                .unwrap();
                            assert!(o.status.success(), "{host}: {path} missing on FAT");
                            assert_eq!(
                                o.stdout,
                                std::fs::read(r.join(&path[1..])).unwrap(),
                                "{host}: {path}"
                            );
                        }
                        "write_file" => {
                            let dump = dir.path().join("dump");
                            debugfs(&img, off, &format!("dump {path} {}", dump.display()));
                            assert_eq!(
                                std::fs::read(&dump).unwrap_or_default(),
                                std::fs::read(r.join(&path[1..])).unwrap(),
                                "{host}: {path} content"
                            );
                            let st = debugfs(&img, off, &format!("stat {path}"));
                            let mode = c["mode"].as_u64().unwrap();
                            assert!(
                                st.contains(&format!("Mode:  {mode:04o}"))
                                    || st.contains(&format!("Mode:  0{mode:o}")),
                                "{host}: {path} mode {mode:o}: {st}"
                            );
                            let (uid, gid) =
                                (c["uid"].as_u64().unwrap(), c["gid"].as_u64().unwrap());
                            assert!(
                                st.contains(&format!("User: {uid:>5}"))
                                    && st.contains(&format!("Group: {gid:>5}")),
                                "{host}: {path} owner: {st}"
                            );
                        }
                        "symlink" => {
                            let st = debugfs(&img, off, &format!("stat {path}"));
                            let target = c["target"].as_str().unwrap();
                            // Fast links show their target in stat; slow ones hold it as data.
                            let ok = st.contains(&format!("Fast link dest: \"{target}\""))
                                || (st.contains("Type: symlink")
                                    && debugfs(&img, off, &format!("cat {path}")) == target);
                            assert!(ok, "{host}: {path} -> {target}: {st}");
                        }
                        "remove" => {
                            assert!(
                                debugfs(&img, off, &format!("stat {path}"))
                                    .trim()
                                    .is_empty(),
                                "{host}: {path} still present"
                            );
                        }
                        _ => {}
                    }
                }
            }
            // The user database, as the system tools see it.
            let etc = dir.path().join(format!("etc-{host}"));
            std::fs::create_dir_all(&etc).unwrap();
            for f in ["passwd", "shadow", "group", "gshadow"] {
                debugfs(
                    &img,
                    off,
                    &format!("dump /etc/{f} {}", etc.join(f).display()),
                );
            }
            pwck(&etc, &host);
            // verify agrees, against the profile and against the manifest.
            let o = rpiimg(&[
                "verify",
                img.to_str().unwrap(),
                "--profile",
                &profile(n),
                "--base",
                base.to_str().unwrap(),
                "-q",
            ]);
            assert_eq!(o.status.code(), Some(0), "{host}: {}", stdout(&o));
            let m = out.join(format!("{host}.manifest.json"));
            let o = rpiimg(&[
                "verify",
                img.to_str().unwrap(),
                "--manifest",
                m.to_str().unwrap(),
                "-q",
            ]);
            assert_eq!(o.status.code(), Some(0), "{host}: {}", stdout(&o));
            let manifest = std::fs::read_to_string(&m).unwrap();
            assert!(
                !manifest.contains("\"ubuntu\",\n") || manifest.contains("<redacted>"),
                "password must be redacted"
            );
            assert!(
                !manifest.contains("\"password\": \"ubuntu\""),
                "plain password in manifest"
            );
        }
        // The four nodes differ only where the plan says.
        let allowed = [
            "/etc/hostname",
            "/etc/hosts",
            "/etc/dphys-swapfile",
            "/etc/rpi/swap.conf.d",
            "/etc/rpi/swap.conf.d/zz-rpiimg.conf",
            "/etc/netplan/50-cloud-init.yaml",
            "/etc/shadow",
            "/usr/local/sbin/rpiimg-firstboot",
            // The provisioning banner and the seed's "ignored" note name the node.
            "/etc/issue.d/rpiimg-firstboot.issue",
            "/etc/motd.d/rpiimg-firstboot",
            "/boot/firmware/network-config",
            // Each node has its own SSH host keys.
            "/etc/ssh/rpiimg/ssh_host_ed25519_key",
            "/etc/ssh/rpiimg/ssh_host_ed25519_key.pub",
            "/etc/ssh/rpiimg/ssh_host_ecdsa_key",
            "/etc/ssh/rpiimg/ssh_host_ecdsa_key.pub",
            "/etc/systemd/network/10-rpiimg-veth0.netdev",
            "/etc/systemd/network/11-rpiimg-veth1.netdev",
            "/etc/systemd/network/20-rpiimg-brmux.netdev",
            "/etc/systemd/network/30-rpiimg-bootstrap-veth0.network",
        ];
        for host in ["ost02", "ost03", "ost04"] {
            let o = rpiimg(&[
                "diff",
                out.join("ost01.img").to_str().unwrap(),
                out.join(format!("{host}.img")).to_str().unwrap(),
                "--json",
                "-q",
            ]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert!(
                v["added"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|e| allowed.contains(&e[0].as_str().unwrap())),
                "{host}: {}",
                v
            );
            assert!(
                v["removed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|e| allowed.contains(&e[0].as_str().unwrap())),
                "{host}: {}",
                v
            );
            for c in v["changed"].as_array().unwrap() {
                assert!(
                    allowed.contains(&c["path"].as_str().unwrap()),
                    "{host}: unexpected difference {c}"
                );
            }
        }
        let imgs: Vec<String> = (1..=4)
            .map(|i| out.join(format!("ost0{i}.img")).display().to_string())
            .collect();
        let mut args = vec!["verify", "--cluster", "-q"];
        args.extend(imgs.iter().map(String::as_str));
        let o = rpiimg(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    }
}

#[test]
fn diff_against_the_base_lists_exactly_the_planned_paths() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let base = build("trixie", &out, &["ost04-control"]);
    let plan: serde_json::Value = serde_json::from_slice(
        &cli()
            .plan("ost04-control", &base)
            .args(["--json", "-q"])
            .ok()
            .stdout,
    )
    .unwrap();
    let mut planned = BTreeSet::new();
    for s in plan["steps"].as_array().unwrap() {
        for c in s["changes"].as_array().unwrap() {
            planned.insert(c["path"].as_str().or(c["to"].as_str()).unwrap().to_string());
            if let Some(f) = c["from"].as_str() {
                planned.insert(f.to_string());
            }
        }
    }
    let o = rpiimg(&[
        "diff",
        base.to_str().unwrap(),
        out.join("ost04.img").to_str().unwrap(),
        "--json",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut seen = BTreeSet::new();
    for e in v["added"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["removed"].as_array().unwrap())
    {
        seen.insert(e[0].as_str().unwrap().to_string());
    }
    for c in v["changed"].as_array().unwrap() {
        seen.insert(c["path"].as_str().unwrap().to_string());
    }
    for p in &seen {
        // Anything under a moved or created directory belongs to the change of that directory.
        // Parents made for planned paths count as planned too.
        assert!(
            planned.contains(p)
                || planned
                    .iter()
                    .any(|q| p.starts_with(&format!("{q}/")) || q.starts_with(&format!("{p}/"))),
            "diff shows {p}, which the plan does not touch"
        );
    }
    for p in &planned {
        if p.starts_with("/etc/systemd/system/") && p.ends_with(".wants") {
            continue;
        }
        assert!(
            seen.contains(p)
                || !plan
                    .to_string()
                    .contains(&format!("\"remove\",\"path\":\"{p}\"")),
            "plan touches {p} but diff does not show it"
        );
    }
}

#[test]
fn tampered_images_fail_verify_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let base = build("bookworm", &out, &["ost04-control", "ost03-network"]);
    let img = out.join("ost04.img");
    let verify = |img: &Path| {
        let o = rpiimg(&[
            "verify",
            img.to_str().unwrap(),
            "--profile",
            &profile("ost04-control"),
            "--base",
            base.to_str().unwrap(),
            "-q",
        ]);
        (o.status.code(), stdout(&o))
    };
    let local = dir.path().join("x");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "put".into(),
                "X".into(),
                "/etc/sysctl.d/zz-rpiimg.conf".into(),
                "--mode".into(),
                "644".into(),
            ],
            "file /etc/sysctl.d/zz-rpiimg.conf",
        ),
        (
            vec![
                "chmod".into(),
                "644".into(),
                "/etc/netplan/50-cloud-init.yaml".into(),
            ],
            "mode 0644, expected 0600",
        ),
        (
            vec![
                "rm".into(),
                "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service".into(),
            ],
            "link /etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        ),
        (
            vec!["put".into(), "MID".into(), "/etc/machine-id".into()],
            "machine-id holds",
        ),
    ];
    for (edit, needle) in cases {
        let copy = dir.path().join("t.img");
        std::fs::copy(&img, &copy).unwrap();
        let edit: Vec<String> = edit
            .into_iter()
            .map(|a| match a.as_str() {
                "X" => {
                    std::fs::write(&local, "net.ipv4.ip_forward = 0\n").unwrap();
                    local.display().to_string()
                }
                "MID" => {
                    std::fs::write(&local, "0123456789abcdef0123456789abcdef\n").unwrap();
                    local.display().to_string()
                }
                _ => a,
            })
            .collect();
        let mut args = vec!["fs".to_string(), copy.display().to_string()];
        args.extend(edit.clone());
        args.push("-q".into());
        rpiimg_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let (code, text) = verify(&copy);
        assert_eq!(code, Some(1), "{edit:?}: {text}");
        assert!(
            text.contains(needle),
            "{edit:?}: expected {needle:?} in\n{text}"
        );
    }
    // A MAC changed so that two nodes share one: the cluster check names it.
    let copy = dir.path().join("ost03-copy.img");
    std::fs::copy(out.join("ost03.img"), &copy).unwrap();
    let (off, _) = partition(&img, 2);
    let netdev = dir.path().join("veth0.netdev");
    debugfs(
        &img,
        off,
        &format!(
            "dump /etc/systemd/network/10-rpiimg-veth0.netdev {}",
            netdev.display()
        ),
    );
    rpiimg_ok(&[
        "fs",
        copy.to_str().unwrap(),
        "put",
        netdev.to_str().unwrap(),
        "/etc/systemd/network/10-rpiimg-veth0.netdev",
        "-q",
    ]);
    let o = rpiimg(&[
        "verify",
        "--cluster",
        img.to_str().unwrap(),
        copy.to_str().unwrap(),
        "-q",
    ]);
    assert_stdout(&o, 1, &["FAIL MAC addresses distinct"]);
}

#[test]
fn bad_profiles_and_interrupted_builds_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "extends = \"{}\"\nhostname = \"ost04\"\n[cluster]\ngateway = \"10.9.9.9\"\n",
            profile("cluster-ost")
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let base = fixture(&["--flavour", "bookworm"]);
    let o = cli().build(&[bad.to_str().unwrap()], &base, &out).output();
    assert_stderr(&o, 2, &["bad.toml", "cluster.gateway"]);
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
    // Kill a build while it runs: no file under a final name.
    let mut child = cli()
        .build(&["ost04-control"], &base, &out)
        .args(["--xz", "-q"])
        .command()
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let _ = child.kill();
    let _ = child.wait();
    if out.exists() {
        for e in std::fs::read_dir(&out).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name.contains("rpiimg-partial") || name == OUT_LOCK,
                "a final-name file {name} exists after a kill"
            );
        }
    }
}

/// `--render-to` never writes outside its directory, even through a
/// symbolic link left inside it.
#[test]
fn render_to_refuses_links_out_of_the_directory() {
    let base = fixture(&["--flavour", "bookworm"]);
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("etc")).unwrap();
    let o = cli()
        .plan("ost04-control", &base)
        .args(["--render-to", dir.path().to_str().unwrap(), "-q"])
        .output();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}
