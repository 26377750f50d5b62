//! `rest`: POSTs each delivery as JSON to the agency's HTTPS API, reshaped by the agency's
//! declarative mapping (`[agencies.adapter.mapping.<kind>]`), authenticated by mTLS (the
//! gateway's client certificate), a bearer token or an API-key header.
//!
//! The body is the delivery's canonical JSON ([`canonical`]) after the mapping
//! ([`mapping`]). Every request carries `Idempotency-Key` and `X-Jisr-Delivery-Id` (the
//! delivery id, stable across attempts: the agency de-duplicates on it) and the exchange's
//! W3C `traceparent`.
//!
//! How an answer is classified:
//!
//! | answer                                   | result                                  |
//! |------------------------------------------|-----------------------------------------|
//! | 2xx with a JSON body                     | delivered; receipt = `receipt_id` or `id` |
//! | 204 No Content                           | delivered; empty receipt                |
//! | 2xx whose body is not JSON               | Retryable ("malformed reply")           |
//! | 408, 425, 429, 5xx                       | Retryable                               |
//! | other 4xx (and 1xx/3xx)                  | Permanent, with the status and body start |
//! | connect / TLS / IO error, timeout        | Retryable                               |
//!
//! Secrets come from the environment variables the config names; they are read once when
//! the adapter is built, never logged, and marked sensitive in requests.

pub mod canonical;
pub mod config;
pub mod mapping;

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use config::{RestAuth, RestConfig, RestMapping, RestMappings};

use super::BuildContext;
use crate::common::error_chain;
use crate::common::BoxFuture;
use crate::delivery::{Adapter, AgencyReceipt, DeliveryError, OutboundDelivery};

use crate::tls::https::TlsConnector;

/// Largest answer body read; a longer one is cut and treated as not JSON.
const MAX_REPLY_BYTES: usize = 1 << 20;
/// How much of an error answer's body goes into the error message.
const BODY_PREFIX_CHARS: usize = 200;

pub struct RestAdapter {
    /// "rest", or "webhook" for the webhook adapter built on this one.
    kind: &'static str,
    agency: String,
    client: Client<TlsConnector, Full<Bytes>>,
    health_client: Client<TlsConnector, Empty<Bytes>>,
    base: Uri,
    /// Where and how each message kind is sent.
    targets: Vec<(&'static str, Target)>,
    timeout: Duration,
    /// The auth header (bearer or API key), marked sensitive; none for mTLS.
    auth: Option<(HeaderName, HeaderValue)>,
    /// Signs each body (the webhook adapter): `X-Jisr-Signature` over timestamp and body.
    signer: Option<Signer>,
}

/// How the webhook adapter signs: HMAC-SHA256 with a shared secret over
/// `<unix seconds>.<body>`, sent as `X-Jisr-Timestamp` and `X-Jisr-Signature: v1=<hex>`.
pub(crate) struct Signer(pub(crate) ring::hmac::Key);

impl Signer {
    /// The two headers for `body` signed at `unix_secs`.
    pub(crate) fn headers(&self, unix_secs: u64, body: &[u8]) -> (String, String) {
        let timestamp = unix_secs.to_string();
        let mut ctx = ring::hmac::Context::with_key(&self.0);
        ctx.update(timestamp.as_bytes());
        ctx.update(b".");
        ctx.update(body);
        let signature = format!("v1={}", hex::encode(ctx.sign().as_ref()));
        (timestamp, signature)
    }
}

/// What a push over HTTPS is built from, once auth and secrets are resolved.
pub(crate) struct Parts<'a> {
    pub(crate) kind: &'static str,
    pub(crate) url: &'a str,
    pub(crate) ca_cert: Option<&'a Path>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) mapping: &'a RestMappings,
    pub(crate) auth: Option<(HeaderName, HeaderValue)>,
    pub(crate) mtls: bool,
    pub(crate) signer: Option<Signer>,
}

