//! The lab's other half: stable SSH host keys in the node images, and the
//! management host's files (`rpiimg cluster`) from the same profile, judged
//! by ssh-keygen, ansible-inventory, a YAML and an INI parser, and debugfs.

use std::path::{Path, PathBuf};

use crate::support::*;

fn profile(name: &str) -> String {
    profile_path(name)
}

/// rpiimg with its own key store directory.
fn with_keys(keys: &Path) -> Run {
    cli().env("RPIIMG_KEYS_DIR", keys)
}

/// rpiimg with its own key store directory; it must succeed.
fn run_with_keys(args: &[&str], keys: &Path) -> std::process::Output {
    with_keys(keys).args(args).ok()
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
    with_keys(keys)
        .build(&["ost04-control"], &base, out)
        .args(["-q", "--force"])
        .args(extra)
        .ok();
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
                "dump -p /etc/ssh/rpiimg/ssh_host_{t}_key {}",
                key.display()
            ))
            .arg(at_offset(img, off))
            .output()
            .unwrap();
        assert!(o.status.success());
        let stat = debugfs(img, off, &format!("stat /etc/ssh/rpiimg/ssh_host_{t}_key"));
        assert!(
            stat.contains("Mode:  0600") && stat.contains("User:     0   Group:     0"),
            "{stat}"
        );
        let public = debugfs(
            img,
            off,
            &format!("cat /etc/ssh/rpiimg/ssh_host_{t}_key.pub"),
        );
        out.push((key, public.trim().to_string()));
    }
    out
}

