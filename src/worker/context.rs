//! What the fetch loop and the tasks it starts share: the settings, the stop tokens, and one
//! [`WorkerContext`] behind an `Arc` holding the client, the handler, the admission control and
//! the set of tasks in flight.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::Admission;
use crate::correlation::FollowUps;
use crate::engine::{EngineClient, FetchFilter, Sorting};
use crate::health::Liveness;
use crate::metrics::Metrics;

/// How the worker fetches and handles tasks.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Who takes the locks. Must differ between replicas: the engine only compares worker ids,
    /// so two workers with one id complete each other's tasks.
    pub worker_id: String,
    /// The topics to serve, each with its lock duration: one fetch asks for all of them. Never
    /// empty (the configuration checks it; [`WorkerSettings::subscription_of`] relies on it).
    pub subscriptions: Vec<Subscription>,
    /// How long the engine may park a fetch when no task is available (at most 30 min).
    pub long_poll: Duration,
    /// Tasks in flight at once, over all engine nodes; also the most a single fetch asks for.
    /// With `adaptive_concurrency`, the ceiling of the limit.
    pub max_tasks: u32,
    /// Whether the number of tasks in flight finds its own level from the engine's latency, up
    /// to `max_tasks` (`--concurrency adaptive`), or is `max_tasks` always (`fixed`).
    pub adaptive_concurrency: bool,
    /// Retries reported on a task's first failure (then the task's own count − 1).
    pub retries: i32,
    /// How long the engine waits before handing a failed task out again.
    pub retry_timeout: Duration,
    /// Cap of the backoff while the engine is unavailable.
    pub max_backoff: Duration,
    /// Shortest time between two polls that come back empty (`--min-poll-interval`); zero = off.
    pub min_poll_interval: Duration,
    /// Whether a fetch hands out high-priority tasks first (`--use-priority`): worker-wide,
    /// because the engine takes it once per fetch, not per topic.
    pub use_priority: bool,
    /// The order of creation a fetch hands tasks out in (`--sorting`); empty: the engine's.
    pub sorting: Vec<Sorting>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            worker_id: generated_worker_id(),
            subscriptions: vec![Subscription::new("messageSending")],
            long_poll: Duration::from_secs(45),
            max_tasks: 64,
            adaptive_concurrency: true,
            retries: 3,
            retry_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            min_poll_interval: Duration::from_secs(1),
            use_priority: true,
            sorting: Vec::new(),
        }
    }
}

/// One topic the worker serves, and how long its tasks stay locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topic name.
    pub topic: String,
    /// How long a fetched task stays locked; longer-running handlers get it extended.
    pub lock_duration: Duration,
    /// Which of the topic's tasks the fetch may hand out (tenants, definitions, ...).
    pub filter: FetchFilter,
}

impl Subscription {
    /// `topic`, locked for the default minute.
    pub fn new(topic: impl Into<String>) -> Self {
        Subscription {
            topic: topic.into(),
            lock_duration: Duration::from_secs(60),
            filter: FetchFilter::default(),
        }
    }
}

impl WorkerSettings {
    /// The subscription a fetched task came from: by its topic, or the first one when the engine
    /// did not say (or names a topic not asked for, which it does not do).
    pub fn subscription_of(&self, task: &crate::engine::ExternalTask) -> &Subscription {
        let named = task
            .topic_name
            .as_deref()
            .and_then(|topic| self.subscriptions.iter().find(|s| s.topic == topic));
        named.unwrap_or_else(|| &self.subscriptions[0])
    }

    /// The topics, comma-separated, for log lines.
    pub fn topics(&self) -> String {
        let names: Vec<&str> = self
            .subscriptions
            .iter()
            .map(|s| s.topic.as_str())
            .collect();
        names.join(",")
    }
}

/// A worker id unique to this process: the host name (the pod name in Kubernetes) and a random
/// suffix. Never a constant: replicas sharing an id would complete each other's tasks.
pub fn generated_worker_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = if host.is_empty() {
        "camunda-worker".to_owned()
    } else {
        host
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

/// The tokens that stop a worker: `shutdown` ends fetching (and hurries follow-ups), `abort`
/// ends what is still running once the grace period is over.
#[derive(Debug, Clone, Default)]
pub struct StopTokens {
    /// Stop fetching; let running work finish.
    pub shutdown: CancellationToken,
    /// Stop everything now.
    pub abort: CancellationToken,
}

/// What the daemon hands every part of the worker: the metrics, the liveness facts, the task
/// tracker that one shutdown wait drains, and the stop tokens.
#[derive(Debug, Clone)]
pub struct DaemonHandles {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// What the fetch loop tells the health probes and the reconciler.
    pub liveness: Arc<Liveness>,
    /// Where tasks and follow-ups run; shutdown waits for it.
    pub tracker: TaskTracker,
    /// When to stop.
    pub stop: StopTokens,
}

/// Everything the fetch loop and the tasks it starts share, behind one `Arc`.
pub(crate) struct WorkerContext<H> {
    pub(crate) client: EngineClient,
    pub(crate) handler: H,
    pub(crate) settings: WorkerSettings,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) liveness: Arc<Liveness>,
    pub(crate) follow_ups: FollowUps,
    pub(crate) tracker: TaskTracker,
    pub(crate) stop: StopTokens,
    /// Which tasks may be fetched: slots and room for follow-ups.
    pub(crate) admission: Admission,
    /// Ids of the tasks in flight: the shutdown sweep must not unlock these.
    in_flight: Mutex<HashSet<String>>,
    /// Long polls left parked on the engine at shutdown, and until when the engine may still
    /// lock tasks through them (it does not notice that the client went away).
    abandoned_polls: Mutex<Vec<Instant>>,
}

impl<H> WorkerContext<H> {
    pub(crate) fn new(
        client: EngineClient,
        handler: H,
        settings: WorkerSettings,
        shared: DaemonHandles,
        follow_ups: FollowUps,
    ) -> Self {
        let DaemonHandles {
            metrics,
            liveness,
            tracker,
            stop,
        } = shared;
        let admission = Admission::new(
            settings.max_tasks as usize,
            settings.adaptive_concurrency,
            follow_ups.room(),
            follow_ups.policy().capacity,
        );
        WorkerContext {
            client,
            handler,
            settings,
            metrics,
            liveness,
            follow_ups,
            tracker,
            stop,
            admission,
            in_flight: Mutex::default(),
            abandoned_polls: Mutex::default(),
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // Single inserts and removes cannot leave the set inconsistent.
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that this task is being handled now.
    pub(crate) fn started(&self, task_id: &str) {
        self.in_flight().insert(task_id.to_owned());
    }

    /// Whether this task is being handled right now.
    pub(crate) fn is_in_flight(&self, task_id: &str) -> bool {
        self.in_flight().contains(task_id)
    }

    /// Records that this task's handling ended.
    pub(crate) fn finished(&self, task_id: &str) {
        self.in_flight().remove(task_id);
    }

    /// Records a long poll left parked on the engine at shutdown, able to lock tasks until `until`.
    pub(crate) fn abandoned(&self, until: Instant) {
        self.abandoned_polls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(until);
    }

    /// Until when the engine may still lock tasks for this worker through a long poll left
    /// parked at shutdown; `None` when every poll ended.
    pub(crate) fn abandoned_poll_until(&self) -> Option<Instant> {
        self.abandoned_polls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .max()
            .copied()
    }
}
