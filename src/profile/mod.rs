//! Cluster and node profiles: TOML files that `extend` one another (deep
//! merge, cycles rejected), deserialised strictly (unknown keys are
//! errors) and validated before any image is touched.

pub(crate) mod sources;
mod validate;

pub use crate::value::{AddrRange, Ipv4Net, Mode, OwnerSpec};

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use sha2::Digest;

pub use validate::{validate, Finding};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {name:?} not found (looked for {tried}); pass a path to the .toml file, or the folder that holds your profiles with --profiles DIR (or RPIIMG_PROFILES)")]
    NotFound { name: String, tried: String },
    #[error("profile {name:?} is ambiguous: {} all match; pass one of them as a path", .found.join(" and "))]
    Ambiguous { name: String, found: Vec<String> },
    #[error("{file}: {msg}")]
    Invalid { file: String, msg: String },
    #[error("{file}: `extends` cycle: {chain}")]
    Cycle { file: String, chain: String },
}

fn invalid(file: &Path, msg: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        file: file.display().to_string(),
        msg: msg.into(),
    }
}

/// toml's message as one line: `why` (and `Some(field)` when toml names
/// it: it says `why` and then `in `field`` on a line of its own).
fn split_shape(e: &toml::de::Error) -> (Option<String>, String) {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.split_last() {
        Some((last, rest))
            if last.starts_with("in `") && last.ends_with('`') && !rest.is_empty() =>
        {
            (Some(last[4..last.len() - 1].to_string()), rest.join(" "))
        }
        _ => (None, lines.join(" ")),
    }
}

/// A value of the wrong shape (a typed field refusing it), as one line
/// that names the file that holds it (the profile itself or one it
/// extends), the entry (`cluster.nodes[3] (ost04)`), the field and the
/// value: `merged` is the profile with everything it extends.
fn shape_error(file: &Path, e: &toml::de::Error, merged: &toml::Table) -> ProfileError {
    let (field, why) = split_shape(e);
    let Some(field) = field else {
        return invalid(file, why);
    };
    let segs: Vec<&str> = field.split('.').collect();
    let (shown, value, array_at) = locate(merged, &segs, &field);
    let origin = origin_of(file, &segs, array_at);
    // The value, unless the message shows it already.
    let value = value
        .map(|v| v.to_string())
        .filter(|v| !why.contains(v.as_str()))
        .map(|v| format!(" = {v}"))
        .unwrap_or_default();
    let via = if origin.as_path() == file {
        String::new()
    } else {
        format!("; {} extends this file", file.display())
    };
    invalid(&origin, format!("{shown}{value}: {why}{via}"))
}

/// Where the field `segs` of `merged` went wrong, for people: its path
/// with the index (and name) of the array entry that fails, its value, and
/// how many segments lead to that array.
fn locate(
    merged: &toml::Table,
    segs: &[&str],
    field: &str,
) -> (String, Option<toml::Value>, Option<usize>) {
    let mut shown = String::new();
    let mut at: &toml::Table = merged;
    for (k, seg) in segs.iter().enumerate() {
        if !shown.is_empty() {
            shown.push('.');
        }
        shown.push_str(seg);
        let Some(v) = at.get(*seg) else {
            return (field.to_string(), None, None);
        };
        let last = k + 1 == segs.len();
        match v {
            toml::Value::Table(t) if !last => at = t,
            toml::Value::Array(items) if !last => {
                // The entry that fails alone is the one toml meant.
                let Some((i, t)) = items.iter().enumerate().find_map(|(i, item)| {
                    let t = item.as_table()?;
                    fails_alone(merged, &segs[..=k], item, field).then_some((i, t))
                }) else {
                    return (field.to_string(), None, None);
                };
                shown.push_str(&format!("[{i}]"));
                if let Some(name) = t
                    .get("hostname")
                    .or_else(|| t.get("name"))
                    .and_then(|n| n.as_str())
                {
                    shown.push_str(&format!(" ({name})"));
                }
                let (rest, value, _) = locate(t, &segs[k + 1..], field);
                return (format!("{shown}.{rest}"), value, Some(k + 1));
            }
            v if last => return (shown, Some(v.clone()), None),
            _ => return (field.to_string(), None, None),
        }
    }
    (shown, None, None)
}

