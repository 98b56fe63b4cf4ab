//! A follow-up's work (see [`crate::work`]) before its message: run with retries and backoff,
//! bounded by `--follow-up-concurrency`, under a lease (see [`crate::ledger`]) that the worker
//! renews so that no other replica runs it too; for good failures an incident on the waiting
//! execution and the lease set to failed; at shutdown the lease handed back, so the next start
//! runs it at once. Only the lease variable is written here: the marker, which the message
//! names, is never written but by `complete` and the message.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, warn, Instrument};

use super::calls::Ledger;
use super::{lock, Delivery, FollowUp, FollowUps, GiveUpReason, LeaseCell};
use crate::backoff::Backoff;
use crate::engine::EngineError;
use crate::ledger::Marker;
use crate::metrics::{Metrics, Outcome};
use crate::variables::{TypedValue, Variables};
use crate::work::WorkError;

/// How one run of a follow-up's work ended: the `outcome` of `follow_up_work_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkOutcome {
    /// It returned the message's variables.
    Succeeded,
    /// It failed and will run again.
    Retried,
    /// It failed for good: an incident, no message.
    Failed,
    /// Shutdown stopped it; it stays owed for the next start.
    Interrupted,
}

impl Outcome for WorkOutcome {
    const ALL: &'static [Self] = &[
        WorkOutcome::Succeeded,
        WorkOutcome::Retried,
        WorkOutcome::Failed,
        WorkOutcome::Interrupted,
    ];
    const LABEL: &'static str = "outcome";
    fn label(self) -> &'static str {
        match self {
            WorkOutcome::Succeeded => "succeeded",
            WorkOutcome::Retried => "retried",
            WorkOutcome::Failed => "failed",
            WorkOutcome::Interrupted => "interrupted",
        }
    }
}

/// What the work phase left for the message.
enum WorkEnd {
    /// The message's variables.
    Done(Variables),
    /// Failed for good (incident raised, lease failed).
    Failed,
    /// Shutdown came first.
    Interrupted,
}

/// Counts a running work in the gauge for as long as it lives (a work abandoned at the end of
/// the grace is dropped, not finished).
struct Running<'a>(&'a Metrics);

impl<'a> Running<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        metrics.follow_up_work_running.inc();
        Running(metrics)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.follow_up_work_running.dec();
    }
}

impl FollowUps {
    /// The whole follow-up of a route with work: the work, then (no earlier than `due`) the
    /// message with its result; the lease renewed throughout.
    pub(super) async fn work_then_deliver(&self, follow_up: &FollowUp, due: Instant) -> Delivery {
        let ledger = &self.inner.client;
        self.work_then_deliver_via(ledger, follow_up, due).await
    }

    /// [`FollowUps::work_then_deliver`] through `ledger`.
    async fn work_then_deliver_via<L: Ledger>(
        &self,
        ledger: &L,
        follow_up: &FollowUp,
        due: Instant,
    ) -> Delivery {
        let lease = LeaseCell::new(follow_up.marker.clone(), follow_up.lease.clone());
        let pipeline = async {
            let variables = match self.run_work(follow_up, &lease).await {
                WorkEnd::Done(variables) => variables,
                WorkEnd::Failed => return Delivery::GivenUp(GiveUpReason::WorkFailed),
                WorkEnd::Interrupted => {
                    // Counted first: the hand-back is a call that the end of the grace may cut.
                    let left = self.leave_owed(follow_up);
                    Box::pin(self.hand_back_lease(follow_up, &lease)).await;
                    return left;
                }
            };
            self.wait_until_due(due).await;
            let delivery =
                Box::pin(self.deliver_via(ledger, follow_up, &variables, Some(due))).await;
            if follow_up.recovered
                && matches!(delivery, Delivery::Sent | Delivery::AlreadyDelivered)
            {
                // A follow-up given up earlier raised an incident: it is settled now.
                if let Some(instance) = follow_up.process_instance_id.as_deref() {
                    Box::pin(self.resolve_incidents(instance, follow_up.marker.task_id())).await;
                }
            }
            delivery
        };
        tokio::pin!(pipeline);
        tokio::select! {
            delivery = &mut pipeline => return delivery,
            // Renewal stops only when the lease is lost: the follow-up goes on, and its message
            // (or its marker read) tells whether another worker took it over.
            () = self.renew_lease_via(ledger, follow_up, &lease) => {}
        }
        pipeline.await
    }

