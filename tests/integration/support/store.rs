//! Where the suite keeps files beyond one test, all under cargo's
//! `CARGO_TARGET_TMPDIR` (`target/tmp`), none in `/tmp`:
//!
//! - `fixtures-<key>/`: the images `scripts/mkfixture` makes, kept across
//!   runs. The key is a hash of everything that makes them (the script,
//!   `tests/fixtures/skel`, `mke2fs.conf`, the versions of the tools it
//!   runs), so a change to any of them makes new ones. Each is made under
//!   a lock, in a temporary folder beside it and renamed into place, so
//!   another test or test process never sees half of one; a seal file
//!   records the file's identity, and a fixture written to after it was
//!   made (a test that damaged the shared copy instead of its own) is
//!   made again, or fails the run that wrote it.
//! - `run-<pid>-<n>/`: one test process's scratch (the default cache, the
//!   node images several flash tests share). A watcher process removes it
//!   when the test process ends, however it ends; should the watcher be
//!   killed too, the next run removes it (only folders whose lock no live
//!   process holds).
//!
//! Everything else a test writes is in a `tempfile::TempDir` of its own,
//! removed when the test ends.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use rpiimg::lock::{Access, LockFile};
use sha2::{Digest, Sha256};

use super::{repo, tools};

/// `target/tmp`, which cargo makes for integration tests.
pub(super) fn target_tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Remove the folders `<prefix>*` in `dir` (each with its `<name>.lock`
/// beside it) that no process holds, except `keep`; and folders left
/// without their lock file.
pub(super) fn sweep(dir: &Path, prefix: &str, keep: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) || Some(p.as_path()) == keep {
            continue;
        }
        if let Some(stem) = name.strip_suffix(".lock") {
            let folder = dir.join(stem);
            if Some(folder.as_path()) == keep {
                continue;
            }
            // Held: a live process uses it.
            if let Ok(Some(l)) = LockFile::try_acquire(&p, Access::Exclusive) {
                let _ = std::fs::remove_dir_all(&folder);
                let _ = l.remove();
            }
        } else if e.file_type().is_ok_and(|t| t.is_dir())
            && !dir.join(format!("{name}.lock")).exists()
        {
            // Its owner takes the lock before making the folder, so a
            // folder without one is left over from an interrupted sweep.
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// This test process's scratch folder (see the module's text).
pub(crate) fn run_dir() -> &'static Path {
    static RUN: OnceLock<(PathBuf, LockFile)> = OnceLock::new();
    &RUN.get_or_init(|| {
        let runs = target_tmp();
        std::fs::create_dir_all(&runs).expect("target/tmp");
        sweep(&runs, "run-", None);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = runs.join(format!("run-{}-{nanos}", std::process::id()));
        let lock_path = dir.with_extension("lock");
        // The lock first, then the folder: a sweep never takes a folder
        // whose lock its owner may still be about to take.
        let lock = LockFile::acquire(&lock_path, Access::Exclusive, "this test run's scratch")
            .expect("lock the run folder");
        std::fs::create_dir(&dir).expect("make the run folder");
        // The watcher outlives this process by at most a second; it
        // ignores the signals a Ctrl-C or `kill` of the group sends. Never
        // waited for: it ends after this process, and init reaps it.
        #[allow(clippy::zombie_processes)]
        let _ = tools::tool("sh")
            .arg("-c")
            .arg(
                "trap '' INT TERM HUP; while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; \
                 rm -rf \"$2\" \"$3\"",
            )
            .arg("sh")
            .arg(std::process::id().to_string())
            .arg(&dir)
            .arg(&lock_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the run folder's watcher");
        (dir, lock)
    })
    .0
}

/// The cache the tests' rpiimg runs share unless a test names its own.
pub(crate) fn cache_dir() -> PathBuf {
    run_dir().join("cache")
}

/// Hash of a file tree: each entry's relative path, kind, mode and
/// content (a link's target), in name order.
fn hash_tree(h: &mut Sha256, root: &Path, dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        h.update(format!("\0{rel}\0{:o}\0", md.permissions().mode()).as_bytes());
        if md.is_symlink() {
            h.update(
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        } else if md.is_dir() {
            hash_tree(h, root, &p);
        } else {
            let data = std::fs::read(&p).unwrap();
            h.update(data.len().to_le_bytes());
            h.update(&data);
        }
    }
}

/// The key of the fixtures the current inputs make.
pub(super) fn fixtures_key() -> String {
    let mut h = Sha256::new();
    // Bump when the store's layout changes.
    h.update(b"rpiimg fixtures v1\0");
    for f in ["scripts/mkfixture", "tests/fixtures/mke2fs.conf"] {
        h.update(f.as_bytes());
        h.update(std::fs::read(repo().join(f)).unwrap());
    }
    let skel = repo().join("tests/fixtures/skel");
    hash_tree(&mut h, &skel, &skel);
    // The tools' own versions: another mkfs writes other bytes.
    for (t, arg) in [
        ("mkfs.ext4", "-V"),
        ("mkfs.vfat", "--help"),
        ("mcopy", "--version"),
        ("sfdisk", "--version"),
        ("xz", "--version"),
    ] {
        let o = tools::tool(t).arg(arg).output().expect(t);
        let text = [o.stdout, o.stderr].concat();
        let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
        h.update(t.as_bytes());
        h.update(first);
    }
    let sum = h.finalize();
    sum.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The fixtures folder of the current key, held (shared) for the whole
/// process so that a run of other inputs does not sweep it meanwhile.
fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<(PathBuf, LockFile)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let root = target_tmp();
        std::fs::create_dir_all(&root).expect("target/tmp");
        let dir = root.join(format!("fixtures-{}", fixtures_key()));
        let lock = LockFile::acquire(
            &dir.with_extension("lock"),
            Access::Shared,
            "the fixtures, used by another test run",
        )
        .expect("lock the fixtures folder");
        std::fs::create_dir_all(&dir).expect("make the fixtures folder");
        // Fixtures of other inputs (an older skeleton, another mkfixture).
        sweep(&root, "fixtures-", Some(&dir));
        (dir, lock)
    })
    .0
}

