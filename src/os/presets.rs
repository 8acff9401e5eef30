//! systemd preset policy (`systemd.preset(5)`), evaluated offline.
//!
//! Why rpiimg needs this: when `/etc/machine-id` is missing or says
//! `uninitialized` (trixie images ship the latter), PID 1 treats the boot as
//! the first one and applies the preset policy to every installed unit
//! (`preset-all`, enable-only mode). A unit that no preset line matches is
//! *enabled*, so a unit an image builder disabled only by removing its links
//! comes back. `verify` uses this module to prove that every unit the plan
//! touched keeps its state through that pass and through a full
//! `systemctl preset-all`.

// Parses preset files read from the image: no unchecked indexing or
// arithmetic (a strange file gets an answer, never a panic).
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;

/// Directories systemd reads preset files from, most important first. A
/// file name in an earlier directory hides the same name in later ones.
pub(crate) const PRESET_DIRS: &[&str] = &[
    "/etc/systemd/system-preset",
    "/run/systemd/system-preset",
    "/usr/local/lib/systemd/system-preset",
    "/usr/lib/systemd/system-preset",
    "/lib/systemd/system-preset",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Enable,
    Disable,
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub action: Action,
    pub pattern: String,
    /// `enable foo@.service a b`: the instances to enable.
    pub instances: Vec<String>,
    /// Where the rule comes from (`DIR/FILE:LINE`), for messages.
    pub origin: String,
}

/// The verdict for one unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub action: Action,
    pub instances: Vec<String>,
    /// `None`: no line matched, systemd's default (enable) applies.
    pub origin: Option<String>,
}

/// All preset rules of an image, in systemd's order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Presets {
    pub rules: Vec<Rule>,
}

impl Presets {
    /// From preset files as found in the image: `(directory, file name) ->
    /// text`. Applies systemd's ordering: by file name across directories,
    /// a name in a more important directory hiding the others.
    pub(crate) fn from_files(files: &BTreeMap<(String, String), String>) -> Presets {
        let mut chosen: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        for dir in PRESET_DIRS {
            for ((d, name), text) in files {
                if d == dir && name.ends_with(".preset") {
                    chosen.entry(name.as_str()).or_insert((d.as_str(), text));
                }
            }
        }
        let mut rules = Vec::new();
        for (name, (dir, text)) in chosen {
            rules.extend(parse(text, &format!("{dir}/{name}")));
        }
        Presets { rules }
    }

    /// What `systemctl preset` does with the unit file `unit` (a template
    /// such as `getty@.service` for instances).
    pub(crate) fn query(&self, unit: &str) -> Verdict {
        for r in &self.rules {
            if glob(&r.pattern, unit) {
                return Verdict {
                    action: r.action,
                    instances: r.instances.clone(),
                    origin: Some(r.origin.clone()),
                };
            }
        }
        Verdict {
            action: Action::Enable,
            instances: Vec::new(),
            origin: None,
        }
    }
}

/// Lines of one preset file. Unknown or malformed lines are skipped, as
/// systemd skips them (with a warning).
pub(crate) fn parse(text: &str, origin: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    for (n, line) in (1u64..).zip(text.lines()) {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        let mut words = l.split_whitespace();
        let action = match words.next() {
            Some("enable") => Action::Enable,
            Some("disable") => Action::Disable,
            Some("ignore") => Action::Ignore,
            _ => continue,
        };
        let Some(pattern) = words.next() else {
            continue;
        };
        out.push(Rule {
            action,
            pattern: pattern.to_string(),
            instances: if action == Action::Enable {
                words.map(String::from).collect()
            } else {
                Vec::new()
            },
            origin: format!("{origin}:{n}"),
        });
    }
    out
}

