//! Edits of the user database (passwd, shadow, group, gshadow, subuid,
//! subgid) as text: rename `pi` or create a user, set its password, add it
//! to groups. Pure functions over file contents.

/// One colon-separated database.
#[derive(Debug, Clone)]
pub struct Db {
    lines: Vec<Vec<String>>,
}

impl Db {
    pub fn parse(text: &str) -> Db {
        Db {
            lines: text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.split(':').map(String::from).collect())
                .collect(),
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(&l.join(":"));
            s.push('\n');
        }
        s
    }

    /// Every entry, as its fields.
    pub(crate) fn rows(&self) -> impl Iterator<Item = &Vec<String>> {
        self.lines.iter()
    }

    pub fn find(&self, name: &str) -> Option<&Vec<String>> {
        self.lines
            .iter()
            .find(|l| l.first().is_some_and(|n| n == name))
    }

    fn find_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        self.lines
            .iter_mut()
            .find(|l| l.first().is_some_and(|n| n == name))
    }

    pub fn push(&mut self, fields: &[&str]) {
        self.lines
            .push(fields.iter().map(|s| s.to_string()).collect());
    }

    /// Rename the entry `from` and every member list mentioning it (field `members`).
    pub fn rename(&mut self, from: &str, to: &str, members: Option<usize>) {
        for l in &mut self.lines {
            if l.first().is_some_and(|n| n == from) {
                l[0] = to.to_string();
            }
            if let Some(m) = members {
                if let Some(f) = l.get_mut(m) {
                    *f = f
                        .split(',')
                        .map(|x| if x == from { to } else { x })
                        .collect::<Vec<_>>()
                        .join(",");
                }
            }
        }
    }

    pub fn set(&mut self, name: &str, field: usize, value: &str) {
        if let Some(l) = self.find_mut(name) {
            while l.len() <= field {
                l.push(String::new());
            }
            l[field] = value.to_string();
        }
    }

    /// Add `user` to the member list (field `members`) of group `group`.
    pub(crate) fn add_member(&mut self, group: &str, user: &str, members: usize) -> bool {
        let Some(l) = self.find_mut(group) else {
            return false;
        };
        while l.len() <= members {
            l.push(String::new());
        }
        let mut list: Vec<&str> = l[members].split(',').filter(|x| !x.is_empty()).collect();
        if !list.contains(&user) {
            list.push(user);
        }
        l[members] = list.join(",");
        true
    }

    /// Numeric field `field` of every entry.
    pub(crate) fn ids(&self, field: usize) -> Vec<u32> {
        self.lines
            .iter()
            .filter_map(|l| l.get(field)?.parse().ok())
            .collect()
    }
}

/// The six databases, edited together.
#[derive(Debug, Clone)]
pub(crate) struct UserDb {
    pub passwd: Db,
    pub shadow: Db,
    pub group: Db,
    pub gshadow: Db,
    pub subuid: Db,
    pub subgid: Db,
}

impl UserDb {
    pub(crate) fn uid_of(&self, name: &str) -> Option<(u32, u32)> {
        let l = self.passwd.find(name)?;
        Some((l.get(2)?.parse().ok()?, l.get(3)?.parse().ok()?))
    }

    /// Rename a user and its primary group everywhere, with a new home.
    pub(crate) fn rename(&mut self, from: &str, to: &str, home: &str) {
        self.passwd.rename(from, to, None);
        self.passwd.set(to, 5, home);
        self.shadow.rename(from, to, None);
        self.group.rename(from, to, Some(3));
        self.gshadow.rename(from, to, Some(3));
        self.subuid.rename(from, to, None);
        self.subgid.rename(from, to, None);
    }

    /// Create a user with its own group; returns (uid, gid).
    pub(crate) fn create(&mut self, name: &str, home: &str, shell: &str) -> (u32, u32) {
        let next = |ids: Vec<u32>| (1000..60000).find(|i| !ids.contains(i)).unwrap_or(60000);
        let uid = next(self.passwd.ids(2));
        let gid = if self.group.ids(2).contains(&uid) {
            next(self.group.ids(2))
        } else {
            uid
        };
        let (u, g) = (uid.to_string(), gid.to_string());
        self.passwd.push(&[name, "x", &u, &g, "", home, shell]);
        self.shadow
            .push(&[name, "!", "20221", "0", "99999", "7", "", "", ""]);
        self.group.push(&[name, "x", &g, ""]);
        self.gshadow.push(&[name, "!", "", ""]);
        let sub_start = |db: &Db| {
            db.lines
                .iter()
                .filter_map(|l| {
                    Some(l.get(1)?.parse::<u32>().ok()? + l.get(2)?.parse::<u32>().ok()?)
                })
                .max()
                .unwrap_or(100_000)
        };
        let s = sub_start(&self.subuid).to_string();
        self.subuid.push(&[name, &s, "65536"]);
        let s = sub_start(&self.subgid).to_string();
        self.subgid.push(&[name, &s, "65536"]);
        (uid, gid)
    }

