//! A test identity provider for officer tokens, public so integration tests can drive a
//! gateway over the wire with it (like `adapters::testkit`).
//!
//! - [`TestIssuer`]: an ES256 key pair with a `kid`; writes its JWKS and mints tokens with
//!   any claims, plus raw builders for hostile tokens (alg "none", HMAC, another key's
//!   signature, any header or payload bytes).
//! - [`MockIdp`]: an HTTPS server on loopback (a `localhost` certificate from a
//!   [`CertAuthority`]) serving a JWKS at `/jwks` and RFC 7662 introspection at
//!   `/introspect`, counting requests and checking HTTP Basic client authentication.
//!
//! ```ignore
//! let issuer = TestIssuer::new("k1");
//! let idp = MockIdp::start(&ca, TEST_CLIENT_ID, TEST_CLIENT_SECRET).await?;
//! idp.set_jwks(issuer.jwks());
//! config.officers = idp.officer_config(&ca_path, "JISR_TEST_IDP_SECRET");
//! let token = issuer.mint(&TestIssuer::claims("officer-17"));
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

use super::introspection::form_encode;
use super::{IntrospectionConfig, OfficerConfig};
use crate::tls::pki::{CertAuthority, LeafSpec};

/// The `iss` of [`TestIssuer::claims`].
pub const TEST_ISSUER: &str = "https://idp.jisr.test";
/// The `aud` of [`TestIssuer::claims`].
pub const TEST_AUDIENCE: &str = "jisr-gateway";
/// The gateway's client credentials at a [`MockIdp`], as tests usually choose them.
pub const TEST_CLIENT_ID: &str = "jisr-gateway";
pub const TEST_CLIENT_SECRET: &str = "introspection-s3cret";

/// Seconds since 1970, now.
pub fn now_secs() -> u64 {
    super::now_unix()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An identity provider's ES256 signing key.
pub struct TestIssuer {
    kid: String,
    /// PKCS#8 DER of the private key.
    pkcs8: Vec<u8>,
    /// The uncompressed public point: 0x04 ‖ x ‖ y.
    point: Vec<u8>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TestIssuer {
    /// A new ECDSA P-256 key pair named `kid`.
    pub fn new(kid: &str) -> TestIssuer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("an ECDSA P-256 key pair");
        TestIssuer {
            kid: kid.to_string(),
            pkcs8: key.serialize_der(),
            point: key.public_key_raw().to_vec(),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (`kty` EC, `crv` P-256, `use` sig, `alg` ES256, `kid`).
    pub fn jwk(&self) -> Value {
        let (x, y) = self.point[1..].split_at(32);
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(x),
            "y": b64(y),
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
        })
    }

    /// `{"keys": [this key]}`.
    pub fn jwks(&self) -> Value {
        TestIssuer::jwks_of(&[self])
    }

    /// `{"keys": [...]}` of several issuers' keys (a provider mid-rotation).
    pub fn jwks_of(issuers: &[&TestIssuer]) -> Value {
        json!({ "keys": issuers.iter().map(|i| i.jwk()).collect::<Vec<_>>() })
    }

    /// Writes [`TestIssuer::jwks`] to `path`.
    pub fn write_jwks(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.jwks().to_string())
    }

    /// Valid claims for `subject`: `iss` TEST_ISSUER, `aud` TEST_AUDIENCE, issued now,
    /// valid for ten minutes. Change fields to make bad ones.
    pub fn claims(subject: &str) -> Value {
        let now = now_secs();
        json!({
            "iss": TEST_ISSUER,
            "aud": TEST_AUDIENCE,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        })
    }

    /// The header [`TestIssuer::mint`] uses: `{"alg":"ES256","typ":"JWT","kid":...}`.
    pub fn header(&self) -> Value {
        json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid })
    }

    /// A token with these claims, signed ES256 with this key.
    pub fn mint(&self, claims: &Value) -> String {
        self.mint_with_header(&self.header(), claims)
    }

    /// A token with any header (whatever its `alg` says), ES256-signed with this key.
    pub fn mint_with_header(&self, header: &Value, claims: &Value) -> String {
        self.mint_raw(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// A token of any header and payload bytes, ES256-signed with this key.
    pub fn mint_raw(&self, header: &[u8], payload: &[u8]) -> String {
        let message = format!("{}.{}", b64(header), b64(payload));
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.pkcs8, &rng)
            .expect("the key pair reads back");
        let signature = key.sign(&rng, message.as_bytes()).expect("ECDSA signing");
        format!("{message}.{}", b64(signature.as_ref()))
    }

    /// An unsigned token (`alg` "none", empty signature) with this key's `kid`.
    pub fn unsigned(&self, claims: &Value) -> String {
        let header = json!({ "alg": "none", "typ": "JWT", "kid": self.kid });
        format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    }

    /// An HS256 token with this key's `kid`, its MAC keyed with `secret` (for the classic
    /// confusion attack, the public JWK's bytes).
    pub fn hs256(&self, claims: &Value, secret: &[u8]) -> String {
        let header = json!({ "alg": "HS256", "typ": "JWT", "kid": self.kid });
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = ring::hmac::sign(&key, message.as_bytes());
        format!("{message}.{}", b64(tag.as_ref()))
    }
}

/// An active introspection answer for `subject`, as [`TestIssuer::claims`] would say it.
pub fn active_answer(subject: &str) -> Value {
    let mut answer = TestIssuer::claims(subject);
    answer["active"] = json!(true);
    answer["token_type"] = json!("Bearer");
    answer["client_id"] = json!("officer-portal");
    answer
}

/// A mock identity provider over HTTPS on 127.0.0.1 (its certificate names `localhost`
/// and 127.0.0.1). Stops when dropped.
pub struct MockIdp {
    addr: SocketAddr,
    state: Arc<IdpState>,
    accept: tokio::task::JoinHandle<()>,
}