/// Whether the profile fails at `field` when the array at `path` holds
/// only `item`.
fn fails_alone(merged: &toml::Table, path: &[&str], item: &toml::Value, field: &str) -> bool {
    let mut trial = merged.clone();
    let mut t = &mut trial;
    for (k, seg) in path.iter().enumerate() {
        let Some(v) = t.get_mut(*seg) else {
            return false;
        };
        if k + 1 == path.len() {
            *v = toml::Value::Array(vec![item.clone()]);
            break;
        }
        let Some(inner) = v.as_table_mut() else {
            return false;
        };
        t = inner;
    }
    toml::Value::Table(trial)
        .try_into::<Profile>()
        .is_err_and(|e| split_shape(&e).0.as_deref() == Some(field))
}

/// The file of `file`'s `extends` chain that sets the field `segs` (up
/// to the array at `array_at`, which a file replaces whole): the first,
/// from the profile up, whose own table has it.
fn origin_of(file: &Path, segs: &[&str], array_at: Option<usize>) -> PathBuf {
    let key = &segs[..array_at.unwrap_or(segs.len()).min(segs.len())];
    let mut at = file.to_path_buf();
    // read_table has followed this chain already: it ends, and is short.
    for _ in 0..16 {
        let Ok(text) = crate::hostfile::read_text(&at, None, crate::hostfile::TEXT_CAP) else {
            break;
        };
        let Ok(table) = text.parse::<toml::Table>() else {
            break;
        };
        let mut v: Option<&toml::Value> = None;
        let mut t = Some(&table);
        for seg in key {
            v = t.and_then(|t| t.get(*seg));
            t = v.and_then(toml::Value::as_table);
        }
        if v.is_some() {
            return at;
        }
        match table.get("extends").and_then(toml::Value::as_str) {
            Some(parent) => at = at.parent().unwrap_or(Path::new(".")).join(parent),
            None => break,
        }
    }
    file.to_path_buf()
}

/// A TOML syntax error as one line: `line L, column C: why`.
fn syntax_error(file: &Path, text: &str, e: &toml::de::Error) -> ProfileError {
    let at = e.span().map(|s| {
        let before = text.get(..s.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {col}: ")
    });
    invalid(
        file,
        format!(
            "{}{}; fix the TOML syntax there",
            at.unwrap_or_default(),
            e.message().trim()
        ),
    )
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// Pi OS Lite image, .img or .img.xz (relative to the profile's directory).
    pub image: PathBuf,
    pub sha256: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    #[serde(default = "default_out")]
    pub dir: PathBuf,
    #[serde(default)]
    pub xz: bool,
    #[serde(default = "yes")]
    pub bmap: bool,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            dir: default_out(),
            xz: false,
            bmap: true,
        }
    }
}

fn default_out() -> PathBuf {
    PathBuf::from("out")
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub hostname: String,
    /// Address of the node's network interface (veth0), without prefix.
    pub address: Ipv4Addr,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Explicit MAC addresses by interface; otherwise derived, stable.
    #[serde(default)]
    pub macs: BTreeMap<String, String>,
    /// The board model: "pi4" or "pi5" (absent: not said). A Pi 5 gets
    /// the 4 KiB-page kernel (see `plan::boot`), and Kolla settings follow
    /// the boards (ProxySQL, the libvirt CPU model).
    pub board: Option<Board>,
}

/// Raspberry Pi board models rpiimg knows apart.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Board {
    Pi4,
    Pi5,
}

impl std::fmt::Display for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Board::Pi4 => "Raspberry Pi 4",
            Board::Pi5 => "Raspberry Pi 5",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    /// CIDR, e.g. 192.168.10.0/24
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default)]
    pub ntp: Vec<String>,
    pub vip: Option<Ipv4Addr>,
    /// "first-last", e.g. 192.168.10.31-192.168.10.35
    pub floating_pool: Option<AddrRange>,
    #[serde(default)]
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// Plain text, hashed (SHA-512 crypt) when the plan is made; never stored or printed.
    pub password: Option<Secret>,
    /// A crypt(3) hash ($y$, $6$, $5$) used as is.
    pub password_hash: Option<Secret>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    #[serde(default)]
    pub sudo_nopasswd: bool,
    /// Home directory [default: /home/NAME]
    pub home: Option<String>,
    #[serde(default = "bash")]
    pub shell: String,
}

