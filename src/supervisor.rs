//! The daemon's long-lived tasks (each node's fetch loop, the reconcilers, discovery, the
//! metrics listener), tracked and joined, so that one that ends when it should not is seen.
//!
//! A task that ends — or panics — before it was told to stop leaves a worker that looks alive
//! and does part of its work, or none: polling stopped while `/healthz` stayed green. So such an
//! end is a death: one ERROR naming the task and how it ended, `/healthz` fails from that moment
//! ([`Liveness::task_died`]), `background_tasks_died_total` counts it, and the shutdown begins,
//! after which the process exits non-zero. An operator's supervisor (Kubernetes, systemd) then
//! starts a whole worker again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::health::Liveness;
use crate::metrics::{label, Metrics};

/// One tracked task: what it is, and the token that tells it to stop.
#[derive(Debug)]
struct Tracked {
    /// The kind, as the metric's `task` label shows it (a fixed set: `fetch_loop`, ...).
    kind: &'static str,
    /// The task as the log names it (`the reconciler of topic x`).
    name: String,
    /// Cancelled when this task is meant to end; an end before that is a death.
    stop: CancellationToken,
}

/// Tracks tasks; a task's end before its stop token is cancelled begins `shutdown`.
#[derive(Debug)]
pub struct Supervisor {
    tasks: JoinSet<()>,
    tracked: HashMap<Id, Tracked>,
    liveness: Arc<Liveness>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

/// How a tracked task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It ended after it was told to stop.
    AsTold,
    /// It ended (returned, panicked) before; the text says which task and how.
    Died(String),
}

impl Supervisor {
    /// A supervisor that reports deaths to `liveness` and `metrics`, and begins `shutdown` on one.
    pub fn new(
        liveness: Arc<Liveness>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Supervisor {
            tasks: JoinSet::new(),
            tracked: HashMap::new(),
            liveness,
            metrics,
            shutdown,
        }
    }

    /// Spawns `task`, which is meant to run until `stop` is cancelled (or the shutdown begins).
    pub fn spawn<F>(&mut self, kind: &'static str, name: String, stop: CancellationToken, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.tasks.spawn(task);
        self.tracked
            .insert(handle.id(), Tracked { kind, name, stop });
    }

