//! The long work a follow-up does after its task is completed: the reason this worker exists.
//! A task's work may take far longer than any lock, so the worker completes the task at once,
//! runs the work afterwards, and sends the follow-up message — carrying the work's result as
//! process variables — once the work is done.
//!
//! The work is a [`FollowUpWork`]: the daemon's two are [`Delay`] (no work: the message goes after
//! `--correlation-delay`) and [`CommandWork`] (`--follow-up-command`: a program, fed the task as
//! JSON on stdin, printing the message's variables as JSON on stdout). Library users implement the
//! trait for their own work (`examples/http_follow_up.rs`).
//!
//! Work runs **at least once**, its message **exactly once**. While work is owed, the engine's
//! marker (see [`crate::ledger`]) records it with a lease that the worker renews; after a crash
//! another worker runs the work again once the lease has run out. So work must be idempotent, or
//! guard itself by task id. A failure is retried (`--follow-up-retries`), then raises an incident
//! on the waiting execution with the error's message; resolving the incident runs the work again.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::engine::ExternalTask;
use crate::variables::{TypedValue, Variables};

mod command;
mod command_handler;
mod environment;
pub mod relay;

pub use command::{check_program, CommandWork, MAX_OUTPUT_BYTES};
pub use command_handler::CommandHandler;
pub use environment::holding_secrets;

/// What the work knows of its task. Serialized as is, it is the JSON a follow-up command reads on
/// stdin.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletedTask {
    /// The completed task.
    pub task_id: String,
    /// Its topic.
    pub topic: String,
    /// Its process instance's business key.
    pub business_key: Option<String>,
    /// Its process instance.
    pub process_instance_id: Option<String>,
    /// The variables the work asked for ([`FollowUpWork::variables_to_fetch`]), as plain JSON
    /// values (a `Json` variable as the document itself).
    pub variables: Map<String, Value>,
    /// The service task's BPMN extension properties (`camunda:properties`), when its route
    /// asks for them (`include_extension_properties`) and the task has some: so that one
    /// command can serve many tasks, each configured in the model. Left out otherwise, and after
    /// a restart: a follow-up recovered from its marker has no task left to read them from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension_properties: Option<BTreeMap<String, String>>,
}

impl CompletedTask {
    /// The task as fetched, with the variables it was fetched with.
    pub fn from_task(task: &ExternalTask, topic: &str) -> Self {
        CompletedTask {
            task_id: task.id.clone(),
            topic: task.topic_name.clone().unwrap_or_else(|| topic.to_owned()),
            business_key: task.business_key.clone(),
            process_instance_id: task.process_instance_id.clone(),
            variables: task
                .variables
                .as_ref()
                .map(plain_values)
                .unwrap_or_default(),
            // The engine sends an empty object when they were not asked for.
            extension_properties: task
                .extension_properties
                .clone()
                .filter(|properties| !properties.is_empty()),
        }
    }
}

/// Typed variables as plain JSON values: what a work (and a command) reads.
pub fn plain_values(variables: &Variables) -> Map<String, Value> {
    variables
        .iter()
        .map(|(name, typed)| (name.clone(), plain_value(typed)))
        .collect()
}

fn plain_value(typed: &TypedValue) -> Value {
    match (typed.value_type.as_str(), &typed.value) {
        ("Json", Value::String(text)) => serde_json::from_str(text).unwrap_or(typed.value.clone()),
        _ => typed.value.clone(),
    }
}

/// A work that failed. Retried up to `--follow-up-retries` times (unless it says no retry can
/// help), then an incident carries `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkError {
    /// One line: what Cockpit shows in the incident (for a command: its last stderr line).
    pub message: String,
    /// Whether trying again may help.
    pub retry: bool,
}

impl WorkError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        WorkError {
            message: message.into(),
            retry: true,
        }
    }

    /// A failure no retry can fix: an incident at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        WorkError {
            message: message.into(),
            retry: false,
        }
    }
}

impl std::fmt::Display for WorkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WorkError {}

