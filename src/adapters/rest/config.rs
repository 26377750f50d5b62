//! The `rest` adapter's config type: where to POST, how to authenticate, and the
//! declarative mapping per message kind. It checks itself and builds the adapter.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::RestAdapter;
use crate::adapters::{AdapterSpec, BuildContext};
use crate::config::{is_env_var_name, ConfigError, ENV_VAR_RULE};
use crate::delivery::Adapter;

/// The `rest` adapter: HTTP/JSON POSTs to `url` + the message kind's `path`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// Base URL of the agency's API, https only, e.g. "https://charity.example.ae/api/jisr".
    pub url: String,
    /// CA bundle for the agency's server certificate (default: tls.ca_cert).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// One request's deadline, answer included (default: delivery.timeout_ms).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    pub auth: RestAuth,
    /// How each kind of message is reshaped for the agency's API.
    #[serde(default)]
    pub mapping: RestMappings,
}

/// How the gateway authenticates to a `rest` agency. Secrets are never in the config
/// file: it names the environment variables that hold them.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RestAuth {
    /// The gateway's client certificate (delivery.client_cert / client_key).
    Mtls,
    /// `Authorization: Bearer <value of token_env>`.
    Bearer { token_env: String },
    /// `<header>: <value of key_env>`.
    ApiKey { header: String, key_env: String },
}

impl RestAuth {
    pub fn kind(&self) -> &'static str {
        match self {
            RestAuth::Mtls => "mtls",
            RestAuth::Bearer { .. } => "bearer",
            RestAuth::ApiKey { .. } => "api_key",
        }
    }
}

/// One mapping per message kind; a kind without one is sent as its canonical JSON to `url`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestMappings {
    #[serde(default)]
    pub referral: Option<RestMapping>,
    #[serde(default)]
    pub information_request: Option<RestMapping>,
    #[serde(default)]
    pub information_response: Option<RestMapping>,
    #[serde(default)]
    pub clearance_request: Option<RestMapping>,
    #[serde(default)]
    pub status_update: Option<RestMapping>,
}

impl RestMappings {
    /// Each message kind with its mapping, if configured.
    pub fn by_kind(&self) -> [(&'static str, &Option<RestMapping>); 5] {
        use crate::domain::payload::*;
        [
            (KIND_REFERRAL, &self.referral),
            (KIND_INFORMATION_REQUEST, &self.information_request),
            (KIND_INFORMATION_RESPONSE, &self.information_response),
            (KIND_CLEARANCE_REQUEST, &self.clearance_request),
            (KIND_STATUS_UPDATE, &self.status_update),
        ]
    }
}

/// A declarative reshaping of the canonical JSON, applied in this order: `flatten`,
/// `rename`, `drop`, `constants`. Paths are dotted object keys ("subject.full_name").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestMapping {
    /// Appended to the adapter's `url` (starts with '/'; default: none).
    #[serde(default)]
    pub path: String,
    /// Source path -> target path; moving creates the target's intermediate objects.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Objects whose fields are lifted into their parent as `<name>_<field>`.
    #[serde(default)]
    pub flatten: Vec<String>,
    /// Path -> fixed value, set on every message.
    #[serde(default)]
    pub constants: BTreeMap<String, serde_json::Value>,
    /// Paths removed.
    #[serde(default)]
    pub drop: Vec<String>,
}

impl AdapterSpec for RestConfig {
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        validate(self, key)
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Option<Arc<dyn Adapter>>> {
        Ok(Some(Arc::new(RestAdapter::new(ctx, self)?)))
    }
}

/// The `rest` adapter's settings; `key` names a field under the agency's `adapter`.
fn validate(rest: &RestConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let invalid = |field: &str, value: &str, expected: &str| {
        ConfigError::invalid(key(field), value, expected)
    };
    let https = rest
        .url
        .parse::<http::Uri>()
        .ok()
        .filter(|u| u.scheme_str() == Some("https") && u.host().is_some_and(|h| !h.is_empty()))
        .filter(|u| u.query().is_none() && !rest.url.contains('#'));
    if https.is_none() {
        return Err(invalid(
            "url",
            &rest.url,
            "an https:// URL of the agency's API, without query or fragment",
        ));
    }
    if rest.timeout_ms == Some(0) {
        return Err(invalid("timeout_ms", "0", "at least 1"));
    }
    match &rest.auth {
        RestAuth::Mtls => {}
        RestAuth::Bearer { token_env } => {
            if !is_env_var_name(token_env) {
                return Err(invalid("auth.token_env", token_env, ENV_VAR_RULE));
            }
        }
        RestAuth::ApiKey { header, key_env } => {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(invalid(
                    "auth.header",
                    header,
                    "an HTTP header name such as X-Api-Key",
                ));
            }
            if !is_env_var_name(key_env) {
                return Err(invalid("auth.key_env", key_env, ENV_VAR_RULE));
            }
        }
    }
    for (kind, mapping) in rest.mapping.by_kind() {
        let Some(m) = mapping else { continue };
        let field = |f: &str| format!("mapping.{kind}.{f}");
        let path_ok = m.path.is_empty()
            || (m.path.starts_with('/')
                && !m.path.contains(['?', '#'])
                && format!("https://x{}", m.path).parse::<http::Uri>().is_ok());
        if !path_ok {
            return Err(invalid(
                &field("path"),
                &m.path,
                "a URL path starting with '/', e.g. \"/referrals\"",
            ));
        }
        let paths = m
            .rename
            .iter()
            .flat_map(|(from, to)| [("rename", from), ("rename", to)])
            .chain(m.flatten.iter().map(|p| ("flatten", p)))
            .chain(m.constants.keys().map(|p| ("constants", p)))
            .chain(m.drop.iter().map(|p| ("drop", p)));
        for (f, p) in paths {
            if p.split('.').any(str::is_empty) {
                return Err(invalid(
                    &field(f),
                    p,
                    "a dotted field path such as \"subject.full_name\"",
                ));
            }
        }
    }
    Ok(())
}
