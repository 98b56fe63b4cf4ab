//! The delayed follow-up: after a task is completed, tell its process instance — waiting at a
//! message catch event — that the work is done, by correlating a message. Exactly once, whatever
//! the network does, because the engine keeps the ledger (see [`crate::ledger`]).
//!
//! The task's `complete` set the instance's marker to "owed for this task". The message names
//! that owed value in its `correlationKeys` and turns it into "delivered" in the same transaction,
//! so it can match only once. Camunda 7 does not buffer messages: a message that arrives before
//! the instance reaches the catch event is refused as a mismatch, and so is a message whose
//! marker was flipped already. A mismatch is decided by one read of the marker (at the first
//! mismatch, after an attempt whose reply was lost, and then every fourth): still owed to us → not
//! waiting yet, retry with backoff up to `correlation_timeout`; delivered for this task → it
//! arrived (after a lost reply, or from another replica); anything else → the instance moved on.
//! A read that finds the marker still ours also triggers the route's diagnosis (see
//! [`diagnosis`]): when no instance waits for the route's message at all, one ERROR says what they
//! wait for instead — at the first such mismatch, however many follow-ups are pending.
//!
//! Pending follow-ups are bounded: each holds one unit of `capacity`, which the fetch loop must
//! take before it locks a task, so undeliverable messages make the worker stop fetching instead of
//! growing without end; and every request that is not a first attempt spends the worker-wide
//! [`RetryBudget`], so they cannot flood the engine either. A follow-up given up raises an
//! incident on the waiting execution (Cockpit shows why) and stays owed in the engine: the
//! reconciler tries it again on a long backoff, and resolves the incident once it is delivered.
//!
//! A follow-up may do work first (see [`crate::work`]): the work runs after the completion, with
//! retries, and the message carries its result; while it runs the worker renews a lease (a
//! variable beside the marker that no message names), so that no other replica runs it too. Work that fails for good raises an incident and
//! sends no message.
//!
//! On shutdown, follow-ups still in their delay are sent at once; those that do not go through
//! (and those already retrying) stay owed in the engine, counted in one line, for the reconciler
//! of any worker.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::SpanContext;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

mod calls;
mod deliver;
mod diagnosis;
#[cfg(test)]
pub(crate) mod fake;
mod give_up;
mod lease_cell;
mod message;
mod policy;
mod recover;
mod target;
mod work_phase;

use diagnosis::Misconfiguration;
use lease_cell::LeaseCell;
pub use message::FollowUpMessage;
pub use policy::{CorrelationPolicy, DEFAULT_CAPACITY, DEFAULT_WORK_CONCURRENCY};
pub use recover::Recovery;
pub use target::{CorrelateBy, CorrelationTarget};

use crate::budget::RetryBudget;
use crate::engine::EngineClient;
use crate::ledger::Marker;
use crate::metrics::{Metrics, NoOutcome, Outcome};
use crate::traces;
use crate::variables::{TypedValue, Variables};
use crate::work::{CompletedTask, Delay, DynWork};

/// Extra time, beyond the correlation delay, before an owed follow-up is the reconciler's to
/// deliver: the live follow-up's first attempt goes out well before.
pub const RECOVERY_GRACE: Duration = Duration::from_secs(10);

/// How long a follow-up given up waits before the reconciler of the worker that gave it up tries
/// it again (other replicas' reconcilers may try earlier, each within its own backoff).
pub const RETRY_GIVEN_UP_AFTER: Duration = Duration::from_secs(600);

/// Delivery attempts (a message call and maybe a marker read) in flight at once. Follow-ups are
/// not bounded by `--max-tasks` (a task's slot is freed at completion), so after a backlog
/// thousands can fall due together; without this bound each would open its own connection.
const MAX_CONCURRENT_SENDS: usize = 32;

