//! Runs at once on one image, one output folder, one cache (issue 26,
//! class 3): each interleaving is forced with the `:pause=` fault hook
//! (the first run stops at a named point while holding its locks; the
//! test starts the others once it is there and lets it go once they say
//! they wait), never with sleeps. Afterwards nothing is lost or broken:
//! every edit is in the image and `e2fsck -fn` is clean, a verify beside
//! an edit sees the image whole, an output set is one build's.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A run stopped at `point` with its locks held; `release` lets it go on.
struct Paused {
    child: Child,
    go: PathBuf,
}

fn wait_for_file(p: &Path, what: &str) {
    let t = Instant::now();
    while !p.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what} never happened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Start `cmd` with the pause hook at `point` and return once it is there.
fn paused(mut cmd: Command, point: &str, dir: &Path) -> Paused {
    let go = dir.join(format!("go-{point}"));
    let child = cmd
        .env("RPIIMG_FAULT", format!("{point}:pause={}", go.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reached = go.clone().into_os_string();
    reached.push(".reached");
    wait_for_file(Path::new(&reached), &format!("reaching {point}"));
    Paused { child, go }
}

impl Paused {
    fn release(self) -> std::process::Output {
        std::fs::write(&self.go, b"").unwrap();
        self.child.wait_with_output().unwrap()
    }
}

/// A run started beside a paused one: returns once it has said on stderr
/// that it waits for `lock` (it is then blocked on that lock), with what
/// it printed up to then.
struct Waiting {
    child: Child,
    err: BufReader<std::process::ChildStderr>,
    said: String,
}

fn waiting(mut cmd: Command, lock: &Path) -> Waiting {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let waits = loop {
        let mut line = String::new();
        // Blocks until the run prints a line or exits (EOF: it never waited).
        match err.read_line(&mut line) {
            Ok(n) if n > 0 => said.push_str(&line),
            _ => break None,
        }
        if line.contains("waiting for") {
            break Some(line);
        }
    };
    let Some(line) = waits else {
        let st = child.wait().unwrap();
        panic!("the second run never waited for the lock ({st}):\n{said}");
    };
    if !line.contains(&lock.display().to_string()) {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the message names the locked file {}: {line}",
            lock.display()
        );
    }
    Waiting { child, err, said }
}

impl Waiting {
    fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.err, &mut rest).unwrap();
        let o = self.child.wait_with_output().unwrap();
        (o.status, stdout(&o), self.said + &rest)
    }
}

fn fs_cmd(img: &Path, args: &[&str]) -> Command {
    let mut c = rpiimg_cmd();
    c.arg("fs").arg(img).args(args);
    c
}

fn root_clean(img: &Path) {
    let (off, _) = partition(img, 2);
    let p = e2fsck_problems(img, off);
    assert!(p.is_empty(), "e2fsck -fn:\n{}", p.join("\n"));
}

#[test]
fn three_edits_at_once_all_land_and_the_filesystem_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(&["--flavour", "bookworm"], dir.path());
    let local = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (a, b) = (local("a", "first\n"), local("b", "second\n"));
    // The first edit has staged its change and stops before writing it.
    let first = paused(
        fs_cmd(&img, &["put", &a, "/etc/first"]),
        "fs-commit",
        dir.path(),
    );
    let second = waiting(fs_cmd(&img, &["put", &b, "/etc/second"]), &img);
    let third = waiting(fs_cmd(&img, &["mkdir", "/etc/third.d"]), &img);
    let o = first.release();
    assert!(o.status.success(), "{}", stderr(&o));
    for w in [second, third] {
        let (st, _, err) = w.finish();
        assert!(st.success(), "{err}");
    }
    let (off, _) = partition(&img, 2);
    assert_eq!(debugfs(&img, off, "cat /etc/first"), "first\n");
    assert_eq!(debugfs(&img, off, "cat /etc/second"), "second\n");
    assert!(
        debugfs(&img, off, "stat /etc/third.d").contains("Type: directory"),
        "the third edit is there"
    );
    root_clean(&img);
}

