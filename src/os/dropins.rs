//! Drop-in directories whose files rpiimg writes, and which file wins a
//! setting there. Each owner reads its directory in file-name order, but
//! they disagree on who wins: sysctl, systemd's `*.conf.d`, cloud-init,
//! rpi-swap and sudo let the *last* file win; sshd keeps the *first*
//! value. rpiimg names its files to win (see the table), and `plan` and
//! `verify` use [`overrides`] to name any file that still takes a setting
//! away from the profile. Pure: texts come from the caller.

use std::collections::BTreeMap;

/// Which file of a directory decides a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wins {
    /// The last file in name order that sets it.
    Last,
    /// The first file in name order that sets it.
    First,
}

/// How settings are written in the files of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// `key = value` (sysctl.d): the key with `/` read as `.`.
    Sysctl,
    /// INI with `[Section]` and `Key=Value` (systemd, rpi-swap).
    Ini,
    /// YAML top-level keys (cloud-init merges later files over earlier
    /// ones key by key at the top level).
    YamlTop,
    /// sshd: `Keyword value`, case-insensitive, up to the first `Match`.
    Sshd,
    /// sudoers: a rule line's principal (`user`, `%group`); `Defaults`
    /// lines by their whole text.
    Sudoers,
}

/// A directory rpiimg writes a drop-in into.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dir {
    /// Directories read together; a same-named file in an earlier one
    /// hides the later one (systemd's /etc over /usr/lib).
    pub dirs: &'static [&'static str],
    /// Only names with this suffix are read ("" for any, sudo: no dot).
    pub suffix: &'static str,
    pub syntax: Syntax,
    pub wins: Wins,
    /// Who reads it, for messages.
    pub reader: &'static str,
}

/// Every drop-in directory rpiimg writes into, with its reader's rules
/// (each from the reader's manual: sysctl.d(5), systemd.unit(5) and
/// timesyncd.conf(5), cloud-init's "Base configuration" docs, rpi-swap's
/// README, sudoers(5) "Including other files", sshd_config(5)).
pub(crate) const DIRS: &[Dir] = &[
    Dir {
        dirs: &[
            "/etc/sysctl.d",
            "/run/sysctl.d",
            "/usr/local/lib/sysctl.d",
            "/usr/lib/sysctl.d",
            "/lib/sysctl.d",
        ],
        suffix: ".conf",
        syntax: Syntax::Sysctl,
        wins: Wins::Last,
        reader: "systemd-sysctl",
    },
    Dir {
        dirs: &["/etc/cloud/cloud.cfg.d"],
        suffix: ".cfg",
        syntax: Syntax::YamlTop,
        wins: Wins::Last,
        reader: "cloud-init",
    },
    Dir {
        dirs: &["/etc/ssh/sshd_config.d"],
        suffix: ".conf",
        syntax: Syntax::Sshd,
        wins: Wins::First,
        reader: "sshd",
    },
    Dir {
        dirs: &["/etc/sudoers.d"],
        suffix: "",
        syntax: Syntax::Sudoers,
        wins: Wins::Last,
        reader: "sudo",
    },
    Dir {
        dirs: &["/etc/rpi/swap.conf.d", "/usr/lib/rpi/swap.conf.d"],
        suffix: ".conf",
        syntax: Syntax::Ini,
        wins: Wins::Last,
        reader: "rpi-swap",
    },
    Dir {
        dirs: &[
            "/etc/systemd/timesyncd.conf.d",
            "/run/systemd/timesyncd.conf.d",
            "/usr/local/lib/systemd/timesyncd.conf.d",
            "/usr/lib/systemd/timesyncd.conf.d",
            "/lib/systemd/timesyncd.conf.d",
        ],
        suffix: ".conf",
        syntax: Syntax::Ini,
        wins: Wins::Last,
        reader: "systemd-timesyncd",
    },
];

/// Every directory [`DIRS`] names (what the facts read).
pub(crate) fn all_dirs() -> impl Iterator<Item = &'static str> {
    DIRS.iter().flat_map(|d| d.dirs.iter().copied())
}

/// The drop-in directory a path is in, with its file name.
pub(crate) fn dir_of(path: &str) -> Option<(&'static Dir, &str)> {
    let (parent, name) = path.rsplit_once('/')?;
    DIRS.iter()
        .find(|d| d.dirs.contains(&parent))
        .map(|d| (d, name))
}

