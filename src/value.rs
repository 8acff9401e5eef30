//! Values that profiles and the command line (`rpiimg fs --mode/--owner`)
//! share, parsed once into types (`FromStr`, and serde through it), so a bad
//! value is refused where it is read, and a profile and the command line mean
//! the same by it. Below both: `cli` parses with these without knowing
//! profiles, and `profile` re-exports them.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::userdb::Db;

/// serde reads and writes these types as their text (`try_from`/`into`
/// String), through `FromStr` and `Display`.
macro_rules! via_string {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    )*};
}
via_string!(Mode, OwnerSpec, Ipv4Net, AddrRange, VlanRange);

/// Permission bits, written in octal: `644`, `0755`, `0o600`, `4755`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mode(u16);

impl Mode {
    /// 0644, a file's usual mode.
    pub(crate) const RW_R_R: Mode = Mode(0o644);

    pub const fn new(bits: u16) -> Option<Mode> {
        if bits <= 0o7777 {
            Some(Mode(bits))
        } else {
            None
        }
    }

    pub fn bits(self) -> u16 {
        self.0
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        u16::from_str_radix(digits, 8)
            .ok()
            .filter(|_| !digits.is_empty() && !digits.starts_with('+'))
            .and_then(Mode::new)
            .ok_or_else(|| {
                format!("invalid mode {s:?}: give octal permission bits such as 644 or 0755")
            })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:o}", self.0)
    }
}

/// A user or a group: a number, or a name to look up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    Id(u32),
    Name(String),
}

impl Who {
    fn parse(s: &str) -> Option<Who> {
        if let Ok(n) = s.parse::<u32>() {
            return Some(Who::Id(n));
        }
        is_db_name(s).then(|| Who::Name(s.to_string()))
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Id(n) => write!(f, "{n}"),
            Who::Name(s) => f.write_str(s),
        }
    }
}

/// An owner as `chown` takes it: `USER`, `USER:` (both with the user's
/// login group), `USER:GROUP`; each a name or a number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OwnerSpec {
    pub user: Who,
    /// `None`: the user's login (primary) group.
    pub group: Option<Who>,
}

impl OwnerSpec {
    pub fn root() -> OwnerSpec {
        OwnerSpec {
            user: Who::Id(0),
            group: Some(Who::Id(0)),
        }
    }

    /// The ids on a system with these user databases. A user given by
    /// number needs no entry; without a group, the login group of the
    /// user's passwd entry (or, with no entry, the same number as the uid).
    pub fn resolve(&self, passwd: &Db, group: &Db) -> Result<(u32, u32), String> {
        let entry = |db: &Db, name: &str, what: &str, file: &str| {
            db.find(name)
                .and_then(|f| f.get(2)?.parse::<u32>().ok())
                .ok_or_else(|| {
                    format!("owner {self}: no {what} {name:?} in the image's /etc/{file}")
                })
        };
        let uid = match &self.user {
            Who::Id(n) => *n,
            Who::Name(u) => entry(passwd, u, "user", "passwd")?,
        };
        let gid = match &self.group {
            Some(Who::Id(n)) => *n,
            Some(Who::Name(g)) => entry(group, g, "group", "group")?,
            None => passwd
                .rows()
                .find(|f| f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
                .and_then(|f| f.get(3)?.parse().ok())
                .unwrap_or(uid),
        };
        Ok((uid, gid))
    }
}

impl FromStr for OwnerSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid owner {s:?}: give USER, USER:GROUP or UID:GID (names from the image, or numbers)"
            )
        };
        let (u, g) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        let user = Who::parse(u).ok_or_else(bad)?;
        let group = match g {
            None | Some("") => None,
            Some(g) => Some(Who::parse(g).ok_or_else(bad)?),
        };
        Ok(OwnerSpec { user, group })
    }
}

impl fmt::Display for OwnerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{}:{g}", self.user),
            None => write!(f, "{}", self.user),
        }
    }
}

/// An IPv4 network, `192.168.10.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Net {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IPv4 CIDR like 192.168.10.0/24");
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let len = l.parse::<u8>().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
        Ok(Ipv4Net {
            addr: a.parse().map_err(|_| bad())?,
            len,
        })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An inclusive range of IPv4 addresses, `192.168.10.31-192.168.10.35`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AddrRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl AddrRange {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }
}

impl FromStr for AddrRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a range like 192.168.10.31-192.168.10.35");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (first, last): (Ipv4Addr, Ipv4Addr) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if u32::from(first) > u32::from(last) {
            return Err(bad());
        }
        Ok(AddrRange { first, last })
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// An inclusive range of VLAN ids within 1-4094, `101-200` (Neutron's
/// `network_vlan_ranges` for the provider network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VlanRange {
    pub first: u16,
    pub last: u16,
}

impl VlanRange {
    pub fn contains(&self, vlan: u16) -> bool {
        (self.first..=self.last).contains(&vlan)
    }
}

