//! The plan: everything a node image must get, as file-level changes
//! grouped by intent. Pure: made from a validated profile and facts read
//! from the base image, so it is testable without an image; `build`
//! applies it, `verify` checks an image against it, `plan` prints it.

mod boot;
pub(crate) mod facts;
mod firstboot;
mod identity;
mod network;
mod overlays;
mod ssh;
mod system;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod units;
mod users;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::profile::Profile;
pub(crate) use facts::ImageFacts;

/// One file-level change; paths are as the booted system sees them.
/// (In manifests the content is left out; its sha256 stands beside it.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Change {
    /// Replaces any file at `path`; missing parents are made 0755 root.
    WriteFile {
        path: String,
        #[serde(skip, default)]
        content: Vec<u8>,
        mode: u16,
        uid: u32,
        gid: u32,
    },
    /// `mkdir -p`; parents 0755 root. The directory itself ends with
    /// exactly this mode and owner even when it existed (verify checks it).
    Mkdir {
        path: String,
        mode: u16,
        uid: u32,
        gid: u32,
    },
    /// Replaces a file or link at `path`.
    Symlink {
        path: String,
        target: String,
    },
    /// No error when absent.
    Remove {
        path: String,
    },
    RemoveTree {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Chown {
        path: String,
        uid: u32,
        gid: u32,
        recursive: bool,
    },
}

impl Change {
    pub(crate) fn path(&self) -> &str {
        match self {
            Change::WriteFile { path, .. }
            | Change::Mkdir { path, .. }
            | Change::Symlink { path, .. }
            | Change::Remove { path }
            | Change::RemoveTree { path }
            | Change::Chown { path, .. } => path,
            Change::Rename { to, .. } => to,
        }
    }

    /// The sha256 of the content a file write puts there (`None` for other
    /// changes): what manifests record and verify compares.
    pub(crate) fn content_sha256(&self) -> Option<String> {
        match self {
            Change::WriteFile { content, .. } => Some(sha256_hex(content)),
            _ => None,
        }
    }

