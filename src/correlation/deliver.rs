//! Delivering one follow-up's message: attempts with backoff up to `--correlation-timeout`, a
//! mismatch decided by one read of the marker, and the tally of what shutdown left owed.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{lock, Delivery, FollowUp, FollowUps, GiveUpReason, MarkerCell, MarkerState};
use crate::backoff::Backoff;
use crate::engine::{EngineError, Mismatch};
use crate::ledger::Marker;
use crate::variables::Variables;

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

impl FollowUps {
    /// Delivers the message (carrying `variables`), retrying as the policy says; `due` is when
    /// it was due, for the lateness metric.
    pub(super) async fn deliver_due(
        &self,
        follow_up: &FollowUp,
        marker: &MarkerCell,
        variables: &Variables,
        due: Option<Instant>,
    ) -> Delivery {
        let settings = &self.inner.policy;
        let started = Instant::now();
        let mut backoff = Backoff::starting_at(Duration::from_millis(200), settings.max_backoff);
        let mut engine_trouble_logged = false;
        let mut progress = Progress::default();
        let mut retried_at_once = false;
        loop {
            let attempt = {
                // A retry waits for the budget before it takes a send slot: slots held while
                // waiting would hold back the first attempts of other follow-ups, which the
                // budget exempts (measured: 56 s late on average behind 4096 retrying ones).
                // Once shutdown has begun, a retry stays owed in the engine instead: behind a
                // queue of thousands (at 20 a second) it would hold the grace to its end.
                if progress.attempts > 0 {
                    tokio::select! {
                        () = self.spend_budget() => {}
                        _ = self.inner.hurry.cancelled() => return self.leave_owed(follow_up),
                        _ = self.inner.abort.cancelled() => return self.leave_owed(follow_up),
                    }
                }
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
                let attempt = Box::pin(self.attempt(follow_up, marker, variables, &mut progress));
                tokio::select! {
                    attempt = attempt => attempt,
                    // The grace is over: what did not go through stays owed in the engine.
                    _ = self.inner.abort.cancelled() => return self.leave_owed(follow_up),
                }
            };
            let last_error = match attempt {
                Attempt::Delivered => {
                    self.route_works();
                    self.inner.metrics.follow_up_sent(
                        &follow_up.task.topic,
                        follow_up.fetched_at.map(|t| t.elapsed()),
                        false,
                    );
                    debug!("follow-up message correlated");
                    return Delivery::Sent;
                }
                Attempt::DeliveredEarlier(how) => {
                    self.inner.metrics.follow_up_sent(
                        &follow_up.task.topic,
                        follow_up.fetched_at.map(|t| t.elapsed()),
                        true,
                    );
                    info!("the follow-up needs no message any more ({how}): counted as delivered");
                    return Delivery::AlreadyDelivered;
                }
                Attempt::Ambiguous(error) => {
                    let cause = format!(
                        "several executions wait for message {} with business key {}; use --correlate-by process-instance or both to make correlation exact ({error})",
                        self.route.message.name,
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
                        self.route.message.name
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
    pub(super) fn leave_owed(&self, follow_up: &FollowUp) -> Delivery {
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
        metrics.count_topic(
            &metrics.follow_ups_given_up,
            GiveUpReason::Shutdown,
            &follow_up.task.topic,
        );
        Delivery::GivenUp(GiveUpReason::Shutdown)
    }

    /// Logs, once, how many follow-ups shutdown left owed in the engine (none: nothing).
    pub fn report_left_owed(&self) {
        let left = lock(&self.inner.left_owed);
        if left.count > 0 {
            let noun = if left.count == 1 {
                "follow-up"
            } else {
                "follow-ups"
            };
            warn!(
                count = left.count,
                example = left.example.as_deref().unwrap_or("-"),
                "{} {noun} not delivered before shutdown: they stay owed in the engine (marker variable {}), and the reconciler of any worker delivers them",
                left.count,
                self.inner.policy.marker_variable,
            );
        }
    }

    /// One attempt: the message, and, when it matches nothing, maybe a read of the marker. A retry
    /// has spent its budget before (see [`FollowUps::deliver_due`]).
    async fn attempt(
        &self,
        follow_up: &FollowUp,
        marker: &MarkerCell,
        variables: &Variables,
        progress: &mut Progress,
    ) -> Attempt {
        progress.attempts += 1;
        // Held across the call: a lease renewal must not change the marker under the message.
        let mut state = marker.lock().await;
        let request = self.route.message.request(
            &self.inner.policy.marker_variable,
            &state.current,
            follow_up.target.business_key.clone(),
            follow_up.target.process_instance_id.clone(),
            variables,
        );
        let error = match self.inner.client.correlate_message(&request).await {
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
                // At shutdown, undecided: the follow-up stays owed (see `deliver_due`).
                if progress.mismatches > 1 {
                    tokio::select! {
                        () = self.spend_budget() => {}
                        _ = self.inner.hurry.cancelled() => return Attempt::NotWaiting,
                    }
                }
                let decided = self.read_marker(follow_up, &mut state).await;
                if matches!(decided, Attempt::NotWaiting) {
                    progress.maybe_delivered = false;
                    // Still owed to us: not waiting yet, or waiting for another name. The first
                    // such mismatch of the route tells which (one diagnosis per route at a time).
                    drop(state);
                    self.diagnose(follow_up).await;
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
    async fn read_marker(&self, follow_up: &FollowUp, state: &mut MarkerState) -> Attempt {
        let Some(instance) = follow_up.process_instance_id.as_deref() else {
            return Attempt::NotWaiting;
        };
        let value = match self
            .inner
            .client
            .instance_variable(instance, &self.inner.policy.marker_variable)
            .await
        {
            Ok(value) => value,
            Err(e) => return Attempt::EngineTrouble(e),
        };
        match value.as_deref().map(Marker::parse) {
            Some(Some(marker)) if state.is_ours(&marker) => Attempt::NotWaiting,
            Some(Some(marker)) if marker == follow_up.marker.delivered() => {
                Attempt::DeliveredEarlier("the marker shows it delivered")
            }
            Some(Some(marker @ Marker::Owed { .. }))
                if marker.task_id() == follow_up.marker.task_id() =>
            {
                Attempt::DeliveredEarlier("another worker took the follow-up over")
            }
            Some(_) => Attempt::DeliveredEarlier("the marker belongs to a later round"),
            None => Attempt::DeliveredEarlier("the instance has ended"),
        }
    }
}
