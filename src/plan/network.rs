//! The network: NetworkManager off and masked, systemd-networkd files for
//! the node's addresses, bridge and VLANs, netplan and cloud-init kept from
//! undoing them.

use std::collections::BTreeMap;

use super::facts::Probe;
use super::{overlays, units, write, Builder, Change, PlanError};
use crate::profile::NetMode;

pub(super) fn steps(b: &mut Builder) -> Result<(), PlanError> {
    let node = b.node.clone();
    let node = &node;
    let f = b.f;
    let mut units_c = Vec::new();
    for u in [
        "NetworkManager.service",
        "NetworkManager-wait-online.service",
    ] {
        units_c.extend(units::disable(f, u));
    }
    if f.units.contains_key("NetworkManager.service") {
        // Masked as well: two network managers on one interface fight
        // over it, whatever starts NetworkManager (a preset, D-Bus, a
        // package script).
        units_c.push(units::mask("NetworkManager.service"));
    }
    units_c.extend(units::enable(f, "systemd-networkd.service").map_err(|e| b.err(e))?);
    if f.units.contains_key("systemd-networkd-wait-online.service") {
        units_c.extend(
            units::enable(f, "systemd-networkd-wait-online.service").map_err(|e| b.err(e))?,
        );
    }
    dedup(&mut units_c);
    b.step(
        "NetworkManager disabled and masked, systemd-networkd enabled",
        units_c,
    );
    let ctx = overlays::context(b.p, f, node);
    let files = overlays::render_builtin(&ctx, "network").map_err(|e| b.err(e))?;
    let how = if b.p.network.mode == NetMode::Vlan {
        "VLAN-filtering"
    } else {
        "flat"
    };
    b.step(
        format!(
            "network: {} bridge brmux, veth0 {}{}",
            how,
            node.address,
            if f.has_netplan() {
                ""
            } else {
                " (bootstrap networkd files until netplan.io is installed)"
            }
        ),
        files,
    );
    if f.has(Probe::FIRMWARE_NETWORK_CONFIG) {
        // The Pi documentation tells users to edit this file; on this node
        // it must say so rather than be silently ignored.
        b.step(
            "cloud-init's NoCloud network-config on the boot partition says it is ignored",
            vec![write(
                "/boot/firmware/network-config",
                format!(
                    "# rpiimg: {host}'s network is configured by rpiimg (cluster {cluster}),\n\
                     # in /etc/systemd/network and /etc/netplan on the root filesystem.\n\
                     # cloud-init's network configuration is disabled on this node\n\
                     # (/etc/cloud/cloud.cfg.d/zz-rpiimg.cfg), so EDITS TO THIS FILE HAVE\n\
                     # NO EFFECT. To change the network, edit the cluster profile and\n\
                     # rebuild the image, or edit /etc/netplan/50-cloud-init.yaml on the node.\n\
                     network:\n  config: disabled\n",
                    host = b.p.hostname,
                    cluster = b.p.cluster.name
                ),
                0o644,
            )],
        );
    }
    wifi(b)?;
    if f.has(Probe::CLOUD_INIT) {
        // Besides the network, the image's cloud.cfg (`users: [default]`,
        // `preserve_hostname: false`) would recreate `pi` on first boot
        // once it was renamed and could reset the hostname; rpiimg already
        // did both offline. User-data on bootfs still applies.
        b.step(
            "cloud-init does not rewrite the network, recreate pi or reset the hostname",
            vec![write(
                "/etc/cloud/cloud.cfg.d/zz-rpiimg.cfg",
                "# Written by rpiimg: the image is configured offline.\nnetwork: {config: disabled}\nusers: []\npreserve_hostname: true\nmanage_etc_hosts: false\n# The SSH host keys come from the cluster's key store: keep them.\nssh_deletekeys: false\n",
                0o644,
            )],
        );
    }
    Ok(())
}

/// The rescue Wi-Fi, unblocked the Pi's way. Pi OS keeps Wi-Fi off until a
/// country is set: pi-gen writes `WirelessEnabled=false` into
/// NetworkManager.state when it was given none (stage2/02-net-tweaks), and
/// the radio stays rfkill-blocked. raspi-config's `do_wifi_country` sets
/// `cfg80211.ieee80211_regdom=CC` on the kernel command line and runs
/// `rfkill unblock wifi`; offline, the first is an edit of cmdline.txt and
/// the second a unit that clears the soft block of every WLAN radio at each
/// boot (before the network starts), since the saved rfkill state is named
/// after a device path that differs between boards.
fn wifi(b: &mut Builder) -> Result<(), PlanError> {
    let Some(w) = b.p.network.wifi.clone() else {
        return Ok(());
    };
    let cmdline = b.f.file("/boot/firmware/cmdline.txt").ok_or_else(|| {
        b.err("network.wifi: the base image has no /boot/firmware/cmdline.txt to set the Wi-Fi country in")
    })?;
    let mut words: Vec<String> = cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("cfg80211.ieee80211_regdom="))
        .map(String::from)
        .collect();
    words.push(format!("cfg80211.ieee80211_regdom={}", w.country));
    let mut c = vec![write(
        "/boot/firmware/cmdline.txt",
        words.join(" ") + "\n",
        0o644,
    )];
    if let Some(state) = b.f.file("/var/lib/NetworkManager/NetworkManager.state") {
        c.push(write(
            "/var/lib/NetworkManager/NetworkManager.state",
            super::system::set_conf(state, "WirelessEnabled", "true"),
            0o644,
        ));
    }
    c.push(write(
        "/etc/systemd/system/rpiimg-wifi-unblock.service",
        "# Written by rpiimg: what `rfkill unblock wifi` does (raspi-config's\n\
         # do_wifi_country), at every boot before the network starts.\n\
         [Unit]\n\
         Description=Unblock Wi-Fi radios (country set by rpiimg)\n\
         DefaultDependencies=no\n\
         After=systemd-rfkill.service\n\
         Before=network-pre.target\n\
         Wants=network-pre.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart=/bin/sh -c 'for r in /sys/class/rfkill/rfkill*; do [ \"$(cat \"$r/type\")\" = wlan ] && echo 0 >\"$r/soft\"; done; true'\n\
         \n\
         [Install]\n\
         WantedBy=sysinit.target\n",
        0o644,
    ));
    c.extend(units::enable_own(
        "rpiimg-wifi-unblock.service",
        "sysinit.target",
    ));
    b.step(
        format!(
            "Wi-Fi country {} and radio unblocked, as raspi-config does (Pi OS keeps Wi-Fi off until a country is set)",
            w.country
        ),
        c,
    );
    Ok(())
}

fn dedup(v: &mut Vec<Change>) {
    let mut seen = BTreeMap::new();
    v.retain(|c| seen.insert(c.describe(), ()).is_none());
}