#[test]
fn verify_and_stat_beside_an_edit_wait_for_it_and_see_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let img = copy_fixture(&["--flavour", "bookworm"], dir.path());
    let big = dir.path().join("big");
    std::fs::write(&big, vec![7u8; 3 << 20]).unwrap();
    // Stopped halfway through writing its metadata into the image.
    let edit = paused(
        fs_cmd(&img, &["put", big.to_str().unwrap(), "/opt/big"]),
        "commit-midway",
        dir.path(),
    );
    let mut v = rpiimg_cmd();
    v.arg("verify").arg(&img);
    let verify = waiting(v, &img);
    let stat = waiting(fs_cmd(&img, &["stat", "/opt/big"]), &img);
    let o = edit.release();
    assert!(o.status.success(), "{}", stderr(&o));
    let (st, out, err) = verify.finish();
    assert_eq!(
        st.code(),
        Some(0),
        "verify saw a consistent image:\n{out}\n{err}"
    );
    let (st, out, err) = stat.finish();
    assert!(st.success(), "{err}");
    assert!(
        out.contains("size   3145728"),
        "stat saw the finished edit: {out}"
    );
    root_clean(&img);
}

#[test]
fn two_builds_into_one_folder_leave_one_consistent_set() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&["--flavour", "bookworm"]);
    let out = dir.path().join("out");
    let build = |epoch: &str| {
        let mut c = rpiimg_cmd();
        c.args(["build", "--profile", &profile_path("ost04-control")])
            .args(["--base", base.to_str().unwrap(), "-q", "--force", "--out"])
            .arg(&out)
            .env("SOURCE_DATE_EPOCH", epoch);
        c
    };
    // Two builds of one node that differ (their time stamps): the first
    // stops after renaming its image, before its checksum and manifest.
    let first = paused(build("1700000000"), "rename-2", dir.path());
    let lock = out.join(".rpiimg.lock");
    let second = waiting(build("1700000999"), &lock);
    let o = first.release();
    assert!(o.status.success(), "{}", stderr(&o));
    let (st, _, err) = second.finish();
    assert!(st.success(), "{err}");
    // One set, the second build's: manifest, .sha256 and image agree.
    let img = out.join("ost04.img");
    let sum = sha256_file(&img);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ost04.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["image"]["sha256"], sum.as_str());
    assert_eq!(m["build_time"], 1700000999);
    let line = std::fs::read_to_string(out.join("ost04.img.sha256")).unwrap();
    assert!(line.starts_with(&sum), "{line} vs {sum}");
    let v = rpiimg(&["verify", img.to_str().unwrap(), "--manifest"]);
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
}

#[test]
fn two_runs_on_one_xz_fill_its_cache_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    let xz = fixture(&["--flavour", "bookworm", "--xz", "single"]);
    let cache = dir.path().join("cache");
    let inspect = || {
        let mut c = rpiimg_cmd();
        c.env("RPIIMG_CACHE_DIR", &cache).arg("inspect").arg(&xz);
        c
    };
    // The first run holds the entry's fill lock before decompressing.
    let first = paused(inspect(), "cache-locked", dir.path());
    let sha = sha256_file(&xz);
    let second = waiting(inspect(), &cache.join(format!("{sha}.lock")));
    let o = first.release();
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::MetadataExt;
    let entry = cache.join(format!("{sha}.img"));
    let filled = std::fs::metadata(&entry).unwrap().ino();
    let (st, out, err) = second.finish();
    assert!(st.success(), "{err}");
    assert!(out.contains("bookworm"), "{out}");
    // The second run used the first one's entry instead of filling it again.
    assert_eq!(std::fs::metadata(&entry).unwrap().ino(), filled);
    let names: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(".partial-")),
        "{names:?}"
    );
}
