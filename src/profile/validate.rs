//! Validation of a resolved profile, before any I/O on images. Every
//! finding names the profile file and the key.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::secret::Secret;

use super::{Cluster, ExtraFile, Kolla, NetMode, Network, Profile, User, INTERFACES};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub error: bool,
    pub key: String,
    pub msg: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.msg)
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

fn valid_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
}

fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 32
        && u.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Debian policy 5.6.1; the names go unquoted into the first-boot script.
fn valid_package(s: &str) -> bool {
    s.len() >= 2
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn err(&mut self, key: String, msg: String) {
        self.0.push(Finding {
            error: true,
            key,
            msg,
        });
    }
    fn warn(&mut self, key: String, msg: String) {
        self.0.push(Finding {
            error: false,
            key,
            msg,
        });
    }
}

/// Characters that end or break a line somewhere: control characters
/// (CR, VT, FF, ESC, ...; systemd-sysctl splits on CR), NEL, and the
/// Unicode line and paragraph separators (YAML line breaks).
fn breaks_lines(c: char) -> bool {
    c.is_control() || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// One rule for every string of the profile that reaches a template or a
/// line-based file: no line terminator or control character. Only a
/// file's own `content` may span lines.
fn line_safe_strings(v: &serde_json::Value, key: &str, f: &mut Findings) {
    match v {
        serde_json::Value::String(s) => {
            if let Some(c) = s.chars().find(|&c| breaks_lines(c)) {
                f.err(
                    key.to_string(),
                    format!(
                        "contains the control or line-break character U+{:04X}, which would start a new line (or key) in the files it is written to; remove it",
                        u32::from(c)
                    ),
                );
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                line_safe_strings(x, &format!("{key}[{i}]"), f);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                if k == "content" && key.starts_with("files[") {
                    continue;
                }
                if let Some(c) = k.chars().find(|&c| breaks_lines(c)) {
                    f.err(
                        key.to_string(),
                        format!(
                            "a key contains the control or line-break character U+{:04X}",
                            u32::from(c)
                        ),
                    );
                }
                let sub = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                line_safe_strings(x, &sub, f);
            }
        }
        _ => {}
    }
}

/// Errors and warnings; the profile may be used only when there is no
/// error. The typed fields (`profile::types`: modes, owners, subnets,
/// address and VLAN ranges) never get here with the wrong shape: they are
/// refused when the profile is read. What is left: the rules across fields,
/// by topic, and the shape of the names kept as plain strings (host, user
/// and package names, MACs, sysctl keys), checked here so that every bad
/// one is reported at once, each with its key.
pub fn validate(p: &Profile) -> Vec<Finding> {
    let mut f = Findings::default();
    // Secrets too: they are written into the same files.
    if let Ok(v) = crate::secret::reveal(|| serde_json::to_value(p)) {
        line_safe_strings(&v, "", &mut f);
    }
    identity(p, &mut f);
    let addrs = nodes(p, &mut f);
    addresses(&p.cluster, &addrs, &mut f);
    kolla(&p.kolla, &p.cluster.nodes, &mut f);
    network(&p.network, &mut f);
    users(&p.users, &mut f);
    system(p, &mut f);
    files(&p.files, &mut f);
    f.0
}

/// The node being built: a valid host name, one of the cluster's nodes.
fn identity(p: &Profile, f: &mut Findings) {
    let c = &p.cluster;
    if !valid_hostname(&p.hostname) {
        f.err(
            "hostname".into(),
            format!(
                "{:?} is not a valid host name (letters, digits, '-', at most 63)",
                p.hostname
            ),
        );
    }
    if p.node().is_none() {
        f.err(
            "hostname".into(),
            format!(
                "{:?} is not one of the cluster's nodes ({})",
                p.hostname,
                c.nodes
                    .iter()
                    .map(|n| n.hostname.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
}

/// Each node of the cluster, and what no two may share (host names,
/// addresses, MACs given or derived). Returns the node addresses, for
/// [`addresses`].
fn nodes(p: &Profile, f: &mut Findings) -> BTreeMap<Ipv4Addr, usize> {
    let c = &p.cluster;
    let inside = |ip: Ipv4Addr| c.subnet.contains(ip);
    let mut hosts = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    let mut macs = BTreeMap::new();
    for (i, n) in c.nodes.iter().enumerate() {
        let key = format!("cluster.nodes[{i}]");
        if !valid_hostname(&n.hostname) {
            f.err(
                format!("{key}.hostname"),
                format!("{:?} is not a valid host name", n.hostname),
            );
        }
        if let Some(j) = hosts.insert(n.hostname.clone(), i) {
            f.err(
                format!("{key}.hostname"),
                format!("{} is also used by cluster.nodes[{j}]", n.hostname),
            );
        }
        if let Some(j) = addrs.insert(n.address, i) {
            f.err(
                format!("{key}.address"),
                format!("{} is also used by cluster.nodes[{j}]", n.address),
            );
        }
        if !inside(n.address) {
            f.err(
                format!("{key}.address"),
                format!("{} is outside the subnet {}", n.address, c.subnet),
            );
        }
        if n.address == c.gateway {
            f.err(
                format!("{key}.address"),
                format!("{} is the gateway's address", n.address),
            );
        }
        node_macs(c, n, &key, &mut macs, f);
        let has = |r: &str| n.roles.iter().any(|x| x == r);
        // Only the node being built: the others get their warning in their own plan.
        if has("compute") && has("network") && n.hostname == p.hostname {
            f.warn(
                format!("{key}.roles"),
                format!("{} has both compute and network roles; the guide advises against it on 8 GB boards", n.hostname),
            );
        }
        for r in &n.roles {
            if ![
                "control",
                "compute",
                "network",
                "monitoring",
                "storage",
                "deployment",
            ]
            .contains(&r.as_str())
            {
                f.err(format!("{key}.roles"), format!("unknown Kolla role {r:?}"));
            }
        }
    }
    addrs
}

/// A node's MACs: only for the interfaces rpiimg names, unicast, and
/// (given or derived) unique across the cluster (`seen`: MAC -> key).
fn node_macs(
    c: &Cluster,
    n: &super::Node,
    key: &str,
    seen: &mut BTreeMap<String, String>,
    f: &mut Findings,
) {
    for (ifname, m) in &n.macs {
        let k = format!("{key}.macs.{ifname}");
        if !INTERFACES.contains(&ifname.as_str()) {
            f.err(
                k.clone(),
                format!(
                    "rpiimg sets the MACs of {} only; remove {ifname}",
                    INTERFACES.join(", ")
                ),
            );
        }
        if !valid_mac(m) {
            f.err(
                k,
                format!("{m:?} is not a MAC address like 02:00:00:00:00:01"),
            );
        } else if u8::from_str_radix(&m[..2], 16).is_ok_and(|b| b & 1 == 1) {
            f.err(
                k,
                format!("{m} is a multicast address; use a unicast one such as 02:..."),
            );
        }
    }
    // Every MAC a node will carry, given or derived: no two may match.
    for ifname in INTERFACES {
        let m = n.mac(&c.name, ifname);
        let k = if n.macs.contains_key(*ifname) {
            format!("{key}.macs.{ifname}")
        } else {
            format!("{key} {ifname} (derived)")
        };
        if let Some(other) = seen.insert(m.clone(), k.clone()) {
            f.err(k, format!("{m} is also used by {other}"));
        }
    }
}

/// The gateway, floating pool and VIP: inside the subnet, apart from one
/// another and from the node addresses.
fn addresses(c: &Cluster, addrs: &BTreeMap<Ipv4Addr, usize>, f: &mut Findings) {
    let inside = |ip: Ipv4Addr| c.subnet.contains(ip);
    if !inside(c.gateway) {
        f.err(
            "cluster.gateway".into(),
            format!("{} is outside the subnet {}", c.gateway, c.subnet),
        );
    }
    let pool = c.floating_pool;
    let in_pool = |ip: Ipv4Addr| pool.is_some_and(|r| r.contains(ip));
    if let Some(crate::profile::AddrRange { first: a, last: b }) = pool {
        if !inside(a) || !inside(b) {
            f.err(
                "cluster.floating_pool".into(),
                format!("{a}-{b} is not inside the subnet {}", c.subnet),
            );
        }
        for (ip, i) in addrs {
            if in_pool(*ip) {
                f.err(
                    format!("cluster.nodes[{i}].address"),
                    format!("{ip} lies in the floating pool {a}-{b}"),
                );
            }
        }
        if in_pool(c.gateway) {
            f.err(
                "cluster.floating_pool".into(),
                format!("contains the gateway {}", c.gateway),
            );
        }
    }
    if let Some(vip) = c.vip {
        if !inside(vip) {
            f.err(
                "cluster.vip".into(),
                format!("{vip} is outside the subnet {}", c.subnet),
            );
        }
        if let Some(i) = addrs.get(&vip) {
            f.err(
                "cluster.vip".into(),
                format!("{vip} is also cluster.nodes[{i}].address"),
            );
        }
        if in_pool(vip) {
            f.err(
                "cluster.vip".into(),
                format!("{vip} lies in the floating pool"),
            );
        }
        if vip == c.gateway {
            f.err("cluster.vip".into(), format!("{vip} is the gateway"));
        }
    }
}

/// A name that is safe as one component of a host path.
fn is_path_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The management host's Kolla-Ansible settings.
fn kolla(k: &Kolla, nodes: &[crate::profile::Node], f: &mut Findings) {
    // The guide (seed 000, sections 1 and 5): qemu emulation fails on a
    // Pi 5, whose Cortex-A76 CPU model Kolla's libvirt does not support.
    if k.virt_type == crate::profile::VirtType::Qemu {
        for (i, n) in nodes.iter().enumerate() {
            if n.board == Some(crate::profile::Board::Pi5) && n.roles.iter().any(|r| r == "compute")
            {
                f.err(
                    format!("cluster.nodes[{i}]"),
                    format!(
                        "{} is a Raspberry Pi 5 compute node and kolla.virt_type is \"qemu\": qemu emulation does not work on a Pi 5 (libvirt in Kolla's images has no cortex-a76 CPU model, per the guide); use virt_type = \"kvm\"",
                        n.hostname
                    ),
                );
            }
        }
    }
    if let Some(r) = &k.release {
        if crate::kolla::by_series(r).is_none() {
            f.err(
                "kolla.release".into(),
                format!(
                    "{r:?}: rpiimg writes Kolla-Ansible files for the releases {} (leave it out for the newest that accepts the base's OS)",
                    crate::kolla::series_list()
                ),
            );
        }
    }
    if let Some(n) = &k.vip_name {
        if !valid_hostname(n) {
            f.err(
                "kolla.vip_name".into(),
                format!("{n:?} is not a valid host name (letters, digits, '-', at most 63)"),
            );
        }
    }
    if !["debian", "ubuntu", "rocky", "centos"].contains(&k.base_distro.as_str()) {
        f.err(
            "kolla.base_distro".into(),
            format!(
                "{:?}: Kolla-Ansible knows debian, ubuntu, rocky and centos",
                k.base_distro
            ),
        );
    }
}

/// VLAN ids and ranges, the mode's needs, and Wi-Fi.
fn network(net: &Network, f: &mut Findings) {
    let mut vlans: Vec<(String, u16)> = net
        .provider_vlans
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("network.provider_vlans[{i}]"), *v))
        .collect();
    if let Some(v) = net.flat_vlan {
        vlans.push(("network.flat_vlan".into(), v));
    }
    for (key, v) in &vlans {
        if !(1..=4094).contains(v) {
            f.err(key.clone(), format!("VLAN id {v} is outside 1-4094"));
        }
    }
    if let Some(r) = net.provider_range {
        for (i, v) in net.provider_vlans.iter().enumerate() {
            if !r.contains(*v) {
                f.err(
                    format!("network.provider_vlans[{i}]"),
                    format!("VLAN {v} is outside the declared provider range {r}"),
                );
            }
        }
    }
    if net.mode == NetMode::Vlan && (net.flat_vlan.is_none() || net.provider_vlans.is_empty()) {
        f.err(
            "network.mode".into(),
            "vlan mode needs network.flat_vlan and network.provider_vlans".into(),
        );
    }
    if let Some(w) = &net.wifi {
        if w.ssid.is_empty() || w.ssid.len() > 32 {
            f.err("network.wifi.ssid".into(), "must be 1 to 32 bytes".into());
        }
        let psk = w.psk.expose();
        let hex64 = psk.len() == 64 && psk.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex64 && !(8..=63).contains(&psk.len()) {
            f.err(
                "network.wifi.psk".into(),
                "a WPA passphrase has 8 to 63 characters (or 64 hex digits)".into(),
            );
        }
        if w.country.len() != 2 || !w.country.bytes().all(|b| b.is_ascii_uppercase()) {
            f.err(
                "network.wifi.country".into(),
                format!("{:?} is not a two-letter country code like GB", w.country),
            );
        }
    }
}

/// Users: unique, valid names, and values that fit the colon-separated
/// files they land in.
fn users(users: &[User], f: &mut Findings) {
    let mut names = BTreeMap::new();
    for (i, u) in users.iter().enumerate() {
        if let Some(j) = names.insert(u.name.as_str(), i) {
            f.err(
                format!("users[{i}].name"),
                format!("{} is also users[{j}]", u.name),
            );
        }
        // These land in colon-separated, line-based files.
        for (k, v) in [
            ("home", u.home.as_deref()),
            ("shell", Some(u.shell.as_str())),
            (
                "password_hash",
                u.password_hash.as_ref().map(Secret::expose),
            ),
        ] {
            if let Some(v) = v {
                if v.contains([':', '\n']) {
                    f.err(
                        format!("users[{i}].{k}"),
                        "must not contain ':' or a line break".into(),
                    );
                } else if k != "password_hash" && !v.starts_with('/') {
                    f.err(
                        format!("users[{i}].{k}"),
                        format!("{v:?} must be an absolute path"),
                    );
                }
            }
        }
        if u.password
            .as_ref()
            .is_some_and(|pw| pw.expose().contains('\n'))
        {
            f.err(
                format!("users[{i}].password"),
                "must not contain a line break".into(),
            );
        }
        for (j, g) in u.groups.iter().enumerate() {
            if !crate::value::is_db_name(g) {
                f.err(
                    format!("users[{i}].groups[{j}]"),
                    format!("{g:?} is not a group name"),
                );
            }
        }
        for (j, k) in u.authorized_keys.iter().enumerate() {
            if k.trim().is_empty() || k.contains('\n') {
                f.err(
                    format!("users[{i}].authorized_keys[{j}]"),
                    "must be one non-empty line (a public key)".into(),
                );
            }
        }
        if !valid_user(&u.name) {
            f.err(
                format!("users[{i}].name"),
                format!("{:?} is not a valid user name", u.name),
            );
        }
        if u.password.is_some() && u.password_hash.is_some() {
            f.err(
                format!("users[{i}]"),
                "give password or password_hash, not both".into(),
            );
        }
        if let Some(h) = u.password_hash.as_ref().map(Secret::expose) {
            if !(h.starts_with("$y$") || h.starts_with("$6$") || h.starts_with("$5$")) {
                f.err(
                    format!("users[{i}].password_hash"),
                    "must be a yescrypt ($y$), SHA-512 ($6$) or SHA-256 ($5$) crypt hash".into(),
                );
            }
        }
    }
}

/// sysctl, first-boot packages, NTP, the cluster name and swap.
fn system(p: &Profile, f: &mut Findings) {
    let c = &p.cluster;
    for (k, v) in &p.sysctl {
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
            || v.contains('\n')
        {
            f.err(format!("sysctl.{k}"), "not a sysctl key = value".into());
        }
    }
    for (k, list) in [
        ("firstboot.packages", &p.firstboot.packages),
        ("firstboot.remove", &p.firstboot.remove),
    ] {
        for (i, pkg) in list.iter().enumerate() {
            if !valid_package(pkg) {
                f.err(
                    format!("{k}[{i}]"),
                    format!("{pkg:?} is not a Debian package name"),
                );
            }
        }
    }
    for (i, s) in c.ntp.iter().enumerate() {
        if s.is_empty() || s.contains(char::is_whitespace) {
            f.err(
                format!("cluster.ntp[{i}]"),
                format!("{s:?} is not a host name or address"),
            );
        }
    }
    // The name becomes one component of host paths (the key store's
    // directory, out/mgmt-<name>/): a conservative name, never a path.
    if !is_path_name(&c.name) {
        f.err(
            "cluster.name".into(),
            format!(
                "{:?} is not a cluster name: it becomes a folder name (out/mgmt-<name>, the key store), so use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit",
                c.name
            ),
        );
    }
    let control = p
        .node()
        .is_some_and(|n| n.roles.iter().any(|r| r == "control"));
    if control && p.swap_mib.is_none_or(|s| s < 4096) {
        f.warn(
            "swap_mib".into(),
            "a control node needs at least 4096 MiB of swap (Kolla deploys run out of memory)"
                .into(),
        );
    }
}

/// Extra files: absolute paths, one source each.
fn files(files: &[ExtraFile], f: &mut Findings) {
    for (i, x) in files.iter().enumerate() {
        let k = format!("files[{i}]");
        if !x.path.starts_with('/')
            || x.path.ends_with('/')
            || x.path.split('/').any(|c| c == ".." || c == ".")
        {
            f.err(
                format!("{k}.path"),
                format!("{:?} must be an absolute file path without . or ..", x.path),
            );
        }
        if x.content.is_some() == x.source.is_some() {
            f.err(k.clone(), "give exactly one of content or source".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Cluster, Node};

    fn base() -> Profile {
        let node = |h: &str, a: &str, r: &[&str]| Node {
            hostname: h.into(),
            address: a.parse().unwrap(),
            roles: r.iter().map(|s| s.to_string()).collect(),
            macs: Default::default(),
            board: None,
        };
        let t = "hostname = \"ost04\"\nswap_mib = 4096\n[cluster]\nname = \"ost\"\nsubnet = \"192.168.10.0/24\"\ngateway = \"192.168.10.1\"\nvip = \"192.168.10.20\"\nfloating_pool = \"192.168.10.31-192.168.10.35\"\n";
        let mut p: Profile = toml::from_str(t).unwrap();
        p.cluster = Cluster {
            nodes: vec![
                node("ost01", "192.168.10.21", &["compute"]),
                node("ost04", "192.168.10.24", &["control"]),
            ],
            ..p.cluster
        };
        p
    }

    fn errors(p: &Profile) -> Vec<String> {
        validate(p)
            .into_iter()
            .filter(|f| f.error)
            .map(|f| f.to_string())
            .collect()
    }

    #[test]
    fn good_profile_is_clean() {
        assert!(validate(&base()).is_empty(), "{:?}", validate(&base()));
    }

    #[test]
    fn each_rule() {
        let check = |edit: &dyn Fn(&mut Profile), needle: &str| {
            let mut p = base();
            edit(&mut p);
            let e = errors(&p);
            assert!(
                e.iter().any(|m| m.contains(needle)),
                "expected {needle:?} in {e:?}"
            );
        };
        check(
            &|p| p.cluster.nodes[1].hostname = "ost01".into(),
            "also used by",
        );
        check(
            &|p| p.cluster.nodes[1].address = "192.168.10.21".parse().unwrap(),
            "also used by",
        );
        check(
            &|p| p.cluster.nodes[1].address = "10.0.0.4".parse().unwrap(),
            "outside the subnet",
        );
        check(
            &|p| p.cluster.gateway = "10.0.0.1".parse().unwrap(),
            "cluster.gateway",
        );
        check(
            &|p| p.cluster.vip = Some("192.168.10.24".parse().unwrap()),
            "cluster.vip",
        );
        check(
            &|p| p.cluster.vip = Some("192.168.10.33".parse().unwrap()),
            "floating pool",
        );
        check(
            &|p| p.cluster.nodes[0].address = "192.168.10.32".parse().unwrap(),
            "floating pool",
        );
        check(&|p| p.hostname = "bad_name".into(), "valid host name");
        check(
            &|p| p.hostname = "ost09".into(),
            "not one of the cluster's nodes",
        );
        check(
            &|p| {
                p.cluster.nodes[0]
                    .macs
                    .insert("veth0".into(), "02:00:00:00:00:01".into());
                p.cluster.nodes[1]
                    .macs
                    .insert("veth0".into(), "02:00:00:00:00:01".into());
            },
            "also used by",
        );
        check(&|p| p.network.provider_vlans = vec![5000], "outside 1-4094");
        check(
            &|p| {
                p.network.provider_range = Some("101-200".parse().unwrap());
                p.network.provider_vlans = vec![99];
            },
            "outside the declared provider range",
        );
        check(&|p| p.network.mode = NetMode::Vlan, "vlan mode needs");
    }

    #[test]
    fn more_rules() {
        let check = |edit: &dyn Fn(&mut Profile), key: &str, needle: &str| {
            let mut p = base();
            edit(&mut p);
            let found = validate(&p);
            assert!(
                found
                    .iter()
                    .any(|f| f.error && f.key == key && f.msg.contains(needle)),
                "expected {key}: {needle:?} in {found:?}"
            );
        };
        let user = |name: &str| crate::profile::User {
            name: name.into(),
            shell: "/bin/bash".into(),
            ..Default::default()
        };
        check(
            &|p| p.cluster.nodes[0].hostname = "-ost".into(),
            "cluster.nodes[0].hostname",
            "valid host name",
        );
        check(
            &|p| p.cluster.nodes[0].address = "192.168.10.1".parse().unwrap(),
            "cluster.nodes[0].address",
            "gateway",
        );
        check(
            &|p| p.cluster.nodes[0].roles.push("compte".into()),
            "cluster.nodes[0].roles",
            "unknown Kolla role",
        );
        check(
            &|p| {
                p.cluster.nodes[0]
                    .macs
                    .insert("eth0".into(), "02:00:00:00:00:01".into());
            },
            "cluster.nodes[0].macs.eth0",
            "remove eth0",
        );
        check(
            &|p| {
                p.cluster.nodes[0]
                    .macs
                    .insert("veth0".into(), "03:00:00:00:00:01".into());
            },
            "cluster.nodes[0].macs.veth0",
            "multicast",
        );
        check(
            &|p| {
                p.cluster.nodes[0]
                    .macs
                    .insert("veth0".into(), "02:00:00:00:00".into());
            },
            "cluster.nodes[0].macs.veth0",
            "not a MAC",
        );
        // Given on one node, derived on the other: still a clash.
        check(
            &|p| {
                let m = crate::profile::derived_mac("ost", "ost01", "veth1");
                p.cluster.nodes[1].macs.insert("veth0".into(), m);
            },
            "cluster.nodes[1].macs.veth0",
            "also used by cluster.nodes[0] veth1 (derived)",
        );
        check(
            &|p| p.cluster.floating_pool = Some("192.168.10.250-192.168.11.3".parse().unwrap()),
            "cluster.floating_pool",
            "not inside the subnet",
        );
        check(
            &|p| p.cluster.floating_pool = Some("192.168.10.1-192.168.10.5".parse().unwrap()),
            "cluster.floating_pool",
            "gateway",
        );
        check(
            &|p| p.cluster.vip = Some("10.1.1.1".parse().unwrap()),
            "cluster.vip",
            "outside the subnet",
        );
        check(
            &|p| p.cluster.vip = Some("192.168.10.1".parse().unwrap()),
            "cluster.vip",
            "gateway",
        );
        check(
            &|p| p.cluster.ntp = vec!["pool ntp org".into()],
            "cluster.ntp[0]",
            "not a host name",
        );
        check(
            &|p| p.network.flat_vlan = Some(0),
            "network.flat_vlan",
            "outside 1-4094",
        );
        check(
            &|p| {
                p.network.wifi = Some(crate::profile::Wifi {
                    ssid: "lab".into(),
                    psk: "short".into(),
                    country: "gb".into(),
                })
            },
            "network.wifi.psk",
            "8 to 63",
        );
        check(
            &|p| {
                p.network.wifi = Some(crate::profile::Wifi {
                    ssid: "lab".into(),
                    psk: "long enough".into(),
                    country: "gb".into(),
                })
            },
            "network.wifi.country",
            "two-letter",
        );
        check(
            &|p| p.users = vec![user("ubuntu"), user("ubuntu")],
            "users[1].name",
            "also users[0]",
        );
        check(
            &|p| p.users = vec![user("Ubuntu")],
            "users[0].name",
            "not a valid user name",
        );
        check(
            &|p| {
                let mut u = user("ubuntu");
                u.home = Some("/home/a:b".into());
                p.users = vec![u];
            },
            "users[0].home",
            "':'",
        );
        check(
            &|p| {
                let mut u = user("ubuntu");
                u.shell = "bash".into();
                p.users = vec![u];
            },
            "users[0].shell",
            "absolute",
        );
        check(
            &|p| {
                let mut u = user("ubuntu");
                u.password_hash = Some("$6$salt$hash:0:0".into());
                p.users = vec![u];
            },
            "users[0].password_hash",
            "':'",
        );
        check(
            &|p| {
                let mut u = user("ubuntu");
                u.password_hash = Some("plain".into());
                p.users = vec![u];
            },
            "users[0].password_hash",
            "crypt hash",
        );
        check(
            &|p| {
                let mut u = user("ubuntu");
                u.password_hash = Some("$6$s$h".into());
                u.password = Some("x".into());
                p.users = vec![u];
            },
            "users[0]",
            "not both",
        );
        check(
            &|p| {
                let mut u = user("ubuntu");
                u.groups = vec!["sudo,adm".into()];
                p.users = vec![u];
            },
            "users[0].groups[0]",
            "not a group name",
        );
        check(
            &|p| {
                let mut u = user("ubuntu");
                u.authorized_keys = vec![" ".into()];
                p.users = vec![u];
            },
            "users[0].authorized_keys[0]",
            "one non-empty line",
        );
        check(
            &|p| p.firstboot.packages = vec!["ufw; reboot".into()],
            "firstboot.packages[0]",
            "Debian package name",
        );
        check(
            &|p| {
                p.sysctl.insert("net ipv4".into(), "1".into());
            },
            "sysctl.net ipv4",
            "sysctl",
        );
        let file = |path: &str| crate::profile::ExtraFile {
            path: path.into(),
            content: Some("x".into()),
            source: None,
            mode: "644".parse().unwrap(),
            owner: "0:0".parse().unwrap(),
            data: None,
        };
        check(
            &|p| p.files = vec![file("etc/motd")],
            "files[0].path",
            "absolute",
        );
        check(
            &|p| p.files = vec![file("/etc/../root/x")],
            "files[0].path",
            "without . or ..",
        );
        check(
            &|p| {
                let mut f = file("/etc/motd");
                f.source = Some("motd".into());
                p.files = vec![f];
            },
            "files[0]",
            "exactly one",
        );
        // files[].mode and .owner are typed (profile::types): a bad one
        // is refused when the profile is read (value::tests).
    }

    /// Everything a profile may hold, well formed: no finding.
    #[test]
    fn full_good_profile_is_clean() {
        let mut p = base();
        p.cluster.nodes[0]
            .macs
            .insert("veth0".into(), "02:AB:00:00:00:01".into());
        p.cluster.ntp = vec!["192.168.10.1".into(), "pool.ntp.org".into()];
        p.network = crate::profile::Network {
            mode: NetMode::Vlan,
            flat_vlan: Some(2),
            provider_vlans: vec![101, 102, 103],
            provider_range: Some("101-200".parse().unwrap()),
            wifi: Some(crate::profile::Wifi {
                ssid: "lab rescue".into(),
                psk: "correct horse".into(),
                country: "GB".into(),
            }),
        };
        p.users = vec![crate::profile::User {
            name: "stack".into(),
            password: Some("stack".into()),
            groups: vec!["sudo".into(), "netdev".into()],
            authorized_keys: vec!["ssh-ed25519 AAAA lab".into()],
            sudo_nopasswd: true,
            home: Some("/opt/stack".into()),
            shell: "/bin/bash".into(),
            ..Default::default()
        }];
        p.sysctl.insert("net.ipv4.ip_forward".into(), "1".into());
        p.files = vec![crate::profile::ExtraFile {
            path: "/opt/stack/local.conf".into(),
            content: Some("x".into()),
            source: None,
            mode: "600".parse().unwrap(),
            owner: "stack:stack".parse().unwrap(),
            data: None,
        }];
        assert_eq!(validate(&p), vec![]);
    }

    #[test]
    fn warnings() {
        let warnings = |p: &Profile| -> Vec<String> {
            validate(p)
                .into_iter()
                .filter(|f| !f.error)
                .map(|f| f.key)
                .collect()
        };
        let mut p = base();
        p.swap_mib = Some(1024);
        p.cluster.nodes[1].roles = vec!["control".into(), "compute".into(), "network".into()];
        assert_eq!(
            warnings(&p),
            vec!["cluster.nodes[1].roles".to_string(), "swap_mib".into()]
        );
        p.swap_mib = None;
        assert!(warnings(&p).contains(&"swap_mib".to_string()));
        p.swap_mib = Some(4096);
        assert_eq!(warnings(&p), vec!["cluster.nodes[1].roles".to_string()]);
        // Another node's roles are that node's concern.
        p.cluster.nodes[1].roles = vec!["compute".into()];
        p.cluster.nodes[0].roles = vec!["compute".into(), "network".into()];
        assert!(warnings(&p).is_empty(), "{:?}", warnings(&p));
    }
}
