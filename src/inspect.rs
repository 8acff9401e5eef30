//! `rpiimg inspect`: what an image is and what it contains, as a report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::error::Result;
use crate::ext4::JournalState;
use crate::fs::view::{Probe, SystemView};
use crate::image::OpenedImage;
use crate::os::{release, units, users};
use crate::partition::{PartitionTable, TableKind};
use crate::progress::human_bytes;

#[derive(Debug, Serialize)]
pub struct Report {
    pub image: ImageInfo,
    pub partition_table: PartitionTable,
    pub filesystems: Vec<FsInfo>,
    pub os: OsInfo,
    pub hostname: Option<String>,
    pub users: Vec<UserInfo>,
    pub units: BTreeMap<String, String>,
    pub ssh: SshInfo,
    pub swap: SwapInfo,
    pub machine_id: MachineIdInfo,
    pub cmdline: Option<String>,
    pub mounts: Vec<MountInfo>,
}

#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub path: String,
    pub format: &'static str,
    pub size: u64,
    pub sha256: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FsInfo {
    pub partition: u32,
    #[serde(flatten)]
    pub probe: Probe,
    pub size: u64,
    pub free: u64,
    pub features: Vec<String>,
    pub state: String,
}

#[derive(Debug, Serialize)]
pub struct OsInfo {
    pub family: &'static str,
    pub id: String,
    pub codename: String,
    pub pretty_name: String,
}

#[derive(Debug, Serialize)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    pub password: users::PasswordState,
}

