//! The management host's files, from the same cluster profile as the node
//! images: `/etc/hosts` lines, `known_hosts` with every node's SSH host keys
//! (the keys the images carry, derived from the cluster's key store), the
//! Kolla-Ansible inventory `multinode` (complete for the release: its
//! stock groups from [`release`]) with each node's connection variables in
//! `host_vars/<node>.yml` beside it, the globals drop-in
//! `globals.d/rpiimg.yml`, the nova and neutron overrides, `ansible.cfg`,
//! `deploy.sh` and `first-cloud.sh` (the guide's remaining steps) and a
//! README with the sequence.
//!
//! Templates are `overlays/mgmt/*.j2` (compiled in); a profile overrides
//! one by putting `mgmt/<name>.j2` in one of its overlay directories.

use crate::kolla;

use minijinja::{context, Value};

use crate::profile::{NetMode, Profile};
use crate::sshkey::{self, KeyType};

/// (path in the bundle, template)
pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    ("README", include_str!("../../overlays/mgmt/README.j2")),
    ("hosts", include_str!("../../overlays/mgmt/hosts.j2")),
    (
        "known_hosts",
        include_str!("../../overlays/mgmt/known_hosts.j2"),
    ),
    (
        "multinode",
        include_str!("../../overlays/mgmt/multinode.j2"),
    ),
    (
        "ansible.cfg",
        include_str!("../../overlays/mgmt/ansible.cfg.j2"),
    ),
    (
        "globals.d/rpiimg.yml",
        include_str!("../../overlays/mgmt/globals.d/rpiimg.yml.j2"),
    ),
    (
        "config/nova/nova-compute.conf",
        include_str!("../../overlays/mgmt/config/nova/nova-compute.conf.j2"),
    ),
    (
        "config/neutron/ml2_conf.ini",
        include_str!("../../overlays/mgmt/config/neutron/ml2_conf.ini.j2"),
    ),
    (
        "deploy.sh",
        include_str!("../../overlays/mgmt/deploy.sh.j2"),
    ),
    (
        "first-cloud.sh",
        include_str!("../../overlays/mgmt/first-cloud.sh.j2"),
    ),
];

/// The inventory groups rpiimg fills from node roles, in the guide's order.
const NODE_GROUPS: &[&str] = &["control", "network", "compute", "monitoring", "storage"];

