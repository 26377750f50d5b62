//! Officer identity tokens: who, inside the calling agency, is acting.
//!
//! A call may carry `authorization: Bearer <token>`. The agency is still identified only by
//! its client certificate; the token names the person (an officer) acting for it. Two kinds
//! of token are accepted, each when configured (`[officers]` in the config):
//!
//! - **JWT** (three base64url segments whose header decodes): checked with `jsonwebtoken`
//!   against the identity provider's public keys (JWKS) from `jwks_file` and/or `jwks_url`,
//!   with an algorithm allow-list (never `none`, never HMAC), `exp`, `iss` and `aud`
//!   required, `nbf` honoured, `leeway_secs` of clock skew. The key is chosen by the
//!   header's `kid`; an unknown `kid` makes the gateway look at the JWKS again (the file
//!   when its modification time changed; the URL at most once per `jwks_min_refetch_secs`).
//! - **Opaque** (anything else): checked by RFC 7662 token introspection at the identity
//!   provider (national digital-identity providers such as UAE PASS work this way). The
//!   answer must say `active: true`; `iss`, `aud`, `exp` and `nbf` are checked when present.
//!   Active answers are cached for `cache_secs` (never past the token's `exp`), keyed by the
//!   token's SHA-256.
//!
//! A JWT reaching a gateway with introspection but no JWKS is introspected too; an opaque
//! token reaching a gateway with only a JWKS is TOKEN_MALFORMED; with neither configured,
//! every token is NOT_CONFIGURED.
//!
//! Every refusal is an [`OfficerError`] with a stable reason code ([`OfficerReason::code`])
//! and a message that says what was wrong and what to do. The token itself never appears in
//! an error, a log line or a `Debug` output: only decoded facts (claim values, the key id)
//! do, shortened and escaped.
//!
//! [`testing`] has a test identity provider (keys, tokens, an HTTPS JWKS and introspection
//! endpoint) for tests over the wire.

pub mod gate;
mod http;
mod introspection;
mod jwks;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use std::path::Path;

use crate::common::error::Reason;
use crate::config::{ConfigError, Origin};

use self::introspection::Introspector;
use self::jwks::Jwks;

/// `Officer::via` of a token checked as a JWT.
pub const VIA_JWT: &str = "jwt";
/// `Officer::via` of a token checked by introspection.
pub const VIA_INTROSPECTION: &str = "introspection";

/// Longest token looked at; longer ones are refused before any work.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The algorithms a JWKS key can verify. HMAC (HS*) is not among them: its key is a shared
/// secret, and officer keys are public.
const ASYMMETRIC_ALGORITHMS: [&str; 9] = [
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
];

// ---- Configuration ------------------------------------------------------------------------

/// `[officers]`: how officer tokens are checked. Disabled (no JWKS, no introspection) by
/// default: then any officer token is refused with `NOT_CONFIGURED`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfficerConfig {
    /// A JWKS file (`{"keys": [...]}`) of the identity provider's public keys, read at start
    /// and again whenever its modification time changes.
    pub jwks_file: Option<PathBuf>,
    /// An https:// URL serving the identity provider's JWKS, fetched when first needed,
    /// cached `jwks_cache_secs`, fetched again on an unknown `kid`.
    pub jwks_url: Option<String>,
    /// CA bundle (PEM) for the JWKS URL's server certificate (default: tls.ca_cert).
    pub jwks_ca_cert: Option<PathBuf>,
    /// Deadline of one JWKS fetch.
    pub jwks_timeout_ms: u64,
    /// Allowed `iss` values; required once officer tokens are enabled.
    pub issuers: Vec<String>,
    /// Allowed `aud` values (a token must name at least one); required once enabled.
    pub audiences: Vec<String>,
    /// The JWT algorithm allow-list: ES256, ES384, RS256, RS384, RS512, PS256, PS384,
    /// PS512, EdDSA. Never "none"; never HS* (a public JWKS holds no shared secrets).
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (at most 300).
    pub leeway_secs: u64,
    /// How long keys fetched from `jwks_url` are used before they are fetched again.
    pub jwks_cache_secs: u64,
    /// A token with an unknown `kid` fetches `jwks_url` again at most once per this many
    /// seconds (so unknown ids cannot make the gateway hammer the identity provider).
    pub jwks_min_refetch_secs: u64,
    /// RFC 7662 introspection of opaque tokens.
    pub introspection: Option<IntrospectionConfig>,
}