fn bash() -> String {
    "/bin/bash".into()
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    #[default]
    Flat,
    Vlan,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    pub ssid: String,
    pub psk: Secret,
    #[serde(default = "gb")]
    pub country: String,
}
fn gb() -> String {
    "GB".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub mode: NetMode,
    /// VLAN of the flat network on eth0 (vlan mode)
    pub flat_vlan: Option<u16>,
    /// Provider VLANs carried tagged on eth0 and veth1br (vlan mode)
    #[serde(default)]
    pub provider_vlans: Vec<u16>,
    /// Declared provider range "first-last", e.g. "101-200"
    pub provider_range: Option<crate::value::VlanRange>,
    /// Optional rescue Wi-Fi on wlan0 (DHCP)
    pub wifi: Option<Wifi>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firstboot {
    #[serde(default = "default_packages")]
    pub packages: Vec<String>,
    #[serde(default = "default_remove")]
    pub remove: Vec<String>,
    #[serde(default = "yes")]
    pub upgrade: bool,
    /// Extra shell commands run as root after the packages (e.g. stack.sh).
    #[serde(default)]
    pub commands: Vec<String>,
}

impl Default for Firstboot {
    fn default() -> Self {
        Firstboot {
            packages: default_packages(),
            remove: default_remove(),
            upgrade: true,
            commands: Vec::new(),
        }
    }
}

fn default_packages() -> Vec<String> {
    [
        "qemu-system-arm",
        "sshpass",
        "ufw",
        "net-tools",
        "lm-sensors",
        "netplan.io",
    ]
    .map(String::from)
    .to_vec()
}
fn default_remove() -> Vec<String> {
    vec!["unattended-upgrades".into()]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    #[serde(default = "yes")]
    pub enable: bool,
    #[serde(default = "yes")]
    pub password_authentication: bool,
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            enable: true,
            password_authentication: true,
        }
    }
}

/// An extra file for the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFile {
    pub path: String,
    /// Inline content (rendered as a template)...
    pub content: Option<String>,
    /// ...or a local file, relative to the profile's directory.
    pub source: Option<PathBuf>,
    #[serde(default = "mode644")]
    pub mode: Mode,
    /// `USER`, `USER:GROUP` or `UID:GID`, as the node's user database will
    /// have them [default: 0:0]
    #[serde(default = "OwnerSpec::root")]
    pub owner: OwnerSpec,
    /// The bytes of `source`, read when the profile is loaded
    /// ([`sources::read`]).
    #[serde(skip)]
    pub data: Option<Vec<u8>>,
}
fn mode644() -> Mode {
    Mode::RW_R_R
}

/// Kolla-Ansible settings for the management-host bundle (`rpiimg cluster`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kolla {
    /// OpenStack release: one of `crate::kolla::all()` ("2023.1",
    /// "2025.1", "2026.1"). Absent: the newest that accepts the base's OS.
    pub release: Option<String>,
    #[serde(default = "default_distro")]
    pub base_distro: String,
    /// A name for the internal VIP in the management host's /etc/hosts.
    pub vip_name: Option<String>,
    /// nova's virtualisation: "kvm" (the guide's choice, Kolla's default on
    /// aarch64) or "qemu" (emulation; Pi 4 only, per the guide).
    #[serde(default)]
    pub virt_type: VirtType,
}

/// How nova runs instances.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VirtType {
    #[default]
    Kvm,
    Qemu,
}

fn default_distro() -> String {
    "debian".into()
}

impl Default for Kolla {
    fn default() -> Self {
        Kolla {
            release: None,
            base_distro: default_distro(),
            vip_name: None,
            virt_type: VirtType::default(),
        }
    }
}

