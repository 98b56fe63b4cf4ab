//! The fetch loop: long-poll the engine for tasks, hand each to the handler, complete it, and
//! schedule its follow-up.
//!
//! The loop never locks a task it has no room for: it takes free slots (semaphore permits) first,
//! asks the engine for exactly that many tasks, and moves one permit into each task it starts.
//! One poll is one call of [`Worker::poll_once`], which returns what happened; [`Worker::run`]
//! decides between polling again, backing off and stopping.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument};

use crate::backoff::Backoff;
use crate::correlation::{FollowUp, FollowUps};
use crate::engine::{
    BpmnErrorRequest, CompleteRequest, EngineClient, EngineError, ExtendLockRequest, ExternalTask,
    FailureRequest, FetchAndLockRequest, TopicRequest,
};
use crate::handler::{Handler, HandlerError, TaskResult};
use crate::metrics::{DropReason, FetchOutcome, Metrics};

/// While fetching keeps failing the same way, a reminder is logged this often (the first failure
/// of a kind is logged at once, repeats only at debug level otherwise).
const TROUBLE_REMINDER: Duration = Duration::from_secs(60);

/// The engine refuses a long poll above 30 minutes.
pub const MAX_LONG_POLL: Duration = Duration::from_secs(30 * 60);

/// How the worker fetches and handles tasks.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Who takes the locks. Must differ between replicas: the engine only compares worker ids,
    /// so two workers with one id complete each other's tasks.
    pub worker_id: String,
    /// The topic to serve.
    pub topic: String,
    /// How long a fetched task stays locked; longer-running handlers get it extended.
    pub lock_duration: Duration,
    /// How long the engine may park a fetch when no task is available (at most 30 min).
    pub long_poll: Duration,
    /// Tasks in flight at once; also the most a single fetch asks for.
    pub max_tasks: u32,
    /// Retries reported on a task's first failure (then the task's own count − 1).
    pub retries: i32,
    /// How long the engine waits before handing a failed task out again.
    pub retry_timeout: Duration,
    /// Cap of the backoff while the engine is unavailable.
    pub max_backoff: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            worker_id: crate::config::generated_worker_id(),
            topic: "messageSending".to_owned(),
            lock_duration: Duration::from_secs(60),
            long_poll: Duration::from_secs(30),
            max_tasks: 10,
            retries: 3,
            retry_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// This many tasks were fetched and started.
    Fetched(usize),
    /// The long poll ended without a task.
    Empty,
    /// Shutdown began; nothing was fetched.
    Stopped,
}

/// The tokens that stop a worker: `shutdown` ends fetching (and hurries follow-ups), `abort`
/// ends what is still running once the grace period is over.
#[derive(Debug, Clone, Default)]
pub struct StopTokens {
    /// Stop fetching; let running work finish.
    pub shutdown: CancellationToken,
    /// Stop everything now.
    pub abort: CancellationToken,
}

/// Serves one topic: fetch, handle, complete, follow up.
pub struct Worker<H> {
    /// When the engine will give up a long poll this worker abandoned at shutdown. The engine does
    /// not notice a closed connection: a parked request keeps locking tasks for this worker id
    /// until its `asyncResponseTimeout` runs out.
    open_poll_until: std::sync::Mutex<Option<Instant>>,
    client: EngineClient,
    handler: Arc<H>,
    settings: Arc<WorkerSettings>,
    metrics: Arc<Metrics>,
    follow_ups: FollowUps,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: StopTokens,
}

