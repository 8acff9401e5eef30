//! Node image outputs: the base is never modified, outputs are complete
//! under their final names, `sha256sum -c` and `bmaptool copy` accept them.

mod support;

use std::process::Command;

use rpiimg::ext4::write::{Content, Meta};
use rpiimg::image::{self, Cache};
use rpiimg::output::image::{build, ImageOptions};
use rpiimg::progress::Progress;
use support::*;

#[test]
fn outputs_verify_with_sha256sum_and_bmaptool() {
    let dir = tempfile::tempdir().unwrap();
    let base = copy_fixture(&["--flavour", "trixie"], dir.path());
    let base_sum = sha256_file(&base);
    let cache = Cache::new(dir.path().join("cache"));
    let opened = image::open(&base, None, &cache, Progress::quiet()).unwrap();
    let out = dir.path().join("out");
    let opts = ImageOptions {
        out_dir: out.clone(),
        xz: true,
        bmap: true,
        force: false,
        threads: 2,
        xz_level: 1,
        now: 1_760_000_000,
    };
    let (w, n) = build(&opened, "ost04", &opts, &cache, Progress::quiet(), |ed| {
        ed.write_file(
            "/etc/hostname",
            Content::Bytes(b"ost04\n".to_vec()),
            Meta::root(0o644),
        )?;
        // A zero-filled file: its blocks must still be in the block map.
        ed.write_file(
            "/var/zeros",
            Content::Bytes(vec![0u8; 64 << 10]),
            Meta::root(0o644),
        )?;
        ed.write_file(
            "/boot/firmware/ssh",
            Content::Bytes(Vec::new()),
            Meta::root(0o644),
        )?;
        Ok(3)
    })
    .unwrap();
    assert_eq!(n, 3);
    assert_eq!(sha256_file(&base), base_sum, "the base must not change");
    assert_eq!(sha256_file(&w.image), w.sha256);
    for sums in ["ost04.img.sha256", "ost04.img.xz.sha256"] {
        let o = Command::new("sha256sum")
            .arg("-c")
            .arg(sums)
            .current_dir(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "sha256sum -c {sums}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
    // bmaptool writes only mapped blocks; onto a file full of 0xAA bytes the
    // result must still equal the image.
    let target = dir.path().join("card.img");
    std::fs::write(&target, vec![0xAAu8; usize::try_from(w.size).unwrap()]).unwrap();
    let o = Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(w.bmap.as_ref().unwrap())
        .arg(&w.image)
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bmaptool copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (off, _) = partition(&target, 2);
    assert!(
        e2fsck_problems(&target, off).is_empty(),
        "card copy must be a clean filesystem"
    );
    assert_eq!(debugfs(&target, off, "cat /etc/hostname"), "ost04\n");
    let zeros = dir.path().join("zeros");
    debugfs(
        &target,
        off,
        &format!("dump /var/zeros {}", zeros.display()),
    );
    assert!(
        std::fs::read(&zeros).unwrap().iter().all(|&b| b == 0),
        "zero-filled file blocks are mapped"
    );
    // The xz decompresses to the image.
    let o = Command::new("xz")
        .arg("-dc")
        .arg(w.xz.as_ref().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(o.stdout == std::fs::read(&w.image).unwrap());
    // A second build refuses to overwrite, before doing any work.
    let err = build(&opened, "ost04", &opts, &cache, Progress::quiet(), |_| {
        Ok(())
    })
    .unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
}

#[test]
fn a_failed_edit_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let base = copy_fixture(&["--flavour", "bookworm"], dir.path());
    let cache = Cache::new(dir.path().join("cache"));
    let opened = image::open(&base, None, &cache, Progress::quiet()).unwrap();
    let out = dir.path().join("out");
    let opts = ImageOptions {
        out_dir: out.clone(),
        xz: false,
        bmap: true,
        force: false,
        threads: 1,
        xz_level: 1,
        now: 0,
    };
    let err = build(&opened, "n1", &opts, &cache, Progress::quiet(), |ed| {
        ed.write_file(
            "/no/such/dir/x",
            Content::Bytes(b"x".to_vec()),
            Meta::root(0o644),
        )?;
        Ok(())
    })
    .unwrap_err();
    assert!(err.to_string().contains("/no"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(
        left.is_empty(),
        "nothing may be left in the output directory"
    );
}
