//! Kolla-Ansible releases rpiimg writes bundles for (profiles name them,
//! plans choose one, bundles are written for it), with the facts each
//! needs, read from the released wheels by `scripts/kolla-facts` (one JSON
//! per release in `src/kolla/releases/`, so supporting the next release is
//! one command plus a review): which host OS releases its prechecks
//! accept, its stock inventory's groups, the keys its globals know, its
//! ProxySQL default and the ansible-core it needs.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde::Deserialize;

/// The facts files, newest last.
const FACTS: &[(&str, &str)] = &[
    ("2023.1", include_str!("releases/2023.1.json")),
    ("2025.1", include_str!("releases/2025.1.json")),
    ("2026.1", include_str!("releases/2026.1.json")),
];

/// One section of the stock `ansible/inventory/multinode`, in file order.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Section {
    pub name: String,
    /// "hosts", "children" or "vars".
    pub kind: String,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct AnsibleRequirement {
    pip_spec: String,
}

/// What rpiimg knows of one Kolla-Ansible release.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Release {
    /// The OpenStack series, e.g. "2025.1".
    pub series: String,
    /// The kolla-ansible version the facts were read from, e.g. "20.6.0".
    pub version: String,
    /// `host_os_distributions` of its prechecks: distribution -> releases.
    pub host_os: std::collections::BTreeMap<String, Vec<String>>,
    pub inventory: Vec<Section>,
    pub globals_keys: BTreeSet<String>,
    /// Defaults of the globals rpiimg sets, as written in group_vars.
    pub defaults: std::collections::BTreeMap<String, String>,
    pub requires_python: String,
    /// The host patterns of site.yml's plays (with the playbooks it
    /// imports), in order (the tests check every play reaches a host).
    #[cfg_attr(not(test), allow(dead_code))]
    pub site_plays: Vec<String>,
    ansible_requirement: AnsibleRequirement,
}

impl Release {
    /// The pip requirement for the ansible-core this release accepts.
    pub(crate) fn ansible_pip_spec(&self) -> &str {
        &self.ansible_requirement.pip_spec
    }

    /// Whether its prechecks accept this host OS (os-release `ID` and
    /// `VERSION_CODENAME`; Raspberry Pi OS says `debian`).
    pub(crate) fn accepts(&self, os_id: &str, codename: &str) -> bool {
        self.host_os
            .iter()
            .any(|(d, rels)| d.eq_ignore_ascii_case(os_id) && rels.iter().any(|r| r == codename))
    }

    /// The Debian releases it accepts, for messages and `--help`.
    pub(crate) fn debian(&self) -> String {
        self.host_os
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case("debian"))
            .map_or_else(|| "none".to_string(), |(_, r)| r.join(", "))
    }

    /// Every group of its stock inventory.
    pub(crate) fn groups(&self) -> BTreeSet<&str> {
        self.inventory.iter().map(|s| s.name.as_str()).collect()
    }

    /// Whether the release turns ProxySQL on by default (the guide turns it
    /// off on Raspberry Pi OS from 2025.1 on).
    pub(crate) fn proxysql_by_default(&self) -> bool {
        self.defaults
            .get("enable_proxysql")
            .is_some_and(|v| !matches!(v.as_str(), "no" | "false" | "False"))
    }
}

/// Every release rpiimg knows, oldest first.
pub(crate) fn all() -> &'static [Release] {
    static ALL: OnceLock<Vec<Release>> = OnceLock::new();
    ALL.get_or_init(|| {
        FACTS
            .iter()
            .map(|(series, text)| {
                let r: Release = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("src/kolla/releases/{series}.json: {e}"));
                assert_eq!(r.series, *series, "src/kolla/releases/{series}.json");
                r
            })
            .collect()
    })
}

