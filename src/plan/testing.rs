//! Image facts for unit tests, made from the fixture skeleton that
//! `scripts/mkfixture` turns into images, so plan tests and image tests
//! see the same files without building an image.

use super::facts::{ImageFacts, Install};

const SKEL: &[(&str, &str)] = &[
    (
        "/etc/passwd",
        include_str!("../../tests/fixtures/skel/common/etc/passwd"),
    ),
    (
        "/etc/shadow",
        include_str!("../../tests/fixtures/skel/common/etc/shadow"),
    ),
    (
        "/etc/group",
        include_str!("../../tests/fixtures/skel/common/etc/group"),
    ),
    (
        "/etc/gshadow",
        include_str!("../../tests/fixtures/skel/common/etc/gshadow"),
    ),
    (
        "/etc/subuid",
        include_str!("../../tests/fixtures/skel/common/etc/subuid"),
    ),
    (
        "/etc/subgid",
        include_str!("../../tests/fixtures/skel/common/etc/subgid"),
    ),
    (
        "/etc/skel/.profile",
        include_str!("../../tests/fixtures/skel/common/etc/skel/.profile"),
    ),
    (
        "/etc/hosts",
        include_str!("../../tests/fixtures/skel/common/etc/hosts"),
    ),
    (
        "/boot/firmware/config.txt",
        include_str!("../../tests/fixtures/skel/common/boot/firmware/config.txt"),
    ),
];

/// The drop-in files of a stock image in the directories rpiimg writes
/// into: (path, text, which release has it).
const DROPINS: &[(&str, &str, Option<&str>)] = &[
    (
        "/etc/sysctl.d/98-rpi.conf",
        include_str!("../../tests/fixtures/skel/common/etc/sysctl.d/98-rpi.conf"),
        None,
    ),
    (
        "/etc/sysctl.d/README.sysctl",
        include_str!("../../tests/fixtures/skel/common/etc/sysctl.d/README.sysctl"),
        None,
    ),
    (
        "/etc/sudoers.d/README",
        include_str!("../../tests/fixtures/skel/common/etc/sudoers.d/README"),
        None,
    ),
    (
        "/etc/ssh/sshd_config.d/rename_user.conf",
        include_str!("../../tests/fixtures/skel/common/etc/ssh/sshd_config.d/rename_user.conf"),
        None,
    ),
    (
        "/etc/sudoers.d/010_pi-nopasswd",
        include_str!("../../tests/fixtures/skel/bookworm/etc/sudoers.d/010_pi-nopasswd"),
        Some("bookworm"),
    ),
    // The rest as scripts/mkfixture writes them (sys-mods' sudoers
    // drop-ins and procps' link on bookworm; systemd's, linux-sysctl-defaults'
    // and sys-mods' drop-ins under /usr/lib on trixie).
    (
        "/etc/sudoers.d/010_at-export",
        "Defaults env_keep += \"NO_AT_BRIDGE\"\n",
        Some("bookworm"),
    ),
    (
        "/etc/sudoers.d/010_global-tty",
        "Defaults timestamp_type=global\n",
        Some("bookworm"),
    ),
    (
        "/etc/sysctl.d/99-sysctl.conf",
        include_str!("../../tests/fixtures/skel/common/etc/sysctl.conf"),
        Some("bookworm"),
    ),
    (
        "/usr/lib/sysctl.d/50-pid-max.conf",
        "kernel.pid_max = 4194304\n",
        Some("trixie"),
    ),
    (
        "/usr/lib/sysctl.d/50-default.conf",
        "-net.ipv4.ping_group_range = 0 2147483647\nkernel.sysrq = 0x01b6\n",
        Some("trixie"),
    ),
    (
        "/usr/lib/systemd/timesyncd.conf.d/40-rpi-sync.conf",
        "[Time]\nSaveIntervalSec=5m\n",
        Some("trixie"),
    ),
    (
        "/etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg",
        include_str!("../../tests/fixtures/skel/trixie/etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg"),
        Some("trixie"),
    ),
];

/// (unit, [Install] body) as scripts/mkfixture installs them.
const UNITS: &[(&str, &str)] = &[
    ("NetworkManager.service", "WantedBy=multi-user.target\nAlso=NetworkManager-dispatcher.service\nAlias=dbus-org.freedesktop.NetworkManager.service"),
    ("NetworkManager-wait-online.service", "WantedBy=network-online.target"),
    ("NetworkManager-dispatcher.service", "Alias=dbus-org.freedesktop.nm-dispatcher.service"),
    ("systemd-networkd.service", "WantedBy=multi-user.target\nAlso=systemd-networkd.socket\nAlso=systemd-network-generator.service\nAlso=systemd-networkd-wait-online.service\nAlias=dbus-org.freedesktop.network1.service"),
    ("systemd-networkd.socket", "WantedBy=sockets.target"),
    ("systemd-network-generator.service", "WantedBy=sysinit.target"),
    ("systemd-networkd-wait-online.service", "WantedBy=network-online.target"),
    ("ssh.service", "WantedBy=multi-user.target\nAlias=sshd.service"),
    ("userconfig.service", "WantedBy=multi-user.target"),
    ("getty@.service", "WantedBy=getty.target\nDefaultInstance=tty1"),
];