/// A fully resolved node profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Parent profile (resolved away when loading).
    #[serde(default, skip_serializing)]
    pub extends: Option<String>,
    /// Which node of the cluster this profile builds.
    pub hostname: String,
    #[serde(default)]
    pub base: Base,
    #[serde(default)]
    pub output: Output,
    pub cluster: Cluster,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub ssh: Ssh,
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    /// Swap size in MiB; absent keeps the image's setting.
    pub swap_mib: Option<u32>,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub firstboot: Firstboot,
    /// Free-form values for templates (e.g. DevStack passwords): secrets.
    #[serde(default)]
    pub vars: BTreeMap<String, Secret>,
    /// Extra overlay directories (relative to the profile's directory).
    #[serde(default)]
    pub overlays: Vec<PathBuf>,
    #[serde(default)]
    pub files: Vec<ExtraFile>,
    #[serde(default)]
    pub kolla: Kolla,
    /// Where the profile was read from (set by the loader).
    #[serde(skip)]
    pub source: PathBuf,
    /// The files of the overlay directories, read by the loader
    /// ([`sources::read`]).
    #[serde(skip)]
    pub overlay_files: Vec<sources::OverlayFile>,
    /// The management host's template overrides (`mgmt/<name>.j2` in an
    /// overlay directory, keyed by `<name>`; the first overlay that has one
    /// wins), read by the loader ([`sources::read`]) for `rpiimg cluster`.
    #[serde(skip)]
    pub mgmt_templates: std::collections::BTreeMap<String, String>,
    /// The cluster's secret from its key store (`crate::keystore`), set by
    /// the commands that plan; salts and host keys derive from it.
    #[serde(skip)]
    pub secret: Option<crate::keystore::ClusterSecret>,
    /// How often this node's SSH host keys were rotated (from the key store).
    #[serde(skip)]
    pub host_key_generation: u32,
}

impl Profile {
    /// The secret values the profile holds (given password hashes, the
    /// Wi-Fi key, `[vars]`), for the second net of redaction: a text that
    /// contains one is hidden even if planning could not tell it depends on
    /// it (see `plan::Redaction`, which decides by dependence). Values
    /// shorter than 4 characters are left out of this net only, as they
    /// would match everywhere; dependence covers them.
    pub(crate) fn secret_values(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        // Plain passwords never reach a file (only their hashes do, in
        // /etc/shadow); a hash given in the profile is a secret as given.
        for u in &self.users {
            v.extend(u.password_hash.iter().map(|h| h.expose().to_string()));
        }
        if let Some(w) = &self.network.wifi {
            v.push(w.psk.expose().to_string());
        }
        v.extend(self.vars.values().map(|s| s.expose().to_string()));
        v.retain(|s| s.chars().count() >= 4);
        v.sort();
        v.dedup();
        v
    }

    /// The profile with every secret replaced by a different value of the
    /// same kind: what `plan` plans a second time to find the file texts
    /// that depend on a secret. A given password hash keeps its scheme and
    /// salt (the part before the last `$`) so it stays a hash of its kind.
    pub(crate) fn with_placeholder_secrets(&self) -> Profile {
        let mut p = self.clone();
        for u in &mut p.users {
            u.password = u.password.as_ref().map(Secret::placeholder);
            u.password_hash = u.password_hash.as_ref().map(|h| {
                let h = h.expose();
                let cut = h.rfind('$').map_or(0, |i| i + 1);
                Secret::new(format!(
                    "{}{}",
                    &h[..cut],
                    crate::secret::other_like(&h[cut..])
                ))
            });
        }
        if let Some(w) = &mut p.network.wifi {
            w.psk = w.psk.placeholder();
        }
        for v in p.vars.values_mut() {
            *v = v.placeholder();
        }
        p
    }

    pub fn node(&self) -> Option<&Node> {
        self.cluster
            .nodes
            .iter()
            .find(|n| n.hostname == self.hostname)
    }
    /// The profile file's directory, for relative paths.
    pub fn dir(&self) -> &Path {
        self.source.parent().unwrap_or(Path::new("."))
    }
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir().join(p)
        }
    }
}

