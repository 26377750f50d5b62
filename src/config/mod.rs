//! Loading configuration: a TOML file, overridden by `JISR_...` environment variables, into
//! any deserializable type, with errors that name the key, the value and what was expected
//! (and the variable that set it).
//!
//! This module only loads. Each subsystem owns its section's type and its validation (a
//! config type that builds the component); `server::config` assembles the sections into
//! the gateway's configuration. Parsing is a pure function of the file text and an explicit
//! list of variables, so it is testable without touching the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, Unexpected};
use serde::{Deserialize, Deserializer};

/// Variables with the `JISR_` prefix that are not configuration keys.
const NON_KEY_VARS: &[&str] = &["JISR_CONFIG", "JISR_LOG"];

/// A configuration error, naming the key, the value and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`{origin}: {message}")]
    Type {
        key: String,
        origin: Origin,
        message: String,
    },
    #[error("policy mistakes in the config:\n  - {}", .0.join("\n  - "))]
    Policy(Vec<String>),
    #[error("config key `{key}`{origin}: value {value:?} is invalid, expected {expected}")]
    Invalid {
        key: String,
        origin: Origin,
        value: String,
        expected: String,
    },
}

impl ConfigError {
    /// `key` has a value that breaks a rule serde cannot express.
    pub fn invalid(key: impl Into<String>, value: &str, expected: &str) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            origin: Origin::default(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }
}

/// Refuses the first of `(key, value)` that is zero: each must be at least 1.
pub fn at_least_one(values: &[(&str, u64)]) -> Result<(), ConfigError> {
    match values.iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(ConfigError::invalid(*key, "0", "at least 1")),
        None => Ok(()),
    }
}

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, Default)]
pub struct Origin(Option<String>);

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(var) => write!(f, " (set by environment variable {var})"),
            None => Ok(()),
        }
    }
}

/// Reads `path` and parses it with the `JISR_...` variables of the process environment.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    validate: impl FnOnce(&T) -> Result<(), ConfigError>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text, std::env::vars(), validate)
}

/// Parses TOML text and applies overrides from `vars` (name, value pairs; names not
/// starting with `JISR_` are ignored): `JISR_A__B` sets key `b` of table `a`. Then
/// `validate` checks what serde cannot; an error it names a key of gets that key's origin.
pub fn parse<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    vars: impl IntoIterator<Item = (String, String)>,
    validate: impl FnOnce(&T) -> Result<(), ConfigError>,
) -> Result<T, ConfigError> {
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.message().to_string(),
        })?;
    let mut origins = BTreeMap::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("JISR_") else {
            continue;
        };
        if NON_KEY_VARS.contains(&name.as_str()) || rest.is_empty() {
            continue;
        }
        let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
        origins.insert(keys.join("."), name.clone());
        set_path(&mut doc, &keys, env_value(&value));
    }
    let origin_of = |key: &str| {
        Origin(
            origins
                .iter()
                .find(|(k, _)| key == k.as_str() || key.starts_with(&format!("{k}.")))
                .map(|(_, v)| v.clone()),
        )
    };
    let config: T = serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Type {
            origin: origin_of(&key),
            key,
            message: e.into_inner().to_string(),
        }
    })?;
    validate(&config).map_err(|mut e| {
        if let ConfigError::Invalid { key, origin, .. } = &mut e {
            *origin = origin_of(key);
        }
        e
    })?;
    Ok(config)
}

/// Deserializes a socket address from a string, naming the expected form.
pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        de::Error::invalid_value(
            Unexpected::Str(&s),
            &"a socket address such as 127.0.0.1:7443",
        )
    })
}

/// What a setting naming a secret's environment variable must look like.
pub const ENV_VAR_RULE: &str = "the name of an environment variable holding the secret: letters, digits and '_', not starting with a digit";

pub fn is_env_var_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An environment value is read as a TOML value when it is one (numbers, booleans,
/// arrays, inline tables) and as a plain string otherwise.
fn env_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut cur = table;
    for key in parents {
        let entry = cur
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            unreachable!("just made a table")
        };
        cur = next;
    }
    cur.insert(last.clone(), value);
}