/// Links a stock image has under /etc/systemd/system.
const LINKS: &[(&str, &str)] = &[
    (
        "multi-user.target.wants/NetworkManager.service",
        "NetworkManager.service",
    ),
    (
        "network-online.target.wants/NetworkManager-wait-online.service",
        "NetworkManager-wait-online.service",
    ),
    (
        "dbus-org.freedesktop.nm-dispatcher.service",
        "NetworkManager-dispatcher.service",
    ),
    (
        "multi-user.target.wants/userconfig.service",
        "userconfig.service",
    ),
];

/// Facts of a stock bookworm or trixie image (the fixture's).
pub(crate) fn facts(codename: &str) -> ImageFacts {
    let trixie = codename == "trixie";
    let mut exists = vec!["/home/pi", "/etc/ssh/sshd_config.d/rename_user.conf"];
    if trixie {
        exists.extend([
            "/etc/cloud",
            "/usr/sbin/netplan",
            "/etc/rpi/swap.conf",
            "/boot/firmware/network-config",
        ]);
    } else {
        exists.push("/etc/sudoers.d/010_pi-nopasswd");
    }
    let probed =
        super::facts::Probed::answer(|p| Ok::<bool, ()>(exists.contains(&p.path()))).unwrap();
    let unit_dir = if trixie {
        "/usr/lib/systemd/system"
    } else {
        "/lib/systemd/system"
    };
    let mut f = ImageFacts::new(unit_dir, probed);
    f.codename = codename.into();
    f.os_id = "debian".into();
    for (p, t) in SKEL {
        f.files.insert((*p).into(), (*t).into());
    }
    if trixie {
        f.files
            .insert("/etc/machine-id".into(), "uninitialized\n".into());
    } else {
        f.files.insert(
            "/etc/dphys-swapfile".into(),
            include_str!("../../tests/fixtures/skel/bookworm/etc/dphys-swapfile").into(),
        );
        f.files.insert("/etc/machine-id".into(), String::new());
    }
    // As scripts/mkfixture writes them.
    f.files.insert(
        "/boot/firmware/cmdline.txt".into(),
        if trixie {
            "console=serial0,115200 console=tty1 root=PARTUUID=5eed0002-02 rootfstype=ext4 fsck.repair=yes rootwait resize\n"
        } else {
            "console=serial0,115200 console=tty1 root=PARTUUID=5eed0001-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n"
        }
        .into(),
    );
    f.files.insert(
        "/var/lib/NetworkManager/NetworkManager.state".into(),
        "[main]\nWirelessEnabled=false\n".into(),
    );
    for (p, t, only) in DROPINS {
        if only.is_none_or(|o| o == codename) {
            f.dropins.insert((*p).into(), (*t).into());
        }
    }
    for (u, body) in UNITS {
        f.units
            .insert((*u).into(), Install::parse(&format!("[Install]\n{body}\n")));
    }
    if !trixie {
        f.units.insert(
            "regenerate_ssh_host_keys.service".into(),
            Install::parse("[Install]\nWantedBy=multi-user.target\n"),
        );
        f.links.insert(
            "/etc/systemd/system/multi-user.target.wants/regenerate_ssh_host_keys.service".into(),
            format!("{}/regenerate_ssh_host_keys.service", f.unit_dir),
        );
    }
    for (l, u) in LINKS {
        f.links.insert(
            format!("/etc/systemd/system/{l}"),
            format!("{}/{u}", f.unit_dir),
        );
    }
    f
}

/// An example profile from profiles/ (read from the repository).
pub(crate) fn profile(name: &str) -> crate::profile::Profile {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let path = crate::profile::find(name, &root).unwrap_or_else(|e| panic!("{e}"));
    let mut p = crate::profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
    p.secret = Some(test_secret(&p.cluster.name));
    p
}

/// The secret of the test key store in tests/fixtures/keys (not a real one).
pub(crate) fn test_secret(cluster: &str) -> crate::keystore::ClusterSecret {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(cluster);
    // git keeps no permission bits but the executable one: a checkout's
    // secret is 0644, which the key store refuses.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ =
            std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o600));
    }
    crate::keystore::read(&dir, cluster)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no test key store {}", dir.display()))
}