#[test]
fn host_keys_are_stable_valid_and_match_known_hosts() {
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
                with_keys(&keys)
                    .arg("verify")
                    .arg(&img)
                    .profiles(&["ost04-control"])
                    .arg("--base")
                    .arg(&base)
                    .output()
            };
            assert_eq!(verify().status.code(), Some(0), "{}", stdout(&verify()));
            run_with_keys(
                &[
                    "fs",
                    img.to_str().unwrap(),
                    "put",
                    fake.to_str().unwrap(),
                    "/etc/ssh/rpiimg/ssh_host_ed25519_key.pub",
                    "--mode",
                    "644",
                ],
                &keys,
            );
            let o = verify();
            assert_stdout(
                &o,
                1,
                &["FAIL file /etc/ssh/rpiimg/ssh_host_ed25519_key.pub"],
            );
            // Rebuild to restore the image for what follows.
            build(flavour, &out, &keys, &[]);
        }
        // The first boot's key regeneration, run on the image's own tree:
        // the image's regenerate_ssh_host_keys script (bookworm's firstboot
        // calls it as init, before systemd; trixie may run its unit) with
        // its paths moved under the extracted root, then cloud-init's wider
        // glob (ssh_host_*key*) and `ssh-keygen -A` as sshd-keygen runs it.
        // The keys sshd is told to serve must be untouched and be the ones
        // in known_hosts.
        let root = dir.path().join(format!("{flavour}-root"));
        std::fs::create_dir_all(&root).unwrap();
        let (off, _) = partition(&img, 2);
        debugfs(&img, off, &format!("rdump /etc /usr {}", root.display()));
        let script = read(&root.join("usr/lib/raspberrypi-sys-mods/regenerate_ssh_host_keys"));
        assert!(
            script.contains("rm -f /etc/ssh/ssh_host_*_key*"),
            "{script}"
        );
        let moved = script
            .replace("/etc/", "\"$R\"/etc/")
            .replace("ssh-keygen -A", "ssh-keygen -A -f \"$R\"")
            .replace("systemctl -q disable regenerate_ssh_host_keys", "");
        let o = tool("sh")
            .arg("-ec")
            .arg(format!(
                "{moved}\nrm -f \"$R\"/etc/ssh/ssh_host_*key*\nssh-keygen -A -f \"$R\"\n"
            ))
            .env("R", &root)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            root.join("etc/ssh/ssh_host_rsa_key").exists(),
            "the glob and -A ran"
        );
        let dropin = read(&root.join("etc/ssh/sshd_config.d/00-rpiimg.conf"));
        let served: Vec<&str> = dropin
            .lines()
            .filter_map(|l| l.strip_prefix("HostKey "))
            .collect();
        assert_eq!(served.len(), found.len(), "{dropin}");
        for (key, public) in &found {
            let name = key.file_name().unwrap().to_str().unwrap();
            let path = served
                .iter()
                .find(|p| p.ends_with(&format!("/{name}")))
                .unwrap();
            let after = root.join(path.trim_start_matches('/'));
            assert_eq!(read(&after), read(key), "{path} survived the first boot");
            let words: Vec<&str> = public.split_whitespace().take(2).collect();
            assert!(
                known.contains(&words.join(" ")),
                "{flavour}: {public} in {known}"
            );
        }
        // Debian's sshd_config includes the drop-ins first (so HostKey
        // applies); the old mask is gone since it is not needed.
        assert!(read(&root.join("etc/ssh/sshd_config"))
            .contains("Include /etc/ssh/sshd_config.d/*.conf"));
        let sys = root.join("etc/systemd/system");
        assert!(std::fs::read_link(sys.join("regenerate_ssh_host_keys.service")).is_err());
        if flavour == "trixie" {
            let ci = read(&root.join("etc/cloud/cloud.cfg.d/zz-rpiimg.cfg"));
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
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    // A trixie base: the bundle is Kolla-Ansible 2026.1's.
    let base = fixture(&["--flavour", "trixie"]);
    for cluster in ["cluster-ost", "cluster-ost-vlan"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("mgmt");
        cli().cluster(cluster, &base, &out).ok();
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
        // Strings arrive exactly, never templated (host_vars/, !unsafe).
        assert_eq!(
            v["_meta"]["hostvars"]["ost01"]["ansible_user"],
            serde_json::json!({ "__ansible_unsafe": "ubuntu" })
        );
        assert_eq!(v["_meta"]["hostvars"]["ost01"]["ansible_become"], true);
        let children = v["baremetal"]["children"].as_array().unwrap();
        assert!(children.iter().any(|c| c == "control"));
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |f: &str| std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode("host_vars/ost01.yml"), 0o600, "it holds the password");
            assert_eq!(mode("multinode"), 0o644, "no password in the inventory");
            assert!(!read(&out.join("multinode")).contains("ansible_password"));
        }

        // The globals drop-in and the .ini files parse; both variants declare
        // physnet1's VLAN range (the guide's ml2_conf.ini); the scripts pass
        // bash -n and shellcheck.
        let py = tool("python3")
            .arg("-c")
            .arg("import sys, yaml, configparser\ng = yaml.safe_load(open(sys.argv[1]))\nassert g['network_interface'] == 'veth0' and g['neutron_external_interface'] == 'veth1', g\nassert g['kolla_internal_vip_address'] == '192.168.10.20'\nassert g['enable_proxysql'] == 'no' and 'openstack_release' not in g, g\nfor f in sys.argv[2:]:\n    c = configparser.ConfigParser(); c.read_string(open(f).read())\nc = configparser.ConfigParser(); c.read(sys.argv[3])\nprint(c.get('ml2_type_vlan', 'network_vlan_ranges', fallback='none'))\n")
            .arg(out.join("globals.d/rpiimg.yml"))
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
        assert_eq!(range, "physnet1:101:200");
        for sh in ["deploy.sh", "first-cloud.sh"] {
            let n = tool("bash").arg("-n").arg(out.join(sh)).output().unwrap();
            assert!(
                n.status.success(),
                "{sh}: {}",
                String::from_utf8_lossy(&n.stderr)
            );
            let c = tool("shellcheck").arg(out.join(sh)).output().unwrap();
            assert!(
                c.status.success(),
                "{sh}: {}",
                String::from_utf8_lossy(&c.stdout)
            );
        }
    }

    // With the stock inventory of the release (here made from its facts,
    // as kolla-ansible 22.2.0 ships it, with a comment after a header as
    // Ansible allows): its groups are kept, the placeholder hosts dropped.
    let stock_text = stock_inventory(
        "2026.1",
        "# These initial groups are the only groups required to be modified.\n",
        " # hosts",
    );
    let dir = tempfile::tempdir().unwrap();
    let stock = dir.path().join("multinode.stock");
    std::fs::write(&stock, &stock_text).unwrap();
    let out = dir.path().join("m");
    cli()
        .cluster("cluster-ost", &base, &out)
        .args(["--kolla-inventory", stock.to_str().unwrap()])
        .ok();
    let text = read(&out.join("multinode"));
    assert!(
        text.contains("[nova-api:children]\nnova\n")
            && !text.contains("control01")
            && !text.contains("compute01"),
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
    cli()
        .cluster("cluster-ost", &base, &dir.path().join("x"))
        .args([
            "--kolla-inventory",
            repo().join("README.md").to_str().unwrap(),
        ])
        .fails(2, &["not a Kolla-Ansible inventory"]);
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
    let base = fixture(&["--flavour", "trixie"]);
    let args = [
        "cluster",
        "--profile",
        prof.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
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
    let err = assert_stderr(&o, 2, &["outside", "README.j2"]);
    assert!(!err.contains("hostsecret") && !out.exists(), "{err}");
}

/// A file that sorts after rpiimg's sysctl drop-in and sets one of its
/// keys takes the profile's value away on the node: `verify --manifest`
/// names it (and the stock 98-rpi.conf, which sorts before, does not).
#[test]
fn verify_names_a_file_that_overrides_a_profile_value() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    copy_test_keys(&keys);
    let out = dir.path().join("out");
    let img = build("trixie", &out, &keys, &[]);
    let i = img.to_str().unwrap();
    let manifest = out.join("ost04.manifest.json");
    let m = manifest.to_str().unwrap();
    let o = rpiimg(&["verify", i, "--manifest", m, "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("ok   /etc/sysctl.d/zz-rpiimg.conf decides its settings"));
    let local = dir.path().join("local.conf");
    std::fs::write(&local, "net.ipv4.ip_forward = 0\n").unwrap();
    rpiimg_ok(&[
        "fs",
        i,
        "put",
        local.to_str().unwrap(),
        "/etc/sysctl.d/zzz-local.conf",
        "-q",
    ]);
    let o = rpiimg(&["verify", i, "--manifest", m, "-q"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(
        text.contains("FAIL /etc/sysctl.d/zz-rpiimg.conf decides its settings")
            && text.contains("/etc/sysctl.d/zzz-local.conf sets net.ipv4.ip_forward = 0"),
        "{text}"
    );
}

/// The Kolla-Ansible release follows the base's OS: without `[kolla]
/// release` a trixie base gets 2026.1 and the plan says so; 2025.1 on
/// trixie is refused by `plan` and `cluster` (exit 2, naming both and the
/// release that would do), and nothing is written.
#[test]
fn the_kolla_release_follows_the_base_os() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    copy_test_keys(&keys);
    let trixie = fixture(&["--flavour", "trixie"]);
    let bookworm = fixture(&["--flavour", "bookworm"]);
    let cluster = |prof: &str, base: &Path, out: &Path, extra: &[&str]| {
        with_keys(&keys)
            .cluster(prof, base, out)
            .args(extra)
            .output()
    };
    let plan = |prof: &str, base: &Path| with_keys(&keys).plan(prof, base).output();
    let o = plan(&profile("ost04-control"), &trixie);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("kolla: Kolla-Ansible 2026.1 (kolla-ansible 22.2.0), the newest release rpiimg knows that accepts the base's Debian trixie"),
        "{}",
        stdout(&o)
    );
    let pinned = dir.path().join("pinned.toml");
    std::fs::write(
        &pinned,
        format!(
            "extends = {:?}\n\n[kolla]\nrelease = \"2025.1\"\n",
            profile("ost04-control")
        ),
    )
    .unwrap();
    let p = pinned.to_str().unwrap();
    let o = plan(p, &trixie);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(
        e.contains("kolla.release = \"2025.1\" does not accept the base image's OS, debian trixie")
            && e.contains("releases that accept it: 2026.1"),
        "{e}"
    );
    // On bookworm 2025.1 is fine, and the plan says it is the profile's.
    let o = plan(p, &bookworm);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o)
        .contains("kolla: Kolla-Ansible 2025.1 (kolla-ansible 20.6.0), as the profile says"));
    // cluster refuses it too, and writes nothing.
    let out = dir.path().join("mgmt");
    let o = cluster(p, &trixie, &out, &[]);
    assert_stderr(&o, 2, &["releases that accept it: 2026.1"]);
    assert!(!out.exists());
    // A stock inventory of another release is refused, naming it.
    let o = cluster(p, &bookworm, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ours = read(&out.join("multinode"));
    let other = dir.path().join("other-multinode");
    std::fs::write(
        &other,
        ours.replace("[kolla-logs:children]", "[kolla_logs:children]")
            .replace("[kolla-toolbox:children]", "[kolla_toolbox:children]"),
    )
    .unwrap();
    let o = cluster(
        p,
        &bookworm,
        &dir.path().join("mgmt2"),
        &["--kolla-inventory", other.to_str().unwrap()],
    );
    assert_stderr(
        &o,
        2,
        &["is not the stock inventory of Kolla-Ansible 2025.1"],
    );
}

/// Connection variables reach Ansible exactly as the profile has them
/// (issue 26, class 6): an INI inventory line made `0x10` the integer 16,
/// `True` a boolean, `'quoted'` lost its quotes, and `{{ ... }}` was
/// templated. Each tricky password goes through `rpiimg cluster` and the
/// real `ansible-inventory --list` of the bundle's inventory, compared
/// exactly, as an !unsafe (never templated) string on every node.
#[test]
fn connection_variables_reach_ansible_exactly() {
    let base = fixture(&["--flavour", "trixie"]);
    private_test_keys();
    let keys = repo().join("tests/fixtures/keys");
    let cluster = read(&repo().join("profiles/ost/cluster-ost.toml"));
    assert!(cluster.contains("\npassword = \"ubuntu\"\n"));
    let values = [
        "0x10",
        "True",
        "yes",
        "no",
        "null",
        "~",
        "'quoted'",
        "\"dq\"",
        "a b",
        "#hash",
        "a #b",
        ";semi",
        "a;b",
        "{{ jinja }}",
        "{{ lookup('env', 'HOME') }}",
        "{% raw %}",
        "1e3",
        "007",
        "-1",
        "3.14",
        " lead",
        "trail ",
        " both ",
        "ünïcødé ✓",
        "back\\slash\\",
        "\\\\double",
        "a=b",
        "=",
        "[1, 2]",
        "{a: 1}",
        "- dash",
        "*star",
        "&anchor",
        "!tag",
        "%pct",
        "@at",
        "`tick`",
        "key: value",
        "$HOME",
        "\\x41",
        "'",
        "\"",
    ];
    let d = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let prof = d.path().join(format!("cluster-{i}.toml"));
        // A TOML basic string: JSON's escapes are TOML's.
        let quoted = serde_json::to_string(v).unwrap();
        std::fs::write(
            &prof,
            cluster.replace(
                "\npassword = \"ubuntu\"\n",
                &format!("\npassword = {quoted}\n"),
            ),
        )
        .unwrap();
        let out = d.path().join(format!("mgmt-{i}"));
        let o = with_keys(&keys)
            .cluster(prof.to_str().unwrap(), &base, &out)
            .ok();
        assert!(!stderr(&o).contains(v) || v.len() < 3, "{v:?} in the log");
        // ansible-inventory runs side by side (each is a Python start-up).
        let child = tool("ansible-inventory")
            .arg("-i")
            .arg(out.join("multinode"))
            .arg("--list")
            .env("ANSIBLE_LOCALHOST_WARNING", "False")
            .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "False")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        runs.push((v, out, child));
        if runs.len() >= 8 {
            check_inventory(runs.remove(0));
        }
    }
    for r in runs {
        check_inventory(r);
    }
}

fn check_inventory((v, out, child): (&&str, PathBuf, std::process::Child)) {
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{v:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The stock [deployment] group's localhost aside, the four nodes.
    for host in ["ost01", "ost02", "ost03", "ost04"] {
        let vars = &inv["_meta"]["hostvars"][host];
        assert_eq!(
            vars["ansible_password"],
            serde_json::json!({ "__ansible_unsafe": v }),
            "{v:?} on {host}"
        );
        assert_eq!(
            vars["ansible_user"],
            serde_json::json!({ "__ansible_unsafe": "ubuntu" })
        );
        assert_eq!(vars["ansible_become"], true);
    }
    // The inventory is complete: every node group and the stock ones.
    assert_eq!(inv["control"]["hosts"], serde_json::json!(["ost04"]));
    assert_eq!(
        inv["compute"]["hosts"],
        serde_json::json!(["ost01", "ost02", "ost03"])
    );
    assert!(inv["baremetal"]["children"].as_array().unwrap().len() >= 3);
    // The password is in the 0600 host_vars files only.
    let text = read(&out.join("multinode"));
    assert!(!text.contains("ansible_password"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(out.join("host_vars/ost01.yml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(m & 0o777, 0o600);
}
