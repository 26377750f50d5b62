//! Gateway configuration: `config/jisr.toml`, overridden by `JISR_...` environment variables.
//!
//! Parsing is a pure function of the file text and an explicit list of variables, so it is
//! testable without touching the process environment. A bad setting fails at start with
//! the key, the value and what was expected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, Unexpected};
use serde::{Deserialize, Deserializer};

pub use crate::directory::config::{
    CalendarConfig, ContactConfig, ContactKind, OptionConfig, OptionIds, QuestionConfig,
    RoutingConfig, RuleConfig, ServiceConfig,
};

/// The id the gateway itself uses when it acts (DELIVERED, FAILED); no agency may take it.
pub const GATEWAY_ACTOR: &str = "jisr";

/// Variables with the `JISR_` prefix that are not configuration keys.
const NON_KEY_VARS: &[&str] = &["JISR_CONFIG", "JISR_LOG"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This gateway node's name; it names the node's audit log.
    #[serde(default = "default_node_id")]
    pub node_id: String,
    /// Address the mTLS gRPC listener binds.
    #[serde(deserialize_with = "socket_addr")]
    pub listen_addr: SocketAddr,
    /// SPIFFE trust domain of agency identities: spiffe://<trust_domain>/agency/<id>.
    pub trust_domain: String,
    pub tls: TlsConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The agency registry.
    #[serde(default)]
    pub agencies: Vec<AgencyConfig>,
    /// Working days for services' time frames: weekend and public holidays.
    #[serde(default)]
    pub calendar: CalendarConfig,
    /// The guided routing questionnaire of DirectoryService.RecommendAgency.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Once-only documents: where they are stored, and size limits.
    #[serde(default)]
    pub documents: DocumentsConfig,
    /// Information requests: default time frame and expiry.
    #[serde(default)]
    pub information_requests: InformationRequestsConfig,
    /// Officer identity tokens (`authorization: Bearer`): JWKS and/or introspection.
    #[serde(default)]
    pub officers: crate::auth::officer::OfficerConfig,
}

/// DocumentService: content-addressed storage of documents on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentsConfig {
    /// Directory the bytes are stored in, one file per SHA-256 (created when missing).
    pub dir: PathBuf,
    /// Largest chunk one UploadDocument message may carry.
    pub max_chunk_bytes: u64,
    /// Largest document.
    pub max_document_bytes: u64,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        DocumentsConfig {
            dir: PathBuf::from("data/documents"),
            max_chunk_bytes: 1024 * 1024,
            max_document_bytes: 25 * 1024 * 1024,
        }
    }
}

/// InformationRequestService: time frames and expiry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InformationRequestsConfig {
    /// A request sent without due_at is due at the end of this many working days.
    pub default_time_frame_working_days: u32,
    /// An OPEN request becomes EXPIRED this many seconds after due_at (0: at due_at).
    pub expire_after_secs: u64,
}

