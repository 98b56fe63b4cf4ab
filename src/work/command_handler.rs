//! The `complete` route's work: a program run while its task is locked, whose exit decides the
//! task's fate. It is a [`Handler`] like any other, so the worker extends the task's lock while
//! the program runs, holds one of the `--max-tasks` slots for it, and at the end of the shutdown
//! grace stops it (its process group killed, see [`super::command`]) and hands the lock back.
//!
//! The contract (README, "A route for the plain external task"): the program reads the task as
//! one JSON object on stdin (as a follow-up command does), then
//! - exits 0 with one JSON object on stdout → the task is completed with those variables, typed
//!   like `--var`;
//! - exits 0 with `{"bpmnError": {"code": …, "message": …, "variables": {…}}}` (that one member
//!   alone) → a BPMN error, for a boundary event to catch;
//! - exits otherwise, crashes, prints something else or outlives its timeout → a failure whose
//!   message is its last stderr line, with the route's `retries` and `retry_timeout`: the engine
//!   raises an incident once no retries are left.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::command::{parse_output, Exited};
use super::{CommandWork, CompletedTask, WorkError};
use crate::engine::ExternalTask;
use crate::handler::{Handler, HandlerError, TaskResult};
use crate::variables::{TypedValue, Variables};

/// A `complete` route's handler: its command, and how its failures are reported.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    /// The program, its arguments, timeout and environment (`command`, `--follow-up-timeout`).
    pub command: CommandWork,
    /// The retries a first failure reports (`retries`, by default `--retries`); each later
    /// failure reports one less than the task has left.
    pub retries: i32,
    /// How long the engine waits before handing a failed task out again (`retry_timeout`).
    pub retry_timeout: Duration,
}

impl Handler for CommandHandler {
    fn variables_to_fetch(&self) -> Option<Vec<String>> {
        Some(self.command.fetch_variables.clone())
    }

    async fn handle(&self, task: &ExternalTask) -> Result<TaskResult, HandlerError> {
        let topic = task.topic_name.as_deref().unwrap_or_default();
        let input = serde_json::to_vec(&CompletedTask::from_task(task, topic)).unwrap_or_default();
        // Never cancelled: the program may use the whole shutdown grace to finish its task; at
        // the end of the grace the worker stops this run, which kills the program's group.
        let exited = self
            .command
            .execute(input, &CancellationToken::new())
            .await
            .map_err(|error: WorkError| self.failure(task, error.message.clone(), error.message))?;
        decide(&self.command.name(), exited).map_err(|(message, details)| {
            let details = details.unwrap_or_else(|| message.clone());
            self.failure(task, message, details)
        })
    }
}

impl CommandHandler {
    /// A failure with the route's retries: the first failure of a task reports `retries`, a
    /// later one (the task then says how many it has left) one less than it has; 0 is an
    /// incident.
    fn failure(&self, task: &ExternalTask, message: String, details: String) -> HandlerError {
        HandlerError {
            message,
            details,
            retries: Some(task.retries.map_or(self.retries, |left| left - 1).max(0)),
            retry_timeout: Some(self.retry_timeout),
        }
    }
}

/// What a finished run means for its task; a failure is its one-line message and, when there is
/// more to say, the details an operator sees when opening the incident.
fn decide(name: &str, exited: Exited) -> Result<TaskResult, (String, Option<String>)> {
    let last = exited.last_stderr;
    // The last stderr line is the message when there is one: that is where a program says why.
    let failed = |what: String| {
        if last.is_empty() {
            (what, None)
        } else {
            (last.clone(), Some(format!("{what}: {last}")))
        }
    };
    let status = exited.status.map_err(|e| failed(format!("{name}: {e}")))?;
    if !status.success() {
        return Err(failed(match status.code() {
            Some(code) => format!("{name} exited with status {code}"),
            None => format!("{name} was ended by a signal"),
        }));
    }
    let output = exited
        .output
        .map_err(|e| failed(format!("{name}: stdout: {e}")))?;
    if output.len() > super::MAX_OUTPUT_BYTES {
        return Err(failed(format!(
            "{name} printed more than {} bytes on stdout; print only the task's variables as one JSON object",
            super::MAX_OUTPUT_BYTES
        )));
    }
    if let Some(error) = bpmn_error(&output) {
        return error.map_err(|what| failed(format!("{name}: {what}")));
    }
    let variables = parse_output(&output).map_err(|what| failed(format!("{name}: {what}")))?;
    Ok(TaskResult::Complete {
        variables,
        follow_up: None,
    })
}

/// The BPMN error a program's stdout asks for, when it is `{"bpmnError": {...}}` and nothing
/// else; `None` for any other output (variables named `bpmnError` beside others complete the
/// task as usual). A `code` is required; `message` and `variables` are optional.
fn bpmn_error(output: &[u8]) -> Option<Result<TaskResult, String>> {
    let Ok(Value::Object(members)) = serde_json::from_slice::<Value>(output) else {
        return None;
    };
    if members.len() != 1 {
        return None;
    }
    let Value::Object(error) = members.get("bpmnError")? else {
        return None;
    };
    Some(bpmn_error_from(error))
}

fn bpmn_error_from(error: &Map<String, Value>) -> Result<TaskResult, String> {
    let code = match error.get("code") {
        Some(Value::String(code)) if !code.trim().is_empty() => code.clone(),
        _ => return Err("bpmnError needs a non-empty string `code`".to_owned()),
    };
    let message = match error.get("message") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(message)) => message.clone(),
        Some(_) => return Err("bpmnError `message` must be a string".to_owned()),
    };
    let variables: Variables = match error.get("variables") {
        None | Some(Value::Null) => Variables::new(),
        Some(Value::Object(members)) => members
            .iter()
            .map(|(name, value)| (name.clone(), TypedValue::from_json(value.clone())))
            .collect(),
        Some(_) => return Err("bpmnError `variables` must be a JSON object".to_owned()),
    };
    Ok(TaskResult::BpmnError {
        code,
        message,
        variables,
    })
}

#[cfg(test)]
#[path = "command_handler_tests.rs"]
mod tests;
