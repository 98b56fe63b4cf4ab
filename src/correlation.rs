//! The delayed follow-up: after a task is completed, tell its process instance — waiting at a
//! message catch event — that the work is done, by correlating a message. Exactly once, whatever
//! the network does.
//!
//! Camunda 7 does not buffer messages: a message that arrives before the instance reaches the
//! catch event is refused as a mismatch. So each attempt first asks the engine where the instance
//! waits for the message (its event subscription). No subscription yet: the instance is not there
//! yet, and the follow-up waits (with backoff, up to `correlation_timeout`). A subscription: the
//! message is sent, and the follow-up remembers *that* subscription. If the reply is lost — a
//! reset, a timeout, a proxy's 504 — the engine may well have correlated it; the next attempt
//! looks again, and a remembered subscription that is gone means the message arrived (ours, or
//! another replica's). The decision comes from the instance's own runtime state, so it holds for
//! a process that loops back to the same catch event (a new wait has a new subscription id) and
//! for an engine with history level `none`.
//!
//! Pending follow-ups are bounded: each holds one unit of `capacity`, which the fetch loop must
//! take before it locks a task, so undeliverable messages (a misspelled message name, instances
//! that never reach the catch) make the worker stop fetching instead of growing without end.
//!
//! On shutdown, pending follow-ups stop waiting out their delay and are sent at once; when the
//! grace period ends, what is left is logged and left to the reconciler of the next start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument};

use crate::backoff::Backoff;
use crate::engine::{CorrelateMessageRequest, EngineClient, EngineError, ExternalTask, Mismatch};
use crate::metrics::{Metrics, Outcome};

/// Delivery attempts (a subscription lookup and a message call) in flight at once. Follow-ups are
/// not bounded by `--max-tasks` (a task's slot is freed at completion), so after a backlog
/// thousands can fall due together; without this bound each would open its own connection.
const MAX_CONCURRENT_SENDS: usize = 32;

/// How a follow-up message identifies its process instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorrelateBy {
    /// By business key alone, as the original script did. Ambiguous when several instances share
    /// a key, and the dearest for the engine: it searches executions by key and also looks for
    /// process definitions that a message of that name could start.
    BusinessKey,
    /// By process instance id: exact, and works for instances without a business key.
    ProcessInstance,
    /// By both (the default): the message names the task's business key and its process instance,
    /// so it reaches exactly the instance whose task was completed, and the engine finds it by id
    /// (measured: about 1.7 ms less engine CPU per message than by business key alone).
    #[default]
    Both,
}

impl CorrelateBy {
    /// The names accepted on the command line and in the config file.
    pub const NAMES: [&'static str; 3] = ["business-key", "process-instance", "both"];

    /// Parses a command-line / config-file name.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "business-key" => Ok(CorrelateBy::BusinessKey),
            "process-instance" => Ok(CorrelateBy::ProcessInstance),
            "both" => Ok(CorrelateBy::Both),
            other => Err(format!(
                "`{other}` is not one of {}",
                CorrelateBy::NAMES.join(", ")
            )),
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            CorrelateBy::BusinessKey => "business-key",
            CorrelateBy::ProcessInstance => "process-instance",
            CorrelateBy::Both => "both",
        }
    }

    /// The correlation target for a task, or why there is none.
    pub fn target_for(self, task: &ExternalTask) -> Result<CorrelationTarget, String> {
        let business_key = task.business_key.clone().filter(|k| !k.is_empty());
        let instance = task.process_instance_id.clone();
        let no_key = || {
            format!(
                "task {} has no business key, and the worker correlates by business key",
                task.id
            )
        };
        let no_instance = || format!("task {} has no process instance id", task.id);
        Ok(match self {
            CorrelateBy::BusinessKey => CorrelationTarget {
                business_key: Some(business_key.ok_or_else(no_key)?),
                process_instance_id: None,
            },
            CorrelateBy::ProcessInstance => CorrelationTarget {
                business_key: None,
                process_instance_id: Some(instance.ok_or_else(no_instance)?),
            },
            CorrelateBy::Both => CorrelationTarget {
                business_key: Some(business_key.ok_or_else(no_key)?),
                process_instance_id: Some(instance.ok_or_else(no_instance)?),
            },
        })
    }
}

/// Which process instance a follow-up message is meant for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CorrelationTarget {
    /// Correlate by this business key.
    pub business_key: Option<String>,
    /// Correlate to exactly this instance.
    pub process_instance_id: Option<String>,
}

impl std::fmt::Display for CorrelationTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.business_key, &self.process_instance_id) {
            (Some(key), Some(id)) => write!(f, "business key {key}, process instance {id}"),
            (Some(key), None) => write!(f, "business key {key}"),
            (None, Some(id)) => write!(f, "process instance {id}"),
            (None, None) => f.write_str("no target"),
        }
    }
}