    /// Runs the work until it succeeds, fails for good, or shutdown stops it.
    async fn run_work(&self, follow_up: &FollowUp, lease: &LeaseCell) -> WorkEnd {
        let settings = &self.inner.policy;
        let mut backoff = Backoff::starting_at(Duration::from_secs(1), settings.max_backoff);
        let mut runs = 0;
        let last = loop {
            runs += 1;
            let error = match self.run_once(follow_up).await {
                Ok(end) => return end,
                Err(error) => error,
            };
            if !error.retry || runs > settings.work_retries {
                break error;
            }
            self.count_run(follow_up, WorkOutcome::Retried);
            let wait = backoff.next_delay();
            warn!(
                run = runs,
                "follow-up work failed, running it again in {}: {error}",
                humantime::format_duration(wait)
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.hurry.cancelled() => return WorkEnd::Interrupted,
            }
        };
        self.count_run(follow_up, WorkOutcome::Failed);
        Box::pin(self.work_failed(follow_up, lease, runs, &last)).await;
        WorkEnd::Failed
    }

    /// One run of the work in a work slot: how the follow-up ends (its variables, or shutdown
    /// stopped it), or the error of a run that failed.
    async fn run_once(&self, follow_up: &FollowUp) -> Result<WorkEnd, WorkError> {
        let run = async {
            // The semaphore is never closed, so acquiring only fails if it were.
            let _slot = self.inner.work_slots.acquire().await.ok();
            let _running = Running::start(&self.inner.metrics);
            let work = self.route.work.run(&follow_up.task, &self.inner.hurry);
            Box::pin(work.instrument(tracing::debug_span!("work"))).await
        };
        let result = tokio::select! {
            result = run => result,
            // The grace is over: the work is dropped (a command killed), owed for the next
            // start once its lease runs out.
            _ = self.inner.abort.cancelled() => {
                self.count_run(follow_up, WorkOutcome::Interrupted);
                return Ok(WorkEnd::Interrupted);
            }
        };
        match result {
            Ok(variables) => {
                self.count_run(follow_up, WorkOutcome::Succeeded);
                Ok(WorkEnd::Done(variables))
            }
            Err(_) if self.inner.hurry.is_cancelled() => {
                self.count_run(follow_up, WorkOutcome::Interrupted);
                Ok(WorkEnd::Interrupted)
            }
            Err(error) => Err(error),
        }
    }

    /// Counts one run of the follow-up's work in `follow_up_work_runs_total`.
    fn count_run(&self, follow_up: &FollowUp, outcome: WorkOutcome) {
        let metrics = &self.inner.metrics;
        metrics.count_topic(&metrics.follow_up_work_runs, outcome, &follow_up.task.topic);
    }

    /// Work failed for good: one ERROR, an incident on the waiting execution carrying the
    /// work's message, and the lease set to failed (so no reconciler runs it again until the
    /// incident is resolved).
    async fn work_failed(
        &self,
        follow_up: &FollowUp,
        lease: &LeaseCell,
        runs: u32,
        last: &WorkError,
    ) {
        let task_id = follow_up.marker.task_id();
        error!(
            runs,
            "follow-up work failed for good, no message sent: {last}; an incident on the waiting execution shows it, and resolving the incident runs the work again"
        );
        let metrics = &self.inner.metrics;
        metrics.count_topic(
            &metrics.follow_ups_given_up,
            GiveUpReason::WorkFailed,
            &follow_up.task.topic,
        );
        let Some(instance) = follow_up.process_instance_id.as_deref() else {
            return;
        };
        let message =
            format!("camunda-worker: the work of task {task_id}'s follow-up failed: {last}");
        self.raise_incident(instance, task_id, &message).await;
        let mut state = lease.lock().await;
        let failed = follow_up.marker.failed();
        self.spend_budget().await;
        match self.write_lease(instance, &failed).await {
            Ok(()) => state.current = Some(failed),
            Err(e) => warn!("cannot mark the failed follow-up in the engine (it stays owed, and runs again once its lease is over): {e}"),
        }
    }

    /// Writes the follow-up's lease variable in `instance`.
    async fn write_lease(&self, instance: &str, lease: &Marker) -> Result<(), EngineError> {
        let variable = self.inner.policy.lease_variable();
        self.inner
            .client
            .set_instance_variable(instance, &variable, &marker_value(lease))
            .await
    }