/// Where and how one kind of message is sent.
struct Target {
    uri: Uri,
    mapping: RestMapping,
}

impl RestAdapter {
    /// Builds the adapter of `agency`, reading its secrets from the process environment.
    pub fn new(ctx: &BuildContext, rest: &RestConfig) -> anyhow::Result<RestAdapter> {
        RestAdapter::with_secrets(ctx, rest, |name| std::env::var(name).ok())
    }

    /// As [`RestAdapter::new`], with secrets looked up by `secret(variable name)`.
    pub fn with_secrets(
        ctx: &BuildContext,
        rest: &RestConfig,
        secret: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<RestAdapter> {
        let agency = &ctx.agency;
        let what = || format!("agency {agency}: rest adapter");
        let read_secret = |var: &str| -> anyhow::Result<HeaderValue> {
            let Some(value) = secret(var).filter(|v| !v.is_empty()) else {
                bail!(
                    "{}: environment variable {var} (named by auth) is not set or empty",
                    what()
                );
            };
            HeaderValue::from_str(&value).map_err(|_| {
                anyhow::anyhow!(
                    "{}: environment variable {var} holds characters not allowed in an HTTP header",
                    what()
                )
            })
        };
        let (auth, client_cert) = match &rest.auth {
            RestAuth::Mtls => (
                None,
                Some((ctx.client_cert.as_path(), ctx.client_key.as_path())),
            ),
            RestAuth::Bearer { token_env } => {
                let token = read_secret(token_env)?;
                let mut value =
                    HeaderValue::from_bytes(&[b"Bearer ".as_slice(), token.as_bytes()].concat())
                        .with_context(what)?;
                value.set_sensitive(true);
                (Some((AUTHORIZATION, value)), None)
            }
            RestAuth::ApiKey { header, key_env } => {
                let name = HeaderName::from_bytes(header.as_bytes())
                    .with_context(|| format!("{}: auth.header {header:?}", what()))?;
                let mut value = read_secret(key_env)?;
                value.set_sensitive(true);
                (Some((name, value)), None)
            }
        };
        RestAdapter::assemble(
            ctx,
            Parts {
                kind: "rest",
                url: &rest.url,
                ca_cert: rest.ca_cert.as_deref(),
                timeout_ms: rest.timeout_ms,
                mapping: &rest.mapping,
                auth,
                mtls: client_cert.is_some(),
                signer: None,
            },
        )
    }

    /// The adapter of `parts`: the HTTPS client, the target of each message kind.
    pub(crate) fn assemble(ctx: &BuildContext, parts: Parts<'_>) -> anyhow::Result<RestAdapter> {
        let agency = &ctx.agency;
        let what = || format!("agency {agency}: {} adapter", parts.kind);
        let client_cert = parts
            .mtls
            .then_some((ctx.client_cert.as_path(), ctx.client_key.as_path()));
        let ca: &Path = parts.ca_cert.unwrap_or(&ctx.ca_cert);
        let connector = TlsConnector::new(ca, client_cert).with_context(what)?;
        let base: Uri = parts
            .url
            .parse()
            .with_context(|| format!("{}: url {:?}", what(), parts.url))?;
        if base.scheme_str() != Some("https") || base.host().is_none() {
            bail!("{}: url {:?} is not an https:// URL", what(), parts.url);
        }
        let target = |mapping: &Option<RestMapping>| -> anyhow::Result<Target> {
            let mapping = mapping.clone().unwrap_or_default();
            let url = if mapping.path.is_empty() {
                parts.url.to_string()
            } else {
                format!("{}{}", parts.url.trim_end_matches('/'), mapping.path)
            };
            let uri = url
                .parse()
                .with_context(|| format!("{}: URL {url:?}", what()))?;
            Ok(Target { uri, mapping })
        };
        Ok(RestAdapter {
            kind: parts.kind,
            agency: agency.to_string(),
            client: Client::builder(TokioExecutor::new()).build(connector.clone()),
            health_client: Client::builder(TokioExecutor::new()).build(connector),
            base,
            targets: parts
                .mapping
                .by_kind()
                .into_iter()
                .map(|(kind, mapping)| Ok((kind, target(mapping)?)))
                .collect::<anyhow::Result<_>>()?,
            timeout: parts.timeout_ms.map_or(ctx.timeout, Duration::from_millis),
            auth: parts.auth,
            signer: parts.signer,
        })
    }

    /// The URL and mapped JSON body a delivery is sent as.
    pub fn request_body(&self, d: &OutboundDelivery) -> Result<(Uri, Vec<u8>), DeliveryError> {
        let (kind, doc) = canonical::canonical(d).map_err(DeliveryError::Permanent)?;
        let target = self
            .targets
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, t)| t)
            .ok_or_else(|| DeliveryError::Permanent(format!("no target for {kind}")))?;
        let mapped = mapping::apply(&target.mapping, doc).map_err(|e| {
            DeliveryError::Permanent(format!(
                "the {kind} mapping of agency {} does not fit: {e}",
                self.agency
            ))
        })?;
        let body = serde_json::to_vec(&mapped)
            .map_err(|e| DeliveryError::Permanent(format!("cannot encode JSON: {e}")))?;
        Ok((target.uri.clone(), body))
    }

    async fn post(&self, d: &OutboundDelivery) -> Result<AgencyReceipt, DeliveryError> {
        let (uri, body) = self.request_body(d)?;
        let id = HeaderValue::from_str(&d.delivery_id).map_err(|_| {
            DeliveryError::Permanent(format!(
                "delivery id {:?} is not a header value",
                d.delivery_id
            ))
        })?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("jisr/", env!("CARGO_PKG_VERSION")))
            .header("idempotency-key", id.clone())
            .header("x-jisr-delivery-id", id);
        let traceparent = d
            .message
            .metadata
            .as_ref()
            .map(|m| m.traceparent.as_str())
            .unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(traceparent) {
            if !traceparent.is_empty() {
                request = request.header("traceparent", value);
            }
        }
        if let Some((name, value)) = &self.auth {
            request = request.header(name, value.clone());
        }
        if let Some(signer) = &self.signer {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let (timestamp, signature) = signer.headers(now, &body);
            request = request
                .header("x-jisr-timestamp", timestamp)
                .header("x-jisr-signature", signature);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| DeliveryError::Permanent(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                DeliveryError::Retryable(format!("POST {uri}: {}", error_chain(&e)))
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| {
                    DeliveryError::Retryable(format!(
                        "POST {uri}: {status}, reading the answer: {}",
                        error_chain(e.as_ref())
                    ))
                })?;
            Ok::<_, DeliveryError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                DeliveryError::Retryable(format!(
                    "POST {uri}: no answer within {} ms",
                    self.timeout.as_millis()
                ))
            })??;
        classify(status, &body)
    }
}

