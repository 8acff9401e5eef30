//! A failure's kind, as `--json` runs report it (`{"error": {"kind", ...}}`):
//! scripts match on these names, so each class of failure must keep its own
//! (a damaged file beside an image is not a usage error, a newer manifest
//! is unsupported, a missing key store is the key store's).

use crate::support::*;
use std::path::Path;

/// Run rpiimg with `args` (which ask for --json); it must fail with exit 2
/// and say `kind`, on stdout as JSON and on stderr as the message.
fn fails_as(args: &[&str], envs: &[(&str, &Path)], kind: &str, needle: &str) {
    let mut run = cli().args(args);
    for (k, v) in envs {
        run = run.env(k, v);
    }
    let o = run.output();
    assert_stderr(&o, 2, &[needle]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {}", stdout(&o)));
    assert_eq!(v["error"]["kind"], kind, "{args:?}: {v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{args:?}: {message}");
}

#[test]
fn each_failure_class_has_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&["--flavour", "bookworm"]);
    let out = dir.path().join("out");
    let keys = dir.path().join("keys");
    cli()
        .build(&["ost04-control"], &base, &out)
        .env("RPIIMG_KEYS_DIR", &keys)
        .ok();
    let img = out.join("ost04.img");
    let manifest = out.join("ost04.manifest.json");
    let img_s = img.to_str().unwrap();
    let text = std::fs::read_to_string(&manifest).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();

    // A manifest from a newer rpiimg: unsupported, with the version to use.
    let newer = dir.path().join("newer.json");
    let mut n = v.clone();
    n["manifest_version"] = serde_json::json!(999);
    std::fs::write(&newer, n.to_string()).unwrap();
    let newer_s = newer.to_str().unwrap();
    fails_as(
        &["verify", img_s, "--manifest", newer_s, "--json"],
        &[],
        "unsupported",
        "is newer than this rpiimg reads",
    );
    // A manifest that is not one: a damaged input file.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"manifest_version\": \"one\"}").unwrap();
    fails_as(
        &[
            "verify",
            img_s,
            "--manifest",
            junk.to_str().unwrap(),
            "--json",
        ],
        &[],
        "input_damaged",
        "not an rpiimg manifest",
    );
    // An image without the manifest a complete build writes beside it.
    let lone = dir.path().join("lone.img");
    std::fs::copy(&img, &lone).unwrap();
    fails_as(
        &["verify", lone.to_str().unwrap(), "--manifest", "--json"],
        &[],
        "input_damaged",
        "no manifest at",
    );
    // verify --profile without the cluster's key store: the key store's.
    fails_as(
        &[
            "verify",
            img_s,
            "--profile",
            &profile_path("ost04-control"),
            "--json",
        ],
        &[("RPIIMG_KEYS_DIR", &dir.path().join("no-keys"))],
        "key_store",
        "no key store for cluster",
    );
    // An image changed after its build: flash refuses it as damaged, and
    // writes nothing.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&img, &bytes).unwrap();
    let card = dir.path().join("card.img");
    let pair = format!("{img_s}={}", card.display());
    fails_as(
        &["flash", "--to-file", &pair, "--yes", "--json"],
        &[],
        "input_damaged",
        "the image changed or was damaged after its build",
    );
    assert!(
        std::fs::metadata(&card).map_or(true, |m| m.len() == 0),
        "flash wrote a damaged image"
    );
    // The manifest is untouched by all of it.
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), text);
}
