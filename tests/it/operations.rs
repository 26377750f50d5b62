//! Operations over the wire: traces exported to a real OTLP receiver, the admin
//! listener's metrics parsed as Prometheus text, readiness following the database, and the
//! monitoring assets checked against the metrics the gateway really exposes.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::{Request, Response, Status};

use crate::common::*;
use crate::delivery::mock_agency;

/// An OTLP/gRPC trace receiver: keeps every span it is sent.
#[derive(Clone, Default)]
struct OtlpReceiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for OtlpReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpReceiver {
    async fn start() -> (SocketAddr, OtlpReceiver) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = OtlpReceiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (addr, receiver)
    }

    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }

    /// The span named `name` in trace `trace_id`, once it has arrived.
    async fn span(&self, trace_id: &str, name: &str) -> Span {
        for _ in 0..200 {
            if let Some(span) = self
                .spans()
                .into_iter()
                .find(|s| hex::encode(&s.trace_id) == trace_id && s.name == name)
            {
                return span;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen: Vec<(String, String)> = self
            .spans()
            .iter()
            .map(|s| (hex::encode(&s.trace_id), s.name.clone()))
            .collect();
        panic!("no span {name} in trace {trace_id}; received {seen:?}");
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_and_its_delivery_are_one_trace_at_the_otlp_receiver_the_agency_and_the_audit_log()
{
    let env = TestEnv::sqlite();
    let (otlp, receiver) = OtlpReceiver::start().await;
    let (agency_addr, housing) = mock_agency(&env).await;
    let port = free_port();
    let mut gateway = spawn_gateway_with(
        &env,
        port,
        agency_addr,
        &[
            ("JISR_TELEMETRY__ENDPOINT", format!("http://{otlp}")),
            ("JISR_TELEMETRY__SERVICE_NAME", "jisr-under-test".into()),
            // Spans leave the process every 100 ms instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
    );
    let mut social = connect_when_up(&env, port, "social-services").await;

    // The caller's own trace: the gateway continues it.
    let trace_id = format!("{:032x}", ulid::Ulid::new().0);
    let caller_span = "00f067aa0ba902b7";
    let mut request = Request::new(submit("traced-1", referral_to("housing")));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    let referral = social
        .submit_referral(request)
        .await
        .expect("submit")
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(referral.trace_id, trace_id);
    eventually("the agency received the referral", || {
        housing
            .arrivals()
            .iter()
            .any(|a| a.referral_id == referral.id)
    })
    .await;

    // The server span: named {rpc.method}, the RPC conventions, the caller's span its parent.
    let server = receiver
        .span(&trace_id, "jisr.v1.ReferralService/SubmitReferral")
        .await;
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(hex::encode(&server.parent_span_id), caller_span);
    assert_eq!(
        attribute(&server, "rpc.system.name").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        attribute(&server, "rpc.method").as_deref(),
        Some("jisr.v1.ReferralService/SubmitReferral")
    );
    assert_eq!(
        attribute(&server, "rpc.response.status_code").as_deref(),
        Some("OK")
    );
    // The authority the client called.
    assert_eq!(
        attribute(&server, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(attribute(&server, "server.port"), Some(port.to_string()));
    assert_eq!(attribute(&server, "error.type"), None);

    // The writer batch that committed it, a child of the call.
    let batch = receiver.span(&trace_id, "store.batch").await;
    assert_eq!(batch.parent_span_id, server.span_id);
    assert!(attribute(&batch, "jisr.batch.size").is_some());
    assert!(attribute(&batch, "jisr.batch.commit_ms").is_some());

    // The delivery attempt: a client span under the call, whose traceparent the agency saw.
    let deliver = receiver.span(&trace_id, "deliver grpc").await;
    assert_eq!(deliver.kind, SpanKind::Client as i32);
    assert_eq!(deliver.parent_span_id, server.span_id);
    assert_eq!(
        attribute(&deliver, "jisr.agency").as_deref(),
        Some("housing")
    );
    assert_eq!(
        attribute(&deliver, "jisr.delivery.outcome").as_deref(),
        Some("delivered")
    );
    let expected = format!("00-{trace_id}-{}-01", hex::encode(&deliver.span_id));
    assert!(
        housing.traceparents().contains(&expected),
        "the agency saw {:?}, not {expected}",
        housing.traceparents()
    );

    // A call without a traceparent starts a trace, and its audit entry names that trace.
    let fetched = social
        .get_referral(jisr::pb::v1::GetReferralRequest {
            referral_id: referral.id.clone(),
        })
        .await;
    assert!(fetched.is_ok());
    let get_trace = loop {
        if let Some(span) = receiver
            .spans()
            .into_iter()
            .find(|s| s.name == "jisr.v1.ReferralService/GetReferral")
        {
            break hex::encode(&span.trace_id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(get_trace, trace_id);
    gateway.kill().unwrap();
    gateway.wait().unwrap();

    let pool = sqlx::AnyPool::connect(&env.config.database.url)
        .await
        .unwrap();
    let traces: BTreeSet<(String, String)> = crate::audit::entries(&pool)
        .await
        .into_iter()
        .filter(|e| e.target_ids.contains(&referral.id))
        .map(|e| (e.method, e.trace_id))
        .collect();
    assert!(
        traces.contains(&(
            "/jisr.v1.ReferralService/SubmitReferral".into(),
            trace_id.clone()
        )),
        "{traces:?}"
    );
    assert!(
        traces.contains(&("/jisr.v1.ReferralService/GetReferral".into(), get_trace)),
        "{traces:?}"
    );
}

/// The admin listener's /metrics, parsed.
async fn scrape(admin: SocketAddr) -> prometheus_parse::Scrape {
    let (code, body) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text")
}

/// The value of `metric` with these labels (0 when absent).
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_calls_and_readyz_follows_the_database_going_and_returning() {
    let Some(pg) = postgres_database().await else {
        return;
    };
    let env = TestEnv::with_database(Some(pg.url.clone()));
    let gw = env.start().await;
    let admin = gw.admin_addr.expect("the admin listener runs");
    let mut social = env.client(&gw, "social-services").await;
    let submit_ok = [
        ("rpc_method", "jisr.v1.ReferralService/SubmitReferral"),
        ("rpc_response_status_code", "OK"),
    ];
    let allowed = [("agency", "social-services"), ("decision", "allow")];

    let before = scrape(admin).await;
    let id = submitted_id(&mut social, "metrics-1", referral_to("housing")).await;
    fetched(&mut social, &id).await;
    let after = scrape(admin).await;
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert!(moved("rpc_server_call_duration_seconds_count", &submit_ok) >= 1.0);
    assert!(moved("jisr_calls_total", &allowed) >= 2.0);
    assert!(moved("jisr_writer_batch_size_count", &[]) >= 1.0);
    assert!(
        value(
            &after,
            "jisr_outbox_rows",
            &[("agency", "housing"), ("state", "pending")]
        ) >= 1.0
    );
    let entries = value(&after, "jisr_audit_entries", &[]);
    assert!(entries >= 2.0, "jisr_audit_entries {entries}");
    assert_eq!(value(&after, "jisr_ready", &[]), 1.0);
    let (code, body) = http_get(admin, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(http_get(admin, "/livez").await.0, 200);

    // The database goes away: not ready, and a write answers UNAVAILABLE quickly.
    pg.refuse_connections().await;
    eventually_async("/readyz turns 503", || async {
        http_get(admin, "/readyz").await.0 == 503
    })
    .await;
    let (_, body) = http_get(admin, "/readyz").await;
    assert!(body.contains("[-] database"), "{body}");
    let refused = tokio::time::timeout(
        Duration::from_secs(15),
        social.submit_referral(submit("metrics-2", referral_to("housing"))),
    )
    .await
    .expect("an answer, not a hang");
    assert_eq!(
        refused.expect_err("no database, no write").code(),
        tonic::Code::Unavailable
    );

    // It returns: ready again without a restart, and writes go through.
    pg.allow_connections().await;
    eventually_async("/readyz turns 200 again", || async {
        http_get(admin, "/readyz").await.0 == 200
    })
    .await;
    submitted_id(&mut social, "metrics-3", referral_to("housing")).await;
    gw.shutdown().await.unwrap();
    pg.drop_database().await;
}

/// Every metric name the alert rules and the dashboard use is one the gateway exposes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_and_dashboard_use_only_metrics_the_gateway_exposes() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let admin = gw.admin_addr.expect("the admin listener runs");
    let (_, text) = http_get(admin, "/metrics").await;
    gw.shutdown().await.unwrap();
    // A family with no series yet is left out of the exposition, so the registry's own list
    // is what a dashboard is checked against; every family the scrape shows is in it.
    let families: BTreeSet<String> = jisr::telemetry::metrics::metrics()
        .families()
        .iter()
        .cloned()
        .collect();
    let scraped: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    assert!(scraped.contains("jisr_ready") && scraped.contains("jisr_writer_batch_size"));
    assert!(scraped.is_subset(&families), "{scraped:?} ⊄ {families:?}");
    let exposed = |name: &str| {
        families.contains(name)
            || ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .any(|suffix| {
                    name.strip_suffix(suffix)
                        .is_some_and(|f| families.contains(f))
                })
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations");
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let body = std::fs::read_to_string(root.join(file)).expect(file);
        let mut used = BTreeSet::new();
        for line in std::io::BufReader::new(body.as_bytes()).lines() {
            let line = line.unwrap();
            let mut rest = line.as_str();
            while let Some(at) = ["jisr_", "rpc_server_"]
                .iter()
                .filter_map(|prefix| rest.find(prefix))
                .min()
            {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                used.insert(name);
            }
        }
        assert!(!used.is_empty(), "{file} uses no gateway metric");
        let unknown: Vec<_> = used.iter().filter(|n| !exposed(n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the gateway does not expose: {unknown:?}"
        );
    }
}
