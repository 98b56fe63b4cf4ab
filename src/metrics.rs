//! Prometheus metrics, all prefixed `camunda_worker_`, plus the two facts the health endpoints
//! need: when the loop last polled, and whether the engine answered the last call.
//!
//! One [`Metrics`] is shared (behind an `Arc`) by the client, the worker and the follow-ups. The
//! counters are the operator's proof that nothing is lost: `tasks_completed_total` should equal
//! `follow_ups_sent_total` + `follow_ups_given_up_total` once the worker is idle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// How a fetch-and-lock request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The engine handed out at least one task.
    Tasks,
    /// The long poll ended without a task.
    Empty,
    /// The call failed (engine down, refused, unreadable reply).
    Error,
}

/// Why a task was dropped without a follow-up.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// The task no longer exists (404): cancelled, or completed by another worker.
    TaskGone,
    /// Another worker holds the lock (400), or the lock ran out before completion succeeded.
    LockLost,
    /// The task was reported as a failure to the engine.
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

impl FetchOutcome {
    fn label(self) -> &'static str {
        match self {
            FetchOutcome::Tasks => "tasks",
            FetchOutcome::Empty => "empty",
            FetchOutcome::Error => "error",
        }
    }
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::TaskGone => "task_gone",
            DropReason::LockLost => "lock_lost",
            DropReason::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

/// The worker's metrics registry and health facts.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    fetch_requests: Family<FetchLabels, Counter>,
    tasks_fetched: Counter,
    tasks_completed: Counter,
    tasks_failed: Counter,
    tasks_dropped: Family<DropLabels, Counter>,
    follow_ups_sent: Counter,
    follow_ups_retried: Counter,
    follow_ups_given_up: Counter,
    follow_ups_recovered: Counter,
    tasks_in_flight: Gauge,
    engine_up: Gauge,
    handler_seconds: Histogram,
    engine_request_seconds: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    task_end_to_end_seconds: Histogram,
    started: Instant,
    /// Milliseconds since `started` of the last completed poll; 0 = never.
    last_poll_ms: AtomicU64,
    engine_answered: AtomicBool,
}

