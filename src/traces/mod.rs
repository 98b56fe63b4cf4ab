//! OpenTelemetry traces of each task: off by default, on with the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), sent as OTLP over
//! HTTP/protobuf.
//!
//! What a trace holds, and why:
//! - A task's trace starts at its lock: the `task` span (task id, topic, business key, process
//!   instance, outcome) with the engine calls made for it (`complete`, `extend_lock`, …) and its
//!   follow-up (`follow_up`: its `wait`, its `work`, its `correlate_message`). One trace per
//!   task, because that is what an operator asks about ("what happened to order 42?").
//! - The `fetch` that locked the task is a trace of its own, linked from every task it brought:
//!   one fetch serves many tasks, and a span has one parent.
//! - No trace context is stored in the engine, so a follow-up recovered by another replica (or
//!   after a restart) starts a trace of its own; its `task_id` attribute finds the task's trace.
//! - A follow-up's command gets the `traceparent` of its `work` span as `TRACEPARENT`, so that
//!   its own spans join the trace (see [`crate::work::environment`] for what it does not get).
//!
//! Tracing never holds the worker up: spans wait in a bounded queue ([`queue`]) for the SDK's
//! batch processor, which exports from a thread of its own through [`http::CollectorClient`].
//! A collector that is down, slow or refusing costs the spans, counted in
//! `camunda_worker_trace_spans_dropped_total`, and nothing else.

pub mod http;
mod queue;
mod settings;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tokio::runtime::Handle;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

pub use queue::{spans_dropped, spans_exported, SpanDrop, QUEUE_CAPACITY};
pub use settings::{TraceSettings, TraceSetupError};

/// The spans a trace is made of (see the module's doc); every other span of the worker stays
/// in the log only.
const EXPORTED_SPANS: &[&str] = &[
    "fetch",
    "task",
    "complete",
    "report_failure",
    "report_bpmn_error",
    "extend_lock",
    "unlock",
    "follow_up",
    "wait",
    "work",
    "correlate_message",
];

/// How long the spans still queued at shutdown may take to leave: a collector that is down must
/// not hold SIGTERM.
pub const FLUSH_BOUND: Duration = Duration::from_secs(2);

/// Whether traces are exported ([`TraceExport::start`] ran): spans kept only for a trace are
/// made only then.
static ON: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The running export: keep it until the end of `main`, then [`TraceExport::finish`] it while
/// the runtime still runs.
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    /// Starts the exporter. Its requests run on `runtime`; the endpoint, headers and batching
    /// come from the standard variables (`OTEL_EXPORTER_OTLP_*`, `OTEL_BSP_*`).
    pub fn start(settings: &TraceSettings, runtime: Handle) -> Result<Self, TraceSetupError> {
        let client = http::CollectorClient::new(runtime, settings.timeout)
            .map_err(|e| TraceSetupError::Exporter(e.to_string()))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(settings.timeout)
            .build()
            .map_err(|e| TraceSetupError::Exporter(e.to_string()))?;
        let waiting = queue::Waiting::default();
        let batch =
            BatchSpanProcessor::builder(queue::CountingExporter::new(exporter, waiting.clone()))
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(QUEUE_CAPACITY)
                        .build(),
                )
                .build();
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue::BoundedQueue::new(batch, waiting))
            .with_resource(resource)
            .build();
        ON.store(true, Ordering::Relaxed);
        Ok(TraceExport { provider })
    }

    /// The layer that turns the worker's task spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let exported = FilterFn::new(|meta| {
            meta.target().starts_with("camunda_worker")
                && if meta.is_span() {
                    EXPORTED_SPANS.contains(&meta.name())
                } else {
                    *meta.level() <= tracing::Level::WARN
                }
        });
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("camunda-worker"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(exported)
    }

    /// Sends what is still queued, for at most [`FLUSH_BOUND`]. Call it before the runtime
    /// ends: the export's requests run on it.
    pub fn finish(self) {
        let (done, finished) = std::sync::mpsc::channel();
        let provider = self.provider;
        // On a thread of its own, so that no exporter, however stuck, holds the exit.
        let flushing = std::thread::Builder::new()
            .name("trace-flush".to_owned())
            .spawn(move || {
                let _ = provider.shutdown_with_timeout(FLUSH_BOUND);
                let _ = done.send(());
            });
        if flushing.is_ok() {
            let _ = finished.recv_timeout(FLUSH_BOUND + Duration::from_millis(200));
        }
    }
}

/// The OpenTelemetry span context of `span`: `None` when traces are off.
pub fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// Links `span` to `to` (a task to the fetch that locked it).
pub fn link(span: &tracing::Span, to: Option<&SpanContext>) {
    if let Some(to) = to {
        span.add_link(to.clone());
    }
}

/// Makes `span` a child of `parent` in its trace (a follow-up of its task), whatever its parent
/// in the log. Call it before the span is entered.
pub fn set_parent(span: &tracing::Span, parent: Option<&SpanContext>) {
    if let Some(parent) = parent {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent.clone()));
    }
}

/// The W3C `traceparent` of `span` (`00-<trace id>-<span id>-<flags>`): `None` when traces are
/// off.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    span_context(span)?;
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

#[cfg(test)]
mod tests;
