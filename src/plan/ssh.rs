//! SSH: enabled, the node's derived host keys, keys of other types removed.

use super::facts::Probe;
use super::{units, write, Builder, Change, PlanError};

pub(super) fn steps(b: &mut Builder) -> Result<(), PlanError> {
    let s = &b.p.ssh;
    if !s.enable {
        return Ok(());
    }
    let mut c = units::enable(b.f, "ssh.service").map_err(|e| b.err(e))?;
    c.push(write("/boot/firmware/ssh", "", 0o644));
    b.step("SSH enabled", std::mem::take(&mut c));

    // Host keys: derived from the cluster's key store, so a rebuild or a
    // reflash keeps them and known_hosts stays right.
    let secret = b.p.secret.as_ref().ok_or_else(|| {
        b.err("SSH host keys need the cluster's key store (rpiimg plan and build make it)")
    })?;
    let mut prints = Vec::new();
    for kind in crate::sshkey::KeyType::ALL {
        let k = crate::sshkey::derive(secret, &b.p.hostname, kind, b.p.host_key_generation);
        let path = format!("/etc/ssh/ssh_host_{}_key", kind.file_name());
        c.push(write(&path, k.private_pem.clone(), 0o600));
        c.push(write(
            &format!("{path}.pub"),
            format!("{}\n", k.public_line),
            0o644,
        ));
        prints.push(format!("{} {}", kind.file_name(), k.fingerprint()));
    }
    // Keys of other types in the base would be the same on every node.
    for k in Probe::OTHER_HOST_KEYS {
        if b.f.has(k) {
            c.push(Change::Remove {
                path: k.path().into(),
            });
        }
    }
    // bookworm's regenerate_ssh_host_keys deletes every key on the first
    // boot and makes new ones: off and masked. trixie's sshd-keygen only
    // fills in missing keys and stays.
    if b.f.units.contains_key("regenerate_ssh_host_keys.service") {
        c.extend(units::disable(b.f, "regenerate_ssh_host_keys.service"));
        c.push(units::mask("regenerate_ssh_host_keys.service"));
    }
    b.step(
        format!(
            "SSH host keys from the cluster's key store ({}), kept through the first boot",
            prints.join(", ")
        ),
        std::mem::take(&mut c),
    );
    c.push(write(
        "/etc/ssh/sshd_config.d/10-rpiimg.conf",
        format!(
            "# Written by rpiimg from the node profile.\nPasswordAuthentication {}\n",
            if s.password_authentication {
                "yes"
            } else {
                "no"
            }
        ),
        0o644,
    ));
    b.step("SSH settings", c);
    Ok(())
}