impl Dir {
    /// Whether the reader reads a file of this name at all.
    pub(crate) fn reads(&self, name: &str) -> bool {
        if self.syntax == Syntax::Sudoers {
            // sudoers(5): names ending in '~' or holding a '.' are skipped.
            !name.ends_with('~') && !name.contains('.')
        } else {
            name.ends_with(self.suffix)
        }
    }
}

/// One setting of one file: key and value as written.
pub(crate) fn settings(syntax: Syntax, text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    for raw in text.lines() {
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        match syntax {
            Syntax::Sysctl => {
                if let Some((k, v)) = l.split_once('=') {
                    let k = k.trim().trim_start_matches('-').replace('/', ".");
                    out.push((k, v.trim().to_string()));
                }
            }
            Syntax::Ini => {
                if l.starts_with('[') && l.ends_with(']') {
                    section = l.to_string();
                } else if let Some((k, v)) = l.split_once('=') {
                    out.push((format!("{section} {}", k.trim()), v.trim().to_string()));
                }
            }
            Syntax::YamlTop => {
                // A top-level key starts in column 0; `---` and flow
                // documents have none.
                if raw.starts_with(|c: char| c.is_whitespace() || c == '-') {
                    continue;
                }
                if let Some((k, v)) = raw.split_once(':') {
                    out.push((k.trim().trim_matches('"').to_string(), v.trim().to_string()));
                }
            }
            Syntax::Sshd => {
                // Read as sshd reads it (crate::os::sshd).
                let Some((k, v)) = super::sshd::split(l) else {
                    continue;
                };
                if k == "match" {
                    break;
                }
                // HostKey and the like add up rather than override.
                if ["hostkey", "include", "acceptenv", "subsystem"].contains(&k.as_str()) {
                    continue;
                }
                out.push((k, v));
            }
            Syntax::Sudoers => {
                let first = l.split_whitespace().next().unwrap_or_default();
                if first.starts_with("Defaults")
                    || first.ends_with("_Alias")
                    || first.starts_with('@')
                {
                    continue;
                }
                out.push((first.to_string(), l.to_string()));
            }
        }
    }
    out
}

/// A file that decides a setting rpiimg's drop-in also makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Override {
    /// rpiimg's file.
    pub ours: String,
    /// The file that wins instead.
    pub file: String,
    pub key: String,
    /// Its value, and ours.
    pub value: String,
    pub our_value: String,
    pub reader: &'static str,
}

impl std::fmt::Display for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sets {} = {} where {} sets {}, and {} takes {}'s value ({}); rename or remove that file, or set the value in the profile's drop-in only",
            self.file,
            self.key,
            self.value,
            self.ours,
            self.our_value,
            self.reader,
            self.file,
            match self.wins() {
                Wins::Last => "the last file in name order wins",
                Wins::First => "the first file in name order wins",
            }
        )
    }
}

impl Override {
    fn wins(&self) -> Wins {
        dir_of(&self.ours).map_or(Wins::Last, |(d, _)| d.wins)
    }
}