/// The series rpiimg knows, for messages ("2023.1, 2025.1, 2026.1").
pub(crate) fn series_list() -> String {
    all()
        .iter()
        .map(|r| r.series.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn by_series(series: &str) -> Option<&'static Release> {
    all().iter().find(|r| r.series == series)
}

/// The release a cluster uses on a base running `os_id codename`: the
/// profile's `[kolla] release` when it accepts that OS, else (none given)
/// the newest release that does. The error says what is wrong and which
/// releases would do.
pub(crate) fn choose(
    requested: Option<&str>,
    os_id: &str,
    codename: &str,
) -> Result<&'static Release, String> {
    let accepting: Vec<&str> = all()
        .iter()
        .filter(|r| r.accepts(os_id, codename))
        .map(|r| r.series.as_str())
        .collect();
    let would = if accepting.is_empty() {
        format!(
            "no Kolla-Ansible release rpiimg knows ({}) accepts it",
            series_list()
        )
    } else {
        format!(
            "releases that accept it: {}; set [kolla] release to one of them or leave it out to get the newest",
            accepting.join(", ")
        )
    };
    match requested {
        Some(s) => {
            let r = by_series(s).ok_or_else(|| {
                format!(
                    "kolla.release {s:?}: rpiimg knows the Kolla-Ansible releases {}",
                    series_list()
                )
            })?;
            if r.accepts(os_id, codename) {
                Ok(r)
            } else {
                Err(format!(
                    "kolla.release = {s:?} does not accept the base image's OS, {} {codename}: kolla-ansible {}'s prechecks accept Debian {} only, so every node would fail them; {would}",
                    if os_id.is_empty() { "an unknown OS" } else { os_id },
                    r.version,
                    r.debian()
                ))
            }
        }
        None => all()
            .iter()
            .rev()
            .find(|r| r.accepts(os_id, codename))
            .ok_or_else(|| format!("the base image runs {os_id} {codename}: {would}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_and_the_os_they_accept() {
        assert_eq!(series_list(), "2023.1, 2025.1, 2026.1");
        assert!(by_series("2025.1").unwrap().accepts("debian", "bookworm"));
        assert!(!by_series("2025.1").unwrap().accepts("debian", "trixie"));
        assert!(by_series("2026.1").unwrap().accepts("debian", "trixie"));
        // No release: the newest that accepts the base.
        assert_eq!(choose(None, "debian", "trixie").unwrap().series, "2026.1");
        assert_eq!(choose(None, "debian", "bookworm").unwrap().series, "2026.1");
        assert_eq!(
            choose(Some("2025.1"), "debian", "bookworm").unwrap().series,
            "2025.1"
        );
        let e = choose(Some("2025.1"), "debian", "trixie").unwrap_err();
        assert!(
            e.contains("\"2025.1\"")
                && e.contains("debian trixie")
                && e.contains("Debian bookworm only")
                && e.contains("releases that accept it: 2026.1"),
            "{e}"
        );
        assert!(choose(None, "debian", "buster")
            .unwrap_err()
            .contains("no Kolla-Ansible release"));
        assert!(choose(Some("2024.1"), "debian", "bookworm")
            .unwrap_err()
            .contains("2023.1, 2025.1, 2026.1"));
        // ProxySQL: off by default in 2023.1 only.
        assert!(!by_series("2023.1").unwrap().proxysql_by_default());
        assert!(by_series("2025.1").unwrap().proxysql_by_default());
        assert!(by_series("2026.1").unwrap().proxysql_by_default());
        // The group rename of 2026.1 is in the facts.
        assert!(by_series("2025.1").unwrap().groups().contains("kolla-logs"));
        assert!(by_series("2026.1").unwrap().groups().contains("kolla_logs"));
    }

    /// `rpiimg cluster --help` names every release and what it accepts, as
    /// the facts say.
    #[test]
    fn cluster_help_lists_the_releases() {
        for r in all() {
            let line = format!(
                "{}  kolla-ansible {}  Debian {}",
                r.series,
                r.version,
                r.debian()
            );
            assert!(crate::cli::CLUSTER_EXAMPLES.contains(&line), "{line}");
        }
    }
}
