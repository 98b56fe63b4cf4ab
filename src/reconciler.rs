//! Crash recovery without local state: the engine knows which instances still wait for the
//! follow-up message, so the worker asks it.
//!
//! Every pass lists the message subscriptions for `--message-name`. An instance that was already
//! waiting at an earlier pass, at least `correlation delay + grace` ago, and has no follow-up
//! pending in this process, may have lost its follow-up (a crash, a kill -9, a replica that died).
//! It is recovered only if its wait can be attributed to this worker's topic: the engine's history
//! must show a task of the topic completed in that instance before the wait began. A process of
//! someone else that waits for a message of the same name is never touched; with history level
//! `none` nothing can be attributed, and nothing is recovered (the reconciler says so once).
//!
//! Ages are measured on this process's own clock between passes, never by comparing with the
//! engine's timestamps, so clock skew between worker and engine cannot cause early recoveries;
//! the attribution compares two timestamps of the engine with each other.
//!
//! Recovery correlates by process instance id, which is always exact. Two replicas may recover
//! the same instance: the loser finds the wait gone, which here means "already done". A
//! correlation that fails does not end the pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::correlation::FollowUps;
use crate::engine::{CorrelateMessageRequest, EngineClient, EngineError, EventSubscription};
use crate::health::Liveness;
use crate::metrics::{Metrics, Outcome};

/// Extra waiting time, beyond the correlation delay, before an instance counts as forgotten.
pub const RECOVERY_GRACE: Duration = Duration::from_secs(10);

/// The longest interval between passes of an idle worker. Recovery after a crash does not wait
/// for it: a restarted worker runs a pass at start, and any worker that fetches tasks runs passes
/// at `--reconcile-interval`.
pub const IDLE_INTERVAL: Duration = Duration::from_secs(600);

/// Subscriptions are read in pages of this size.
const PAGE_SIZE: u64 = 500;

/// Finds instances whose follow-up was lost and correlates them.
#[derive(Debug)]
pub struct Reconciler {
    client: EngineClient,
    follow_ups: FollowUps,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    /// The topic whose completions make a wait ours.
    topic: String,
    /// How long an instance must have been seen waiting before it is recovered.
    min_wait: Duration,
    /// Waiting instances (by subscription id) and when a pass first saw them.
    first_seen: HashMap<String, Instant>,
    /// Subscriptions found not to be ours, so that later passes do not ask the history again.
    foreign: HashMap<String, ()>,
    /// Whether the "cannot attribute" note was logged.
    told_unattributed: bool,
}

/// How a pass ended: the `outcome` of `reconciler_passes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOutcome {
    /// The pass read what it needed (recoveries that failed are tried again next pass).
    Ok,
    /// The pass could not read the engine.
    Error,
}

impl Outcome for PassOutcome {
    const ALL: &'static [Self] = &[PassOutcome::Ok, PassOutcome::Error];
    const LABEL: &'static str = "outcome";
    fn label(self) -> &'static str {
        match self {
            PassOutcome::Ok => "ok",
            PassOutcome::Error => "error",
        }
    }
}

/// What one reconciliation pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassSummary {
    /// Instances waiting for the message.
    pub waiting: usize,
    /// Instances this pass correlated.
    pub recovered: usize,
    /// Instances someone else correlated in between.
    pub already_done: usize,
    /// Waiting instances left alone: their wait does not follow a task of our topic.
    pub not_ours: usize,
    /// Recoveries that failed this time (tried again next pass).
    pub failed: usize,
}

impl Reconciler {
    /// A reconciler for the instances whose wait follows a completed task of `topic`; it recovers
    /// instances waiting longer than `correlation_delay` + [`RECOVERY_GRACE`].
    pub fn new(
        client: EngineClient,
        follow_ups: FollowUps,
        metrics: Arc<Metrics>,
        liveness: Arc<Liveness>,
        topic: &str,
    ) -> Self {
        metrics.preset::<PassOutcome>(&metrics.reconciler_passes);
        let min_wait = follow_ups.settings().delay + RECOVERY_GRACE;
        Reconciler {
            client,
            follow_ups,
            metrics,
            liveness,
            topic: topic.to_owned(),
            min_wait,
            first_seen: HashMap::new(),
            foreign: HashMap::new(),
            told_unattributed: false,
        }
    }

