//! What the plan needs to know about the base image, read once. Tests
//! build these by hand, so planning never needs an image.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::ext4::FileType;
use crate::fs::view::SystemView;

/// An `[Install]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub also: Vec<String>,
    pub alias: Vec<String>,
    pub default_instance: Option<String>,
}

impl Install {
    pub(crate) fn parse(unit_text: &str) -> Install {
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

#[derive(Debug, Clone)]
pub(crate) struct ImageFacts {
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
    /// Which [`Probe`]s exist (every one was asked).
    pub exists: Probed,
    /// systemd preset files: (directory, file name) -> text.
    pub presets: BTreeMap<(String, String), String>,
    /// The files of the drop-in directories rpiimg writes into
    /// ([`crate::os::dropins::DIRS`]): path -> text.
    pub dropins: BTreeMap<String, String>,
}

/// Files whose text the plan reads.
pub(crate) const FILES: &[&str] = &[
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
    "/boot/firmware/config.txt",
    "/boot/firmware/cmdline.txt",
    "/var/lib/NetworkManager/NetworkManager.state",
];

/// A path whose existence the plan depends on. Only the constants below
/// exist (the field is private), and reading the facts probes every one of
/// them, so [`ImageFacts::has`] never answers for a path nobody looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Probe(&'static str);

impl Probe {
    pub(crate) const HOME_PI: Probe = Probe("/home/pi");
    pub(crate) const NETPLAN_SBIN: Probe = Probe("/usr/sbin/netplan");
    pub(crate) const NETPLAN_USR_LIB: Probe = Probe("/usr/lib/netplan");
    pub(crate) const NETPLAN_LIB: Probe = Probe("/lib/netplan");
    pub(crate) const CLOUD_INIT: Probe = Probe("/etc/cloud");
    pub(crate) const RPI_SWAP_CONF: Probe = Probe("/etc/rpi/swap.conf");
    pub(crate) const DBUS_MACHINE_ID: Probe = Probe("/var/lib/dbus/machine-id");
    pub(crate) const SSHD_RENAME_USER: Probe = Probe("/etc/ssh/sshd_config.d/rename_user.conf");
    pub(crate) const SUDOERS_PI: Probe = Probe("/etc/sudoers.d/010_pi-nopasswd");
    pub(crate) const FIRMWARE_NETWORK_CONFIG: Probe = Probe("/boot/firmware/network-config");
    /// Host keys at the standard names (the same on every node made from
    /// one base; pi-gen deletes them, a customised base may not).
    pub(crate) const STANDARD_HOST_KEYS: [Probe; 8] = [
        Probe("/etc/ssh/ssh_host_rsa_key"),
        Probe("/etc/ssh/ssh_host_rsa_key.pub"),
        Probe("/etc/ssh/ssh_host_dsa_key"),
        Probe("/etc/ssh/ssh_host_dsa_key.pub"),
        Probe("/etc/ssh/ssh_host_ecdsa_key"),
        Probe("/etc/ssh/ssh_host_ecdsa_key.pub"),
        Probe("/etc/ssh/ssh_host_ed25519_key"),
        Probe("/etc/ssh/ssh_host_ed25519_key.pub"),
    ];

    /// Every probe, as reading the facts checks them.
    pub(crate) fn all() -> impl Iterator<Item = Probe> {
        [
            Probe::HOME_PI,
            Probe::NETPLAN_SBIN,
            Probe::NETPLAN_USR_LIB,
            Probe::NETPLAN_LIB,
            Probe::CLOUD_INIT,
            Probe::RPI_SWAP_CONF,
            Probe::DBUS_MACHINE_ID,
            Probe::SSHD_RENAME_USER,
            Probe::SUDOERS_PI,
            Probe::FIRMWARE_NETWORK_CONFIG,
        ]
        .into_iter()
        .chain(Probe::STANDARD_HOST_KEYS)
    }

    pub(crate) fn path(self) -> &'static str {
        self.0
    }
}

/// The answers to every [`Probe`]. The only way to make one is
/// [`Probed::answer`], which asks each probe, and there is no default: facts
/// made by hand (in tests) answer for every path too, so "absent" always
/// means "looked at and not there".
#[derive(Debug, Clone)]
pub(crate) struct Probed(BTreeSet<Probe>);

impl Probed {
    /// Asks `exists` about every probe, in [`Probe::all`]'s order.
    pub(crate) fn answer<E>(
        mut exists: impl FnMut(Probe) -> std::result::Result<bool, E>,
    ) -> std::result::Result<Self, E> {
        let mut present = BTreeSet::new();
        for p in Probe::all() {
            if exists(p)? {
                present.insert(p);
            }
        }
        Ok(Probed(present))
    }
}

const UNIT_DIRS: &[&str] = &[
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/etc/systemd/system",
];

/// The regular files of a directory (none when it does not exist), with
/// their texts, in name order.
fn regular_files(view: &SystemView, dir: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (name, st) in view.list_opt(dir)?.unwrap_or_default() {
        if st.kind == FileType::Regular {
            let text = view
                .read_text_opt(&format!("{dir}/{name}"))?
                .unwrap_or_default();
            out.push((name, text));
        }
    }
    Ok(out)
}

impl ImageFacts {
    /// Facts with the probes answered and nothing else known yet.
    pub(crate) fn new(unit_dir: &str, exists: Probed) -> Self {
        ImageFacts {
            codename: String::new(),
            os_id: String::new(),
            files: BTreeMap::new(),
            units: BTreeMap::new(),
            unit_dir: unit_dir.to_string(),
            links: BTreeMap::new(),
            exists,
            presets: BTreeMap::new(),
            dropins: BTreeMap::new(),
        }
    }

