//! Delivering one follow-up's message — the one path for the live follow-up and for recovery:
//! attempts with backoff up to `--correlation-timeout`, a mismatch decided by one read of the
//! marker, and the tally of what shutdown left owed. A reconciler hands the owed marker it found
//! to [`super::recover`], which makes one [`FollowUps::attempt`] of the same kind.
//!
//! The engine calls a delivery makes go through [`Ledger`], so that the rules (when the marker is
//! read, what a retry spends, when a follow-up is given up) run in unit tests against a scripted
//! fake under a paused clock.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::calls::Ledger;
use super::{lock, Delivery, FollowUp, FollowUps, GiveUpReason};
use crate::backoff::Backoff;
use crate::engine::{EngineError, Mismatch};
use crate::ledger::Marker;
use crate::variables::Variables;

/// What one delivery attempt found.
#[derive(Debug)]
pub(super) enum Attempt {
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
pub(super) struct Progress {
    /// Attempts made; all but the first spend the retry budget.
    attempts: u32,
    /// Mismatches seen.
    mismatches: u32,
    /// Whether an earlier attempt may have gone through unseen (its reply was lost).
    maybe_delivered: bool,
    /// Whether the caller read the marker just before the first attempt (a reconciler's query
    /// found it owed): the first mismatch then needs no read of its own.
    marker_just_read: bool,
}

impl Progress {
    /// The progress of a follow-up whose caller has just read its marker owed.
    pub(super) fn after_marker_read() -> Self {
        Progress {
            marker_just_read: true,
            ..Progress::default()
        }
    }

    /// Whether the mismatch just counted is decided by a read of the marker: the first one, one
    /// after an attempt whose reply was lost, and then every fourth — never before a message was
    /// sent, and not the first when the caller has just read it.
    fn reads_marker(&self) -> bool {
        let first_known = self.mismatches == 1 && self.marker_just_read;
        self.maybe_delivered || (self.mismatches % 4 == 1 && !first_known)
    }
}

/// What a follow-up's delivery carries between its attempts.
struct Retrying {
    started: Instant,
    backoff: Backoff,
    engine_trouble_logged: bool,
    retried_at_once: bool,
    progress: Progress,
}

/// What an attempt's outcome asks of the delivery loop.
enum Next {
    /// The follow-up is over.
    Done(Delivery),
    /// The connection closed under the call: try again now, without backoff.
    AtOnce,
    /// Try again after the backoff (unless the timeout is over); why it did not go through.
    Later(String),
}

impl FollowUps {
    /// When a follow-up's message is due: the delay after its task's completion. The work (if
    /// any) runs within the delay; work that takes longer sends the message as soon as it is done.
    pub(super) fn due(&self, follow_up: &FollowUp) -> Instant {
        follow_up.completed_at + self.route.message.delay
    }

    /// Waits until `due`, or until shutdown begins: then the message goes at once.
    pub(super) async fn wait_until_due(&self, due: Instant) {
        let wait = async {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = self.inner.hurry.cancelled() => {}
            }
        };
        wait.instrument(tracing::debug_span!("wait")).await;
    }

    /// Delivers the message (carrying `variables`), retrying as the policy says; `due` is when
    /// it was due, for the lateness metric.
    pub(super) async fn deliver_due(
        &self,
        follow_up: &FollowUp,
        variables: &Variables,
        due: Option<Instant>,
    ) -> Delivery {
        let ledger = &self.inner.client;
        self.deliver_via(ledger, follow_up, variables, due).await
    }

    /// [`FollowUps::deliver_due`] through `ledger`.
    pub(super) async fn deliver_via<L: Ledger>(
        &self,
        ledger: &L,
        follow_up: &FollowUp,
        variables: &Variables,
        due: Option<Instant>,
    ) -> Delivery {
        let mut retrying = Retrying {
            started: Instant::now(),
            backoff: Backoff::starting_at(
                Duration::from_millis(200),
                self.inner.policy.max_backoff,
            ),
            engine_trouble_logged: false,
            retried_at_once: false,
            progress: Progress::default(),
        };
        loop {
            let attempt = self
                .try_once(ledger, follow_up, variables, due, &mut retrying.progress)
                .await;
            let Some(attempt) = attempt else {
                return self.leave_owed(follow_up);
            };
            let last_error = match Box::pin(self.conclude(follow_up, attempt, &mut retrying)).await
            {
                Next::Done(delivery) => return delivery,
                Next::AtOnce => continue,
                Next::Later(last_error) => last_error,
            };
            if let Some(end) =
                Box::pin(self.wait_to_retry(follow_up, &mut retrying, &last_error)).await
            {
                return end;
            }
        }
    }

