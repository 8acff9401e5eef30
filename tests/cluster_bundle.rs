//! The lab's other half: stable SSH host keys in the node images, and the
//! management host's files (`rpiimg cluster`) from the same profile, judged
//! by ssh-keygen, ansible-inventory, a YAML and an INI parser, and debugfs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn profile(name: &str) -> String {
    profile_path(name)
}

/// rpiimg with its own key store directory.
fn run_with_keys(args: &[&str], keys: &Path) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_rpiimg"))
        .args(args)
        .env("RPIIMG_KEYS_DIR", keys)
        .env(
            "RPIIMG_CACHE_DIR",
            std::env::temp_dir().join("rpiimg-bundle-test-cache"),
        )
        .output()
        .expect("run rpiimg");
    assert!(o.status.success(), "rpiimg {args:?}: {}", stderr(&o));
    o
}

fn copy_test_keys(dst: &Path) {
    let src = repo().join("tests/fixtures/keys/ost");
    std::fs::create_dir_all(dst.join("ost")).unwrap();
    std::fs::copy(src.join("secret"), dst.join("ost/secret")).unwrap();
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn build(flavour: &str, out: &Path, keys: &Path, extra: &[&str]) -> PathBuf {
    let base = fixture(&["--flavour", flavour]);
    let mut args = vec![
        "build",
        "--profile",
        Box::leak(profile("ost04-control").into_boxed_str()),
        "--base",
        base.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
        "--force",
    ];
    args.extend_from_slice(extra);
    run_with_keys(&args, keys);
    out.join("ost04.img")
}

/// The image's host key files: (private text, public line) per type.
fn image_keys(img: &Path, dir: &Path) -> Vec<(PathBuf, String)> {
    std::fs::create_dir_all(dir).unwrap();
    let (off, _) = partition(img, 2);
    let mut out = Vec::new();
    for t in ["ed25519", "ecdsa"] {
        let key = dir.join(format!("ssh_host_{t}_key"));
        let o = tool("debugfs")
            .arg("-R")
            .arg(format!(
                "dump -p /etc/ssh/ssh_host_{t}_key {}",
                key.display()
            ))
            .arg(at_offset(img, off))
            .output()
            .unwrap();
        assert!(o.status.success());
        let stat = debugfs(img, off, &format!("stat /etc/ssh/ssh_host_{t}_key"));
        assert!(
            stat.contains("Mode:  0600") && stat.contains("User:     0   Group:     0"),
            "{stat}"
        );
        let public = debugfs(img, off, &format!("cat /etc/ssh/ssh_host_{t}_key.pub"));
        out.push((key, public.trim().to_string()));
    }
    out
}

#[test]
fn host_keys_are_stable_valid_and_match_known_hosts() {
    need("ssh-keygen", "openssh-client");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    copy_test_keys(&keys);
    for flavour in ["bookworm", "trixie"] {
        let out = dir.path().join(flavour);
        let img = build(flavour, &out, &keys, &[]);
        let found = image_keys(&img, dir.path());
        let known = read(&out.join("mgmt-ost/known_hosts"));
        for (key, public) in &found {
            // ssh-keygen reads the private key and derives the same public key.
            let l = tool("ssh-keygen")
                .arg("-l")
                .arg("-f")
                .arg(key)
                .output()
                .unwrap();
            assert!(l.status.success(), "{}", String::from_utf8_lossy(&l.stderr));
            let y = tool("ssh-keygen")
                .arg("-y")
                .arg("-f")
                .arg(key)
                .output()
                .unwrap();
            let derived: Vec<String> = String::from_utf8_lossy(&y.stdout)
                .split_whitespace()
                .take(2)
                .map(String::from)
                .collect();
            let derived = derived.join(" ");
            let pub_no_comment: Vec<&str> = public.split_whitespace().take(2).collect();
            assert_eq!(derived, pub_no_comment.join(" "), "{flavour}");
            // known_hosts carries exactly the image's key for ost04.
            assert!(
                known.contains(&format!("ost04,192.168.10.24 {}", pub_no_comment.join(" "))),
                "{flavour}: {known}"
            );
        }
        for (host, addr) in [
            ("ost01", "192.168.10.21"),
            ("ost02", "192.168.10.22"),
            ("ost03", "192.168.10.23"),
            ("ost04", "192.168.10.24"),
        ] {
            for name in [host, addr] {
                let f = tool("ssh-keygen")
                    .args(["-F", name, "-f"])
                    .arg(out.join("mgmt-ost/known_hosts"))
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&f.stdout);
                assert!(
                    f.status.success()
                        && text.contains("ssh-ed25519")
                        && text.contains("ecdsa-sha2-nistp256"),
                    "{name}: {text}"
                );
            }
        }
        // verify --profile recomputes the keys from the store: a swapped
        // public key fails, named.
        if flavour == "trixie" {
            let fake = dir.path().join("fake.pub");
            std::fs::write(&fake, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKey root@x\n").unwrap();
            let base = fixture(&["--flavour", flavour]);
            let verify = || {
                Command::new(env!("CARGO_BIN_EXE_rpiimg"))
                    .args([
                        "verify",
                        img.to_str().unwrap(),
                        "--profile",
                        &profile("ost04-control"),
                        "--base",
                        base.to_str().unwrap(),
                    ])
                    .env("RPIIMG_KEYS_DIR", &keys)
                    .env(
                        "RPIIMG_CACHE_DIR",
                        std::env::temp_dir().join("rpiimg-bundle-test-cache"),
                    )
                    .output()
                    .unwrap()
            };
            assert_eq!(verify().status.code(), Some(0), "{}", stdout(&verify()));
            run_with_keys(
                &[
                    "fs",
                    img.to_str().unwrap(),
                    "put",
                    fake.to_str().unwrap(),
                    "/etc/ssh/ssh_host_ed25519_key.pub",
                    "--mode",
                    "644",
                ],
                &keys,
            );
            let o = verify();
            assert_eq!(o.status.code(), Some(1));
            assert!(
                stdout(&o).contains("FAIL file /etc/ssh/ssh_host_ed25519_key.pub"),
                "{}",
                stdout(&o)
            );
            // Rebuild to restore the image for what follows.
            build(flavour, &out, &keys, &[]);
        }
        // The image's first-boot key units leave the keys alone.
        let root = dir.path().join(format!("{flavour}-root"));
        std::fs::create_dir_all(&root).unwrap();
        let (off, _) = partition(&img, 2);
        debugfs(&img, off, &format!("rdump /etc {}", root.display()));
        let sys = root.join("etc/systemd/system");
        if flavour == "bookworm" {
            let mask = std::fs::read_link(sys.join("regenerate_ssh_host_keys.service")).unwrap();
            assert_eq!(
                mask,
                Path::new("/dev/null"),
                "bookworm's regeneration masked"
            );
            assert!(!sys
                .join("multi-user.target.wants/regenerate_ssh_host_keys.service")
                .exists());
        } else {
            // sshd-keygen only fills in missing keys: it stays, and cloud-init keeps the keys.
            assert!(std::fs::symlink_metadata(
                sys.join("multi-user.target.wants/sshd-keygen.service")
            )
            .is_ok());
            let ci = read(&root.join("etc/cloud/cloud.cfg.d/99-rpiimg.cfg"));
            assert!(ci.contains("ssh_deletekeys: false"), "{ci}");
        }
        // No private key in the manifest or the plan.
        let manifest = read(&out.join("ost04.manifest.json"));
        let plan = run_with_keys(
            &[
                "plan",
                "--profile",
                &profile("ost04-control"),
                "--base",
                fixture(&["--flavour", flavour]).to_str().unwrap(),
                "--json",
            ],
            &keys,
        );
        for (key, _) in &found {
            let body: String = read(key).lines().nth(2).unwrap().to_string();
            assert!(!manifest.contains(&body) && !stdout(&plan).contains(&body));
        }
        assert!(!stdout(&plan).contains("PRIVATE KEY"));
        assert!(manifest.contains("SHA256:"), "fingerprints in the manifest");
    }

    // Rebuilding: the same keys. Rotating: new keys. Another store: other keys.
    let out = dir.path().join("again");
    let before = image_keys(&build("trixie", &out, &keys, &[]), &dir.path().join("a1"));
    let again = image_keys(&build("trixie", &out, &keys, &[]), &dir.path().join("a2"));
    assert_eq!(
        before.iter().map(|k| &k.1).collect::<Vec<_>>(),
        again.iter().map(|k| &k.1).collect::<Vec<_>>()
    );
    for (a, b) in before.iter().zip(&again) {
        assert_eq!(
            read(&a.0),
            read(&b.0),
            "private keys byte-identical on rebuild"
        );
    }
    let rotated = image_keys(
        &build("trixie", &out, &keys, &["--rotate-host-keys"]),
        &dir.path().join("a3"),
    );
    assert_ne!(before[0].1, rotated[0].1);
    assert!(read(&keys.join("ost/host-key-rotations")).contains("ost04 = 1"));
    let after = image_keys(&build("trixie", &out, &keys, &[]), &dir.path().join("a4"));
    assert_eq!(
        rotated[0].1, after[0].1,
        "rotation is kept by later rebuilds"
    );
    let other = dir.path().join("other-keys");
    let theirs = image_keys(
        &build("trixie", &dir.path().join("o"), &other, &[]),
        &dir.path().join("a5"),
    );
    assert_ne!(before[0].1, theirs[0].1);
    // verify --cluster sees distinct keys across nodes.
}

/// The bundle of the seed cluster (flat and VLAN) against reviewed golden
/// files, and its files through their own parsers.
#[test]
fn management_bundle_parses_and_matches_golden_files() {
    need("ansible-inventory", "ansible-core");
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    for cluster in ["cluster-ost", "cluster-ost-vlan"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("mgmt");
        rpiimg_ok(&[
            "cluster",
            "--profile",
            &profile(cluster),
            "--out",
            out.to_str().unwrap(),
        ]);
        let mut golden = String::new();
        let files = all_files(&out);
        for f in &files {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            golden.push_str(&format!(
                "---- {} ({mode:04o})\n{}\n",
                f.strip_prefix(&out).unwrap().display(),
                read(f)
            ));
        }
        let gpath = repo().join(format!("tests/golden/mgmt-{cluster}.txt"));
        if update {
            std::fs::write(&gpath, &golden).unwrap();
        } else {
            assert_eq!(
                golden,
                read(&gpath),
                "{cluster}: bundle differs from {} (UPDATE_GOLDEN=1 after review)",
                gpath.display()
            );
        }

        // The inventory, as Ansible reads it.
        let inv = tool("ansible-inventory")
            .arg("-i")
            .arg(out.join("multinode"))
            .arg("--list")
            .env("ANSIBLE_LOCALHOST_WARNING", "False")
            .output()
            .unwrap();
        assert!(
            inv.status.success(),
            "{}",
            String::from_utf8_lossy(&inv.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&inv.stdout).unwrap();
        let hosts = |g: &str| -> Vec<String> {
            v[g]["hosts"]
                .as_array()
                .map(|a| a.iter().map(|h| h.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        assert_eq!(hosts("control"), ["ost04"]);
        assert_eq!(hosts("network"), ["ost03"]);
        assert_eq!(hosts("compute"), ["ost01", "ost02", "ost03"]);
        assert_eq!(hosts("monitoring"), ["ost04"]);
        assert_eq!(v["_meta"]["hostvars"]["ost01"]["ansible_user"], "ubuntu");
        assert_eq!(v["_meta"]["hostvars"]["ost01"]["ansible_become"], "true");
        let children = v["baremetal"]["children"].as_array().unwrap();
        assert!(children.iter().any(|c| c == "control"));
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out.join("multinode"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the inventory holds the password");
        }

        // globals.yml and the .ini files parse; the VLAN variant declares its range.
        let py = tool("python3")
            .arg("-c")
            .arg("import sys, yaml, configparser\ng = yaml.safe_load(open(sys.argv[1]))\nassert g['network_interface'] == 'veth0' and g['neutron_external_interface'] == 'veth1', g\nassert g['kolla_internal_vip_address'] == '192.168.10.20'\nassert g['enable_proxysql'] == 'no' and g['openstack_release'] == '2025.1'\nfor f in sys.argv[2:]:\n    c = configparser.ConfigParser(); c.read_string(open(f).read())\nc = configparser.ConfigParser(); c.read(sys.argv[3])\nprint(c.get('ml2_type_vlan', 'network_vlan_ranges', fallback='none'))\n")
            .arg(out.join("globals.yml"))
            .arg(out.join("config/nova/nova-compute.conf"))
            .arg(out.join("config/neutron/ml2_conf.ini"))
            .arg(out.join("ansible.cfg"))
            .output()
            .unwrap();
        assert!(
            py.status.success(),
            "{}",
            String::from_utf8_lossy(&py.stderr)
        );
        let range = String::from_utf8_lossy(&py.stdout).trim().to_string();
        if cluster == "cluster-ost-vlan" {
            assert_eq!(range, "physnet1:101:200");
        } else {
            assert_eq!(range, "none");
        }
    }

    // With the stock inventory of a release: its child groups are kept.
    let dir = tempfile::tempdir().unwrap();
    let stock = dir.path().join("multinode.stock");
    std::fs::write(
        &stock,
        "# These initial groups are the only groups required to be modified.\n[control]\ncontrol01\n\n[network]\nnetwork01\n\n[compute]\ncompute01\n\n[monitoring]\nmonitoring01\n\n[storage]\nstorage01\n\n[deployment]\nlocalhost ansible_connection=local\n\n[baremetal:children]\ncontrol\nnetwork\ncompute\nstorage\nmonitoring\n\n[nova:children]\ncontrol\n\n[nova-api:children]\nnova\n",
    )
    .unwrap();
    let out = dir.path().join("m");
    rpiimg_ok(&[
        "cluster",
        "--profile",
        &profile("cluster-ost"),
        "--out",
        out.to_str().unwrap(),
        "--kolla-inventory",
        stock.to_str().unwrap(),
    ]);
    let text = read(&out.join("multinode"));
    assert!(
        text.contains("[nova-api:children]\nnova\n") && !text.contains("control01"),
        "{text}"
    );
    let g = tool("ansible-inventory")
        .arg("-i")
        .arg(out.join("multinode"))
        .arg("--graph")
        .arg("nova-api")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&g.stdout).contains("ost04"),
        "{}",
        String::from_utf8_lossy(&g.stdout)
    );
    // Not an inventory: a clear error, exit 2.
    let o = rpiimg(&[
        "cluster",
        "--profile",
        &profile("cluster-ost"),
        "--out",
        dir.path().join("x").to_str().unwrap(),
        "--kolla-inventory",
        repo().join("README.md").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not a Kolla-Ansible inventory"),
        "{}",
        stderr(&o)
    );
}

/// A profile's `mgmt/<name>.j2` replaces the built-in template (the first
/// overlay that has one wins), is rendered with the same context, and is
/// read like every other host file the profile names: a link that leaves
/// the overlay is refused, and the secret it points at is never printed.
#[test]
fn mgmt_overrides_replace_builtin_templates_and_stay_inside_the_overlay() {
    let d = tempfile::tempdir().unwrap();
    for ov in ["first", "second"] {
        std::fs::create_dir_all(d.path().join(ov).join("mgmt")).unwrap();
    }
    std::fs::write(
        d.path().join("first/mgmt/hosts.j2"),
        "# lab {{ cluster.name }}\n",
    )
    .unwrap();
    std::fs::write(d.path().join("second/mgmt/hosts.j2"), "# loses\n").unwrap();
    std::fs::write(
        d.path().join("second/mgmt/README.j2"),
        "read me {{ cluster.name }}\n",
    )
    .unwrap();
    let prof = d.path().join("cluster.toml");
    std::fs::write(
        &prof,
        format!(
            "extends = {:?}\noverlays = [\"first\", \"second\"]\n",
            profile("cluster-ost")
        ),
    )
    .unwrap();
    let out = d.path().join("mgmt");
    let args = [
        "cluster",
        "--profile",
        prof.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    rpiimg_ok(&args);
    assert_eq!(read(&out.join("hosts")), "# lab ost\n");
    assert_eq!(read(&out.join("README")), "read me ost\n");
    // Built-in templates still render the rest.
    assert!(read(&out.join("multinode")).contains("[control]"));

    let secret = d.path().join("host-secret");
    std::fs::write(&secret, "hostsecret-in-mgmt\n").unwrap();
    std::fs::remove_file(d.path().join("second/mgmt/README.j2")).unwrap();
    std::os::unix::fs::symlink(&secret, d.path().join("second/mgmt/README.j2")).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    let o = rpiimg(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("outside") && err.contains("README.j2"),
        "{err}"
    );
    assert!(!err.contains("hostsecret") && !out.exists(), "{err}");
}
