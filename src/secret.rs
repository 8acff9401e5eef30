//! Secrecy as a property of the type: a [`Secret`] (a password, a given
//! password hash, the Wi-Fi key, a `[vars]` value) serializes as
//! `<redacted>` and debug-prints as `Secret(<redacted>)`, so a manifest, a
//! plan or a log line cannot carry one by accident. The few places that
//! need the value say so: [`Secret::expose`] for code, and [`reveal`]
//! around the serialization that builds a template context or checks the
//! profile's strings.

use std::cell::Cell;

use serde::{Deserialize, Serialize, Serializer};

/// What every secret serializes as outside [`reveal`].
pub(crate) const REDACTED: &str = "<redacted>";

#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The value itself, for the code that writes it where it belongs.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// A different value of the same shape, for planning a second time to
    /// see which file texts depend on the secret ([`other_like`]).
    pub fn placeholder(&self) -> Secret {
        Secret(other_like(&self.0))
    }
}

/// A string that differs from `s` but has its shape: each digit, hex
/// letter and other letter is replaced by the next one of its class (same
/// case, so a 64-hex-digit key stays hex, a number stays a number, lengths
/// stay), other characters are kept. Templates that parse or test a value
/// (`|int`, `|length`) then still render; a value with nothing to replace
/// gets a `0` appended so that it differs all the same.
pub(crate) fn other_like(s: &str) -> String {
    const CLASSES: [&str; 5] = [
        "0123456789",
        "abcdef",
        "ghijklmnopqrstuvwxyz",
        "ABCDEF",
        "GHIJKLMNOPQRSTUVWXYZ",
    ];
    let out: String = s
        .chars()
        .map(|c| {
            CLASSES
                .iter()
                .find_map(|class| {
                    let i = class.find(c)?;
                    // Each class is ASCII: byte offsets are char offsets.
                    class[i + 1..].chars().next().or(class.chars().next())
                })
                .unwrap_or(c)
        })
        .collect();
    if out == s {
        format!("{s}0")
    } else {
        out
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

thread_local! {
    static REVEALED: Cell<bool> = const { Cell::new(false) };
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if REVEALED.with(Cell::get) {
            s.serialize_str(&self.0)
        } else {
            s.serialize_str(REDACTED)
        }
    }
}

/// Runs `f` with secrets serializing as their values (on this thread
/// only); the previous state comes back however `f` ends.
pub(crate) fn reveal<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            REVEALED.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(REVEALED.with(|r| r.replace(true)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_unless_revealed() {
        let s = Secret::new("hunter22");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(
            reveal(|| serde_json::to_string(&s).unwrap()),
            "\"hunter22\""
        );
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        let back: Secret = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(back.expose(), "x");
    }

    #[test]
    fn placeholders_differ_and_keep_the_shape() {
        assert_eq!(other_like("q9"), "r0");
        assert_eq!(other_like("Zz-f9"), "Gg-a0");
        assert_eq!(other_like("!!"), "!!0");
        assert_eq!(other_like(""), "0");
        let hex = "0123456789abcdefABCDEF".repeat(3);
        let o = other_like(&hex);
        assert!(o.len() == hex.len() && o.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(o, hex);
        assert_eq!(other_like("1234").parse::<u32>().unwrap(), 2345);
        assert_eq!(Secret::new("Db\"P").placeholder().expose(), "Ec\"Q");
    }
}