/// What an agency's answer means for the delivery (see the module's table).
pub fn classify(status: StatusCode, body: &[u8]) -> Result<AgencyReceipt, DeliveryError> {
    if status == StatusCode::NO_CONTENT {
        return Ok(String::new());
    }
    if status.is_success() {
        return match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(reply) => Ok(["receipt_id", "id"]
                .iter()
                .find_map(|k| reply.get(k).and_then(|v| v.as_str()))
                .unwrap_or_default()
                .to_string()),
            Err(_) => Err(DeliveryError::Retryable(format!(
                "malformed reply: {status} with a body that is not JSON: {:?}",
                body_prefix(body)
            ))),
        };
    }
    let text = format!("{status}: {}", body_prefix(body));
    if is_retryable_status(status) {
        Err(DeliveryError::Retryable(text))
    } else {
        Err(DeliveryError::Permanent(text))
    }
}

fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error()
}

/// The start of a body, as text on one line.
fn body_prefix(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(BODY_PREFIX_CHARS + 1)
        .collect();
    if out.chars().count() > BODY_PREFIX_CHARS {
        out = out.chars().take(BODY_PREFIX_CHARS).collect::<String>() + "…";
    }
    out
}

impl Adapter for RestAdapter {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn deliver<'a>(
        &'a self,
        d: &'a OutboundDelivery,
    ) -> BoxFuture<'a, Result<AgencyReceipt, DeliveryError>> {
        Box::pin(self.post(d))
    }

    /// Reachable when a TLS connection to the host succeeds and an authenticated GET of the
    /// base URL is not answered with a retryable status (5xx, 408, 425, 429): an agency
    /// that is up but answers 503 is down for delivery purposes. Any other answer (200,
    /// 404, 405...) shows a live API.
    fn health(&self) -> BoxFuture<'_, Result<(), DeliveryError>> {
        Box::pin(async move {
            let mut request = Request::builder()
                .method(Method::GET)
                .uri(self.base.clone())
                .header(USER_AGENT, concat!("jisr/", env!("CARGO_PKG_VERSION")));
            if let Some((name, value)) = &self.auth {
                request = request.header(name, value.clone());
            }
            let request = request
                .body(Empty::new())
                .map_err(|e| DeliveryError::Retryable(e.to_string()))?;
            let answer = tokio::time::timeout(self.timeout, self.health_client.request(request))
                .await
                .map_err(|_| {
                    DeliveryError::Retryable(format!(
                        "GET {}: no answer within {} ms",
                        self.base,
                        self.timeout.as_millis()
                    ))
                })?
                .map_err(|e| {
                    DeliveryError::Retryable(format!("GET {}: {}", self.base, error_chain(&e)))
                })?;
            if is_retryable_status(answer.status()) {
                return Err(DeliveryError::Retryable(format!(
                    "GET {}: {}",
                    self.base,
                    answer.status()
                )));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retryable(r: Result<AgencyReceipt, DeliveryError>) -> bool {
        matches!(r, Err(DeliveryError::Retryable(_)))
    }

    fn permanent(r: Result<AgencyReceipt, DeliveryError>) -> bool {
        matches!(r, Err(DeliveryError::Permanent(_)))
    }

    #[test]
    fn a_json_2xx_is_delivered_with_its_receipt() {
        let ok =
            |code: u16, body: &str| classify(StatusCode::from_u16(code).unwrap(), body.as_bytes());
        assert_eq!(
            ok(200, r#"{"receipt_id": "R-1", "id": "x"}"#).unwrap(),
            "R-1"
        );
        assert_eq!(ok(201, r#"{"id": "C-9"}"#).unwrap(), "C-9");
        assert_eq!(ok(202, r#"{"id": 7}"#).unwrap(), "");
        assert_eq!(ok(200, "[]").unwrap(), "");
        assert_eq!(ok(204, "").unwrap(), "");
    }

    #[test]
    fn answers_are_classified() {
        let c =
            |code: u16, body: &str| classify(StatusCode::from_u16(code).unwrap(), body.as_bytes());
        assert!(retryable(c(200, "not json")));
        assert!(retryable(c(200, "")));
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert!(retryable(c(code, "busy")), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 413, 422, 301] {
            assert!(permanent(c(code, "no")), "{code}");
        }
        let Err(DeliveryError::Permanent(e)) = c(422, "{\"error\": \"case type\n not accepted\"}")
        else {
            panic!("422 is permanent")
        };
        assert!(
            e.contains("422") && e.contains("case type not accepted"),
            "{e}"
        );
        let Err(DeliveryError::Permanent(e)) = c(400, &"x".repeat(5000)) else {
            panic!("400 is permanent")
        };
        assert!(e.len() < 300, "the body is cut: {}", e.len());
    }
}
