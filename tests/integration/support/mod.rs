//! Test support: fixture images built by `scripts/mkfixture` (kept in
//! `store`), the rpiimg binary, and the independent tools used as oracles
//! (debugfs, mtools, e2fsck; all looked up at once by `tools`).

mod cli;
mod mounts;
mod store;
pub(crate) mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub(crate) use cli::{assert_stderr, assert_stdout, cli, Run};
pub(crate) use mounts::{loop_device, mount, tmpfs};
pub(crate) use store::{cache_dir, fixture, run_dir};
pub(crate) use tools::tool;

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test key store as rpiimg requires a store: its secrets 0600 (git
/// keeps no permission bits but the executable one, so a checkout has
/// them 0644, which rpiimg refuses).
pub(crate) fn private_test_keys() {
    use std::os::unix::fs::PermissionsExt;
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let keys = repo().join("tests/fixtures/keys");
        for e in std::fs::read_dir(&keys).expect("tests/fixtures/keys") {
            let secret = e.expect("key store entry").path().join("secret");
            if secret.exists() {
                std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod 600 the test key store");
            }
        }
    });
}

/// A private copy of a fixture, for tests that damage it.
pub(crate) fn copy_fixture(opts: &[&str], dir: &Path) -> PathBuf {
    let src = fixture(opts);
    let dst = dir.join(src.file_name().unwrap());
    std::fs::copy(&src, &dst).expect("copy fixture");
    dst
}

/// The rpiimg binary with the tests' cache and key store, ready for args.
pub(crate) fn rpiimg_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rpiimg"));
    test_env(&mut c);
    c
}

/// The tests' cache and key store, for a command that runs rpiimg.
pub(crate) fn test_env(c: &mut Command) {
    tools::checked();
    private_test_keys();
    c.env("RPIIMG_CACHE_DIR", cache_dir())
        // The test key store (public, fixed), so plans and golden files are stable.
        .env("RPIIMG_KEYS_DIR", repo().join("tests/fixtures/keys"));
}

pub(crate) fn rpiimg(args: &[&str]) -> Output {
    rpiimg_cmd().args(args).output().expect("run rpiimg")
}