    /// Renews the lease every quarter of its length, for as long as the follow-up runs (a slow
    /// engine may take a while to answer the read and the write: three quarters are headroom). Returns
    /// once the lease is lost: another worker wrote one on this task (it took the follow-up
    /// over), or no renewal went through for a whole lease — after which this worker must not
    /// write the lease any more, since another may own it. A renewal that reaches the engine late
    /// can do no harm: the lease is a variable no message names, and a lease on a task the marker
    /// no longer owes holds nobody off.
    async fn renew_lease_via<L: Ledger>(
        &self,
        ledger: &L,
        follow_up: &FollowUp,
        lease: &LeaseCell,
    ) {
        let Some(instance) = follow_up.process_instance_id.as_deref() else {
            return std::future::pending().await;
        };
        let settings = &self.inner.policy;
        let variable = settings.lease_variable();
        let mut held_until = Instant::now() + settings.lease;
        loop {
            tokio::time::sleep(settings.lease / 4).await;
            let mut state = lease.lock().await;
            if Instant::now() >= held_until {
                warn!("the follow-up's lease ran out before it could be renewed; another worker may run its work too (its message still goes once)");
                return;
            }
            // The calls are boxed: between renewals the lease keeps only this loop's few fields.
            match Box::pin(ledger.read_marker(instance, &variable)).await {
                Ok(value) => {
                    let read = value.as_deref().and_then(Marker::parse);
                    if value.is_some() && read.is_none() || !state.is_ours(read.as_ref()) {
                        debug!("the follow-up's lease is another worker's now: it took the follow-up over");
                        return;
                    }
                }
                Err(e) => {
                    debug!("cannot read the follow-up's lease to renew it: {e}");
                    continue;
                }
            }
            let asked = Instant::now();
            let renewed = follow_up.marker.owed_again(settings.lease);
            match Box::pin(ledger.write_lease(instance, &variable, &renewed)).await {
                Ok(()) => {
                    state.current = Some(renewed);
                    state.maybe = None;
                    held_until = asked + settings.lease;
                }
                Err(e) => {
                    debug!("cannot renew the follow-up's lease: {e}");
                    if e.outcome_unknown() {
                        state.maybe = Some(renewed);
                    }
                }
            }
        }
    }

    /// At shutdown, hands an interrupted work's lease back, so that the next start (or another
    /// replica) runs it at once instead of waiting out the lease.
    async fn hand_back_lease(&self, follow_up: &FollowUp, lease: &LeaseCell) {
        let Some(instance) = follow_up.process_instance_id.as_deref() else {
            return;
        };
        let state = lease.lock().await;
        if let Err(e) = self
            .write_lease(instance, &follow_up.marker.handed_back())
            .await
        {
            debug!("cannot hand the follow-up's lease back (it runs again once the lease is over): {e}");
        }
        drop(state);
        lock(&self.inner.given_up).remove(follow_up.marker.task_id());
    }
}