/// What a seal records: the file as it was when made.
fn identity(p: &Path) -> Option<String> {
    let m = std::fs::metadata(p).ok()?;
    Some(format!(
        "{} {} {} {}.{} {}.{}\n",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

fn seal_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".seal");
    PathBuf::from(s)
}

fn sealed(p: &Path) -> bool {
    identity(p).is_some_and(|id| std::fs::read_to_string(seal_path(p)).is_ok_and(|s| s == id))
}

/// Make (once, for every run until its inputs change) the fixture with
/// these `scripts/mkfixture` options; its path.
pub(crate) fn fixture(opts: &[&str]) -> PathBuf {
    static SEEN: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    tools::checked();
    super::private_test_keys();
    let dir = fixture_dir();
    let name = if opts.is_empty() {
        "default".to_string()
    } else {
        opts.join("_").replace("--", "")
    };
    let file = if opts.contains(&"--xz") {
        format!("{name}.img.xz")
    } else {
        format!("{name}.img")
    };
    let built = dir.join(&file);
    let _lock = LockFile::acquire(
        &dir.join(format!("{name}.lock")),
        Access::Exclusive,
        "a fixture being made",
    )
    .expect("lock the fixture");
    let first_use = SEEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(built.clone());
    if sealed(&built) {
        return built;
    }
    assert!(
        first_use || !built.exists(),
        "fixture {} changed during this run: a test wrote to the shared copy \
         (use support::copy_fixture for one to damage)",
        built.display()
    );
    // Made beside its final name and renamed: complete or absent.
    let work = tempfile::Builder::new()
        .prefix(".making-")
        .tempdir_in(dir)
        .expect("temp dir for a fixture");
    let st = Command::new(repo().join("scripts/mkfixture"))
        .args(opts)
        .arg("-o")
        .arg(work.path().join(format!("{name}.img")))
        .env("PATH", tools::path_env())
        .output()
        .expect("run scripts/mkfixture");
    assert!(
        st.status.success(),
        "mkfixture {opts:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&st.stdout),
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::rename(work.path().join(&file), &built).expect("rename the fixture into place");
    std::fs::write(seal_path(&built), identity(&built).unwrap()).expect("seal the fixture");
    built
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run folder whose lock no process holds is swept with its lock
    /// file; a held one, the kept one and other names stay; a folder
    /// whose lock file is gone is swept.
    #[test]
    fn sweep_removes_only_folders_no_process_holds() {
        let d = tempfile::tempdir().unwrap();
        let mk = |n: &str| std::fs::create_dir(d.path().join(n)).unwrap();
        for n in ["run-1", "run-2", "run-3", "run-4", "other"] {
            mk(n);
        }
        for n in ["run-1", "run-2", "run-4"] {
            std::fs::write(d.path().join(format!("{n}.lock")), "").unwrap();
        }
        let held = LockFile::acquire(&d.path().join("run-2.lock"), Access::Shared, "test").unwrap();
        let keep = d.path().join("run-4");
        sweep(d.path(), "run-", Some(&keep));
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["other", "run-2", "run-2.lock", "run-4", "run-4.lock"]
        );
        drop(held);
    }

    /// The scratch folder is under target/tmp, never in the system's temp
    /// folder, and the fixtures' key names what makes them.
    #[test]
    fn shared_files_live_under_target_tmp() {
        let tmp = target_tmp();
        assert!(run_dir().starts_with(&tmp) && run_dir().is_dir());
        // (A checkout that itself lies in the temp folder has its target there.)
        if !tmp.starts_with(std::env::temp_dir()) {
            assert!(!run_dir().starts_with(std::env::temp_dir()));
        }
        assert!(fixture_dir().starts_with(&tmp));
        assert_eq!(fixtures_key().len(), 16);
        assert_eq!(fixtures_key(), fixtures_key());
    }

    /// The suite's sources make no temp files that outlive a test: every
    /// temp dir is a dropped `TempDir` (no `.keep()`/`into_path()`), and
    /// nothing is put in the system temp folder by a fixed name.
    #[test]
    fn no_test_keeps_a_temp_dir() {
        let here = repo().join("tests/integration");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&here)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.extend(
            std::fs::read_dir(here.join("support"))
                .unwrap()
                .map(|e| e.unwrap().path()),
        );
        let banned = [
            [".", "keep()"].concat(),
            [".", "into_path()"].concat(),
            ["env::", "temp_dir().join"].concat(),
        ];
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "rs"))
        {
            let text = std::fs::read_to_string(f).unwrap();
            // Code, not the comments that name what is banned.
            for l in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for b in &banned {
                    assert!(!l.contains(b.as_str()), "{}: {b} in {l:?}", f.display());
                }
            }
        }
    }
}