impl Default for InformationRequestsConfig {
    fn default() -> Self {
        InformationRequestsConfig {
            default_time_frame_working_days: 5,
            expire_after_secs: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of the CAs that issue agency certificates.
    pub ca_cert: PathBuf,
    /// PEM certificate chain the gateway presents.
    pub server_cert: PathBuf,
    /// PEM private key of the server certificate (PKCS#8).
    pub server_key: PathBuf,
    /// When true and the files above are missing, `jisr serve` creates a development PKI.
    #[serde(default)]
    pub dev_pki: bool,
    /// Directory of the development PKI (`jisr certs init`).
    #[serde(default = "default_dev_pki_dir")]
    pub dev_pki_dir: PathBuf,
    /// DNS names and IP addresses the development server certificate is issued for.
    #[serde(default = "default_server_names")]
    pub server_names: Vec<String>,
    /// Seconds a client has to finish the TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// PEM CRL files (`-----BEGIN X509 CRL-----`, one or more per file) checked on every
    /// handshake. When any is listed, a client certificate whose issuer no CRL covers is
    /// refused (revocation status unknown). Empty: revocation is not checked.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// A CRL past its nextUpdate: `refuse` every client it covers, or `accept` it as valid.
    #[serde(default)]
    pub expired_crl: ExpiredCrl,
    /// Seconds between checks of the certificate, key, trust bundle and CRL files; a changed
    /// file reloads them all. 0: reload only on SIGHUP.
    #[serde(default = "default_reload_interval")]
    pub reload_interval_secs: u64,
}

/// What a CRL past its nextUpdate means (`tls.expired_crl`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiredCrl {
    /// Every client certificate the CRL covers is refused until a fresh CRL is loaded.
    #[default]
    Refuse,
    /// The CRL is used as if it were still current.
    Accept,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (created when missing) or `postgres://user@host/db`.
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// Limits that keep one agency (or one attacker) from starving the others. Exceeding a
/// per-call limit is RESOURCE_EXHAUSTED with a retry hint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most TCP connections served at once; more wait in the kernel backlog.
    pub max_connections: usize,
    /// Most TLS connections one agency may hold open; more are closed after the handshake.
    pub max_connections_per_agency: usize,
    /// Most HTTP/2 streams (calls) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Sustained calls per second one agency may make (token bucket)...
    pub requests_per_second: f64,
    /// ...with bursts up to this many calls.
    pub burst: u32,
    /// Most calls of one agency in progress at once (a streamed answer counts until it
    /// starts; streams are bounded by max_concurrent_streams and connections).
    pub max_in_flight_per_agency: usize,
    /// Largest request message (DocumentService uploads have their own chunk limit).
    pub max_message_bytes: usize,
    /// Deadline of every unary call (a shorter grpc-timeout from the client wins);
    /// streams are bounded by their own rules.
    pub call_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: default_max_connections_total(),
            max_connections_per_agency: 64,
            max_concurrent_streams: 128,
            requests_per_second: 200.0,
            burst: 400,
            max_in_flight_per_agency: 64,
            max_message_bytes: 4 * 1024 * 1024,
            call_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Ed25519 private key (PKCS#8 PEM) that signs this node's checkpoints; the
    /// development PKI creates it, with its published verifier key beside it (.pub).
    #[serde(default = "default_signing_key")]
    pub signing_key: PathBuf,
    /// Sign a checkpoint after this many entries...
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// ...or this many milliseconds after the first entry it does not cover.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            signing_key: default_signing_key(),
            checkpoint_every: default_checkpoint_every(),
            checkpoint_interval_ms: default_checkpoint_interval_ms(),
        }
    }
}

/// The largest `documents.max_chunk_bytes` (a gRPC message must hold one chunk).
pub const MAX_CHUNK_BYTES: u64 = 16 * 1024 * 1024;

/// The role that may call AuditService.
pub const ROLE_AUDITOR: &str = "auditor";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyConfig {
    /// Stable id, the last segment of the agency's SPIFFE id: lowercase letters, digits, '-'.
    pub id: String,
    pub name_en: String,
    pub name_ar: String,
    /// Roles beyond exchanging cases: "auditor" may read the audit trail.
    #[serde(default)]
    pub roles: Vec<String>,
    /// How the gateway delivers to this agency (default: the agency pulls from its inbox).
    #[serde(default)]
    pub adapter: AdapterConfig,
    /// What the agency may do (default: nothing; see `auth::policy`).
    #[serde(default)]
    pub policy: crate::auth::policy::PolicyConfig,
    /// What the agency does, in English and Arabic (DirectoryService).
    #[serde(default)]
    pub description_en: String,
    #[serde(default)]
    pub description_ar: String,
    /// Ways to contact the agency.
    #[serde(default)]
    pub contacts: Vec<ContactConfig>,
    /// The services the agency accepts referrals and information requests for.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
}

