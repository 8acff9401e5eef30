//! Node image outputs: the base is never modified, outputs are complete
//! under their final names, `sha256sum -c` and `bmaptool copy` accept them.

use std::path::Path;

use crate::support::*;
use rpiimg::ext4::write::{Content, Meta};
use rpiimg::image::{self, Cache};
use rpiimg::output::image::{build, ImageOptions};
use rpiimg::progress::Progress;

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
    let (staged, n) = build(&opened, "ost04", &opts, Progress::quiet(), |ed| {
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
    let w = staged
        .commit(&out.join("ost04.manifest.json"), "{}\n")
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(sha256_file(&base), base_sum, "the base must not change");
    // Images hold host keys and password hashes: 0600, the .xz too; the
    // .sha256 lines are public.
    for (f, want) in [
        ("ost04.img", 0o600),
        ("ost04.img.xz", 0o600),
        ("ost04.img.bmap", 0o600),
        ("ost04.img.sha256", 0o644),
        ("ost04.img.xz.sha256", 0o644),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(out.join(f)).unwrap().permissions().mode();
        assert_eq!(m & 0o777, want, "{f}");
    }
    assert_eq!(sha256_file(&w.image), w.sha256);
    for sums in ["ost04.img.sha256", "ost04.img.xz.sha256"] {
        let o = tool("sha256sum")
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
    let o = tool("bmaptool")
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
    let o = tool("xz")
        .arg("-dc")
        .arg(w.xz.as_ref().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(o.stdout == std::fs::read(&w.image).unwrap());
    // A second build refuses to overwrite, before doing any work.
    let err = build(&opened, "ost04", &opts, Progress::quiet(), |_| Ok(())).unwrap_err();
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
    let err = build(&opened, "n1", &opts, Progress::quiet(), |ed| {
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

/// On a filesystem with shared extents (XFS here) the node image is a clone
/// of the cached base: it takes almost no space and no copy is made.
#[test]
fn reflink_clone_where_the_filesystem_supports_it() {
    // mkfs.xfs is installed by .ci/run (tool() names the package when it
    // is missing); only a loop mount needs root.
    if !is_root() {
        eprintln!("skipped: needs root for an XFS loop mount");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fsimg = dir.path().join("xfs.img");
    std::fs::File::create(&fsimg)
        .unwrap()
        .set_len(700 << 20)
        .unwrap();
    assert!(tool("mkfs.xfs")
        .args(["-q", "-f", "-m", "reflink=1"])
        .arg(&fsimg)
        .status()
        .unwrap()
        .success());
    let mnt = dir.path().join("mnt");
    // Unmounted when the test ends, failing or not.
    let _mounted = match mount(&["-o", "loop"], &fsimg, &mnt) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipped: loop mount unavailable: {e}");
            return;
        }
    };
    {
        let base = mnt.join("base.img");
        std::fs::copy(fixture(&["--flavour", "bookworm"]), &base).unwrap();
        let used = || {
            // Delayed allocation: count blocks only once they are on disk.
            let _ = tool("sync").arg("-f").arg(&mnt).status();
            let o = tool("df")
                .arg("--output=used")
                .arg("-B1")
                .arg(&mnt)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        let before = used();
        let cache = Cache::new(mnt.join("cache"));
        let opened = image::open(&base, None, &cache, Progress::quiet()).unwrap();
        let opts = ImageOptions {
            out_dir: mnt.join("out"),
            xz: false,
            bmap: false,
            force: false,
            threads: 1,
            xz_level: 1,
            now: 0,
        };
        let (staged, ()) = build(&opened, "n1", &opts, Progress::quiet(), |ed| {
            ed.write_file(
                "/etc/hostname",
                Content::Bytes(b"n1\n".to_vec()),
                Meta::root(0o644),
            )
        })
        .unwrap();
        let w = staged
            .commit(&opts.out_dir.join("n1.manifest.json"), "{}\n")
            .unwrap();
        let grew = used().saturating_sub(before);
        assert!(
            grew < 16 << 20,
            "a clone should share the base's extents; the filesystem grew by {grew} bytes"
        );
        let (off, _) = partition(&w.image, 2);
        assert_eq!(debugfs(&w.image, off, "cat /etc/hostname"), "n1\n");
    }
}

/// A node's output set is complete iff its manifest exists (issue 10,
/// class 12): a full disk while staging leaves no final name at all, a kill
/// between renames leaves no manifest, and verify --manifest refuses then.
#[test]
fn outputs_are_all_or_nothing_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&["--flavour", "bookworm"]);
    let out = dir.path().join("out");
    let build = |fault: &str| {
        rpiimg_cmd()
            .args(["build", "--profile", &profile_path("ost04-control")])
            .args(["--base", base.to_str().unwrap(), "-q", "--force", "--out"])
            .arg(&out)
            .env("RPIIMG_FAULT", fault)
            .output()
            .unwrap()
    };
    let finals = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&out)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("ost04"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    // The disk fills while the manifest is written: nothing renamed.
    let o = build("manifest-write:enospc");
    assert_stderr(&o, 2, &["ost04.manifest.json"]);
    assert!(finals().is_empty(), "no final names: {:?}", finals());
    // Killed right after the image got its final name.
    let o = build("rename-2");
    assert!(!o.status.success());
    assert_eq!(finals(), ["ost04.img"], "only the image was renamed");
    let img = out.join("ost04.img");
    let o = rpiimg(&["verify", img.to_str().unwrap(), "--manifest"]);
    assert_stderr(&o, 2, &["no manifest at"]);
    // A whole build: the set is complete and the bare --manifest finds it.
    let o = build("");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        finals(),
        [
            "ost04.img",
            "ost04.img.bmap",
            "ost04.img.sha256",
            "ost04.manifest.json"
        ]
    );
    let o = rpiimg(&["verify", img.to_str().unwrap(), "--manifest"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A replacement killed halfway never pairs new files with the old manifest.
    let o = build("rename-3");
    assert!(!o.status.success());
    assert!(
        !finals().contains(&"ost04.manifest.json".to_string()),
        "{:?}",
        finals()
    );
}

/// `--xz` from a multi-block base (issue 16): blocks the patch did not
/// touch are the base's compressed bytes, the rest are compressed again
/// with the same boundaries; the stream passes `xz -t` and decompresses to
/// exactly the `.img`. A single-block base is compressed whole.
#[test]
fn xz_output_reuses_the_base_blocks_the_patch_did_not_touch() {
    use rpiimg::image::xz_index;
    for (mode, reused) in [("multi", true), ("single", false)] {
        let base = fixture(&["--flavour", "bookworm", "--xz", mode]);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        cli()
            .build(&["ost04-control"], &base, &out)
            .arg("--xz")
            .ok();
        let xz = out.join("ost04.img.xz");
        assert!(tool("xz").arg("-t").arg(&xz).status().unwrap().success());
        let o = tool("xz").arg("-dc").arg(&xz).output().unwrap();
        assert!(o.stdout == std::fs::read(out.join("ost04.img")).unwrap());
        let (b, n) = (
            xz_index::read(&base).unwrap().unwrap(),
            xz_index::read(&xz).unwrap().unwrap(),
        );
        let (bb, nb) = (std::fs::read(&base).unwrap(), std::fs::read(&xz).unwrap());
        let bytes = |data: &[u8], blk: &xz_index::Block| -> Vec<u8> {
            let s = usize::try_from(blk.offset).unwrap();
            data[s..s + usize::try_from(blk.stored()).unwrap()].to_vec()
        };
        if reused {
            assert_eq!(b.blocks.len(), n.blocks.len(), "same block layout");
            let same = b
                .blocks
                .iter()
                .zip(&n.blocks)
                .filter(|(x, y)| {
                    assert_eq!(x.uncompressed, y.uncompressed, "same boundaries");
                    bytes(&bb, x) == bytes(&nb, y)
                })
                .count();
            // The patch touches the tables, /etc, /home and the boot partition.
            assert!(
                same >= b.blocks.len() / 2 && same < b.blocks.len(),
                "{same} of {} blocks copied verbatim",
                b.blocks.len()
            );
        } else {
            assert_eq!(b.blocks.len(), 1);
            assert!(n.blocks.len() > 1, "compressed whole, in 16 MiB blocks");
        }
    }
}

/// A warm build (the base already decompressed in the cache) gives the
/// same image as a cold one, and `bmaptool copy` of it onto a card full of
/// other bytes reproduces it exactly (issue 16).
#[test]
fn warm_build_image_flashes_exactly_with_bmaptool() {
    let base = fixture(&["--flavour", "trixie", "--xz", "multi"]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let build = |out: &Path| {
        let o = rpiimg_cmd()
            .env("RPIIMG_CACHE_DIR", &cache)
            .args(["build", "--profile", &profile_path("ost04-control"), "-q"])
            .args(["--base", base.to_str().unwrap(), "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read_to_string(out.join("ost04.img.sha256")).unwrap()
    };
    let (cold, warm) = (dir.path().join("cold"), dir.path().join("warm"));
    let sum = build(&cold);
    assert_eq!(build(&warm), sum, "warm and cold builds agree");
    let img = warm.join("ost04.img");
    let card = dir.path().join("card.img");
    let size = std::fs::metadata(&img).unwrap().len();
    std::fs::write(&card, vec![0xAAu8; usize::try_from(size).unwrap()]).unwrap();
    let o = tool("bmaptool")
        .args(["copy", "--bmap"])
        .arg(warm.join("ost04.img.bmap"))
        .arg(&img)
        .arg(&card)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha256_file(&card), sum.split_whitespace().next().unwrap());
}

/// A pinned base is served from the cache without reading its `.xz`; if
/// the file at that path was replaced since, its blocks must not be
/// reused (they hold another image): the output is compressed whole and
/// still decompresses to exactly the `.img`.
#[test]
fn a_replaced_base_xz_lends_no_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let base = dir.path().join("base.img.xz");
    std::fs::copy(fixture(&["--flavour", "bookworm", "--xz", "multi"]), &base).unwrap();
    let pin = sha256_file(&base);
    let build = |out: &str| {
        let out = dir.path().join(out);
        let o = rpiimg_cmd()
            .env("RPIIMG_CACHE_DIR", &cache)
            .args(["build", "--profile", &profile_path("ost04-control"), "--xz"])
            .args(["--base", base.to_str().unwrap(), "--sha256", &pin, "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        (out, stdout(&o))
    };
    let (_, first) = build("first");
    assert!(first.contains("blocks compressed again"), "{first}");
    // Another image of the same size under the same name.
    std::fs::copy(fixture(&["--flavour", "trixie", "--xz", "multi"]), &base).unwrap();
    let (out, second) = build("second");
    assert!(!second.contains("blocks compressed again"), "{second}");
    let o = tool("xz")
        .arg("-dc")
        .arg(out.join("ost04.img.xz"))
        .output()
        .unwrap();
    assert!(o.stdout == std::fs::read(out.join("ost04.img")).unwrap());
}
