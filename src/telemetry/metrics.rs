//! The gateway's Prometheus metrics: one registry for the process, every metric declared
//! here (its name, help and labels are the list in docs/operations.md), exposed as text on
//! the admin listener's `/metrics` by prometheus-client.
//!
//! Components record through [`metrics()`]: counters and histograms as things happen,
//! gauges of state they own (breakers, open watch streams). Gauges of stored state (outbox
//! depth, overdue exchanges) and of the audit log are set by the admin listener just before
//! each scrape.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

pub type Label = Cow<'static, str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub rpc_system_name: Label,
    pub rpc_method: Label,
    pub rpc_response_status_code: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub agency: Label,
    pub decision: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgencyLabels {
    pub agency: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboxLabels {
    pub agency: Label,
    pub state: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub adapter: Label,
    pub agency: Label,
    pub outcome: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterLabels {
    pub adapter: Label,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 0.25 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

/// Jobs per writer batch: 1 to 512.
fn batch_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// The breaker states as `jisr_delivery_breaker_state` reports them.
pub const BREAKER_CLOSED: i64 = 0;
pub const BREAKER_HALF_OPEN: i64 = 1;
pub const BREAKER_OPEN: i64 = 2;

pub struct Metrics {
    registry: Registry,
    /// `rpc.server.call.duration`: every call, by method and gRPC status.
    pub rpc_duration: Histograms<RpcLabels>,
    /// Calls by calling agency and policy decision (allow, deny).
    pub calls: Family<CallLabels, Counter>,
    /// TLS handshakes refused, by reason.
    pub tls_refused: Family<ReasonLabels, Counter>,
    /// Officer tokens, by outcome (valid, absent, refused).
    pub officer_tokens: Family<OutcomeLabels, Counter>,
    /// Jobs per writer batch, and each batch's commit time.
    pub writer_batch_size: Histogram,
    pub writer_commit: Histogram,
    /// Writer batches that failed to commit.
    pub writer_failures: Counter,
    /// Outbox rows not delivered, by agency and state (pending, leased, dead): set at scrape.
    pub outbox_rows: Family<OutboxLabels, Gauge>,
    /// Delivery attempts by adapter, agency and outcome, and their latency by adapter.
    pub delivery_attempts: Family<AttemptLabels, Counter>,
    pub delivery_duration: Histograms<AdapterLabels>,
    /// Deliveries given up (dead letters), by agency.
    pub dead_letters: Family<AgencyLabels, Counter>,
    /// Circuit breaker per agency: 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<AgencyLabels, Gauge>,
    /// The node's audit log: entries, entries no checkpoint covers yet, and the age of the
    /// last signed checkpoint (set at scrape).
    pub audit_entries: Gauge,
    pub audit_unsigned_entries: Gauge,
    pub audit_checkpoint_age: Gauge<f64, AtomicU64>,
    /// Exchanges past their expected time frame, by the agency that owes the answer (set at
    /// scrape).
    pub overdue: Family<AgencyLabels, Gauge>,
    /// WatchReferralEvents streams open now.
    pub watch_streams: Gauge,
    /// 1 while the gateway is ready for traffic (`/readyz`).
    pub ready: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            rpc_duration: Family::new_with_constructor(latency),
            calls: Family::default(),
            tls_refused: Family::default(),
            officer_tokens: Family::default(),
            writer_batch_size: batch_sizes(),
            writer_commit: latency(),
            writer_failures: Counter::default(),
            outbox_rows: Family::default(),
            delivery_attempts: Family::default(),
            delivery_duration: Family::new_with_constructor(latency),
            dead_letters: Family::default(),
            breaker_state: Family::default(),
            audit_entries: Gauge::default(),
            audit_unsigned_entries: Gauge::default(),
            audit_checkpoint_age: Gauge::default(),
            overdue: Family::default(),
            watch_streams: Gauge::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register_with_unit(
            "rpc_server_call_duration",
            "Duration of RPCs served (OpenTelemetry rpc.server.call.duration)",
            Unit::Seconds,
            m.rpc_duration.clone(),
        );
        registry.register(
            "jisr_calls",
            "Calls by calling agency and policy decision",
            m.calls.clone(),
        );
        registry.register(
            "jisr_tls_handshakes_refused",
            "TLS handshakes refused, by reason",
            m.tls_refused.clone(),
        );
        registry.register(
            "jisr_officer_tokens",
            "Officer identity tokens, by outcome",
            m.officer_tokens.clone(),
        );
        registry.register(
            "jisr_writer_batch_size",
            "Jobs committed per writer batch",
            m.writer_batch_size.clone(),
        );
        registry.register_with_unit(
            "jisr_writer_commit",
            "Time to run and commit one writer batch",
            Unit::Seconds,
            m.writer_commit.clone(),
        );
        registry.register(
            "jisr_writer_failures",
            "Writer batches that failed to commit",
            m.writer_failures.clone(),
        );
        registry.register(
            "jisr_outbox_rows",
            "Undelivered outbox rows by agency and state (pending, leased, dead)",
            m.outbox_rows.clone(),
        );
        registry.register(
            "jisr_delivery_attempts",
            "Delivery attempts by adapter, agency and outcome",
            m.delivery_attempts.clone(),
        );
        registry.register_with_unit(
            "jisr_delivery_duration",
            "Duration of delivery attempts by adapter",
            Unit::Seconds,
            m.delivery_duration.clone(),
        );
        registry.register(
            "jisr_dead_letters",
            "Deliveries given up (dead-lettered), by agency",
            m.dead_letters.clone(),
        );
        registry.register(
            "jisr_delivery_breaker_state",
            "Circuit breaker per agency: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        registry.register(
            "jisr_audit_entries",
            "Entries in this node's audit log",
            m.audit_entries.clone(),
        );
        registry.register(
            "jisr_audit_unsigned_entries",
            "Audit entries no signed checkpoint covers yet",
            m.audit_unsigned_entries.clone(),
        );
        registry.register_with_unit(
            "jisr_audit_checkpoint_age",
            "Time since this node's last signed checkpoint",
            Unit::Seconds,
            m.audit_checkpoint_age.clone(),
        );
        registry.register(
            "jisr_overdue_exchanges",
            "Exchanges past their expected time frame, by the agency that owes the answer",
            m.overdue.clone(),
        );
        registry.register(
            "jisr_watch_streams_open",
            "WatchReferralEvents streams open now",
            m.watch_streams.clone(),
        );
        registry.register(
            "jisr_ready",
            "1 while the gateway is ready for traffic (/readyz)",
            m.ready.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Records a served call.
    pub fn call(&self, method: &str, code: tonic::Code, agency: &str, allowed: bool, took: Duration) {
        self.rpc_duration
            .get_or_create(&RpcLabels {
                rpc_system_name: Cow::Borrowed("grpc"),
                rpc_method: Cow::Owned(method.to_string()),
                rpc_response_status_code: Cow::Borrowed(code_name(code)),
            })
            .observe(took.as_secs_f64());
        self.calls
            .get_or_create(&CallLabels {
                agency: Cow::Owned(agency.to_string()),
                decision: Cow::Borrowed(if allowed { "allow" } else { "deny" }),
            })
            .inc();
    }

    pub fn breaker(&self, agency: &str, state: i64) {
        self.breaker_state
            .get_or_create(&AgencyLabels {
                agency: Cow::Owned(agency.to_string()),
            })
            .set(state);
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// A gRPC status code's name, as `rpc.response.status_code` spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_call_shows_in_the_exposition() {
        let m = Metrics::new();
        m.call(
            "jisr.v1.ReferralService/SubmitReferral",
            tonic::Code::Ok,
            "housing",
            true,
            Duration::from_millis(3),
        );
        let text = m.encode();
        assert!(text.contains("# TYPE rpc_server_call_duration_seconds histogram"), "{text}");
        assert!(text.contains(
            "rpc_server_call_duration_seconds_count{rpc_system_name=\"grpc\",rpc_method=\"jisr.v1.ReferralService/SubmitReferral\",rpc_response_status_code=\"OK\"} 1"
        ), "{text}");
        assert!(text.contains("jisr_calls_total{agency=\"housing\",decision=\"allow\"} 1"), "{text}");
        assert_eq!(code_name(tonic::Code::Unavailable), "UNAVAILABLE");
    }
}
