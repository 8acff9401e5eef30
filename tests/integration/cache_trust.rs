//! What rpiimg trusts must be proven (issue 26, class 5): a cache entry
//! changed after it was filled is refused, named, with the command that
//! drops it; `rpiimg cache` lists and clears entries without pulling one
//! from under a run that fills it; `verify --manifest` compares the
//! image's bytes with the manifest's sha256.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::support::*;

fn in_cache(cache: &Path, args: &[&str]) -> std::process::Output {
    cli().env("RPIIMG_CACHE_DIR", cache).args(args).output()
}

fn build_into(cache: &Path, xz: &Path, out: &Path) -> std::process::Output {
    cli()
        .env("RPIIMG_CACHE_DIR", cache)
        .build(&["ost04-control"], xz, out)
        .arg("-q")
        .output()
}

/// The drop command the error names, run as printed.
fn run_drop_command(err: &str) -> std::process::Output {
    let cmd = err
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in: {err}"));
    assert!(cmd.starts_with("rpiimg --cache-dir "), "{cmd}");
    let words: Vec<&str> = cmd.split_whitespace().skip(1).collect();
    rpiimg_cmd().args(words).output().unwrap()
}

#[test]
fn a_changed_cache_entry_is_refused_named_and_dropped_by_the_command_given() {
    let dir = tempfile::tempdir().unwrap();
    let xz = fixture(&["--flavour", "bookworm", "--xz", "single"]);
    let sha = sha256_file(&xz);
    let cache = dir.path().join("cache");
    let out = dir.path().join("out");
    let o = in_cache(&cache, &["inspect", xz.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let entry = cache.join(format!("{sha}.img"));
    let pristine = std::fs::read(&entry).unwrap();
    // Every command reads an entry through the same check; build is the
    // one that matters most (and the slowest), so it gets the last case.
    let refused_by = |what: &str, args: &[&str]| {
        let o = in_cache(&cache, args);
        let err = assert_stderr(&o, 2, &[&entry.display().to_string()]);
        assert!(err.contains(what), "says {what}: {err}");
        assert!(
            err.contains(&format!("cache clear {sha}`")),
            "names the drop command: {err}"
        );
    };
    let refused = |what: &str| {
        let o = build_into(&cache, &xz, &out);
        let err = assert_stderr(&o, 2, &[&entry.display().to_string()]);
        assert!(err.contains(what), "says {what}: {err}");
        assert!(
            err.contains(&format!("cache clear {sha}`")),
            "names the drop command: {err}"
        );
        assert!(!out.join("ost04.img").exists() && !out.join("ost04.manifest.json").exists());
        // verify --profile reads the base through the same check.
        let v = in_cache(
            &cache,
            &[
                "verify",
                xz.to_str().unwrap(),
                "--profile",
                &profile_path("ost04-control"),
                "--base",
                xz.to_str().unwrap(),
            ],
        );
        assert_eq!(v.status.code(), Some(2), "{}", stderr(&v));
        err
    };

    // Bytes appended (something put into the entry).
    std::fs::OpenOptions::new()
        .append(true)
        .open(&entry)
        .unwrap()
        .write_all(b"extra")
        .unwrap();
    refused_by("damaged:", &["inspect", xz.to_str().unwrap()]);
    // Cut short.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap()
        .set_len(pristine.len() as u64 - 4096)
        .unwrap();
    refused_by("truncated:", &["ls", xz.to_str().unwrap(), "/etc"]);
    // One byte changed, the size as sealed: the changed file is hashed.
    std::fs::write(&entry, &pristine).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap();
    let at = pristine.len() as u64 / 2;
    f.write_all_at(&[pristine[at as usize] ^ 0xFF], at).unwrap();
    drop(f);
    let err = refused("its sha256 is");

    // The command it names drops the entry; the next build fills it afresh.
    let d = run_drop_command(&err);
    assert!(d.status.success(), "{}", stderr(&d));
    assert!(!entry.exists());
    let o = in_cache(&cache, &["inspect", xz.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&entry).unwrap(), pristine);

    // The same bytes in another file (a restored cache) are resealed, not refused.
    let copy = dir.path().join("copy");
    std::fs::copy(&entry, &copy).unwrap();
    std::fs::rename(&copy, &entry).unwrap();
    let o = in_cache(&cache, &["inspect", xz.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn cache_list_and_clear_leave_other_entries_and_busy_ones() {
    let dir = tempfile::tempdir().unwrap();
    let xz = fixture(&["--flavour", "bookworm", "--xz", "single"]);
    let cache = dir.path().join("cache");
    // A second entry: an .xz of something that is no disk image (filled,
    // then refused when its partition table is read).
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0x5Au8; 1 << 20]).unwrap();
    let st = tool("xz").arg("-zk").arg(&junk).status().unwrap();
    assert!(st.success());
    let junk_xz = dir.path().join("junk.img.xz");
    assert!(in_cache(&cache, &["inspect", xz.to_str().unwrap()])
        .status
        .success());
    assert_eq!(
        in_cache(&cache, &["inspect", junk_xz.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    let (a, b) = (sha256_file(&xz), sha256_file(&junk_xz));
    let list = || -> Vec<serde_json::Value> {
        let o = in_cache(&cache, &["cache", "list", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let l = list();
    let mut keys: Vec<&str> = l
        .iter()
        .map(|e| e["source_sha256"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    let mut want = [a.as_str(), b.as_str()];
    want.sort_unstable();
    assert_eq!(keys, want);
    assert!(l.iter().all(|e| e["state"] == "sealed"), "{l:?}");
    let junk_entry = l.iter().find(|e| e["source_sha256"] == b.as_str()).unwrap();
    assert_eq!(junk_entry["size"], 1 << 20);
    assert_eq!(junk_entry["image_sha256"], sha256_file(&junk).as_str());
    let text = stdout(&in_cache(&cache, &["cache", "list"]));
    assert!(text.contains("2 entries"), "{text}");

    // One entry by a prefix: the other stays.
    let o = in_cache(&cache, &["cache", "clear", &b[..12]]);
    assert!(o.status.success(), "{}", stderr(&o));
    let l = list();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["source_sha256"], a.as_str());
    assert!(!cache.join(format!("{b}.img")).exists());
    assert!(!cache.join(format!("{b}.seal")).exists());
    // A key that is not there, or not a key.
    let o = in_cache(&cache, &["cache", "clear", &b]);
    assert_stderr(&o, 2, &["no cache entry"]);
    let o = in_cache(&cache, &["cache", "clear", "../x"]);
    assert_eq!(o.status.code(), Some(2));

    // A run filling the junk entry again holds its fill lock: clear --all
    // keeps that entry (exit 1) and removes the other.
    let go = dir.path().join("go");
    let filling = rpiimg_cmd()
        .env("RPIIMG_CACHE_DIR", &cache)
        .env(
            "RPIIMG_FAULT",
            format!("cache-locked:pause={}", go.display()),
        )
        .args(["inspect", junk_xz.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let reached = dir.path().join("go.reached");
    let t = std::time::Instant::now();
    while !reached.exists() && t.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let o = in_cache(&cache, &["cache", "clear", "--all"]);
    std::fs::write(&go, b"").unwrap();
    let filled = filling.wait_with_output().unwrap();
    assert_stdout(&o, 1, &[&format!("kept {b}")]);
    assert!(
        stdout(&o).contains(&format!("removed {a}")),
        "{}",
        stdout(&o)
    );
    // The filling run was not disturbed: it filled and sealed its entry
    // (and then refused the junk, as before).
    assert_eq!(filled.status.code(), Some(2), "{}", stderr(&filled));
    assert!(!stderr(&filled).contains("cache"), "{}", stderr(&filled));
    let l = list();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["source_sha256"], b.as_str());
    assert_eq!(l[0]["state"], "sealed");
}

#[test]
fn verify_manifest_compares_the_image_sha256_unless_fast() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&["--flavour", "bookworm"]);
    let out = dir.path().join("out");
    cli().build(&["ost04-control"], &base, &out).arg("-q").ok();
    let img = out.join("ost04.img");
    let i = img.to_str().unwrap();
    let recorded = sha256_file(&img);
    let o = rpiimg(&["verify", i, "--manifest", "--json"]);
    assert_stdout(&o, 0, &["image sha256 as the manifest records"]);
    // One byte changed where no filesystem looks (between the partition
    // table and the first partition): every other check still passes.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(b"X", 4096).unwrap();
    drop(f);
    let tampered = sha256_file(&img);
    let o = rpiimg(&["verify", i, "--manifest"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL image sha256 as the manifest records")
            && text.contains(&tampered)
            && text.contains(&recorded),
        "names both digests: {text}"
    );
    assert_eq!(
        text.matches("FAIL").count(),
        1,
        "only the digest differs: {text}"
    );
    // --fast skips the pass over every byte (the size still counts).
    let o = rpiimg(&["verify", i, "--manifest", "--fast"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(!stdout(&o).contains("image sha256"), "{}", stdout(&o));
    let o = rpiimg(&["verify", i, "--fast"]);
    assert_eq!(o.status.code(), Some(2), "--fast needs --manifest");
    assert_eq!(sha256_file(&img), tampered, "verify changed nothing");
}

/// What the fstat check cannot see (damage below the filesystem, a clock
/// set back by root: here, a seal rewritten to the changed file's
/// identity) the copy pass of `build` does: it hashes the base's bytes as
/// it copies them, and no node output is kept from bytes that are not the
/// sealed ones.
#[test]
fn build_proves_the_base_while_copying_it() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let xz = fixture(&["--flavour", "bookworm", "--xz", "single"]);
    let sha = sha256_file(&xz);
    let cache = dir.path().join("cache");
    let out = dir.path().join("out");
    assert!(in_cache(&cache, &["inspect", xz.to_str().unwrap()])
        .status
        .success());
    let entry = cache.join(format!("{sha}.img"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap();
    f.write_all_at(b"X", 4096).unwrap();
    drop(f);
    let seal_path = cache.join(format!("{sha}.seal"));
    let mut seal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&seal_path).unwrap()).unwrap();
    let md = std::fs::metadata(&entry).unwrap();
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    seal["mtime_ns"] = serde_json::json!(ns(md.mtime(), md.mtime_nsec()));
    seal["ctime_ns"] = serde_json::json!(ns(md.ctime(), md.ctime_nsec()));
    std::fs::write(&seal_path, seal.to_string()).unwrap();
    // The fstat check passes: inspect reads the entry.
    assert!(in_cache(&cache, &["inspect", xz.to_str().unwrap()])
        .status
        .success());
    let o = build_into(&cache, &xz, &out);
    assert_stderr(
        &o,
        2,
        &[
            &entry.display().to_string(),
            "as they are copied",
            &format!("cache clear {sha}`"),
        ],
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != OUT_LOCK)
        .collect();
    assert!(left.is_empty(), "nothing of the node is left: {left:?}");
}