struct IdpState {
    jwks: Mutex<Value>,
    jwks_fetches: AtomicUsize,
    introspection_calls: AtomicUsize,
    /// The Authorization header the gateway must send.
    authorization: String,
    /// Introspection answers by token; any other token is `{"active": false}`.
    answers: Mutex<HashMap<String, Value>>,
    /// Answers 503 to everything.
    down: AtomicBool,
    /// The last introspection form, decoded (token excluded): e.g. token_type_hint.
    last_form: Mutex<Vec<(String, String)>>,
}

impl Drop for MockIdp {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl MockIdp {
    /// Starts the server; introspection requires HTTP Basic `client_id:client_secret`.
    pub async fn start(
        ca: &CertAuthority,
        client_id: &str,
        client_secret: &str,
    ) -> anyhow::Result<MockIdp> {
        let issued = ca.issue(&LeafSpec::server(&[
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ]))?;
        let certs = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())?];
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())?;
        let mut tls = rustls::ServerConfig::builder_with_provider(crate::tls::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let credentials = format!("{}:{}", form_encode(client_id), form_encode(client_secret));
        let state = Arc::new(IdpState {
            jwks: Mutex::new(json!({ "keys": [] })),
            jwks_fetches: AtomicUsize::new(0),
            introspection_calls: AtomicUsize::new(0),
            authorization: format!("Basic {}", STANDARD.encode(credentials)),
            answers: Mutex::default(),
            down: AtomicBool::new(false),
            last_form: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, state) = (acceptor.clone(), server.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |r| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.handle(r).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(MockIdp {
            addr,
            state,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:<port>/jwks`.
    pub fn jwks_url(&self) -> String {
        format!("https://localhost:{}/jwks", self.addr.port())
    }

    /// `https://localhost:<port>/introspect`.
    pub fn introspection_url(&self) -> String {
        format!("https://localhost:{}/introspect", self.addr.port())
    }

    /// What `/jwks` serves from now on.
    pub fn set_jwks(&self, jwks: Value) {
        if let Ok(mut j) = self.state.jwks.lock() {
            *j = jwks;
        }
    }

    /// GETs of `/jwks` served so far.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// POSTs to `/introspect` received so far (with good credentials or not).
    pub fn introspection_calls(&self) -> usize {
        self.state.introspection_calls.load(Ordering::SeqCst)
    }

    /// What introspecting `token` answers from now on (e.g. [`active_answer`], or
    /// `{"active": false}`).
    pub fn set_introspection(&self, token: &str, answer: Value) {
        if let Ok(mut a) = self.state.answers.lock() {
            a.insert(token.to_string(), answer);
        }
    }

    /// While down, every request is answered 503.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// The fields of the last introspection form other than `token`.
    pub fn last_form(&self) -> Vec<(String, String)> {
        self.state
            .last_form
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    /// An `[officers]` section using this provider for both JWTs (`jwks_url`) and opaque
    /// tokens (introspection, client id TEST_CLIENT_ID, secret in `secret_env`), trusting
    /// the CA in `ca_cert`, with TEST_ISSUER and TEST_AUDIENCE.
    pub fn officer_config(&self, ca_cert: &Path, secret_env: &str) -> OfficerConfig {
        OfficerConfig {
            jwks_url: Some(self.jwks_url()),
            jwks_ca_cert: Some(ca_cert.to_owned()),
            issuers: vec![TEST_ISSUER.to_string()],
            audiences: vec![TEST_AUDIENCE.to_string()],
            introspection: Some(IntrospectionConfig {
                url: self.introspection_url(),
                client_id: TEST_CLIENT_ID.to_string(),
                client_secret_env: secret_env.to_string(),
                cache_secs: 30,
                ca_cert: Some(ca_cert.to_owned()),
                timeout_ms: 5_000,
            }),
            ..OfficerConfig::default()
        }
    }
}

impl IdpState {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, body: Value| {
            let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
            *response.status_mut() = status;
            response.headers_mut().insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        };
        if self.down.load(Ordering::SeqCst) {
            return reply(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "down" }));
        }
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/jwks") => {
                self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                let jwks = self.jwks.lock().map(|j| j.clone()).unwrap_or_default();
                reply(StatusCode::OK, jwks)
            }
            (&Method::POST, "/introspect") => {
                self.introspection_calls.fetch_add(1, Ordering::SeqCst);
                let authorized = request
                    .headers()
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    == Some(self.authorization.as_str());
                if !authorized {
                    return reply(
                        StatusCode::UNAUTHORIZED,
                        json!({ "error": "invalid_client" }),
                    );
                }
                let form = request
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
                if !form {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "invalid_request" }),
                    );
                }
                let body = match request.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return reply(StatusCode::BAD_REQUEST, json!({})),
                };
                let fields = form_decode(&String::from_utf8_lossy(&body));
                let token = fields
                    .iter()
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.clone());
                if let Ok(mut last) = self.last_form.lock() {
                    *last = fields.into_iter().filter(|(k, _)| k != "token").collect();
                }
                let Some(token) = token else {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "invalid_request" }),
                    );
                };
                let answer = self
                    .answers
                    .lock()
                    .ok()
                    .and_then(|a| a.get(&token).cloned())
                    .unwrap_or_else(|| json!({ "active": false }));
                reply(StatusCode::OK, answer)
            }
            _ => reply(StatusCode::NOT_FOUND, json!({ "error": "not found" })),
        }
    }
}

/// `a=1&b=x%20y` → [("a","1"), ("b","x y")].
fn form_decode(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |b: u8| (b as char).to_digit(16);
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(hi), Some(lo)) => {
                            out.push((hi * 16 + lo) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}
