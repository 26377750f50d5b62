//! RFC 7662 token introspection of opaque officer tokens.
//!
//! `POST <url>` with `application/x-www-form-urlencoded` `token=...&token_type_hint=access_token`
//! and HTTP Basic client authentication (RFC 6749 2.3.1: id and secret form-encoded, then
//! base64). The answer must be 200 with a JSON object whose `active` is `true`; `iss`, `aud`,
//! `exp` and `nbf` are checked when present, and `sub` (else `username`) names the officer.
//! Active answers are cached `cache_secs`, never past the token's `exp`, keyed by the
//! token's SHA-256 (the token itself is not kept).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::http::HttpsClient;
use super::{
    missing_claim, now_unix, Checked, ClaimRules, IntrospectionConfig, Officer, OfficerError,
    OfficerReason, VIA_INTROSPECTION,
};

/// Largest introspection answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Most cached answers; past it, expired ones are dropped, then all.
const MAX_CACHED: usize = 10_000;

pub(super) struct Introspector {
    url: String,
    uri: Uri,
    client: HttpsClient,
    /// `Basic base64(id:secret)`, marked sensitive.
    authorization: HeaderValue,
    secret_env: String,
    cache_for: Duration,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    rules: ClaimRules,
}

struct Cached {
    officer: Officer,
    until: Instant,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("url", &self.url)
            .field("client_secret_env", &self.secret_env)
            .field("cache_for", &self.cache_for)
            .finish_non_exhaustive()
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub(super) fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Introspector {
    pub(super) fn new(
        config: &IntrospectionConfig,
        default_ca: &Path,
        rules: ClaimRules,
        secret: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Introspector> {
        let env = &config.client_secret_env;
        let Some(client_secret) = secret(env).filter(|s| !s.is_empty()) else {
            anyhow::bail!(
                "officers.introspection: environment variable {env} (named by client_secret_env) is not set or empty"
            );
        };
        let credentials = format!(
            "{}:{}",
            form_encode(&config.client_id),
            form_encode(&client_secret)
        );
        let mut authorization =
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(credentials))).map_err(
                |_| {
                    anyhow::anyhow!(
                        "officers.introspection: the client credentials do not fit an HTTP header"
                    )
                },
            )?;
        authorization.set_sensitive(true);
        let uri: Uri = config
            .url
            .parse()
            .map_err(|e| anyhow::anyhow!("officers.introspection.url {:?}: {e}", config.url))?;
        let ca = config.ca_cert.as_deref().unwrap_or(default_ca);
        let client = HttpsClient::new(ca, Duration::from_millis(config.timeout_ms))
            .map_err(|e| anyhow::anyhow!("officers.introspection: {e:#}"))?;
        Ok(Introspector {
            url: config.url.clone(),
            uri,
            client,
            authorization,
            secret_env: env.clone(),
            cache_for: Duration::from_secs(config.cache_secs),
            cache: Mutex::new(HashMap::new()),
            rules,
        })
    }

    fn unavailable(&self, detail: &str) -> OfficerError {
        OfficerError::new(
            OfficerReason::IntrospectionUnavailable,
            format!(
                "the identity provider's introspection endpoint {} could not check the officer token: \
                 {detail}; retry later",
                self.url
            ),
        )
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Officer> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(key) {
            Some(hit) if hit.until > Instant::now() => Some(hit.officer.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: [u8; 32], officer: &Officer, exp: Option<u64>, now: u64) {
        let mut ttl = self.cache_for;
        if let Some(exp) = exp {
            ttl = ttl.min(Duration::from_secs(exp.saturating_sub(now)));
        }
        if ttl.is_zero() {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, c| c.until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                officer: officer.clone(),
                until: Instant::now() + ttl,
            },
        );
    }

    pub(super) async fn introspect(&self, token: &str) -> Result<Officer, OfficerError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(officer) = self.cached(&key) {
            return Ok(officer);
        }
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("jisr/", env!("CARGO_PKG_VERSION")))
            .header(AUTHORIZATION, self.authorization.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| self.unavailable("the request could not be built"))?;
        let (status, answer) = self
            .client
            .send(request, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| self.unavailable(&e))?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            tracing::warn!(url = %self.url, %status, "the introspection endpoint refused the gateway's client credentials");
            return Err(OfficerError::new(
                OfficerReason::IntrospectionUnavailable,
                format!(
                    "the identity provider's introspection endpoint {} refused the gateway's client credentials \
                     ({status}), so officer tokens cannot be checked; the gateway's operator must check \
                     officers.introspection.client_id and the secret in {}",
                    self.url, self.secret_env
                ),
            ));
        }
        if status != StatusCode::OK {
            return Err(self.unavailable(&format!("it answered {status}")));
        }
        let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&answer) else {
            return Err(self.unavailable("its answer is not a JSON object"));
        };
        match claims.get("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => return Err(OfficerError::new(
                OfficerReason::Inactive,
                "the identity provider says the officer token is not active (expired, revoked or \
                     never issued); sign in again for a fresh token",
            )),
            _ => return Err(self.unavailable("its answer has no boolean `active`")),
        }
        let now = now_unix();
        let Checked { sub, iss, exp } = self.rules.check(&claims, now)?;
        let subject = match sub {
            Some(sub) => sub,
            None => match claims.get("username") {
                Some(Value::String(u)) if !u.is_empty() => u.as_str(),
                _ => return Err(missing_claim("sub")),
            },
        };
        let officer = Officer {
            subject: subject.to_string(),
            issuer: iss.unwrap_or(&self.url).to_string(),
            via: VIA_INTROSPECTION,
            expires_at: exp
                .and_then(|e| i64::try_from(e).ok())
                .and_then(|e| OffsetDateTime::from_unix_timestamp(e).ok()),
        };
        self.remember(key, &officer, exp, now);
        Ok(officer)
    }
}
