//! Prometheus metrics, all prefixed `camunda_worker_`: each declared once, in the table below
//! (name, type, help), and nothing else — the facts the health endpoints judge by live in
//! [`crate::health`] and in the engine client.
//!
//! One [`Metrics`] is shared (behind an `Arc`) by the client, the worker, the follow-ups and the
//! reconciler. The counters are the operator's proof that nothing is lost: once the worker is
//! idle, `tasks_completed_total` equals `follow_ups_sent_total` + the sum of
//! `follow_ups_given_up_total` over its reasons.
//!
//! Labels with a fixed set of values (why a task was dropped, how a fetch ended) are
//! [`Outcome`]s, declared by the code that produces them. Series that an operator's dashboard or
//! alert reads are created at zero when their producer starts ([`Metrics::preset`]), so that a
//! rate or an alert works before the first event instead of seeing no data. Series labelled with
//! an engine node go away with the node ([`Metrics::remove_node`]): with DNS discovery the set
//! of nodes changes, and the number of series must not grow with it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label set: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// A counter family with labels.
pub type CounterFamily = Family<Labels, Counter>;

/// A fixed set of values of one label (why a task was dropped, how a fetch ended, ...), declared
/// next to the code that produces them.
pub trait Outcome: Copy + 'static {
    /// Every value, for the series created at zero.
    const ALL: &'static [Self];
    /// The name of the label (`reason`, `outcome`).
    const LABEL: &'static str;
    /// This value as the label shows it.
    fn label(self) -> &'static str;
}