    /// The shutdown token a death cancels (and tasks stop on).
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Whether no task is tracked any more.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for the next task to end and judges its end; `None` once none is left. Cancel-safe:
    /// use it in `select!`.
    pub async fn join_next(&mut self) -> Option<Ended> {
        let (id, outcome) = match self.tasks.join_next_with_id().await? {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), Some(e)),
        };
        let tracked = self.tracked.remove(&id)?;
        Some(self.judge(tracked, outcome))
    }

    /// Joins every task until `deadline`, then aborts what is left (and joins that).
    pub async fn join_all(&mut self, deadline: Instant) {
        let _ = tokio::time::timeout_at(deadline, async {
            while self.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        while self.join_next().await.is_some() {}
    }

    fn judge(&self, tracked: Tracked, outcome: Option<JoinError>) -> Ended {
        let told = tracked.stop.is_cancelled() || self.shutdown.is_cancelled();
        let how = match &outcome {
            None => "ended".to_owned(),
            Some(e) if e.is_cancelled() => "was aborted".to_owned(),
            Some(e) => format!("panicked ({e})"),
        };
        if told {
            // Aborted at the end of the grace, or a panic on its way out: not a worker that looks
            // healthy and does nothing, but still worth an ERROR when it panicked.
            if outcome.as_ref().is_some_and(JoinError::is_panic) {
                error!(task = tracked.kind, "{} {how} while stopping", tracked.name);
            }
            return Ended::AsTold;
        }
        let what = format!("{} {how} before shutdown", tracked.name);
        self.record_death(tracked.kind, &what);
        Ended::Died(what)
    }

    /// Records a death seen elsewhere (`what`: which task, and how it ended) as one of its own:
    /// one ERROR, the metric, `/healthz` failed, the shutdown begun.
    pub fn record_death(&self, kind: &'static str, what: &str) {
        error!(
            task = kind,
            "{what}: the worker no longer does all its work, so it fails /healthz and shuts down (exit code 1)"
        );
        self.metrics
            .background_tasks_died
            .get_or_create(&vec![label("task", kind)])
            .inc();
        self.liveness.task_died(what.to_owned());
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor() -> (Supervisor, Arc<Liveness>, Arc<Metrics>, CancellationToken) {
        let liveness = Arc::new(Liveness::default());
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(
            Arc::clone(&liveness),
            Arc::clone(&metrics),
            shutdown.clone(),
        );
        (supervisor, liveness, metrics, shutdown)
    }

    fn died(metrics: &Metrics, kind: &'static str) -> u64 {
        metrics
            .background_tasks_died
            .get_or_create(&vec![label("task", kind)])
            .get()
    }

    #[tokio::test]
    async fn a_task_that_returns_before_it_is_told_to_stop_is_a_death_that_begins_the_shutdown() {
        let (mut supervisor, liveness, metrics, shutdown) = supervisor();
        let stop = CancellationToken::new();
        supervisor.spawn(
            "reconciler",
            "the reconciler of topic t".into(),
            stop,
            async {},
        );
        let ended = supervisor.join_next().await;
        assert_eq!(
            ended,
            Some(Ended::Died(
                "the reconciler of topic t ended before shutdown".into()
            ))
        );
        assert!(shutdown.is_cancelled(), "the shutdown begins");
        assert_eq!(
            liveness.dead_task(),
            Some("the reconciler of topic t ended before shutdown")
        );
        assert_eq!(died(&metrics, "reconciler"), 1);
        assert_eq!(supervisor.join_next().await, None);
    }

    #[tokio::test]
    async fn a_task_that_panics_is_a_death_too() {
        let (mut supervisor, liveness, metrics, shutdown) = supervisor();
        supervisor.spawn(
            "fetch_loop",
            "the fetch loop of node n".into(),
            CancellationToken::new(),
            async { panic!("boom") },
        );
        let Some(Ended::Died(what)) = supervisor.join_next().await else {
            panic!("a death");
        };
        assert!(
            what.starts_with("the fetch loop of node n panicked"),
            "{what}"
        );
        assert!(shutdown.is_cancelled());
        assert!(liveness.dead_task().is_some());
        assert_eq!(died(&metrics, "fetch_loop"), 1);
    }

    #[tokio::test]
    async fn a_task_that_ends_when_told_is_no_death_and_the_first_death_is_the_one_reported() {
        let (mut supervisor, liveness, metrics, shutdown) = supervisor();
        let stop = CancellationToken::new();
        let told = stop.clone();
        supervisor.spawn("discovery", "discovery".into(), stop.clone(), async move {
            told.cancelled().await;
        });
        stop.cancel();
        assert_eq!(supervisor.join_next().await, Some(Ended::AsTold));
        assert!(!shutdown.is_cancelled());
        assert_eq!(liveness.dead_task(), None);
        assert_eq!(died(&metrics, "discovery"), 0);

        // A task that runs until the shutdown, and one that ends early: the early one is the
        // death; the other then ends as told.
        let until_shutdown = shutdown.clone();
        supervisor.spawn(
            "listener",
            "the metrics listener".into(),
            CancellationToken::new(),
            async move { until_shutdown.cancelled().await },
        );
        supervisor.spawn(
            "reconciler",
            "the reconciler".into(),
            CancellationToken::new(),
            async {},
        );
        assert!(matches!(supervisor.join_next().await, Some(Ended::Died(_))));
        assert_eq!(supervisor.join_next().await, Some(Ended::AsTold));
        assert_eq!(
            liveness.dead_task(),
            Some("the reconciler ended before shutdown")
        );
    }

    #[tokio::test]
    async fn join_all_aborts_what_outlives_its_deadline() {
        let (mut supervisor, liveness, _, shutdown) = supervisor();
        supervisor.spawn(
            "reconciler",
            "a pass that hangs".into(),
            CancellationToken::new(),
            std::future::pending(),
        );
        shutdown.cancel();
        supervisor
            .join_all(Instant::now() + std::time::Duration::from_millis(100))
            .await;
        assert!(supervisor.is_empty());
        assert_eq!(
            liveness.dead_task(),
            None,
            "aborted after the shutdown: no death"
        );
    }
}