/// fnmatch(3) without flags: `*`, `?` and `[...]` (with `!`/`^` and ranges).
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point for the last `*` (the
    // pattern after it, and the name from where its match ends): linear in
    // practice and never recursive. Walks slices, so no index can run off.
    let (mut pat, mut rest) = (p.as_slice(), s.as_slice());
    let mut star: Option<(&[char], &[char])> = None;
    while let Some((&c, after_c)) = rest.split_first() {
        let next = match pat.split_first() {
            Some(('*', after)) => {
                star = Some((after, rest));
                pat = after;
                continue;
            }
            Some(('?', after)) => Some(after),
            Some(('[', after)) => match class(after, c) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                // An unclosed bracket is a literal '['.
                None => (c == '[').then_some(after),
            },
            Some((&pc, after)) => (pc == c).then_some(after),
            None => None,
        };
        if let Some(next) = next {
            pat = next;
            rest = after_c;
            continue;
        }
        // No match here: the last `*` takes one more character, if any.
        let Some((after_star, from)) = star else {
            return false;
        };
        let Some((_, from)) = from.split_first() else {
            return false;
        };
        pat = after_star;
        rest = from;
        star = Some((after_star, from));
    }
    pat.iter().all(|&c| c == '*')
}

/// A bracket expression whose `[` precedes `p`: whether `c` matches it,
/// and the pattern after its `]`; `None` when the bracket is not closed.
fn class(p: &[char], c: char) -> Option<(bool, &[char])> {
    let (negate, mut rest) = match p.split_first() {
        Some(('!' | '^', after)) => (true, after),
        _ => (false, p),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        rest = match rest {
            // A `]` first in the set is a member, not its end.
            [']', after @ ..] if !first => return Some((matched != negate, after)),
            [lo, '-', hi, after @ ..] if *hi != ']' => {
                matched |= (*lo..=*hi).contains(&c);
                after
            }
            [ch, after @ ..] => {
                matched |= *ch == c;
                after
            }
            [] => return None,
        };
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_as_fnmatch() {
        assert!(glob(
            "systemd-journal-gatewayd.*",
            "systemd-journal-gatewayd.socket"
        ));
        assert!(glob("*", "NetworkManager.service"));
        assert!(glob("getty@.service", "getty@.service"));
        assert!(!glob("getty@.service", "getty@tty1.service"));
        assert!(glob("ssh?.service", "sshd.service"));
        assert!(glob("[a-c]*.service", "cron.service"));
        assert!(!glob("[!a-c]*.service", "cron.service"));
        assert!(glob("*.s*e", "ssh.service"));
        assert!(!glob("*.socket", "ssh.service"));
        assert!(glob("a[b", "a[b"));
    }

    #[test]
    fn first_match_wins_etc_hides_usr_and_default_is_enable() {
        let mut files = BTreeMap::new();
        files.insert(
            (
                "/usr/lib/systemd/system-preset".into(),
                "90-systemd.preset".into(),
            ),
            "enable getty@.service\ndisable debug-shell.service\n".into(),
        );
        files.insert(
            (
                "/usr/lib/systemd/system-preset".into(),
                "00-x.preset".into(),
            ),
            "enable nothing.service\n".into(),
        );
        files.insert(
            ("/etc/systemd/system-preset".into(), "00-x.preset".into()),
            "# ours\ndisable NetworkManager.service\nenable getty@.service tty1 tty2\nbogus line\n"
                .into(),
        );
        let p = Presets::from_files(&files);
        assert_eq!(p.rules.len(), 4, "{:?}", p.rules);
        let v = p.query("NetworkManager.service");
        assert_eq!(v.action, Action::Disable);
        assert_eq!(
            v.origin.as_deref(),
            Some("/etc/systemd/system-preset/00-x.preset:2")
        );
        let g = p.query("getty@.service");
        assert_eq!(g.instances, vec!["tty1", "tty2"]);
        assert_eq!(p.query("nothing.service").action, Action::Enable);
        assert_eq!(p.query("nothing.service").origin, None);
        assert_eq!(p.query("debug-shell.service").action, Action::Disable);
        assert_eq!(p.query("userconfig.service").origin, None);
    }
}
