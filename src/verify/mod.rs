//! `rpiimg verify`: prove what an image contains.

pub mod invariants;

/// One verified statement about an image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// What was found, when it is not what was expected.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Check {
    pub fn new(what: impl Into<String>, ok: bool, detail: String) -> Self {
        Check {
            what: what.into(),
            ok,
            detail: if ok { String::new() } else { detail },
        }
    }
}

/// Human report: failures first, then a count.
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks.iter().filter(|c| !c.ok) {
        s.push_str(&format!("FAIL {}\n     {}\n", c.what, c.detail));
    }
    for c in checks.iter().filter(|c| c.ok) {
        s.push_str(&format!("ok   {}\n", c.what));
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    s.push_str(&format!(
        "{} checks, {} passed, {failed} failed\n",
        checks.len(),
        checks.len() - failed
    ));
    s
}