/// An agency's delivery adapter, chosen by `kind`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AdapterConfig {
    /// The agency calls jisr.adapter.v1.InboxService to pull and acknowledge deliveries.
    #[default]
    Inbox,
    /// The gateway calls the agency's jisr.adapter.v1.AgencyEndpointService over mTLS.
    Grpc {
        /// e.g. "https://housing.example.gov:8443"
        endpoint: String,
        /// The name the agency's server certificate must carry (default: the endpoint's host).
        #[serde(default)]
        server_name: Option<String>,
        /// CA bundle for the agency's server certificate (default: tls.ca_cert).
        #[serde(default)]
        ca_cert: Option<PathBuf>,
    },
    /// The gateway POSTs JSON to the agency's HTTPS API (see `adapters::rest`).
    Rest(Box<RestConfig>),
}

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
    pub status_update: Option<RestMapping>,
}

impl RestMappings {
    /// Each message kind with its mapping, if configured.
    pub fn by_kind(&self) -> [(&'static str, &Option<RestMapping>); 4] {
        use crate::delivery::payload::*;
        [
            (KIND_REFERRAL, &self.referral),
            (KIND_INFORMATION_REQUEST, &self.information_request),
            (KIND_INFORMATION_RESPONSE, &self.information_response),
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

impl AdapterConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            AdapterConfig::Inbox => "inbox",
            AdapterConfig::Grpc { .. } => "grpc",
            AdapterConfig::Rest(_) => "rest",
        }
    }
}

/// Delivery to agencies: retries, limits, dead letters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// The gateway's own client certificate for calling agencies (created with the dev PKI).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Give up (dead letter) after this many attempts...
    pub max_attempts: u32,
    /// ...or this long after the delivery was created.
    pub max_age_secs: u64,
    /// Backoff before retry n: min(initial * 2^(n-1), max), with jitter.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// One attempt's deadline.
    pub timeout_ms: u64,
    /// Deliveries in flight to one agency at once.
    pub per_agency_concurrency: usize,
    /// Consecutive failures that open an agency's circuit breaker, and how long it stays open.
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    /// An inbox delivery not acknowledged this long after it was pulled is offered again.
    pub visibility_timeout_ms: u64,
    /// How often the dispatcher looks for due retries when nothing wakes it.
    pub poll_interval_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            client_cert: PathBuf::from("certs/dev/gateway-client.pem"),
            client_key: PathBuf::from("certs/dev/gateway-client.key"),
            max_attempts: 10,
            max_age_secs: 86_400,
            initial_backoff_ms: 200,
            max_backoff_ms: 60_000,
            timeout_ms: 10_000,
            per_agency_concurrency: 32,
            breaker_failures: 5,
            breaker_cooldown_ms: 10_000,
            visibility_timeout_ms: 30_000,
            poll_interval_ms: 500,
        }
    }
}

fn default_node_id() -> String {
    "jisr-1".into()
}
fn default_dev_pki_dir() -> PathBuf {
    PathBuf::from("certs/dev")
}
fn default_server_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_reload_interval() -> u64 {
    5
}
fn default_signing_key() -> PathBuf {
    PathBuf::from("certs/dev/audit-signing.key")
}
fn default_checkpoint_every() -> u64 {
    1000
}
fn default_checkpoint_interval_ms() -> u64 {
    1000
}
fn default_max_connections() -> u32 {
    8
}
fn default_max_connections_total() -> usize {
    1024
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        de::Error::invalid_value(
            Unexpected::Str(&s),
            &"a socket address such as 127.0.0.1:7443",
        )
    })
}

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

