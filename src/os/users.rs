//! The user database (`/etc/passwd`, `/etc/shadow`) as text records.

use crate::userdb::Db;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// Parse passwd lines; lines that are not 7 colon-separated fields with numeric ids are skipped.
/// The well-formed entries of a passwd file (read with the one parser of
/// the colon databases, `crate::userdb::Db`).
pub(crate) fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    Db::parse(text)
        .rows()
        .filter_map(|f| match f.as_slice() {
            [name, _, uid, gid, gecos, home, shell] => Some(PasswdEntry {
                name: name.clone(),
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                gecos: gecos.clone(),
                home: home.clone(),
                shell: shell.clone(),
            }),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordState {
    /// `!` or `*` prefixed, or `*`/`!` alone: no password login.
    Locked,
    /// Empty field: login without a password.
    Empty,
    /// A crypt hash; the scheme (`yescrypt`, `sha512crypt`, ...).
    Set(String),
    /// No shadow entry.
    Missing,
}

pub(crate) fn password_state(field: Option<&str>) -> PasswordState {
    match field {
        None => PasswordState::Missing,
        Some("") => PasswordState::Empty,
        Some(f) if f.starts_with('!') || f.starts_with('*') => PasswordState::Locked,
        Some(f) => PasswordState::Set(
            match f.split('$').nth(1) {
                Some("y") => "yescrypt",
                Some("6") => "sha512crypt",
                Some("5") => "sha256crypt",
                Some("1") => "md5crypt",
                Some("2b") | Some("2y") | Some("2a") => "bcrypt",
                Some("gy") => "gost-yescrypt",
                _ => "unknown",
            }
            .to_string(),
        ),
    }
}

/// The password field of each shadow entry, by user name.
/// (name, password field) of each shadow entry.
pub(crate) fn shadow_passwords(text: &str) -> Vec<(String, String)> {
    Db::parse(text)
        .rows()
        .filter_map(|f| Some((f.first()?.clone(), f.get(1)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_and_shadow() {
        let p = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000:,,,:/home/pi:/bin/bash\nbad line\n",
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].uid, 1000);
        assert_eq!(password_state(Some("!")), PasswordState::Locked);
        assert_eq!(password_state(Some("*")), PasswordState::Locked);
        assert_eq!(password_state(Some("")), PasswordState::Empty);
        assert_eq!(
            password_state(Some("$y$j9T$abc$def")),
            PasswordState::Set("yescrypt".into())
        );
        assert_eq!(
            password_state(Some("$6$salt$hash")),
            PasswordState::Set("sha512crypt".into())
        );
        assert_eq!(password_state(None), PasswordState::Missing);
    }
}
