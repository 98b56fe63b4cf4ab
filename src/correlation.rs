//! The delayed follow-up: after a task is completed, tell its process instance — waiting at a
//! message catch event — that the work is done, by correlating a message.
//!
//! Camunda 7 does not buffer messages: a message that arrives before the instance reaches the
//! catch event is refused as a mismatch. The delay gives the instance time to get there; when it
//! still is not there, the follow-up is retried with backoff until `correlation_timeout`. A
//! mismatch can also mean the opposite — another replica or the reconciler already delivered
//! it — so before retrying, the engine's history is asked whether the instance has moved on.
//!
//! On shutdown, pending follow-ups stop waiting out their delay and are sent at once; when the
//! grace period ends, what is left is logged and left to the reconciler of the next start.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument};

use crate::backoff::Backoff;
use crate::engine::{
    CorrelateMessageRequest, Count, EngineClient, EngineError, ExternalTask,
    HistoricProcessInstance, Mismatch,
};
use crate::metrics::Metrics;

/// Message calls in flight at once. Follow-ups are not bounded by `--max-tasks` (a task's slot is
/// freed at completion), so after a backlog thousands can fall due together; without this bound
/// each would open its own connection to the engine.
const MAX_CONCURRENT_SENDS: usize = 32;

/// How a follow-up message identifies its process instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorrelateBy {
    /// By business key, as the original script did. Ambiguous when several instances share a key.
    #[default]
    BusinessKey,
    /// By process instance id: always exact, and works for instances without a business key.
    ProcessInstance,
    /// By both: exact, and still checks that the business key matches.
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
    /// The task's process instance, known even when correlating by business key: it is what the
    /// history check and the log lines refer to.
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
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        CorrelationSettings {
            message_name: "sample_response".to_owned(),
            delay: Duration::from_secs(2),
            timeout: Duration::from_secs(300),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// How a follow-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The engine correlated the message (204).
    Sent,
    /// The instance had already moved past the catch event: someone else delivered it.
    AlreadyDelivered,
    /// Given up; logged at ERROR with the target.
    GivenUp,
}

