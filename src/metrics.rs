//! Prometheus metrics, all prefixed `camunda_worker_`, plus the facts the health endpoints need:
//! when the loop last polled, and which engine nodes answer.
//!
//! One [`Metrics`] is shared (behind an `Arc`) by the client, the worker, the follow-ups and the
//! reconciler. The counters are the operator's proof that nothing is lost: once the worker is
//! idle, `tasks_completed_total` equals `follow_ups_sent_total` + the sum of
//! `follow_ups_given_up_total` over its reasons.
//!
//! Series that an operator's dashboard or alert reads are created at start (at zero), so that a
//! rate or an alert works before the first event instead of seeing no data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

impl FetchOutcome {
    const ALL: [FetchOutcome; 3] = [
        FetchOutcome::Tasks,
        FetchOutcome::Empty,
        FetchOutcome::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            FetchOutcome::Tasks => "tasks",
            FetchOutcome::Empty => "empty",
            FetchOutcome::Error => "error",
        }
    }
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

impl DropReason {
    const ALL: [DropReason; 3] = [
        DropReason::TaskGone,
        DropReason::LockLost,
        DropReason::Failed,
    ];

    fn label(self) -> &'static str {
        match self {
            DropReason::TaskGone => "task_gone",
            DropReason::LockLost => "lock_lost",
            DropReason::Failed => "failed",
        }
    }
}

/// Why a follow-up message was abandoned.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The instance did not reach the catch event within `--correlation-timeout`.
    Timeout,
    /// Several instances wait under the same business key.
    Ambiguous,
    /// The engine refused the message for another reason (a 4xx that no retry can fix).
    Refused,
    /// The shutdown grace ended before the message could be sent.
    Shutdown,
}

impl GiveUpReason {
    const ALL: [GiveUpReason; 4] = [
        GiveUpReason::Timeout,
        GiveUpReason::Ambiguous,
        GiveUpReason::Refused,
        GiveUpReason::Shutdown,
    ];

    fn label(self) -> &'static str {
        match self {
            GiveUpReason::Timeout => "timeout",
            GiveUpReason::Ambiguous => "ambiguous",
            GiveUpReason::Refused => "refused",
            GiveUpReason::Shutdown => "shutdown",
        }
    }
}

/// The endpoint labels of `engine_request_duration_seconds` (see `engine/mod.rs`), so that a
/// node that leaves takes all its series with it.
const ENDPOINTS: [&str; 17] = [
    "fetchAndLock",
    "complete",
    "failure",
    "bpmnError",
    "extendLock",
    "unlock",
    "message",
    "deploy",
    "start",
    "externalTasks",
    "eventSubscriptions",
    "processInstance",
    "externalTaskLog",
    "eventSubscriptionCount",
    "externalTaskCount",
    "incidentCount",
    "engine",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    node: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
    node: String,
}

/// The worker's metrics registry and health facts.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    fetch_requests: Family<FetchLabels, Counter>,
    tasks_fetched: Family<NodeLabels, Counter>,
    tasks_completed: Counter,
    tasks_failed: Counter,
    tasks_dropped: Family<ReasonLabels, Counter>,
    follow_ups_sent: Counter,
    follow_ups_already_delivered: Counter,
    follow_ups_retried: Counter,
    follow_ups_given_up: Family<ReasonLabels, Counter>,
    follow_ups_recovered: Counter,
    reconciler_passes: Family<OutcomeLabels, Counter>,
    stale_connection_retries: Family<NodeLabels, Counter>,
    tasks_in_flight: Gauge,
    max_tasks: Gauge,
    follow_ups_pending: Gauge,
    follow_ups_capacity: Gauge,
    fetch_paused: Gauge,
    engine_up: Family<NodeLabels, Gauge>,
    fetch_backoff_seconds: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    last_successful_poll: Gauge<f64, AtomicU64>,
    long_poll_seconds: Gauge<f64, AtomicU64>,
    handler_seconds: Histogram,
    engine_request_seconds: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    task_end_to_end_seconds: Histogram,
    follow_up_delay_error_seconds: Histogram,
    started: Instant,
    /// Milliseconds since `started` of the last finished poll (successful or not); 0 = never.
    last_poll_ms: AtomicU64,
    /// Which nodes answered their last call and accepted the credentials (readiness).
    nodes_up: Mutex<HashMap<String, bool>>,
    /// Tasks fetched since start, over all nodes (the reconciler's sign of activity).
    fetched_so_far: AtomicU64,
    /// Woken when the engine answers again after no node did (the reconciler runs at once then).
    engine_back: tokio::sync::Notify,
}