/// Declares the metrics: one line each, `name: type = constructor, "help"`. The name is the
/// field and the exposed name (with the registry's prefix, and `_total` for counters).
macro_rules! declare_metrics {
    ($($name:ident: $kind:ty = $init:expr, $help:literal;)*) => {
        /// The worker's metrics registry.
        #[derive(Debug)]
        pub struct Metrics {
            registry: Registry,
            /// The label sets created per engine node, so that a node that leaves takes all
            /// its series with it.
            nodes: Mutex<HashMap<String, HashSet<(&'static str, Labels)>>>,
            $(#[doc = $help] pub(crate) $name: $kind,)*
        }

        impl Metrics {
            /// A fresh registry with every metric at zero.
            pub fn new() -> Self {
                let mut registry = Registry::with_prefix("camunda_worker");
                $(
                    let $name: $kind = $init;
                    registry.register(stringify!($name), $help, $name.clone());
                )*
                Metrics { registry, nodes: Mutex::default(), $($name,)* }
            }

        }
    };
}

declare_metrics! {
    fetch_requests: CounterFamily = Family::default(),
        "fetch-and-lock requests, by engine node and outcome";
    tasks_fetched: CounterFamily = Family::default(),
        "tasks locked by this worker, by engine node";
    tasks_completed: CounterFamily = Family::default(),
        "tasks completed (the engine answered 204, or its state proved it after a lost reply), by topic";
    tasks_failed: CounterFamily = Family::default(),
        "tasks reported to the engine as failed (/failure), by topic";
    tasks_dropped: CounterFamily = Family::default(),
        "tasks given up without a follow-up, by reason and topic";
    follow_ups_sent: CounterFamily = Family::default(),
        "follow-up messages delivered, by topic: correlated (204), or found delivered in the instance's state after a lost reply";
    follow_ups_already_delivered: Counter = Counter::default(),
        "the part of follow_ups_sent decided from the instance's state (the wait it was meant for is gone)";
    follow_ups_retried: Counter = Counter::default(),
        "follow-up attempts retried (instance not at the catch event yet, engine errors)";
    follow_ups_given_up: CounterFamily = Family::default(),
        "follow-up messages abandoned, by reason and topic; the reconciler may still recover them";
    follow_ups_recovered: CounterFamily = Family::default(),
        "waiting instances correlated by the reconciler, by topic";
    reconciler_passes: CounterFamily = Family::default(),
        "reconciler passes, by outcome";
    engine_stale_connection_retries: CounterFamily = Family::default(),
        "calls sent again at once because the server had closed the kept-alive connection";
    retry_budget_spent: Counter = Counter::default(),
        "engine requests made under the retry budget (retries, recoveries, incidents, diagnosis)";
    retry_budget_waiting: Gauge = Gauge::default(),
        "requests waiting for the retry budget (--retry-budget) right now";
    retry_budget_per_second: Gauge = Gauge::default(),
        "the configured retry budget, in requests per second";
    follow_ups_left_owed: Counter = Counter::default(),
        "follow-ups left owed in the engine at shutdown (the reconciler of any worker delivers them)";
    follow_ups_misdirected: Gauge = Gauge::default(),
        "1 once follow-ups found their instances waiting for a message of another name (a wrong --message-name)";
    follow_ups_misconfigured: Family<Labels, Gauge> = Family::default(),
        "1 while a route's follow-ups are diagnosed misconfigured, by cause and topic (cause message_name: no instance waits for the route's message, its instances wait for another name)";
    follow_up_incidents: Counter = Counter::default(),
        "incidents raised on waiting executions for follow-ups given up";
    follow_up_work_runs: CounterFamily = Family::default(),
        "runs of follow-up work (--follow-up-command or a library FollowUpWork), by outcome and topic";
    follow_up_work_running: Gauge = Gauge::default(),
        "follow-up works running right now (at most --follow-up-concurrency)";
    tasks_in_flight: Gauge = Gauge::default(),
        "tasks locked and not yet finished";
    max_tasks: Gauge = Gauge::default(),
        "the configured number of task slots (--max-tasks)";
    concurrency_limit: Gauge = Gauge::default(),
        "how many tasks may be in flight now: the adaptive limit, found from the engine's latency (at most --max-tasks; --max-tasks itself with --concurrency fixed)";
    follow_ups_pending: Gauge = Gauge::default(),
        "follow-ups in memory, not yet delivered or given up";
    follow_ups_capacity: Gauge = Gauge::default(),
        "the configured bound on pending follow-ups (--max-pending-follow-ups)";
    fetch_paused: Gauge = Gauge::default(),
        "1 while fetching waits because pending follow-ups are at capacity";
    engine_up: Family<Labels, Gauge> = Family::default(),
        "1 when the engine node answered its last call and accepted the credentials";
    fetch_backoff_seconds: Family<Labels, Gauge<f64, AtomicU64>> = Family::default(),
        "current backoff of a node's fetch loop (0 while polling normally)";
    last_successful_poll_timestamp_seconds: Gauge<f64, AtomicU64> = Gauge::default(),
        "unix time of the last successful fetch-and-lock (any node)";
    long_poll_seconds: Gauge<f64, AtomicU64> = Gauge::default(),
        "the configured long poll (--long-poll)";
    handler_duration_seconds: Histogram = Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        "time a handler spent on one task";
    engine_request_duration_seconds: Family<Labels, Histogram, fn() -> Histogram> =
        Family::new_with_constructor(request_histogram),
        "latency of engine REST calls, by endpoint and node";
    // Fetched → correlated is dominated by the correlation delay (2 s by default): steps of
    // ×1.5 from 50 ms place both a 0 s and a 2 s delay, and a retried minute.
    task_end_to_end_seconds: Histogram = Histogram::new(exponential_buckets(0.05, 1.5, 20)),
        "time from fetching a task to correlating its follow-up message";
    // How late a follow-up went out, against its due time: a millisecond when all is well,
    // seconds when message calls queue behind a slow engine.
    follow_up_delay_error_seconds: Histogram = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
        "how late a follow-up's delivery began, against the time it was due";
    log_lines_dropped: Counter = log_lines_dropped().clone(),
        "log lines dropped because stderr was closed or full (the log never blocks nor stops the worker)";
    trace_spans_exported: Counter = crate::traces::spans_exported().clone(),
        "spans the collector took (tracing on: OTEL_EXPORTER_OTLP_ENDPOINT)";
    trace_spans_dropped: CounterFamily = crate::traces::spans_dropped().clone(),
        "spans dropped instead of exported, by reason: queue_full (the collector has not taken the spans before), export_failed (down, too slow or refused); tracing never blocks nor slows the worker";
    background_tasks_died: CounterFamily = Family::default(),
        "background tasks (fetch loop, reconciler, discovery, listener) that ended before shutdown, by task; the worker then fails /healthz and exits non-zero";
}

/// The process-wide count of dropped log lines: the log writer is installed once per process,
/// before any [`Metrics`] exists, and every registry shows the same count.
pub fn log_lines_dropped() -> &'static Counter {
    static DROPPED: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    DROPPED.get_or_init(Counter::default)
}

/// Engine calls on a nearby engine take milliseconds; a long poll takes up to its timeout (45 s
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

/// The labels of a per-route series: the outcome's (if any), then the topic.
fn topic_labels<O: Outcome>(outcome: O, topic: &str) -> Labels {
    let mut labels = Vec::with_capacity(2);
    if !O::LABEL.is_empty() {
        labels.push(label(O::LABEL, outcome.label()));
    }
    labels.push(label("topic", topic));
    labels
}

/// The outcome of a per-route counter that has none besides its topic (`tasks_completed_total`).
#[derive(Debug, Clone, Copy)]
pub struct NoOutcome;

impl Outcome for NoOutcome {
    const ALL: &'static [Self] = &[NoOutcome];
    const LABEL: &'static str = "";
    fn label(self) -> &'static str {
        ""
    }
}