/// For rpiimg's drop-in `ours` (a path in one of [`DIRS`]), the files of
/// `files` (path -> text: the directory as the node will have it, ours
/// included) that decide one of its settings instead.
pub(crate) fn overrides(ours: &str, files: &BTreeMap<String, String>) -> Vec<Override> {
    let Some((dir, _)) = dir_of(ours) else {
        return Vec::new();
    };
    // The files read, in the order the reader reads them: by name across
    // the directories, a name in an earlier directory hiding the later.
    let mut by_name: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for d in dir.dirs.iter().rev() {
        for (path, text) in files {
            if let Some(name) = path.strip_prefix(d).and_then(|r| r.strip_prefix('/')) {
                if !name.contains('/') && dir.reads(name) {
                    by_name.insert(name, (path.as_str(), text.as_str()));
                }
            }
        }
    }
    let Some(our_text) = files.get(ours) else {
        return Vec::new();
    };
    let mine: BTreeMap<String, String> = settings(dir.syntax, our_text).into_iter().collect();
    // The file that decides each key.
    let mut decided: BTreeMap<String, (&str, String)> = BTreeMap::new();
    for (path, text) in by_name.values() {
        for (k, v) in settings(dir.syntax, text) {
            match dir.wins {
                Wins::Last => {
                    decided.insert(k, (path, v));
                }
                Wins::First => {
                    decided.entry(k).or_insert((path, v));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (k, our_value) in mine {
        if let Some((path, v)) = decided.get(&k) {
            if *path != ours && *v != our_value {
                out.push(Override {
                    ours: ours.to_string(),
                    file: (*path).to_string(),
                    key: k.clone(),
                    value: v.clone(),
                    our_value,
                    reader: dir.reader,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn later_sysctl_file_wins_and_is_named() {
        let f = files(&[
            ("/etc/sysctl.d/98-rpi.conf", "vm.min_free_kbytes = 16384\n"),
            (
                "/etc/sysctl.d/zz-rpiimg.conf",
                "vm.min_free_kbytes = 65536\nnet.ipv4.ip_forward = 1\n",
            ),
        ]);
        assert!(overrides("/etc/sysctl.d/zz-rpiimg.conf", &f).is_empty());
        let mut g = f.clone();
        g.insert(
            "/etc/sysctl.d/zzz-local.conf".into(),
            "vm/min_free_kbytes=1024\n".into(),
        );
        let o = overrides("/etc/sysctl.d/zz-rpiimg.conf", &g);
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!(
            (o[0].key.as_str(), o[0].value.as_str()),
            ("vm.min_free_kbytes", "1024")
        );
        assert!(o[0].to_string().contains("/etc/sysctl.d/zzz-local.conf"));
        // /etc hides a same-named file of /usr/lib.
        let h = files(&[
            ("/usr/lib/sysctl.d/zzzz.conf", "vm.min_free_kbytes = 1\n"),
            ("/etc/sysctl.d/zzzz.conf", "# emptied by the admin\n"),
            (
                "/etc/sysctl.d/zz-rpiimg.conf",
                "vm.min_free_kbytes = 65536\n",
            ),
        ]);
        assert!(overrides("/etc/sysctl.d/zz-rpiimg.conf", &h).is_empty());
    }

    #[test]
    fn sshd_first_value_wins() {
        let f = files(&[
            (
                "/etc/ssh/sshd_config.d/00-rpiimg.conf",
                "HostKey /etc/ssh/rpiimg/k\nPasswordAuthentication yes\n",
            ),
            (
                "/etc/ssh/sshd_config.d/50-cloud-init.conf",
                "PasswordAuthentication no\n",
            ),
        ]);
        assert!(overrides("/etc/ssh/sshd_config.d/00-rpiimg.conf", &f).is_empty());
        let mut g = f.clone();
        g.insert(
            "/etc/ssh/sshd_config.d/0-early.conf".into(),
            "passwordauthentication no\n".into(),
        );
        assert_eq!(
            overrides("/etc/ssh/sshd_config.d/00-rpiimg.conf", &g).len(),
            1
        );
    }

    #[test]
    fn cloud_init_sudo_and_ini() {
        let f = files(&[
            (
                "/etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg",
                "datasource_list: [NoCloud]\nssh_deletekeys: true\n",
            ),
            (
                "/etc/cloud/cloud.cfg.d/zz-rpiimg.cfg",
                "ssh_deletekeys: false\nnetwork:\n  config: disabled\n",
            ),
        ]);
        assert!(overrides("/etc/cloud/cloud.cfg.d/zz-rpiimg.cfg", &f).is_empty());
        let s = files(&[
            (
                "/etc/sudoers.d/zz-rpiimg",
                "ubuntu ALL=(ALL:ALL) NOPASSWD: ALL\n",
            ),
            ("/etc/sudoers.d/zzz", "ubuntu ALL=(ALL:ALL) ALL\n"),
            ("/etc/sudoers.d/zzzz.bak", "ubuntu ALL=(ALL:ALL) ALL\n"),
        ]);
        let o = overrides("/etc/sudoers.d/zz-rpiimg", &s);
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!(o[0].file, "/etc/sudoers.d/zzz");
        let i = files(&[
            (
                "/etc/rpi/swap.conf.d/zz-rpiimg.conf",
                "[Main]\nMechanism=swapfile\n[File]\nFixedSizeMiB=4096\n",
            ),
            (
                "/usr/lib/rpi/swap.conf.d/zzz.conf",
                "[File]\nFixedSizeMiB=512\n",
            ),
        ]);
        let o = overrides("/etc/rpi/swap.conf.d/zz-rpiimg.conf", &i);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].key, "[File] FixedSizeMiB");
    }
}
