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
//!
//! Pending follow-ups are bounded: each holds one unit of `capacity`, which the fetch loop must
//! take before it locks a task, so undeliverable messages make the worker stop fetching instead of
//! growing without end; and every request that is not a first attempt spends the worker-wide
//! [`RetryBudget`], so they cannot flood the engine either. A follow-up given up raises an
//! incident on the waiting execution (Cockpit shows why) and stays owed in the engine: the
//! reconciler tries it again on a long backoff, and resolves the incident once it is delivered.
//!
//! On shutdown, follow-ups still in their delay are sent at once; those that do not go through
//! (and those already retrying) stay owed in the engine, counted in one line, for the reconciler
//! of any worker.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

mod give_up;
mod target;

pub use target::{CorrelateBy, CorrelationTarget};

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::engine::{CorrelateMessageRequest, EngineClient, EngineError, Mismatch};
use crate::ledger::Marker;
use crate::metrics::{Metrics, Outcome};
use crate::variables::{TypedValue, Variables};

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
    /// The owed marker the task's `complete` set (see [`crate::ledger`]).
    pub marker: Marker,
    /// When the task was fetched, for the end-to-end metric.
    pub fetched_at: Option<Instant>,
}

/// The policy of follow-up delivery.
#[derive(Debug, Clone)]
pub struct CorrelationSettings {
    /// The message name (`sample_response`).
    pub message_name: String,
    /// How long after completion the message is sent.
    pub delay: Duration,
    /// How long a message that finds no waiting instance is retried.
    pub timeout: Duration,
    /// Cap of the retry backoff.
    pub max_backoff: Duration,
    /// Follow-ups (and tasks that may produce one) held in memory at once; when they are all
    /// taken, fetching waits.
    pub capacity: usize,
    /// The name of the marker variable (`--marker-variable`).
    pub marker_variable: String,
    /// Requests per second a worker may spend on retries (`--retry-budget`).
    pub retry_budget: u32,
}

/// The default of `--max-pending-follow-ups`: a few thousand. At the correlation delay of 2 s a
/// worker that completes 100 tasks a second holds 200; the rest is headroom for instances that are
/// slow to reach the catch event. When every follow-up is undeliverable, memory stays bounded by
/// this many follow-ups (about a kilobyte each).
pub const DEFAULT_CAPACITY: usize = 4096;

impl Default for CorrelationSettings {
    fn default() -> Self {
        CorrelationSettings {
            message_name: "sample_response".to_owned(),
            delay: Duration::from_secs(2),
            timeout: Duration::from_secs(300),
            max_backoff: Duration::from_secs(30),
            capacity: DEFAULT_CAPACITY,
            marker_variable: crate::ledger::DEFAULT_MARKER_VARIABLE.to_owned(),
            retry_budget: crate::budget::DEFAULT_RETRY_BUDGET,
        }
    }
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
}

impl Outcome for GiveUpReason {
    const ALL: &'static [Self] = &[
        GiveUpReason::Timeout,
        GiveUpReason::Ambiguous,
        GiveUpReason::Refused,
        GiveUpReason::Shutdown,
    ];
    const LABEL: &'static str = "reason";
    fn label(self) -> &'static str {
        match self {
            GiveUpReason::Timeout => "timeout",
            GiveUpReason::Ambiguous => "ambiguous",
            GiveUpReason::Refused => "refused",
            GiveUpReason::Shutdown => "shutdown",
        }
    }
}