impl Default for OfficerConfig {
    fn default() -> Self {
        OfficerConfig {
            jwks_file: None,
            jwks_url: None,
            jwks_ca_cert: None,
            jwks_timeout_ms: 5_000,
            issuers: Vec::new(),
            audiences: Vec::new(),
            algorithms: vec!["ES256".into(), "RS256".into(), "EdDSA".into()],
            leeway_secs: 30,
            jwks_cache_secs: 3_600,
            jwks_min_refetch_secs: 60,
            introspection: None,
        }
    }
}

impl OfficerConfig {
    /// Whether JWTs are checked (a JWKS is configured).
    pub fn jwt_enabled(&self) -> bool {
        self.jwks_file.is_some() || self.jwks_url.is_some()
    }

    /// Whether any officer token can be accepted.
    pub fn enabled(&self) -> bool {
        self.jwt_enabled() || self.introspection.is_some()
    }
}

/// `[officers.introspection]`: RFC 7662 token introspection at the identity provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint, https only.
    pub url: String,
    /// The gateway's client id at the identity provider (HTTP Basic user).
    pub client_id: String,
    /// The environment variable holding the client secret (never in the file).
    pub client_secret_env: String,
    /// Seconds an active answer is reused for the same token (0: never), never past the
    /// token's `exp`; at most 300.
    #[serde(default = "default_introspection_cache_secs")]
    pub cache_secs: u64,
    /// CA bundle (PEM) for the endpoint's server certificate (default: tls.ca_cert).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Deadline of one introspection call.
    #[serde(default = "default_introspection_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_introspection_cache_secs() -> u64 {
    30
}
fn default_introspection_timeout_ms() -> u64 {
    5_000
}

/// The `[officers]` rules serde cannot express; called by `Config::validate`.
pub fn validate(config: &OfficerConfig) -> Result<(), ConfigError> {
    let invalid = |key: &str, value: &str, expected: &str| ConfigError::Invalid {
        key: format!("officers.{key}"),
        origin: Origin::default(),
        value: value.to_string(),
        expected: expected.to_string(),
    };
    for (i, alg) in config.algorithms.iter().enumerate() {
        let key = format!("algorithms[{i}]");
        if alg.eq_ignore_ascii_case("none") {
            return Err(invalid(
                &key,
                alg,
                "a signature algorithm: unsigned tokens (\"none\") are never accepted",
            ));
        }
        if alg.to_ascii_uppercase().starts_with("HS") {
            return Err(invalid(
                &key,
                alg,
                "an asymmetric algorithm (ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA): \
                 HMAC needs a shared secret, and officer keys come from a public JWKS",
            ));
        }
        if !ASYMMETRIC_ALGORITHMS.contains(&alg.as_str()) {
            return Err(invalid(
                &key,
                alg,
                "one of ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA",
            ));
        }
    }
    if let Some(url) = &config.jwks_url {
        if !is_https_url(url) {
            return Err(invalid(
                "jwks_url",
                url,
                "an https:// URL of the identity provider's JWKS",
            ));
        }
    }
    if let Some(file) = &config.jwks_file {
        if file.as_os_str().is_empty() {
            return Err(invalid("jwks_file", "", "the path of a JWKS file"));
        }
    }
    if config.jwt_enabled() && config.algorithms.is_empty() {
        return Err(invalid(
            "algorithms",
            "[]",
            "at least one algorithm, e.g. [\"ES256\", \"RS256\", \"EdDSA\"]",
        ));
    }
    for (key, value) in [
        ("jwks_cache_secs", config.jwks_cache_secs),
        ("jwks_min_refetch_secs", config.jwks_min_refetch_secs),
        ("jwks_timeout_ms", config.jwks_timeout_ms),
    ] {
        if value == 0 {
            return Err(invalid(key, "0", "at least 1"));
        }
    }
    if config.leeway_secs > 300 {
        return Err(invalid(
            "leeway_secs",
            &config.leeway_secs.to_string(),
            "at most 300 seconds of clock skew",
        ));
    }
    for (key, values) in [
        ("issuers", &config.issuers),
        ("audiences", &config.audiences),
    ] {
        if let Some(i) = values.iter().position(|v| v.trim().is_empty()) {
            return Err(invalid(
                &format!("{key}[{i}]"),
                &values[i],
                "a non-empty value",
            ));
        }
        if config.enabled() && values.is_empty() {
            return Err(invalid(
                key,
                "[]",
                if key == "issuers" {
                    "at least one issuer (`iss`) whose officer tokens this gateway accepts"
                } else {
                    "at least one audience (`aud`) naming this gateway in officer tokens"
                },
            ));
        }
    }
    if let Some(intro) = &config.introspection {
        let key = |k: &str| format!("introspection.{k}");
        if !is_https_url(&intro.url) {
            return Err(invalid(
                &key("url"),
                &intro.url,
                "an https:// URL of the identity provider's introspection endpoint",
            ));
        }
        if intro.client_id.is_empty() || intro.client_id.chars().any(char::is_control) {
            return Err(invalid(
                &key("client_id"),
                &intro.client_id,
                "the gateway's client id at the identity provider",
            ));
        }
        if !is_env_var_name(&intro.client_secret_env)
            || intro.client_secret_env.starts_with("JISR_")
        {
            return Err(invalid(
                &key("client_secret_env"),
                &intro.client_secret_env,
                "the name of an environment variable holding the client secret: letters, digits and '_', \
                 not starting with a digit nor with JISR_ (those variables are config overrides)",
            ));
        }
        if intro.cache_secs > 300 {
            return Err(invalid(
                &key("cache_secs"),
                &intro.cache_secs.to_string(),
                "at most 300 (a revoked token must stop working soon)",
            ));
        }
        if intro.timeout_ms == 0 {
            return Err(invalid(&key("timeout_ms"), "0", "at least 1"));
        }
    }
    Ok(())
}