impl Config {
    /// Loads `path` and applies the `JISR_...` variables of the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text, std::env::vars())
    }

    /// Parses TOML text and applies overrides from `vars` (name, value pairs; names not
    /// starting with `JISR_` are ignored). `JISR_A__B` sets key `b` of table `a`.
    pub fn parse(
        path: &Path,
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut doc: toml::Table =
            text.parse()
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
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Type {
                    origin: origin_of(&key),
                    key,
                    message: e.into_inner().to_string(),
                }
            })?;
        config.validate().map_err(|mut e| {
            if let ConfigError::Invalid { key, origin, .. } = &mut e {
                *origin = origin_of(key);
            }
            e
        })?;
        Ok(config)
    }

    /// Rules serde cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, value: &str, expected: &str| ConfigError::Invalid {
            key,
            origin: Origin::default(),
            value: value.to_string(),
            expected: expected.to_string(),
        };
        if !is_slug(&self.node_id) {
            return Err(invalid("node_id".into(), &self.node_id, SLUG_RULE));
        }
        if !is_trust_domain(&self.trust_domain) {
            return Err(invalid(
                "trust_domain".into(),
                &self.trust_domain,
                "a SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_', e.g. jisr.gov.ae",
            ));
        }
        for (i, crl) in self.tls.crls.iter().enumerate() {
            if crl.as_os_str().is_empty() {
                return Err(invalid(
                    format!("tls.crls[{i}]"),
                    "",
                    "the path of a PEM CRL file",
                ));
            }
        }
        if self.tls.handshake_timeout_secs == 0 {
            return Err(invalid(
                "tls.handshake_timeout_secs".into(),
                "0",
                "at least 1",
            ));
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url".into(),
                url,
                "a URL starting with sqlite: or postgres://",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid(
                "database.max_connections".into(),
                "0",
                "at least 1",
            ));
        }
        if self.audit.checkpoint_every == 0 || self.audit.checkpoint_interval_ms == 0 {
            let (k, v) = if self.audit.checkpoint_every == 0 {
                ("audit.checkpoint_every", "0")
            } else {
                ("audit.checkpoint_interval_ms", "0")
            };
            return Err(invalid(k.into(), v, "at least 1"));
        }
        let d = &self.delivery;
        for (key, value) in [
            ("delivery.max_attempts", u64::from(d.max_attempts)),
            ("delivery.timeout_ms", d.timeout_ms),
            (
                "delivery.per_agency_concurrency",
                d.per_agency_concurrency as u64,
            ),
            ("delivery.breaker_failures", u64::from(d.breaker_failures)),
            ("delivery.visibility_timeout_ms", d.visibility_timeout_ms),
            ("delivery.poll_interval_ms", d.poll_interval_ms),
        ] {
            if value == 0 {
                return Err(invalid(key.into(), "0", "at least 1"));
            }
        }
        let docs = &self.documents;
        for (key, value) in [
            ("documents.max_chunk_bytes", docs.max_chunk_bytes),
            ("documents.max_document_bytes", docs.max_document_bytes),
            (
                "information_requests.default_time_frame_working_days",
                u64::from(self.information_requests.default_time_frame_working_days),
            ),
        ] {
            if value == 0 {
                return Err(invalid(key.into(), "0", "at least 1"));
            }
        }
        if docs.max_chunk_bytes > MAX_CHUNK_BYTES {
            return Err(invalid(
                "documents.max_chunk_bytes".into(),
                &docs.max_chunk_bytes.to_string(),
                &format!("at most {MAX_CHUNK_BYTES} (16 MiB)"),
            ));
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.max_connections_per_agency",
                l.max_connections_per_agency as u64,
            ),
            (
                "limits.max_concurrent_streams",
                u64::from(l.max_concurrent_streams),
            ),
            ("limits.burst", u64::from(l.burst)),
            (
                "limits.max_in_flight_per_agency",
                l.max_in_flight_per_agency as u64,
            ),
            ("limits.max_message_bytes", l.max_message_bytes as u64),
            ("limits.call_timeout_ms", l.call_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(key.into(), "0", "at least 1"));
            }
        }
        if !(l.requests_per_second > 0.0 && l.requests_per_second.is_finite()) {
            return Err(invalid(
                "limits.requests_per_second".into(),
                &l.requests_per_second.to_string(),
                "a positive number of calls per second",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, agency) in self.agencies.iter().enumerate() {
            let key = |field: &str| format!("agencies[{i}].{field}");
            if !is_slug(&agency.id) || agency.id == GATEWAY_ACTOR {
                return Err(invalid(key("id"), &agency.id, SLUG_RULE));
            }
            if !seen.insert(agency.id.as_str()) {
                return Err(invalid(key("id"), &agency.id, "an id no other agency has"));
            }
            for (j, role) in agency.roles.iter().enumerate() {
                if role != ROLE_AUDITOR {
                    return Err(invalid(
                        key(&format!("roles[{j}]")),
                        role,
                        "a known role: \"auditor\"",
                    ));
                }
            }
            if let AdapterConfig::Grpc { endpoint, .. } = &agency.adapter {
                if !endpoint.starts_with("https://") {
                    return Err(invalid(
                        key("adapter.endpoint"),
                        endpoint,
                        "an https:// URL of the agency's endpoint",
                    ));
                }
            }
            if let AdapterConfig::Rest(rest) = &agency.adapter {
                validate_rest(rest, &|field| key(&format!("adapter.{field}")))?;
            }
            for (field, value) in [("name_en", &agency.name_en), ("name_ar", &agency.name_ar)] {
                if value.trim().is_empty() {
                    return Err(invalid(key(field), value, "a non-empty name"));
                }
            }
        }
        // Services, contacts, the calendar and the routing questionnaire.
        crate::directory::config::validate(self)?;
        crate::auth::officer::validate(&self.officers)?;
        let problems = crate::auth::policy::check(self);
        if !problems.is_empty() {
            return Err(ConfigError::Policy(problems));
        }
        Ok(())
    }

    /// Whether the agency holds `role`.
    pub fn has_role(&self, agency: &str, role: &str) -> bool {
        self.agency(agency)
            .is_some_and(|a| a.roles.iter().any(|r| r == role))
    }

    /// The name of this node's audit log in checkpoints (C2SP origin and key name).
    pub fn audit_origin(&self) -> String {
        format!("{}/jisr/{}", self.trust_domain, self.node_id)
    }

    pub fn agency(&self, id: &str) -> Option<&AgencyConfig> {
        self.agencies.iter().find(|a| a.id == id)
    }

    /// Where `jisr certs init` puts an agency's client certificate and key.
    pub fn dev_agency_cert_paths(&self, agency: &str) -> (PathBuf, PathBuf) {
        let dir = self.tls.dev_pki_dir.join("agencies");
        (
            dir.join(format!("{agency}.pem")),
            dir.join(format!("{agency}.key")),
        )
    }
}