/// Stable, locally administered MAC for an interface of a node: the same
/// inputs always give the same address, different nodes never share one
/// (the lab's field failure: veth MACs derived from a cloned machine-id).
pub(crate) fn derived_mac(cluster: &str, host: &str, ifname: &str) -> String {
    let h = sha2::Sha256::digest(format!("rpiimg\0{cluster}\0{host}\0{ifname}").as_bytes());
    let b0 = (h[0] & 0xFC) | 0x02;
    format!(
        "{b0:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        h[1], h[2], h[3], h[4], h[5]
    )
}

pub(crate) const INTERFACES: &[&str] = &["veth0", "veth0br", "veth1", "veth1br", "brmux"];

impl Node {
    /// The MAC rpiimg gives `ifname` on this node: the profile's, else derived.
    pub(crate) fn mac(&self, cluster: &str, ifname: &str) -> String {
        self.macs
            .get(ifname)
            .map(|m| m.to_ascii_lowercase())
            .unwrap_or_else(|| derived_mac(cluster, &self.hostname, ifname))
    }
}

/// Where profile names are looked up: `--profiles DIR`, else
/// `RPIIMG_PROFILES`, else `profiles` in the current directory.
pub(crate) fn search_root(given: Option<&Path>) -> PathBuf {
    given.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::var_os("RPIIMG_PROFILES")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("profiles"), PathBuf::from)
    })
}

/// `--profile NAME` finds `ROOT/NAME.toml` or `ROOT/<folder>/NAME.toml`
/// (one folder per cluster; hidden folders such as the key store are
/// skipped), and exactly one of them; a path (with `/` or ending in
/// `.toml`) is used as is.
pub fn find(name: &str, root: &Path) -> Result<PathBuf, ProfileError> {
    let p = PathBuf::from(name);
    if name.contains('/') || name.ends_with(".toml") {
        // Anything that exists is handed to the loader, which refuses what
        // is not a regular file with that reason (a FIFO is not "missing").
        return if p.exists() {
            Ok(p)
        } else {
            Err(ProfileError::NotFound {
                name: name.into(),
                tried: p.display().to_string(),
            })
        };
    }
    let file = format!("{name}.toml");
    let mut found: Vec<PathBuf> = std::iter::once(root.join(&file))
        .chain(sub_folders(root).into_iter().map(|d| d.join(&file)))
        .filter(|c| c.exists())
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ProfileError::NotFound {
            name: name.into(),
            tried: format!(
                "{} and {}",
                root.join(&file).display(),
                root.join("*").join(&file).display()
            ),
        }),
        _ => Err(ProfileError::Ambiguous {
            name: name.into(),
            found: found.iter().map(|f| f.display().to_string()).collect(),
        }),
    }
}

/// The folders directly in `dir` (not hidden, not links: a profile tree
/// is walked without following links, so it cannot loop), sorted.
fn sub_folders(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Tables merge key by key; anything else in `over` replaces `base`.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn read_table(path: &Path, chain: &mut Vec<PathBuf>) -> Result<toml::Table, ProfileError> {
    let canon = path
        .canonicalize()
        .map_err(|e| invalid(path, e.to_string()))?;
    if chain.contains(&canon) {
        let mut names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        names.push(canon.display().to_string());
        return Err(ProfileError::Cycle {
            file: path.display().to_string(),
            chain: names.join(" -> "),
        });
    }
    chain.push(canon);
    // Bounded, regular files only: `extends = "/dev/zero"` is an error, not a hang.
    let text = crate::hostfile::read_text(path, None, crate::hostfile::TEXT_CAP)
        .map_err(|e| invalid(path, e))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| syntax_error(path, &text, &e))?;
    let Some(parent) = table.remove("extends") else {
        return Ok(table);
    };
    let toml::Value::String(parent) = parent else {
        return Err(invalid(path, "`extends` must be a file name"));
    };
    let ppath = path.parent().unwrap_or(Path::new(".")).join(&parent);
    let mut base = read_table(&ppath, chain)?;
    // Paths in the parent are relative to the parent's directory.
    rebase_paths(
        &mut base,
        ppath.parent().unwrap_or(Path::new(".")),
        path.parent().unwrap_or(Path::new(".")),
    );
    merge(&mut base, table);
    Ok(base)
}

