//! `/etc/os-release` and the OS family.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct OsRelease {
    pub id: String,
    pub version_codename: String,
    pub pretty_name: String,
    pub version_id: String,
}

/// Parse os-release (shell-style `KEY=value`, values optionally quoted).
pub(crate) fn parse(text: &str) -> OsRelease {
    let kv: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect();
    let get = |k: &str| kv.get(k).cloned().unwrap_or_default();
    OsRelease {
        id: get("ID"),
        version_codename: get("VERSION_CODENAME"),
        pretty_name: get("PRETTY_NAME"),
        version_id: get("VERSION_ID"),
    }
}

/// The OS family as a person would name it.
pub(crate) fn family(rel: &OsRelease, has_rpi_issue: bool) -> &'static str {
    match rel.id.as_str() {
        "debian" | "raspbian" if has_rpi_issue => "Raspberry Pi OS",
        "debian" => "Debian",
        "ubuntu" => "Ubuntu",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_12() {
        let r = parse("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\nVERSION_CODENAME=bookworm\n");
        assert_eq!(r.id, "debian");
        assert_eq!(r.version_codename, "bookworm");
        assert_eq!(r.pretty_name, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(family(&r, true), "Raspberry Pi OS");
        assert_eq!(family(&r, false), "Debian");
    }
}