fn is_https_url(url: &str) -> bool {
    url.parse::<::http::Uri>()
        .ok()
        .is_some_and(|u| u.scheme_str() == Some("https") && u.host().is_some_and(|h| !h.is_empty()))
        && !url.contains('#')
}

fn is_env_var_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// ---- Results and errors -------------------------------------------------------------------

/// The person acting, as a verified token names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Officer {
    /// The token's `sub` (for introspection: `sub`, else `username`).
    pub subject: String,
    /// The token's `iss`; for an introspection answer without one, the endpoint's URL.
    pub issuer: String,
    /// [`VIA_JWT`] or [`VIA_INTROSPECTION`].
    pub via: &'static str,
    /// The token's `exp` (an introspection answer may have none).
    pub expires_at: Option<OffsetDateTime>,
}

/// Why an officer token was refused; [`OfficerReason::code`] is stable (it goes into
/// `google.rpc.ErrorInfo.reason` and the audit trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OfficerReason {
    /// Not a token this gateway can read (syntax, encoding, header, length).
    TokenMalformed,
    /// Signed with an algorithm outside the allow-list (or `none`, or HMAC), or with a key
    /// that cannot use the named algorithm.
    AlgorithmNotAllowed,
    /// The signing key (`kid`) is not in the identity provider's JWKS.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    TokenExpired,
    TokenNotYetValid,
    WrongIssuer,
    WrongAudience,
    /// A required claim (`exp`, `iss`, `aud`, `sub`) is absent.
    MissingClaim,
    /// A claim has the wrong JSON type (e.g. `exp` as a string).
    InvalidClaim,
    /// Introspection says the token is not active (expired, revoked or unknown).
    Inactive,
    /// The introspection endpoint could not answer (down, timeout, refused our client
    /// credentials, malformed answer).
    IntrospectionUnavailable,
    /// The JWKS could not be fetched and no keys are known.
    KeysUnavailable,
    /// This gateway accepts no officer tokens (no `[officers]` verifier configured).
    NotConfigured,
}

