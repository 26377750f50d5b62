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
    /// Every family's name as the exposition's `# TYPE` line gives it.
    families: Vec<String>,
}

/// Registers a family and remembers its exposed name (with its unit's suffix).
fn add(
    (registry, families): &mut (Registry, Vec<String>),
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: impl prometheus_client::registry::Metric,
) {
    families.push(match &unit {
        Some(unit) => format!("{name}_{}", unit.as_str()),
        None => name.to_string(),
    });
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric),
        None => registry.register(name, help, metric),
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = (Registry::default(), Vec::new());
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
            families: Vec::new(),
        };
        add(
            &mut registry,
            "rpc_server_call_duration",
            "Duration of RPCs served (OpenTelemetry rpc.server.call.duration)",
            Some(Unit::Seconds),
            m.rpc_duration.clone(),
        );
        add(
            &mut registry,
            "jisr_calls",
            "Calls by calling agency and policy decision",
            None,
            m.calls.clone(),
        );
        add(
            &mut registry,
            "jisr_tls_handshakes_refused",
            "TLS handshakes refused, by reason",
            None,
            m.tls_refused.clone(),
        );
        add(
            &mut registry,
            "jisr_officer_tokens",
            "Officer identity tokens, by outcome",
            None,
            m.officer_tokens.clone(),
        );
        add(
            &mut registry,
            "jisr_writer_batch_size",
            "Jobs committed per writer batch",
            None,
            m.writer_batch_size.clone(),
        );
        add(
            &mut registry,
            "jisr_writer_commit",
            "Time to run and commit one writer batch",
            Some(Unit::Seconds),
            m.writer_commit.clone(),
        );
        add(
            &mut registry,
            "jisr_writer_failures",
            "Writer batches that failed to commit",
            None,
            m.writer_failures.clone(),
        );
        add(
            &mut registry,
            "jisr_outbox_rows",
            "Undelivered outbox rows by agency and state (pending, leased, dead)",
            None,
            m.outbox_rows.clone(),
        );
        add(
            &mut registry,
            "jisr_delivery_attempts",
            "Delivery attempts by adapter, agency and outcome",
            None,
            m.delivery_attempts.clone(),
        );
        add(
            &mut registry,
            "jisr_delivery_duration",
            "Duration of delivery attempts by adapter",
            Some(Unit::Seconds),
            m.delivery_duration.clone(),
        );
        add(
            &mut registry,
            "jisr_dead_letters",
            "Deliveries given up (dead-lettered), by agency",
            None,
            m.dead_letters.clone(),
        );
        add(
            &mut registry,
            "jisr_delivery_breaker_state",
            "Circuit breaker per agency: 0 closed, 1 half-open, 2 open",
            None,
            m.breaker_state.clone(),
        );
        add(
            &mut registry,
            "jisr_audit_entries",
            "Entries in this node's audit log",
            None,
            m.audit_entries.clone(),
        );
        add(
            &mut registry,
            "jisr_audit_unsigned_entries",
            "Audit entries no signed checkpoint covers yet",
            None,
            m.audit_unsigned_entries.clone(),
        );
        add(
            &mut registry,
            "jisr_audit_checkpoint_age",
            "Time since this node's last signed checkpoint",
            Some(Unit::Seconds),
            m.audit_checkpoint_age.clone(),
        );
        add(
            &mut registry,
            "jisr_overdue_exchanges",
            "Exchanges past their expected time frame, by the agency that owes the answer",
            None,
            m.overdue.clone(),
        );
        add(
            &mut registry,
            "jisr_watch_streams_open",
            "WatchReferralEvents streams open now",
            None,
            m.watch_streams.clone(),
        );
        add(
            &mut registry,
            "jisr_ready",
            "1 while the gateway is ready for traffic (/readyz)",
            None,
            m.ready.clone(),
        );
        let (registry, families) = registry;
        Metrics {
            registry,
            families,
            ..m
        }
    }

    /// Every metric family's name (`jisr_calls`, `jisr_writer_commit_seconds`), the samples
    /// of which are this name or it with `_total`, `_bucket`, `_count`, `_sum`. A family with
    /// no series yet (no agency has had a dead letter) is left out of the exposition, so
    /// this is the list to check a dashboard against.
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Records a served call.
    pub fn call(
        &self,
        method: &'static str,
        code: tonic::Code,
        agency: &str,
        allowed: bool,
        took: Duration,
    ) {
        self.rpc_duration
            .get_or_create(&RpcLabels {
                rpc_system_name: Cow::Borrowed("grpc"),
                rpc_method: Cow::Borrowed(method),
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
        assert!(
            text.contains("# TYPE rpc_server_call_duration_seconds histogram"),
            "{text}"
        );
        assert!(text.contains(
            "rpc_server_call_duration_seconds_count{rpc_system_name=\"grpc\",rpc_method=\"jisr.v1.ReferralService/SubmitReferral\",rpc_response_status_code=\"OK\"} 1"
        ), "{text}");
        assert!(
            text.contains("jisr_calls_total{agency=\"housing\",decision=\"allow\"} 1"),
            "{text}"
        );
        assert_eq!(code_name(tonic::Code::Unavailable), "UNAVAILABLE");
    }
}