impl<H: Handler> Worker<H> {
    /// A worker whose tasks run on `tracker` (shared with the follow-ups, so one wait drains both).
    pub fn new(
        client: EngineClient,
        handler: H,
        settings: WorkerSettings,
        metrics: Arc<Metrics>,
        follow_ups: FollowUps,
        tracker: TaskTracker,
        stop: StopTokens,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_tasks as usize));
        Worker {
            open_poll_until: std::sync::Mutex::new(None),
            client,
            handler: Arc::new(handler),
            settings: Arc::new(settings),
            metrics,
            follow_ups,
            slots,
            tracker,
            stop,
        }
    }

    /// Polls until shutdown, backing off while the engine is unavailable. Returns when shutdown
    /// has begun; the tasks it started keep running on the tracker.
    pub async fn run(&self) {
        let mut backoff = Backoff::new(self.settings.max_backoff);
        let mut trouble: Option<String> = None;
        let mut trouble_since = Instant::now();
        let mut reminded = Instant::now();
        info!(
            worker_id = %self.settings.worker_id,
            topic = %self.settings.topic,
            engine = %self.client.base_url(),
            "polling for tasks"
        );
        loop {
            match self.poll_once().await {
                Ok(PollOutcome::Stopped) => break,
                Ok(_) => {
                    if trouble.take().is_some() {
                        info!("the engine answers again; polling resumed");
                    }
                    backoff.reset();
                }
                Err(error) => {
                    let summary = error_kind(&error);
                    if trouble.is_none() {
                        trouble_since = Instant::now();
                    }
                    if trouble.as_deref() != Some(summary.as_str()) {
                        reminded = Instant::now();
                        if error.is_unauthorized() {
                            error!("{error}; retrying with backoff");
                        } else if error.is_transient() {
                            warn!("engine unavailable, backing off: {error}");
                        } else {
                            error!("fetch-and-lock refused, backing off: {error}");
                        }
                        trouble = Some(summary);
                    } else if reminded.elapsed() >= TROUBLE_REMINDER {
                        warn!(
                            "fetch-and-lock still failing after {}s: {error}",
                            trouble_since.elapsed().as_secs()
                        );
                        reminded = Instant::now();
                    } else {
                        debug!("still failing: {error}");
                    }
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.shutdown.cancelled() => break,
                    }
                }
            }
        }
        debug!("fetching stopped");
    }

    /// One poll: wait for a free slot, fetch as many tasks as there are free slots, and start each.
    pub async fn poll_once(&self) -> Result<PollOutcome, EngineError> {
        let first = tokio::select! {
            permit = self.slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return Ok(PollOutcome::Stopped),
            },
            _ = self.stop.shutdown.cancelled() => return Ok(PollOutcome::Stopped),
        };
        let mut permits = vec![first];
        while let Ok(permit) = self.slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let request = FetchAndLockRequest {
            worker_id: self.settings.worker_id.clone(),
            max_tasks: u32::try_from(permits.len()).unwrap_or(u32::MAX),
            use_priority: true,
            async_response_timeout: millis(self.settings.long_poll),
            topics: vec![TopicRequest {
                topic_name: self.settings.topic.clone(),
                lock_duration: millis(self.settings.lock_duration),
                variables: self.handler.variables_to_fetch(),
            }],
        };
        self.set_open_poll(Some(Instant::now() + self.settings.long_poll));
        let fetched = tokio::select! {
            fetched = self.client.fetch_and_lock(&request) => fetched,
            // Dropping the request closes the connection, but the engine keeps the request parked
            // until its timeout: `open_poll_until` stays set for the shutdown sweep.
            _ = self.stop.shutdown.cancelled() => return Ok(PollOutcome::Stopped),
        };
        self.set_open_poll(None);
        let tasks = match fetched {
            Ok(tasks) => tasks,
            Err(error) => {
                self.metrics.fetched(FetchOutcome::Error, 0);
                return Err(error);
            }
        };
        let fetched_at = Instant::now();
        if tasks.is_empty() {
            self.metrics.fetched(FetchOutcome::Empty, 0);
            return Ok(PollOutcome::Empty);
        }
        self.metrics.fetched(FetchOutcome::Tasks, tasks.len());
        let count = tasks.len();
        if count > permits.len() {
            warn!(
                asked = permits.len(),
                got = count,
                "the engine handed out more tasks than asked for; handling them all"
            );
        }
        for task in tasks {
            let permit = permits.pop();
            self.start_task(task, permit, fetched_at);
        }
        Ok(PollOutcome::Fetched(count))
    }

    fn set_open_poll(&self, until: Option<Instant>) {
        *self
            .open_poll_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = until;
    }

    /// Until when the engine may still lock tasks for this worker through a long poll that was
    /// open when shutdown began; `None` when no poll was open.
    pub fn abandoned_poll_until(&self) -> Option<Instant> {
        *self
            .open_poll_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Unlocks every task the engine holds for this worker id, so that other workers can take
    /// them now instead of after the lock expires. Called at the end of shutdown, when this
    /// worker handles nothing any more; repeated until `until` (at least once), because an
    /// abandoned long poll can still lock tasks until it times out on the engine.
    pub async fn release_locks(&self, until: Instant) {
        let mut announced = false;
        loop {
            let locked: Result<Vec<ExternalTask>, EngineError> = self
                .client
                .get_json(
                    "externalTasks",
                    "external-task",
                    &[
                        ("workerId", self.settings.worker_id.clone()),
                        ("locked", "true".to_owned()),
                        ("maxResults", "1000".to_owned()),
                    ],
                )
                .await;
            match locked {
                Ok(tasks) => {
                    for task in tasks {
                        match self.client.unlock(&task.id).await {
                            Ok(()) => {
                                info!(task_id = %task.id, "unlocked a task the engine locked for this stopping worker")
                            }
                            Err(e) => debug!(task_id = %task.id, "could not unlock: {e}"),
                        }
                    }
                }
                Err(e) => {
                    debug!("cannot list this worker's locked tasks: {e}");
                    return;
                }
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            if !announced {
                info!(
                    "the engine keeps the abandoned long poll open for {}s more; releasing what it locks until then (signal again to exit now)",
                    (until - now).as_secs()
                );
                announced = true;
            }
            tokio::time::sleep(Duration::from_millis(500).min(until - now)).await;
        }
    }

    fn start_task(
        &self,
        task: ExternalTask,
        permit: Option<OwnedSemaphorePermit>,
        fetched_at: Instant,
    ) {
        let span = tracing::info_span!(
            "task",
            task_id = %task.id,
            process_instance_id = task.process_instance_id.as_deref().unwrap_or(""),
            business_key = task.business_key.as_deref().unwrap_or(""),
            topic = %self.settings.topic,
        );
        let run = TaskRun {
            client: self.client.clone(),
            handler: Arc::clone(&self.handler),
            settings: Arc::clone(&self.settings),
            metrics: Arc::clone(&self.metrics),
            follow_ups: self.follow_ups.clone(),
            stop: self.stop.clone(),
        };
        self.metrics.add_in_flight(1);
        let metrics = Arc::clone(&self.metrics);
        self.tracker.spawn(
            async move {
                run.process(task, fetched_at).await;
                metrics.add_in_flight(-1);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Everything one task's processing needs, detached from the loop.
struct TaskRun<H> {
    client: EngineClient,
    handler: Arc<H>,
    settings: Arc<WorkerSettings>,
    metrics: Arc<Metrics>,
    follow_ups: FollowUps,
    stop: StopTokens,
}

impl<H: Handler> TaskRun<H> {
    async fn process(&self, task: ExternalTask, fetched_at: Instant) {
        if self.stop.shutdown.is_cancelled() {
            // Fetched but not started before shutdown: give it back so another worker takes it
            // now instead of after the lock expires.
            match self.client.unlock(&task.id).await {
                Ok(()) => debug!("shutting down: task unlocked for another worker"),
                Err(e) => {
                    warn!("shutting down: could not unlock the task, its lock will expire: {e}")
                }
            }
            return;
        }
        let lock_deadline = fetched_at + self.settings.lock_duration;
        let started = Instant::now();
        let result = self.run_handler(&task).await;
        self.metrics.observe_handler(started.elapsed());
        let Some(result) = result else {
            return;
        };
        match result {
            Ok(TaskResult::Complete {
                variables,
                follow_up,
            }) => {
                let request = CompleteRequest {
                    worker_id: self.settings.worker_id.clone(),
                    variables,
                };
                let completed = self
                    .settle("complete", lock_deadline, || {
                        self.client.complete(&task.id, &request)
                    })
                    .await;
                if completed {
                    self.metrics.task_completed();
                    debug!("task completed");
                    if let Some(target) = follow_up {
                        self.follow_ups.schedule(FollowUp {
                            target,
                            process_instance_id: task.process_instance_id.clone(),
                            fetched_at: Some(fetched_at),
                        });
                    }
                }
            }
            Ok(TaskResult::BpmnError { code, message }) => {
                let request = BpmnErrorRequest {
                    worker_id: self.settings.worker_id.clone(),
                    error_code: code,
                    error_message: message,
                    variables: Default::default(),
                };
                self.settle("bpmnError", lock_deadline, || {
                    self.client.report_bpmn_error(&task.id, &request)
                })
                .await;
            }
            Err(failure) => self.report_failure(&task, failure, lock_deadline).await,
        }
    }

    /// Runs the handler as its own task (so a panic is contained), extending the lock at half its
    /// duration for as long as the handler runs. `None` when the grace period ended first.
    async fn run_handler(&self, task: &ExternalTask) -> Option<Result<TaskResult, HandlerError>> {
        let handler = Arc::clone(&self.handler);
        let owned = task.clone();
        let mut handle =
            tokio::spawn(async move { handler.handle(&owned).await }.in_current_span());
        let lock = self.settings.lock_duration;
        let mut extend_at = Instant::now() + lock / 2;
        loop {
            tokio::select! {
                joined = &mut handle => {
                    return Some(match joined {
                        Ok(result) => result,
                        Err(join_error) => Err(HandlerError::transient(
                            "the handler panicked",
                            format!("{join_error}"),
                        )),
                    });
                }
                _ = tokio::time::sleep_until(extend_at) => {
                    let request = ExtendLockRequest {
                        worker_id: self.settings.worker_id.clone(),
                        new_duration: millis(lock),
                    };
                    match self.client.extend_lock(&task.id, &request).await {
                        Ok(()) => debug!("handler still running: lock extended"),
                        Err(e) => warn!("could not extend the lock: {e}"),
                    }
                    extend_at = Instant::now() + lock / 2;
                }
                _ = self.stop.abort.cancelled() => {
                    handle.abort();
                    warn!("shutdown grace over while the handler ran: task abandoned, its lock will expire");
                    return None;
                }
            }
        }
    }

    async fn report_failure(&self, task: &ExternalTask, failure: HandlerError, deadline: Instant) {
        let retries = failure
            .retries
            .unwrap_or_else(|| match task.retries {
                Some(left) => left - 1,
                None => self.settings.retries,
            })
            .max(0);
        let retry_timeout = failure.retry_timeout.unwrap_or(self.settings.retry_timeout);
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
            worker_id: self.settings.worker_id.clone(),
            error_message: failure.message,
            error_details: failure.details,
            retries,
            retry_timeout: millis(retry_timeout),
        };
        if self
            .settle("failure", deadline, || {
                self.client.report_failure(&task.id, &request)
            })
            .await
        {
            self.metrics.task_failed();
        }
    }

    /// Sends a task's final call (complete / failure / bpmnError), retrying transient errors while
    /// the lock lasts. Returns whether the engine accepted it.
    async fn settle<F, Fut>(&self, what: &str, lock_deadline: Instant, call: F) -> bool
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), EngineError>>,
    {
        let mut backoff =
            Backoff::starting_at(Duration::from_millis(200), self.settings.max_backoff);
        loop {
            let error = match call().await {
                Ok(()) => return true,
                Err(error) => error,
            };
            if error.is_not_found() {
                self.metrics.task_dropped(DropReason::TaskGone);
                info!("{what}: the task no longer exists (cancelled, or done by another worker); dropped: {error}");
                return false;
            }
            if !(error.is_transient() || error.is_unauthorized()) {
                self.metrics.task_dropped(DropReason::LockLost);
                warn!("{what} refused; task dropped without a follow-up: {error}");
                return false;
            }
            let delay = backoff.next_delay();
            if Instant::now() + delay >= lock_deadline {
                self.metrics.task_dropped(DropReason::LockLost);
                warn!("{what} failed until the lock ran out; the engine will hand the task out again: {error}");
                return false;
            }
            debug!("{what} failed, retrying in {delay:?}: {error}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.abort.cancelled() => {
                    warn!("shutdown grace over: {what} not sent, the lock will expire: {error}");
                    return false;
                }
            }
        }
    }
}

/// A short description of an error, to log a changed failure once instead of every poll.
fn error_kind(error: &EngineError) -> String {
    match error {
        EngineError::Unreachable { .. } => "unreachable".to_owned(),
        EngineError::Unauthorized { status, .. } => format!("unauthorized {status}"),
        EngineError::Rejected { status, kind, .. } => format!("{status} {kind}"),
        EngineError::UnexpectedReply { status, .. } => format!("unexpected {status}"),
        EngineError::Credentials(text) => text.clone(),
    }
}

/// A duration in whole milliseconds, as the engine's REST API counts time.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