    /// The same, with a custom minimum wait (tests use a short one).
    pub fn with_min_wait(mut self, min_wait: Duration) -> Self {
        self.min_wait = min_wait;
        self
    }

    /// Runs passes at start and every `interval` until `stop` is cancelled. The second pass comes
    /// after the minimum wait, so a crash is repaired within seconds of a restart. While passes find
    /// nothing to recover and the worker fetches no task, the interval grows (×4 a pass, up to
    /// [`IDLE_INTERVAL`]): an idle worker costs the engine next to nothing. Any activity brings it
    /// back to `interval`, and the engine answering again after an outage brings a pass at once.
    pub async fn run(mut self, interval: Duration, stop: CancellationToken) {
        let mut next = Instant::now();
        let mut first = true;
        let mut wait = interval;
        let mut fetched_before = self.liveness.fetched_so_far();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.client.engine_back() => {
                    debug!("the engine answers again: a reconciler pass now");
                }
                _ = stop.cancelled() => return,
            }
            let found = match self.pass().await {
                Ok(summary) => {
                    self.metrics
                        .count(&self.metrics.reconciler_passes, PassOutcome::Ok);
                    if summary.recovered > 0 {
                        info!(
                            recovered = summary.recovered,
                            waiting = summary.waiting,
                            "reconciler correlated instances whose follow-up had been lost"
                        );
                    } else {
                        debug!(?summary, "reconciler pass");
                    }
                    summary.recovered + summary.failed > 0
                }
                Err(e) => {
                    self.metrics
                        .count(&self.metrics.reconciler_passes, PassOutcome::Error);
                    warn!("reconciler pass failed, will try again: {e}");
                    true
                }
            };
            let fetched = self.liveness.fetched_so_far();
            let idle = !found && fetched == fetched_before;
            fetched_before = fetched;
            wait = if first {
                self.min_wait.min(interval)
            } else if idle {
                (wait * 4).clamp(interval, IDLE_INTERVAL.max(interval))
            } else {
                interval
            };
            first = false;
            next = Instant::now() + wait;
        }
    }

    /// One pass over the waiting instances.
    pub async fn pass(&mut self) -> Result<PassSummary, EngineError> {
        let now = Instant::now();
        let mut summary = PassSummary::default();
        let mut still_waiting = HashMap::new();
        let mut due = Vec::new();
        let message_name = self.follow_ups.settings().message_name.clone();
        let mut first_result = 0;
        loop {
            let page = self
                .client
                .message_subscriptions(&message_name, first_result, PAGE_SIZE)
                .await?;
            let page_len = page.len() as u64;
            for subscription in page {
                // A message start event has a subscription without an instance: nothing to recover.
                let Some(instance) = subscription.process_instance_id.clone() else {
                    continue;
                };
                summary.waiting += 1;
                let seen = self
                    .first_seen
                    .get(&subscription.id)
                    .copied()
                    .unwrap_or(now);
                if now.duration_since(seen) >= self.min_wait
                    && !self.follow_ups.is_pending(&instance)
                {
                    due.push(subscription.clone());
                }
                still_waiting.insert(subscription.id, seen);
            }
            if page_len < PAGE_SIZE {
                break;
            }
            first_result += PAGE_SIZE;
        }
        // Forget waits that ended, so the maps stay as large as the wait list.
        self.foreign.retain(|id, _| still_waiting.contains_key(id));
        self.first_seen = still_waiting;
        for subscription in due {
            if self.foreign.contains_key(&subscription.id) {
                summary.not_ours += 1;
                continue;
            }
            match self.recover(&subscription, &message_name).await {
                Ok(Recovery::Recovered) => summary.recovered += 1,
                Ok(Recovery::AlreadyDone) => summary.already_done += 1,
                Ok(Recovery::NotOurs) => {
                    summary.not_ours += 1;
                    self.foreign.insert(subscription.id.clone(), ());
                }
                Err(e) => {
                    summary.failed += 1;
                    warn!(
                        process_instance_id =
                            subscription.process_instance_id.as_deref().unwrap_or("-"),
                        "reconciler could not recover this instance now, will try again: {e}"
                    );
                }
            }
        }
        if summary.not_ours > 0 && summary.recovered == 0 && !self.told_unattributed {
            self.told_unattributed = true;
            info!(
                waiting = summary.not_ours,
                topic = %self.topic,
                "instances wait for the message, but the history shows no completed task of this topic before their wait began: left alone (another process, or history level none)"
            );
        }
        Ok(summary)
    }

    /// Recovers one waiting instance, if its wait is ours.
    async fn recover(
        &mut self,
        subscription: &EventSubscription,
        message_name: &str,
    ) -> Result<Recovery, EngineError> {
        let Some(instance) = subscription.process_instance_id.as_deref() else {
            return Ok(Recovery::NotOurs);
        };
        let completion = self
            .client
            .latest_topic_completion(instance, &self.topic)
            .await?;
        let ours = match (
            completion.and_then(|c| c.timestamp),
            &subscription.created_date,
        ) {
            (Some(completed), Some(waiting)) => {
                match (engine_time(&completed), engine_time(waiting)) {
                    (Some(completed), Some(waiting)) => completed <= waiting,
                    // An engine date we cannot read: the completion exists, which is what matters most.
                    _ => true,
                }
            }
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !ours {
            return Ok(Recovery::NotOurs);
        }
        let request = CorrelateMessageRequest {
            message_name: message_name.to_owned(),
            business_key: None,
            process_instance_id: Some(instance.to_owned()),
        };
        let error = match self.client.correlate_message(&request).await {
            Ok(()) => {
                self.metrics.follow_ups_recovered.inc();
                info!(process_instance_id = %instance, "recovered a lost follow-up");
                self.first_seen.remove(&subscription.id);
                return Ok(Recovery::Recovered);
            }
            Err(error) => error,
        };
        // A mismatch, or a reply that never came: the wait itself says what happened.
        let waits = self
            .client
            .instance_subscriptions(instance, message_name)
            .await?;
        if waits.iter().any(|w| w.id == subscription.id) {
            return Err(error);
        }
        debug!(process_instance_id = %instance, "already correlated (by someone else, or a lost reply)");
        self.first_seen.remove(&subscription.id);
        Ok(Recovery::AlreadyDone)
    }
}

/// What became of one waiting instance.
enum Recovery {
    Recovered,
    AlreadyDone,
    NotOurs,
}

/// Reads an engine date (`2026-11-25T18:43:40.123+0100`, the REST API's default format) as an
/// instant, so that two dates with different offsets (a DST change) still compare correctly.
fn engine_time(text: &str) -> Option<time::OffsetDateTime> {
    let format = time::format_description::parse_borrowed::<1>(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond][offset_hour sign:mandatory][offset_minute]",
    )
    .ok()?;
    time::OffsetDateTime::parse(text, &format).ok()
}

#[cfg(test)]
mod tests {
    use super::engine_time;

    #[test]
    fn engine_dates_compare_as_instants_across_offsets() {
        let summer = engine_time("2026-10-25T02:30:00.000+0200").expect("parses");
        let winter = engine_time("2026-10-25T02:00:00.000+0100").expect("parses");
        assert!(
            summer < winter,
            "02:30+02 is 00:30 UTC, before 02:00+01 = 01:00 UTC"
        );
        assert!(engine_time("yesterday").is_none());
    }
}
