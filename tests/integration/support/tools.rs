//! The external tools the suite runs (as oracles, to make fixtures, to
//! mount): all of them are looked up once, before the first test that
//! needs one, and every missing one is named in a single failure with its
//! Debian package and the one `apt-get install` line for them all, so a
//! new machine needs one run to learn what to install, not one per tool.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Each external program the tests or `scripts/mkfixture` run, and the
/// Debian package that has it (.ci/run installs these).
pub(crate) const TOOLS: &[(&str, &str)] = &[
    ("bash", "bash"),
    ("sh", "dash"),
    ("debugfs", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("mkfs.ext4", "e2fsprogs"),
    ("mkfs.vfat", "dosfstools"),
    ("fsck.fat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mdir", "mtools"),
    ("mtype", "mtools"),
    ("mmd", "mtools"),
    ("mdel", "mtools"),
    ("mshowfat", "mtools"),
    ("sfdisk", "fdisk"),
    ("xz", "xz-utils"),
    ("bmaptool", "bmap-tools"),
    ("pwck", "passwd"),
    ("grpck", "passwd"),
    ("visudo", "sudo"),
    ("netplan", "netplan.io"),
    ("python3", "python3"),
    ("mkfs.xfs", "xfsprogs"),
    ("systemctl", "systemd"),
    ("ssh-keygen", "openssh-client"),
    ("ansible-inventory", "ansible-core"),
    ("shellcheck", "shellcheck"),
    ("losetup", "mount"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("kill", "procps"),
    ("sha256sum", "coreutils"),
    ("mkfifo", "coreutils"),
    ("sync", "coreutils"),
    ("df", "coreutils"),
    ("dd", "coreutils"),
    ("truncate", "coreutils"),
    ("id", "coreutils"),
];

/// Python modules the oracles import, and their Debian packages.
pub(crate) const PYTHON_MODULES: &[(&str, &str)] = &[
    ("yaml", "python3-yaml"),
    ("jsonschema", "python3-jsonschema"),
];

/// Where the tools are looked for: `PATH`, then the sbin folders that a
/// user's `PATH` may lack (debugfs, mkfs.* and losetup live there).
pub(crate) fn search_path(path: Option<&OsStr>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    for d in ["/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    dirs
}

/// `name` as an executable file in one of `dirs`.
pub(crate) fn find_in(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter().map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// What is missing among `tools` in `dirs`, and (when python3 is there)
/// among `modules` as that python3 imports them: (what, package) pairs.
pub(crate) fn missing(
    tools: &[(&'static str, &'static str)],
    modules: &[(&'static str, &'static str)],
    dirs: &[PathBuf],
) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = tools
        .iter()
        .filter(|(t, _)| find_in(t, dirs).is_none())
        .map(|&(t, p)| (t.to_string(), p))
        .collect();
    if let Some(py) = find_in("python3", dirs) {
        for &(m, p) in modules {
            let ok = Command::new(&py)
                .args(["-c", &format!("import {m}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                out.push((format!("python3 module {m}"), p));
            }
        }
    }
    out
}

/// The one message for everything missing (`None`: nothing is).
pub(crate) fn message(missing: &[(String, &'static str)]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.sort_unstable();
    packages.dedup();
    let mut m = format!(
        "the tests need {} program(s) this machine lacks:\n",
        missing.len()
    );
    for (what, package) in missing {
        m.push_str(&format!("  {what:<30} Debian package {package}\n"));
    }
    m.push_str(&format!(
        "install them all with:\n  apt-get install -y {}\n(.ci/run does)",
        packages.join(" ")
    ));
    Some(m)
}

/// The tools as found at the first call; every later call is free.
/// Fails the calling test, with the message naming all that is missing.
pub(crate) fn checked() -> &'static [PathBuf] {
    static FOUND: OnceLock<Result<Vec<PathBuf>, String>> = OnceLock::new();
    static TOLD: AtomicBool = AtomicBool::new(false);
    let found = FOUND.get_or_init(|| {
        let dirs = search_path(std::env::var_os("PATH").as_deref());
        match message(&missing(TOOLS, PYTHON_MODULES, &dirs)) {
            Some(m) => Err(m),
            None => Ok(dirs),
        }
    });
    match found {
        Ok(dirs) => dirs,
        // The whole list once; the other tests that need a tool point to it.
        Err(m) if !TOLD.swap(true, Ordering::SeqCst) => panic!("{m}"),
        Err(m) => panic!(
            "external tools missing (listed in full in the first failure); {}",
            m.lines().rev().nth(1).unwrap_or_default().trim()
        ),
    }
}

/// The `PATH` the tests run tools with: the caller's plus the sbin folders.
pub(crate) fn path_env() -> OsString {
    std::env::join_paths(checked()).expect("PATH entries")
}

/// A command for an external tool, by its full path (so the sbin
/// folders count even when `PATH` lacks them).
pub(crate) fn tool(name: &str) -> Command {
    assert!(
        TOOLS.iter().any(|(t, _)| *t == name),
        "{name}: add it to support::tools::TOOLS with its Debian package"
    );
    let dirs = checked();
    Command::new(find_in(name, dirs).expect("checked above"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A fake PATH with some tools and a python3 that lacks one module:
    /// one message names every missing tool and module, each with its
    /// package, and one apt-get line installs each package once.
    #[test]
    fn one_message_lists_every_missing_tool_and_its_package() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "debugfs", "exit 0");
        script(d.path(), "mcopy", "exit 0");
        // A python3 that has yaml but not jsonschema.
        script(
            d.path(),
            "python3",
            "case \"$2\" in 'import yaml') exit 0 ;; *) exit 1 ;; esac",
        );
        // Not executable: does not count.
        std::fs::write(d.path().join("sfdisk"), "").unwrap();
        let tools = &[
            ("debugfs", "e2fsprogs"),
            ("e2fsck", "e2fsprogs"),
            ("mkfs.ext4", "e2fsprogs"),
            ("mcopy", "mtools"),
            ("sfdisk", "fdisk"),
            ("ansible-inventory", "ansible-core"),
            ("python3", "python3"),
        ];
        let dirs = vec![d.path().to_path_buf()];
        let m = missing(tools, PYTHON_MODULES, &dirs);
        let names: Vec<&str> = m.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(
            names,
            [
                "e2fsck",
                "mkfs.ext4",
                "sfdisk",
                "ansible-inventory",
                "python3 module jsonschema"
            ]
        );
        let text = message(&m).unwrap();
        assert!(text.starts_with("the tests need 5 program(s)"), "{text}");
        for (what, package) in [
            ("e2fsck", "e2fsprogs"),
            ("mkfs.ext4", "e2fsprogs"),
            ("sfdisk", "fdisk"),
            ("ansible-inventory", "ansible-core"),
            ("python3 module jsonschema", "python3-jsonschema"),
        ] {
            assert!(
                text.lines()
                    .any(|l| l.contains(what) && l.ends_with(&format!("Debian package {package}"))),
                "{what}: {text}"
            );
        }
        assert!(
            text.contains(
                "\n  apt-get install -y ansible-core e2fsprogs fdisk python3-jsonschema\n"
            ),
            "{text}"
        );
        // Without python3 its modules are not asked about (python3 itself is named).
        std::fs::remove_file(d.path().join("python3")).unwrap();
        let m = missing(tools, PYTHON_MODULES, &dirs);
        assert_eq!(m.last().unwrap(), &("python3".to_string(), "python3"));
        // All there: no message.
        assert_eq!(message(&[]), None);
        let all = missing(&[("debugfs", "e2fsprogs")], &[], &dirs);
        assert!(all.is_empty());
    }

    /// The sbin folders are searched even when PATH lacks them, once.
    #[test]
    fn sbin_folders_are_searched_after_path() {
        let dirs = search_path(Some(OsStr::new("/a:/usr/sbin")));
        assert_eq!(
            dirs,
            [
                PathBuf::from("/a"),
                PathBuf::from("/usr/sbin"),
                PathBuf::from("/sbin")
            ]
        );
        assert_eq!(search_path(None).len(), 2);
    }

    /// .ci/run installs every package of the table (but the essential
    /// ones every Debian system has).
    #[test]
    fn ci_installs_every_package_of_the_table() {
        let ci = std::fs::read_to_string(crate::support::repo().join(".ci/run")).unwrap();
        let install: Vec<&str> = ci
            .split("apt-get install")
            .nth(1)
            .expect("an apt-get install line in .ci/run")
            .split("\nfi")
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        for (_, p) in TOOLS.iter().chain(PYTHON_MODULES) {
            if ["bash", "dash", "coreutils"].contains(p) {
                continue;
            }
            assert!(install.contains(p), ".ci/run does not install {p}");
        }
    }

    /// The real table covers every tool a test asks for by name.
    #[test]
    fn every_tool_named_in_the_tests_is_in_the_table() {
        let here = crate::support::repo().join("tests/integration");
        let mut files = vec![];
        for e in std::fs::read_dir(&here).unwrap() {
            files.push(e.unwrap().path());
        }
        for e in std::fs::read_dir(here.join("support")).unwrap() {
            files.push(e.unwrap().path());
        }
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "rs"))
        {
            let text = std::fs::read_to_string(f).unwrap();
            for part in text.split("tool(\"").skip(1) {
                let name = part.split('"').next().unwrap();
                assert!(
                    TOOLS.iter().any(|(t, _)| *t == name),
                    "{}: tool({name:?}) is not in support::tools::TOOLS",
                    f.display()
                );
            }
        }
    }
}
