//! Validation of a resolved profile, before any I/O on images. Every
//! finding names the profile file and the key.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{in_subnet, parse_cidr, parse_pool, NetMode, Profile};

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

/// Errors and warnings; the profile may be used only when there is no error.
pub fn validate(p: &Profile) -> Vec<Finding> {
    let mut f = Findings::default();
    let c = &p.cluster;
    let subnet = parse_cidr(&c.subnet);
    if subnet.is_none() {
        f.err(
            "cluster.subnet".into(),
            format!("{:?} is not an IPv4 CIDR like 192.168.10.0/24", c.subnet),
        );
    }
    let inside = |ip: Ipv4Addr| subnet.is_none_or(|(n, l)| in_subnet(ip, n, l));
    if !inside(c.gateway) {
        f.err(
            "cluster.gateway".into(),
            format!("{} is outside the subnet {}", c.gateway, c.subnet),
        );
    }
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
        for (ifname, m) in &n.macs {
            let lower = m.to_ascii_lowercase();
            if !valid_mac(m) {
                f.err(
                    format!("{key}.macs.{ifname}"),
                    format!("{m:?} is not a MAC address like 02:00:00:00:00:01"),
                );
            } else if let Some(other) = macs.insert(lower, format!("{key}.macs.{ifname}")) {
                f.err(
                    format!("{key}.macs.{ifname}"),
                    format!("{m} is also used by {other}"),
                );
            }
        }
        let has = |r: &str| n.roles.iter().any(|x| x == r);
        if has("compute") && has("network") {
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
    let pool = c.floating_pool.as_deref().map(|s| (s, parse_pool(s)));
    if let Some((s, None)) = pool {
        f.err(
            "cluster.floating_pool".into(),
            format!("{s:?} is not a range like 192.168.10.31-192.168.10.35"),
        );
    }
    let pool = pool.and_then(|(_, p)| p);
    let in_pool = |ip: Ipv4Addr| {
        pool.is_some_and(|(a, b)| (u32::from(a)..=u32::from(b)).contains(&u32::from(ip)))
    };
    if let Some((a, b)) = pool {
        if !inside(a) || !inside(b) {
            f.err(
                "cluster.floating_pool".into(),
                format!("{a}-{b} is not inside the subnet {}", c.subnet),
            );
        }
        for (ip, i) in &addrs {
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
    let net = &p.network;
    let range = net.provider_range.as_deref().map(|r| {
        r.split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
    });
    if let Some(None) = range {
        f.err(
            "network.provider_range".into(),
            "must look like \"101-200\"".into(),
        );
    }
    let range = range.flatten();
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
    if let Some((a, b)) = range {
        if a == 0 || b > 4094 || a > b {
            f.err(
                "network.provider_range".into(),
                format!("{a}-{b} is not a VLAN range within 1-4094"),
            );
        }
        for (i, v) in net.provider_vlans.iter().enumerate() {
            if !(a..=b).contains(v) {
                f.err(
                    format!("network.provider_vlans[{i}]"),
                    format!("VLAN {v} is outside the declared provider range {a}-{b}"),
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
    for (i, u) in p.users.iter().enumerate() {
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
        if let Some(h) = &u.password_hash {
            if !(h.starts_with("$y$") || h.starts_with("$6$") || h.starts_with("$5$")) {
                f.err(
                    format!("users[{i}].password_hash"),
                    "must be a yescrypt ($y$), SHA-512 ($6$) or SHA-256 ($5$) crypt hash".into(),
                );
            }
        }
    }
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
    f.0
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
                p.network.provider_range = Some("101-200".into());
                p.network.provider_vlans = vec![99];
            },
            "outside the declared provider range",
        );
        check(&|p| p.network.mode = NetMode::Vlan, "vlan mode needs");
    }

    #[test]
    fn warnings() {
        let mut p = base();
        p.swap_mib = Some(1024);
        p.cluster.nodes[0].roles = vec!["compute".into(), "network".into()];
        let w: Vec<String> = validate(&p)
            .into_iter()
            .filter(|f| !f.error)
            .map(|f| f.key)
            .collect();
        assert!(
            w.contains(&"swap_mib".to_string()) && w.iter().any(|k| k.ends_with("roles")),
            "{w:?}"
        );
    }
}