/// What one delivery attempt found.
#[derive(Debug)]
enum Attempt {
    /// The engine correlated the message.
    Delivered,
    /// The marker says it was delivered, or the instance moved on.
    DeliveredEarlier(&'static str),
    /// The instance does not wait for the message (yet).
    NotWaiting,
    /// Several executions wait under the business key.
    Ambiguous(EngineError),
    /// The engine refused the message for good.
    Refused(EngineError),
    /// The engine is unreachable, overloaded or lost the reply: try again later.
    EngineTrouble(EngineError),
}

/// What a follow-up carries from one attempt to the next.
#[derive(Debug, Default)]
struct Progress {
    /// Attempts made; all but the first spend the retry budget.
    attempts: u32,
    /// Mismatches seen.
    mismatches: u32,
    /// Whether an earlier attempt may have gone through unseen (its reply was lost).
    maybe_delivered: bool,
}

/// The shutdown's tally of follow-ups left owed in the engine.
#[derive(Debug, Default)]
struct LeftOwed {
    count: usize,
    example: Option<String>,
}

/// Schedules and delivers follow-up messages. Cheap to clone; all clones share one task tracker,
/// one capacity, one retry budget and one set of pending tasks.
#[derive(Debug, Clone)]
pub struct FollowUps {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    client: EngineClient,
    metrics: Arc<Metrics>,
    settings: CorrelationSettings,
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
    /// Room for pending follow-ups: `settings.capacity` permits.
    room: Arc<Semaphore>,
    /// Whether the "instances wait for another message" diagnosis was logged.
    diagnosed: AtomicBool,
    left_owed: Mutex<LeftOwed>,
}

/// Locks a mutex whose holders only insert, remove or count: a poisoned one is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl FollowUps {
    /// A scheduler whose follow-ups run on `tracker`, hurry when `hurry` is cancelled and stop
    /// when `abort` is.
    pub fn new(
        client: EngineClient,
        metrics: Arc<Metrics>,
        settings: CorrelationSettings,
        tracker: TaskTracker,
        hurry: CancellationToken,
        abort: CancellationToken,
    ) -> Self {
        let room = Arc::new(Semaphore::new(settings.capacity));
        metrics.preset::<GiveUpReason>(&metrics.follow_ups_given_up);
        metrics
            .retry_budget_per_second
            .set(i64::from(settings.retry_budget));
        FollowUps {
            inner: Arc::new(Shared {
                client,
                metrics,
                budget: RetryBudget::new(settings.retry_budget),
                settings,
                tracker,
                hurry,
                abort,
                pending: Mutex::default(),
                given_up: Mutex::default(),
                sends: Semaphore::new(MAX_CONCURRENT_SENDS),
                room,
                diagnosed: AtomicBool::new(false),
                left_owed: Mutex::default(),
            }),
        }
    }

    /// The delivery policy.
    pub fn settings(&self) -> &CorrelationSettings {
        &self.inner.settings
    }

    /// The room for pending follow-ups. The fetch loop takes one permit per task before locking
    /// it; the task hands it to its follow-up, which holds it until delivered or given up.
    pub fn room(&self) -> Arc<Semaphore> {
        Arc::clone(&self.inner.room)
    }

    /// The owed marker a task's `complete` sets, due for the reconciler after the delay and
    /// [`RECOVERY_GRACE`].
    pub fn owed_marker(&self, topic: &str, task_id: &str) -> Marker {
        Marker::owed(topic, task_id, self.inner.settings.delay + RECOVERY_GRACE)
    }

