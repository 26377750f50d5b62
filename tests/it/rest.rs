//! The `rest` adapter against a real mock agency HTTP API over TLS on loopback: the adapter
//! test kit for each auth kind, and a real gateway delivering mapped JSON through it. The
//! `webhook` adapter (built on the same HTTP client) passes the kit against the same mock,
//! which checks its HMAC signature.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jisr::adapters::rest::RestAdapter;
use jisr::adapters::rest::{RestAuth, RestConfig, RestMappings};
use jisr::adapters::testkit::{check_adapter, sample_delivery, Behaviour, MockAgency};
use jisr::adapters::AdapterConfig;
use jisr::delivery::{Adapter, DeliveryError};
use jisr::pb::adapter_v1::inbox_service_client::InboxServiceClient;
use jisr::pb::adapter_v1::*;
use jisr::pb::v1::*;
use jisr::server::Gateway;
use jisr::tls::pki::LeafSpec;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde_json::{json, Value};

use crate::common::*;

const AGENCY: &str = "charity";
const TOKEN: &str = "s3cret-bearer-token";
const API_KEY: &str = "k3y-0f-the-charity";
const REFUSAL: &str = "our system does not accept this case type";

/// How the mock agency API checks its callers.
#[derive(Clone)]
enum MockAuth {
    /// A client certificate from the test CA, required in the TLS handshake.
    Mtls,
    Bearer(String),
    ApiKey(String, String),
    /// `X-Jisr-Signature` over `X-Jisr-Timestamp` and the body, with this secret (POSTs).
    Webhook(String),
}

/// One request the mock agency API received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    client_cert: bool,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON request body")
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// The mock agency API's state, shared with the test.
struct State {
    auth: MockAuth,
    behaviour: Mutex<Behaviour>,
    /// Requests that never get an answer in time (the handler sleeps).
    silent: AtomicBool,
    requests: Mutex<Vec<Seen>>,
    /// Idempotency-Key -> receipt, for the keys acted on.
    done: Mutex<HashMap<String, String>>,
    acted: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct RestMock(Arc<State>);

impl MockAgency for RestMock {
    fn set_behaviour(&self, behaviour: Behaviour) {
        *self.0.behaviour.lock().unwrap() = behaviour;
    }
    fn acted(&self) -> Vec<String> {
        self.0.acted.lock().unwrap().clone()
    }
}

impl RestMock {
    fn posts(&self) -> Vec<Seen> {
        self.0
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "POST")
            .cloned()
            .collect()
    }

    fn unauthorized(&self, headers: &HeaderMap) -> bool {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match &self.0.auth {
            MockAuth::Mtls => false,
            MockAuth::Bearer(token) => get("authorization") != Some(&format!("Bearer {token}")),
            MockAuth::ApiKey(header, key) => get(header) != Some(key.as_str()),
            // Checked with the body (`bad_signature`).
            MockAuth::Webhook(_) => false,
        }
    }

