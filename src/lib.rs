//! camunda-worker: a Camunda 7 external-task worker that completes tasks at once and closes the
//! loop later by message correlation — as a daemon, and as a library for your own handlers.
//!
//! # The pattern
//! A process reaches a service task of type external (topic `messageSending`). The worker
//! long-polls `fetchAndLock`, completes the task with typed variables, and after a delay
//! correlates the message `sample_response` to the instance, which waits at a message catch
//! event. Long work thus never holds a task lock.
//!
//! # Layout
//! - [`cli`]: the flags as typed, each with its `CAMUNDA_WORKER_*` variable.
//! - [`config`]: flags + environment + TOML file + defaults → one validated [`config::Config`].
//! - [`engine`]: the REST client ([`engine::EngineClient`]) for one engine node or a cluster,
//!   wire types, errors and each node's health.
//! - [`discovery`]: finds a cluster's nodes in DNS (a Kubernetes headless Service).
//! - [`worker`]: the fetch loop, one long poll per engine node (one poll step is
//!   [`worker::Worker::poll_once`]), admission, one task's lifecycle (handler, lock extension,
//!   complete / failure, lost replies) and, at shutdown, the hand-back of what is still locked.
//! - [`handler`]: what to do with one task; implement [`handler::Handler`] for your own work.
//! - [`route`]: the topic/message pairs one daemon serves (`[[route]]`), and their handler.
//! - [`work`]: the long work after the complete ([`work::FollowUpWork`]: the daemon's delay, a
//!   `--follow-up-command`, or your own), whose result goes with the follow-up message.
//! - [`engine_clock`]: the engine's time, read from its replies' `Date` headers; the ledger's due
//!   times follow it, so replicas whose clocks disagree still agree on what is overdue.
//! - [`ledger`]: the marker variable through which the engine itself records each owed
//!   follow-up, and the compare-and-set that delivers it exactly once.
//! - [`correlation`]: the delayed follow-up message: exactly once, bounded in memory.
//! - [`reconciler`]: delivers owed follow-ups past their due time (after a crash, from any
//!   replica, at any history level).
//! - [`budget`]: the worker-wide rate limit on retries, which keeps a worker from flooding its
//!   engine.
//! - [`daemon`]: everything wired, plus the shutdown sequence; [`supervisor`] tracks its
//!   long-lived tasks, and one that dies fails `/healthz` and ends the worker.
//! - [`metrics`] and [`health`]: Prometheus metrics, `/healthz`, `/readyz`, served by
//!   [`listener`], which no client can hold.
//! - [`backoff`], [`variables`], [`secret`], [`shutdown`], [`telemetry`], [`log_writer`]: small
//!   shared pieces.
//! - [`commands`]: the `deploy`, `start`, `status` and `healthcheck` subcommands.
//!
//! # Library use
//! ```no_run
//! use camunda_worker::engine::ExternalTask;
//! use camunda_worker::handler::{Handler, HandlerError, TaskResult};
//!
//! struct Shout;
//!
//! impl Handler for Shout {
//!     async fn handle(&self, task: &ExternalTask) -> Result<TaskResult, HandlerError> {
//!         println!("task {} for {:?}", task.id, task.business_key);
//!         Ok(TaskResult::Complete { variables: Default::default(), follow_up: None })
//!     }
//! }
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let config = camunda_worker::config::load(["camunda-worker", "--topic", "shout"])
//!     .map_err(|e| anyhow::anyhow!("{e}"))?
//!     .2;
//! let stop = tokio_util::sync::CancellationToken::new();
//! camunda_worker::daemon::run_with_handler(&config, Shout, stop).await?;
//! # Ok(()) }
//! ```
//!
//! The long work after the complete, with its result in the message (run again after a crash,
//! so it must be idempotent):
//! ```no_run
//! use camunda_worker::variables::{TypedValue, Variables};
//! use camunda_worker::work::{CompletedTask, FollowUpWork, WorkError};
//! use tokio_util::sync::CancellationToken;
//!
//! struct Archive;
//!
//! impl FollowUpWork for Archive {
//!     async fn run(&self, task: &CompletedTask, _: &CancellationToken) -> Result<Variables, WorkError> {
//!         // ... as long as it takes; idempotent by task.task_id ...
//!         Ok(Variables::from([("archived".to_owned(), TypedValue::string(&task.task_id))]))
//!     }
//! }
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let config = camunda_worker::config::load(["camunda-worker"]).map_err(|e| anyhow::anyhow!("{e}"))?.2;
//! let stop = tokio_util::sync::CancellationToken::new();
//! camunda_worker::daemon::run_with_work(&config, Archive, stop).await?;
//! # Ok(()) }
//! ```

pub mod backoff;
pub mod budget;
pub mod cli;
pub mod commands;
pub mod config;
pub mod correlation;
pub mod daemon;
pub mod discovery;
pub mod engine;
pub mod engine_clock;
pub mod handler;
pub mod health;
pub mod ledger;
pub mod listener;
pub mod log_writer;
pub mod metrics;
pub mod reconciler;
pub mod route;
pub mod secret;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;
pub mod traces;
pub mod variables;
pub mod work;
pub mod worker;