/// One follow-up to deliver.
#[derive(Debug, Clone)]
pub struct FollowUp {
    /// Where the message goes.
    pub target: CorrelationTarget,
    /// The task's process instance, known even when correlating by business key: where the
    /// marker is read, and what log lines refer to.
    pub process_instance_id: Option<String>,
    /// The owed marker the task's `complete` set (see [`crate::ledger`]): what its message names.
    pub marker: Marker,
    /// The lease a reconciler wrote when it claimed the follow-up to run its work again; `None`
    /// for a live follow-up (the marker's due time is its first lease).
    pub lease: Option<Marker>,
    /// What the work gets to know of the task.
    pub task: CompletedTask,
    /// When the task was fetched, for the end-to-end metric.
    pub fetched_at: Option<Instant>,
    /// When the task was completed: the message goes no earlier than the delay after it.
    pub completed_at: Instant,
    /// Whether a reconciler runs it again (an incident raised earlier is resolved once it is
    /// delivered).
    pub recovered: bool,
    /// The task's span in its trace, when traces are on: the follow-up's span is its child.
    /// `None` for a recovered follow-up, which starts a trace of its own (no trace context is
    /// stored in the engine).
    pub trace_parent: Option<SpanContext>,
}

/// A follow-up's span: in the log, a root of its own (its lines name the task); in its trace,
/// the child of its task's span when that is known.
fn follow_up_span(follow_up: &FollowUp, task_id: &str) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "follow_up",
        target = %follow_up.target,
        process_instance_id = follow_up.process_instance_id.as_deref().unwrap_or(""),
        task_id = %task_id,
        outcome = tracing::field::Empty,
    );
    traces::set_parent(&span, follow_up.trace_parent.as_ref());
    span
}

/// How a follow-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The engine correlated the message (204).
    Sent,
    /// The marker shows the follow-up delivered (after a lost reply, or by another replica), or
    /// the instance has moved on without it.
    AlreadyDelivered,
    /// Given up (it stays owed in the engine); logged with the target.
    GivenUp(GiveUpReason),
}

/// Why a follow-up was given up: the `reason` of `follow_ups_given_up_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// Not delivered within `--correlation-timeout` (the instance did not reach the catch event,
    /// or the engine kept failing).
    Timeout,
    /// Several executions wait under the same business key.
    Ambiguous,
    /// The engine refused the message for another reason (a 4xx that no retry can fix).
    Refused,
    /// Shutdown came first; the follow-up stays owed for the reconciler of any worker.
    Shutdown,
    /// The work failed for good (an incident says why); no message was sent.
    WorkFailed,
}

impl Outcome for GiveUpReason {
    const ALL: &'static [Self] = &[
        GiveUpReason::Timeout,
        GiveUpReason::Ambiguous,
        GiveUpReason::Refused,
        GiveUpReason::Shutdown,
        GiveUpReason::WorkFailed,
    ];
    const LABEL: &'static str = "reason";
    fn label(self) -> &'static str {
        match self {
            GiveUpReason::Timeout => "timeout",
            GiveUpReason::Ambiguous => "ambiguous",
            GiveUpReason::Refused => "refused",
            GiveUpReason::Shutdown => "shutdown",
            GiveUpReason::WorkFailed => "work_failed",
        }
    }
}

/// The shutdown's tally of follow-ups left owed in the engine.
#[derive(Debug, Default)]
struct LeftOwed {
    count: usize,
    example: Option<String>,
}

/// Schedules and delivers follow-up messages. Cheap to clone; all clones share one task tracker,
/// one capacity, one retry budget and one set of pending tasks.
///
/// Every route of a daemon (one, or the file's `[[route]]` tables) is added alike
/// ([`FollowUps::add_route`]) with its message and its work; each route's view
/// ([`FollowUps::for_topic`]) shares everything else, so the policy — the capacity, the budget
/// and the bound on running works — stays worker-wide.
#[derive(Debug, Clone)]
pub struct FollowUps {
    inner: Arc<WorkerWide>,
    route: Arc<RouteDelivery>,
}

/// What one route's follow-ups do on their own: send its message, after its work.
#[derive(Debug)]
struct RouteDelivery {
    message: FollowUpMessage,
    work: Arc<dyn DynWork>,
    /// Whether its message is awaited at all (see [`diagnosis`]).
    diagnosis: diagnosis::Diagnosis,
}

impl RouteDelivery {
    fn new(message: FollowUpMessage, work: Arc<dyn DynWork>) -> Arc<Self> {
        Arc::new(RouteDelivery {
            message,
            work,
            diagnosis: diagnosis::Diagnosis::default(),
        })
    }
}

