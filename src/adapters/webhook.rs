//! `webhook`: POSTs every delivery's canonical JSON (the same document the `rest` adapter
//! starts from, see `rest::canonical`) to one HTTPS URL, signed with a shared secret, for
//! agency systems that take webhooks rather than a designed API.
//!
//! Each request carries, besides the `rest` adapter's `Idempotency-Key`,
//! `X-Jisr-Delivery-Id` and `traceparent`:
//!
//! - `X-Jisr-Timestamp`: Unix seconds when it was signed;
//! - `X-Jisr-Signature`: `v1=` and the lowercase hex HMAC-SHA256, keyed with the secret, of
//!   the timestamp, a `.` and the exact body bytes.
//!
//! The receiver recomputes the HMAC, compares in constant time and refuses a timestamp far
//! from its clock (replays). Answers are classified as for `rest` (2xx delivered; 408, 425,
//! 429, 5xx and network errors retryable; other 4xx permanent). The secret is read once,
//! from the environment variable the config names, and never logged.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::rest::{Parts, RestAdapter, RestMappings, Signer};
use super::{AdapterSpec, BuildContext};
use crate::config::{is_env_var_name, ConfigError, ENV_VAR_RULE};
use crate::delivery::Adapter;

/// The shortest secret accepted (bytes): HMAC-SHA256 wants at least 32.
pub const MIN_SECRET_BYTES: usize = 32;

/// `kind = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where every delivery is POSTed, https only, e.g. "https://hooks.agency.example/jisr".
    pub url: String,
    /// The environment variable holding the shared signing secret (at least 32 bytes).
    pub secret_env: String,
    /// CA bundle for the agency's server certificate (default: tls.ca_cert).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// One request's deadline, answer included (default: delivery.timeout_ms).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Also present the gateway's client certificate (delivery.client_cert).
    #[serde(default)]
    pub mtls: bool,
}

impl AdapterSpec for WebhookConfig {
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let https =
            self.url.parse::<http::Uri>().ok().filter(|u| {
                u.scheme_str() == Some("https") && u.host().is_some_and(|h| !h.is_empty())
            });
        if https.is_none() || self.url.contains('#') {
            return Err(ConfigError::invalid(
                key("url"),
                &self.url,
                "an https:// URL without a fragment",
            ));
        }
        if !is_env_var_name(&self.secret_env) {
            return Err(ConfigError::invalid(
                key("secret_env"),
                &self.secret_env,
                ENV_VAR_RULE,
            ));
        }
        if self.timeout_ms == Some(0) {
            return Err(ConfigError::invalid(key("timeout_ms"), "0", "at least 1"));
        }
        Ok(())
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Option<Arc<dyn Adapter>>> {
        Ok(Some(Arc::new(webhook(ctx, self, |name| {
            std::env::var(name).ok()
        })?)))
    }
}

/// The webhook adapter of `config`, with its secret looked up by `secret(variable name)`.
pub fn webhook(
    ctx: &BuildContext,
    config: &WebhookConfig,
    secret: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<RestAdapter> {
    let var = &config.secret_env;
    let Some(key) = secret(var).filter(|v| v.len() >= MIN_SECRET_BYTES) else {
        anyhow::bail!(
            "agency {}: webhook adapter: environment variable {var} (secret_env) is not set \
             or shorter than {MIN_SECRET_BYTES} bytes",
            ctx.agency
        );
    };
    RestAdapter::assemble(
        ctx,
        Parts {
            kind: "webhook",
            url: &config.url,
            ca_cert: config.ca_cert.as_deref(),
            timeout_ms: config.timeout_ms,
            // No mapping: the canonical JSON as it is, to the one URL.
            mapping: &RestMappings::default(),
            auth: None,
            mtls: config.mtls,
            signer: Some(Signer(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                key.as_bytes(),
            ))),
        },
    )
}

/// Whether `signature` (`v1=<hex>`) is the HMAC of `timestamp` and `body` under `secret`:
/// what a receiving agency system checks (constant-time comparison).
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(tag) = signature
        .strip_prefix("v1=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    ring::hmac::verify(&key, &message, &tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signature_verifies_only_for_its_secret_timestamp_and_body() {
        let signer = Signer(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            SECRET.as_bytes(),
        ));
        let (ts, sig) = signer.headers(1_700_000_000, b"{\"a\":1}");
        assert_eq!(ts, "1700000000");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64, "{sig}");
        assert!(verify_signature(SECRET.as_bytes(), &ts, b"{\"a\":1}", &sig));
        assert!(!verify_signature(
            SECRET.as_bytes(),
            &ts,
            b"{\"a\":2}",
            &sig
        ));
        assert!(!verify_signature(
            SECRET.as_bytes(),
            "1700000001",
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify_signature(
            b"another secret of enough length!",
            &ts,
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify_signature(
            SECRET.as_bytes(),
            &ts,
            b"{\"a\":1}",
            "v1=zz"
        ));
    }

    #[test]
    fn settings_are_checked_with_their_key() {
        let key = |f: &str| format!("agencies[0].adapter.{f}");
        let ok = WebhookConfig {
            url: "https://hooks.example.ae/jisr".into(),
            secret_env: "HOOK_SECRET".into(),
            ca_cert: None,
            timeout_ms: None,
            mtls: false,
        };
        assert!(ok.validate(&key).is_ok());
        let bad = |c: WebhookConfig| c.validate(&key).unwrap_err().to_string();
        let e = bad(WebhookConfig {
            url: "http://hooks.example.ae".into(),
            ..ok.clone()
        });
        assert!(
            e.contains("agencies[0].adapter.url") && e.contains("http://hooks"),
            "{e}"
        );
        let e = bad(WebhookConfig {
            secret_env: "not a var".into(),
            ..ok.clone()
        });
        assert!(e.contains("adapter.secret_env"), "{e}");
        let e = bad(WebhookConfig {
            timeout_ms: Some(0),
            ..ok
        });
        assert!(e.contains("adapter.timeout_ms"), "{e}");
    }

    #[test]
    fn a_short_or_missing_secret_fails_the_build() {
        let ctx = BuildContext {
            agency: "telecom".into(),
            ca_cert: "/nonexistent/ca.pem".into(),
            client_cert: "/nonexistent/c.pem".into(),
            client_key: "/nonexistent/c.key".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        let config = WebhookConfig {
            url: "https://hooks.example.ae/jisr".into(),
            secret_env: "HOOK_SECRET".into(),
            ca_cert: None,
            timeout_ms: None,
            mtls: false,
        };
        let e = webhook(&ctx, &config, |_| Some("tiny-secret".into()))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("HOOK_SECRET") && !e.contains("tiny-secret"),
            "{e}"
        );
        assert!(webhook(&ctx, &config, |_| None).is_err());
    }
}
