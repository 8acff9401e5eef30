//! Files that hold secrets are their owner's alone (issue 26, class 4):
//! node images and the digests of their secret-bearing parts are 0600
//! whatever the umask, `plan --render-to` never writes into a file that is
//! already there (another user's, or one others can read), and a key store
//! open to other users is refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::support::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// rpiimg under `umask 022` (the usual umask, which would give 0644 files).
fn umask_022() -> Run {
    cli().umask("022")
}

fn test_keys() -> std::path::PathBuf {
    private_test_keys();
    repo().join("tests/fixtures/keys")
}

#[test]
fn secret_bearing_outputs_are_0600_under_umask_022() {
    let base = fixture(&["--flavour", "trixie"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    umask_022()
        .build(&["ost04-control"], &base, &out)
        .arg("-q")
        .ok();
    // The image holds host private keys and /etc/shadow; the bmap's range
    // sums and the manifest's file sums cover secret-bearing blocks and
    // files (a weak password in a file could be guessed against its sum).
    for f in ["ost04.img", "ost04.img.bmap", "ost04.manifest.json"] {
        assert_eq!(mode(&out.join(f)), 0o600, "{f}");
    }
    // The whole image's sum is no oracle without the key store.
    assert_eq!(mode(&out.join("ost04.img.sha256")), 0o644);
    // What stays public holds no secret: no hash, no key, no password.
    let image = std::fs::read(out.join("ost04.img")).unwrap();
    assert!(
        image
            .windows(b"PRIVATE KEY".len())
            .any(|w| w == b"PRIVATE KEY"),
        "the image does hold private keys"
    );
    let sums = std::fs::read_to_string(out.join("ost04.img.sha256")).unwrap();
    assert_eq!(sums.len(), 64 + 2 + "ost04.img\n".len(), "{sums}");
    let manifest = std::fs::read_to_string(out.join("ost04.manifest.json")).unwrap();
    for leak in ["$6$", "$y$", "PRIVATE KEY", "\"password\": \"ubuntu\""] {
        assert!(!manifest.contains(leak), "manifest holds {leak}");
    }
    // The management bundle keeps the nodes' password 0600.
    let bundle = out.join("mgmt-ost");
    for f in all_files(&bundle) {
        let text = std::fs::read_to_string(&f).unwrap();
        if text.contains("ansible_password") && !f.to_string_lossy().ends_with(".sh") {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
}

fn render(dir: &Path) -> std::process::Output {
    let base = fixture(&["--flavour", "trixie"]);
    umask_022()
        .plan("ost04-control", &base)
        .arg("--render-to")
        .arg(dir)
        .args(["--show-secrets", "-q"])
        .output()
}

const KEY: &str = "etc/ssh/rpiimg/ssh_host_ed25519_key";

#[test]
fn render_to_replaces_files_and_never_writes_into_them() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("r");
    // Pre-created, world-readable, with a second name outside DIR that
    // whoever made it keeps: writing into it would hand them the key.
    std::fs::create_dir_all(dir.join("etc/ssh/rpiimg")).unwrap();
    std::fs::write(dir.join(KEY), "old\n").unwrap();
    std::fs::set_permissions(dir.join(KEY), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::hard_link(dir.join(KEY), d.path().join("kept")).unwrap();
    std::fs::write(dir.join("etc/shadow"), "old\n").unwrap();
    std::fs::set_permissions(
        dir.join("etc/shadow"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::hard_link(dir.join("etc/shadow"), d.path().join("kept-shadow")).unwrap();
    let o = render(&dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(d.path().join("kept")).unwrap(),
        "old\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("kept-shadow")).unwrap(),
        "old\n"
    );
    let key = std::fs::read_to_string(dir.join(KEY)).unwrap();
    assert!(key.contains("PRIVATE KEY"), "{key}");
    assert_eq!(mode(&dir.join(KEY)), 0o600);
    // Texts that depend on a secret lose group and other bits (the image's
    // /etc/shadow is 0640 root:shadow; the rendered copy is the user's).
    assert_eq!(mode(&dir.join("etc/shadow")) & 0o077, 0);
    assert!(std::fs::read_to_string(dir.join("etc/shadow"))
        .unwrap()
        .contains("$"));
    // Modes of other files are the plan's.
    assert_eq!(mode(&dir.join("etc/hostname")), 0o644);
    // No temporary file is left beside them.
    assert!(all_files(&dir)
        .iter()
        .all(|f| !f.to_string_lossy().contains(".rpiimg-render-")));
}

#[test]
fn render_to_refuses_paths_another_user_owns() {
    if !is_root() {
        eprintln!("skipped: chown to another user needs root");
        return;
    }
    for victim in [KEY, "etc/ssh/rpiimg", "etc"] {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("r");
        std::fs::create_dir_all(dir.join("etc/ssh/rpiimg")).unwrap();
        std::fs::write(dir.join(KEY), "theirs\n").unwrap();
        std::os::unix::fs::chown(dir.join(victim), Some(65534), Some(65534)).unwrap();
        let before = std::fs::metadata(dir.join(KEY)).unwrap();
        let o = render(&dir);
        assert_eq!(o.status.code(), Some(2), "{victim}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("belongs to another user (uid 65534)")
                && e.contains("render into a directory of your own"),
            "{victim}: {e}"
        );
        assert!(!e.contains("PRIVATE KEY"), "{e}");
        // Nothing was written: their file is as it was, and no other file
        // was rendered before the refusal.
        let after = std::fs::metadata(dir.join(KEY)).unwrap();
        assert_eq!(
            (before.ino(), before.len(), before.mode()),
            (after.ino(), after.len(), after.mode())
        );
        assert_eq!(std::fs::read_to_string(dir.join(KEY)).unwrap(), "theirs\n");
        assert_eq!(all_files(&dir), vec![dir.join(KEY)]);
    }
}

#[test]
fn a_key_store_open_to_other_users_is_refused() {
    let base = fixture(&["--flavour", "trixie"]);
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("keys");
    std::fs::create_dir_all(keys.join("ost")).unwrap();
    let secret = keys.join("ost/secret");
    std::fs::copy(test_keys().join("ost/secret"), &secret).unwrap();
    let text = std::fs::read_to_string(&secret).unwrap();
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .unwrap()
        .to_string();
    let plan = |keys: &Path| {
        umask_022()
            .env("RPIIMG_KEYS_DIR", keys)
            .plan("ost04-control", &base)
            .arg("-q")
            .output()
    };
    let cases: &[(u32, u32, &str)] = &[
        (0o644, 0o700, "open to other users (mode 0644)"),
        (0o640, 0o700, "open to other users (mode 0640)"),
        (0o602, 0o700, "open to other users (mode 0602)"),
        (0o600, 0o777, "writable by other users (mode 0777)"),
        (0o600, 0o770, "writable by other users (mode 0770)"),
    ];
    for &(file, dir, want) in cases {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(file)).unwrap();
        std::fs::set_permissions(keys.join("ost"), std::fs::Permissions::from_mode(dir)).unwrap();
        let o = plan(&keys);
        let e = assert_stderr(&o, 2, &[want, "chmod "]);
        assert!(!e.contains(&hex), "the secret is in the message: {e}");
        assert!(o.stdout.is_empty());
        // The store is left as it was: refused, not repaired or replaced.
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), text);
        assert_eq!(mode(&secret), file);
    }
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(keys.join("ost"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = plan(&keys);
    assert!(o.status.success(), "{}", stderr(&o));
}