/// The work done after a task is completed. One instance serves every follow-up, concurrently
/// (at most `--follow-up-concurrency` at once).
pub trait FollowUpWork: Send + Sync + 'static {
    /// The process variables the work reads ([`CompletedTask::variables`]); they are fetched with
    /// the task, and read from the instance when a restarted worker runs the work again.
    fn variables_to_fetch(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether this is work that must be run again after a crash (a lease is held while it
    /// runs). Only [`Delay`] says no: its message can be sent without it.
    fn is_work(&self) -> bool {
        true
    }

    /// Does the work and returns the variables the follow-up message carries. `shutdown` is
    /// cancelled when the worker's shutdown grace begins: stop soon; an error then leaves the
    /// follow-up owed for the next start, not failed.
    fn run(
        &self,
        task: &CompletedTask,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<Variables, WorkError>> + Send;
}

/// A shared work is the same work: keep a handle on it (its counters, its clients) while the
/// daemon runs it.
impl<W: FollowUpWork> FollowUpWork for std::sync::Arc<W> {
    fn variables_to_fetch(&self) -> Vec<String> {
        W::variables_to_fetch(self)
    }

    fn is_work(&self) -> bool {
        W::is_work(self)
    }

    fn run(
        &self,
        task: &CompletedTask,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<Variables, WorkError>> + Send {
        W::run(self, task, shutdown)
    }
}

/// The daemon's default: no work. The message goes `--correlation-delay` after the completion
/// (the follow-up waits out the delay whatever the work).
#[derive(Debug, Clone, Copy, Default)]
pub struct Delay;

impl FollowUpWork for Delay {
    fn is_work(&self) -> bool {
        false
    }

    async fn run(&self, _: &CompletedTask, _: &CancellationToken) -> Result<Variables, WorkError> {
        Ok(Variables::new())
    }
}

/// The boxed future of a [`DynWork`] run.
pub type WorkRun<'a> = Pin<Box<dyn Future<Output = Result<Variables, WorkError>> + Send + 'a>>;

/// [`FollowUpWork`] behind a pointer: what the follow-ups hold, whichever work it is.
pub trait DynWork: Send + Sync + 'static {
    /// See [`FollowUpWork::variables_to_fetch`].
    fn variables_to_fetch(&self) -> Vec<String>;
    /// See [`FollowUpWork::is_work`].
    fn is_work(&self) -> bool;
    /// See [`FollowUpWork::run`].
    fn run<'a>(&'a self, task: &'a CompletedTask, shutdown: &'a CancellationToken) -> WorkRun<'a>;
}

impl<W: FollowUpWork> DynWork for W {
    fn variables_to_fetch(&self) -> Vec<String> {
        FollowUpWork::variables_to_fetch(self)
    }

    fn is_work(&self) -> bool {
        FollowUpWork::is_work(self)
    }

    fn run<'a>(&'a self, task: &'a CompletedTask, shutdown: &'a CancellationToken) -> WorkRun<'a> {
        Box::pin(FollowUpWork::run(self, task, shutdown))
    }
}

impl std::fmt::Debug for dyn DynWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynWork")
            .field("is_work", &self.is_work())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(extension_properties: Value) -> ExternalTask {
        serde_json::from_value(serde_json::json!({
            "id": "t1",
            "topicName": "t",
            "extensionProperties": extension_properties,
        }))
        .expect("a valid task")
    }

    #[test]
    fn the_tasks_extension_properties_reach_the_work_when_it_has_some() {
        let task = CompletedTask::from_task(&fetched(serde_json::json!({"script": "a.py"})), "t");
        let json = serde_json::to_value(&task).expect("serializable");
        assert_eq!(
            json["extensionProperties"],
            serde_json::json!({"script": "a.py"})
        );
        let none = CompletedTask::from_task(&fetched(serde_json::json!({})), "t");
        let json = serde_json::to_value(&none).expect("serializable");
        assert!(json.get("extensionProperties").is_none(), "{json}");
    }

    #[test]
    fn a_json_variable_reaches_the_work_as_the_document_and_others_as_their_value() {
        let variables = Variables::from([
            ("n".to_owned(), TypedValue::integer(3)),
            (
                "doc".to_owned(),
                TypedValue::from_json(serde_json::json!({"a": [1, 2]})),
            ),
        ]);
        assert_eq!(
            Value::Object(plain_values(&variables)),
            serde_json::json!({"n": 3, "doc": {"a": [1, 2]}})
        );
    }
}