    /// The marker variable as `complete` sets it.
    pub fn marker_variables(&self, marker: &Marker) -> Variables {
        Variables::from([(
            self.inner.settings.marker_variable.clone(),
            TypedValue::string(marker.to_string()),
        )])
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

    /// Schedules delivery after the configured delay (at once if shutdown has begun). `room` is
    /// the unit of capacity this follow-up occupies until it is done.
    pub fn schedule(&self, follow_up: FollowUp, room: Option<OwnedSemaphorePermit>) {
        let task_id = follow_up.marker.task_id().to_owned();
        lock(&self.inner.pending).insert(task_id.clone());
        self.inner.metrics.follow_ups_pending.inc();
        let this = self.clone();
        let due = Instant::now() + self.inner.settings.delay;
        // While it waits out its delay, a follow-up is this small task; the delivery's state (its
        // HTTP calls, its span) is only allocated when it is due. Measured: a pending follow-up
        // held inline cost about 8 KB, so a few hundred pending ones were most of the heap.
        self.inner.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = this.inner.hurry.cancelled() => {}
            }
            let span = tracing::info_span!(
                parent: None,
                "follow_up",
                target = %follow_up.target,
                process_instance_id = follow_up.process_instance_id.as_deref().unwrap_or(""),
                task_id = %task_id,
            );
            Box::pin(this.deliver_due(&follow_up, Some(due)).instrument(span)).await;
            lock(&this.inner.pending).remove(&task_id);
            this.inner.metrics.follow_ups_pending.dec();
            drop(room);
        });
    }

    /// Sends the message now, retrying as the policy says.
    pub async fn deliver(&self, follow_up: &FollowUp) -> Delivery {
        self.deliver_due(follow_up, None).await
    }

    /// The message that delivers `marker` to `process_instance_id` (and `business_key`, the
    /// original script's shape): matches only while the marker is owed, and flips it.
    pub fn message_for(
        &self,
        marker: &Marker,
        business_key: Option<String>,
        process_instance_id: Option<String>,
    ) -> CorrelateMessageRequest {
        let name = &self.inner.settings.marker_variable;
        CorrelateMessageRequest {
            message_name: self.inner.settings.message_name.clone(),
            business_key,
            process_instance_id,
            correlation_keys: Variables::from([(
                name.clone(),
                TypedValue::string(marker.to_string()),
            )]),
            process_variables: Variables::from([(
                name.clone(),
                TypedValue::string(marker.delivered().to_string()),
            )]),
        }
    }

    async fn deliver_due(&self, follow_up: &FollowUp, due: Option<Instant>) -> Delivery {
        let settings = &self.inner.settings;
        let request = self.message_for(
            &follow_up.marker,
            follow_up.target.business_key.clone(),
            follow_up.target.process_instance_id.clone(),
        );
        let started = Instant::now();
        let mut backoff = Backoff::starting_at(Duration::from_millis(200), settings.max_backoff);
        let mut engine_trouble_logged = false;
        let mut progress = Progress::default();
        let mut retried_at_once = false;
        loop {
            let attempt = {
                // The semaphore is never closed, so acquiring only fails if it were.
                let _permit = self.inner.sends.acquire().await.ok();
                if progress.attempts == 0 {
                    if let Some(due) = due {
                        self.inner
                            .metrics
                            .follow_up_delay_error_seconds
                            .observe(Instant::now().saturating_duration_since(due).as_secs_f64());
                    }
                }
                // Boxed: a follow-up that waits out a backoff keeps only this loop's few fields, not
                // the (much larger) state of its HTTP calls.
                let attempt = Box::pin(self.attempt(&request, follow_up, &mut progress));
                tokio::select! {
                    attempt = attempt => attempt,
                    // The grace is over: what did not go through stays owed in the engine.
                    _ = self.inner.abort.cancelled() => return self.leave_owed(follow_up),
                }
            };
            let last_error = match attempt {
                Attempt::Delivered => {
                    self.inner
                        .metrics
                        .follow_up_sent(follow_up.fetched_at.map(|t| t.elapsed()), false);
                    debug!("follow-up message correlated");
                    return Delivery::Sent;
                }
                Attempt::DeliveredEarlier(how) => {
                    self.inner
                        .metrics
                        .follow_up_sent(follow_up.fetched_at.map(|t| t.elapsed()), true);
                    info!("the follow-up needs no message any more ({how}): counted as delivered");
                    return Delivery::AlreadyDelivered;
                }
                Attempt::Ambiguous(error) => {
                    let cause = format!(
                        "several executions wait for message {} with business key {}; use --correlate-by process-instance or both to make correlation exact ({error})",
                        request.message_name,
                        follow_up.target.business_key.as_deref().unwrap_or("-"),
                    );
                    return self
                        .give_up(follow_up, GiveUpReason::Ambiguous, &cause)
                        .await;
                }
                Attempt::Refused(error) => {
                    let cause = format!("the engine refused the message: {error}");
                    return self.give_up(follow_up, GiveUpReason::Refused, &cause).await;
                }
                Attempt::NotWaiting => {
                    debug!("the instance does not wait for the message yet; retrying");
                    format!(
                        "the process instance did not reach the catch event for message {}",
                        request.message_name
                    )
                }
                Attempt::EngineTrouble(error) if error.retry_at_once() && !retried_at_once => {
                    // The connection closed under the call: try again now, without backoff (a
                    // mismatch then reads the marker: the message may have arrived).
                    retried_at_once = true;
                    self.inner.metrics.follow_ups_retried.inc();
                    continue;
                }
                Attempt::EngineTrouble(error) if error.is_optimistic_locking() => {
                    // Another node or replica changed the instance at the same moment: the next
                    // attempt, or its marker read, tells whether the message arrived.
                    debug!("follow-up raced another transaction, trying again: {error}");
                    error.to_string()
                }
                Attempt::EngineTrouble(error) => {
                    if !engine_trouble_logged {
                        warn!("follow-up not sent yet, retrying: {error}");
                        engine_trouble_logged = true;
                    }
                    error.to_string()
                }
            };
            if started.elapsed() >= settings.timeout {
                let cause = format!(
                    "not delivered within --correlation-timeout {}: {last_error}",
                    humantime::format_duration(settings.timeout)
                );
                return self.give_up(follow_up, GiveUpReason::Timeout, &cause).await;
            }
            retried_at_once = false;
            self.inner.metrics.follow_ups_retried.inc();
            // Once shutdown has begun, a follow-up that did not go through stays owed in the
            // engine: the reconciler of any worker delivers it, so it need not hold the grace.
            if self.inner.hurry.is_cancelled() {
                return self.leave_owed(follow_up);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.inner.hurry.cancelled() => return self.leave_owed(follow_up),
            }
        }
    }

    /// Ends a follow-up at shutdown, owed in the engine; counted for one line at the end.
    fn leave_owed(&self, follow_up: &FollowUp) -> Delivery {
        let mut left = lock(&self.inner.left_owed);
        left.count += 1;
        if left.example.is_none() {
            left.example = Some(format!(
                "task {}, {}",
                follow_up.marker.task_id(),
                follow_up.target
            ));
        }
        drop(left);
        self.inner.metrics.follow_ups_left_owed.inc();
        let metrics = &self.inner.metrics;
        metrics.count(&metrics.follow_ups_given_up, GiveUpReason::Shutdown);
        Delivery::GivenUp(GiveUpReason::Shutdown)
    }

    /// Logs, once, how many follow-ups shutdown left owed in the engine (none: nothing).
    pub fn report_left_owed(&self) {
        let left = lock(&self.inner.left_owed);
        if left.count > 0 {
            warn!(
                count = left.count,
                example = left.example.as_deref().unwrap_or("-"),
                "{} follow-ups not delivered before shutdown: they stay owed in the engine (marker variable {}), and the reconciler of any worker delivers them",
                left.count,
                self.inner.settings.marker_variable,
            );
        }
    }

    /// One attempt: the message, and, when it matches nothing, maybe a read of the marker.
    async fn attempt(
        &self,
        request: &CorrelateMessageRequest,
        follow_up: &FollowUp,
        progress: &mut Progress,
    ) -> Attempt {
        if progress.attempts > 0 {
            self.spend_budget().await;
        }
        progress.attempts += 1;
        let error = match self.inner.client.correlate_message(request).await {
            Ok(()) => return Attempt::Delivered,
            Err(error) => error,
        };
        match error.mismatch() {
            Some(Mismatch::MultipleMatches) => Attempt::Ambiguous(error),
            Some(Mismatch::NoMatch) => {
                progress.mismatches += 1;
                let read = progress.mismatches == 1
                    || progress.maybe_delivered
                    || progress.mismatches % 4 == 1;
                if !read {
                    return Attempt::NotWaiting;
                }
                // The first read decides the first attempt's mismatch; later ones are retries.
                if progress.mismatches > 1 {
                    self.spend_budget().await;
                }
                let decided = self.read_marker(follow_up).await;
                if matches!(decided, Attempt::NotWaiting) {
                    progress.maybe_delivered = false;
                    if progress.mismatches >= 2 {
                        self.diagnose(follow_up).await;
                    }
                }
                decided
            }
            None if error.is_transient() || error.is_unauthorized() => {
                progress.maybe_delivered |=
                    error.outcome_unknown() || error.is_optimistic_locking();
                Attempt::EngineTrouble(error)
            }
            None => Attempt::Refused(error),
        }
    }

    /// Reads the instance's marker to decide a mismatch.
    async fn read_marker(&self, follow_up: &FollowUp) -> Attempt {
        let Some(instance) = follow_up.process_instance_id.as_deref() else {
            return Attempt::NotWaiting;
        };
        let value = match self
            .inner
            .client
            .instance_variable(instance, &self.inner.settings.marker_variable)
            .await
        {
            Ok(value) => value,
            Err(e) => return Attempt::EngineTrouble(e),
        };
        match value.as_deref().map(Marker::parse) {
            Some(Some(marker)) if marker == follow_up.marker => Attempt::NotWaiting,
            Some(Some(marker)) if marker == follow_up.marker.delivered() => {
                Attempt::DeliveredEarlier("the marker shows it delivered")
            }
            Some(_) => Attempt::DeliveredEarlier("the marker belongs to a later round"),
            None => Attempt::DeliveredEarlier("the instance has ended"),
        }
    }
}
