//! One task's lifecycle, from the moment the fetch loop locked it: run the handler (extending the
//! lock while it runs), report the result to the engine, and schedule the follow-up once the
//! engine has the completion.
//!
//! Each call's result is an outcome the caller matches on, never a bare bool. The one subtle
//! case is the lost reply: `complete` reaches the engine and commits, but its answer is lost (a
//! reset, a timeout, a proxy's 504), and the retry answers 404 because the task is done. That task
//! was completed — by this worker — and its follow-up is owed: the engine's state decides it (the
//! history's record of the completion, or the instance now waiting for our message).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};

use crate::metrics::{NoOutcome, Outcome};

use super::context::WorkerContext;
use super::handback::{hand_back, HandBack};
use super::lock::keep_lock;
use super::settle::{settle, Accepted, LostAttempt, Unsettled};
use crate::correlation::{CorrelationTarget, FollowUp, FollowUps};
use crate::engine::{
    millis, BpmnErrorRequest, CompleteRequest, EngineError, ExtendLockRequest, ExternalTask,
    FailureRequest,
};
use crate::handler::{Handler, HandlerError, TaskResult};
use crate::ledger::Marker;
use crate::traces;
use crate::work::CompletedTask;

/// Why a task was dropped without a follow-up (the `reason` of `tasks_dropped_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// The task no longer exists (404): cancelled, or completed by another worker.
    TaskGone,
    /// Another worker holds the lock (400), or the lock ran out before completion succeeded.
    LockLost,
    /// The task was reported as a failure to the engine.
    Failed,
}

impl Outcome for DropReason {
    const ALL: &'static [Self] = &[
        DropReason::TaskGone,
        DropReason::LockLost,
        DropReason::Failed,
    ];
    const LABEL: &'static str = "reason";

    fn label(self) -> &'static str {
        match self {
            DropReason::TaskGone => "task_gone",
            DropReason::LockLost => "lock_lost",
            DropReason::Failed => "failed",
        }
    }
}

/// How a task's processing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Completed; `follow_up` says whether a follow-up message was scheduled.
    Completed {
        /// Whether a follow-up was scheduled.
        follow_up: bool,
    },
    /// Reported as a failure (`/failure`).
    Failed,
    /// Reported as a BPMN error.
    BpmnError,
    /// Given up without a follow-up.
    Dropped(DropReason),
    /// Fetched after shutdown began: given back to the engine unhandled.
    Unlocked,
    /// The shutdown grace ended first: the handler was stopped and the lock given back.
    Abandoned,
}

/// What the handler run gave.
enum HandlerRun {
    Finished(Result<TaskResult, HandlerError>),
    Abandoned,
}

/// One locked task and everything its processing needs.
pub(super) struct TaskRun<H> {
    ctx: Arc<WorkerContext<H>>,
    task: ExternalTask,
    fetched_at: Instant,
    /// When the lock expires, as far as this worker knows: fetch time + lock duration, moved on
    /// by every successful extension. Retrying the final call makes sense only until then.
    lock_until: Instant,
    /// The unit of follow-up capacity this task was fetched with.
    room: Option<OwnedSemaphorePermit>,
    /// The task's topic: which route it belongs to.
    topic: String,
    /// How long a lock on this task's topic lasts (each extension asks for as long again).
    lock: Duration,
}

impl<H: Handler> TaskRun<H> {
    pub(super) fn new(
        ctx: Arc<WorkerContext<H>>,
        task: ExternalTask,
        fetched_at: Instant,
        room: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let subscription = ctx.settings.subscription_of(&task);
        let topic = subscription.topic.clone();
        let lock = subscription.lock_duration;
        TaskRun {
            ctx,
            task,
            fetched_at,
            lock_until: fetched_at + lock,
            room,
            topic,
            lock,
        }
    }

    pub(super) fn task_id(&self) -> &str {
        &self.task.id
    }

    /// Handles the task to its end.
    pub(super) async fn process(mut self) -> TaskOutcome {
        if self.ctx.stop.shutdown.is_cancelled() {
            // Fetched but not started before shutdown: give it back so another worker takes it
            // now instead of after the lock expires.
            hand_back(&self.ctx, &self.task.id, HandBack::NotStarted).await;
            return TaskOutcome::Unlocked;
        }
        let started = Instant::now();
        let run = self.run_handler().await;
        self.ctx
            .metrics
            .handler_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        match run {
            HandlerRun::Abandoned => {
                hand_back(&self.ctx, &self.task.id, HandBack::Abandoned).await;
                TaskOutcome::Abandoned
            }
            HandlerRun::Finished(Ok(TaskResult::Complete {
                variables,
                follow_up,
            })) => self.complete(variables, follow_up).await,
            HandlerRun::Finished(Ok(TaskResult::BpmnError {
                code,
                message,
                variables,
            })) => self.report_bpmn_error(code, message, variables).await,
            HandlerRun::Finished(Err(failure)) => self.report_failure(failure).await,
        }
    }