/// One section of a stock inventory as INI text, a blank line after it.
fn section_text(sec: &kolla::Section) -> String {
    let mut out = match sec.kind.as_str() {
        "hosts" => format!("[{}]\n", sec.name),
        kind => format!("[{}:{kind}]\n", sec.name),
    };
    for l in &sec.lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// The inventory after the node groups, from the release's facts: every
/// other group of its stock inventory, in the stock order.
fn release_rest(r: &kolla::Release) -> String {
    r.inventory
        .iter()
        .filter(|s| !NODE_GROUPS.contains(&s.name.as_str()))
        .map(section_text)
        .collect()
}

/// The group names of an INI inventory, as Ansible reads its headers:
/// `[name]`, `[name:children]`, `[name:vars]`, with anything after the
/// closing bracket (a comment) ignored.
fn inventory_groups(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(header)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// `[name]` or `[name:kind]` at the start of a line (after blanks), with
/// an optional comment after it.
fn header(line: &str) -> Option<(&str, &str)> {
    let t = line.trim_start().strip_prefix('[')?;
    let (inside, after) = t.split_once(']')?;
    let after = after.trim();
    if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
        return None;
    }
    Some(inside.split_once(':').unwrap_or((inside, "")))
}

/// Refuse a `--kolla-inventory` that is not the stock inventory of `r`,
/// saying which release's it matches.
fn check_stock_release(stock: &str, r: &kolla::Release) -> Result<(), String> {
    let have = inventory_groups(stock);
    let have: std::collections::BTreeSet<&str> = have.iter().map(String::as_str).collect();
    let want = r.groups();
    if have == want {
        return Ok(());
    }
    let missing: Vec<&str> = want.difference(&have).copied().collect();
    let extra: Vec<&str> = have.difference(&want).copied().collect();
    let looks = kolla::all()
        .iter()
        .find(|o| o.groups() == have)
        .map_or(String::new(), |o| {
            format!(" (it is {}'s, kolla-ansible {})", o.series, o.version)
        });
    let list = |v: &[&str]| {
        let mut s = v.iter().take(8).copied().collect::<Vec<_>>().join(", ");
        if v.len() > 8 {
            s.push_str(&format!(" and {} more", v.len() - 8));
        }
        s
    };
    Err(format!(
        "the file given with --kolla-inventory is not the stock inventory of Kolla-Ansible {} (kolla-ansible {}){looks}: {}{}; give share/kolla-ansible/ansible/inventory/multinode of kolla-ansible {}, or leave --kolla-inventory out (the bundle holds the release's complete inventory)",
        r.series,
        r.version,
        if missing.is_empty() { String::new() } else { format!("it lacks the groups {}", list(&missing)) },
        if extra.is_empty() { String::new() } else { format!("{}it has groups the release does not: {}", if missing.is_empty() { "" } else { "; " }, list(&extra)) },
        r.version
    ))
}

/// One file of the bundle.
#[derive(Debug, Clone)]
pub(crate) struct BundleFile {
    pub path: String,
    pub text: String,
    /// 0600 when it holds a password (host_vars/*.yml).
    pub mode: u32,
}

/// A string for Ansible, exactly: a YAML double-quoted scalar tagged
/// `!unsafe`. An INI inventory line cannot carry one: Ansible reads its host
/// variables as Python literals (`0x10` became 16, `True` a boolean,
/// `'quoted'` lost its quotes), and every string it templates (`{{` in a
/// password ran as Jinja). Quoted, YAML keeps it a string; `!unsafe`, Ansible
/// never templates it.
fn ansible_string(s: &str) -> String {
    format!("!unsafe {}", crate::template::yaml_quote(s))
}

/// `host_vars/<host>.yml`: how Ansible logs in to one node. Ansible reads
/// it beside the inventory (`-i multinode`), for `ansible-inventory`,
/// `ansible-playbook` and kolla-ansible alike.
fn host_vars(cluster: &str, host: &str, user: Option<&str>, password: Option<&str>) -> String {
    let mut t = format!(
        "# Written by rpiimg for cluster {cluster}: how Ansible logs in to {host} (read\n\
         # beside the inventory multinode). Strings are quoted and !unsafe: Ansible\n\
         # takes each exactly as the profile has it, never as a number, boolean or template.\n"
    );
    if let Some(u) = user {
        t.push_str(&format!("ansible_user: {}\n", ansible_string(u)));
    }
    if let Some(pw) = password {
        t.push_str(&format!("ansible_password: {}\n", ansible_string(pw)));
    }
    t.push_str("ansible_become: true\n");
    t
}

/// The stock inventory without its node groups (the text after them is
/// kept verbatim: every child group of that Kolla-Ansible release).
fn stock_rest(stock: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut skipping = true; // the stock preamble talks about editing it
    let mut seen_header = false;
    for line in stock.lines() {
        if let Some((name, kind)) = header(line) {
            seen_header = true;
            skipping = kind.is_empty() && NODE_GROUPS.contains(&name);
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

/// What `rpiimg cluster` makes of a `--kolla-inventory` text: the part it
/// keeps, and the releases whose stock inventory it is (for the fuzz
/// target, [`crate::fuzzing::kolla_inventory`]).
pub(crate) fn read_stock_for_fuzzing(text: &str) -> (Option<String>, Vec<&'static str>) {
    let releases = kolla::all()
        .iter()
        .filter(|r| check_stock_release(text, r).is_ok())
        .map(|r| r.series.as_str())
        .collect();
    (stock_rest(text).ok(), releases)
}

/// Render the bundle. `generation(host)` is the host-key generation of each
/// node (see `--rotate-host-keys`); `stock` the release's stock inventory.
pub(crate) fn render(
    p: &Profile,
    rel: &kolla::Release,
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
    // With SSH keys for the user (the management host's public key in
    // users.authorized_keys), Ansible logs in with the key: the inventory
    // then carries no password (and needs no sshpass).
    let password = user
        .filter(|u| u.authorized_keys.is_empty())
        .and_then(|u| u.password.clone());
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
        Some(s) => {
            let rest = stock_rest(s)?;
            check_stock_release(s, rel)?;
            rest
        }
        None => release_rest(rel),
    };
    // The guide's ml2_conf.ini has physnet1's VLAN range in both network
    // modes (flat setups can add VLAN provider networks later); Neutron
    // writes first:last.
    let vlan_range = p.network.provider_range.map_or_else(
        || "101:200".to_string(),
        |r| format!("{}:{}", r.first, r.last),
    );
    let mut boards: Vec<String> = p
        .cluster
        .nodes
        .iter()
        .filter_map(|n| n.board.map(|b| b.to_string()))
        .collect();
    boards.sort();
    boards.dedup();
    let pool = p
        .cluster
        .floating_pool
        .map(|r| (r.first.to_string(), r.last.to_string()));
    let ctx = context! {
        cluster => Value::from(minijinja::value::Serde(&p.cluster)),
        network => Value::from(minijinja::value::Serde(&p.network)),
        kolla => Value::from(minijinja::value::Serde(&p.kolla)),
        release => context! {
            series => rel.series.clone(),
            version => rel.version.clone(),
            ansible => rel.ansible_pip_spec(),
            debian => rel.debian(),
            python => rel.requires_python.clone(),
            proxysql_off => rel.proxysql_by_default(),
            // 2023.1's CLI takes -i before the action; later ones after it.
            inventory_first => rel.series == "2023.1",
        },
        qemu => p.kolla.virt_type == crate::profile::VirtType::Qemu,
        boards => boards,
        pool => pool,
        vlan_mode => p.network.mode == NetMode::Vlan,
        host_keys => host_keys,
        groups => groups,
        // The connection variables are in host_vars/ now; an override of
        // multinode that still writes `{{ conn }}` writes nothing there.
        conn => "",
        rest => rest,
        stock => stock.is_some(),
        user => user.map(|u| u.name.clone()),
        vlan_range => vlan_range,
    };
    let mut out = Vec::new();
    for (path, builtin) in TEMPLATES {
        // Overrides were read with the profile (`profile::sources`).
        let src = p.mgmt_templates.get(*path).map_or(*builtin, String::as_str);
        let text = render_one(path, src, &ctx)?;
        if *path == "globals.d/rpiimg.yml" {
            // A key the release does not know is silently ignored by
            // Kolla-Ansible: refuse it (an override template may add one).
            let keys = crate::os::dropins::settings(crate::os::dropins::Syntax::YamlTop, &text);
            if let Some((key, _)) = keys.iter().find(|(k, _)| !rel.globals_keys.contains(k)) {
                return Err(format!(
                    "template mgmt/{path}: Kolla-Ansible {} (kolla-ansible {}) has no setting {key:?}; it would be ignored",
                    rel.series, rel.version
                ));
            }
        }
        let mode = if path.ends_with(".sh") { 0o755 } else { 0o644 };
        out.push(BundleFile {
            path: (*path).to_string(),
            text,
            mode,
        });
    }
    for n in &p.cluster.nodes {
        out.push(BundleFile {
            path: format!("host_vars/{}.yml", n.hostname),
            text: host_vars(
                &p.cluster.name,
                &n.hostname,
                user.map(|u| u.name.as_str()),
                password.as_ref().map(|pw| pw.expose()),
            ),
            mode: if password.is_some() { 0o600 } else { 0o644 },
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
        // A header may carry a comment, as Ansible allows.
        let r = stock_rest("[compute] # the nodes\ncompute01\n[deployment]\nlocalhost\n").unwrap();
        assert!(!r.contains("compute01"), "{r}");
        assert_eq!(ansible_string("ubuntu"), "!unsafe \"ubuntu\"");
        assert_eq!(ansible_string("p w'x\"\\"), "!unsafe \"p w'x\\\"\\\\\"");
    }

    /// The inventory made from a release's facts has every stock group;
    /// every group a site.yml play names exists in it; a stock inventory of
    /// another release is refused, naming it.
    #[test]
    fn release_inventories_are_complete_and_checked() {
        for r in kolla::all() {
            let rest = release_rest(r);
            let mut text = String::new();
            for g in NODE_GROUPS {
                text.push_str(&format!("[{g}]\n"));
            }
            text.push_str(&rest);
            let groups = inventory_groups(&text);
            for g in r.groups() {
                assert!(groups.contains(g), "{}: {g}", r.series);
            }
            assert!(check_stock_release(&text, r).is_ok(), "{}", r.series);
            for other in kolla::all().iter().filter(|o| o.series != r.series) {
                let e = check_stock_release(&text, other).unwrap_err();
                assert!(e.contains(&format!("it is {}'s", r.series)), "{e}");
            }
        }
        let r = kolla::by_series("2025.1").unwrap();
        let e = check_stock_release("[control]\nx\n[deployment]\nlocalhost\n", r).unwrap_err();
        assert!(
            e.contains("it lacks the groups") && e.contains("more"),
            "{e}"
        );
    }

    /// Hosts of a group in an INI inventory (its own and its children's;
    /// a cycle is not followed twice).
    fn hosts_of(text: &str, group: &str) -> std::collections::BTreeSet<String> {
        let mut sections: std::collections::BTreeMap<(String, String), Vec<String>> =
            Default::default();
        let mut cur: Option<(String, String)> = None;
        for l in text.lines() {
            if let Some((n, k)) = header(l) {
                cur = Some((n.to_string(), k.to_string()));
                continue;
            }
            let w = l.split_whitespace().next().unwrap_or_default();
            if let (Some(c), false) = (&cur, w.is_empty() || w.starts_with('#')) {
                sections.entry(c.clone()).or_default().push(w.to_string());
            }
        }
        let mut out = std::collections::BTreeSet::new();
        let mut todo = vec![group.to_string()];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(g) = todo.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            if g == "all" {
                for ((_, k), v) in &sections {
                    if k.is_empty() {
                        out.extend(v.iter().cloned());
                    }
                }
            }
            out.extend(
                sections
                    .get(&(g.clone(), String::new()))
                    .cloned()
                    .unwrap_or_default(),
            );
            todo.extend(
                sections
                    .get(&(g, "children".into()))
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        out
    }

    /// The bundle of each release: every play of site.yml that would run
    /// on a host of the stock inventory runs on one of ours (groups made
    /// at run time, `enable_*_True` and the like, aside); every key of the
    /// globals drop-in exists in the release; the texts carry no
    /// openstack_release and no `---`.
    #[test]
    fn bundles_reach_every_play_and_set_known_globals() {
        let p = crate::plan::testing::profile("ost04-control");
        for r in kolla::all() {
            let files = render(&p, r, &|_| 0, None).unwrap();
            let get = |name: &str| files.iter().find(|f| f.path == name).unwrap().text.clone();
            let ours = get("multinode");
            let stock: String = r.inventory.iter().map(section_text).collect();
            for play in &r.site_plays {
                let groups: Vec<&str> = play
                    .split([',', ':'])
                    .filter(|g| !g.starts_with('&') && !g.starts_with('!') && !g.is_empty())
                    .filter(|g| r.groups().contains(g) || *g == "all")
                    .collect();
                let reach = |inv: &str| groups.iter().any(|g| !hosts_of(inv, g).is_empty());
                if reach(&stock) {
                    assert!(
                        reach(&ours),
                        "{}: play {play:?} reaches no host of\n{ours}",
                        r.series
                    );
                }
            }
            let globals = get("globals.d/rpiimg.yml");
            assert!(
                !globals.contains("\nopenstack_release:") && !globals.starts_with("---"),
                "{globals}"
            );
            let keys = crate::os::dropins::settings(crate::os::dropins::Syntax::YamlTop, &globals);
            assert!(keys.len() >= 6, "{globals}");
            for (key, _) in keys {
                assert!(r.globals_keys.contains(&key), "{}: {key}", r.series);
            }
            assert_eq!(
                globals.contains("enable_proxysql: \"no\""),
                r.series != "2023.1",
                "{globals}"
            );
            assert!(get("config/neutron/ml2_conf.ini")
                .contains("network_vlan_ranges = physnet1:101:200"));
            for sh in ["deploy.sh", "first-cloud.sh"] {
                assert_eq!(files.iter().find(|f| f.path == sh).unwrap().mode, 0o755);
            }
            let deploy = get("deploy.sh");
            assert!(
                deploy.contains(&format!("kolla-ansible=={}", r.version)),
                "{deploy}"
            );
        }
    }

    /// A user with authorized SSH keys logs in with them: no password in
    /// the inventory, and the file is not secret.
    #[test]
    fn keys_make_the_inventory_passwordless() {
        let mut p = crate::plan::testing::profile("ost04-control");
        let r = kolla::by_series("2026.1").unwrap();
        let inv = |p: &Profile| {
            render(p, r, &|_| 0, None)
                .unwrap()
                .into_iter()
                .find(|f| f.path == "host_vars/ost04.yml")
                .unwrap()
        };
        let with_pw = inv(&p);
        assert!(with_pw.text.contains("ansible_password: !unsafe ") && with_pw.mode == 0o600);
        p.users[0].authorized_keys =
            vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGp4 admin@mgmt".into()];
        let with_key = inv(&p);
        assert!(
            !with_key.text.contains("ansible_password") && with_key.mode == 0o644,
            "{}",
            with_key.text
        );
    }
}
