//! An app's configured values, as Cloudflare's `vars` and secrets, read
//! from the process environment at start: `ROOST_VAR_<NAME>` is the var
//! `NAME`, `ROOST_SECRET_<NAME>` the secret `NAME`. Workers and objects
//! read them through their `Env` (`var`, `secret`). On Kubernetes, set them
//! with the chart's `extraEnv` (a secret from a Secret with
//! `valueFrom.secretKeyRef`). Secrets are kept apart so that nothing prints
//! them: `Debug` shows their names only.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// The prefix of a var's environment variable.
pub const VAR_PREFIX: &str = "ROOST_VAR_";
/// The prefix of a secret's environment variable.
pub const SECRET_PREFIX: &str = "ROOST_SECRET_";

/// Vars and secrets by name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Vars {
    vars: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
}

impl Vars {
    /// The vars and secrets among `env` (name, value) pairs; others are
    /// ignored, as are empty names.
    pub fn from_pairs(env: impl IntoIterator<Item = (String, String)>) -> Vars {
        let mut out = Vars::default();
        for (key, value) in env {
            if let Some(name) = key.strip_prefix(VAR_PREFIX).filter(|n| !n.is_empty()) {
                out.vars.insert(name.to_owned(), value);
            } else if let Some(name) = key.strip_prefix(SECRET_PREFIX).filter(|n| !n.is_empty()) {
                out.secrets.insert(name.to_owned(), value);
            }
        }
        out
    }

    /// This process's, read once (variables that are not UTF-8 are
    /// skipped).
    pub fn from_process() -> Arc<Vars> {
        static VARS: OnceLock<Arc<Vars>> = OnceLock::new();
        VARS.get_or_init(|| {
            let env = std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
            Arc::new(Vars::from_pairs(env))
        })
        .clone()
    }

    /// The var `name`.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The secret `name`.
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(String::as_str)
    }
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vars")
            .field("vars", &self.vars)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_and_secrets_come_from_their_prefixes_and_secrets_never_print() {
        let env = [
            ("ROOST_VAR_API_URL", "https://api.example.com"),
            ("ROOST_SECRET_API_KEY", "hunter2"),
            ("ROOST_VAR_", "no name"),
            ("ROOST_HTTP_LISTEN", "0.0.0.0:1"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let vars = Vars::from_pairs(env);
        assert_eq!(vars.var("API_URL"), Some("https://api.example.com"));
        assert_eq!(vars.secret("API_KEY"), Some("hunter2"));
        assert_eq!(vars.var("API_KEY"), None, "a secret is not a var");
        assert_eq!(vars.var(""), None);
        assert_eq!(vars.var("HTTP_LISTEN"), None);
        let shown = format!("{vars:?}");
        assert!(
            shown.contains("API_KEY") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