/// Schedules and delivers follow-up messages. Cheap to clone; all clones share one task tracker
/// and one set of pending instances.
#[derive(Debug, Clone)]
pub struct FollowUps {
    client: EngineClient,
    metrics: Arc<Metrics>,
    settings: Arc<CorrelationSettings>,
    tracker: TaskTracker,
    /// Cancelled when shutdown begins: stop waiting out delays, send now.
    hurry: CancellationToken,
    /// Cancelled when the shutdown grace ends: stop retrying.
    abort: CancellationToken,
    /// Instances with a follow-up in memory, which the reconciler must leave alone.
    pending: Arc<Mutex<HashSet<String>>>,
    /// Bounds the message calls in flight (see [`MAX_CONCURRENT_SENDS`]).
    sends: Arc<Semaphore>,
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
        FollowUps {
            client,
            metrics,
            settings: Arc::new(settings),
            tracker,
            hurry,
            abort,
            pending: Arc::default(),
            sends: Arc::new(Semaphore::new(MAX_CONCURRENT_SENDS)),
        }
    }

    /// The delivery policy.
    pub fn settings(&self) -> &CorrelationSettings {
        &self.settings
    }

    /// Whether a follow-up for this instance is waiting in memory.
    pub fn is_pending(&self, process_instance_id: &str) -> bool {
        self.pending_set().contains(process_instance_id)
    }

    fn pending_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A panic while holding this lock cannot leave the set inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules delivery after the configured delay (at once if shutdown has begun).
    pub fn schedule(&self, follow_up: FollowUp) {
        if let Some(id) = &follow_up.process_instance_id {
            self.pending_set().insert(id.clone());
        }
        let this = self.clone();
        let span = tracing::info_span!(
            "follow_up",
            target = %follow_up.target,
            process_instance_id = follow_up.process_instance_id.as_deref().unwrap_or(""),
        );
        self.tracker.spawn(
            async move {
                let due = Instant::now() + this.settings.delay;
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = this.hurry.cancelled() => {
                        debug!("shutting down: sending the follow-up now instead of after the delay");
                    }
                }
                this.deliver(&follow_up).await;
                if let Some(id) = &follow_up.process_instance_id {
                    this.pending_set().remove(id);
                }
            }
            .instrument(span),
        );
    }

    /// Sends the message now, retrying as the policy says. Used by scheduled follow-ups.
    pub async fn deliver(&self, follow_up: &FollowUp) -> Delivery {
        let request = CorrelateMessageRequest {
            message_name: self.settings.message_name.clone(),
            business_key: follow_up.target.business_key.clone(),
            process_instance_id: follow_up.target.process_instance_id.clone(),
        };
        let started = Instant::now();
        let mut backoff =
            Backoff::starting_at(Duration::from_millis(200), self.settings.max_backoff);
        let mut engine_trouble_logged = false;
        loop {
            let sent = {
                // The semaphore is never closed, so acquiring only fails if it were.
                let _permit = self.sends.acquire().await.ok();
                self.client.correlate_message(&request).await
            };
            let error = match sent {
                Ok(()) => {
                    self.metrics
                        .follow_up_sent(follow_up.fetched_at.map(|t| t.elapsed()));
                    debug!("follow-up message correlated");
                    return Delivery::Sent;
                }
                Err(error) => error,
            };
            match error.mismatch() {
                Some(Mismatch::MultipleMatches) => {
                    self.metrics.follow_up_given_up();
                    error!(
                        target = %follow_up.target,
                        "follow-up not sent: several process instances wait for message {} with business key {}; \
                         use --correlate-by process-instance or both to make correlation exact ({error})",
                        request.message_name,
                        follow_up.target.business_key.as_deref().unwrap_or("-"),
                    );
                    return Delivery::GivenUp;
                }
                Some(Mismatch::NoMatch) => {
                    if self.has_moved_on(follow_up).await {
                        info!("the instance is past the catch event already: the follow-up was delivered by another worker or the reconciler");
                        return Delivery::AlreadyDelivered;
                    }
                    if started.elapsed() >= self.settings.timeout {
                        self.metrics.follow_up_given_up();
                        error!(
                            target = %follow_up.target,
                            process_instance_id = follow_up.process_instance_id.as_deref().unwrap_or("-"),
                            "follow-up not sent: the process instance did not reach the catch event for message {} within --correlation-timeout {}",
                            request.message_name,
                            humantime::format_duration(self.settings.timeout),
                        );
                        return Delivery::GivenUp;
                    }
                    debug!("the instance is not at the catch event yet; retrying");
                }
                None if error.is_transient() || error.is_unauthorized() => {
                    if !engine_trouble_logged {
                        warn!("follow-up not sent yet, retrying: {error}");
                        engine_trouble_logged = true;
                    }
                }
                None => {
                    self.metrics.follow_up_given_up();
                    error!(target = %follow_up.target, "follow-up refused by the engine: {error}");
                    return Delivery::GivenUp;
                }
            }
            self.metrics.follow_up_retried();
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.abort.cancelled() => {
                    self.metrics.follow_up_given_up();
                    warn!(
                        target = %follow_up.target,
                        "shutdown grace over: follow-up not sent; the reconciler of the next start will deliver it"
                    );
                    return Delivery::GivenUp;
                }
            }
        }
    }

    /// Whether the instance has left the catch event behind (or ended): then a "no match" means
    /// the message was already delivered, not that it came too early.
    async fn has_moved_on(&self, follow_up: &FollowUp) -> bool {
        let Some(id) = follow_up.process_instance_id.as_deref() else {
            return false;
        };
        let instance: Result<HistoricProcessInstance, EngineError> = self
            .client
            .get_json(
                "historyProcessInstance",
                &format!("history/process-instance/{id}"),
                &[],
            )
            .await;
        match instance {
            Ok(instance) if instance.state.as_deref() != Some("ACTIVE") => return true,
            Ok(_) => {}
            Err(e) if e.is_not_found() => return false,
            Err(_) => return false,
        }
        let passed: Result<Count, EngineError> = self
            .client
            .get_json(
                "historyActivityInstanceCount",
                "history/activity-instance/count",
                &[
                    ("processInstanceId", id.to_owned()),
                    ("activityType", "intermediateMessageCatch".to_owned()),
                    ("finished", "true".to_owned()),
                ],
            )
            .await;
        matches!(passed, Ok(Count { count }) if count > 0)
    }
}