    async fn complete(
        &mut self,
        mut variables: crate::variables::Variables,
        target: Option<CorrelationTarget>,
    ) -> TaskOutcome {
        // The follow-up's record in the engine, committed with the completion (`crate::ledger`).
        let follow_ups = self.ctx.follow_ups.for_topic(&self.topic);
        let marker = target
            .as_ref()
            .map(|_| follow_ups.owed_marker(&self.topic, &self.task.id));
        if let Some(marker) = &marker {
            variables.extend(follow_ups.marker_variables(marker));
            // From now on the follow-up is this worker's: after a lost reply the marker may be
            // past due before the complete is settled, and no reconciler here may deliver it.
            follow_ups.hold(&self.task.id);
        }
        let request = CompleteRequest {
            worker_id: self.ctx.settings.worker_id.clone(),
            variables,
        };
        let client = self.ctx.client.clone();
        let task_id = self.task.id.clone();
        let limit = &self.ctx.admission.limit;
        let settled = self
            .settle(
                "complete",
                || limit.timed(&self.ctx.metrics, client.complete(&task_id, &request)),
                || self.completed_despite_lost_reply(marker.as_ref()),
            )
            .await;
        if marker.is_some() && settled.is_err() {
            follow_ups.release(&task_id);
        }
        match settled {
            Ok(accepted) => self.completed(accepted, &follow_ups, target.zip(marker)),
            // A 400 that is not about the lock (a variable the engine cannot take, say) would come
            // back every lock duration forever: report it as a failure, so an incident shows it.
            Err(Unsettled::Invalid(error)) => {
                self.report_failure(HandlerError::permanent(
                    "the engine refused to complete the task",
                    error.to_string(),
                ))
                .await
            }
            Err(unsettled) => self.dropped("complete", unsettled),
        }
    }

    /// After the engine took the completion: counts it, and schedules the follow-up it owes
    /// (`owed`: where the message goes, and the marker the completion set).
    fn completed(
        &mut self,
        accepted: Accepted,
        follow_ups: &FollowUps,
        owed: Option<(CorrelationTarget, Marker)>,
    ) -> TaskOutcome {
        if accepted == Accepted::ReplyLost {
            info!("complete: the reply was lost, but the engine shows the task completed by this worker");
        }
        let metrics = &self.ctx.metrics;
        metrics.count_topic(&metrics.tasks_completed, NoOutcome, &self.topic);
        debug!("task completed");
        let Some((target, marker)) = owed else {
            return TaskOutcome::Completed { follow_up: false };
        };
        follow_ups.schedule(
            FollowUp {
                target,
                process_instance_id: self.task.process_instance_id.clone(),
                marker,
                lease: None,
                task: CompletedTask::from_task(&self.task, &self.topic),
                fetched_at: Some(self.fetched_at),
                completed_at: Instant::now(),
                recovered: false,
                trace_parent: traces::span_context(&tracing::Span::current()),
            },
            self.room.take(),
        );
        TaskOutcome::Completed { follow_up: true }
    }

    async fn report_bpmn_error(
        &mut self,
        code: String,
        message: String,
        variables: crate::variables::Variables,
    ) -> TaskOutcome {
        let request = BpmnErrorRequest {
            worker_id: self.ctx.settings.worker_id.clone(),
            error_code: code,
            error_message: message,
            variables,
        };
        let client = self.ctx.client.clone();
        let task_id = self.task.id.clone();
        // After a lost reply, a task that is gone or no longer ours took the error.
        match self
            .settle(
                "bpmnError",
                || client.report_bpmn_error(&task_id, &request),
                || async { LostAttempt::TookEffect },
            )
            .await
        {
            Ok(_) => TaskOutcome::BpmnError,
            Err(unsettled) => self.dropped("bpmnError", unsettled),
        }
    }

    async fn report_failure(&mut self, failure: HandlerError) -> TaskOutcome {
        let settings = &self.ctx.settings;
        let retries = failure
            .retries
            .unwrap_or_else(|| match self.task.retries {
                Some(left) => left - 1,
                None => settings.retries,
            })
            .max(0);
        let retry_timeout = failure.retry_timeout.unwrap_or(settings.retry_timeout);
        if retries == 0 {
            error!(
                retries,
                "task failed, raising an incident: {}", failure.message
            );
        } else {
            warn!(
                retries,
                "task failed, the engine will retry it: {}", failure.message
            );
        }
        let request = FailureRequest {
            worker_id: settings.worker_id.clone(),
            error_message: failure.message,
            error_details: failure.details,
            retries,
            retry_timeout: millis(retry_timeout),
        };
        let client = self.ctx.client.clone();
        let task_id = self.task.id.clone();
        // After a lost reply, a task that is gone or no longer ours took the failure (the engine
        // releases the lock with it).
        match self
            .settle(
                "failure",
                || client.report_failure(&task_id, &request),
                || async { LostAttempt::TookEffect },
            )
            .await
        {
            Ok(_) => {
                let metrics = &self.ctx.metrics;
                metrics.count_topic(&metrics.tasks_failed, NoOutcome, &self.topic);
                metrics.count_topic(&metrics.tasks_dropped, DropReason::Failed, &self.topic);
                TaskOutcome::Failed
            }
            Err(unsettled) => self.dropped("failure", unsettled),
        }
    }