    /// A POST whose webhook signature does not verify (only for `MockAuth::Webhook`).
    fn bad_signature(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        let MockAuth::Webhook(secret) = &self.0.auth else {
            return false;
        };
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        !jisr::adapters::webhook::verify_signature(
            secret.as_bytes(),
            get("x-jisr-timestamp"),
            body,
            get("x-jisr-signature"),
        )
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
        client_cert: bool,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        self.0.requests.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            headers: parts.headers.clone(),
            body: body.clone(),
            client_cert,
        });
        let answer = |status: StatusCode, body: String| {
            Ok(Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap())
        };
        if self.0.silent.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(10)).await;
            return answer(StatusCode::SERVICE_UNAVAILABLE, "{}".into());
        }
        if self.unauthorized(&parts.headers)
            || (parts.method == http::Method::POST && self.bad_signature(&parts.headers, &body))
        {
            return answer(
                StatusCode::UNAUTHORIZED,
                r#"{"error": "who are you?"}"#.into(),
            );
        }
        let behaviour = *self.0.behaviour.lock().unwrap();
        if behaviour == Behaviour::Unavailable {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error": "down for maintenance"}"#.into(),
            );
        }
        if parts.method != http::Method::POST {
            return answer(StatusCode::OK, r#"{"status": "up"}"#.into());
        }
        if behaviour == Behaviour::Refuse {
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": REFUSAL }).to_string(),
            );
        }
        let Some(key) = parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        else {
            return answer(
                StatusCode::BAD_REQUEST,
                r#"{"error": "no Idempotency-Key"}"#.into(),
            );
        };
        if serde_json::from_slice::<Value>(&body).is_err() {
            return answer(StatusCode::BAD_REQUEST, r#"{"error": "not JSON"}"#.into());
        }
        // Acted on once per key, whatever the reply turns out to be.
        let (receipt, duplicate) = {
            let mut done = self.0.done.lock().unwrap();
            match done.get(&key) {
                Some(r) => (r.clone(), true),
                None => {
                    let r = format!("{AGENCY}-case-{}", done.len() + 1);
                    done.insert(key.clone(), r.clone());
                    self.0.acted.lock().unwrap().push(key);
                    (r, false)
                }
            }
        };
        if behaviour == Behaviour::Malformed {
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from_static(b"not json")))
                .unwrap());
        }
        answer(
            StatusCode::OK,
            json!({ "receipt_id": receipt, "duplicate": duplicate }).to_string(),
        )
    }
}

