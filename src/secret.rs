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
pub const REDACTED: &str = "<redacted>";

#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The value itself, for the code that writes it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
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
pub fn reveal<T>(f: impl FnOnce() -> T) -> T {
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
}