impl OfficerReason {
    /// The stable reason a refusal of this kind carries.
    pub fn reason(self) -> Reason {
        match self {
            OfficerReason::TokenMalformed => Reason::TokenMalformed,
            OfficerReason::AlgorithmNotAllowed => Reason::AlgorithmNotAllowed,
            OfficerReason::UnknownKey => Reason::UnknownKey,
            OfficerReason::BadSignature => Reason::BadSignature,
            OfficerReason::TokenExpired => Reason::TokenExpired,
            OfficerReason::TokenNotYetValid => Reason::TokenNotYetValid,
            OfficerReason::WrongIssuer => Reason::WrongIssuer,
            OfficerReason::WrongAudience => Reason::WrongAudience,
            OfficerReason::MissingClaim => Reason::MissingClaim,
            OfficerReason::InvalidClaim => Reason::InvalidClaim,
            OfficerReason::Inactive => Reason::TokenInactive,
            OfficerReason::IntrospectionUnavailable => Reason::IntrospectionUnavailable,
            OfficerReason::KeysUnavailable => Reason::KeysUnavailable,
            OfficerReason::NotConfigured => Reason::OfficersNotConfigured,
        }
    }

    pub fn code(self) -> &'static str {
        self.reason().as_str()
    }

    /// Whether the refusal is the gateway's or the identity provider's trouble, not the
    /// token's: the same token may pass later (map to UNAVAILABLE rather than
    /// UNAUTHENTICATED).
    pub fn is_unavailable(self) -> bool {
        matches!(
            self,
            OfficerReason::IntrospectionUnavailable | OfficerReason::KeysUnavailable
        )
    }
}

/// An officer token refused: a stable reason and a message for the caller. Neither holds
/// any part of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OfficerError {
    pub reason: OfficerReason,
    pub message: String,
}

impl OfficerError {
    pub fn new(reason: OfficerReason, message: impl Into<String>) -> OfficerError {
        OfficerError {
            reason,
            message: message.into(),
        }
    }

    /// The stable reason code, e.g. "TOKEN_EXPIRED".
    pub fn code(&self) -> &'static str {
        self.reason.code()
    }

    fn malformed(detail: &str) -> OfficerError {
        OfficerError::new(
            OfficerReason::TokenMalformed,
            format!(
                "the officer token is malformed: {detail}; send the identity provider's access token \
                 unchanged as `authorization: Bearer <token>`"
            ),
        )
    }

    fn not_configured() -> OfficerError {
        OfficerError::new(
            OfficerReason::NotConfigured,
            "officer tokens are not accepted by this gateway: it has no [officers] JWKS or \
             introspection configured; call without an authorization header, or ask the \
             gateway's operator to configure the identity provider",
        )
    }
}

/// A claim value or header field as it may appear in a message: escaped, at most 80
/// characters.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---- Claims -------------------------------------------------------------------------------

/// What every token's claims are checked against.
#[derive(Debug, Clone)]
struct ClaimRules {
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: u64,
}

/// A NumericDate claim: absent, a number of seconds (fractions dropped), or wrongly typed.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, OfficerError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f >= 0.0 && f < u64::MAX as f64 => Ok(Some(f as u64)),
            _ => Err(invalid_claim(
                name,
                "a NumericDate: seconds since 1970 as a JSON number",
            )),
        },
        Some(_) => Err(invalid_claim(
            name,
            "a NumericDate: seconds since 1970 as a JSON number, not a string or other value",
        )),
    }
}

fn invalid_claim(name: &str, expected: &str) -> OfficerError {
    OfficerError::new(
        OfficerReason::InvalidClaim,
        format!(
            "the officer token's `{name}` claim must be {expected}; the identity provider issued a token this gateway cannot use"
        ),
    )
}

fn missing_claim(name: &str) -> OfficerError {
    OfficerError::new(
        OfficerReason::MissingClaim,
        format!(
            "the officer token has no `{name}` claim, which this gateway requires (exp, iss, aud and sub); \
             ask the identity provider for an access token meant for this gateway"
        ),
    )
}

/// An optional string claim.
fn string_claim<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, OfficerError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid_claim(name, "a string")),
    }
}

/// `aud`: one string or an array of strings.
fn audience_claim(claims: &Map<String, Value>) -> Result<Option<Vec<&str>>, OfficerError> {
    match claims.get("aud") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str())
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| invalid_claim("aud", "a string or an array of strings")),
        Some(_) => Err(invalid_claim("aud", "a string or an array of strings")),
    }
}

