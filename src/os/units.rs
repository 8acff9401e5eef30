//! systemd unit enablement as it is stored on disk: symlinks under
//! `/etc/systemd/system`.

use crate::path::PathError;
use std::collections::BTreeMap;

use crate::error::Result;
use crate::ext4::FileType;
use crate::fs::view::SystemView;

pub(crate) const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct UnitState {
    /// Targets/units whose `.wants`/`.requires` directories link to it.
    pub wanted_by: Vec<String>,
    /// `/etc/systemd/system/<unit>` is a link to `/dev/null`.
    pub masked: bool,
    /// Names under `/etc/systemd/system` that alias it.
    pub aliases: Vec<String>,
}

impl UnitState {
    pub(crate) fn summary(&self) -> String {
        if self.masked {
            "masked".into()
        } else if self.wanted_by.is_empty() {
            "disabled".into()
        } else {
            format!("enabled ({})", self.wanted_by.join(", "))
        }
    }
}

/// The unit a link target names (`/lib/systemd/system/ssh.service` -> `ssh.service`).
fn unit_of(target: &str) -> &str {
    target.rsplit('/').next().unwrap_or(target)
}

/// Scan the enablement links of the image once.
pub(crate) fn scan(view: &SystemView) -> Result<BTreeMap<String, UnitState>> {
    let mut map: BTreeMap<String, UnitState> = BTreeMap::new();
    let entries = match view.list(SYSTEM_UNIT_DIR) {
        Ok(e) => e,
        Err(crate::error::Error::Path(PathError::NotFound(_))) => return Ok(map),
        Err(e) => return Err(e),
    };
    for (name, st) in entries {
        match st.kind {
            FileType::Directory if name.ends_with(".wants") || name.ends_with(".requires") => {
                let owner = name
                    .rsplit_once('.')
                    .map_or(name.as_str(), |(o, _)| o)
                    .to_string();
                for (link, lst) in view.list(&format!("{SYSTEM_UNIT_DIR}/{name}"))? {
                    if lst.kind != FileType::Symlink {
                        continue;
                    }
                    // Template instances (getty@tty1.service -> getty@.service) are
                    // enabled under the instance name.
                    map.entry(link)
                        .or_insert_with(empty)
                        .wanted_by
                        .push(owner.clone());
                }
            }
            FileType::Symlink => {
                let target = st.target.unwrap_or_default();
                if target == "/dev/null" {
                    map.entry(name).or_insert_with(empty).masked = true;
                } else {
                    let unit = unit_of(&target).to_string();
                    if unit != name {
                        map.entry(unit).or_insert_with(empty).aliases.push(name);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(map)
}

fn empty() -> UnitState {
    UnitState {
        wanted_by: Vec::new(),
        masked: false,
        aliases: Vec::new(),
    }
}

/// Units whose state matters for a cluster node.
pub(crate) const UNITS_OF_INTEREST: &[&str] = &[
    "ssh.service",
    "NetworkManager.service",
    "NetworkManager-wait-online.service",
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
    "systemd-network-generator.service",
    "systemd-timesyncd.service",
    "userconfig.service",
    "getty@tty1.service",
    "dphys-swapfile.service",
    "rpi-resize.service",
    "cloud-init.service",
    "unattended-upgrades.service",
];