    /// One line for people.
    pub(crate) fn describe(&self) -> String {
        match self {
            Change::WriteFile {
                path,
                content,
                mode,
                uid,
                gid,
            } => format!(
                "write   {path}  ({mode:04o} {uid}:{gid}, {} bytes, sha256 {})",
                content.len(),
                self.content_sha256()
                    .unwrap_or_default()
                    .get(..16)
                    .unwrap_or_default()
            ),
            Change::Mkdir {
                path,
                mode,
                uid,
                gid,
            } => format!("mkdir   {path}  ({mode:04o} {uid}:{gid})"),
            Change::Symlink { path, target } => format!("symlink {path} -> {target}"),
            Change::Remove { path } => format!("remove  {path}"),
            Change::RemoveTree { path } => format!("rm -r   {path}"),
            Change::Rename { from, to } => format!("move    {from} -> {to}"),
            Change::Chown {
                path,
                uid,
                gid,
                recursive,
            } => {
                format!(
                    "chown   {path}  ({uid}:{gid}{})",
                    if *recursive { ", recursive" } else { "" }
                )
            }
        }
    }
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    crate::bytes::hex(&Sha256::digest(b))
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Step {
    pub intent: String,
    #[serde(serialize_with = "changes_with_content")]
    pub changes: Vec<Change>,
}

/// A change as `plan --json` shows it: a written file's content as text
/// (when UTF-8), its size and sha256. Manifests keep only the digest.
#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    change: &'a Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

fn changes_with_content<S: serde::Serializer>(c: &[Change], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(c.iter().map(|change| match change {
        Change::WriteFile { path, content, .. } => Shown {
            change,
            size: Some(content.len()),
            sha256: change.content_sha256(),
            text: if is_private_key(path) {
                Some(PRIVATE_KEY)
            } else {
                std::str::from_utf8(content).ok()
            },
        },
        _ => Shown {
            change,
            size: None,
            sha256: None,
            text: None,
        },
    }))
}

/// What `plan` shows of a plan's file texts, per change of
/// [`Plan::changes`]: `Some(why)` for a text that is not shown (in
/// `plan --json`, and written as `why` by `plan --render-to`).
#[derive(Clone)]
pub(crate) struct Redaction(Vec<Option<&'static str>>);

const HOLDS_SECRET: &str = "<redacted: holds a secret of the profile; --show-secrets shows it>";
const MAY_HOLD_SECRET: &str = "<redacted: may hold a secret of the profile (planning with other secret values failed); --show-secrets shows it>";
const PRIVATE_KEY: &str = "<redacted: SSH host private key>";

impl Redaction {
    /// `--show-secrets`: every text as it is (`plan --json` still never
    /// shows host private keys).
    pub(crate) fn none() -> Redaction {
        Redaction(Vec::new())
    }

    /// The texts of `plan` (made from `p` on `f`) that depend on a secret
    /// of the profile. Dependence, not a search for the value: a template
    /// may write a secret transformed (`|upper`, `|reverse`, `|yaml`
    /// escaping, a hash of it), and a short value would match everywhere.
    /// So plan again with every secret replaced by another value of its
    /// kind ([`Profile::with_placeholder_secrets`]); a written file whose
    /// change differs between the two plans depends on one. Planning is
    /// pure and deterministic (same inputs, same plan), so nothing else
    /// differs. A file that moves because a secret decides whether an
    /// earlier file is written differs too: hidden, the safe side. As a
    /// second net, texts that contain a secret value (or its upper, lower,
    /// reversed or JSON-escaped form) and /etc/shadow with a crypt hash
    /// (the base's own hashes are secret as well) are hidden; so are host
    /// private keys.
    pub(crate) fn of(plan: &Plan, p: &Profile, f: &ImageFacts) -> Redaction {
        let other = make_plan(&p.with_placeholder_secrets(), f).ok();
        let others: Vec<&Change> = other.iter().flat_map(Plan::changes).collect();
        let mut forms: Vec<String> = Vec::new();
        for v in p.secret_values() {
            let json = serde_json::to_string(&v).unwrap_or_default();
            forms.push(json.trim_matches('"').to_string());
            forms.push(v.to_uppercase());
            forms.push(v.to_lowercase());
            forms.push(v.chars().rev().collect());
            forms.push(v);
        }
        Redaction(
            plan.changes()
                .enumerate()
                .map(|(i, c)| {
                    let Change::WriteFile { path, content, .. } = c else {
                        return None;
                    };
                    let text = String::from_utf8_lossy(content);
                    if is_private_key(path) {
                        Some(PRIVATE_KEY)
                    } else if other.is_none() {
                        Some(MAY_HOLD_SECRET)
                    } else if others.get(i) != Some(&c)
                        || forms.iter().any(|x| text.contains(x.as_str()))
                        || (path == "/etc/shadow" && text.lines().any(has_crypt_hash))
                    {
                        Some(HOLDS_SECRET)
                    } else {
                        None
                    }
                })
                .collect(),
        )
    }

    /// Why the text of the `i`-th change is not shown, if it is not.
    pub(crate) fn of_change(&self, i: usize) -> Option<&'static str> {
        self.0.get(i).copied().flatten()
    }
}

impl Plan {
    /// `plan --json`: each written file's text, except those `hidden`
    /// hides (and host private keys, always).
    pub(crate) fn to_json(&self, hidden: &Redaction) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        // The JSON's changes are the plan's, in order: number them alike.
        let mut i = 0;
        if let Some(steps) = v.get_mut("steps").and_then(|s| s.as_array_mut()) {
            for st in steps {
                let Some(changes) = st.get_mut("changes").and_then(|c| c.as_array_mut()) else {
                    continue;
                };
                for c in changes {
                    if let Some(why) = hidden.of_change(i) {
                        c["text"] = why.into();
                    }
                    i += 1;
                }
            }
        }
        v
    }
}

/// Whether a shadow(5) line holds a crypt(3) hash (not `!`, `*` or empty).
fn has_crypt_hash(line: &str) -> bool {
    line.split(':').nth(1).is_some_and(|h| h.starts_with('$'))
}

/// SSH host private keys: their text is never shown (plans, goldens, logs).
pub(crate) fn is_private_key(path: &str) -> bool {
    path.strip_prefix("/etc/ssh/")
        .map(|rest| rest.strip_prefix("rpiimg/").unwrap_or(rest))
        .and_then(|name| name.strip_prefix("ssh_host_"))
        .is_some_and(|rest| rest.ends_with("_key"))
}

/// The Raspberry Pi OS releases rpiimg knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OsFlavour {
    Bookworm,
    Trixie,
}

impl std::fmt::Display for OsFlavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OsFlavour::Bookworm => "bookworm",
            OsFlavour::Trixie => "trixie",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    pub node: String,
    pub os: OsFlavour,
    /// The Kolla-Ansible release of the cluster's management bundle: the
    /// profile's, or the newest that accepts the base's OS (`kolla_release`:
    /// its series, in JSON).
    #[serde(rename = "kolla_release", serialize_with = "series")]
    pub kolla: &'static crate::kolla::Release,
    /// How the release was chosen, for people.
    pub kolla_reason: String,
    pub warnings: Vec<String>,
    pub steps: Vec<Step>,
}