impl FromStr for VlanRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a VLAN range within 1-4094 like \"101-200\"");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (first, last): (u16, u16) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if first == 0 || last > 4094 || first > last {
            return Err(bad());
        }
        Ok(VlanRange { first, last })
    }
}

impl fmt::Display for VlanRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Whether `s` can name an existing user or group in the image's
/// databases: Debian's names, and nothing that could confuse the files they
/// end up in. The one rule for owners, `fs` arguments and a user's groups
/// (a *new* user's name follows adduser's stricter rule, in validate).
pub(crate) fn is_db_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_ranges() {
        let r: VlanRange = "101-200".parse().unwrap();
        assert!(r.contains(101) && r.contains(200) && !r.contains(201));
        assert_eq!(r.to_string(), "101-200");
        assert_eq!(" 5 - 9 ".parse::<VlanRange>().unwrap().to_string(), "5-9");
        for s in ["101", "200-101", "0-5", "1-4095", "a-b", ""] {
            assert!(s.parse::<VlanRange>().is_err(), "{s}");
        }
    }

    #[test]
    fn modes() {
        for (s, m) in [
            ("644", 0o644),
            ("0755", 0o755),
            ("0o600", 0o600),
            ("4755", 0o4755),
        ] {
            assert_eq!(s.parse::<Mode>().unwrap().bits(), m, "{s}");
        }
        for s in ["888", "17777", "", "0o", "+644", "rw-r--r--"] {
            assert!(s.parse::<Mode>().is_err(), "{s}");
        }
        assert_eq!(Mode(0o644).to_string(), "644");
    }

    #[test]
    fn owners_resolve_the_same_way_everywhere() {
        let passwd = Db::parse(
            "root:x:0:0::/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\nstack:x:1001:27::/opt/stack:/bin/bash\n",
        );
        let group = Db::parse("root:x:0:\nsudo:x:27:\nadm:x:4:pi\npi:x:1000:\n");
        let r = |s: &str| s.parse::<OwnerSpec>().unwrap().resolve(&passwd, &group);
        assert_eq!(r("pi:adm").unwrap(), (1000, 4));
        assert_eq!(r("pi").unwrap(), (1000, 1000));
        assert_eq!(r("pi:").unwrap(), (1000, 1000));
        assert_eq!(r("5:6").unwrap(), (5, 6));
        // A number with a passwd entry gets that entry's login group, as
        // a name would; without one, the same number.
        assert_eq!(r("1001").unwrap(), (1001, 27));
        assert_eq!(r("stack").unwrap(), (1001, 27));
        assert_eq!(r("4242").unwrap(), (4242, 4242));
        assert!(r("nobody").unwrap_err().contains("no user \"nobody\""));
        assert!(r("pi:wheel").unwrap_err().contains("no group \"wheel\""));
        for s in ["", ":0", "a b", "pi:x:y", "pi:a/b"] {
            assert!(s.parse::<OwnerSpec>().is_err(), "{s}");
        }
        assert_eq!("stack:".parse::<OwnerSpec>().unwrap().to_string(), "stack");
    }

    #[test]
    fn profiles_refuse_bad_values_when_read() {
        let file = |extra: &str| {
            toml::from_str::<crate::profile::ExtraFile>(&format!(
                "path = \"/etc/motd\"\ncontent = \"hi\"\n{extra}"
            ))
        };
        let f = file("").unwrap();
        assert_eq!(
            (f.mode.bits(), f.owner.to_string()),
            (0o644, "0:0".to_string())
        );
        let e = file("mode = \"888\"").unwrap_err().to_string();
        assert!(e.contains("invalid mode \"888\""), "{e}");
        let e = file("owner = \"a b\"").unwrap_err().to_string();
        assert!(e.contains("invalid owner"), "{e}");
        assert_eq!(file("owner = \"stack:\"").unwrap().owner.group, None);
    }

    #[test]
    fn networks_and_ranges() {
        let n: Ipv4Net = "192.168.10.0/24".parse().unwrap();
        assert!(n.contains("192.168.10.24".parse().unwrap()));
        assert!(!n.contains("192.168.11.24".parse().unwrap()));
        assert!("0.0.0.0/0"
            .parse::<Ipv4Net>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for s in ["192.168.10.0", "192.168.10.0/33", "x/24"] {
            assert!(s.parse::<Ipv4Net>().unwrap_err().contains("CIDR"), "{s}");
        }
        let r: AddrRange = "192.168.10.31-192.168.10.35".parse().unwrap();
        assert!(r.contains("192.168.10.35".parse().unwrap()));
        assert!(!r.contains("192.168.10.36".parse().unwrap()));
        for s in ["192.168.10.31", "192.168.10.35-192.168.10.31", "a-b"] {
            assert!(
                s.parse::<AddrRange>().unwrap_err().contains("not a range"),
                "{s}"
            );
        }
        assert_eq!(r.to_string(), "192.168.10.31-192.168.10.35");
    }
}