/// Engine calls on a nearby engine take milliseconds; a long poll takes up to its timeout (30 s
/// by default, 30 min at most). The buckets resolve the fast calls finely and still place a
/// parked poll.
fn request_histogram() -> Histogram {
    Histogram::new([
        0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
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
        let tasks_fetched = Family::<NodeLabels, Counter>::default();
        let tasks_completed = Counter::default();
        let tasks_failed = Counter::default();
        let tasks_dropped = Family::<ReasonLabels, Counter>::default();
        let follow_ups_sent = Counter::default();
        let follow_ups_already_delivered = Counter::default();
        let follow_ups_retried = Counter::default();
        let follow_ups_given_up = Family::<ReasonLabels, Counter>::default();
        let follow_ups_recovered = Counter::default();
        let reconciler_passes = Family::<OutcomeLabels, Counter>::default();
        let stale_connection_retries = Family::<NodeLabels, Counter>::default();
        let tasks_in_flight = Gauge::default();
        let max_tasks = Gauge::default();
        let follow_ups_pending = Gauge::default();
        let follow_ups_capacity = Gauge::default();
        let fetch_paused = Gauge::default();
        let engine_up = Family::<NodeLabels, Gauge>::default();
        let fetch_backoff_seconds = Family::<NodeLabels, Gauge<f64, AtomicU64>>::default();
        let last_successful_poll = Gauge::<f64, AtomicU64>::default();
        let long_poll_seconds = Gauge::<f64, AtomicU64>::default();
        let handler_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let engine_request_seconds =
            Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                request_histogram,
            );
        // Fetched → correlated is dominated by the correlation delay (2 s by default): steps of
        // ×1.5 from 50 ms place both a 0 s and a 2 s delay, and a retried minute.
        let task_end_to_end_seconds = Histogram::new(exponential_buckets(0.05, 1.5, 20));
        // How late a follow-up went out, against its due time: a millisecond when all is well,
        // seconds when message calls queue behind a slow engine.
        let follow_up_delay_error_seconds = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);

        registry.register(
            "fetch_requests",
            "fetch-and-lock requests, by engine node and outcome",
            fetch_requests.clone(),
        );
        registry.register(
            "tasks_fetched",
            "tasks locked by this worker, by engine node",
            tasks_fetched.clone(),
        );
        registry.register(
            "tasks_completed",
            "tasks completed (the engine answered 204, or its state proved it after a lost reply)",
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
            "follow-up messages delivered: correlated (204), or found delivered in the instance's state after a lost reply",
            follow_ups_sent.clone(),
        );
        registry.register(
            "follow_ups_already_delivered",
            "the part of follow_ups_sent decided from the instance's state (the wait it was meant for is gone)",
            follow_ups_already_delivered.clone(),
        );
        registry.register(
            "follow_ups_retried",
            "follow-up attempts retried (instance not at the catch event yet, engine errors)",
            follow_ups_retried.clone(),
        );
        registry.register(
            "follow_ups_given_up",
            "follow-up messages abandoned, by reason; the reconciler may still recover them",
            follow_ups_given_up.clone(),
        );
        registry.register(
            "follow_ups_recovered",
            "waiting instances correlated by the reconciler",
            follow_ups_recovered.clone(),
        );
        registry.register(
            "reconciler_passes",
            "reconciler passes, by outcome",
            reconciler_passes.clone(),
        );
        registry.register(
            "engine_stale_connection_retries",
            "calls sent again at once because the server had closed the kept-alive connection",
            stale_connection_retries.clone(),
        );
        registry.register(
            "tasks_in_flight",
            "tasks locked and not yet finished",
            tasks_in_flight.clone(),
        );
        registry.register(
            "max_tasks",
            "the configured number of task slots (--max-tasks)",
            max_tasks.clone(),
        );
        registry.register(
            "follow_ups_pending",
            "follow-ups in memory, not yet delivered or given up",
            follow_ups_pending.clone(),
        );
        registry.register(
            "follow_ups_capacity",
            "the configured bound on pending follow-ups (--max-pending-follow-ups)",
            follow_ups_capacity.clone(),
        );
        registry.register(
            "fetch_paused",
            "1 while fetching waits because pending follow-ups are at capacity",
            fetch_paused.clone(),
        );
        registry.register(
            "engine_up",
            "1 when the engine node answered its last call and accepted the credentials",
            engine_up.clone(),
        );
        registry.register(
            "fetch_backoff_seconds",
            "current backoff of a node's fetch loop (0 while polling normally)",
            fetch_backoff_seconds.clone(),
        );
        registry.register(
            "last_successful_poll_timestamp_seconds",
            "unix time of the last successful fetch-and-lock (any node)",
            last_successful_poll.clone(),
        );
        registry.register(
            "long_poll_seconds",
            "the configured long poll (--long-poll)",
            long_poll_seconds.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "time a handler spent on one task",
            handler_seconds.clone(),
        );
        registry.register(
            "engine_request_duration_seconds",
            "latency of engine REST calls, by endpoint and node",
            engine_request_seconds.clone(),
        );
        registry.register(
            "task_end_to_end_seconds",
            "time from fetching a task to correlating its follow-up message",
            task_end_to_end_seconds.clone(),
        );
        registry.register(
            "follow_up_delay_error_seconds",
            "how late a follow-up's delivery began, against the time it was due",
            follow_up_delay_error_seconds.clone(),
        );

        for reason in DropReason::ALL {
            let _ = tasks_dropped.get_or_create(&ReasonLabels {
                reason: reason.label(),
            });
        }
        for reason in GiveUpReason::ALL {
            let _ = follow_ups_given_up.get_or_create(&ReasonLabels {
                reason: reason.label(),
            });
        }
        for outcome in ["ok", "error"] {
            let _ = reconciler_passes.get_or_create(&OutcomeLabels { outcome });
        }

        Metrics {
            registry,
            fetch_requests,
            tasks_fetched,
            tasks_completed,
            tasks_failed,
            tasks_dropped,
            follow_ups_sent,
            follow_ups_already_delivered,
            follow_ups_retried,
            follow_ups_given_up,
            follow_ups_recovered,
            reconciler_passes,
            stale_connection_retries,
            tasks_in_flight,
            max_tasks,
            follow_ups_pending,
            follow_ups_capacity,
            fetch_paused,
            engine_up,
            fetch_backoff_seconds,
            last_successful_poll,
            long_poll_seconds,
            handler_seconds,
            engine_request_seconds,
            task_end_to_end_seconds,
            follow_up_delay_error_seconds,
            started: Instant::now(),
            last_poll_ms: AtomicU64::new(0),
            nodes_up: Mutex::new(HashMap::new()),
            fetched_so_far: AtomicU64::new(0),
            engine_back: tokio::sync::Notify::new(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Creates the per-node series at zero, so that a node's rates and `engine_up` exist from the
    /// moment the worker knows the node.
    pub fn add_node(&self, node: &str) {
        for outcome in FetchOutcome::ALL {
            let _ = self.fetch_requests.get_or_create(&FetchLabels {
                node: node.to_owned(),
                outcome: outcome.label(),
            });
        }
        let labels = NodeLabels {
            node: node.to_owned(),
        };
        let _ = self.tasks_fetched.get_or_create(&labels);
        let _ = self.stale_connection_retries.get_or_create(&labels);
        let _ = self.engine_up.get_or_create(&labels);
        let _ = self.fetch_backoff_seconds.get_or_create(&labels);
        self.nodes().entry(node.to_owned()).or_insert(false);
    }

    /// Forgets a node that left the cluster, so that its series do not linger (keeps the number of
    /// series bounded by the number of nodes, also with DNS discovery).
    pub fn remove_node(&self, node: &str) {
        for outcome in FetchOutcome::ALL {
            self.fetch_requests.remove(&FetchLabels {
                node: node.to_owned(),
                outcome: outcome.label(),
            });
        }
        let labels = NodeLabels {
            node: node.to_owned(),
        };
        self.tasks_fetched.remove(&labels);
        self.stale_connection_retries.remove(&labels);
        self.engine_up.remove(&labels);
        self.fetch_backoff_seconds.remove(&labels);
        for endpoint in ENDPOINTS {
            self.engine_request_seconds.remove(&EndpointLabels {
                endpoint,
                node: node.to_owned(),
            });
        }
        self.nodes().remove(node);
    }

    /// Whether `node` is one the worker knows now: a call that was under way when its node left
    /// must not bring the node's series back.
    fn knows(&self, node: &str) -> bool {
        self.nodes().contains_key(node)
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        // Single inserts and updates cannot leave the map inconsistent: a poisoned lock is usable.
        self.nodes_up.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a finished fetch-and-lock request.
    pub fn fetched(&self, node: &str, outcome: FetchOutcome, tasks: usize) {
        self.fetched_so_far
            .fetch_add(tasks as u64, Ordering::Relaxed);
        if outcome != FetchOutcome::Error {
            self.last_successful_poll.set(unix_now());
        }
        let since_start = self.started.elapsed().as_millis().max(1);
        self.last_poll_ms.store(
            u64::try_from(since_start).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if !self.knows(node) {
            return;
        }
        self.fetch_requests
            .get_or_create(&FetchLabels {
                node: node.to_owned(),
                outcome: outcome.label(),
            })
            .inc();
        if tasks > 0 {
            self.tasks_fetched
                .get_or_create(&NodeLabels {
                    node: node.to_owned(),
                })
                .inc_by(tasks as u64);
        }
    }

    /// Records the backoff a node's fetch loop is in (zero once it polls normally again).
    pub fn set_fetch_backoff(&self, node: &str, delay: Duration) {
        if !self.knows(node) {
            return;
        }
        self.fetch_backoff_seconds
            .get_or_create(&NodeLabels {
                node: node.to_owned(),
            })
            .set(delay.as_secs_f64());
    }

    /// Records the configuration an alert compares against.
    pub fn set_config(&self, max_tasks: u32, long_poll: Duration, follow_up_capacity: usize) {
        self.max_tasks.set(i64::from(max_tasks));
        self.long_poll_seconds.set(long_poll.as_secs_f64());
        self.follow_ups_capacity
            .set(i64::try_from(follow_up_capacity).unwrap_or(i64::MAX));
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
            .get_or_create(&ReasonLabels {
                reason: reason.label(),
            })
            .inc();
    }

    /// Records a follow-up taken into memory.
    pub fn follow_up_scheduled(&self) {
        self.follow_ups_pending.inc();
    }

    /// Records a follow-up that left memory (delivered or given up).
    pub fn follow_up_finished(&self) {
        self.follow_ups_pending.dec();
    }

    /// Records a delivered follow-up and the task's time from fetch to correlation.
    /// `from_state` marks a delivery decided from the instance's state after a lost reply.
    pub fn follow_up_sent(&self, since_fetch: Option<Duration>, from_state: bool) {
        self.follow_ups_sent.inc();
        if from_state {
            self.follow_ups_already_delivered.inc();
        }
        if let Some(elapsed) = since_fetch {
            self.task_end_to_end_seconds.observe(elapsed.as_secs_f64());
        }
    }

    /// Records how late a follow-up's delivery began against its due time.
    pub fn observe_follow_up_delay_error(&self, late: Duration) {
        self.follow_up_delay_error_seconds
            .observe(late.as_secs_f64());
    }

    /// Records a failed follow-up attempt that will be retried.
    pub fn follow_up_retried(&self) {
        self.follow_ups_retried.inc();
    }

    /// Records an abandoned follow-up.
    pub fn follow_up_given_up(&self, reason: GiveUpReason) {
        self.follow_ups_given_up
            .get_or_create(&ReasonLabels {
                reason: reason.label(),
            })
            .inc();
    }

    /// Records an instance correlated by the reconciler.
    pub fn follow_up_recovered(&self) {
        self.follow_ups_recovered.inc();
    }

    /// Records a reconciler pass.
    pub fn reconciler_pass(&self, ok: bool) {
        self.reconciler_passes
            .get_or_create(&OutcomeLabels {
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// Records a call sent again because its kept-alive connection had been closed.
    pub fn stale_connection_retried(&self, node: &str) {
        if !self.knows(node) {
            return;
        }
        self.stale_connection_retries
            .get_or_create(&NodeLabels {
                node: node.to_owned(),
            })
            .inc();
    }

    /// Records whether fetching waits for room among the pending follow-ups.
    pub fn set_fetch_paused(&self, paused: bool) {
        self.fetch_paused.set(i64::from(paused));
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
    pub fn observe_engine_request(&self, endpoint: &'static str, node: &str, elapsed: Duration) {
        if !self.knows(node) {
            return;
        }
        self.engine_request_seconds
            .get_or_create(&EndpointLabels {
                endpoint,
                node: node.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records whether a node answered its last call and accepted the credentials.
    pub fn set_engine_up(&self, node: &str, up: bool) {
        let mut nodes = self.nodes();
        let was_up = nodes.values().any(|up| *up);
        let Some(known) = nodes.get_mut(node) else {
            return;
        };
        *known = up;
        let back = up && !was_up;
        drop(nodes);
        self.engine_up
            .get_or_create(&NodeLabels {
                node: node.to_owned(),
            })
            .set(i64::from(up));
        if back {
            self.engine_back.notify_waiters();
        }
    }

    /// Resolves the next time the engine answers after no node did.
    pub async fn engine_back(&self) {
        self.engine_back.notified().await;
    }

    /// Tasks fetched since start, over all nodes.
    pub fn fetched_so_far(&self) -> u64 {
        self.fetched_so_far.load(Ordering::Relaxed)
    }

    /// Whether at least one engine node answered its last call (readiness).
    pub fn engine_is_up(&self) -> bool {
        self.nodes().values().any(|up| *up)
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

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_carries_prefixed_names_and_labels() {
        let metrics = Metrics::new();
        let node = "http://e1/engine-rest";
        metrics.add_node(node);
        metrics.fetched(node, FetchOutcome::Tasks, 3);
        metrics.task_completed();
        metrics.task_dropped(DropReason::TaskGone);
        metrics.observe_engine_request("complete", node, Duration::from_millis(3));
        let text = metrics.render();
        assert!(
            text.contains(&format!(
                "camunda_worker_fetch_requests_total{{node=\"{node}\",outcome=\"tasks\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "camunda_worker_fetch_requests_total{{node=\"{node}\",outcome=\"error\"}} 0"
        )));
        assert!(text.contains(&format!(
            "camunda_worker_tasks_fetched_total{{node=\"{node}\"}} 3"
        )));
        assert!(text.contains("camunda_worker_tasks_completed_total 1"));
        assert!(text.contains("camunda_worker_tasks_dropped_total{reason=\"task_gone\"} 1"));
        assert!(text.contains("camunda_worker_follow_ups_given_up_total{reason=\"timeout\"} 0"));
        assert!(text.contains(&format!(
            "camunda_worker_engine_request_duration_seconds_count{{endpoint=\"complete\",node=\"{node}\"}} 1"
        )));
        assert!(metrics.since_last_poll().is_some());
    }

    #[test]
    fn readiness_needs_one_node_up_and_a_removed_node_leaves_no_series() {
        let metrics = Metrics::new();
        metrics.add_node("a");
        metrics.add_node("b");
        assert!(!metrics.engine_is_up());
        metrics.set_engine_up("b", true);
        assert!(metrics.engine_is_up());
        metrics.remove_node("b");
        assert!(!metrics.engine_is_up());
        assert!(!metrics.render().contains("node=\"b\""));
    }
}
