//! `rpiimg verify` invariants: pass on fixtures, fail with the precise
//! problem named on tampered copies.

use crate::support::*;

fn verify(img: &std::path::Path) -> (i32, String) {
    let o = rpiimg(&["verify", img.to_str().unwrap(), "-q"]);
    (o.status.code().unwrap_or(-1), stdout(&o))
}

#[test]
fn fixtures_pass() {
    for f in ["bookworm", "trixie"] {
        let img = fixture(&["--flavour", f]);
        let (code, out) = verify(&img);
        assert_eq!(code, 0, "{f}: {out}");
    }
}

#[test]
fn tampered_copies_fail_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("mid");
    std::fs::write(&local, "0123456789abcdef0123456789abcdef\n").unwrap();
    let cmdline = dir.path().join("cmdline.txt");
    std::fs::write(
        &cmdline,
        "console=tty1 root=PARTUUID=deadbeef-02 rootwait\n",
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["put", local.to_str().unwrap(), "/etc/machine-id"],
            "machine-id holds",
        ),
        (
            vec!["chmod", "644", "/etc/sudoers.d/010_pi-nopasswd"],
            "010_pi-nopasswd is 0644",
        ),
        (
            vec!["put", local.to_str().unwrap(), "/var/lib/dbus/machine-id"],
            "/var/lib/dbus/machine-id exists",
        ),
        (
            vec![
                "put",
                cmdline.to_str().unwrap(),
                "/boot/firmware/cmdline.txt",
            ],
            "PARTUUID=deadbeef-02",
        ),
    ];
    for (edit, needle) in cases {
        let img = copy_fixture(&["--flavour", "bookworm"], dir.path());
        let i = img.to_str().unwrap();
        if edit[0] == "put" && edit[2].starts_with("/var/lib/dbus") {
            rpiimg_ok(&["fs", i, "mkdir", "-p", "/var/lib/dbus", "-q"]);
        }
        rpiimg_ok(&[&["fs", i][..], &edit[..], &["-q"]].concat());
        let (code, out) = verify(&img);
        assert_eq!(code, 1, "{edit:?}: {out}");
        assert!(
            out.contains(needle),
            "{edit:?}: expected {needle:?} in {out}"
        );
    }
    // A flipped byte in a block bitmap: its checksum no longer matches.
    let img = copy_fixture(&["--flavour", "trixie"], dir.path());
    let (off, _) = partition(&img, 2);
    let d = debugfs(&img, off, "stats");
    let bb: u64 = d
        .lines()
        .find_map(|l| l.split("block bitmap at ").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .expect("block bitmap location");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let pos = off + bb * 4096 + 4000;
    let mut b = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, pos).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[b[0] ^ 0x01], pos).unwrap();
    drop(f);
    let (code, out) = verify(&img);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("block bitmap checksum does not match"),
        "{out}"
    );
}

#[test]
fn broken_group_descriptor_checksum_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(&["--flavour", "bookworm"], dir.path());
    let (off, _) = partition(&img, 2);
    // Group descriptor 1's free-blocks count (GDT at block 1, 32-byte descriptors).
    let pos = off + 4096 + 32 + 0x0C;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let mut b = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, pos).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[b[0] ^ 0x04], pos).unwrap();
    drop(f);
    let o = rpiimg(&["verify", img.to_str().unwrap(), "-q"]);
    // The filesystem cannot be trusted at all: "cannot read" (2), naming the descriptor.
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("group descriptor 1") && err.contains("checksum"),
        "{err}"
    );
}