impl ClaimRules {
    fn wrong_issuer(&self, iss: &str) -> OfficerError {
        OfficerError::new(
            OfficerReason::WrongIssuer,
            format!(
                "the officer token was issued by {}, which is not an identity provider this gateway trusts \
                 (officers.issuers: {}); sign in with a trusted provider",
                shown(iss),
                self.issuers.iter().map(|s| shown(s)).collect::<Vec<_>>().join(", ")
            ),
        )
    }

    fn wrong_audience(&self, aud: &[&str]) -> OfficerError {
        OfficerError::new(
            OfficerReason::WrongAudience,
            format!(
                "the officer token is meant for {}, not for this gateway (officers.audiences: {}); \
                 request a token whose audience names this gateway",
                if aud.is_empty() {
                    "no audience".to_string()
                } else {
                    aud.iter().map(|s| shown(s)).collect::<Vec<_>>().join(", ")
                },
                self.audiences.iter().map(|s| shown(s)).collect::<Vec<_>>().join(", ")
            ),
        )
    }

    fn expired(&self, exp: u64) -> OfficerError {
        OfficerError::new(
            OfficerReason::TokenExpired,
            format!(
                "the officer token expired at {} (allowing {} s of clock skew); sign in again for a fresh token",
                rfc3339(exp),
                self.leeway
            ),
        )
    }

    fn not_yet_valid(&self, nbf: u64) -> OfficerError {
        OfficerError::new(
            OfficerReason::TokenNotYetValid,
            format!(
                "the officer token is not valid before {} (allowing {} s of clock skew); \
                 check the clocks of the identity provider and the calling system",
                rfc3339(nbf),
                self.leeway
            ),
        )
    }

    /// The checks of a token whose claims are trusted (a verified JWT's payload or an
    /// introspection answer): types, and `iss`, `aud`, `exp`, `nbf` when present (for a
    /// JWT `jsonwebtoken` has made exp/iss/aud required).
    fn check<'a>(
        &self,
        claims: &'a Map<String, Value>,
        now: u64,
    ) -> Result<Checked<'a>, OfficerError> {
        let exp = numeric_date(claims, "exp")?;
        let nbf = numeric_date(claims, "nbf")?;
        numeric_date(claims, "iat")?;
        let iss = string_claim(claims, "iss")?;
        let sub = string_claim(claims, "sub")?;
        let aud = audience_claim(claims)?;
        if let Some(exp) = exp {
            if exp.saturating_add(self.leeway) < now {
                return Err(self.expired(exp));
            }
        }
        if let Some(nbf) = nbf {
            if nbf > now.saturating_add(self.leeway) {
                return Err(self.not_yet_valid(nbf));
            }
        }
        if let Some(iss) = iss {
            if !self.issuers.iter().any(|i| i == iss) {
                return Err(self.wrong_issuer(iss));
            }
        }
        if let Some(aud) = aud {
            if !aud.iter().any(|a| self.audiences.iter().any(|b| b == a)) {
                return Err(self.wrong_audience(&aud));
            }
        }
        Ok(Checked {
            sub: sub.filter(|s| !s.is_empty()),
            iss,
            exp,
        })
    }
}

/// The claims that name the officer, as far as present.
struct Checked<'a> {
    sub: Option<&'a str>,
    iss: Option<&'a str>,
    exp: Option<u64>,
}

// ---- Token shape --------------------------------------------------------------------------

/// The token's shape: a JWT's decoded header, or opaque.
enum Shape {
    Jwt(Map<String, Value>),
    Opaque,
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Three base64url segments whose first decodes to a JSON object: a JWT.
fn shape(token: &str) -> Shape {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Shape::Opaque;
    };
    if header.is_empty()
        || payload.is_empty()
        || !is_b64url(header)
        || !is_b64url(payload)
        || !is_b64url(signature)
    {
        return Shape::Opaque;
    }
    match URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    {
        Some(Value::Object(map)) => Shape::Jwt(map),
        _ => Shape::Opaque,
    }
}

