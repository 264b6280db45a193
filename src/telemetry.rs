//! Logging and tracing set-up: one [`init`] installs text or JSON log lines and, when an
//! OTLP endpoint is configured, a `tracing-opentelemetry` layer exporting spans over gRPC.
//! The log layer takes events only; spans are built only for the OpenTelemetry layer, so
//! with no endpoint no span is ever built and tracing costs nothing extra.
//!
//! [`inject`] / [`extract_into`] carry W3C trace context across forwarded writes, so a write
//! sent to a follower is one trace across the follower and the leader.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings, TracingSettings};

/// Keeps the span exporter alive; flushes buffered spans when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up OTLP export to `{endpoint}`: {message}")]
pub struct TelemetryError {
    endpoint: String,
    message: String,
}

/// Installs the global subscriber. Call once, inside the Tokio runtime.
pub fn init(log: &LogSettings, tracing_settings: &TracingSettings) -> Result<TelemetryGuard, TelemetryError> {
    let (tracer, provider) = match tracing_settings.otlp_endpoint.as_str() {
        "" => (None, None),
        endpoint => {
            let err = |e: &dyn std::fmt::Display| TelemetryError {
                endpoint: endpoint.to_owned(),
                message: e.to_string(),
            };
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| err(&e))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(tracing_settings.service_name.clone())
                .build();
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
            (Some(tracer), Some(provider))
        }
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Err(e) = subscriber(log, tracer).try_init() {
        eprintln!("logging already initialised: {e}");
    }
    Ok(TelemetryGuard { provider })
}

/// The subscriber: log lines (events only) and, given a tracer, span export.
fn subscriber(log: &LogSettings, tracer: Option<Tracer>) -> Box<dyn Subscriber + Send + Sync> {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&log.level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    // The log takes events only: spans exist for trace export, and a span that no layer
    // wants is never built. Building the request spans for the log alone cost up to a
    // tenth of write throughput in one A/B (scripts/bench-disk.sh, RUST_LOG=warn vs info).
    let events = filter().and(filter_fn(|meta| meta.is_event()));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match log.format {
        LogFormat::Text => fmt.with_filter(events).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(events).boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt);
    // Not `.with(Option<layer>)`: a `None` layer answers `Interest::always` for every
    // callsite, so every debug event and span of every dependency was built and then
    // dropped by the log's filter — OpenRaft alone formats its whole metrics struct at each
    // state change. That was about a fifth of a busy leader's CPU (`perf`, bench -c 64).
    match tracer {
        Some(tracer) => Box::new(
            registry.with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(filter()),
            ),
        ),
        None => Box::new(registry),
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes the current span's trace context (`traceparent`) into an outgoing request.
pub fn inject<T>(request: &mut tonic::Request<T>) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(request.metadata_mut()));
}

/// Makes `span` a child of the trace context carried by an incoming request, if any.
pub fn extract_into<T>(request: &tonic::Request<T>, span: &tracing::Span) {
    let cx = TraceContextPropagator::new().extract(&MetadataExtractor(request.metadata()));
    let _ = span.set_parent(cx);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    /// Without trace export, nothing below the log level is built: no debug event (whose
    /// arguments could be expensive to format) and no span at all.
    #[test]
    fn without_export_nothing_below_the_log_level_is_built() {
        let log = LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
        };
        let mut formatted = false;
        tracing::subscriber::with_default(subscriber(&log, None), || {
            assert!(tracing::event_enabled!(Level::INFO));
            assert!(!tracing::event_enabled!(Level::DEBUG));
            tracing::debug!("{}", {
                formatted = true;
                "never formatted"
            });
            let span = tracing::info_span!("request");
            assert!(span.is_disabled(), "no layer wants spans, so none is built");
        });
        assert!(!formatted, "a debug event's arguments were evaluated");
    }
}