/// Starts a mock agency HTTPS API with a `localhost` certificate from the test CA.
async fn rest_mock(env: &TestEnv, auth: MockAuth) -> (SocketAddr, RestMock) {
    let provider = jisr::tls::crypto_provider();
    let issued = env
        .ca
        .issue(&LeafSpec::server(&["localhost".to_string()]))
        .unwrap();
    let certs = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap();
    let builder = match auth {
        MockAuth::Mtls => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(env.ca.cert_pem().as_bytes()).unwrap())
                .unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut tls = builder.with_single_cert(certs, key).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let mock = RestMock(Arc::new(State {
        auth,
        behaviour: Mutex::new(Behaviour::Accept),
        silent: AtomicBool::new(false),
        requests: Mutex::default(),
        done: Mutex::default(),
        acted: Mutex::default(),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = mock.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, mock) = (acceptor.clone(), server.clone());
            tokio::spawn(async move {
                // A handshake without a good client certificate fails here.
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let client_cert = stream.get_ref().1.peer_certificates().is_some();
                let service = hyper::service::service_fn(move |r| {
                    let mock = mock.clone();
                    async move { mock.handle(r, client_cert).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, mock)
}

fn rest_config(addr: SocketAddr, auth: RestAuth) -> RestConfig {
    RestConfig {
        url: format!("https://localhost:{}/api/jisr", addr.port()),
        ca_cert: None,
        timeout_ms: None,
        auth,
        mapping: RestMappings::default(),
    }
}

/// The charity's mapping, as an operator would write it.
fn charity_mappings() -> RestMappings {
    toml::from_str(
        r#"
        [referral]
        path = "/referrals"
        rename = { "subject.full_name" = "person.name", "subject.identifier.value" = "person.eid", "id" = "jisr_ref" }
        flatten = ["consent"]
        constants = { "source" = "jisr", "schema.version" = 2 }
        drop = ["attachments", "status_history"]

        [status_update]
        path = "/status"
        rename = { "status" = "update.new_status", "referral_id" = "jisr_ref" }
        constants = { "source" = "jisr" }
        "#,
    )
    .expect("mapping parses")
}

/// A secrets lookup with the charity's token and key, and nothing else.
fn secrets(name: &str) -> Option<String> {
    match name {
        "CHARITY_TOKEN" => Some(TOKEN.into()),
        "CHARITY_API_KEY" => Some(API_KEY.into()),
        _ => None,
    }
}

/// `agency` is reached through the rest adapter.
fn push_to(env: &mut TestEnv, agency: &str, rest: RestConfig) {
    let a = env
        .config
        .agencies
        .iter_mut()
        .find(|a| a.id == agency)
        .unwrap();
    a.adapter = AdapterConfig::Rest(Box::new(rest));
}

async fn referral_of(env: &TestEnv, gw: &Gateway, agency: &str, id: &str) -> Referral {
    env.client(gw, agency)
        .await
        .get_referral(GetReferralRequest {
            referral_id: id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
}

async fn wait_status(env: &TestEnv, gw: &Gateway, sender: &str, id: &str, want: ReferralStatus) {
    for _ in 0..200 {
        if referral_of(env, gw, sender, id).await.status() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "referral {id} never became {want:?} (is {:?})",
        referral_of(env, gw, sender, id).await.status()
    );
}

async fn check_kit(auth: MockAuth, config_auth: RestAuth) {
    let env = TestEnv::sqlite();
    let (addr, mock) = rest_mock(&env, auth).await;
    let adapter = RestAdapter::with_secrets(
        &env.config.adapter_context(AGENCY),
        &rest_config(addr, config_auth),
        secrets,
    )
    .expect("rest adapter builds");
    check_adapter(&adapter, &mock, AGENCY).await;
    let requests = mock.0.requests.lock().unwrap().clone();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(
            !mock.unauthorized(&r.headers),
            "unauthenticated request {r:?}"
        );
    }
    for r in requests.iter().filter(|r| r.method == "POST") {
        assert_eq!(r.path, "/api/jisr");
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("idempotency-key"), r.header("x-jisr-delivery-id"));
        assert_eq!(
            r.header("traceparent"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(r.json()["delivery_id"], r.header("idempotency-key"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_adapter_passes_the_kit_with_mtls() {
    check_kit(MockAuth::Mtls, RestAuth::Mtls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_adapter_passes_the_kit_with_a_bearer_token() {
    check_kit(
        MockAuth::Bearer(TOKEN.into()),
        RestAuth::Bearer {
            token_env: "CHARITY_TOKEN".into(),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_adapter_passes_the_kit_with_an_api_key() {
    check_kit(
        MockAuth::ApiKey("x-api-key".into(), API_KEY.into()),
        RestAuth::ApiKey {
            header: "X-Api-Key".into(),
            key_env: "CHARITY_API_KEY".into(),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_permanently_or_fail_the_handshake() {
    let env = TestEnv::sqlite();
    let delivery = sample_delivery(
        "01RESTDELIVERY000000000001",
        AGENCY,
        "01RESTREFERRAL00000000001",
    );

    // A wrong token: the agency answers 401, which retrying cannot fix.
    let (addr, mock) = rest_mock(&env, MockAuth::Bearer("another-token".into())).await;
    let auth = RestAuth::Bearer {
        token_env: "CHARITY_TOKEN".into(),
    };
    let adapter = RestAdapter::with_secrets(
        &env.config.adapter_context(AGENCY),
        &rest_config(addr, auth),
        secrets,
    )
    .unwrap();
    match adapter.deliver(&delivery).await {
        Err(DeliveryError::Permanent(e)) => assert!(e.contains("401"), "{e}"),
        other => panic!("a 401 must be Permanent: {other:?}"),
    }
    assert!(mock.acted().is_empty());

    // No client certificate where the agency requires one: the handshake fails.
    let (addr, mock) = rest_mock(&env, MockAuth::Mtls).await;
    let auth = RestAuth::Bearer {
        token_env: "CHARITY_TOKEN".into(),
    };
    let adapter = RestAdapter::with_secrets(
        &env.config.adapter_context(AGENCY),
        &rest_config(addr, auth),
        secrets,
    )
    .unwrap();
    assert!(matches!(
        adapter.deliver(&delivery).await,
        Err(DeliveryError::Retryable(_))
    ));
    assert!(matches!(
        adapter.health().await,
        Err(DeliveryError::Retryable(_))
    ));
    assert!(mock.0.requests.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_fails_the_build_naming_the_agency_and_variable() {
    let mut env = TestEnv::sqlite();
    let var = "JISR_TEST_UNSET_CHARITY_TOKEN_7F3A";
    assert!(std::env::var_os(var).is_none());
    let auth = RestAuth::Bearer {
        token_env: var.into(),
    };
    push_to(
        &mut env,
        AGENCY,
        rest_config("127.0.0.1:9".parse().unwrap(), auth),
    );
    let err = match env.config.build_adapters() {
        Ok(_) => panic!("a missing secret must fail the build"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(AGENCY) && err.contains(var), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agency_is_retryable_after_timeout_ms() {
    let env = TestEnv::sqlite();
    let (addr, mock) = rest_mock(&env, MockAuth::Mtls).await;
    mock.0.silent.store(true, Ordering::SeqCst);
    let mut rest = rest_config(addr, RestAuth::Mtls);
    rest.timeout_ms = Some(200);
    let adapter =
        RestAdapter::with_secrets(&env.config.adapter_context(AGENCY), &rest, secrets).unwrap();
    let started = Instant::now();
    let delivery = sample_delivery(
        "01RESTDELIVERY000000000002",
        AGENCY,
        "01RESTREFERRAL00000000002",
    );
    match adapter.deliver(&delivery).await {
        Err(DeliveryError::Retryable(e)) => assert!(e.contains("200 ms"), "{e}"),
        other => panic!("a silent agency must be Retryable: {other:?}"),
    }
    assert!(matches!(
        adapter.health().await,
        Err(DeliveryError::Retryable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timeout_ms bounds the wait: {:?}",
        started.elapsed()
    );

    mock.0.silent.store(false, Ordering::SeqCst);
    adapter
        .deliver(&delivery)
        .await
        .expect("delivered once it answers");
    assert_eq!(mock.acted(), vec![delivery.delivery_id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_reaches_a_rest_agency_mapped_and_is_delivered() {
    let mut env = TestEnv::sqlite();
    let (addr, charity) = rest_mock(&env, MockAuth::Mtls).await;
    let mut rest = rest_config(addr, RestAuth::Mtls);
    rest.mapping = charity_mappings();
    push_to(&mut env, AGENCY, rest);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut submit_request = tonic::Request::new(submit("rest-1", referral_to(AGENCY)));
    submit_request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let id = social
        .submit_referral(submit_request)
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
        .id;
    wait_status(&env, &gw, "social-services", &id, ReferralStatus::Delivered).await;

    let posts = charity.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let post = &posts[0];
    assert_eq!(post.path, "/api/jisr/referrals");
    assert!(
        post.client_cert,
        "the gateway's client certificate was presented"
    );
    assert_eq!(post.header("content-type"), "application/json");
    let body = post.json();
    // The envelope.
    assert_eq!(body["kind"], "referral");
    assert_eq!(body["attempt"], 1);
    assert_eq!(post.header("idempotency-key"), body["delivery_id"]);
    assert_eq!(post.header("x-jisr-delivery-id"), body["delivery_id"]);
    assert_eq!(
        charity.acted(),
        vec![post.header("idempotency-key").to_string()]
    );
    assert!(
        post.header("traceparent").contains(trace_id),
        "{}",
        post.header("traceparent")
    );
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    // Renamed (into a nest), what is left of the source kept.
    assert_eq!(body["jisr_ref"], id.as_str());
    assert!(body.get("id").is_none());
    assert_eq!(
        body["person"],
        json!({ "name": "Mariam Test", "eid": EMIRATES_ID })
    );
    assert_eq!(body["subject"]["full_name_ar"], "مريم اختبار");
    assert_eq!(body["subject"]["identifier"]["type"], "EMIRATES_ID");
    assert!(body["subject"].get("full_name").is_none());
    // Flattened.
    assert_eq!(body["consent_reference"], "CONSENT-42");
    assert_eq!(body["consent_scope"], "social-case-referral");
    assert_eq!(body["consent_expires_at"], "2100-01-01T00:00:00Z");
    assert!(body.get("consent").is_none());
    // Constants, dotted paths nesting.
    assert_eq!(body["source"], "jisr");
    assert_eq!(body["schema"], json!({ "version": 2 }));
    // Dropped.
    assert!(body.get("attachments").is_none() && body.get("status_history").is_none());
    // The rest, canonical.
    assert_eq!(body["category"], "HOUSING");
    assert_eq!(body["priority"], "URGENT");
    assert_eq!(body["status"], "SUBMITTED");
    assert_eq!(body["from_agency"], "social-services");
    assert_eq!(body["trace_id"], trace_id);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clearance_request_reaches_a_rest_agency_mapped() {
    use jisr::domain::application::{ClearanceSpec, JointServiceSpec, OnDeadline};
    let mut env = TestEnv::sqlite();
    let (addr, charity) = rest_mock(&env, MockAuth::Mtls).await;
    let mut rest = rest_config(addr, RestAuth::Mtls);
    rest.mapping = toml::from_str(
        r#"
        [clearance_request]
        path = "/clearances"
        rename = { "id" = "application_ref", "lead_agency" = "requested_by" }
        constants = { "source" = "jisr" }
        drop = ["attachments"]
        "#,
    )
    .expect("mapping parses");
    push_to(&mut env, AGENCY, rest);
    let lead = "city-municipality";
    env.config.joint_services = vec![JointServiceSpec {
        code: "charity-clearance".into(),
        clearances: ["planning-survey", AGENCY]
            .iter()
            .map(|agency| ClearanceSpec {
                agency: agency.to_string(),
                time_frame_working_days: 3,
                after: vec![],
                on_deadline: OnDeadline::StaysOverdue,
            })
            .collect(),
        required_approvals: None,
    }];
    let a = env
        .config
        .agencies
        .iter_mut()
        .find(|a| a.id == lead)
        .unwrap();
    a.policy.apply = vec!["*".into()];
    let gw = env.start().await;
    let id = application_client(&env, &gw, lead)
        .await
        .submit_application(SubmitApplicationRequest {
            request_id: "rest-app-1".into(),
            application: Some(Application {
                service_code: "charity-clearance".into(),
                ..building_certificate()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .application
        .unwrap()
        .id;
    eventually("the clearance request is posted", || {
        !charity.posts().is_empty()
    })
    .await;
    let post = &charity.posts()[0];
    assert_eq!(post.path, "/api/jisr/clearances");
    let body = post.json();
    assert_eq!(body["kind"], "clearance_request");
    assert_eq!(body["application_ref"], id.as_str());
    assert_eq!(body["requested_by"], lead);
    assert_eq!(body["source"], "jisr");
    assert_eq!(body["status"], "IN_PROGRESS");
    assert_eq!(body["service_code"], "charity-clearance");
    assert_eq!(
        body["references"],
        json!([{ "name": "plot-number", "value": "118-204" }])
    );
    assert!(body.get("attachments").is_none());
    // Only its own clearance, requested, with its due date.
    let clearances = body["clearances"].as_array().unwrap();
    assert_eq!(clearances.len(), 1, "{clearances:?}");
    assert_eq!(clearances[0]["agency"], AGENCY);
    assert_eq!(clearances[0]["status"], "REQUESTED");
    assert!(clearances[0]["due_at"].as_str().unwrap().ends_with('Z'));
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_reaches_a_rest_sender_mapped() {
    let mut env = TestEnv::sqlite();
    let (addr, charity) = rest_mock(&env, MockAuth::Mtls).await;
    let mut rest = rest_config(addr, RestAuth::Mtls);
    rest.mapping = charity_mappings();
    push_to(&mut env, AGENCY, rest);
    let gw = env.start().await;
    // The charity refers a case to housing, which pulls its inbox and acknowledges.
    let mut sender = env.client(&gw, AGENCY).await;
    let id = submitted_id(&mut sender, "rest-2", referral_to("housing")).await;
    let mut housing =
        InboxServiceClient::new(env.channel(&gw, &env.agency_cert("housing")).await.unwrap());
    let mut pulled = Vec::new();
    for _ in 0..10 {
        pulled = housing
            .pull_deliveries(PullDeliveriesRequest {
                max_deliveries: 10,
                wait: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if !pulled.is_empty() {
            break;
        }
    }
    assert_eq!(pulled.len(), 1);
    housing
        .ack_delivery(AckDeliveryRequest {
            delivery_id: pulled[0].metadata.as_ref().unwrap().delivery_id.clone(),
            outcome: AckOutcome::Accepted as i32,
            receipt_id: "h-1".into(),
            error_message: String::new(),
        })
        .await
        .unwrap();
    wait_status(&env, &gw, AGENCY, &id, ReferralStatus::Delivered).await;

    // DELIVERED reaches the charity's API as a mapped status update.
    eventually("the status update reaches the charity's API", || {
        !charity.posts().is_empty()
    })
    .await;
    let post = charity.posts().remove(0);
    assert_eq!(post.path, "/api/jisr/status");
    let body = post.json();
    assert_eq!(body["kind"], "status_update");
    assert_eq!(body["jisr_ref"], id.as_str());
    assert_eq!(body["update"], json!({ "new_status": "DELIVERED" }));
    assert_eq!(body["actor_agency"], "jisr");
    assert_eq!(body["source"], "jisr");
    assert_eq!(body["delivery_id"], post.header("idempotency-key"));
    assert!(body["changed_at"].as_str().unwrap().ends_with('Z'));
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_fails_the_referral_with_the_reason_in_the_note() {
    let mut env = TestEnv::sqlite();
    let (addr, charity) = rest_mock(&env, MockAuth::Mtls).await;
    push_to(&mut env, AGENCY, rest_config(addr, RestAuth::Mtls));
    env.config.delivery.breaker_failures = 100;
    charity.set_behaviour(Behaviour::Refuse);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let id = submitted_id(&mut social, "rest-422", referral_to(AGENCY)).await;
    wait_status(&env, &gw, "social-services", &id, ReferralStatus::Failed).await;
    assert_eq!(
        charity.posts().len(),
        1,
        "a permanent refusal is not retried"
    );
    let referral = referral_of(&env, &gw, "social-services", &id).await;
    let last = referral.status_history.last().unwrap();
    assert_eq!(last.actor_agency, "jisr");
    assert!(
        last.note.contains("422") && last.note.contains(REFUSAL),
        "{}",
        last.note
    );
    assert!(charity.acted().is_empty());
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_answering_503_for_a_while_gets_the_referral_after_it_recovers() {
    let mut env = TestEnv::sqlite();
    let (addr, charity) = rest_mock(&env, MockAuth::Mtls).await;
    push_to(&mut env, AGENCY, rest_config(addr, RestAuth::Mtls));
    env.config.delivery.breaker_failures = 3;
    env.config.delivery.breaker_cooldown_ms = 100;
    charity.set_behaviour(Behaviour::Unavailable);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let id = submitted_id(&mut social, "rest-503", referral_to(AGENCY)).await;
    eventually("attempts were made while down", || {
        charity.posts().len() >= 3
    })
    .await;
    assert_eq!(
        referral_of(&env, &gw, "social-services", &id)
            .await
            .status(),
        ReferralStatus::Submitted,
        "not delivered while down"
    );
    assert!(charity.acted().is_empty());

    charity.set_behaviour(Behaviour::Accept);
    wait_status(&env, &gw, "social-services", &id, ReferralStatus::Delivered).await;
    let posts = charity.posts();
    let keys: std::collections::HashSet<&str> =
        posts.iter().map(|p| p.header("idempotency-key")).collect();
    assert_eq!(keys.len(), 1, "every attempt carries the same delivery id");
    let attempts: Vec<u64> = posts
        .iter()
        .map(|p| p.json()["attempt"].as_u64().unwrap())
        .collect();
    assert!(
        attempts.windows(2).all(|w| w[0] < w[1]),
        "attempts count up: {attempts:?}"
    );
    assert_eq!(charity.acted().len(), 1);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_2xx_is_retried_and_acted_on_once() {
    let mut env = TestEnv::sqlite();
    let (addr, charity) = rest_mock(&env, MockAuth::Mtls).await;
    push_to(&mut env, AGENCY, rest_config(addr, RestAuth::Mtls));
    env.config.delivery.breaker_failures = 100;
    charity.set_behaviour(Behaviour::Malformed);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let id = submitted_id(&mut social, "rest-garbled", referral_to(AGENCY)).await;
    eventually("a garbled answer is retried", || charity.posts().len() >= 2).await;
    assert_eq!(
        referral_of(&env, &gw, "social-services", &id)
            .await
            .status(),
        ReferralStatus::Submitted
    );

    charity.set_behaviour(Behaviour::Accept);
    wait_status(&env, &gw, "social-services", &id, ReferralStatus::Delivered).await;
    assert_eq!(
        charity.acted().len(),
        1,
        "the agency acted once thanks to the Idempotency-Key"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agency_is_retried_through_the_gateway() {
    let mut env = TestEnv::sqlite();
    let (addr, charity) = rest_mock(&env, MockAuth::Mtls).await;
    let mut rest = rest_config(addr, RestAuth::Mtls);
    rest.timeout_ms = Some(150);
    push_to(&mut env, AGENCY, rest);
    env.config.delivery.breaker_failures = 100;
    charity.0.silent.store(true, Ordering::SeqCst);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let id = submitted_id(&mut social, "rest-silent", referral_to(AGENCY)).await;
    eventually("a request that times out is retried", || {
        charity.posts().len() >= 2
    })
    .await;
    charity.0.silent.store(false, Ordering::SeqCst);
    wait_status(&env, &gw, "social-services", &id, ReferralStatus::Delivered).await;
    assert_eq!(charity.acted().len(), 1);
    gw.shutdown().await.unwrap();
}

const WEBHOOK_SECRET: &str = "a webhook secret of 32+ bytes, shared";

fn webhook_config(addr: SocketAddr) -> jisr::adapters::webhook::WebhookConfig {
    jisr::adapters::webhook::WebhookConfig {
        url: format!("https://localhost:{}/hooks/jisr", addr.port()),
        secret_env: "CHARITY_WEBHOOK_SECRET".into(),
        ca_cert: None,
        timeout_ms: None,
        mtls: false,
    }
}

#[tokio::test]
async fn the_webhook_adapter_passes_the_kit_with_signed_canonical_json() {
    let env = TestEnv::sqlite();
    let (addr, mock) = rest_mock(&env, MockAuth::Webhook(WEBHOOK_SECRET.into())).await;
    let adapter = jisr::adapters::webhook::webhook(
        &env.config.adapter_context(AGENCY),
        &webhook_config(addr),
        |name| (name == "CHARITY_WEBHOOK_SECRET").then(|| WEBHOOK_SECRET.to_string()),
    )
    .expect("webhook adapter builds");
    assert_eq!(adapter.kind(), "webhook");
    check_adapter(&adapter, &mock, AGENCY).await;
    let posts = mock.posts();
    assert!(!posts.is_empty());
    for r in &posts {
        assert_eq!(r.path, "/hooks/jisr");
        assert!(!r.client_cert, "no client certificate unless mtls = true");
        assert!(!mock.bad_signature(&r.headers, &r.body), "signed: {r:?}");
        assert_eq!(r.header("idempotency-key"), r.header("x-jisr-delivery-id"));
        // The canonical JSON, unmapped.
        let body = r.json();
        assert_eq!(body["delivery_id"], r.header("idempotency-key"));
        assert_eq!(body["kind"], "referral", "{body}");
    }
}

#[tokio::test]
async fn a_webhook_signed_with_another_secret_is_refused_permanently() {
    let env = TestEnv::sqlite();
    let (addr, mock) = rest_mock(&env, MockAuth::Webhook(WEBHOOK_SECRET.into())).await;
    let adapter = jisr::adapters::webhook::webhook(
        &env.config.adapter_context(AGENCY),
        &webhook_config(addr),
        |_| Some("not the secret the agency holds!!".into()),
    )
    .unwrap();
    let result = adapter
        .deliver(&sample_delivery(
            "01WEBHOOKDELIVERY000000001",
            AGENCY,
            "01WEBHOOKREF0000000000001",
        ))
        .await;
    assert!(
        matches!(result, Err(DeliveryError::Permanent(ref e)) if e.contains("401")),
        "{result:?}"
    );
    assert!(mock.acted().is_empty(), "the agency acted on nothing");
}
