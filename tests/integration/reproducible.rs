//! Reproducible builds: the same base, profiles, key store and rpiimg give
//! the same bytes, whatever the cache state, output folder, time zone,
//! thread count or wall-clock time.

use std::path::{Path, PathBuf};

use crate::support::*;

fn profile(name: &str) -> String {
    profile_path(name)
}

/// rpiimg with a chosen environment (cache, key store, TZ, SOURCE_DATE_EPOCH).
fn with_env(env: &[(&str, &str)]) -> Run {
    cli().env_remove("SOURCE_DATE_EPOCH").envs(env)
}

fn build(base: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) {
    with_env(env)
        .build(&["ost04-control", "ost03-network"], base, out)
        .arg("-q")
        .args(extra)
        .ok();
}

fn outputs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn shadow_hash(img: &Path, user: &str) -> String {
    let (off, _) = partition(img, 2);
    let text = debugfs(img, off, "cat /etc/shadow");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{user}:")))
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("no {user} in /etc/shadow:\n{text}"))
        .to_string()
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let base = fixture(&["--flavour", "trixie"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = repo().join("tests/fixtures/keys");
    let keys = keys.to_str().unwrap();
    let cache_a = d.join("cache-a");
    let cache_b = d.join("cache-b");
    // Cold cache, one thread, UTC.
    build(
        &base,
        &d.join("one"),
        &["--xz", "--threads", "1"],
        &[
            ("RPIIMG_CACHE_DIR", cache_a.to_str().unwrap()),
            ("RPIIMG_KEYS_DIR", keys),
            ("TZ", "UTC"),
            ("LC_ALL", "C"),
        ],
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    // Another cold cache, then warm, other folders, threads and time zone.
    for (out, cache) in [("two", &cache_b), ("three", &cache_b)] {
        build(
            &base,
            &d.join("nested").join(out),
            &["--xz", "--threads", "2"],
            &[
                ("RPIIMG_CACHE_DIR", cache.to_str().unwrap()),
                ("RPIIMG_KEYS_DIR", keys),
                ("TZ", "Pacific/Kiritimati"),
                ("LC_ALL", "de_DE.UTF-8"),
            ],
        );
    }
    let one = all_files(&d.join("one"));
    // Two nodes of six files each, and the bundle (with host_vars/ for four nodes).
    assert_eq!(one.len(), 26, "{one:?}");
    for other in ["nested/two", "nested/three"] {
        let two = all_files(&d.join(other));
        assert_eq!(one.len(), two.len());
        for (a, b) in one.iter().zip(&two) {
            assert_eq!(a.file_name(), b.file_name());
            assert_eq!(
                sha256_file(a),
                sha256_file(b),
                "{} differs between builds",
                a.display()
            );
        }
    }
    // The manifest names its siblings by file name only.
    let m = std::fs::read_to_string(d.join("one/ost04.manifest.json")).unwrap();
    assert!(m.contains("\"image\": \"ost04.img\""), "{m}");
    assert!(
        !m.contains(d.to_str().unwrap()) && !m.contains("/work"),
        "host path in manifest"
    );

    // The password hash: the same twice, different per node.
    let h04 = shadow_hash(&d.join("one/ost04.img"), "ubuntu");
    assert_eq!(h04, shadow_hash(&d.join("nested/two/ost04.img"), "ubuntu"));
    assert_ne!(h04, shadow_hash(&d.join("one/ost03.img"), "ubuntu"));
    assert!(h04.starts_with("$6$"), "{h04}");

    // Another key store (another cluster's, or a lost one): other salts.
    let fresh = d.join("fresh-keys");
    build(
        &base,
        &d.join("four"),
        &[],
        &[
            ("RPIIMG_CACHE_DIR", cache_b.to_str().unwrap()),
            ("RPIIMG_KEYS_DIR", fresh.to_str().unwrap()),
        ],
    );
    assert_ne!(h04, shadow_hash(&d.join("four/ost04.img"), "ubuntu"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&fresh.join("ost")), 0o700);
        assert_eq!(mode(&fresh.join("ost/secret")), 0o600);
    }
    let secret = std::fs::read_to_string(fresh.join("ost/secret")).unwrap();
    let hex = secret
        .lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .unwrap();
    for f in all_files(&d.join("four")) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(hex.len()).any(|w| w == hex.as_bytes()),
            "the secret leaked into {}",
            f.display()
        );
    }
}

#[test]
fn source_date_epoch_changes_only_times() {
    let base = fixture(&["--flavour", "bookworm"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = repo().join("tests/fixtures/keys");
    for (out, t) in [("a", "1700000000"), ("b", "1800000000")] {
        build(
            &base,
            &d.join(out),
            &[],
            &[
                ("RPIIMG_CACHE_DIR", d.join("cache").to_str().unwrap()),
                ("RPIIMG_KEYS_DIR", keys.to_str().unwrap()),
                ("SOURCE_DATE_EPOCH", t),
            ],
        );
    }
    let (a, b) = (d.join("a/ost04.img"), d.join("b/ost04.img"));
    assert_ne!(sha256_file(&a), sha256_file(&b), "the times must show");
    // Content, modes, owners and links are the same: only time fields (and
    // the checksums over them) differ.
    let o = rpiimg(&["diff", a.to_str().unwrap(), b.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // The FAT entries rpiimg writes carry SOURCE_DATE_EPOCH (2023-11-14 22:13).
    let (off, _) = partition(&a, 1);
    let o = tool("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{off}", a.display()))
        .arg("::/")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&o.stdout);
    let ssh = listing
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("ssh "))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(ssh.contains("2023-11-14") && ssh.contains("22:13"), "{ssh}");
    // A bad SOURCE_DATE_EPOCH is an error naming it, exit 2, nothing written.
    with_env(&[
        ("SOURCE_DATE_EPOCH", "yesterday"),
        ("RPIIMG_KEYS_DIR", keys.to_str().unwrap()),
    ])
    .build(&["ost04-control"], &base, &d.join("c"))
    .fails(2, &["SOURCE_DATE_EPOCH=\"yesterday\""]);
    assert!(!d.join("c/ost04.img").exists());
}

#[test]
fn check_reproducible_builds_twice_and_keeps_one() {
    let base = fixture(&["--flavour", "trixie"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let prof = profile("ost04-control");
    let args = [
        "build",
        "--profile",
        &prof,
        "--base",
        base.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--check-reproducible",
    ];
    let o = rpiimg(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("reproducible: 18 files byte-identical"),
        "{}",
        stdout(&o)
    );
    let names: Vec<String> = outputs(&out)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            OUT_LOCK,
            "mgmt-ost",
            "ost04.img",
            "ost04.img.bmap",
            "ost04.img.sha256",
            "ost04.manifest.json"
        ],
        "no temporary folder left behind"
    );
    let sum = tool("sha256sum")
        .arg("-c")
        .arg("ost04.img.sha256")
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(sum.status.success());

    // Kept files replace the old set all or nothing: killed after the
    // first rename, the old manifest is already gone, so no new image is
    // ever paired with an old manifest (verify --manifest refuses it).
    let o = rpiimg_cmd()
        .env("RPIIMG_FAULT", "keep-2")
        .args(args)
        .args(["--force", "-q"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "the fault point was reached");
    assert!(!out.join("ost04.manifest.json").exists());
    let v = rpiimg(&[
        "verify",
        out.join("ost04.img").to_str().unwrap(),
        "--manifest",
    ]);
    assert_stderr(&v, 2, &["no manifest"]);
}
