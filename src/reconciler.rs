//! Crash recovery without local state: the engine knows which instances still wait for the
//! follow-up message, so the worker asks it.
//!
//! Every pass lists the message subscriptions for `--message-name`. An instance that was already
//! waiting at an earlier pass, at least `correlation delay + grace` ago, and has no follow-up
//! pending in this process, has lost its follow-up (a crash, a kill -9, a replica that died) and
//! is correlated now — by process instance id, which is always exact. Ages are measured on this
//! process's own clock between passes, never by comparing with the engine's timestamps, so clock
//! skew between the worker and the engine cannot cause early or missed recoveries.
//!
//! With several replicas, two may recover the same instance: the loser gets a mismatch, which
//! here means "already done", not an error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::correlation::FollowUps;
use crate::engine::{CorrelateMessageRequest, EngineClient, EngineError};
use crate::metrics::Metrics;

/// Extra waiting time, beyond the correlation delay, before an instance counts as forgotten.
pub const RECOVERY_GRACE: Duration = Duration::from_secs(10);

/// Subscriptions are read in pages of this size.
const PAGE_SIZE: u64 = 500;

/// Finds instances whose follow-up was lost and correlates them.
#[derive(Debug)]
pub struct Reconciler {
    client: EngineClient,
    follow_ups: FollowUps,
    metrics: Arc<Metrics>,
    /// How long an instance must have been seen waiting before it is recovered.
    min_wait: Duration,
    /// Waiting instances (process instance id) and when a pass first saw them.
    first_seen: HashMap<String, Instant>,
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
}

impl Reconciler {
    /// A reconciler that recovers instances waiting longer than `correlation_delay` + [`RECOVERY_GRACE`].
    pub fn new(client: EngineClient, follow_ups: FollowUps, metrics: Arc<Metrics>) -> Self {
        let min_wait = follow_ups.settings().delay + RECOVERY_GRACE;
        Reconciler {
            client,
            follow_ups,
            metrics,
            min_wait,
            first_seen: HashMap::new(),
        }
    }

    /// The same, with a custom minimum wait (tests use a short one).
    pub fn with_min_wait(mut self, min_wait: Duration) -> Self {
        self.min_wait = min_wait;
        self
    }

    /// Runs passes at start and every `interval` until `stop` is cancelled. The second pass comes
    /// after the minimum wait, so a crash is repaired within seconds of a restart.
    pub async fn run(mut self, interval: Duration, stop: CancellationToken) {
        let mut next = Instant::now();
        let mut first = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.cancelled() => return,
            }
            match self.pass().await {
                Ok(summary) if summary.recovered > 0 => info!(
                    recovered = summary.recovered,
                    waiting = summary.waiting,
                    "reconciler correlated instances whose follow-up had been lost"
                ),
                Ok(summary) => debug!(?summary, "reconciler pass"),
                Err(e) => warn!("reconciler pass failed, will try again: {e}"),
            }
            let wait = if first {
                self.min_wait.min(interval)
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
                let Some(id) = subscription.process_instance_id else {
                    continue;
                };
                summary.waiting += 1;
                let seen = self.first_seen.get(&id).copied().unwrap_or(now);
                if now.duration_since(seen) >= self.min_wait && !self.follow_ups.is_pending(&id) {
                    due.push(id.clone());
                }
                still_waiting.insert(id, seen);
            }
            if page_len < PAGE_SIZE {
                break;
            }
            first_result += PAGE_SIZE;
        }
        // Forget instances that stopped waiting, so the map stays as large as the wait list.
        self.first_seen = still_waiting;
        for id in due {
            let request = CorrelateMessageRequest {
                message_name: message_name.clone(),
                business_key: None,
                process_instance_id: Some(id.clone()),
            };
            match self.client.correlate_message(&request).await {
                Ok(()) => {
                    summary.recovered += 1;
                    self.metrics.follow_up_recovered();
                    info!(process_instance_id = %id, "recovered a lost follow-up");
                    self.first_seen.remove(&id);
                }
                Err(e) if e.mismatch().is_some() => {
                    summary.already_done += 1;
                    debug!(process_instance_id = %id, "already correlated by someone else");
                    self.first_seen.remove(&id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(summary)
    }
}
