//! What the plan needs to know about the base image, read once. Tests
//! build these by hand, so planning never needs an image.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::ext4::FileType;
use crate::fs::view::SystemView;

/// An `[Install]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub also: Vec<String>,
    pub alias: Vec<String>,
    pub default_instance: Option<String>,
}

impl Install {
    pub fn parse(unit_text: &str) -> Install {
        let mut i = Install::default();
        let mut in_install = false;
        for l in unit_text.lines() {
            let l = l.trim();
            if l.starts_with('[') {
                in_install = l == "[Install]";
                continue;
            }
            if !in_install || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            let Some((k, v)) = l.split_once('=') else {
                continue;
            };
            let words = v.split_whitespace().map(String::from);
            match k.trim() {
                "WantedBy" => i.wanted_by.extend(words),
                "RequiredBy" => i.required_by.extend(words),
                "Also" => i.also.extend(words),
                "Alias" => i.alias.extend(words),
                "DefaultInstance" => i.default_instance = Some(v.trim().to_string()),
                _ => {}
            }
        }
        i
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImageFacts {
    /// `VERSION_CODENAME` from /etc/os-release.
    pub codename: String,
    pub os_id: String,
    /// Files the plan edits, by path (absent files are not in the map).
    pub files: BTreeMap<String, String>,
    /// `[Install]` of each unit file under the system unit directories.
    pub units: BTreeMap<String, Install>,
    /// Where the image's enablement links point (`/lib/systemd/system` on
    /// bookworm, `/usr/lib/systemd/system` on trixie).
    pub unit_dir: String,
    /// Symlinks under /etc/systemd/system (path -> target).
    pub links: BTreeMap<String, String>,
    /// Paths the plan asks about, with whether they exist.
    pub exists: BTreeMap<String, bool>,
    /// systemd preset files: (directory, file name) -> text.
    pub presets: BTreeMap<(String, String), String>,
}

/// Files whose text the plan reads.
pub const FILES: &[&str] = &[
    "/etc/os-release",
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
    "/etc/hosts",
    "/etc/dphys-swapfile",
    "/etc/machine-id",
    "/etc/skel/.bashrc",
    "/etc/skel/.profile",
    "/etc/skel/.bash_logout",
];

/// Paths whose existence the plan depends on.
pub const PROBES: &[&str] = &[
    "/home/pi",
    "/usr/sbin/netplan",
    "/usr/lib/netplan",
    "/lib/netplan",
    "/etc/cloud",
    "/etc/rpi/swap.conf",
    "/var/lib/dbus/machine-id",
    "/etc/ssh/sshd_config.d/rename_user.conf",
    "/etc/sudoers.d/010_pi-nopasswd",
    "/boot/firmware/network-config",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_rsa_key.pub",
    "/etc/ssh/ssh_host_dsa_key",
    "/etc/ssh/ssh_host_dsa_key.pub",
];

const UNIT_DIRS: &[&str] = &[
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/etc/systemd/system",
];

impl ImageFacts {
    pub fn from_view(view: &SystemView) -> Result<Self> {
        let mut f = ImageFacts::default();
        for p in FILES {
            if let Some(t) = view.read_text_opt(p)? {
                f.files.insert((*p).to_string(), t);
            }
        }
        for p in PROBES {
            f.exists.insert((*p).to_string(), view.exists(p)?);
        }
        let rel =
            crate::os::release::parse(f.files.get("/etc/os-release").map_or("", String::as_str));
        f.codename = rel.version_codename;
        f.os_id = rel.id;
        for d in UNIT_DIRS {
            let Some(list) = view.list_opt(d)? else {
                continue;
            };
            for (name, st) in list {
                if st.kind == FileType::Regular
                    && name.contains('.')
                    && !f.units.contains_key(&name)
                {
                    let text = view
                        .read_text_opt(&format!("{d}/{name}"))?
                        .unwrap_or_default();
                    f.units.insert(name, Install::parse(&text));
                }
            }
        }
        let sys = "/etc/systemd/system";
        if let Some(list) = view.list_opt(sys)? {
            for (name, st) in list {
                let p = format!("{sys}/{name}");
                match st.kind {
                    FileType::Symlink => {
                        f.links.insert(p, st.target.unwrap_or_default());
                    }
                    FileType::Directory => {
                        for (n2, st2) in view.list(&p)? {
                            if st2.kind == FileType::Symlink {
                                f.links
                                    .insert(format!("{p}/{n2}"), st2.target.unwrap_or_default());
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        for d in crate::os::presets::PRESET_DIRS {
            let Some(list) = view.list_opt(d)? else {
                continue;
            };
            for (name, st) in list {
                if st.kind == FileType::Regular && name.ends_with(".preset") {
                    let text = view
                        .read_text_opt(&format!("{d}/{name}"))?
                        .unwrap_or_default();
                    f.presets.insert(((*d).to_string(), name), text);
                }
            }
        }
        f.unit_dir = if f
            .links
            .values()
            .any(|t| t.starts_with("/usr/lib/systemd/system/"))
        {
            "/usr/lib/systemd/system".into()
        } else {
            "/lib/systemd/system".into()
        };
        Ok(f)
    }

    pub fn file(&self, p: &str) -> Option<&str> {
        self.files.get(p).map(String::as_str)
    }

    pub fn has(&self, p: &str) -> bool {
        self.exists.get(p).copied().unwrap_or(false)
    }

    pub fn has_netplan(&self) -> bool {
        self.has("/usr/sbin/netplan") || self.has("/usr/lib/netplan") || self.has("/lib/netplan")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_sections() {
        let i = Install::parse(
            "[Unit]\nWantedBy=nothing.target\n[Install]\nWantedBy=multi-user.target\nAlso=a.socket b.service\nAlias=x.service\n# WantedBy=no\nDefaultInstance=tty1\n",
        );
        assert_eq!(i.wanted_by, vec!["multi-user.target"]);
        assert_eq!(i.also, vec!["a.socket", "b.service"]);
        assert_eq!(i.alias, vec!["x.service"]);
        assert_eq!(i.default_instance.as_deref(), Some("tty1"));
    }
}