/// The `rest` adapter's settings; `key` names a field under the agency's `adapter`.
fn validate_rest(rest: &RestConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let invalid = |field: &str, value: &str, expected: &str| ConfigError::Invalid {
        key: key(field),
        origin: Origin::default(),
        value: value.to_string(),
        expected: expected.to_string(),
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

const ENV_VAR_RULE: &str = "the name of an environment variable holding the secret: letters, digits and '_', not starting with a digit";

fn is_env_var_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

const SLUG_RULE: &str =
    "2-63 characters: lowercase letters, digits and '-', starting with a letter (and not \"jisr\")";

/// Agency ids, node ids: `[a-z][a-z0-9-]{1,62}`.
pub fn is_slug(s: &str) -> bool {
    (2..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' || c == '_'
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../config/jisr.toml");

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::parse(
            Path::new("config/jisr.toml"),
            SAMPLE,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn sample_config_holds_the_nine_referral_agencies() {
        let config = parse(&[]).expect("sample config parses");
        let ids: Vec<_> = config.agencies.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            &ids[..9],
            [
                "social-services",
                "family-court",
                "police",
                "suburbs-affairs",
                "housing",
                "human-resources",
                "digital",
                "family-development",
                "charity"
            ],
            "{ids:?}"
        );
        assert!(config.agencies.iter().all(|a| !a.name_ar.is_ascii()));
        assert!(config.has_role("digital", ROLE_AUDITOR));
    }

    #[test]
    fn sample_config_holds_the_building_certificate_agencies_calendar_and_questionnaire() {
        let config = parse(&[]).expect("sample config parses");
        for id in [
            "city-municipality",
            "electricity-water-gas",
            "planning-survey",
            "municipal-affairs",
            "civil-defence",
            "roads-transport",
            "telecom",
        ] {
            let agency = config.agency(id).unwrap_or_else(|| panic!("missing {id}"));
            assert!(!agency.services.is_empty(), "{id} offers a service");
        }
        assert!(config.agencies.iter().all(|a| !a.services.is_empty()));
        assert_eq!(
            config.calendar.weekend,
            [time::Weekday::Saturday, time::Weekday::Sunday]
        );
        assert!(config.calendar.holidays.len() >= 5);
        assert!(!config.routing.questions.is_empty() && !config.routing.rules.is_empty());
    }

    #[test]
    fn directory_settings_have_defaults() {
        let minimal = "listen_addr = \"127.0.0.1:1\"\ntrust_domain = \"x\"\n\
                       [tls]\nca_cert = \"a\"\nserver_cert = \"b\"\nserver_key = \"c\"\n\
                       [database]\nurl = \"sqlite://x.db\"\n\
                       [[agencies]]\nid = \"housing\"\nname_en = \"Housing\"\nname_ar = \"الإسكان\"\n";
        let config = Config::parse(Path::new("x"), minimal, Vec::new()).unwrap();
        let agency = &config.agencies[0];
        assert!(agency.services.is_empty() && agency.contacts.is_empty());
        assert!(agency.description_en.is_empty());
        assert_eq!(
            config.calendar.weekend,
            [time::Weekday::Saturday, time::Weekday::Sunday],
            "the UAE weekend by default"
        );
        assert!(config.calendar.holidays.is_empty());
        assert!(config.routing.questions.is_empty() && config.routing.rules.is_empty());
    }

    #[test]
    fn environment_overrides_top_level_and_nested_keys() {
        let config = parse(&[
            ("JISR_LISTEN_ADDR", "0.0.0.0:9000"),
            ("JISR_DATABASE__URL", "postgres://postgres@127.0.0.1/test"),
            ("JISR_DATABASE__MAX_CONNECTIONS", "3"),
            ("JISR_LOG", "debug"),
            ("OTHER_VAR", "x"),
        ])
        .unwrap();
        assert_eq!(config.listen_addr.port(), 9000);
        assert_eq!(config.database.url, "postgres://postgres@127.0.0.1/test");
        assert_eq!(config.database.max_connections, 3);
    }

    #[test]
    fn bad_value_names_key_value_expectation_and_variable() {
        let err = parse(&[("JISR_LISTEN_ADDR", "not-an-address")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`listen_addr`"), "{err}");
        assert!(err.contains("not-an-address"), "{err}");
        assert!(err.contains("expected a socket address"), "{err}");
        assert!(err.contains("JISR_LISTEN_ADDR"), "{err}");
    }

    #[test]
    fn wrong_type_and_unknown_key_are_refused() {
        let err = parse(&[("JISR_DATABASE__MAX_CONNECTIONS", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.max_connections"), "{err}");
        assert!(err.contains("many"), "{err}");
        let err = parse(&[("JISR_LISTN_ADDR", "1")]).unwrap_err().to_string();
        assert!(err.contains("listn_addr"), "{err}");
    }

    /// The sample config with a `rest` adapter for the charity (agencies[8]).
    fn with_rest(adapter: &str) -> Result<Config, ConfigError> {
        // After the charity's own keys, before its services or the next agency.
        let start = SAMPLE.find("id = \"charity\"").expect("the charity");
        let end = SAMPLE[start..]
            .find("\n[")
            .map_or(SAMPLE.len(), |i| start + i + 1);
        let text = format!(
            "{}[agencies.adapter]\nkind = \"rest\"\n{adapter}\n{}",
            &SAMPLE[..end],
            &SAMPLE[end..]
        );
        Config::parse(Path::new("x"), &text, Vec::new())
    }

    #[test]
    fn a_rest_adapter_parses_with_auth_and_mappings() {
        let config = with_rest(
            r#"url = "https://charity.example.ae/api/jisr"
timeout_ms = 5000
[agencies.adapter.auth]
kind = "api_key"
header = "X-Api-Key"
key_env = "CHARITY_API_KEY"
[agencies.adapter.mapping.referral]
path = "/referrals"
rename = { "subject.full_name" = "person.name" }
flatten = ["consent"]
constants = { "source" = "jisr", "schema.version" = 2 }
drop = ["attachments"]
"#,
        )
        .unwrap();
        let AdapterConfig::Rest(rest) = &config.agency("charity").unwrap().adapter else {
            panic!("not rest")
        };
        assert_eq!(rest.timeout_ms, Some(5000));
        assert_eq!(rest.auth.kind(), "api_key");
        let m = rest.mapping.referral.as_ref().unwrap();
        assert_eq!(m.path, "/referrals");
        assert_eq!(m.constants["schema.version"], serde_json::json!(2));
        assert!(rest.mapping.status_update.is_none());
        assert_eq!(config.agency("charity").unwrap().adapter.kind(), "rest");
    }

    #[test]
    fn rest_adapter_settings_are_checked() {
        let err = |adapter: &str| with_rest(adapter).unwrap_err().to_string();
        let mtls = "[agencies.adapter.auth]\nkind = \"mtls\"\n";
        let e = err(&format!("url = \"http://charity.example.ae\"\n{mtls}"));
        assert!(
            e.contains("agencies[8].adapter.url") && e.contains("http://charity.example.ae"),
            "{e}"
        );
        let e = err(&format!(
            "url = \"https://c.example.ae\"\ntimeout_ms = 0\n{mtls}"
        ));
        assert!(e.contains("adapter.timeout_ms"), "{e}");
        let e = err("url = \"https://c.example.ae\"\n[agencies.adapter.auth]\nkind = \"bearer\"\ntoken_env = \"NOT-A-VAR\"\n");
        assert!(
            e.contains("adapter.auth.token_env") && e.contains("NOT-A-VAR"),
            "{e}"
        );
        let e = err("url = \"https://c.example.ae\"\n[agencies.adapter.auth]\nkind = \"api_key\"\nheader = \"Bad Header\"\nkey_env = \"K\"\n");
        assert!(e.contains("adapter.auth.header"), "{e}");
        let e = err(&format!(
            "url = \"https://c.example.ae\"\n{mtls}[agencies.adapter.mapping.referral]\npath = \"referrals\"\n"
        ));
        assert!(e.contains("adapter.mapping.referral.path"), "{e}");
        let e = err(&format!(
            "url = \"https://c.example.ae\"\n{mtls}[agencies.adapter.mapping.status_update]\ndrop = [\"a..b\"]\n"
        ));
        assert!(
            e.contains("adapter.mapping.status_update.drop") && e.contains("a..b"),
            "{e}"
        );
        let e = err(&format!(
            "url = \"https://c.example.ae\"\n{mtls}[agencies.adapter.mapping.information_requests]\n"
        ));
        assert!(e.contains("information_requests"), "{e}");
        let e = err("url = \"https://c.example.ae\"\n[agencies.adapter.auth]\nkind = \"bearer\"\ntoken = \"s3cret\"\n");
        assert!(e.contains("token"), "an inline secret is refused: {e}");
        let e = err("url = \"https://c.example.ae\"\n");
        assert!(e.contains("auth"), "{e}");
    }

    #[test]
    fn semantic_rules_name_the_key() {
        let err = parse(&[("JISR_DATABASE__URL", "mysql://x")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`database.url`") && err.contains("mysql://x"),
            "{err}"
        );
        let dup = SAMPLE.replace("id = \"police\"", "id = \"housing\"");
        let err = Config::parse(Path::new("x"), &dup, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agencies[") && err.contains("housing"),
            "{err}"
        );
        let err = parse(&[("JISR_TRUST_DOMAIN", "Bad Domain")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trust_domain") && err.contains("Bad Domain"),
            "{err}"
        );
    }
}