/// `rpiimg args`, killed (and the test failed) if it runs longer than
/// `limit`: damaged input must give an answer in bounded time, and a hang
/// should fail the test rather than stall the suite.
pub(crate) fn rpiimg_within(args: &[&str], limit: std::time::Duration) -> Output {
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = rpiimg_cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("run rpiimg");
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rpiimg {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(out).unwrap(),
        stderr: std::fs::read(err).unwrap(),
    }
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run rpiimg and require success.
pub(crate) fn rpiimg_ok(args: &[&str]) -> Vec<u8> {
    let o = rpiimg(args);
    assert!(o.status.success(), "rpiimg {args:?} failed: {}", stderr(&o));
    o.stdout
}

/// (start, size) in bytes of partition `n`, read with sfdisk (an independent reader).
pub(crate) fn partition(img: &Path, n: usize) -> (u64, u64) {
    let o = tool("sfdisk").arg("-J").arg(img).output().expect("sfdisk");
    assert!(o.status.success(), "sfdisk -J failed");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("sfdisk json");
    let p = &v["partitiontable"]["partitions"][n - 1];
    let start = p["start"].as_u64().expect("start") * 512;
    let size = p["size"].as_u64().expect("size") * 512;
    (start, size)
}

/// `IMG?offset=N`, the e2fsprogs syntax for a filesystem inside a disk image.
pub(crate) fn at_offset(img: &Path, off: u64) -> String {
    format!("{}?offset={off}", img.display())
}

pub(crate) fn debugfs(img: &Path, off: u64, cmd: &str) -> String {
    let o = tool("debugfs")
        .arg("-R")
        .arg(cmd)
        .arg(at_offset(img, off))
        .output()
        .expect("debugfs");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Lines of `e2fsck -fn` output that are not the pass headers or summary:
/// e2fsck exits 0 on some real errors, so its output is the verdict.
pub(crate) fn e2fsck_problems(img: &Path, off: u64) -> Vec<String> {
    let o = tool("e2fsck")
        .arg("-fn")
        .arg(at_offset(img, off))
        .output()
        .expect("e2fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    text.lines()
        .filter(|l| {
            !(l.starts_with("e2fsck ")
                || l.starts_with("Pass 1: ")
                || l.starts_with("Pass 2: ")
                || l.starts_with("Pass 3: ")
                || l.starts_with("Pass 4: ")
                || l.starts_with("Pass 5: ")
                || is_summary(l)
                || l.trim().is_empty())
        })
        .map(str::to_string)
        .collect()
}

fn is_summary(l: &str) -> bool {
    // "<label>: N/M files (x% non-contiguous), A/B blocks"
    l.split_once(": ")
        .is_some_and(|(_, rest)| rest.contains(" files (") && rest.contains(" blocks"))
}

/// Whether the test runs as root (needed to keep ownership in dumps, and for loop mounts).
pub(crate) fn is_root() -> bool {
    tool("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Options for a bare ext4 filesystem image made by mkfs.ext4 (engine tests).
pub(crate) struct MkfsOpts<'a> {
    pub size_mib: u64,
    /// Extra `-O` feature edits, e.g. "orphan_file,metadata_csum_seed".
    pub features: &'a str,
    pub unsigned_hash: bool,
    /// A directory to populate the filesystem from (`mkfs.ext4 -d`).
    pub populate: Option<&'a Path>,
}

impl Default for MkfsOpts<'_> {
    fn default() -> Self {
        MkfsOpts {
            size_mib: 64,
            features: "^orphan_file,^metadata_csum_seed",
            unsigned_hash: false,
            populate: None,
        }
    }
}

/// A bare ext4 image with the Pi OS feature set (see tests/fixtures/mke2fs.conf).
pub(crate) fn mkfs(path: &Path, o: &MkfsOpts) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(o.size_mib << 20).unwrap();
    drop(f);
    let mut c = tool("mkfs.ext4");
    c.env("MKE2FS_CONFIG", repo().join("tests/fixtures/mke2fs.conf"))
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-i", "16384",
        ])
        .args(["-L", "rootfs", "-U", "11111111-2222-3333-4444-555555555555"])
        .args(["-E", "root_owner=0:0", "-O", "^64bit,^huge_file"]);
    if !o.features.is_empty() {
        c.args(["-O", o.features]);
    }
    if let Some(d) = o.populate {
        c.arg("-d").arg(d);
    }
    let out = c.arg(path).output().expect("mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmds = String::from("ssv hash_seed 66666666-7777-8888-9999-aaaaaaaaaaaa\n");
    cmds.push_str(if o.unsigned_hash {
        "ssv flags 2\n"
    } else {
        "ssv flags 1\n"
    });
    let out = tool("debugfs")
        .arg("-w")
        .arg("-f")
        .arg("-")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(cmds.as_bytes())?;
            ch.wait()
        })
        .expect("debugfs");
    assert!(out.success());
}

pub(crate) fn sha256_file(p: &Path) -> String {
    let o = tool("sha256sum").arg(p).output().expect("sha256sum");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// An example profile of the repository, by name.
/// An example profile of `profiles/` (one folder per cluster), by name.
pub(crate) fn profile_path(name: &str) -> String {
    rpiimg::profile::find(name, &repo().join("profiles"))
        .unwrap_or_else(|e| panic!("{e}"))
        .display()
        .to_string()
}

/// The lock file rpiimg keeps in each output folder it writes (empty:
/// not an output).
pub(crate) const OUT_LOCK: &str = ".rpiimg.lock";

/// Every file below `dir` (subfolders included), sorted; output folders'
/// lock files left out.
pub(crate) fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == OUT_LOCK) {
                assert_eq!(
                    std::fs::metadata(&p).unwrap().len(),
                    0,
                    "lock files stay empty"
                );
            } else {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// A release's stock inventory (`share/kolla-ansible/ansible/inventory/
/// multinode`) as kolla-ansible ships it, made from the release's facts
/// file: `head` first, `after_hosts` after each `[group]` header of hosts
/// (Ansible allows a comment there).
pub(crate) fn stock_inventory(series: &str, head: &str, after_hosts: &str) -> String {
    let path = repo().join(format!("src/kolla/releases/{series}.json"));
    let facts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("facts file")).unwrap();
    let mut s = String::from(head);
    for sec in facts["inventory"].as_array().unwrap() {
        let (name, kind) = (sec["name"].as_str().unwrap(), sec["kind"].as_str().unwrap());
        if kind == "hosts" {
            s.push_str(&format!("[{name}]{after_hosts}\n"));
        } else {
            s.push_str(&format!("[{name}:{kind}]\n"));
        }
        for l in sec["lines"].as_array().unwrap() {
            s.push_str(&format!("{}\n", l.as_str().unwrap()));
        }
        s.push('\n');
    }
    s
}