/// What every route's follow-ups share: the policy, the engine, the bounds and the registries of
/// pending and given-up tasks.
#[derive(Debug)]
struct WorkerWide {
    policy: CorrelationPolicy,
    client: EngineClient,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    budget: RetryBudget,
    /// Cancelled when shutdown begins: stop waiting out delays, send now.
    hurry: CancellationToken,
    /// Cancelled when the shutdown grace ends: stop retrying.
    abort: CancellationToken,
    /// Tasks with a follow-up in memory, which the reconciler leaves alone.
    pending: Mutex<HashSet<String>>,
    /// Tasks given up here, and when this worker's reconciler may try them again.
    given_up: Mutex<HashMap<String, Instant>>,
    /// Bounds the delivery attempts in flight (see [`MAX_CONCURRENT_SENDS`]).
    sends: Semaphore,
    /// Room for pending follow-ups: `policy.capacity` permits.
    room: Arc<Semaphore>,
    left_owed: Mutex<LeftOwed>,
    /// Bounds the works running at once (`policy.work_concurrency`).
    work_slots: Semaphore,
    /// The routes by topic; a topic not named here takes the default message and no work.
    routes: Mutex<HashMap<String, Arc<RouteDelivery>>>,
}

/// Locks a mutex whose holders only insert, remove or count: a poisoned one is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl FollowUps {
    /// A scheduler under `policy` whose follow-ups run on `tracker`, hurry when `hurry` is
    /// cancelled and stop when `abort` is. It has no route yet: until [`FollowUps::add_route`]
    /// names a topic, that topic's follow-ups send the default [`FollowUpMessage`] and do no work.
    pub fn new(
        client: EngineClient,
        metrics: Arc<Metrics>,
        policy: CorrelationPolicy,
        tracker: TaskTracker,
        hurry: CancellationToken,
        abort: CancellationToken,
    ) -> Self {
        let room = Arc::new(Semaphore::new(policy.capacity));
        let work_slots = Semaphore::new(policy.work_concurrency.max(1));
        metrics
            .retry_budget_per_second
            .set(i64::from(policy.retry_budget));
        FollowUps {
            inner: Arc::new(WorkerWide {
                budget: RetryBudget::new(policy.retry_budget),
                policy,
                client,
                metrics,
                tracker,
                hurry,
                abort,
                pending: Mutex::default(),
                given_up: Mutex::default(),
                sends: Semaphore::new(MAX_CONCURRENT_SENDS),
                room,
                left_owed: Mutex::default(),
                work_slots,
                routes: Mutex::default(),
            }),
            route: RouteDelivery::new(FollowUpMessage::default(), Arc::new(Delay)),
        }
    }

    /// Adds a route: the follow-ups of `topic`'s tasks do `work`, then send `message`.
    pub fn add_route(&self, topic: &str, message: FollowUpMessage, work: Arc<dyn DynWork>) {
        lock(&self.inner.routes).insert(topic.to_owned(), RouteDelivery::new(message, work));
    }

    /// The follow-ups of `topic`'s tasks: its route's, or (a topic no route names) the default
    /// message with no work.
    pub fn for_topic(&self, topic: &str) -> FollowUps {
        let route = lock(&self.inner.routes).get(topic).cloned();
        FollowUps {
            inner: Arc::clone(&self.inner),
            route: route.unwrap_or_else(|| Arc::clone(&self.route)),
        }
    }

    /// Creates `topic`'s per-route series at zero, so that rates and alerts work from the start.
    pub fn preset_topic(&self, topic: &str) {
        let metrics = &self.inner.metrics;
        metrics.preset_topic::<GiveUpReason>(&metrics.follow_ups_given_up, topic);
        metrics.preset_topic::<work_phase::WorkOutcome>(&metrics.follow_up_work_runs, topic);
        metrics.preset_topic::<NoOutcome>(&metrics.follow_ups_sent, topic);
        metrics.preset_topic::<NoOutcome>(&metrics.follow_ups_recovered, topic);
        for cause in Misconfiguration::ALL {
            metrics.topic_gauge(&metrics.follow_ups_misconfigured, *cause, topic);
        }
    }

    /// The worker-wide delivery policy.
    pub fn policy(&self) -> &CorrelationPolicy {
        &self.inner.policy
    }

    /// The message this route's follow-ups send.
    pub fn message(&self) -> &FollowUpMessage {
        &self.route.message
    }

    /// The room for pending follow-ups. The fetch loop takes one permit per task before locking
    /// it; the task hands it to its follow-up, which holds it until delivered or given up.
    pub fn room(&self) -> Arc<Semaphore> {
        Arc::clone(&self.inner.room)
    }

    /// The work the follow-ups do.
    pub fn work(&self) -> &dyn DynWork {
        self.route.work.as_ref()
    }

    /// The owed marker a task's `complete` sets, due for the reconciler after the delay and
    /// [`RECOVERY_GRACE`] — or, when there is work, once its lease runs out unrenewed.
    pub fn owed_marker(&self, topic: &str, task_id: &str) -> Marker {
        Marker::owed(topic, task_id, self.recovery_due())
    }

    /// How long after it is written a marker is the reconcilers' to deliver.
    fn recovery_due(&self) -> Duration {
        if self.route.work.is_work() {
            self.inner.policy.lease
        } else {
            self.route.message.delay + RECOVERY_GRACE
        }
    }

    /// The marker variable as `complete` sets it.
    pub fn marker_variables(&self, marker: &Marker) -> Variables {
        Variables::from([(
            self.inner.policy.marker_variable.clone(),
            TypedValue::string(marker.to_string()),
        )])
    }

    /// Marks the follow-up of this task as in this worker's hands while its `complete` is being
    /// settled, so that the reconciler leaves its marker alone; [`FollowUps::schedule`] takes it
    /// over, or [`FollowUps::release`] gives it up when the task was not completed.
    pub fn hold(&self, task_id: &str) {
        lock(&self.inner.pending).insert(task_id.to_owned());
    }

    /// Ends a [`FollowUps::hold`] whose task was not completed.
    pub fn release(&self, task_id: &str) {
        lock(&self.inner.pending).remove(task_id);
    }

    /// Whether a follow-up for this task is in memory, or was given up here so recently that the
    /// reconciler should not try it yet.
    pub fn is_pending(&self, task_id: &str) -> bool {
        if lock(&self.inner.pending).contains(task_id) {
            return true;
        }
        let mut given_up = lock(&self.inner.given_up);
        match given_up.get(task_id) {
            Some(after) if Instant::now() < *after => true,
            Some(_) => {
                given_up.remove(task_id);
                false
            }
            None => false,
        }
    }

    /// Spends one request of the worker-wide retry budget.
    pub async fn spend_budget(&self) {
        self.inner.budget.spend(&self.inner.metrics).await;
    }

    /// Schedules the follow-up: its work, if any, then its message, no earlier than the delay
    /// after the completion (at once if shutdown has begun). `room` is the unit of capacity this
    /// follow-up occupies until it is done.
    pub fn schedule(&self, follow_up: FollowUp, room: Option<OwnedSemaphorePermit>) {
        let task_id = follow_up.marker.task_id().to_owned();
        lock(&self.inner.pending).insert(task_id.clone());
        self.inner.metrics.follow_ups_pending.inc();
        let this = self.clone();
        let due = self.due(&follow_up);
        // While it waits out its delay, a follow-up is this small task; the delivery's state (its
        // HTTP calls, its span) is only allocated when it is due. Measured: a pending follow-up
        // held inline cost about 8 KB, so a few hundred pending ones were most of the heap.
        self.inner.tracker.spawn(async move {
            let has_work = this.route.work.is_work();
            // With traces on, the span is there from the start, so that the trace shows the wait.
            let early = traces::enabled().then(|| follow_up_span(&follow_up, &task_id));
            if !has_work {
                let waiting = early.clone().unwrap_or_else(tracing::Span::none);
                this.wait_until_due(due).instrument(waiting).await;
            }
            let span = early.unwrap_or_else(|| follow_up_span(&follow_up, &task_id));
            let delivery = if has_work {
                Box::pin(
                    this.work_then_deliver(&follow_up, due)
                        .instrument(span.clone()),
                )
                .await
            } else {
                let none = Variables::new();
                let delivery = this.deliver_due(&follow_up, &none, Some(due));
                Box::pin(delivery.instrument(span.clone())).await
            };
            span.record("outcome", tracing::field::debug(&delivery));
            lock(&this.inner.pending).remove(&task_id);
            this.inner.metrics.follow_ups_pending.dec();
            drop(room);
        });
    }

    /// Sends the message now (no work), retrying as the policy says.
    pub async fn deliver(&self, follow_up: &FollowUp) -> Delivery {
        self.deliver_due(follow_up, &Variables::new(), None).await
    }
}