/// Rewrite the path-valued keys of a parent table so they stay correct
/// when read relative to the child's directory.
fn rebase_paths(t: &mut toml::Table, from: &Path, to: &Path) {
    if from == to {
        return;
    }
    let fix = |v: &mut toml::Value| {
        if let toml::Value::String(s) = v {
            let p = Path::new(s.as_str());
            if p.is_relative() {
                let abs = from.join(p);
                *s = pathdiff(&abs, to).display().to_string();
            }
        }
    };
    if let Some(toml::Value::Table(b)) = t.get_mut("base") {
        if let Some(v) = b.get_mut("image") {
            fix(v);
        }
    }
    if let Some(toml::Value::Table(o)) = t.get_mut("output") {
        if let Some(v) = o.get_mut("dir") {
            fix(v);
        }
    }
    if let Some(toml::Value::Array(a)) = t.get_mut("overlays") {
        a.iter_mut().for_each(fix);
    }
    if let Some(toml::Value::Array(files)) = t.get_mut("files") {
        for f in files {
            if let toml::Value::Table(ft) = f {
                if let Some(v) = ft.get_mut("source") {
                    fix(v);
                }
            }
        }
    }
}

/// `abs` relative to `base` when both are relative to the same root.
fn pathdiff(abs: &Path, base: &Path) -> PathBuf {
    let a: Vec<_> = abs.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &a[common..] {
        out.push(c);
    }
    out
}

/// Load a cluster profile (or a node profile, for its cluster). A cluster
/// file names no node: the first node stands in so the profile types and
/// validation apply unchanged.
pub fn load_cluster(path: &Path) -> Result<Profile, ProfileError> {
    let mut table = read_table(path, &mut Vec::new())?;
    if !table.contains_key("hostname") {
        let first = table
            .get("cluster")
            .and_then(|c| c.get("nodes"))
            .and_then(|n| n.as_array())
            .and_then(|n| n.first())
            .and_then(|n| n.get("hostname"))
            .cloned()
            .ok_or_else(|| invalid(path, "cluster.nodes: the cluster has no nodes"))?;
        table.insert("hostname".into(), first);
    }
    let mut p: Profile = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| shape_error(path, &e, &table))?;
    p.source = path.to_path_buf();
    sources::read(&mut p)?;
    Ok(p)
}

/// Load a node profile with everything it extends.
pub fn load(path: &Path) -> Result<Profile, ProfileError> {
    let table = read_table(path, &mut Vec::new())?;
    let mut p: Profile = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| shape_error(path, &e, &table))?;
    p.source = path.to_path_buf();
    sources::read(&mut p)?;
    Ok(p)
}

/// How many folder levels `load_dir` looks into.
const MAX_DEPTH: usize = 4;

