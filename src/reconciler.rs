//! Crash recovery from the engine's own ledger: every follow-up owed is a marker variable in its
//! process instance (see [`crate::ledger`]), so the worker asks the engine which ones are past
//! their due time, and hands them to the live follow-up's own delivery
//! ([`FollowUps::recover_owed`]): the same compare-and-set message, the same decision of a
//! mismatch.
//!
//! One range query per pass finds the owed markers of this worker's topic whose due time has
//! passed; a follow-up still in this process's memory is left to it. Every recovery is the
//! marker's own message: it matches only while the marker is owed, so a recovery that races a
//! live follow-up of another replica, another replica's reconciler, or a stale one for a round the
//! process has looped past, matches nothing — the engine decides, and nothing needs history
//! (every history level works) or coordination between replicas.
//!
//! When the follow-ups do work (see [`crate::work`]), a marker past due whose lease holds nobody
//! off is a work whose worker crashed, handed it back at shutdown, or never started it: the
//! reconciler claims it with a fresh lease and runs the whole follow-up — work, then message — as
//! if the task had just been completed. A failed work whose incident an operator resolved is run
//! again the same way (see [`claims`]).
//!
//! A marker whose instance does not wait (yet) is tried again on a backoff of its own; every
//! recovery spends the worker-wide retry budget. A pass that could not deliver some says so in
//! one line, with the count and one example.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::correlation::{CorrelationTarget, FollowUp, FollowUps, Recovery};
use crate::engine::{EngineClient, EngineError, TenantScope};
use crate::health::Liveness;
use crate::ledger::{owed_range, Marker};
use crate::metrics::{Metrics, NoOutcome, Outcome};
use crate::variables::TypedValue;
use crate::work::{plain_values, CompletedTask};

/// The longest interval between passes of an idle worker. Recovery after a crash does not wait
/// for it: a restarted worker runs a pass at start, and any worker that fetches tasks runs passes
/// at `--reconcile-interval`.
pub const IDLE_INTERVAL: Duration = Duration::from_secs(600);

/// The longest a marker that could not be delivered waits before this reconciler tries it again.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(600);

/// Markers are read in pages of this size.
const PAGE_SIZE: u64 = 500;

/// How a pass ended: the `outcome` of `reconciler_passes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOutcome {
    /// The pass read the owed markers (recoveries that failed are tried again later).
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

/// Finds owed follow-ups past their due time and delivers them.
#[derive(Debug)]
pub struct Reconciler {
    client: EngineClient,
    follow_ups: FollowUps,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    /// The topic whose markers this reconciler delivers.
    topic: String,
    /// The tenants whose markers it delivers: its route's.
    tenants: TenantScope,
    /// Markers that could not be delivered, by task id: when to try again, and the wait after.
    retry: HashMap<String, (Instant, Duration)>,
    /// The first wait before a marker that could not be delivered is tried again.
    first_retry_wait: Duration,
}

/// What one reconciliation pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassSummary {
    /// Owed markers past their due time.
    pub overdue: usize,
    /// Follow-ups this pass delivered.
    pub recovered: usize,
    /// Markers left to this process's own follow-ups, or to a later try.
    pub skipped: usize,
    /// Markers whose message matched nothing (the instance is not at the catch event, or someone
    /// delivered it in between): tried again later.
    pub not_waiting: usize,
    /// Recoveries that failed with an engine error (tried again later).
    pub failed: usize,
    /// Failed works whose incident was resolved, run again by this pass.
    pub rerun: usize,
    /// Failed works seen (resolved or not): while there are any, passes keep to the interval, so
    /// that resolving an incident runs its work again within it, even on an idle worker.
    pub failed_work: usize,
}

