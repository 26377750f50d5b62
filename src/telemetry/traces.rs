//! Distributed traces: OpenTelemetry spans exported over OTLP/gRPC, off unless configured.
//!
//! The gateway makes three kinds of span, all under target [`TARGET`] (so the log output
//! does not carry them, and no other crate's spans are exported):
//! - a server span per RPC, named `{rpc.method}`, with the OpenTelemetry RPC semantic
//!   conventions (`layers::audit`); it continues an incoming W3C `traceparent`, and its
//!   trace id is the call's audit entry's;
//! - a `store.batch` span per writer batch (jobs, commit time), a child of its first
//!   job's call and linked from the others (`store::writer`);
//! - a client span per delivery attempt (`delivery::dispatcher`), whose `traceparent` the
//!   adapter passes to the agency system.
//!
//! `[telemetry]` in the config, or the standard `OTEL_*` variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_SDK_DISABLED`), turn it on; the config wins where
//! both say something.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::ConfigError;

/// The target of every span the gateway exports.
pub const TARGET: &str = "otel";

/// `[telemetry]`: where traces go. Nothing set (and no `OTEL_EXPORTER_OTLP_ENDPOINT`):
/// no traces.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`.
    pub endpoint: Option<String>,
    /// `service.name` of the spans (default `OTEL_SERVICE_NAME`, else `jisr`).
    pub service_name: Option<String>,
    /// The share of new traces recorded, 0.0–1.0; a call continuing a trace follows its
    /// caller's decision (parent-based). Default: `OTEL_TRACES_SAMPLER`, else all.
    pub sampling_ratio: Option<f64>,
    /// More resource attributes, e.g. `"deployment.environment.name" = "production"`.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
}

impl TelemetryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(ratio) = self.sampling_ratio {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(ConfigError::invalid(
                    "telemetry.sampling_ratio",
                    &ratio.to_string(),
                    "a number from 0.0 to 1.0",
                ));
            }
        }
        if let Some(endpoint) = &self.endpoint {
            let ok = endpoint
                .parse::<http::Uri>()
                .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")));
            if !ok {
                return Err(ConfigError::invalid(
                    "telemetry.endpoint",
                    endpoint,
                    "an http:// or https:// URL of an OTLP/gRPC collector",
                ));
            }
        }
        Ok(())
    }

    /// Whether traces are exported: an endpoint here or in the environment, and the SDK
    /// not disabled by `OTEL_SDK_DISABLED=true`.
    pub fn enabled(&self) -> bool {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        !disabled
            && (self.endpoint.is_some()
                || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
                || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some())
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces (spans are only made then).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Builds the OTLP exporter and tracer provider (inside the tokio runtime: the exporter's
/// channel needs it), and marks traces enabled.
pub(super) fn provider(
    config: &TelemetryConfig,
    node_id: &str,
) -> anyhow::Result<SdkTracerProvider> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = &config.endpoint {
        exporter = exporter.with_endpoint(endpoint.clone());
    }
    let exporter = exporter.build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if let Some(name) = &config.service_name {
        resource = resource.with_service_name(name.clone());
    } else if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("jisr");
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.instance.id", node_id.to_string()))
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource);
    if let Some(ratio) = config.sampling_ratio {
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))));
    }
    let provider = builder.build();
    ENABLED.store(true, Ordering::Relaxed);
    Ok(provider)
}

/// The tracer the tracing layer exports through.
pub(super) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("jisr")
}

/// A W3C `traceparent` value as a text-map carrier.
struct Traceparent(Option<String>);

impl Extractor for Traceparent {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent")
            .then_some(self.0.as_deref())
            .flatten()
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

/// Makes `span` continue the trace of `traceparent` (an incoming header, a stored
/// delivery's), if it names one.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|t| !t.is_empty()) else {
        return;
    };
    let parent = TraceContextPropagator::new().extract(&Traceparent(Some(traceparent.to_string())));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The trace id of `span` (32 hex digits), if it is exported.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The W3C `traceparent` naming `span` as the parent, if it is exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let mut carrier = Traceparent(None);
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampling_ratio_and_endpoint_are_checked() {
        let bad_ratio = TelemetryConfig {
            sampling_ratio: Some(1.5),
            ..Default::default()
        };
        assert!(bad_ratio.validate().is_err());
        let bad_endpoint = TelemetryConfig {
            endpoint: Some("127.0.0.1:4317".into()),
            ..Default::default()
        };
        assert!(bad_endpoint.validate().is_err());
        let good = TelemetryConfig {
            endpoint: Some("http://127.0.0.1:4317".into()),
            sampling_ratio: Some(0.25),
            ..Default::default()
        };
        assert!(good.validate().is_ok());
        assert!(good.enabled() || std::env::var("OTEL_SDK_DISABLED").is_ok());
    }

    #[test]
    fn a_disabled_span_has_no_trace() {
        let span = tracing::Span::none();
        continue_trace(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(trace_id(&span), None);
        assert_eq!(traceparent(&span), None);
    }
}