/// One label.
pub(crate) fn label(name: &'static str, value: impl Into<String>) -> (&'static str, String) {
    (name, value.into())
}

impl Metrics {
    /// Log lines dropped so far (stderr closed or full), as `/metrics` shows them.
    pub fn log_lines_dropped_so_far(&self) -> u64 {
        self.log_lines_dropped.get()
    }

    /// Spans the collector took so far.
    pub fn trace_spans_exported_so_far(&self) -> u64 {
        self.trace_spans_exported.get()
    }

    /// Spans dropped so far for `reason`.
    pub fn trace_spans_dropped_so_far(&self, reason: crate::traces::SpanDrop) -> u64 {
        let labels = vec![label("reason", reason.label())];
        self.trace_spans_dropped.get_or_create(&labels).get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Creates the series of `counter` for every value of `O` at zero.
    pub fn preset<O: Outcome>(&self, counter: &CounterFamily) {
        for outcome in O::ALL {
            let _ = counter.get_or_create(&vec![label(O::LABEL, outcome.label())]);
        }
    }

    /// Counts one `outcome` in `counter`.
    pub fn count<O: Outcome>(&self, counter: &CounterFamily, outcome: O) {
        counter
            .get_or_create(&vec![label(O::LABEL, outcome.label())])
            .inc();
    }

    /// Creates the series of a per-route `counter` for `topic` at zero: one for every value of
    /// `O`, or one alone for a counter without outcomes (`O` = [`NoOutcome`]).
    pub fn preset_topic<O: Outcome>(&self, counter: &CounterFamily, topic: &str) {
        for outcome in O::ALL {
            let _ = counter.get_or_create(&topic_labels(*outcome, topic));
        }
    }

    /// The series of a per-route `gauge` for `outcome` and `topic`, created at zero if new.
    pub fn topic_gauge<O: Outcome>(
        &self,
        gauge: &Family<Labels, Gauge>,
        outcome: O,
        topic: &str,
    ) -> Gauge {
        gauge.get_or_create(&topic_labels(outcome, topic)).clone()
    }

    /// Counts one `outcome` of a task or follow-up of `topic` in `counter`.
    pub fn count_topic<O: Outcome>(&self, counter: &CounterFamily, outcome: O, topic: &str) {
        counter.get_or_create(&topic_labels(outcome, topic)).inc();
    }

    fn node_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<(&'static str, Labels)>>> {
        // Single inserts and removes cannot leave the map inconsistent: a poisoned lock is usable.
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The label set `labels` + `node`, remembered under the node so that [`Metrics::remove_node`]
    /// finds it; `None` when the node is not (or no longer) known — a call that was under way
    /// when its node left must not bring the node's series back.
    fn node_labels(&self, family: &'static str, node: &str, mut labels: Labels) -> Option<Labels> {
        labels.push(label("node", node));
        labels.sort();
        let mut nodes = self.node_map();
        let series = nodes.get_mut(node)?;
        if !series.iter().any(|(f, l)| *f == family && *l == labels) {
            series.insert((family, labels.clone()));
        }
        Some(labels)
    }

    /// Starts the series of a node the worker now knows, at zero, so that its rates and
    /// `engine_up` exist from the start.
    pub fn add_node(&self, node: &str) {
        self.node_map().entry(node.to_owned()).or_default();
        if let Some(labels) = self.node_labels("tasks_fetched", node, Vec::new()) {
            let _ = self.tasks_fetched.get_or_create(&labels);
        }
        if let Some(labels) = self.node_labels("engine_stale_connection_retries", node, Vec::new())
        {
            let _ = self.engine_stale_connection_retries.get_or_create(&labels);
        }
        if let Some(labels) = self.node_labels("engine_up", node, Vec::new()) {
            let _ = self.engine_up.get_or_create(&labels);
        }
        if let Some(labels) = self.node_labels("fetch_backoff_seconds", node, Vec::new()) {
            let _ = self.fetch_backoff_seconds.get_or_create(&labels);
        }
    }

    /// Creates a node's fetch outcomes at zero (called by the node's fetch loop when it starts).
    pub fn preset_fetches<O: Outcome>(&self, node: &str) {
        for outcome in O::ALL {
            let labels = vec![label(O::LABEL, outcome.label())];
            if let Some(labels) = self.node_labels("fetch_requests", node, labels) {
                let _ = self.fetch_requests.get_or_create(&labels);
            }
        }
    }

    /// Forgets a node that left the cluster, with every series it had.
    pub fn remove_node(&self, node: &str) {
        let Some(series) = self.node_map().remove(node) else {
            return;
        };
        for (family, labels) in &series {
            // The node-labelled families, as `node_labels` names them.
            let _ = match *family {
                "fetch_requests" => self.fetch_requests.remove(labels),
                "tasks_fetched" => self.tasks_fetched.remove(labels),
                "engine_stale_connection_retries" => {
                    self.engine_stale_connection_retries.remove(labels)
                }
                "engine_up" => self.engine_up.remove(labels),
                "fetch_backoff_seconds" => self.fetch_backoff_seconds.remove(labels),
                _ => self.engine_request_duration_seconds.remove(labels),
            };
        }
    }

    /// Records a finished fetch-and-lock request of `node`.
    pub fn fetched<O: Outcome>(&self, node: &str, outcome: O, tasks: usize) {
        let labels = vec![label(O::LABEL, outcome.label())];
        if let Some(labels) = self.node_labels("fetch_requests", node, labels) {
            self.fetch_requests.get_or_create(&labels).inc();
        }
        if tasks > 0 {
            if let Some(labels) = self.node_labels("tasks_fetched", node, Vec::new()) {
                self.tasks_fetched
                    .get_or_create(&labels)
                    .inc_by(tasks as u64);
            }
        }
    }

    /// Records a fetch-and-lock that the engine answered (with tasks or without).
    pub fn polled_successfully(&self) {
        self.last_successful_poll_timestamp_seconds.set(unix_now());
    }

    /// Records the backoff a node's fetch loop is in (zero once it polls normally again).
    pub fn set_fetch_backoff(&self, node: &str, delay: Duration) {
        if let Some(labels) = self.node_labels("fetch_backoff_seconds", node, Vec::new()) {
            self.fetch_backoff_seconds
                .get_or_create(&labels)
                .set(delay.as_secs_f64());
        }
    }

    /// Records the configuration an alert compares against.
    pub fn set_config(&self, max_tasks: u32, long_poll: Duration, follow_up_capacity: usize) {
        self.max_tasks.set(i64::from(max_tasks));
        self.long_poll_seconds.set(long_poll.as_secs_f64());
        self.follow_ups_capacity
            .set(i64::try_from(follow_up_capacity).unwrap_or(i64::MAX));
    }

    /// Records a delivered follow-up and the task's time from fetch to correlation.
    /// `from_state` marks a delivery decided from the instance's state after a lost reply.
    pub fn follow_up_sent(&self, topic: &str, since_fetch: Option<Duration>, from_state: bool) {
        self.count_topic(&self.follow_ups_sent, NoOutcome, topic);
        if from_state {
            self.follow_ups_already_delivered.inc();
        }
        if let Some(elapsed) = since_fetch {
            self.task_end_to_end_seconds.observe(elapsed.as_secs_f64());
        }
    }

    /// Records a call sent again because its kept-alive connection had been closed.
    pub fn stale_connection_retried(&self, node: &str) {
        if let Some(labels) = self.node_labels("engine_stale_connection_retries", node, Vec::new())
        {
            self.engine_stale_connection_retries
                .get_or_create(&labels)
                .inc();
        }
    }

    /// Records the latency of one engine call (`endpoint` is the call's label).
    pub fn observe_engine_request(&self, endpoint: &'static str, node: &str, elapsed: Duration) {
        let labels = vec![label("endpoint", endpoint)];
        if let Some(labels) = self.node_labels("engine_request_duration_seconds", node, labels) {
            self.engine_request_duration_seconds
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Records whether a node answered its last call and accepted the credentials.
    pub fn set_engine_up(&self, node: &str, up: bool) {
        if let Some(labels) = self.node_labels("engine_up", node, Vec::new()) {
            self.engine_up.get_or_create(&labels).set(i64::from(up));
        }
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

    #[derive(Clone, Copy)]
    enum Fetch {
        Tasks,
        Error,
    }

    impl Outcome for Fetch {
        const ALL: &'static [Self] = &[Fetch::Tasks, Fetch::Error];
        const LABEL: &'static str = "outcome";
        fn label(self) -> &'static str {
            match self {
                Fetch::Tasks => "tasks",
                Fetch::Error => "error",
            }
        }
    }

    #[test]
    fn the_exposition_carries_prefixed_names_and_labels() {
        let metrics = Metrics::new();
        let node = "http://e1/engine-rest";
        metrics.add_node(node);
        metrics.preset_fetches::<Fetch>(node);
        metrics.fetched(node, Fetch::Tasks, 3);
        metrics.preset_topic::<Fetch>(&metrics.tasks_dropped, "b");
        metrics.count_topic(&metrics.tasks_completed, NoOutcome, "a");
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
        assert!(text.contains("camunda_worker_tasks_completed_total{topic=\"a\"} 1"));
        assert!(
            text.contains("camunda_worker_tasks_dropped_total{outcome=\"error\",topic=\"b\"} 0"),
            "a per-route outcome carries its label, then the topic: {text}"
        );
        assert!(text.contains(&format!(
            "camunda_worker_engine_request_duration_seconds_count{{endpoint=\"complete\",node=\"{node}\"}} 1"
        )));
    }

    #[test]
    fn a_removed_node_leaves_no_series_and_cannot_bring_them_back() {
        let metrics = Metrics::new();
        metrics.add_node("a");
        metrics.add_node("b");
        metrics.preset_fetches::<Fetch>("b");
        metrics.observe_engine_request("message", "b", Duration::from_millis(1));
        metrics.set_engine_up("b", true);
        metrics.remove_node("b");
        metrics.observe_engine_request("message", "b", Duration::from_millis(1));
        let text = metrics.render();
        assert!(!text.contains("node=\"b\""), "{text}");
        assert!(text.contains("node=\"a\""), "{text}");
    }
}
