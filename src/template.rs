//! One minijinja environment for every template rpiimg renders (node
//! overlays, the management host's files): strict about undefined names,
//! no markup escaping (these are configuration files), bounded work, and
//! the two quoting filters profile strings go through.
//!
//! - `shquote`: a POSIX shell word, single-quoted, so nothing expands.
//! - `yaml`: a YAML double-quoted scalar with every control character and
//!   line separator escaped, so no value can end its line and start a key
//!   (netplan and Kolla's globals.yml).

use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

/// Work a template may do (minijinja fuel: about one unit per instruction;
/// the built-in templates use a few thousand).
pub(crate) const TEMPLATE_FUEL: u64 = 5_000_000;

/// A word for a POSIX shell: single-quoted, so nothing in it expands.
pub(crate) fn shquote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `s` as a YAML double-quoted scalar (YAML 1.1 and 1.2 escapes): `\` and
/// `"` escaped, C0/C1 controls and DEL as `\xNN`, NEL, LS and PS as `\N`,
/// `\L`, `\P`, the BOM as `\uFEFF`; everything else as itself.
pub fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            '\u{feff}' => out.push_str("\\uFEFF"),
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `yaml` filter: strings quoted, none as `null`, numbers and booleans
/// as they are; anything else is an error (a template bug).
fn yaml(v: Value) -> Result<String, Error> {
    match v.kind() {
        ValueKind::String => Ok(yaml_quote(v.as_str().unwrap_or_default())),
        ValueKind::None | ValueKind::Undefined => Ok("null".into()),
        ValueKind::Bool | ValueKind::Number => Ok(v.to_string()),
        k => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("the yaml filter quotes strings, not {k}"),
        )),
    }
}

/// The environment, with `keep_trailing_newline` for inline `[[files]]`.
pub fn environment() -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // minijinja would pick HTML or JSON escaping from the target's
    // extension (.yaml, .json, .html); these are config files, not markup.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    // Bounded work: a template with huge nested loops stops with an error.
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.add_filter("shquote", |s: String| shquote(&s));
    env.add_filter("yaml", yaml);
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .map_err(|e| e.to_string())?;
    env.set_syntax(syntax);
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_quote_escapes_every_line_break() {
        assert_eq!(yaml_quote("lab"), "\"lab\"");
        assert_eq!(yaml_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(
            yaml_quote("x\ry\u{2028}z\u{85}\u{2029}\u{7f}\u{9b}"),
            "\"x\\x0Dy\\Lz\\N\\P\\x7F\\x9B\""
        );
        // tests/integration/hostile_inputs.rs reads these back with a YAML parser.
    }

    #[test]
    fn yaml_filter_in_a_template() {
        let mut env = environment().unwrap();
        env.add_template(
            "t",
            "a: {{ s | yaml }}\nb: {{ n | yaml }}\nc: {{ z | yaml }}\n",
        )
        .unwrap();
        let out = env
            .get_template("t")
            .unwrap()
            .render(minijinja::context! { s => "x\ny", n => 3, z => () })
            .unwrap();
        assert_eq!(out, "a: \"x\\x0Ay\"\nb: 3\nc: null\n");
    }
}