fn request_histogram() -> Histogram {
    // 1 ms … ~65 s: fast REST calls up to a full long poll.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("camunda_worker");
        let fetch_requests = Family::<FetchLabels, Counter>::default();
        let tasks_fetched = Counter::default();
        let tasks_completed = Counter::default();
        let tasks_failed = Counter::default();
        let tasks_dropped = Family::<DropLabels, Counter>::default();
        let follow_ups_sent = Counter::default();
        let follow_ups_retried = Counter::default();
        let follow_ups_given_up = Counter::default();
        let follow_ups_recovered = Counter::default();
        let tasks_in_flight = Gauge::default();
        let engine_up = Gauge::default();
        let handler_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let engine_request_seconds =
            Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                request_histogram,
            );
        let task_end_to_end_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 16));

        registry.register(
            "fetch_requests",
            "fetch-and-lock requests, by outcome",
            fetch_requests.clone(),
        );
        registry.register(
            "tasks_fetched",
            "tasks locked by this worker",
            tasks_fetched.clone(),
        );
        registry.register(
            "tasks_completed",
            "tasks completed (the engine answered 204)",
            tasks_completed.clone(),
        );
        registry.register(
            "tasks_failed",
            "tasks reported to the engine as failed (/failure)",
            tasks_failed.clone(),
        );
        registry.register(
            "tasks_dropped",
            "tasks given up without a follow-up, by reason",
            tasks_dropped.clone(),
        );
        registry.register(
            "follow_ups_sent",
            "follow-up messages the engine correlated",
            follow_ups_sent.clone(),
        );
        registry.register(
            "follow_ups_retried",
            "follow-up attempts that failed and were retried",
            follow_ups_retried.clone(),
        );
        registry.register(
            "follow_ups_given_up",
            "follow-up messages abandoned (timeout, ambiguous key, shutdown); the reconciler may still recover them",
            follow_ups_given_up.clone(),
        );
        registry.register(
            "follow_ups_recovered",
            "waiting instances correlated by the reconciler",
            follow_ups_recovered.clone(),
        );
        registry.register(
            "tasks_in_flight",
            "tasks locked and not yet finished",
            tasks_in_flight.clone(),
        );
        registry.register(
            "engine_up",
            "1 when the last engine call was answered and the credentials accepted",
            engine_up.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "time a handler spent on one task",
            handler_seconds.clone(),
        );
        registry.register(
            "engine_request_duration_seconds",
            "latency of engine REST calls, by endpoint",
            engine_request_seconds.clone(),
        );
        registry.register(
            "task_end_to_end_seconds",
            "time from fetching a task to correlating its follow-up message",
            task_end_to_end_seconds.clone(),
        );

        Metrics {
            registry,
            fetch_requests,
            tasks_fetched,
            tasks_completed,
            tasks_failed,
            tasks_dropped,
            follow_ups_sent,
            follow_ups_retried,
            follow_ups_given_up,
            follow_ups_recovered,
            tasks_in_flight,
            engine_up,
            handler_seconds,
            engine_request_seconds,
            task_end_to_end_seconds,
            started: Instant::now(),
            last_poll_ms: AtomicU64::new(0),
            engine_answered: AtomicBool::new(false),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Records a finished fetch-and-lock request.
    pub fn fetched(&self, outcome: FetchOutcome, tasks: usize) {
        self.fetch_requests
            .get_or_create(&FetchLabels {
                outcome: outcome.label(),
            })
            .inc();
        self.tasks_fetched.inc_by(tasks as u64);
        let since_start = self.started.elapsed().as_millis().max(1);
        self.last_poll_ms.store(
            u64::try_from(since_start).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Records a completed task.
    pub fn task_completed(&self) {
        self.tasks_completed.inc();
    }

    /// Records a task reported as failed.
    pub fn task_failed(&self) {
        self.tasks_failed.inc();
        self.task_dropped(DropReason::Failed);
    }

    /// Records a task given up without a follow-up.
    pub fn task_dropped(&self, reason: DropReason) {
        self.tasks_dropped
            .get_or_create(&DropLabels {
                reason: reason.label(),
            })
            .inc();
    }

    /// Records a correlated follow-up and the task's time from fetch to correlation.
    pub fn follow_up_sent(&self, since_fetch: Option<Duration>) {
        self.follow_ups_sent.inc();
        if let Some(elapsed) = since_fetch {
            self.task_end_to_end_seconds.observe(elapsed.as_secs_f64());
        }
    }

    /// Records a failed follow-up attempt that will be retried.
    pub fn follow_up_retried(&self) {
        self.follow_ups_retried.inc();
    }

    /// Records an abandoned follow-up.
    pub fn follow_up_given_up(&self) {
        self.follow_ups_given_up.inc();
    }

    /// Records an instance correlated by the reconciler.
    pub fn follow_up_recovered(&self) {
        self.follow_ups_recovered.inc();
    }

    /// Adjusts the in-flight gauge.
    pub fn add_in_flight(&self, delta: i64) {
        self.tasks_in_flight.inc_by(delta);
    }

    /// Records how long a handler ran.
    pub fn observe_handler(&self, elapsed: Duration) {
        self.handler_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records the latency of one engine call.
    pub fn observe_engine_request(&self, endpoint: &'static str, elapsed: Duration) {
        self.engine_request_seconds
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    /// Records whether the engine answered the last call and accepted the credentials.
    pub fn set_engine_up(&self, up: bool) {
        self.engine_up.set(i64::from(up));
        self.engine_answered.store(up, Ordering::Relaxed);
    }

    /// Whether the last engine call succeeded (readiness).
    pub fn engine_is_up(&self) -> bool {
        self.engine_answered.load(Ordering::Relaxed)
    }

    /// Time since the loop last finished a poll; `None` before the first.
    pub fn since_last_poll(&self) -> Option<Duration> {
        match self.last_poll_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    /// Time since the metrics (and so the worker) started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_carries_prefixed_names_and_labels() {
        let metrics = Metrics::new();
        metrics.fetched(FetchOutcome::Tasks, 3);
        metrics.task_completed();
        metrics.task_dropped(DropReason::TaskGone);
        metrics.observe_engine_request("complete", Duration::from_millis(3));
        let text = metrics.render();
        assert!(
            text.contains("camunda_worker_fetch_requests_total{outcome=\"tasks\"} 1"),
            "{text}"
        );
        assert!(text.contains("camunda_worker_tasks_fetched_total 3"));
        assert!(text.contains("camunda_worker_tasks_completed_total 1"));
        assert!(text.contains("camunda_worker_tasks_dropped_total{reason=\"task_gone\"} 1"));
        assert!(text.contains(
            "camunda_worker_engine_request_duration_seconds_count{endpoint=\"complete\"} 1"
        ));
        assert!(metrics.since_last_poll().is_some());
    }
}