    /// Counts and logs a final call that did not go through.
    pub(super) fn dropped(&self, what: &str, unsettled: Unsettled) -> TaskOutcome {
        let metrics = &self.ctx.metrics;
        match unsettled {
            Unsettled::Gone(error) => {
                metrics.count_topic(&metrics.tasks_dropped, DropReason::TaskGone, &self.topic);
                info!("{what}: the task no longer exists (cancelled, or done by another worker); dropped: {error}");
                TaskOutcome::Dropped(DropReason::TaskGone)
            }
            // A failure or BPMN error the engine refused is dropped like one refused for the lock:
            // the lock runs out and the task is handed out again.
            Unsettled::Refused(error) | Unsettled::Invalid(error) => {
                metrics.count_topic(&metrics.tasks_dropped, DropReason::LockLost, &self.topic);
                warn!("{what} refused; task dropped without a follow-up: {error}");
                TaskOutcome::Dropped(DropReason::LockLost)
            }
            Unsettled::LockExpired(error) => {
                metrics.count_topic(&metrics.tasks_dropped, DropReason::LockLost, &self.topic);
                warn!("{what} failed until the lock ran out; the engine will hand the task out again: {error}");
                TaskOutcome::Dropped(DropReason::LockLost)
            }
            Unsettled::Abandoned(error) => {
                warn!("shutdown grace over: {what} not sent, the lock will expire: {error}");
                TaskOutcome::Abandoned
            }
        }
    }

    /// After a lost reply and a 404 (or 400): did our `complete` go through? With a follow-up,
    /// the marker says so at any history level: the completion set it to exactly our owed value
    /// (or the follow-up of another worker flipped it to delivered since). Without one, the
    /// history's record of the task's completion by this worker (history level `full`).
    pub(super) async fn completed_despite_lost_reply(
        &self,
        marker: Option<&Marker>,
    ) -> LostAttempt {
        let took_effect = |yes: bool| {
            if yes {
                LostAttempt::TookEffect
            } else {
                LostAttempt::DidNot
            }
        };
        let client = &self.ctx.client;
        if let (Some(marker), Some(instance)) = (marker, self.task.process_instance_id.as_deref()) {
            let name = &self.ctx.follow_ups.policy().marker_variable;
            match client.instance_variable(instance, name).await {
                Ok(Some(value)) => {
                    return took_effect(
                        value == marker.to_string() || value == marker.delivered().to_string(),
                    )
                }
                // No marker: the instance has ended (another replica's reconciler delivered the
                // message our complete owed, say). The history's record decides, below.
                Ok(None) => {}
                Err(e) => {
                    debug!("cannot read the follow-up marker: {e}");
                    return LostAttempt::Unknown;
                }
            }
        }
        let worker_id = &self.ctx.settings.worker_id;
        match client.task_completions(&self.task.id).await {
            Ok(entries) => took_effect(
                entries
                    .iter()
                    .any(|e| e.worker_id.as_deref() == Some(worker_id.as_str())),
            ),
            Err(e) => {
                debug!("cannot read the task's history: {e}");
                LostAttempt::Unknown
            }
        }
    }

    /// Sends a task's final call through [`settle`], while this task's lock lasts.
    async fn settle<F, Fut, C, CFut>(
        &self,
        what: &str,
        call: F,
        confirm: C,
    ) -> Result<Accepted, Unsettled>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), EngineError>>,
        C: Fn() -> CFut,
        CFut: std::future::Future<Output = LostAttempt>,
    {
        let settings = &self.ctx.settings;
        settle(
            what,
            settings.max_backoff,
            self.lock_until,
            &self.ctx.stop.abort,
            call,
            confirm,
        )
        .await
    }

    /// Runs the handler as its own task (so a panic is contained), extending the lock at half its
    /// duration for as long as the handler runs (see `lock.rs`).
    async fn run_handler(&mut self) -> HandlerRun {
        let ctx = Arc::clone(&self.ctx);
        let owned = self.task.clone();
        let handle =
            tokio::spawn(async move { ctx.handler.handle(&owned).await }.in_current_span());
        let request = ExtendLockRequest {
            worker_id: self.ctx.settings.worker_id.clone(),
            new_duration: millis(self.lock),
        };
        let client = &self.ctx.client;
        let task_id = &self.task.id;
        let joined = keep_lock(
            handle,
            self.lock,
            &mut self.lock_until,
            &self.ctx.stop.abort,
            || client.extend_lock(task_id, &request),
        )
        .await;
        match joined {
            Some(joined) => HandlerRun::Finished(match joined {
                Ok(result) => result,
                Err(join_error) => Err(HandlerError::transient(
                    "the handler panicked",
                    format!("{join_error}"),
                )),
            }),
            None => HandlerRun::Abandoned,
        }
    }
}