fn marker_value(marker: &Marker) -> TypedValue {
    TypedValue::string(marker.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use super::super::fake::{self, Call, FakeLedger};
    use super::super::{CorrelationPolicy, Delivery, FollowUpMessage, FollowUps, LeaseCell};
    use crate::ledger::Marker;
    use crate::variables::Variables;
    use crate::work::{CompletedTask, FollowUpWork, WorkError};

    /// Work that takes this long.
    struct Takes(Duration);

    impl FollowUpWork for Takes {
        async fn run(
            &self,
            _: &CompletedTask,
            _: &CancellationToken,
        ) -> Result<Variables, WorkError> {
            tokio::time::sleep(self.0).await;
            Ok(Variables::new())
        }
    }

    fn scheduler(work: Duration) -> FollowUps {
        let policy = CorrelationPolicy {
            lease: Duration::from_secs(60),
            ..CorrelationPolicy::default()
        };
        let message = FollowUpMessage {
            delay: Duration::from_secs(2),
            ..FollowUpMessage::default()
        };
        fake::follow_ups(policy, message, Arc::new(Takes(work)))
    }

    /// When the first message goes, from the completion, for work that takes `work`.
    async fn first_message_after(work: Duration) -> Duration {
        let follow_ups = scheduler(work);
        let f = fake::follow_up("task-1", Some("pi-1"), Duration::from_secs(60));
        let ledger = FakeLedger::holding(&f.marker);
        ledger.answer_messages(vec![Ok(())]);
        let due = follow_ups.due(&f);
        let delivery = follow_ups.work_then_deliver_via(&ledger, &f, due).await;
        assert_eq!(delivery, Delivery::Sent);
        let calls = ledger.calls();
        assert_eq!(
            calls.len(),
            1,
            "one message, no lease renewal yet: {calls:?}"
        );
        calls[0].0
    }

    #[tokio::test(start_paused = true)]
    async fn the_work_runs_within_the_delay_and_the_message_waits_for_the_rest() {
        let at = first_message_after(Duration::from_millis(1500)).await;
        assert_eq!(at, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn work_longer_than_the_delay_sends_its_message_as_soon_as_it_is_done() {
        let at = first_message_after(Duration::from_secs(3)).await;
        assert_eq!(at, Duration::from_secs(3));
    }

    /// Renews the lease of a follow-up whose instance holds its marker, for `within` at most;
    /// returns when renewal stopped (`None`: it was still renewing).
    async fn renew(ledger: &FakeLedger, marker: &Marker, within: Duration) -> Option<Duration> {
        let follow_ups = scheduler(Duration::ZERO);
        let mut f = fake::follow_up("task-1", Some("pi-1"), Duration::from_secs(60));
        f.marker = marker.clone();
        let cell = LeaseCell::new(marker.clone(), None);
        let started = Instant::now();
        let renewal = follow_ups.renew_lease_via(ledger, &f, &cell);
        tokio::time::timeout(within, renewal)
            .await
            .ok()
            .map(|()| started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_read_and_renewed_every_quarter_of_its_length() {
        let marker = Marker::owed("t", "task-1", Duration::from_secs(60));
        let ledger = FakeLedger::holding(&marker);

        let stopped = renew(&ledger, &marker, Duration::from_secs(61)).await;

        assert_eq!(stopped, None, "renewal goes on while the marker is ours");
        let calls = ledger.calls();
        let times: Vec<u64> = calls.iter().map(|(at, _)| at.as_secs()).collect();
        assert_eq!(times, vec![15, 15, 30, 30, 45, 45, 60, 60]);
        for pair in calls.chunks(2) {
            assert_eq!(pair[0].1, Call::ReadLease);
            let Call::WriteLease(value) = &pair[1].1 else {
                panic!("a write follows each read: {calls:?}");
            };
            let written = Marker::parse(value).expect("an owed marker");
            assert_eq!(written.task_id(), "task-1");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_no_renewal_went_through_for_is_lost_at_its_end() {
        let marker = Marker::owed("t", "task-1", Duration::from_secs(60));
        let ledger = FakeLedger::holding(&marker);
        ledger
            .writes
            .lock()
            .unwrap()
            .extend((0..10).map(|_| Err(fake::unavailable())));

        let stopped = renew(&ledger, &marker, Duration::from_secs(600)).await;

        assert_eq!(stopped, Some(Duration::from_secs(60)));
        assert_eq!(
            ledger.calls().len(),
            6,
            "three reads and three failed writes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_another_worker_wrote_on_the_task_ends_the_renewal_at_the_next_read() {
        let marker = Marker::owed("t", "task-1", Duration::from_secs(60));
        let ledger = FakeLedger::holding(&marker);
        let taken = Marker::owed("t", "task-1", Duration::from_secs(3600));
        *ledger.lease.lock().unwrap() = Some(taken.to_string());

        let stopped = renew(&ledger, &marker, Duration::from_secs(600)).await;

        assert_eq!(stopped, Some(Duration::from_secs(15)));
        assert_eq!(ledger.kinds(), vec![Call::ReadLease]);
    }

    /// An old round's lease (another task) is no one's: the first renewal writes over it; the
    /// marker, which the message names, is never written.
    #[tokio::test(start_paused = true)]
    async fn an_old_rounds_lease_is_renewed_over_and_the_marker_is_never_written() {
        let marker = Marker::owed("t", "task-2", Duration::from_secs(60));
        let ledger = FakeLedger::holding(&marker);
        let old_round = Marker::owed("t", "task-1", Duration::from_secs(3600));
        *ledger.lease.lock().unwrap() = Some(old_round.to_string());

        let stopped = renew(&ledger, &marker, Duration::from_secs(31)).await;

        assert_eq!(stopped, None, "still renewing");
        let kinds = ledger.kinds();
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        for call in [&kinds[1], &kinds[3]] {
            let Call::WriteLease(value) = call else {
                panic!("{kinds:?}");
            };
            assert_eq!(Marker::parse(value).unwrap().task_id(), "task-2");
        }
        assert_eq!(
            ledger.marker.lock().unwrap().as_deref(),
            Some(marker.to_string().as_str())
        );
    }
}
