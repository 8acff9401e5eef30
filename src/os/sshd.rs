//! sshd's configuration as sshd reads it: `/etc/ssh/sshd_config` with its
//! `Include` lines expanded in place (Debian's first line includes
//! `/etc/ssh/sshd_config.d/*.conf`, read in name order), the first value
//! of a keyword winning, `HostKey` accumulating, and nothing after the
//! first `Match` applying globally. Pure: the texts come from the caller.

use crate::error::Result;
use crate::fs::view::SystemView;

pub(crate) const MAIN: &str = "/etc/ssh/sshd_config";
pub(crate) const DROPIN_DIR: &str = "/etc/ssh/sshd_config.d";

/// The key files sshd loads when no `HostKey` line is given (sshd(8)).
pub(crate) const DEFAULT_HOST_KEYS: [&str; 3] = [
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ed25519_key",
];

/// One global setting line: which file, the keyword (lower case), the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    pub file: String,
    pub keyword: String,
    pub value: String,
}

/// The global settings in the order sshd reads them.
#[derive(Debug, Clone, Default)]
pub(crate) struct SshdConfig {
    pub settings: Vec<Setting>,
}

impl SshdConfig {
    /// `main` is the text of sshd_config; `dropins` the `*.conf` files of
    /// sshd_config.d as (name, text), in any order. Drop-ins count only
    /// where the main file includes them, as in sshd.
    pub(crate) fn parse(main: &str, dropins: &[(String, String)]) -> SshdConfig {
        let mut sorted: Vec<&(String, String)> = dropins
            .iter()
            .filter(|(n, _)| n.ends_with(".conf"))
            .collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut c = SshdConfig::default();
        let mut in_match = false;
        for line in main.lines() {
            let Some((k, v)) = split(line) else { continue };
            if k == "match" {
                in_match = true;
            }
            if in_match {
                continue;
            }
            if k == "include" {
                if v.split_whitespace().any(|g| g.starts_with(DROPIN_DIR)) {
                    for (name, text) in &sorted {
                        c.read_file(&format!("{DROPIN_DIR}/{name}"), text);
                    }
                }
                continue;
            }
            c.settings.push(Setting {
                file: MAIN.into(),
                keyword: k,
                value: v,
            });
        }
        c
    }

    fn read_file(&mut self, file: &str, text: &str) {
        for line in text.lines() {
            let Some((k, v)) = split(line) else { continue };
            if k == "match" {
                // A Match block runs to the end of the file that opens it.
                return;
            }
            self.settings.push(Setting {
                file: file.into(),
                keyword: k,
                value: v,
            });
        }
    }

    /// The value sshd uses for a single-valued keyword (the first read).
    pub(crate) fn first(&self, keyword: &str) -> Option<&Setting> {
        let k = keyword.to_ascii_lowercase();
        self.settings.iter().find(|s| s.keyword == k)
    }

    /// The private key files sshd loads.
    pub(crate) fn host_keys(&self) -> Vec<String> {
        let given: Vec<String> = self
            .settings
            .iter()
            .filter(|s| s.keyword == "hostkey")
            .map(|s| s.value.clone())
            .collect();
        if given.is_empty() {
            DEFAULT_HOST_KEYS.iter().map(|s| s.to_string()).collect()
        } else {
            given
        }
    }

    /// Read the image's files.
    pub(crate) fn read(view: &SystemView) -> Result<SshdConfig> {
        let main = view.read_text_opt(MAIN)?.unwrap_or_default();
        let mut dropins = Vec::new();
        if let Some(list) = view.list_opt(DROPIN_DIR)? {
            for (name, _) in list.into_iter().filter(|(n, _)| n.ends_with(".conf")) {
                if let Some(t) = view.read_text_opt(&format!("{DROPIN_DIR}/{name}"))? {
                    dropins.push((name, t));
                }
            }
        }
        Ok(SshdConfig::parse(&main, &dropins))
    }
}

/// `Keyword value` or `Keyword=value`, without comments; keyword lower case.
pub(crate) fn split(line: &str) -> Option<(String, String)> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return None;
    }
    let end = l
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(l.len());
    let (k, rest) = l.split_at(end);
    let v = rest
        .trim_start()
        .strip_prefix('=')
        .unwrap_or(rest)
        .trim()
        .trim_matches('"');
    Some((k.to_ascii_lowercase(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "Include /etc/ssh/sshd_config.d/*.conf\n#HostKey /etc/ssh/ssh_host_rsa_key\nKbdInteractiveAuthentication no\nPasswordAuthentication yes\nMatch User anoncvs\n\tPasswordAuthentication no\n";

    #[test]
    fn first_value_wins_and_dropins_come_in_name_order() {
        let d = vec![
            (
                "50-cloud-init.conf".to_string(),
                "PasswordAuthentication no\n".to_string(),
            ),
            (
                "00-rpiimg.conf".to_string(),
                "HostKey /etc/ssh/rpiimg/ssh_host_ed25519_key\nPasswordAuthentication=yes\n"
                    .to_string(),
            ),
            (
                "notes.txt".to_string(),
                "PasswordAuthentication no\n".to_string(),
            ),
        ];
        let c = SshdConfig::parse(DEBIAN, &d);
        let pw = c.first("PasswordAuthentication").unwrap();
        assert_eq!(
            (pw.value.as_str(), pw.file.as_str()),
            ("yes", "/etc/ssh/sshd_config.d/00-rpiimg.conf")
        );
        assert_eq!(c.host_keys(), ["/etc/ssh/rpiimg/ssh_host_ed25519_key"]);
        // Without drop-ins: the main file's value and the default keys.
        let c = SshdConfig::parse(DEBIAN, &[]);
        assert_eq!(c.first("passwordauthentication").unwrap().value, "yes");
        assert_eq!(c.host_keys().len(), 3);
        // A main file that does not include the directory ignores it.
        let c = SshdConfig::parse("PasswordAuthentication no\n", &d);
        assert_eq!(c.first("PasswordAuthentication").unwrap().value, "no");
    }
}
