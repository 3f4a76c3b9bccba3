//! The layers under the command line: defaults, the config file, and the
//! `ROOST_*` environment variables.
//!
//! The environment is overlaid generically: every field documented in
//! `roost.example.toml` is looked up as `ROOST_<SECTION>_<FIELD>`, so a new
//! field gets its variable by being documented, and the two cannot drift.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, Error, documented};

/// Defaults, overlaid with the file (`explicit`, else `default_file` if it
/// exists), overlaid with the environment. Not yet validated.
pub(super) fn load(
    explicit: Option<&Path>,
    default_file: &Path,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Config, Error> {
    let from_file = match choose_file(explicit, default_file) {
        Some(path) => read_file(&path)?,
        None => Config::default(),
    };
    overlay_env(from_file, env)
}

/// The file named on the command line must exist; the default one may not.
fn choose_file(explicit: Option<&Path>, default_file: &Path) -> Option<PathBuf> {
    match explicit {
        Some(path) => Some(path.to_owned()),
        None => default_file.is_file().then(|| default_file.to_owned()),
    }
}

/// A config file: any subset of the fields, each section's missing fields
/// taking their defaults; an unknown section or field is an error.
fn read_file(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| Error::ParseFile {
        path: path.to_owned(),
        source,
    })
}

/// `base` with every documented field whose `ROOST_*` variable is set
/// replaced by that variable's value.
///
/// A value is taken as a plain string when the field holds a string (or is
/// unset, as an optional string is), and as a TOML value (`8`, `true`,
/// `1_000`) otherwise. Each variable is checked as it is applied, so that an
/// error names the variable at fault.
fn overlay_env(base: Config, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Config, Error> {
    let mut tree = to_table(&base)?;
    for field in documented::fields() {
        let var = field.env_var();
        let Some(raw) = env(&var) else { continue };
        let env_error = |message: String| Error::Env {
            var: var.clone(),
            message,
        };
        let raw = raw
            .into_string()
            .map_err(|_| env_error("not valid UTF-8".to_owned()))?;

        let table = match field.section {
            None => &mut tree,
            Some(section) => match tree.get_mut(section) {
                Some(toml::Value::Table(table)) => table,
                _ => return Err(env_error(format!("no [{section}] section"))),
            },
        };
        let value = match table.get(field.key) {
            None | Some(toml::Value::String(_)) => toml::Value::String(raw),
            Some(current) => match raw.trim().parse::<toml::Value>() {
                Ok(value) if value.same_type(current) => value,
                _ => {
                    let expected = current.type_str();
                    return Err(env_error(format!("expected {expected}, got {raw:?}")));
                }
            },
        };
        table.insert(field.key.to_owned(), value);

        Config::deserialize(toml::Value::Table(tree.clone()))
            .map_err(|e| env_error(e.message().to_owned()))?;
    }
    Config::deserialize(toml::Value::Table(tree)).map_err(|e| Error::Render(e.to_string()))
}

/// `config` as a TOML table (optional fields that are unset are absent).
pub(super) fn to_table(config: &Config) -> Result<toml::Table, Error> {
    match toml::Value::try_from(config) {
        Ok(toml::Value::Table(table)) => Ok(table),
        Ok(other) => Err(Error::Render(format!(
            "expected a table, got {}",
            other.type_str()
        ))),
        Err(e) => Err(Error::Render(e.to_string())),
    }
}
