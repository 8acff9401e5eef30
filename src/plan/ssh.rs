//! SSH: enabled, the node's derived host keys where the first boot cannot
//! replace them, and sshd told to serve exactly those.
//!
//! Why the keys do not sit at `/etc/ssh/ssh_host_*_key`: on bookworm,
//! raspberrypi-sys-mods' `firstboot` (run as `init=` before systemd, see
//! docs/first-boot.md) calls `regenerate_ssh_host_keys` itself, which
//! removes `/etc/ssh/ssh_host_*_key*` and runs `ssh-keygen -A`; masking its
//! unit does not stop that. cloud-init's `ssh_deletekeys` (trixie) uses the
//! same glob. Keys in a directory of their own match neither, and a
//! `HostKey` line per key in an sshd drop-in makes sshd load only those
//! (sshd uses its default key names only when no `HostKey` is given), so
//! the keys made at the standard names on the first boot are never served.

use super::facts::Probe;
use super::{units, write, Builder, Change, PlanError};

/// Where the node's host keys live (outside the first boot's glob).
pub(super) const HOST_KEY_DIR: &str = "/etc/ssh/rpiimg";

/// The sshd drop-in rpiimg writes. sshd keeps the *first* value it reads
/// for a keyword and reads `sshd_config.d/*.conf` in name order (Debian's
/// `sshd_config` includes them on its first line), so ours sorts first.
pub(super) const SSHD_DROPIN: &str = "/etc/ssh/sshd_config.d/00-rpiimg.conf";

/// The private key file of one key type.
pub(super) fn host_key_path(kind: crate::sshkey::KeyType) -> String {
    format!("{HOST_KEY_DIR}/ssh_host_{}_key", kind.file_name())
}

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
    let mut host_key_lines = String::new();
    c.push(Change::Mkdir {
        path: HOST_KEY_DIR.into(),
        mode: 0o755,
        uid: 0,
        gid: 0,
    });
    for kind in crate::sshkey::KeyType::ALL {
        let k = crate::sshkey::derive(secret, &b.p.hostname, kind, b.p.host_key_generation);
        let path = host_key_path(kind);
        c.push(write(&path, k.private_pem.clone(), 0o600));
        c.push(write(
            &format!("{path}.pub"),
            format!("{}\n", k.public_line),
            0o644,
        ));
        host_key_lines.push_str(&format!("HostKey {path}\n"));
        prints.push(format!("{} {}", kind.file_name(), k.fingerprint()));
    }
    // Keys at the standard names in the base would be the same on every
    // node made from it (pi-gen deletes them; a customised base may not).
    for k in Probe::STANDARD_HOST_KEYS {
        if b.f.has(k) {
            c.push(Change::Remove {
                path: k.path().into(),
            });
        }
    }
    b.step(
        format!(
            "SSH host keys from the cluster's key store ({}), in {HOST_KEY_DIR}/ where the first boot's key regeneration does not reach",
            prints.join(", ")
        ),
        std::mem::take(&mut c),
    );
    c.push(write(
        SSHD_DROPIN,
        format!(
            "# Written by rpiimg from the node profile. sshd keeps the first value it\n\
             # reads, and this file sorts first in sshd_config.d. With HostKey given,\n\
             # sshd serves only these keys: the ones the first boot makes at\n\
             # /etc/ssh/ssh_host_*_key are not used.\n\
             {host_key_lines}PasswordAuthentication {}\n",
            if s.password_authentication {
                "yes"
            } else {
                "no"
            }
        ),
        0o644,
    ));
    b.step("SSH settings (host keys served, password logins)", c);
    Ok(())
}