#[derive(Debug, Serialize)]
pub struct SshInfo {
    pub enabled: bool,
    pub bootfs_marker: bool,
    pub password_authentication: Option<String>,
    /// The private key files sshd loads (HostKey lines, else its defaults).
    pub host_keys: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SwapInfo {
    pub mechanism: String,
    pub size_mib: Option<u64>,
    pub max_mib: Option<u64>,
    pub config: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MachineIdInfo {
    /// `missing`, `empty`, `uninitialized` or `set`.
    pub state: &'static str,
    pub dbus_machine_id: bool,
}

#[derive(Debug, Serialize)]
pub struct MountInfo {
    pub mount_point: String,
    pub partition: u32,
}

/// Value of `KEY=value` in a shell-style config, ignoring commented lines.
fn shell_var(text: &str, key: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let l = l.trim();
        let v = l.strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

/// Value of `Key=value` in an ini section (last one wins, as systemd-style parsers do).
fn ini_var(text: &str, section: &str, key: &str) -> Option<String> {
    let mut cur = String::new();
    let mut found = None;
    for l in text.lines() {
        let l = l.trim();
        if l.starts_with('[') && l.ends_with(']') {
            cur = l[1..l.len() - 1].to_string();
        } else if cur == section {
            if let Some((k, v)) = l.split_once('=') {
                if k.trim() == key {
                    found = Some(v.trim().to_string());
                }
            }
        }
    }
    found
}

fn swap_info(view: &SystemView) -> Result<SwapInfo> {
    if let Some(t) = view.read_text_opt("/etc/dphys-swapfile")? {
        return Ok(SwapInfo {
            mechanism: "dphys-swapfile".into(),
            size_mib: shell_var(&t, "CONF_SWAPSIZE").and_then(|v| v.parse().ok()),
            max_mib: shell_var(&t, "CONF_MAXSWAP").and_then(|v| v.parse().ok()),
            config: Some("/etc/dphys-swapfile".into()),
        });
    }
    if let Some(base) = view.read_text_opt("/etc/rpi/swap.conf")? {
        // Drop-ins override the main file in name order.
        let mut text = base;
        let mut config = "/etc/rpi/swap.conf".to_string();
        if let Some(list) = view.list_opt("/etc/rpi/swap.conf.d")? {
            for (name, _) in list.into_iter().filter(|(n, _)| n.ends_with(".conf")) {
                let p = format!("/etc/rpi/swap.conf.d/{name}");
                if let Some(t) = view.read_text_opt(&p)? {
                    text.push('\n');
                    text.push_str(&t);
                    config = p;
                }
            }
        }
        return Ok(SwapInfo {
            mechanism: format!(
                "rpi-swap ({})",
                ini_var(&text, "Main", "Mechanism").unwrap_or_else(|| "auto".into())
            ),
            size_mib: ini_var(&text, "File", "FixedSizeMiB").and_then(|v| v.parse().ok()),
            max_mib: ini_var(&text, "File", "MaxSizeMiB").and_then(|v| v.parse().ok()),
            config: Some(config),
        });
    }
    Ok(SwapInfo {
        mechanism: "none found".into(),
        size_mib: None,
        max_mib: None,
        config: None,
    })
}

/// Gather the report for an opened image.
pub fn inspect(img: &OpenedImage, table: &PartitionTable) -> Result<Report> {
    let (view, probes) = SystemView::open(img, table)?;
    // Read in this order so that, on a damaged image, the first damage met
    // is the one reported, as before the split.
    let filesystems = filesystems(&view, probes)?;
    let os = os_info(&view)?;
    let hostname = view
        .read_text_opt("/etc/hostname")?
        .map(|h| h.trim().to_string());
    let users = users_info(&view)?;
    let all_units = units::scan(&view)?;
    let units = units_info(&view, &all_units)?;
    let ssh = ssh_info(&view, &all_units)?;
    let machine_id = machine_id(&view)?;
    let cmdline = view
        .read_text_opt("/boot/firmware/cmdline.txt")?
        .map(|t| t.trim().to_string());
    let mounts = view
        .mounts()
        .iter()
        .map(|m| MountInfo {
            mount_point: m.point.clone(),
            partition: m.part,
        })
        .collect();
    Ok(Report {
        image: ImageInfo {
            path: img.input.display().to_string(),
            format: if img.compressed { "xz" } else { "raw" },
            size: img.size,
            sha256: img.input_sha256.clone(),
        },
        partition_table: table.clone(),
        filesystems,
        os,
        hostname,
        users,
        units,
        ssh,
        swap: swap_info(&view)?,
        machine_id,
        cmdline,
        mounts,
    })
}

/// Size, free space, features and state of each filesystem found.
fn filesystems(view: &SystemView, probes: Vec<(u32, Probe)>) -> Result<Vec<FsInfo>> {
    let mut filesystems = Vec::new();
    for (n, probe) in probes {
        let (size, free, features, state) = match &probe {
            Probe::Ext4 { .. } if n == view.root_partition() => ext4_info(view)?,
            Probe::Vfat { .. } => match view.mounts().iter().find(|m| m.part == n) {
                Some(m) => {
                    let (t, f) = m.fat.space().map_err(|e| crate::error::Error::Fat {
                        part: n,
                        detail: e.to_string(),
                    })?;
                    (
                        t,
                        f,
                        vec![m.fat.fat_type().to_string()],
                        format!("mounted at {}", m.point),
                    )
                }
                None => (0, 0, vec![], "not in fstab".into()),
            },
            _ => (0, 0, vec![], String::new()),
        };
        filesystems.push(FsInfo {
            partition: n,
            probe,
            size,
            free,
            features,
            state,
        });
    }
    Ok(filesystems)
}

/// The root filesystem's (size, free, features, state line).
fn ext4_info(view: &SystemView) -> Result<(u64, u64, Vec<String>, String)> {
    let fs = view.ext4();
    let sb = fs.superblock();
    let bs = sb.block_size() as u64;
    let journal = match fs.journal_state()? {
        JournalState::None => "no journal",
        JournalState::Clean => "journal clean",
        JournalState::NeedsRecovery => "journal needs recovery",
    };
    let clean = if sb.state() & crate::ext4::superblock::STATE_ERROR != 0 {
        "errors recorded"
    } else if sb.state() & crate::ext4::superblock::STATE_VALID != 0 {
        "clean"
    } else {
        "not clean"
    };
    let hash = if sb.unsigned_hash() {
        "unsigned directory hash"
    } else {
        "signed directory hash"
    };
    Ok((
        sb.blocks_count() * bs,
        sb.free_blocks_count() * bs,
        sb.features().names(),
        format!("{clean}, {journal}, {hash}"),
    ))
}

fn os_info(view: &SystemView) -> Result<OsInfo> {
    let rel = release::parse(&view.read_text_opt("/etc/os-release")?.unwrap_or_default());
    Ok(OsInfo {
        family: release::family(&rel, view.exists("/etc/rpi-issue")?),
        id: rel.id.clone(),
        codename: rel.version_codename.clone(),
        pretty_name: rel.pretty_name.clone(),
    })
}

/// root and the regular users (uids 1000-59999), with their password state.
fn users_info(view: &SystemView) -> Result<Vec<UserInfo>> {
    let passwd = users::parse_passwd(&view.read_text_opt("/etc/passwd")?.unwrap_or_default());
    let shadow = users::shadow_passwords(&view.read_text_opt("/etc/shadow")?.unwrap_or_default());
    Ok(passwd
        .into_iter()
        .filter(|u| u.uid == 0 || (1000..60000).contains(&u.uid))
        .map(|u| {
            let pw = shadow
                .iter()
                .find(|(n, _)| *n == u.name)
                .map(|(_, p)| p.as_str());
            UserInfo {
                password: users::password_state(pw),
                name: u.name,
                uid: u.uid,
                gid: u.gid,
                home: u.home,
                shell: u.shell,
            }
        })
        .collect())
}

/// The state of the units a Pi OS node's first boot depends on.
fn units_info(
    view: &SystemView,
    all_units: &BTreeMap<String, units::UnitState>,
) -> Result<BTreeMap<String, String>> {
    let mut units = BTreeMap::new();
    for u in units::UNITS_OF_INTEREST {
        if all_units.contains_key(*u)
            || view.exists(&format!("/lib/systemd/system/{u}"))?
            || u.contains('@')
        {
            let state = all_units
                .get(*u)
                .map_or_else(|| "disabled".to_string(), |s| s.summary());
            units.insert(u.to_string(), state);
        }
    }

    Ok(units)
}

/// Whether sshd runs and lets passwords in, and which host keys it
/// serves, as sshd would read its files.
fn ssh_info(view: &SystemView, all_units: &BTreeMap<String, units::UnitState>) -> Result<SshInfo> {
    let cfg = crate::os::sshd::SshdConfig::read(view)?;
    let pw_auth = cfg.first("PasswordAuthentication").map(|s| s.value.clone());
    Ok(SshInfo {
        enabled: all_units
            .get("ssh.service")
            .is_some_and(|s| !s.wanted_by.is_empty() && !s.masked),
        bootfs_marker: view.exists("/boot/firmware/ssh")?
            || view.exists("/boot/firmware/ssh.txt")?,
        password_authentication: Some(pw_auth.unwrap_or_else(|| "yes (default)".into())),
        host_keys: cfg.host_keys(),
    })
}

fn machine_id(view: &SystemView) -> Result<MachineIdInfo> {
    Ok(MachineIdInfo {
        state: match view.read_text_opt("/etc/machine-id")? {
            None => "missing",
            Some(t) if t.trim().is_empty() => "empty",
            Some(t) if t.trim() == "uninitialized" => "uninitialized",
            Some(_) => "set",
        },
        dbus_machine_id: view.exists("/var/lib/dbus/machine-id")?,
    })
}

impl Report {
    /// The human-readable form.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Image        {} ({}, {})",
            self.image.path,
            self.image.format,
            human_bytes(self.image.size)
        );
        if let Some(h) = &self.image.sha256 {
            let _ = writeln!(s, "sha256       {h}");
        }
        let kind = match self.partition_table.kind {
            TableKind::Mbr => "MBR (dos)",
            TableKind::Gpt => "GPT",
        };
        let _ = writeln!(
            s,
            "Partitions   {kind}, disk identifier {}",
            self.partition_table.disk_id
        );
        for p in &self.partition_table.partitions {
            let _ = writeln!(
                s,
                "  p{}  start {:>9}  sectors {:>9}  {:>10}  {} {}  PARTUUID={}",
                p.number,
                p.start_sector,
                p.sectors,
                human_bytes(p.size()),
                p.type_id,
                p.type_name,
                p.partuuid
            );
        }
        for w in &self.partition_table.problems {
            let _ = writeln!(s, "  WARNING: {w}; rpiimg will not write to this image");
        }
        for w in &self.partition_table.warnings {
            let _ = writeln!(s, "  WARNING: {w}");
        }
        let _ = writeln!(s, "Filesystems");
        for f in &self.filesystems {
            let (ty, label, uuid) = match &f.probe {
                Probe::Ext4 { label, uuid } => ("ext4", label.as_str(), uuid.as_str()),
                Probe::Vfat { label, uuid } => ("vfat", label.as_str(), uuid.as_str()),
                Probe::Unknown => ("unknown", "", ""),
            };
            let _ = writeln!(
                s,
                "  p{}  {ty:<5} label \"{label}\"  UUID {uuid}  size {}  free {}  {}",
                f.partition,
                human_bytes(f.size),
                human_bytes(f.free),
                f.state
            );
            if !f.features.is_empty() {
                let _ = writeln!(s, "       features: {}", f.features.join(" "));
            }
        }
        let _ = writeln!(
            s,
            "OS           {} ({}, {}) {}",
            self.os.family, self.os.id, self.os.codename, self.os.pretty_name
        );
        let _ = writeln!(
            s,
            "Hostname     {}",
            self.hostname.as_deref().unwrap_or("(none)")
        );
        let _ = writeln!(s, "Users");
        for u in &self.users {
            let pw = match &u.password {
                users::PasswordState::Locked => "locked".to_string(),
                users::PasswordState::Empty => "EMPTY (no password)".to_string(),
                users::PasswordState::Set(k) => format!("set ({k})"),
                users::PasswordState::Missing => "no shadow entry".to_string(),
            };
            let _ = writeln!(
                s,
                "  {:<12} uid {:<5} gid {:<5} {} {}  password {pw}",
                u.name, u.uid, u.gid, u.home, u.shell
            );
        }
        let _ = writeln!(s, "Units");
        for (u, st) in &self.units {
            let _ = writeln!(s, "  {u:<38} {st}");
        }
        let _ = writeln!(
            s,
            "SSH          {}; bootfs marker {}; PasswordAuthentication {}",
            if self.ssh.enabled {
                "enabled"
            } else {
                "disabled"
            },
            if self.ssh.bootfs_marker {
                "present"
            } else {
                "absent"
            },
            self.ssh.password_authentication.as_deref().unwrap_or("?")
        );
        let _ = writeln!(s, "SSH keys     {}", self.ssh.host_keys.join(" "));
        let size = self
            .swap
            .size_mib
            .map_or("default".to_string(), |v| format!("{v} MiB"));
        let max = self
            .swap
            .max_mib
            .map_or("default".to_string(), |v| format!("{v} MiB"));
        let _ = writeln!(
            s,
            "Swap         {}: size {size}, max {max}",
            self.swap.mechanism
        );
        let _ = writeln!(
            s,
            "machine-id   {}{}",
            self.machine_id.state,
            if self.machine_id.dbus_machine_id {
                "; /var/lib/dbus/machine-id present"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "cmdline      {}",
            self.cmdline
                .as_deref()
                .unwrap_or("(no /boot/firmware/cmdline.txt)")
        );
        // Every field is one line of image-derived text: escaped for the
        // terminal (`--json` keeps it exact).
        crate::term::escape_lines(&s)
    }
}