impl Plan {
    pub(crate) fn changes(&self) -> impl Iterator<Item = &Change> {
        self.steps.iter().flat_map(|s| s.changes.iter())
    }

    pub(crate) fn render(&self) -> String {
        let mut s = format!("plan for {} ({})\n", self.node, self.os);
        s.push_str(&format!("kolla: {}\n", self.kolla_reason));
        for w in &self.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        for st in &self.steps {
            s.push_str(&format!("\n== {}\n", st.intent));
            for c in &st.changes {
                s.push_str(&format!("   {}\n", c.describe()));
            }
        }
        s.push_str(&format!(
            "\n{} steps, {} changes\n",
            self.steps.len(),
            self.changes().count()
        ));
        s
    }
}

#[derive(Debug, thiserror::Error)]
#[error("plan for {node}: {msg}")]
pub(crate) struct PlanError {
    pub node: String,
    pub msg: String,
}

pub(crate) use crate::profile::INTERFACES;

/// The plan being made: the profile, the base's facts, what was found out
/// once (release, the node's cluster entry, warnings), and the steps so far.
struct Builder<'a> {
    p: &'a Profile,
    f: &'a ImageFacts,
    os: OsFlavour,
    node: crate::profile::Node,
    kolla: &'static crate::kolla::Release,
    warnings: Vec<String>,
    steps: Vec<Step>,
}

impl<'a> Builder<'a> {
    /// Start a plan: the base's release must be one rpiimg knows, and the
    /// profile's host one of its cluster's nodes.
    fn new(p: &'a Profile, f: &'a ImageFacts) -> Result<Self, PlanError> {
        let err = |msg: String| PlanError {
            node: p.hostname.clone(),
            msg,
        };
        let os = match (f.os_id.as_str(), f.codename.as_str()) {
            ("debian", "bookworm") => OsFlavour::Bookworm,
            ("debian", "trixie") => OsFlavour::Trixie,
            (id, codename) => {
                return Err(err(format!(
                    "the base image runs {} {codename} (/etc/os-release); rpiimg knows Raspberry Pi OS bookworm and trixie",
                    if id.is_empty() { "an unknown OS" } else { id },
                )))
            }
        };
        let node = p
            .node()
            .ok_or_else(|| err(format!("{} is not in the cluster's node list", p.hostname)))?
            .clone();
        let kolla =
            crate::kolla::choose(p.kolla.release.as_deref(), &f.os_id, &f.codename).map_err(err)?;
        let warnings = crate::profile::validate(p)
            .into_iter()
            .filter(|x| !x.error)
            .map(|x| x.to_string())
            .collect();
        Ok(Builder {
            p,
            f,
            os,
            node,
            kolla,
            warnings,
            steps: Vec::new(),
        })
    }

    fn step(&mut self, intent: impl Into<String>, changes: Vec<Change>) {
        if !changes.is_empty() {
            self.steps.push(Step {
                intent: intent.into(),
                changes,
            });
        }
    }
    fn err(&self, msg: impl Into<String>) -> PlanError {
        PlanError {
            node: self.p.hostname.clone(),
            msg: msg.into(),
        }
    }
}

/// Make the plan for the profile's node on an image with these facts:
/// the steps in the order they are applied.
pub(crate) fn make_plan(p: &Profile, f: &ImageFacts) -> Result<Plan, PlanError> {
    let mut b = Builder::new(p, f)?;
    identity::steps(&mut b);
    let db = users::steps(&mut b)?;
    ssh::steps(&mut b)?;
    network::steps(&mut b)?;
    system::steps(&mut b)?;
    boot::steps(&mut b)?;
    let ctx = overlays::context(p, f, &b.node);
    firstboot::service(&mut b, &ctx)?;
    let extra = overlays::extra(p, &ctx, &db).map_err(|e| b.err(e))?;
    b.step("extra files and overlays from the profile", extra);
    firstboot::presets(&mut b);
    for o in dropin_overrides(b.steps.iter().flat_map(|s| s.changes.iter()), &f.dropins) {
        b.warnings.push(format!(
            "a file of the base image overrides the profile: {o}"
        ));
    }
    let kolla_reason = match &p.kolla.release {
        Some(_) => format!(
            "Kolla-Ansible {} (kolla-ansible {}), as the profile says; it accepts Debian {}",
            b.kolla.series,
            b.kolla.version,
            b.kolla.debian()
        ),
        None => format!(
            "Kolla-Ansible {} (kolla-ansible {}), the newest release rpiimg knows that accepts the base's Debian {}",
            b.kolla.series, b.kolla.version, f.codename
        ),
    };
    Ok(Plan {
        node: p.hostname.clone(),
        os: b.os,
        kolla: b.kolla,
        kolla_reason,
        warnings: b.warnings,
        steps: b.steps,
    })
}