/// RFC 6750 `b64token`: `[A-Za-z0-9-._~+/]+=*`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The payload of a JWT whose signature has been verified, for explaining a refusal.
fn verified_payload(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

// ---- The verifier -------------------------------------------------------------------------

/// Checks officer tokens as `[officers]` says. Cheap to share (`Arc`) across calls.
pub struct OfficerVerifier {
    jwt: Option<JwtVerifier>,
    introspection: Option<Introspector>,
}

struct JwtVerifier {
    jwks: Jwks,
    algorithms: Vec<Algorithm>,
    rules: ClaimRules,
}

impl std::fmt::Debug for OfficerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfficerVerifier")
            .field("jwt", &self.jwt.as_ref().map(|j| &j.jwks))
            .field("introspection", &self.introspection)
            .finish()
    }
}

impl OfficerVerifier {
    /// Builds the verifier of `[officers]`, reading the client secret from the process
    /// environment and the JWKS file (if any) now; `default_ca` (tls.ca_cert) verifies the
    /// identity provider where its section names no CA. Fails naming what is wrong.
    pub fn new(officers: &OfficerConfig, default_ca: &Path) -> anyhow::Result<OfficerVerifier> {
        OfficerVerifier::with_secrets(officers, default_ca, |name| std::env::var(name).ok())
    }

