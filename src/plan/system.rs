//! System settings: sysctl, swap (by the release's mechanism), NTP.

use super::{write, Builder, OsFlavour, PlanError};

pub(super) fn steps(b: &mut Builder) -> Result<(), PlanError> {
    let p = b.p;
    if !p.sysctl.is_empty() {
        let mut s = String::from("# Written by rpiimg from the node profile.\n");
        for (k, v) in &b.p.sysctl {
            s.push_str(&format!("{k} = {v}\n"));
        }
        b.step(
            "sysctl settings",
            vec![write("/etc/sysctl.d/zz-rpiimg.conf", s, 0o644)],
        );
    }
    if let Some(mib) = b.p.swap_mib {
        // The release decides the mechanism: a drop-in nothing reads would
        // leave the node without its swap and without an error.
        let c = if b.os == OsFlavour::Bookworm {
            let t = b.f.file("/etc/dphys-swapfile").ok_or_else(|| {
                b.err("swap_mib: the bookworm image has no /etc/dphys-swapfile to set CONF_SWAPSIZE in; remove swap_mib or use a stock image")
            })?;
            let t = set_conf(t, "CONF_SWAPSIZE", &mib.to_string());
            write(
                "/etc/dphys-swapfile",
                set_conf(&t, "CONF_MAXSWAP", &mib.to_string()),
                0o644,
            )
        } else {
            write(
                "/etc/rpi/swap.conf.d/zz-rpiimg.conf",
                format!("# Written by rpiimg: a fixed {mib} MiB swap file.\n[Main]\nMechanism=swapfile\n\n[File]\nFixedSizeMiB={mib}\nMaxSizeMiB={mib}\n"),
                0o644,
            )
        };
        b.step(format!("swap {mib} MiB"), vec![c]);
    }
    if !p.cluster.ntp.is_empty() {
        b.step(
            "NTP servers for systemd-timesyncd",
            vec![write(
                "/etc/systemd/timesyncd.conf.d/zz-rpiimg.conf",
                format!("[Time]\nNTP={}\n", b.p.cluster.ntp.join(" ")),
                0o644,
            )],
        );
    }
    Ok(())
}

/// Set `KEY=value` in a shell-style config, uncommenting `#KEY=` or appending.
pub(super) fn set_conf(text: &str, key: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut done = false;
    for l in text.lines() {
        let bare = l.trim_start().trim_start_matches('#');
        if !done && bare.starts_with(&format!("{key}=")) {
            out.push(format!("{key}={value}"));
            done = true;
        } else {
            out.push(l.to_string());
        }
    }
    if !done {
        out.push(format!("{key}={value}"));
    }
    out.join("\n") + "\n"
}