    pub(crate) fn from_view(view: &SystemView) -> Result<Self> {
        // unit_dir is decided from the links below.
        let mut f = ImageFacts::new("", Probed::answer(|p| view.exists(p.path()))?);
        for p in FILES {
            if let Some(t) = view.read_text_opt(p)? {
                f.files.insert((*p).to_string(), t);
            }
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
            for (name, text) in regular_files(view, d)? {
                if name.ends_with(".preset") {
                    f.presets.insert(((*d).to_string(), name), text);
                }
            }
        }
        for d in crate::os::dropins::all_dirs() {
            for (name, text) in regular_files(view, d)? {
                f.dropins.insert(format!("{d}/{name}"), text);
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

    /// The text of one of [`FILES`], or None when the image lacks it. Asking
    /// for a path that was never read is a mistake in the plan, not an
    /// absent file.
    pub(crate) fn file(&self, p: &str) -> Option<&str> {
        debug_assert!(
            FILES.contains(&p),
            "{p} is not one of the files read into the facts"
        );
        self.files.get(p).map(String::as_str)
    }

    /// Whether a probed path exists (every probe was answered).
    pub(crate) fn has(&self, p: Probe) -> bool {
        self.exists.0.contains(&p)
    }

    pub(crate) fn has_netplan(&self) -> bool {
        self.has(Probe::NETPLAN_SBIN)
            || self.has(Probe::NETPLAN_USR_LIB)
            || self.has(Probe::NETPLAN_LIB)
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

    #[test]
    fn facts_answer_every_probe() {
        let mut asked = Vec::new();
        let probed = Probed::answer(|p| {
            asked.push(p);
            Ok::<bool, ()>(p == Probe::CLOUD_INIT)
        })
        .unwrap();
        assert_eq!(asked, Probe::all().collect::<Vec<_>>());
        let f = ImageFacts::new("/usr/lib/systemd/system", probed);
        assert!(f.has(Probe::CLOUD_INIT));
        assert!(Probe::all()
            .filter(|p| *p != Probe::CLOUD_INIT)
            .all(|p| !f.has(p)));
        // A failed probe fails the facts, rather than reading as absent.
        assert!(Probed::answer(|p| if p == Probe::SUDOERS_PI {
            Err("damaged")
        } else {
            Ok(true)
        })
        .is_err());
    }
}