/// Every node profile in a directory and its folders (files whose
/// resolved profile names a `hostname`), sorted by path; cluster files
/// without one are skipped.
pub fn load_dir(dir: &Path) -> Result<Vec<Profile>, ProfileError> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = Vec::new();
    // DIR and its folders, as deep as profile trees go (one folder per
    // cluster, maybe one per site above it), never following links.
    let mut level = vec![dir.to_path_buf()];
    for depth in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for d in &level {
            let rd = std::fs::read_dir(d);
            let rd = match rd {
                Ok(rd) => rd,
                Err(e) if depth == 0 => {
                    return Err(invalid(d, format!("cannot read the folder: {e}")))
                }
                Err(_) => continue,
            };
            entries.extend(
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml")),
            );
            next.extend(sub_folders(d));
        }
        level = next;
    }
    entries.sort();
    for p in entries {
        let table = read_table(&p, &mut Vec::new())?;
        if table.contains_key("hostname") {
            out.push(load(&p)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_deep() {
        let mut a: toml::Table = "x = 1\n[t]\na = 1\nb = 2\n".parse().unwrap();
        let b: toml::Table = "[t]\nb = 3\nc = 4\n".parse().unwrap();
        merge(&mut a, b);
        assert_eq!(a["t"]["a"].as_integer(), Some(1));
        assert_eq!(a["t"]["b"].as_integer(), Some(3));
        assert_eq!(a["t"]["c"].as_integer(), Some(4));
        assert_eq!(a["x"].as_integer(), Some(1));
    }

    #[test]
    fn extends_cycles_and_unknown_keys_are_rejected() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.toml"),
            "extends = \"b.toml\"\nhostname = \"x\"\n",
        )
        .unwrap();
        std::fs::write(d.path().join("b.toml"), "extends = \"a.toml\"\n").unwrap();
        let e = load(&d.path().join("a.toml")).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        std::fs::write(
            d.path().join("c.toml"),
            "hostname = \"x\"\nswapp_mib = 3\n[cluster]\nname=\"c\"\nsubnet=\"10.0.0.0/24\"\ngateway=\"10.0.0.1\"\n",
        )
        .unwrap();
        let e = load(&d.path().join("c.toml")).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("swapp_mib"), "{e}");
        // A value of the wrong shape: one line naming the field.
        std::fs::write(
            d.path().join("e.toml"),
            "hostname = \"x\"\n[cluster]\nname=\"c\"\nsubnet=\"10.0.0.0\"\ngateway=\"10.0.0.1\"\n",
        )
        .unwrap();
        let e = load(&d.path().join("e.toml")).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "e.toml: cluster.subnet: \"10.0.0.0\" is not an IPv4 CIDR like 192.168.10.0/24"
            ),
            "{e}"
        );
        // A bad value in a file the profile extends: that file, the node
        // and the value are named.
        std::fs::write(
            d.path().join("parent.toml"),
            "[cluster]\nname=\"c\"\nsubnet=\"10.0.0.0/24\"\ngateway=\"10.0.0.1\"\n[[cluster.nodes]]\nhostname=\"n1\"\naddress=\"10.0.0.2\"\n[[cluster.nodes]]\nhostname=\"n2\"\naddress=\"10.0.0.324\"\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("child.toml"),
            "extends = \"parent.toml\"\nhostname = \"n1\"\n",
        )
        .unwrap();
        let e = load(&d.path().join("child.toml")).unwrap_err().to_string();
        assert!(
            e.contains("parent.toml: cluster.nodes[1] (n2).address = \"10.0.0.324\": invalid IPv4 address syntax; ")
                && e.ends_with("child.toml extends this file"),
            "{e}"
        );
        // A syntax error: one line, with its line and column.
        std::fs::write(d.path().join("s.toml"), "hostname = \"x\"\nx = [\n").unwrap();
        let e = load(&d.path().join("s.toml")).unwrap_err().to_string();
        assert!(
            !e.contains('\n') && e.contains("s.toml: line 2, column 6: unclosed array"),
            "{e}"
        );
    }

    #[test]
    fn parent_paths_stay_relative_to_the_parent() {
        assert_eq!(
            pathdiff(Path::new("a/demo/base.img"), Path::new("a/profiles")),
            PathBuf::from("../demo/base.img")
        );
    }

    /// The example profiles load, validate without errors, and warn exactly
    /// where the guide does.
    #[test]
    fn example_profiles_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let all = load_dir(&dir).unwrap();
        assert_eq!(
            all.len(),
            9,
            "{:?}",
            all.iter().map(|p| &p.source).collect::<Vec<_>>()
        );
        for p in all {
            let found = validate(&p);
            assert!(
                found.iter().all(|f| !f.error),
                "{}: {found:?}",
                p.source.display()
            );
            let warned: Vec<&str> = found.iter().map(|f| f.key.as_str()).collect();
            let want: &[&str] = match p.hostname.as_str() {
                "ost03" => &["cluster.nodes[2].roles"],
                "devstack" => &["cluster.nodes[0].roles"],
                _ => &[],
            };
            assert_eq!(warned, want, "{}", p.source.display());
            if p.node()
                .is_some_and(|n| n.roles.iter().any(|r| r == "control"))
            {
                assert!(p.swap_mib >= Some(4096), "{}", p.source.display());
            }
        }
    }
}
