//! `roost.example.toml`, embedded: the one documentation of every field, the
//! list of fields the environment can set, and the template that
//! `roost config` fills with the effective values.
//!
//! The template's grammar, kept deliberately small (tests check that it
//! covers every field of [`Config`] exactly once):
//! - `[section]` starts a section; fields before the first one are top-level.
//! - `key = value` is a field with its default.
//! - `# key = value` is an optional field, unset by default, with an example.
//! - Any other line is documentation, copied as it is.

use std::fmt::Write as _;

use super::{Config, Error, layers};

/// The contents of `roost.example.toml`: every field with its documentation
/// and default value.
pub const DOCUMENTED_DEFAULTS: &str = include_str!("../../roost.example.toml");

/// A field named by the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Field {
    /// `None` for a top-level field.
    pub section: Option<&'static str>,
    pub key: &'static str,
}

impl Field {
    /// `ROOST_<SECTION>_<FIELD>`, upper case.
    pub fn env_var(&self) -> String {
        match self.section {
            Some(section) => format!("ROOST_{section}_{}", self.key),
            None => format!("ROOST_{}", self.key),
        }
        .to_ascii_uppercase()
    }
}

/// Every field of the template, in order.
pub(super) fn fields() -> Vec<Field> {
    let mut section = None;
    let mut fields = Vec::new();
    for line in DOCUMENTED_DEFAULTS.lines() {
        if let Some(name) = section_header(line) {
            section = Some(name);
        } else if let Some(key) = field_key(line) {
            fields.push(Field { section, key });
        }
    }
    fields
}

/// What `roost config` prints in place of the template's introduction.
const RENDERED_HEADER: &str = "\
# The effective configuration of this Roost node: defaults < config file <
# ROOST_<SECTION>_<FIELD> environment variables < command-line flags.

";

/// The template with each field's line set to `config`'s value. The
/// template's own introduction (its lines before the first blank one) is
/// replaced by [`RENDERED_HEADER`]; an optional field that is unset keeps its
/// commented example.
pub(super) fn render(config: &Config) -> Result<String, Error> {
    let tree = layers::to_table(config)?;
    let mut out = String::from(RENDERED_HEADER);
    let mut section: Option<&toml::Table> = None;
    let body = DOCUMENTED_DEFAULTS
        .lines()
        .skip_while(|line| !line.is_empty());
    for line in body.skip(1) {
        if let Some(name) = section_header(line) {
            section = match tree.get(name) {
                Some(toml::Value::Table(table)) => Some(table),
                _ => return Err(Error::Render(format!("no [{name}] section"))),
            };
            out.push_str(line);
        } else if let Some(key) = field_key(line) {
            match section.unwrap_or(&tree).get(key) {
                Some(value) => {
                    let _ = write!(out, "{key} = {}", scalar(value)?);
                }
                None => out.push_str(line),
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// `name` for a `[name]` line.
fn section_header(line: &str) -> Option<&str> {
    line.strip_prefix('[')?.strip_suffix(']')
}

/// The key of a `key = value` or `# key = value` line.
fn field_key(line: &str) -> Option<&str> {
    let line = line.strip_prefix("# ").unwrap_or(line);
    let (key, _value) = line.split_once(" = ")?;
    let is_key = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    is_key.then_some(key)
}

/// A scalar as TOML source.
fn scalar(value: &toml::Value) -> Result<String, Error> {
    match value {
        toml::Value::String(s) => Ok(quote(s)),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => {
            let items: Result<Vec<String>, Error> = items.iter().map(scalar).collect();
            Ok(format!("[{}]", items?.join(", ")))
        }
        other => Err(Error::Render(format!(
            "no TOML rendering for a {} field",
            other.type_str()
        ))),
    }
}

/// `s` as a TOML basic string: quoted, with `"`, `\` and control characters
/// escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_parse_back_to_themselves() {
        for s in [
            "",
            "plain",
            "a \"quoted\" \\ path",
            "tab\tnew\nline\r",
            "\u{1}\u{7f}é",
        ] {
            let parsed: toml::Value = quote(s).parse().expect("valid TOML string");
            assert_eq!(parsed.as_str(), Some(s));
        }
    }

    #[test]
    fn template_lines_are_recognised() {
        assert_eq!(section_header("[raft]"), Some("raft"));
        assert_eq!(field_key("heartbeat_ms = 100"), Some("heartbeat_ms"));
        assert_eq!(
            field_key("# trusted_proxy_header = \"X\""),
            Some("trusted_proxy_header")
        );
        assert_eq!(field_key("# Most keys one call may name."), None);
        assert_eq!(field_key("# e.g. ROOST_HTTP_LISTEN=0.0.0.0:8787"), None);
    }

    #[test]
    fn env_var_names() {
        let field = Field {
            section: Some("node"),
            key: "data_dir",
        };
        assert_eq!(field.env_var(), "ROOST_NODE_DATA_DIR");
        let top = Field {
            section: None,
            key: "shutdown_grace_ms",
        };
        assert_eq!(top.env_var(), "ROOST_SHUTDOWN_GRACE_MS");
    }
}