    /// As [`OfficerVerifier::new`], with secrets looked up by `secret(variable name)`.
    pub fn with_secrets(
        officers: &OfficerConfig,
        default_ca: &Path,
        secret: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<OfficerVerifier> {
        validate(officers).map_err(|e| anyhow::anyhow!("{e}"))?;
        let rules = ClaimRules {
            issuers: officers.issuers.clone(),
            audiences: officers.audiences.clone(),
            leeway: officers.leeway_secs,
        };
        let jwt = if officers.jwt_enabled() {
            let algorithms = officers
                .algorithms
                .iter()
                .map(|a| {
                    a.parse::<Algorithm>().map_err(|_| {
                        anyhow::anyhow!("officers.algorithms: unknown algorithm {a:?}")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some(JwtVerifier {
                jwks: Jwks::new(officers, default_ca)?,
                algorithms,
                rules: rules.clone(),
            })
        } else {
            None
        };
        let introspection = match &officers.introspection {
            Some(intro) => Some(Introspector::new(intro, default_ca, rules, &secret)?),
            None => None,
        };
        Ok(OfficerVerifier { jwt, introspection })
    }

    /// Whether any officer token can be accepted.
    pub fn is_enabled(&self) -> bool {
        self.jwt.is_some() || self.introspection.is_some()
    }

    /// Fetches the JWKS URL now (if one is configured), e.g. at start, so the first call
    /// with an officer token does not wait for it.
    pub async fn prefetch(&self) -> Result<(), OfficerError> {
        match &self.jwt {
            Some(j) => j.jwks.prefetch().await,
            None => Ok(()),
        }
    }

    /// Checks `token` (the part after `Bearer `) and names the officer.
    pub async fn verify(&self, token: &str) -> Result<Officer, OfficerError> {
        if !self.is_enabled() {
            return Err(OfficerError::not_configured());
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(OfficerError::malformed(&format!(
                "it is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        if !is_b64token(token) {
            return Err(OfficerError::malformed(
                "it is empty or holds characters a bearer token cannot (RFC 6750: letters, digits and -._~+/ then =)",
            ));
        }
        match (shape(token), &self.jwt, &self.introspection) {
            (Shape::Jwt(header), Some(jwt), _) => jwt.verify(token, &header).await,
            (_, _, Some(intro)) => intro.introspect(token).await,
            (Shape::Opaque, Some(_), None) => Err(OfficerError::malformed(
                "it is not a JWT (three base64url segments with a JSON header), and this gateway checks only JWT officer tokens",
            )),
            (_, None, None) => Err(OfficerError::not_configured()),
        }
    }
}

impl JwtVerifier {
    async fn verify(
        &self,
        token: &str,
        header: &Map<String, Value>,
    ) -> Result<Officer, OfficerError> {
        let alg_name = match header.get("alg") {
            Some(Value::String(a)) => a.as_str(),
            _ => return Err(OfficerError::malformed("its JWT header has no `alg`")),
        };
        let allowed = || {
            self.algorithms
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(OfficerError::new(
                OfficerReason::AlgorithmNotAllowed,
                format!(
                    "the officer token is unsigned (alg \"none\"), and unsigned tokens are never accepted \
                     (allowed: {}); use a token signed by the identity provider",
                    allowed()
                ),
            ));
        }
        let alg = alg_name
            .parse::<Algorithm>()
            .ok()
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| {
                OfficerError::new(
                    OfficerReason::AlgorithmNotAllowed,
                    format!(
                        "the officer token is signed with {}, which this gateway does not accept (allowed: {}); \
                         the identity provider must sign with an allowed algorithm",
                        shown(alg_name),
                        allowed()
                    ),
                )
            })?;
        if header.contains_key("crit") {
            return Err(OfficerError::malformed(
                "its JWT header has `crit` extensions, which this gateway does not understand",
            ));
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => {
                return Err(OfficerError::malformed(
                    "its JWT header's `kid` is not a string",
                ))
            }
        };
        let key = self.jwks.key_for(kid, alg).await?;

        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.rules.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&self.rules.issuers);
        validation.set_audience(&self.rules.audiences);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| self.explain(token, kid, e))?
            .claims;
        let Checked { sub, iss, exp } = self.rules.check(&claims, now_unix())?;
        let (Some(iss), Some(exp)) = (iss, exp) else {
            // jsonwebtoken required them; kept as a second line of defence.
            return Err(missing_claim(if iss.is_none() { "iss" } else { "exp" }));
        };
        let Some(sub) = sub else {
            return Err(missing_claim("sub"));
        };
        Ok(Officer {
            subject: sub.to_string(),
            issuer: iss.to_string(),
            via: VIA_JWT,
            expires_at: i64::try_from(exp)
                .ok()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
        })
    }

    /// A `jsonwebtoken` refusal as an [`OfficerError`]. Claim errors come after the signature
    /// verified, so the payload can be read to say which value was wrong.
    fn explain(
        &self,
        token: &str,
        kid: Option<&str>,
        e: jsonwebtoken::errors::Error,
    ) -> OfficerError {
        use jsonwebtoken::errors::ErrorKind as K;
        let payload = || verified_payload(token).unwrap_or_default();
        match e.kind() {
            K::InvalidSignature | K::Crypto(_) => OfficerError::new(
                OfficerReason::BadSignature,
                format!(
                    "the officer token's signature does not verify with the identity provider's key{}: \
                     it was altered or not issued by a trusted provider; sign in again",
                    kid.map(|k| format!(" {}", shown(k))).unwrap_or_default()
                ),
            ),
            K::InvalidAlgorithm | K::MissingAlgorithm => OfficerError::new(
                OfficerReason::AlgorithmNotAllowed,
                "the officer token's algorithm does not fit its signing key",
            ),
            K::ExpiredSignature => {
                let exp = numeric_date(&payload(), "exp").ok().flatten().unwrap_or(0);
                self.rules.expired(exp)
            }
            K::ImmatureSignature => {
                let nbf = numeric_date(&payload(), "nbf").ok().flatten().unwrap_or(0);
                self.rules.not_yet_valid(nbf)
            }
            K::InvalidIssuer => {
                let claims = payload();
                match claims.get("iss") {
                    Some(Value::String(iss)) => self.rules.wrong_issuer(iss),
                    _ => invalid_claim("iss", "one string naming the issuer"),
                }
            }
            K::InvalidAudience => {
                let claims = payload();
                match audience_claim(&claims) {
                    Ok(aud) => self.rules.wrong_audience(&aud.unwrap_or_default()),
                    Err(e) => e,
                }
            }
            K::MissingRequiredClaim(name) => {
                let claims = payload();
                match claims.get(name.as_str()) {
                    None | Some(Value::Null) => missing_claim(name),
                    Some(_) if name == "exp" || name == "nbf" => invalid_claim(
                        name,
                        "a NumericDate: seconds since 1970 as a JSON number, not a string or other value",
                    ),
                    Some(_) if name == "aud" => {
                        invalid_claim(name, "a string or an array of strings")
                    }
                    Some(_) => invalid_claim(name, "a string"),
                }
            }
            K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => OfficerError::malformed(
                "its JWT segments do not decode to a JSON header and a JSON object of claims",
            ),
            _ => OfficerError::malformed("it cannot be read as a JWT"),
        }
    }
}