    /// One attempt in its turn: a retry spends the budget first, every attempt takes a send slot.
    /// `None`: shutdown came first, and the follow-up stays owed.
    async fn try_once<L: Ledger>(
        &self,
        ledger: &L,
        follow_up: &FollowUp,
        variables: &Variables,
        due: Option<Instant>,
        progress: &mut Progress,
    ) -> Option<Attempt> {
        // A retry waits for the budget before it takes a send slot: slots held while waiting
        // would hold back the first attempts of other follow-ups, which the budget exempts
        // (measured: 56 s late on average behind 4096 retrying ones). Once shutdown has begun, a
        // retry stays owed in the engine instead: behind a queue of thousands (at 20 a second) it
        // would hold the grace to its end.
        if progress.attempts > 0 {
            tokio::select! {
                () = Box::pin(self.spend_budget()) => {}
                _ = self.inner.hurry.cancelled() => return None,
                _ = self.inner.abort.cancelled() => return None,
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
        // Boxed: a follow-up that waits out a backoff keeps only the loop's few fields, not the
        // (much larger) state of its HTTP calls.
        let attempt = Box::pin(self.attempt(ledger, follow_up, variables, progress));
        tokio::select! {
            attempt = attempt => Some(attempt),
            // The grace is over: what did not go through stays owed in the engine.
            _ = self.inner.abort.cancelled() => None,
        }
    }

    /// What an attempt's outcome means: delivered, given up, or tried again.
    async fn conclude(
        &self,
        follow_up: &FollowUp,
        attempt: Attempt,
        retrying: &mut Retrying,
    ) -> Next {
        let fetched = follow_up.fetched_at.map(|t| t.elapsed());
        match attempt {
            Attempt::Delivered => {
                self.route_works();
                let metrics = &self.inner.metrics;
                metrics.follow_up_sent(&follow_up.task.topic, fetched, false);
                debug!("follow-up message correlated");
                Next::Done(Delivery::Sent)
            }
            Attempt::DeliveredEarlier(how) => {
                let metrics = &self.inner.metrics;
                metrics.follow_up_sent(&follow_up.task.topic, fetched, true);
                info!("the follow-up needs no message any more ({how}): counted as delivered");
                Next::Done(Delivery::AlreadyDelivered)
            }
            Attempt::Ambiguous(error) => {
                let cause = format!(
                    "several executions wait for message {} with business key {}; use --correlate-by process-instance or both to make correlation exact ({error})",
                    self.route.message.name,
                    follow_up.target.business_key.as_deref().unwrap_or("-"),
                );
                let reason = GiveUpReason::Ambiguous;
                Next::Done(self.give_up(follow_up, reason, &cause).await)
            }
            Attempt::Refused(error) => {
                let cause = format!("the engine refused the message: {error}");
                let reason = GiveUpReason::Refused;
                Next::Done(self.give_up(follow_up, reason, &cause).await)
            }
            Attempt::NotWaiting => {
                debug!("the instance does not wait for the message yet; retrying");
                Next::Later(format!(
                    "the process instance did not reach the catch event for message {}",
                    self.route.message.name
                ))
            }
            Attempt::EngineTrouble(error) => self.engine_trouble(error, retrying),
        }
    }

    /// The engine failed the attempt: once at once when the connection closed under the call,
    /// else after the backoff.
    fn engine_trouble(&self, error: EngineError, retrying: &mut Retrying) -> Next {
        if error.retry_at_once() && !retrying.retried_at_once {
            // The connection closed under the call: try again now, without backoff (a mismatch
            // then reads the marker: the message may have arrived).
            retrying.retried_at_once = true;
            self.inner.metrics.follow_ups_retried.inc();
            return Next::AtOnce;
        }
        if error.is_optimistic_locking() {
            // Another node or replica changed the instance at the same moment: the next attempt,
            // or its marker read, tells whether the message arrived.
            debug!("follow-up raced another transaction, trying again: {error}");
        } else if !retrying.engine_trouble_logged {
            warn!("follow-up not sent yet, retrying: {error}");
            retrying.engine_trouble_logged = true;
        }
        Next::Later(error.to_string())
    }

    /// Waits out the backoff before the next attempt; `Some`: the follow-up ends instead (its
    /// timeout is over, or shutdown has begun).
    async fn wait_to_retry(
        &self,
        follow_up: &FollowUp,
        retrying: &mut Retrying,
        last_error: &str,
    ) -> Option<Delivery> {
        let settings = &self.inner.policy;
        if retrying.started.elapsed() >= settings.timeout {
            let cause = format!(
                "not delivered within --correlation-timeout {}: {last_error}",
                humantime::format_duration(settings.timeout)
            );
            return Some(self.give_up(follow_up, GiveUpReason::Timeout, &cause).await);
        }
        retrying.retried_at_once = false;
        self.inner.metrics.follow_ups_retried.inc();
        // Once shutdown has begun, a follow-up that did not go through stays owed in the engine:
        // the reconciler of any worker delivers it, so it need not hold the grace.
        if self.inner.hurry.is_cancelled() {
            return Some(self.leave_owed(follow_up));
        }
        tokio::select! {
            _ = tokio::time::sleep(retrying.backoff.next_delay()) => None,
            _ = self.inner.hurry.cancelled() => Some(self.leave_owed(follow_up)),
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
    pub(super) async fn attempt<L: Ledger>(
        &self,
        ledger: &L,
        follow_up: &FollowUp,
        variables: &Variables,
        progress: &mut Progress,
    ) -> Attempt {
        progress.attempts += 1;
        let request = self.route.message.request(
            &self.inner.policy.marker_variable,
            &follow_up.marker,
            &follow_up.target,
            variables,
        );
        let error = match ledger.correlate(&request).await {
            Ok(()) => return Attempt::Delivered,
            Err(error) => error,
        };
        match error.mismatch() {
            Some(Mismatch::MultipleMatches) => Attempt::Ambiguous(error),
            Some(Mismatch::NoMatch) => {
                progress.mismatches += 1;
                if !progress.reads_marker() {
                    return Attempt::NotWaiting;
                }
                // The first read decides the first attempt's mismatch; later ones are retries.
                // At shutdown, undecided: the follow-up stays owed (see `deliver_due`).
                if progress.mismatches > 1 {
                    tokio::select! {
                        () = Box::pin(self.spend_budget()) => {}
                        _ = self.inner.hurry.cancelled() => return Attempt::NotWaiting,
                    }
                }
                let decided = self.read_marker(ledger, follow_up).await;
                if matches!(decided, Attempt::NotWaiting) {
                    progress.maybe_delivered = false;
                    // Still owed to us: not waiting yet, or waiting for another name. The first
                    // such mismatch of the route tells which (one diagnosis per route at a time).
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
    async fn read_marker<L: Ledger>(&self, ledger: &L, follow_up: &FollowUp) -> Attempt {
        let Some(instance) = follow_up.process_instance_id.as_deref() else {
            return Attempt::NotWaiting;
        };
        let variable = &self.inner.policy.marker_variable;
        let value = match ledger.read_marker(instance, variable).await {
            Ok(value) => value,
            Err(e) => return Attempt::EngineTrouble(e),
        };
        match value.as_deref().map(Marker::parse) {
            Some(Some(marker)) if marker == follow_up.marker => Attempt::NotWaiting,
            Some(Some(marker)) if marker == follow_up.marker.delivered() => {
                Attempt::DeliveredEarlier("the marker shows it delivered")
            }
            // Only an earlier release moved the marker's due time (a lease renewed in it).
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

#[cfg(test)]
mod tests;
