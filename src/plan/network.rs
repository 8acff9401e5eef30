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
                     # (/etc/cloud/cloud.cfg.d/99-rpiimg.cfg), so EDITS TO THIS FILE HAVE\n\
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
    if f.has(Probe::CLOUD_INIT) {
        // Besides the network, the image's cloud.cfg (`users: [default]`,
        // `preserve_hostname: false`) would recreate `pi` on first boot
        // once it was renamed and could reset the hostname; rpiimg already
        // did both offline. User-data on bootfs still applies.
        b.step(
            "cloud-init does not rewrite the network, recreate pi or reset the hostname",
            vec![write(
                "/etc/cloud/cloud.cfg.d/99-rpiimg.cfg",
                "# Written by rpiimg: the image is configured offline.\nnetwork: {config: disabled}\nusers: []\npreserve_hostname: true\nmanage_etc_hosts: false\n# The SSH host keys come from the cluster's key store: keep them.\nssh_deletekeys: false\n",
                0o644,
            )],
        );
    }
    Ok(())
}

fn dedup(v: &mut Vec<Change>) {
    let mut seen = BTreeMap::new();
    v.retain(|c| seen.insert(c.describe(), ()).is_none());
}
