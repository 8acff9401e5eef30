//! `rpiimg verify`: prove what an image contains.

pub(crate) mod invariants;

/// One verified statement about an image.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Check {
    pub what: String,
    pub ok: bool,
    /// What was found, when it is not what was expected.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Check {
    pub(crate) fn new(what: impl Into<String>, ok: bool, detail: String) -> Self {
        Check {
            what: what.into(),
            ok,
            detail: if ok { String::new() } else { detail },
        }
    }
}

/// Human report: failures first, then a count. What comes from the image
/// is escaped for the terminal (`--json` keeps it exact).
pub(crate) fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks.iter().filter(|c| !c.ok) {
        s.push_str(&format!(
            "FAIL {}\n     {}\n",
            escape(&c.what),
            escape(&c.detail)
        ));
    }
    for c in checks.iter().filter(|c| c.ok) {
        s.push_str(&format!("ok   {}\n", escape(&c.what)));
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    s.push_str(&format!(
        "{} checks, {} passed, {failed} failed\n",
        checks.len(),
        checks.len() - failed
    ));
    s
}

pub(crate) mod planned;

use crate::term::escape;
use std::collections::BTreeMap;

use crate::error::Result;
use crate::fs::view::SystemView;

/// What makes a node distinguishable on the network.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct Identity {
    pub hostname: String,
    pub addresses: Vec<String>,
    pub macs: Vec<String>,
    pub host_keys: Vec<String>,
}

pub(crate) fn identity(view: &SystemView) -> Result<Identity> {
    let mut id = Identity {
        hostname: view
            .read_text_opt("/etc/hostname")?
            .unwrap_or_default()
            .trim()
            .to_string(),
        ..Default::default()
    };
    for dir in ["/etc/systemd/network", "/etc/netplan"] {
        let Some(list) = view.list_opt(dir)? else {
            continue;
        };
        for (name, _) in list {
            let Some(text) = view.read_text_opt(&format!("{dir}/{name}"))? else {
                continue;
            };
            for l in text.lines() {
                let l = l.trim();
                if let Some(m) = l.strip_prefix("MACAddress=") {
                    id.macs.push(m.trim().to_ascii_lowercase());
                } else if let Some(a) = l.strip_prefix("Address=").or_else(|| {
                    l.strip_prefix("- ").filter(|a| {
                        a.contains('/') && a.chars().next().is_some_and(|c| c.is_ascii_digit())
                    })
                }) {
                    let a = a.split('/').next().unwrap_or(a).trim().to_string();
                    if !id.addresses.contains(&a) {
                        id.addresses.push(a);
                    }
                }
            }
        }
    }
    // The keys sshd serves (its HostKey lines, else its default names),
    // by their public halves.
    for key in crate::os::sshd::SshdConfig::read(view)?.host_keys() {
        if let Some(k) = view.read_text_opt(&format!("{key}.pub"))? {
            id.host_keys
                .push(k.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
        }
    }
    Ok(id)
}

/// Reads one kind of identity value from an image's identity.
type Field = fn(&Identity) -> Vec<String>;

/// Across node images, hostnames, addresses, MACs and host keys are distinct.
pub(crate) fn distinct(ids: &[(String, Identity)]) -> Vec<Check> {
    let mut out = Vec::new();
    let kinds: [(&str, Field); 4] = [
        ("hostnames", |i| vec![i.hostname.clone()]),
        ("addresses", |i| i.addresses.clone()),
        ("MAC addresses", |i| i.macs.clone()),
        ("SSH host keys", |i| i.host_keys.clone()),
    ];
    for (what, get) in kinds {
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        let mut dup = Vec::new();
        for (img, id) in ids {
            for v in get(id) {
                if v.is_empty() {
                    continue;
                }
                if let Some(other) = seen.insert(v.clone(), img) {
                    if other != img {
                        dup.push(format!("{v} in {other} and {img}"));
                    }
                }
            }
        }
        out.push(Check::new(
            format!("{what} distinct across the images"),
            dup.is_empty(),
            dup.join("; "),
        ));
    }
    out
}
