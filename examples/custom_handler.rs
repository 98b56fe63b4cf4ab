//! A worker with a handler of your own: reads a process variable, "does the work", and completes
//! the task with a result — then, as the daemon does, asks for the follow-up message.
//!
//! ```text
//! cargo run --example custom_handler -- --engine-url http://localhost:8080/engine-rest --topic messageSending
//! ```
//!
//! Every flag of the daemon works here too (`--max-tasks`, `--correlation-delay`, ...).

use std::time::Duration;

use camunda_worker::correlation::CorrelateBy;
use camunda_worker::engine::ExternalTask;
use camunda_worker::handler::{Handler, HandlerError, TaskResult};
use camunda_worker::variables::{TypedValue, Variables};
use tokio_util::sync::CancellationToken;

/// Doubles the `amount` variable of each task and reports it as `doubled`.
struct DoubleTheAmount;

impl Handler for DoubleTheAmount {
    fn variables_to_fetch(&self) -> Option<Vec<String>> {
        Some(vec!["amount".to_owned()])
    }

    async fn handle(&self, task: &ExternalTask) -> Result<TaskResult, HandlerError> {
        let amount = task
            .variables
            .as_ref()
            .and_then(|v| v.get("amount"))
            .and_then(|v| v.value.as_i64())
            .unwrap_or(0);
        // The real work would go here; the worker extends the lock while it runs.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let doubled = amount.checked_mul(2).ok_or_else(|| {
            HandlerError::permanent("amount too large", format!("{amount} * 2 overflows"))
        })?;
        let variables =
            Variables::from([("doubled".to_owned(), TypedValue::from_json(doubled.into()))]);
        let follow_up = CorrelateBy::ProcessInstance
            .target_for(task)
            .map_err(|why| HandlerError::permanent(why, "no process instance id"))?;
        Ok(TaskResult::Complete {
            variables,
            follow_up: Some(follow_up),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_, _, config) = match camunda_worker::config::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(error) => error.exit(),
    };
    camunda_worker::telemetry::init(config.log_format);
    let stop = CancellationToken::new();
    camunda_worker::shutdown::listen_for_signals(stop.clone());
    camunda_worker::daemon::run_with_handler(&config, DoubleTheAmount, stop).await?;
    Ok(())
}
