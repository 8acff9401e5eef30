//! The management host's files, from the same cluster profile as the node
//! images: `/etc/hosts` lines, `known_hosts` with every node's SSH host keys
//! (the keys the images carry, derived from the cluster's key store), the
//! Kolla-Ansible inventory `multinode`, `globals.yml`, the nova and neutron
//! overrides, `ansible.cfg` and a README saying where each goes.
//!
//! Templates are `overlays/mgmt/*.j2` (compiled in); a profile overrides
//! one by putting `mgmt/<name>.j2` in one of its overlay directories.

use minijinja::{context, Value};

use crate::profile::{NetMode, Profile};
use crate::sshkey::{self, KeyType};

/// (path in the bundle, template)
pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    ("README", include_str!("../overlays/mgmt/README.j2")),
    ("hosts", include_str!("../overlays/mgmt/hosts.j2")),
    (
        "known_hosts",
        include_str!("../overlays/mgmt/known_hosts.j2"),
    ),
    ("multinode", include_str!("../overlays/mgmt/multinode.j2")),
    (
        "ansible.cfg",
        include_str!("../overlays/mgmt/ansible.cfg.j2"),
    ),
    (
        "globals.yml",
        include_str!("../overlays/mgmt/globals.yml.j2"),
    ),
    (
        "config/nova/nova-compute.conf",
        include_str!("../overlays/mgmt/config/nova/nova-compute.conf.j2"),
    ),
    (
        "config/neutron/ml2_conf.ini",
        include_str!("../overlays/mgmt/config/neutron/ml2_conf.ini.j2"),
    ),
];

/// The inventory groups rpiimg fills from node roles, in the guide's order.
const NODE_GROUPS: &[&str] = &["control", "network", "compute", "monitoring", "storage"];

/// Without the stock inventory: the groups every Kolla-Ansible inventory has
/// besides the node groups.
const MINIMAL_REST: &str = "[deployment]\nlocalhost ansible_connection=local\n\n[baremetal:children]\ncontrol\nnetwork\ncompute\nstorage\nmonitoring\n";

/// One file of the bundle.
#[derive(Debug, Clone)]
pub struct BundleFile {
    pub path: String,
    pub text: String,
    /// 0600 when it holds a password.
    pub mode: u32,
}

/// A word for an INI inventory line (ansible splits those with shlex).
fn inventory_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/@+%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\"'\"'"))
    }
}

/// The stock inventory without its node groups (the text after them is
/// kept verbatim: every child group of that Kolla-Ansible release).
fn stock_rest(stock: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut skipping = true; // the stock preamble talks about editing it
    let mut seen_header = false;
    for line in stock.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            seen_header = true;
            let name = &t[1..t.len() - 1];
            skipping = NODE_GROUPS.contains(&name);
        }
        if seen_header && !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !seen_header || !out.contains("[deployment]") {
        return Err(
            "the file given with --kolla-inventory is not a Kolla-Ansible inventory (no [deployment] group); give ansible/inventory/multinode of your Kolla-Ansible release"
                .into(),
        );
    }
    Ok(out)
}

/// Render the bundle. `generation(host)` is the host-key generation of each
/// node (see `--rotate-host-keys`); `stock` the release's stock inventory.
pub fn render(
    p: &Profile,
    generation: &dyn Fn(&str) -> u32,
    stock: Option<&str>,
) -> Result<Vec<BundleFile>, String> {
    let secret = p
        .secret
        .as_ref()
        .ok_or("the bundle needs the cluster's key store (for the SSH host keys)")?;
    let mut host_keys = Vec::new();
    for n in &p.cluster.nodes {
        for kind in KeyType::ALL {
            let k = sshkey::derive(secret, &n.hostname, kind, generation(&n.hostname));
            host_keys.push(context! {
                host => n.hostname.clone(),
                address => n.address.to_string(),
                key => k.public_key(),
            });
        }
    }
    let user = p.users.first();
    let password = user.and_then(|u| u.password.clone());
    let mut conn = String::new();
    if let Some(u) = user {
        conn.push_str(&format!(" ansible_user={}", inventory_word(&u.name)));
    }
    if let Some(pw) = &password {
        conn.push_str(&format!(
            " ansible_password={}",
            inventory_word(pw.expose())
        ));
    }
    conn.push_str(" ansible_become=true");
    let groups: Vec<Value> = NODE_GROUPS
        .iter()
        .map(|g| {
            let hosts: Vec<String> = p
                .cluster
                .nodes
                .iter()
                .filter(|n| n.roles.iter().any(|r| r == g))
                .map(|n| n.hostname.clone())
                .collect();
            context! { name => *g, hosts => hosts }
        })
        .collect();
    let rest = match stock {
        Some(s) => stock_rest(s)?,
        None => MINIMAL_REST.to_string(),
    };
    let vlan_range = (p.network.mode == NetMode::Vlan)
        .then_some(p.network.provider_range)
        .flatten()
        // Neutron's network_vlan_ranges writes first:last.
        .map(|r| format!("{}:{}", r.first, r.last));
    let ctx = context! {
        cluster => Value::from(minijinja::value::Serde(&p.cluster)),
        network => Value::from(minijinja::value::Serde(&p.network)),
        kolla => Value::from(minijinja::value::Serde(&p.kolla)),
        host_keys => host_keys,
        groups => groups,
        conn => conn,
        rest => rest,
        stock => stock.is_some(),
        vlan_range => vlan_range,
    };
    let mut out = Vec::new();
    for (path, builtin) in TEMPLATES {
        // Overrides were read with the profile (`profile::sources`).
        let src = p.mgmt_templates.get(*path).map_or(*builtin, String::as_str);
        let text = render_one(path, src, &ctx)?;
        let secret_inside = *path == "multinode" && password.is_some();
        out.push(BundleFile {
            path: (*path).to_string(),
            text,
            mode: if secret_inside { 0o600 } else { 0o644 },
        });
    }
    Ok(out)
}

fn render_one(name: &str, src: &str, ctx: &Value) -> Result<String, String> {
    let mut env =
        crate::template::environment().map_err(|e| format!("template mgmt/{name}: {e}"))?;
    env.add_template(name, src)
        .map_err(|e| format!("template mgmt/{name}: {e}"))?;
    let t = env
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("template mgmt/{name}: {e}"))?;
    Ok(format!("{}\n", t.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_inventory_keeps_child_groups_and_drops_node_groups() {
        let stock = "# edit these\n[control]\ncontrol01\n\n[network]\nnetwork01\n[compute]\ncompute01\n[monitoring]\nm\n[storage]\ns\n[deployment]\nlocalhost ansible_connection=local\n\n[baremetal:children]\ncontrol\n\n[nova:children]\ncontrol\n";
        let r = stock_rest(stock).unwrap();
        assert!(r.starts_with("[deployment]"), "{r}");
        assert!(r.contains("[nova:children]\ncontrol\n"));
        assert!(!r.contains("control01") && !r.contains("edit these"));
        assert!(stock_rest("[foo]\nbar\n").is_err());
        assert_eq!(inventory_word("ubuntu"), "ubuntu");
        assert_eq!(inventory_word("p w'x"), "'p w'\"'\"'x'");
    }
}