    pub(crate) fn set_password_hash(&mut self, name: &str, hash: &str) {
        self.shadow.set(name, 1, hash);
    }

    pub(crate) fn set_shell(&mut self, name: &str, shell: &str) {
        self.passwd.set(name, 6, shell);
    }

    /// Add to groups that exist; returns the ones missing from the image.
    pub(crate) fn add_to_groups(&mut self, name: &str, groups: &[String]) -> Vec<String> {
        let mut missing = Vec::new();
        for g in groups {
            if self.group.add_member(g, name, 3) {
                self.gshadow.add_member(g, name, 3);
            } else {
                missing.push(g.clone());
            }
        }
        missing
    }
}

/// SHA-512 crypt (`$6$`), as libxcrypt verifies it. The salt is derived
/// from `seed` (cluster, host, user) and the password, so a plan is
/// reproducible and `verify` can recompute it; it still differs per node
/// and per user, which is what a salt is for.
/// SHA-512 crypt of `plain` with a salt derived from the cluster's secret
/// and `who` (host and user): the same on every rebuild, different for
/// every node, user and cluster, and unpredictable without the secret.
pub(crate) fn hash_password(
    plain: &str,
    secret: &crate::keystore::ClusterSecret,
    who: &[&str],
) -> Result<String, String> {
    use sha_crypt::PasswordHasher;
    let mut parts = who.to_vec();
    parts.push(plain);
    let d = secret.derive("password-salt", &parts);
    let salt = &d[..12];
    sha_crypt::ShaCrypt::SHA512
        .hash_password_with_salt(plain.as_bytes(), salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> UserDb {
        UserDb {
            passwd: Db::parse(
                "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n",
            ),
            shadow: Db::parse("root:*:20221:0:99999:7:::\npi:!:20221:0:99999:7:::\n"),
            group: Db::parse("root:x:0:\nsudo:x:27:pi\nadm:x:4:pi,other\npi:x:1000:\n"),
            gshadow: Db::parse("root:*::\nsudo:*::pi\nadm:*::pi,other\npi:!::\n"),
            subuid: Db::parse("pi:100000:65536\n"),
            subgid: Db::parse("pi:100000:65536\n"),
        }
    }

    #[test]
    fn rename_everywhere() {
        let mut d = db();
        d.rename("pi", "ubuntu", "/home/ubuntu");
        assert_eq!(
            d.passwd.render(),
            "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000:,,,:/home/ubuntu:/bin/bash\n"
        );
        assert!(d.group.render().contains("adm:x:4:ubuntu,other\n"));
        assert!(d.group.render().contains("ubuntu:x:1000:\n"));
        assert!(d.gshadow.render().contains("sudo:*::ubuntu\n"));
        assert_eq!(d.subuid.render(), "ubuntu:100000:65536\n");
        assert!(d.shadow.render().contains("ubuntu:!:"));
    }

    #[test]
    fn create_and_groups() {
        let mut d = db();
        assert_eq!(d.create("stack", "/opt/stack", "/bin/bash"), (1001, 1001));
        assert_eq!(
            d.add_to_groups("stack", &["sudo".into(), "nosuch".into()]),
            vec!["nosuch"]
        );
        assert!(d.group.render().contains("sudo:x:27:pi,stack\n"));
        assert!(d.subuid.render().contains("stack:165536:65536"));
    }

    #[test]
    fn sha512_crypt_format() {
        let k = crate::keystore::ClusterSecret::fixed("ost", [7; 32]);
        let h = hash_password("ubuntu", &k, &["ost01", "ubuntu"]).unwrap();
        assert_eq!(
            h,
            hash_password("ubuntu", &k, &["ost01", "ubuntu"]).unwrap()
        );
        assert_ne!(
            h,
            hash_password("ubuntu", &k, &["ost02", "ubuntu"]).unwrap()
        );
        let other = crate::keystore::ClusterSecret::fixed("ost", [8; 32]);
        assert_ne!(
            h,
            hash_password("ubuntu", &other, &["ost01", "ubuntu"]).unwrap()
        );
        let lab2 = crate::keystore::ClusterSecret::fixed("lab2", [7; 32]);
        assert_ne!(
            h,
            hash_password("ubuntu", &lab2, &["ost01", "ubuntu"]).unwrap()
        );
        assert!(h.starts_with("$6$"), "{h}");
        assert!(!h.contains("ubuntu"));
    }
}