/// One follow-up to deliver.
#[derive(Debug, Clone)]
pub struct FollowUp {
    /// Where the message goes.
    pub target: CorrelationTarget,
    /// The task's process instance, known even when correlating by business key: it is where the
    /// follow-up looks for the instance's wait, and what log lines refer to. Without it, a lost
    /// reply cannot be told from a message that never arrived.
    pub process_instance_id: Option<String>,
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
        }
    }
}

/// How a follow-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The engine correlated the message (204).
    Sent,
    /// The wait the message was meant for is gone (the subscription this follow-up saw, or the
    /// whole instance): the message arrived — after a lost reply, or from another replica.
    AlreadyDelivered,
    /// Given up; logged with the target.
    GivenUp(GiveUpReason),
}

/// Why a follow-up was abandoned: the `reason` of `follow_ups_given_up_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// The wait we knew of is gone, or the instance ended.
    DeliveredEarlier(&'static str),
    /// The instance does not wait for the message (yet).
    NotWaiting,
    /// Several instances wait under the business key.
    Ambiguous(EngineError),
    /// The engine refused the message for good.
    Refused(EngineError),
    /// The engine is unreachable, overloaded or lost the reply: try again later.
    EngineTrouble(EngineError),
}

/// Schedules and delivers follow-up messages. Cheap to clone; all clones share one task tracker,
/// one capacity and one set of pending instances.
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
    /// Cancelled when shutdown begins: stop waiting out delays, send now.
    hurry: CancellationToken,
    /// Cancelled when the shutdown grace ends: stop retrying.
    abort: CancellationToken,
    /// Instances with a follow-up in memory (and how many), which the reconciler leaves alone.
    pending: Mutex<HashMap<String, usize>>,
    /// Bounds the delivery attempts in flight (see [`MAX_CONCURRENT_SENDS`]).
    sends: Semaphore,
    /// Room for pending follow-ups: `settings.capacity` permits.
    room: Arc<Semaphore>,
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
        FollowUps {
            inner: Arc::new(Shared {
                client,
                metrics,
                settings,
                tracker,
                hurry,
                abort,
                pending: Mutex::default(),
                sends: Semaphore::new(MAX_CONCURRENT_SENDS),
                room,
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

    /// Whether a follow-up for this instance is waiting in memory.
    pub fn is_pending(&self, process_instance_id: &str) -> bool {
        self.pending_map().contains_key(process_instance_id)
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Single increments and removals cannot leave the map inconsistent, so a poisoned lock
        // is still usable.
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_pending(&self, id: &str) {
        *self.pending_map().entry(id.to_owned()).or_default() += 1;
    }

    fn unmark_pending(&self, id: &str) {
        let mut pending = self.pending_map();
        if let Some(count) = pending.get_mut(id) {
            *count -= 1;
            if *count == 0 {
                pending.remove(id);
            }
        }
    }

    /// Schedules delivery after the configured delay (at once if shutdown has begun). `room` is
    /// the unit of capacity this follow-up occupies until it is done.
    pub fn schedule(&self, follow_up: FollowUp, room: Option<OwnedSemaphorePermit>) {
        if let Some(id) = &follow_up.process_instance_id {
            self.mark_pending(id);
        }
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
            );
            Box::pin(this.deliver_due(&follow_up, Some(due)).instrument(span)).await;
            if let Some(id) = &follow_up.process_instance_id {
                this.unmark_pending(id);
            }
            this.inner.metrics.follow_ups_pending.dec();
            drop(room);
        });
    }

    /// Sends the message now, retrying as the policy says.
    pub async fn deliver(&self, follow_up: &FollowUp) -> Delivery {
        self.deliver_due(follow_up, None).await
    }

    async fn deliver_due(&self, follow_up: &FollowUp, due: Option<Instant>) -> Delivery {
        let settings = &self.inner.settings;
        let request = CorrelateMessageRequest {
            message_name: settings.message_name.clone(),
            business_key: follow_up.target.business_key.clone(),
            process_instance_id: follow_up.target.process_instance_id.clone(),
        };
        let started = Instant::now();
        let mut backoff = Backoff::starting_at(Duration::from_millis(200), settings.max_backoff);
        let mut engine_trouble_logged = false;
        // The subscription (the instance's wait) our message was sent to, once we saw one.
        let mut awaited: Option<String> = None;
        let mut empty_looks = 0;
        let mut first = true;
        let mut retried_at_once = false;
        loop {
            let attempt = {
                // The semaphore is never closed, so acquiring only fails if it were.
                let _permit = self.inner.sends.acquire().await.ok();
                if first {
                    if let Some(due) = due {
                        self.inner
                            .metrics
                            .follow_up_delay_error_seconds
                            .observe(Instant::now().saturating_duration_since(due).as_secs_f64());
                    }
                    first = false;
                }
                // Boxed: a follow-up that waits out a backoff keeps only this loop's few fields, not
                // the (much larger) state of its HTTP calls.
                Box::pin(self.attempt(&request, follow_up, &mut awaited, &mut empty_looks)).await
            };
            match attempt {
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
                    info!("the follow-up had arrived already ({how}): counted as delivered");
                    return Delivery::AlreadyDelivered;
                }
                Attempt::Ambiguous(error) => {
                    error!(
                        target = %follow_up.target,
                        "follow-up not sent: several process instances wait for message {} with business key {}; \
                         use --correlate-by process-instance or both to make correlation exact ({error})",
                        request.message_name,
                        follow_up.target.business_key.as_deref().unwrap_or("-"),
                    );
                    return self.give_up(GiveUpReason::Ambiguous);
                }
                Attempt::Refused(error) => {
                    error!(target = %follow_up.target, "follow-up refused by the engine: {error}");
                    return self.give_up(GiveUpReason::Refused);
                }
                Attempt::NotWaiting => {
                    if started.elapsed() >= settings.timeout {
                        error!(
                            target = %follow_up.target,
                            process_instance_id = follow_up.process_instance_id.as_deref().unwrap_or("-"),
                            "follow-up not sent: the process instance did not reach the catch event for message {} within --correlation-timeout {}",
                            request.message_name,
                            humantime::format_duration(settings.timeout),
                        );
                        return self.give_up(GiveUpReason::Timeout);
                    }
                    debug!("the instance does not wait for the message yet; retrying");
                }
                Attempt::EngineTrouble(error) if error.retry_at_once() && !retried_at_once => {
                    // The connection closed under the call: look again now, without backoff
                    // (the lookup tells whether a message that was on its way arrived).
                    retried_at_once = true;
                    self.inner.metrics.follow_ups_retried.inc();
                    continue;
                }
                Attempt::EngineTrouble(error) if error.is_optimistic_locking() => {
                    // Another node or replica changed the instance at the same moment: the next
                    // look at the wait tells whether the message arrived.
                    debug!("follow-up raced another transaction, looking again: {error}");
                }
                Attempt::EngineTrouble(error) => {
                    if !engine_trouble_logged {
                        warn!("follow-up not sent yet, retrying: {error}");
                        engine_trouble_logged = true;
                    }
                }
            }
            retried_at_once = false;
            self.inner.metrics.follow_ups_retried.inc();
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.inner.abort.cancelled() => {
                    warn!(
                        target = %follow_up.target,
                        "shutdown grace over: follow-up not sent; the reconciler of the next start will deliver it"
                    );
                    return self.give_up(GiveUpReason::Shutdown);
                }
            }
        }
    }

    fn give_up(&self, reason: GiveUpReason) -> Delivery {
        let metrics = &self.inner.metrics;
        metrics.count(&metrics.follow_ups_given_up, reason);
        Delivery::GivenUp(reason)
    }

    /// One attempt: find the instance's wait, then send the message to it.
    async fn attempt(
        &self,
        request: &CorrelateMessageRequest,
        follow_up: &FollowUp,
        awaited: &mut Option<String>,
        empty_looks: &mut u32,
    ) -> Attempt {
        let client = &self.inner.client;
        if let Some(instance) = follow_up.process_instance_id.as_deref() {
            let waits = match client
                .instance_subscriptions(instance, &request.message_name)
                .await
            {
                Ok(waits) => waits,
                Err(e) => return Attempt::EngineTrouble(e),
            };
            match awaited.as_deref() {
                Some(seen) if !waits.iter().any(|w| w.id == seen) => {
                    return Attempt::DeliveredEarlier("the wait it was sent to is gone");
                }
                Some(_) => {}
                None => match waits.first() {
                    Some(wait) => *awaited = Some(wait.id.clone()),
                    // Not waiting (yet): whether the instance still runs at all is asked at the
                    // first empty look and then every fourth, so that follow-ups which cannot be
                    // delivered cost the engine one read per retry, not two.
                    None if *empty_looks % 4 == 0 => {
                        *empty_looks += 1;
                        return match client.process_instance_exists(instance).await {
                            Ok(true) => Attempt::NotWaiting,
                            Ok(false) => Attempt::DeliveredEarlier("the instance has ended"),
                            Err(e) => Attempt::EngineTrouble(e),
                        };
                    }
                    None => {
                        *empty_looks += 1;
                        return Attempt::NotWaiting;
                    }
                },
            }
        }
        match client.correlate_message(request).await {
            Ok(()) => Attempt::Delivered,
            Err(error) => match error.mismatch() {
                Some(Mismatch::MultipleMatches) => Attempt::Ambiguous(error),
                // The wait was taken between lookup and message (another replica), or the
                // business key does not lead to it: the next lookup tells.
                Some(Mismatch::NoMatch) => Attempt::NotWaiting,
                None if error.is_transient() || error.is_unauthorized() => {
                    Attempt::EngineTrouble(error)
                }
                None => Attempt::Refused(error),
            },
        }
    }
}
