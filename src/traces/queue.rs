//! The bound on spans waiting for the collector, and the count of those that never reach it.
//!
//! The SDK's batch processor already queues ended spans for a thread of its own and drops what
//! does not fit; it does not say how many. The worker wraps it: [`BoundedQueue`] admits an ended
//! span only while fewer than [`QUEUE_CAPACITY`] wait (counting the rest as `queue_full`), and
//! [`CountingExporter`] takes a batch off that count when the exporter receives it and counts the
//! batch as exported or, when the collector refused it or could not be reached, as
//! `export_failed`. Ending a span is then never more than a counter and a channel send, whatever
//! the collector does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// The most ended spans waiting to be exported (the OpenTelemetry default). A task makes about
/// six; so a collector away for a while costs the spans of a few hundred tasks, then a count.
pub const QUEUE_CAPACITY: usize = 2048;

/// Why a span did not reach the collector (the `reason` of `trace_spans_dropped_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SpanDrop {
    /// The queue was full: the collector has not taken the spans before it.
    QueueFull,
    /// The export failed: the collector was down, too slow or refused the batch.
    ExportFailed,
}

impl SpanDrop {
    /// Every reason.
    pub const ALL: [SpanDrop; 2] = [SpanDrop::QueueFull, SpanDrop::ExportFailed];

    /// The metric's label value.
    pub fn label(self) -> &'static str {
        match self {
            SpanDrop::QueueFull => "queue_full",
            SpanDrop::ExportFailed => "export_failed",
        }
    }

    fn labels(self) -> Vec<(&'static str, String)> {
        vec![("reason", self.label().to_owned())]
    }
}

/// The process-wide count of spans the collector took: the exporter is installed once per
/// process, before any registry of metrics exists (`trace_spans_exported_total`).
pub fn spans_exported() -> &'static Counter {
    static EXPORTED: OnceLock<Counter> = OnceLock::new();
    EXPORTED.get_or_init(Counter::default)
}

/// The process-wide count of dropped spans by reason (`trace_spans_dropped_total`), each
/// reason's series at zero from the start so that an alert's rate works before the first drop.
pub fn spans_dropped() -> &'static Family<Vec<(&'static str, String)>, Counter> {
    static DROPPED: OnceLock<Family<Vec<(&'static str, String)>, Counter>> = OnceLock::new();
    DROPPED.get_or_init(|| {
        let family = Family::default();
        for reason in SpanDrop::ALL {
            let _ = family.get_or_create(&reason.labels());
        }
        family
    })
}

/// Counts dropped spans.
fn dropped(reason: SpanDrop, count: usize) {
    spans_dropped()
        .get_or_create(&reason.labels())
        .inc_by(count as u64);
}

/// The spans admitted and not yet handed to the exporter, shared by the two wrappers.
#[derive(Debug, Clone, Default)]
pub struct Waiting(Arc<AtomicUsize>);

/// A span processor that admits at most [`QUEUE_CAPACITY`] waiting spans into `inner`.
#[derive(Debug)]
pub struct BoundedQueue<P> {
    inner: P,
    waiting: Waiting,
}

impl<P> BoundedQueue<P> {
    /// Wraps `inner`, whose own queue holds at least [`QUEUE_CAPACITY`] spans.
    pub fn new(inner: P, waiting: Waiting) -> Self {
        BoundedQueue { inner, waiting }
    }
}

impl<P: SpanProcessor> SpanProcessor for BoundedQueue<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // The batch processor ignores unsampled spans; they never wait, so they are not counted.
        if !span.span_context.is_sampled() {
            return;
        }
        let waiting = &self.waiting.0;
        if waiting.fetch_add(1, Ordering::AcqRel) >= QUEUE_CAPACITY {
            waiting.fetch_sub(1, Ordering::AcqRel);
            dropped(SpanDrop::QueueFull, 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter that counts what `inner` exported and what it failed to.
#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
    waiting: Waiting,
}

impl<E> CountingExporter<E> {
    /// Wraps `inner`; `waiting` is the [`BoundedQueue`]'s.
    pub fn new(inner: E, waiting: Waiting) -> Self {
        CountingExporter { inner, waiting }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len();
        self.waiting.0.fetch_sub(count, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                spans_exported().inc_by(count as u64);
            }
            Err(_) => dropped(SpanDrop::ExportFailed, count),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkError;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SimpleSpanProcessor};

    /// An exporter that always fails, as one whose collector is down.
    #[derive(Debug)]
    struct Down;

    impl SpanExporter for Down {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            Err(OTelSdkError::InternalFailure("connection refused".into()))
        }
    }

    /// An exporter that takes every batch, as a collector that is up.
    #[derive(Debug, Clone, Default)]
    struct Up(Arc<AtomicUsize>);

    impl SpanExporter for Up {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.fetch_add(batch.len(), Ordering::AcqRel);
            Ok(())
        }
    }

    fn counts() -> (u64, u64, u64) {
        let get = |reason: SpanDrop| spans_dropped().get_or_create(&reason.labels()).get();
        (
            spans_exported().get(),
            get(SpanDrop::QueueFull),
            get(SpanDrop::ExportFailed),
        )
    }

    /// A processor that keeps what it is given (a stand-in for a batch processor whose thread
    /// has not exported yet).
    #[derive(Debug, Default)]
    struct Holding(std::sync::Mutex<Vec<SpanData>>);

    impl SpanProcessor for Holding {
        fn on_start(&self, _span: &mut Span, _cx: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    /// Ends `spans` spans through the bounded queue and `exporter` (exporting each at once);
    /// what still waits.
    fn end_spans_through(exporter: impl SpanExporter + 'static, spans: usize) -> Waiting {
        use opentelemetry::trace::{Tracer, TracerProvider};
        let waiting = Waiting::default();
        let exporter = CountingExporter::new(exporter, waiting.clone());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BoundedQueue::new(
                SimpleSpanProcessor::new(exporter),
                waiting.clone(),
            ))
            .build();
        let tracer = provider.tracer("test");
        for _ in 0..spans {
            tracer.in_span("task", |_| {});
        }
        waiting
    }

    // One test, because the counters are process-wide.
    #[test]
    fn spans_past_the_bound_or_refused_by_the_collector_are_counted_and_the_rest_exported() {
        use opentelemetry::trace::{Tracer, TracerProvider};
        let before = counts();

        // A collector that never takes a batch: the queue fills, the rest is counted.
        let waiting = Waiting::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BoundedQueue::new(Holding::default(), waiting.clone()))
            .build();
        let tracer = provider.tracer("test");
        for _ in 0..QUEUE_CAPACITY + 5 {
            tracer.in_span("task", |_| {});
        }
        assert_eq!(waiting.0.load(Ordering::Acquire), QUEUE_CAPACITY);
        let after_full = counts();
        assert_eq!(after_full.1 - before.1, 5);

        // A collector that refuses: every span is counted as failed, none as exported.
        let waiting = end_spans_through(Down, 3);
        let after_down = counts();
        assert_eq!(after_down.2 - after_full.2, 3);
        assert_eq!(after_down.0, after_full.0);
        assert_eq!(waiting.0.load(Ordering::Acquire), 0);

        // A collector that takes them: exported, nothing waits.
        let up = Up::default();
        let waiting = end_spans_through(up.clone(), 4);
        let after_up = counts();
        assert_eq!(after_up.0 - after_down.0, 4);
        assert_eq!(up.0.load(Ordering::Acquire), 4);
        assert_eq!(waiting.0.load(Ordering::Acquire), 0);
    }
}
