//! The node's identity: hostname, the cluster's hosts, and a machine-id
//! left for the board to make on its first boot.

use super::facts::Probe;
use super::{write, Builder, Change, OsFlavour};
use crate::profile::Profile;

pub(super) fn steps(b: &mut Builder) {
    let hosts = hosts_file(
        b.f.file("/etc/hosts").unwrap_or("127.0.0.1\tlocalhost\n"),
        b.p,
    );
    b.step(
        format!("hostname {} and cluster hosts", b.p.hostname),
        vec![
            write("/etc/hostname", format!("{}\n", b.p.hostname), 0o644),
            write("/etc/hosts", hosts, 0o644),
        ],
    );
    let first_boot_id = if b.os == OsFlavour::Trixie {
        "uninitialized\n"
    } else {
        ""
    };
    let mut id = vec![write("/etc/machine-id", first_boot_id, 0o444)];
    if b.f.has(Probe::DBUS_MACHINE_ID) {
        id.push(Change::Remove {
            path: "/var/lib/dbus/machine-id".into(),
        });
    }
    b.step(
        "machine-id left in its first-boot state, so every board makes its own",
        id,
    );
}

fn hosts_file(base: &str, p: &Profile) -> String {
    let marker = "# rpiimg: cluster nodes";
    let mut out = Vec::new();
    for l in base.lines() {
        if l.starts_with(marker) {
            break;
        }
        if l.starts_with("127.0.1.1") {
            out.push(format!("127.0.1.1\t{}", p.hostname));
        } else {
            out.push(l.to_string());
        }
    }
    if !out.iter().any(|l| l.starts_with("127.0.1.1")) {
        out.push(format!("127.0.1.1\t{}", p.hostname));
    }
    out.push(format!("{marker} ({})", p.cluster.name));
    for n in &p.cluster.nodes {
        out.push(format!("{}\t{}", n.address, n.hostname));
    }
    out.join("\n") + "\n"
}