fn series<S: serde::Serializer>(
    r: &&'static crate::kolla::Release,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&r.series)
}

/// The settings of the plan's drop-ins (files written into one of
/// [`crate::os::dropins::DIRS`]) that another file takes away, with the
/// directories as the node will have them: `base` (path -> text) with the
/// plan's writes and removals applied.
fn dropin_overrides<'a>(
    changes: impl Iterator<Item = &'a Change>,
    base: &std::collections::BTreeMap<String, String>,
) -> Vec<crate::os::dropins::Override> {
    use crate::os::dropins;
    let mut files = base.clone();
    let mut ours = Vec::new();
    for c in changes {
        match c {
            Change::WriteFile { path, content, .. } if dropins::dir_of(path).is_some() => {
                files.insert(path.clone(), String::from_utf8_lossy(content).into_owned());
                ours.push(path.clone());
            }
            Change::Remove { path } => {
                files.remove(path);
            }
            _ => {}
        }
    }
    ours.iter()
        .flat_map(|p| dropins::overrides(p, &files))
        .collect()
}

fn write(path: &str, content: impl Into<Vec<u8>>, mode: u16) -> Change {
    Change::WriteFile {
        path: path.into(),
        content: content.into(),
        mode,
        uid: 0,
        gid: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::system::set_conf;
    use super::*;
    use crate::profile::derived_mac;

    #[test]
    fn macs_are_stable_local_unicast_and_distinct() {
        let a = derived_mac("ost", "ost01", "veth0");
        assert_eq!(a, derived_mac("ost", "ost01", "veth0"));
        assert_ne!(a, derived_mac("ost", "ost02", "veth0"));
        let b0 = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(b0 & 0x03, 0x02, "locally administered, unicast");
    }

    #[test]
    fn conf_edits() {
        let t = "#CONF_SWAPFILE=/var/swap\nCONF_SWAPSIZE=512\n#CONF_MAXSWAP=2048\n";
        let t = set_conf(t, "CONF_SWAPSIZE", "4096");
        let t = set_conf(&t, "CONF_MAXSWAP", "4096");
        assert_eq!(
            t,
            "#CONF_SWAPFILE=/var/swap\nCONF_SWAPSIZE=4096\nCONF_MAXSWAP=4096\n"
        );
    }

    /// A directory the plan hands to a user keeps that owner to the end:
    /// nothing after the recursive chown makes it root's again.
    #[test]
    fn homes_keep_their_owner() {
        for os in ["bookworm", "trixie"] {
            for name in ["devstack-aio", "ost04-control"] {
                let plan = make_plan(&testing::profile(name), &testing::facts(os)).unwrap();
                let all: Vec<&Change> = plan.changes().collect();
                let homes: Vec<(usize, &str, u32)> = all
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| match c {
                        Change::Chown {
                            path,
                            uid,
                            recursive: true,
                            ..
                        } => Some((i, path.as_str(), *uid)),
                        _ => None,
                    })
                    .collect();
                assert!(!homes.is_empty(), "{name}: no home handed over");
                for (i, home, uid) in homes {
                    for c in &all[i + 1..] {
                        if let Change::Mkdir { path, uid: u, .. } = c {
                            assert!(
                                path != home || *u == uid,
                                "{name}/{os}: {} after chown {home}",
                                c.describe()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn swap_follows_the_release() {
        let p = testing::profile("ost04-control");
        let path_of = |os: &str| {
            make_plan(&p, &testing::facts(os))
                .unwrap()
                .steps
                .iter()
                .find(|s| s.intent.starts_with("swap"))
                .map(|s| s.changes[0].clone())
                .unwrap()
        };
        let Change::WriteFile { path, content, .. } = path_of("bookworm") else {
            panic!("no swap write")
        };
        assert_eq!(path, "/etc/dphys-swapfile");
        let text = String::from_utf8(content).unwrap();
        assert!(text.contains("\nCONF_SWAPSIZE=4096\n") && text.contains("\nCONF_MAXSWAP=4096\n"));
        let Change::WriteFile { path, content, .. } = path_of("trixie") else {
            panic!("no swap write")
        };
        assert_eq!(path, "/etc/rpi/swap.conf.d/zz-rpiimg.conf");
        assert!(String::from_utf8(content)
            .unwrap()
            .contains("FixedSizeMiB=4096"));
        let mut f = testing::facts("bookworm");
        f.files.remove("/etc/dphys-swapfile");
        let e = make_plan(&p, &f).unwrap_err().to_string();
        assert!(
            e.contains("swap_mib") && e.contains("dphys-swapfile"),
            "{e}"
        );
    }

    #[test]
    fn cloud_init_only_where_it_exists() {
        let p = testing::profile("ost01-compute");
        let cfg = |os: &str| {
            make_plan(&p, &testing::facts(os))
                .unwrap()
                .changes()
                .find_map(|c| match c {
                    Change::WriteFile { path, content, .. } if path.starts_with("/etc/cloud/") => {
                        Some(String::from_utf8(content.clone()).unwrap())
                    }
                    _ => None,
                })
        };
        assert_eq!(cfg("bookworm"), None);
        let t = cfg("trixie").unwrap();
        assert!(
            t.contains("network: {config: disabled}") && t.contains("users: []"),
            "{t}"
        );
    }

    #[test]
    fn other_releases_are_refused() {
        let mut f = testing::facts("bookworm");
        f.codename = "bullseye".into();
        let e = make_plan(&testing::profile("ost01-compute"), &f)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bullseye") && e.contains("bookworm and trixie"),
            "{e}"
        );
    }

    /// Same inputs, same plan (so a second plan with other secrets differs
    /// only where a secret goes); the texts hidden are those that depend
    /// on a secret, however transformed or short, and no others.
    #[test]
    fn redaction_follows_dependence_on_secrets() {
        let mut p = testing::profile("ost04-control");
        let f = testing::facts("trixie");
        p.vars.insert("pin".into(), "q9".into());
        p.vars.insert("port".into(), "8080".into());
        let file = |path: &str, content: &str| crate::profile::ExtraFile {
            path: path.into(),
            content: Some(content.into()),
            source: None,
            mode: "644".parse().unwrap(),
            owner: "0:0".parse().unwrap(),
            data: None,
        };
        p.files = vec![
            file("/etc/pin", "{{ vars.pin|upper|reverse }}"),
            // A placeholder of the same shape still parses as a number.
            file("/etc/port", "{{ vars.port|int + 1 }}"),
            file("/etc/plain", "nothing secret"),
        ];
        let plan = make_plan(&p, &f).unwrap();
        let again = make_plan(&p, &f).unwrap();
        assert_eq!(
            plan.changes().collect::<Vec<_>>(),
            again.changes().collect::<Vec<_>>()
        );
        assert_eq!(plan.warnings, again.warnings);
        let hidden = Redaction::of(&plan, &p, &f);
        let why = |path: &str| {
            let i = plan.changes().position(|c| c.path() == path).unwrap();
            hidden.of_change(i)
        };
        for path in ["/etc/pin", "/etc/port", "/etc/shadow"] {
            assert_eq!(why(path), Some(HOLDS_SECRET), "{path}");
        }
        assert_eq!(
            why("/etc/ssh/rpiimg/ssh_host_ed25519_key"),
            Some(PRIVATE_KEY)
        );
        assert_eq!(why("/etc/plain"), None);
        assert_eq!(why("/etc/hostname"), None);
        assert!(plan
            .changes()
            .enumerate()
            .all(|(i, _)| hidden.of_change(i) != Some(MAY_HOLD_SECRET)));
        let json = plan.to_json(&hidden).to_string();
        assert!(!json.contains("9Q") && json.contains("nothing secret"));
        assert!(plan
            .to_json(&Redaction::none())
            .to_string()
            .contains("\"9Q\""));
    }

    /// On an example profile exactly the secret-bearing files are hidden:
    /// the one that writes a `[vars]` password, /etc/shadow (hashes of
    /// the profile's passwords) and the host private keys.
    #[test]
    fn only_secret_bearing_files_are_hidden() {
        let p = testing::profile("devstack-aio");
        let f = testing::facts("trixie");
        let plan = make_plan(&p, &f).unwrap();
        let hidden = Redaction::of(&plan, &p, &f);
        let paths: Vec<&str> = plan
            .changes()
            .enumerate()
            .filter(|(i, _)| hidden.of_change(*i).is_some())
            .map(|(_, c)| c.path())
            .collect();
        assert_eq!(
            paths,
            [
                "/etc/shadow",
                "/etc/ssh/rpiimg/ssh_host_ed25519_key",
                "/etc/ssh/rpiimg/ssh_host_ecdsa_key",
                "/opt/stack/local.conf"
            ]
        );
    }

    /// The rendered first-boot script, run by bash against stub apt-get,
    /// dpkg-query, getent, sleep, systemctl and netplan: order, backoff,
    /// hand-over to netplan, done-marker, idempotence, giving up.
    #[test]
    fn firstboot_script_behaves() {
        use std::os::unix::fs::PermissionsExt;
        let plan = make_plan(
            &testing::profile("ost04-control"),
            &testing::facts("bookworm"),
        )
        .unwrap();
        let script = plan
            .changes()
            .find_map(|c| match c {
                Change::WriteFile { path, content, .. }
                    if path == "/usr/local/sbin/rpiimg-firstboot" =>
                {
                    Some(String::from_utf8(content.clone()).unwrap())
                }
                _ => None,
            })
            .unwrap();
        let run = |apt_fails: u32| {
            let d = tempfile::tempdir().unwrap();
            let root = d.path();
            for sub in ["bin", "log", "lib", "net"] {
                std::fs::create_dir(root.join(sub)).unwrap();
            }
            for f in [
                "10-rpiimg-veth0.netdev",
                "20-rpiimg-brmux.netdev",
                "22-rpiimg-eth0.network",
                "30-rpiimg-bootstrap-veth0.network",
            ] {
                std::fs::write(root.join("net").join(f), "").unwrap();
            }
            let calls = root.join("calls");
            let stub = |name: &str, body: &str| {
                let p = root.join("bin").join(name);
                std::fs::write(
                    &p,
                    format!(
                        "#!/bin/sh\necho \"{name} $*\" >>'{}'\n{body}\n",
                        calls.display()
                    ),
                )
                .unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            };
            let count = root.join("count");
            stub(
                "apt-get",
                &format!(
                    "case \"$*\" in *' update') n=$(cat '{c}' 2>/dev/null || echo 0); echo $((n+1)) >'{c}'; [ \"$n\" -ge {apt_fails} ];; esac",
                    c = count.display()
                ),
            );
            stub(
                "dpkg-query",
                "case \"$*\" in *unattended-upgrades) echo 'install ok installed';; *) exit 1;; esac",
            );
            stub("getent", "");
            stub("sleep", "");
            stub("systemctl", "");
            stub("netplan", "");
            stub("networkctl", "");
            let s = script
                .replace(
                    "/var/log/rpiimg-firstboot.log",
                    &root.join("log/fb.log").display().to_string(),
                )
                .replace(
                    "/var/lib/rpiimg/firstboot.done",
                    &root.join("lib/done").display().to_string(),
                )
                .replace(
                    "NETWORKD=/etc/systemd/network",
                    &format!("NETWORKD={}", root.join("net").display()),
                )
                .replace(
                    "ISSUE=/etc/issue.d/rpiimg-firstboot.issue",
                    &format!("ISSUE={}", root.join("issue.d/fb.issue").display()),
                )
                .replace(
                    "MOTD=/etc/motd.d/rpiimg-firstboot",
                    &format!("MOTD={}", root.join("motd.d/fb").display()),
                );
            let sp = root.join("firstboot");
            std::fs::write(&sp, s).unwrap();
            let go = || {
                std::process::Command::new("bash")
                    .arg(&sp)
                    .env(
                        "PATH",
                        format!(
                            "{}:{}",
                            root.join("bin").display(),
                            std::env::var("PATH").unwrap()
                        ),
                    )
                    .status()
                    .unwrap()
                    .success()
            };
            let first = go();
            let calls1 = std::fs::read_to_string(&calls).unwrap_or_default();
            let second = go();
            let calls2 = std::fs::read_to_string(&calls).unwrap_or_default();
            let mut left: Vec<String> = std::fs::read_dir(root.join("net"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            let done = root.join("lib/done").exists();
            let mut log = std::fs::read_to_string(root.join("log/fb.log")).unwrap_or_default();
            // The banner and the MOTD say the same; the log carries it for the asserts.
            let issue = std::fs::read_to_string(root.join("issue.d/fb.issue")).unwrap_or_default();
            let motd = std::fs::read_to_string(root.join("motd.d/fb")).unwrap_or_default();
            assert_eq!(issue, motd);
            log.push_str(&format!("STATUS: {issue}"));
            (first, calls1, second, calls2, left, done, log)
        };

        let (ok, calls, ok2, calls2, left, done, log) = run(2);
        assert!(ok && done, "{calls}\n{log}");
        let lines: Vec<&str> = calls.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle:?} not in {calls}"))
        };
        assert!(at("purge unattended-upgrades") < at("getent hosts"));
        assert!(at("getent hosts") < at(" update"));
        assert!(
            at("install qemu-system-arm sshpass ufw net-tools lm-sensors netplan.io")
                > at(" upgrade")
        );
        let sleeps: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("sleep"))
            .copied()
            .collect();
        assert_eq!(
            sleeps,
            ["sleep 10", "sleep 20"],
            "backoff while the mirror fails"
        );
        assert!(calls.contains("systemctl disable rpiimg-firstboot.service"));
        assert_eq!(
            left,
            ["10-rpiimg-veth0.netdev"],
            "bootstrap files handed to netplan"
        );
        assert!(log.contains("rpiimg-firstboot: done"), "{log}");
        assert!(
            log.contains("STATUS: rpiimg: first-boot provisioning of ost04 is done ("),
            "{log}"
        );
        // Second run: the marker makes it a no-op.
        assert!(ok2);
        assert!(!calls2[calls.len()..].contains("apt-get"), "{calls2}");

        let (ok, calls, _, _, left, done, log) = run(1000);
        assert!(!ok && !done, "{log}");
        assert!(log.contains("giving up after 30 attempts"), "{log}");
        assert!(
            log.contains(
                "STATUS: rpiimg: first-boot provisioning of ost04 FAILED after 30 attempts"
            ),
            "{log}"
        );
        assert!(calls.lines().filter(|l| *l == "sleep 300").count() > 20);
        assert!(!calls.contains("systemctl disable"));
        assert_eq!(left.len(), 4, "network untouched when packages failed");
    }

    /// The preset file pins every unit the plan touched, and only those.
    #[test]
    fn unit_states_are_pinned_as_presets() {
        for os in ["bookworm", "trixie"] {
            let f = testing::facts(os);
            let plan = make_plan(&testing::profile("ost04-control"), &f).unwrap();
            let intents = units::intents(plan.changes(), &f);
            let get = |u: &str| intents.get(u).copied();
            use units::Intent::*;
            assert_eq!(get("NetworkManager.service"), Some(Masked), "{os}");
            assert_eq!(get("userconfig.service"), Some(Masked), "{os}");
            assert_eq!(get("NetworkManager-wait-online.service"), Some(Disabled));
            assert_eq!(get("systemd-networkd.service"), Some(Enabled));
            assert_eq!(get("ssh.service"), Some(Enabled));
            assert_eq!(get("getty@tty1.service"), Some(Enabled));
            assert_eq!(get("rpiimg-firstboot.service"), Some(Enabled));
            assert_eq!(get("cron.service"), None, "untouched units stay out");
            // The key regeneration is left alone: the derived keys are out
            // of its reach (plan::ssh).
            assert_eq!(get("regenerate_ssh_host_keys.service"), None, "{os}");
            let preset = plan
                .changes()
                .find_map(|c| match c {
                    Change::WriteFile { path, content, .. } if path == units::PRESET_FILE => {
                        Some(String::from_utf8(content.clone()).unwrap())
                    }
                    _ => None,
                })
                .unwrap();
            for line in [
                "disable NetworkManager.service\n",
                "disable userconfig.service\n",
                "enable systemd-networkd.service\n",
                "enable rpiimg-firstboot.service\n",
                "enable getty@.service tty1\n",
            ] {
                assert!(preset.contains(line), "{line} in\n{preset}");
            }
            assert!(!preset.contains("getty@tty1"), "{preset}");
        }
    }

    #[test]
    fn json_shows_content_and_digest() {
        let mut p = testing::profile("ost01-compute");
        p.users[0].password = Some("Xyzzy-plain-42".into());
        let plan = make_plan(&p, &testing::facts("bookworm")).unwrap();
        let v = serde_json::to_value(&plan).unwrap();
        let changes: Vec<&serde_json::Value> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["changes"].as_array().unwrap())
            .collect();
        let host = changes
            .iter()
            .find(|c| c["path"] == "/etc/hostname")
            .unwrap();
        assert_eq!(host["op"], "write_file");
        assert_eq!(host["text"], "ost01\n");
        assert_eq!(host["size"], 6);
        assert_eq!(host["sha256"], sha256_hex(b"ost01\n"));
        assert_eq!(host["mode"], 0o644);
        let link = changes.iter().find(|c| c["op"] == "symlink").unwrap();
        assert!(link.get("sha256").is_none() && link["target"].is_string());
        // The profile's plain password never appears; its hash does.
        let all = v.to_string();
        assert!(!all.contains("Xyzzy-plain-42") && all.contains("ubuntu:$6$"));
        assert!(!plan.render().contains("Xyzzy-plain-42"));
    }

    /// Every drop-in the plan writes decides its settings against the files
    /// a stock image ships in the same directory (98-rpi.conf sets
    /// vm.min_free_kbytes; 99_raspberry-pi.cfg is cloud-init's last file;
    /// sudo and sshd read their directories in opposite orders), and a
    /// file that would take one away is named in the plan.
    #[test]
    fn dropins_win_against_the_stock_files_and_losses_are_named() {
        for os in ["bookworm", "trixie"] {
            let mut p = testing::profile("ost04-control");
            p.sysctl.insert("vm.min_free_kbytes".into(), "65536".into());
            let mut f = testing::facts(os);
            let plan = make_plan(&p, &f).unwrap();
            let written: Vec<&str> = plan
                .changes()
                .filter(|c| matches!(c, Change::WriteFile { .. }))
                .map(Change::path)
                .filter(|p| crate::os::dropins::dir_of(p).is_some())
                .collect();
            let mut want = vec![
                users::SUDOERS_DROPIN,
                ssh::SSHD_DROPIN,
                "/etc/sysctl.d/zz-rpiimg.conf",
                "/etc/systemd/timesyncd.conf.d/zz-rpiimg.conf",
            ];
            if os == "trixie" {
                want.extend([
                    "/etc/cloud/cloud.cfg.d/zz-rpiimg.cfg",
                    "/etc/rpi/swap.conf.d/zz-rpiimg.conf",
                ]);
            }
            for w in &want {
                assert!(written.contains(w), "{os}: {w} not in {written:?}");
            }
            assert!(
                plan.warnings.iter().all(|w| !w.contains("overrides")),
                "{os}: {:?}",
                plan.warnings
            );
            // A local file sorting after ours takes the value: named.
            f.dropins.insert(
                "/etc/sysctl.d/zzz-local.conf".into(),
                "vm.min_free_kbytes = 8192\n".into(),
            );
            let plan = make_plan(&p, &f).unwrap();
            let w: Vec<&String> = plan
                .warnings
                .iter()
                .filter(|w| w.contains("overrides"))
                .collect();
            assert_eq!(w.len(), 1, "{os}: {:?}", plan.warnings);
            assert!(
                w[0].contains("/etc/sysctl.d/zzz-local.conf") && w[0].contains("8192"),
                "{}",
                w[0]
            );
        }
    }

    /// A Pi 5 node gets the 4 KiB-page kernel in config.txt, a Pi 4 and a
    /// node without a board nothing.
    #[test]
    fn pi5_nodes_boot_the_4k_kernel() {
        let f = testing::facts("bookworm");
        let config = |board| {
            let mut p = testing::profile("ost04-control");
            for n in &mut p.cluster.nodes {
                n.board = board;
            }
            make_plan(&p, &f)
                .unwrap()
                .changes()
                .find(|c| c.path() == "/boot/firmware/config.txt")
                .cloned()
        };
        assert_eq!(config(None), None);
        assert_eq!(config(Some(crate::profile::Board::Pi4)), None);
        let Some(Change::WriteFile { content, .. }) = config(Some(crate::profile::Board::Pi5))
        else {
            panic!("no config.txt for a Pi 5");
        };
        let t = String::from_utf8(content).unwrap();
        assert!(t.starts_with(f.file("/boot/firmware/config.txt").unwrap()));
        assert!(t.ends_with("[pi5]\nkernel=kernel8.img\n[all]\n"), "{t}");
    }

    /// A Wi-Fi profile sets the country on the kernel command line (kept
    /// otherwise as it was, first-boot words included), turns NetworkManager's
    /// saved Wi-Fi switch on and unblocks the radio at every boot.
    #[test]
    fn wifi_is_unblocked_the_pis_way() {
        let f = testing::facts("bookworm");
        let mut p = testing::profile("ost04-control");
        p.network.wifi = Some(crate::profile::Wifi {
            ssid: "lab".into(),
            psk: "secret-psk-1".into(),
            country: "PL".into(),
        });
        let plan = make_plan(&p, &f).unwrap();
        let text = |path: &str| {
            plan.changes()
                .find_map(|c| match c {
                    Change::WriteFile {
                        path: q, content, ..
                    } if q == path => Some(String::from_utf8(content.clone()).unwrap()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{path} not written"))
        };
        let cmdline = text("/boot/firmware/cmdline.txt");
        assert!(
            cmdline.ends_with(
                "init=/usr/lib/raspberrypi-sys-mods/firstboot cfg80211.ieee80211_regdom=PL\n"
            ),
            "{cmdline}"
        );
        assert!(
            text("/var/lib/NetworkManager/NetworkManager.state").contains("WirelessEnabled=true")
        );
        assert!(text("/etc/systemd/system/rpiimg-wifi-unblock.service").contains("echo 0"));
        assert!(plan
            .changes()
            .any(|c| c.path()
                == "/etc/systemd/system/sysinit.target.wants/rpiimg-wifi-unblock.service"));
        // Without Wi-Fi, neither the command line nor the state is touched.
        let plan = make_plan(&testing::profile("ost04-control"), &f).unwrap();
        assert!(plan
            .changes()
            .all(|c| c.path() != "/boot/firmware/cmdline.txt"));
    }
}