impl Reconciler {
    /// A reconciler for the follow-ups of `topic`.
    pub fn new(
        client: EngineClient,
        follow_ups: FollowUps,
        metrics: Arc<Metrics>,
        liveness: Arc<Liveness>,
        topic: &str,
    ) -> Self {
        metrics.preset::<PassOutcome>(&metrics.reconciler_passes);
        Reconciler {
            client,
            follow_ups,
            metrics,
            liveness,
            topic: topic.to_owned(),
            tenants: TenantScope::default(),
            retry: HashMap::new(),
            first_retry_wait: Duration::from_secs(30),
        }
    }

    /// The same, trying undelivered markers again after `wait` first (tests use a short one).
    pub fn with_first_retry_wait(mut self, wait: Duration) -> Self {
        self.first_retry_wait = wait;
        self
    }

    /// Runs passes at start and every `interval` until `stop` is cancelled. While passes find
    /// nothing to recover and the worker fetches no task, the interval grows (×4 a pass, up to
    /// [`IDLE_INTERVAL`]): an idle worker costs the engine next to nothing. Any activity brings it
    /// back to `interval`, and the engine answering again after an outage brings a pass at once.
    pub async fn run(mut self, interval: Duration, stop: CancellationToken) {
        let mut next = Instant::now();
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
                    self.report(&summary);
                    summary.overdue > 0 || summary.failed_work > 0
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
            wait = if idle {
                (wait * 4).clamp(interval, IDLE_INTERVAL.max(interval))
            } else {
                interval
            };
            next = Instant::now() + wait;
        }
    }

    fn report(&self, summary: &PassSummary) {
        if summary.recovered > 0 {
            info!(
                recovered = summary.recovered,
                overdue = summary.overdue,
                "reconciler delivered follow-ups that were owed past their due time"
            );
        } else {
            debug!(?summary, "reconciler pass");
        }
    }

    /// Claims an owed (or resolved failed) follow-up with a fresh lease and runs it whole: the
    /// work, then the message. `Ok(false)`: not now (no room, or the instance has ended).
    async fn run_again(&self, marker: &Marker, instance: &str) -> Result<bool, EngineError> {
        let Ok(room) = self.follow_ups.room().try_acquire_owned() else {
            return Ok(false);
        };
        let follow_ups = &self.follow_ups;
        follow_ups.spend_budget().await;
        let Some(found) = self.client.process_instance(instance).await? else {
            return Ok(false);
        };
        let names = follow_ups.work().variables_to_fetch();
        follow_ups.spend_budget().await;
        let variables = self
            .client
            .instance_variables(instance, &names)
            .await?
            .unwrap_or_default();
        // The lease only: the marker stays what `complete` wrote, and the message names it.
        let claimed = marker.owed_again(follow_ups.policy().lease);
        follow_ups.spend_budget().await;
        self.client
            .set_instance_variable(
                instance,
                &follow_ups.policy().lease_variable(),
                &TypedValue::string(claimed.to_string()),
            )
            .await?;
        let task = CompletedTask {
            task_id: marker.task_id().to_owned(),
            topic: self.topic.clone(),
            business_key: found.business_key.clone(),
            process_instance_id: Some(instance.to_owned()),
            variables: plain_values(&variables),
            // The completed task is gone, and its properties with it: a recovered work gets none.
            extension_properties: None,
        };
        follow_ups.schedule(
            FollowUp {
                // The instance's own tenant, as the engine has it: the message stays within it.
                target: CorrelationTarget {
                    business_key: found.business_key,
                    process_instance_id: Some(instance.to_owned()),
                    tenant_id: found.tenant_id,
                },
                process_instance_id: Some(instance.to_owned()),
                marker: marker.clone(),
                lease: Some(claimed),
                task,
                fetched_at: None,
                // The delay counts from the completion, long past.
                completed_at: Instant::now()
                    .checked_sub(follow_ups.message().delay)
                    .unwrap_or_else(Instant::now),
                recovered: true,
                trace_parent: None,
            },
            Some(room),
        );
        Ok(true)
    }

    /// One pass over the owed markers past their due time.
    pub async fn pass(&mut self) -> Result<PassSummary, EngineError> {
        let (from, to) = owed_range(&self.topic);
        let marker_variable = self.follow_ups.policy().marker_variable.clone();
        let mut overdue = self.markers_in(&marker_variable, &from, &to).await?;
        overdue.retain(|found| matches!(found.marker, Marker::Owed { .. }));
        if self.follow_ups.work().is_work() {
            return self.work_pass(overdue).await;
        }
        let mut summary = PassSummary {
            overdue: overdue.len(),
            ..PassSummary::default()
        };
        let now = Instant::now();
        let mut example: Option<String> = None;
        let owed: HashSet<&str> = overdue.iter().map(|f| f.marker.task_id()).collect();
        self.retry.retain(|task, _| owed.contains(task.as_str()));
        for found in &overdue {
            let (marker, instance) = (&found.marker, &found.instance);
            if self.leaves_alone(marker.task_id(), now) {
                summary.skipped += 1;
                continue;
            }
            if let Some(why) = self.deliver(found, now, &mut summary).await {
                example.get_or_insert_with(|| {
                    format!(
                        "process instance {instance}, task {}: {why}",
                        marker.task_id()
                    )
                });
            }
        }
        report_undelivered(&summary, example);
        Ok(summary)
    }

    /// Whether this pass leaves an overdue marker alone: its follow-up is in this worker's hands
    /// (pending, held while its `complete` settles, or given up here recently), or its next try
    /// is not due yet.
    fn leaves_alone(&self, task_id: &str, now: Instant) -> bool {
        let later = self.retry.get(task_id).is_some_and(|(at, _)| now < *at);
        later || self.follow_ups.is_pending(task_id)
    }

    /// Delivers an overdue marker's message on the live follow-up's path
    /// ([`FollowUps::recover_owed`]); why not, if it did not go through (tried again later).
    async fn deliver(
        &mut self,
        found: &FoundMarker,
        now: Instant,
        summary: &mut PassSummary,
    ) -> Option<String> {
        let FoundMarker {
            marker,
            instance,
            tenant_id,
        } = found;
        let task_id = marker.task_id();
        let recovery = self
            .follow_ups
            .recover_owed(marker, instance, tenant_id.as_deref());
        let reason = match recovery.await {
            Recovery::Delivered => {
                summary.recovered += 1;
                self.count_recovered();
                self.retry.remove(task_id);
                debug!(
                    process_instance_id = %instance,
                    task_id,
                    "reconciler delivered an owed follow-up"
                );
                // A follow-up given up earlier raised an incident: it is settled now.
                self.follow_ups.resolve_incidents(instance, task_id).await;
                return None;
            }
            Recovery::NotWaiting => {
                summary.not_waiting += 1;
                "the instance does not wait for the message".to_owned()
            }
            Recovery::Failed(e) => {
                summary.failed += 1;
                e.to_string()
            }
        };
        self.retry_later(task_id, now);
        Some(reason)
    }

    /// Tries an undelivered marker again after a wait that doubles each time, up to
    /// [`MAX_RETRY_WAIT`].
    fn retry_later(&mut self, task_id: &str, now: Instant) {
        let step = self
            .retry
            .get(task_id)
            .map_or(self.first_retry_wait, |(_, step)| {
                (*step * 2).min(MAX_RETRY_WAIT)
            });
        self.retry.insert(task_id.to_owned(), (now + step, step));
    }

    fn count_recovered(&self) {
        let metrics = &self.metrics;
        metrics.count_topic(&metrics.follow_ups_recovered, NoOutcome, &self.topic);
    }
}

/// One line for the owed follow-ups a pass could not deliver (or claim), with one example.
fn report_undelivered(summary: &PassSummary, example: Option<String>) {
    if let Some(example) = example {
        warn!(
            count = summary.not_waiting + summary.failed,
            "reconciler: {} owed follow-ups could not be delivered this pass (tried again later), e.g. {example}",
            summary.not_waiting + summary.failed,
        );
    }
}

mod claims;
mod markers;

use markers::FoundMarker;

#[cfg(test)]
mod tests;
