//! What to do with one external task, free of HTTP and retry details.
//!
//! A [`Handler`] looks at a locked task and decides its fate: complete it (optionally asking for a
//! follow-up message later), raise a BPMN error, or fail it. The worker does the rest — completes
//! with retries, reports failures, extends the lock while the handler runs, and schedules the
//! follow-up only once the engine confirmed the completion.
//!
//! The daemon's own handler is [`MessageCorrelationHandler`]. Library users implement the trait
//! for their own work; see `examples/custom_handler.rs`.

use std::future::Future;
use std::time::Duration;

use crate::correlation::{CorrelateBy, CorrelationTarget};
use crate::engine::ExternalTask;
use crate::variables::Variables;

/// What a handler decided for a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskResult {
    /// Complete the task with these variables; then, if `follow_up` is set, correlate the
    /// follow-up message to that target after the configured delay.
    Complete {
        /// Variables to set on completion.
        variables: Variables,
        /// Where to send the follow-up message, if any.
        follow_up: Option<CorrelationTarget>,
    },
    /// Throw a BPMN error that a boundary error event on the service task can catch.
    BpmnError {
        /// The error code the boundary event matches.
        code: String,
        /// A message for people.
        message: String,
        /// Variables set with the error, so the path the boundary event takes can read why.
        variables: Variables,
    },
}

/// A handler failure, reported to the engine with `/failure`.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerError {
    /// One line: shown in Cockpit's incident list.
    pub message: String,
    /// Everything else (cause chain, context): shown when the operator opens the incident.
    pub details: String,
    /// Retries left to report; `None` = the task's retries − 1 (first time: `--retries`). `Some(0)`
    /// raises an incident at once, for errors that a retry cannot fix.
    pub retries: Option<i32>,
    /// How long the engine waits before handing the task out again; `None` = `--retry-timeout`.
    pub retry_timeout: Option<Duration>,
}

impl HandlerError {
    /// A failure worth retrying later (the configured retries and retry timeout apply).
    pub fn transient(message: impl Into<String>, details: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            details: details.into(),
            retries: None,
            retry_timeout: None,
        }
    }

    /// A failure no retry can fix: retries 0, so the engine raises an incident for an operator.
    pub fn permanent(message: impl Into<String>, details: impl Into<String>) -> Self {
        HandlerError {
            retries: Some(0),
            ..Self::transient(message, details)
        }
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

/// The work done for one task. Implementations must be cheap to share: one instance serves every
/// task, concurrently.
pub trait Handler: Send + Sync + 'static {
    /// Which process variables to fetch with each task: `None` fetches all of them, an empty list
    /// none (the default, and the cheapest for the engine).
    fn variables_to_fetch(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }

    /// Which process variables to fetch with the tasks of `topic`, when one worker serves several
    /// topics (routes); by default [`Handler::variables_to_fetch`] for each.
    fn variables_to_fetch_for(&self, topic: &str) -> Option<Vec<String>> {
        let _ = topic;
        self.variables_to_fetch()
    }

    /// Decides what happens to `task`. A long-running handler is fine: the worker extends the
    /// lock while it runs. A panic is contained and reported as a failure.
    fn handle(
        &self,
        task: &ExternalTask,
    ) -> impl Future<Output = Result<TaskResult, HandlerError>> + Send;
}

/// The daemon's handler: completes every task at once with fixed variables and asks for the
/// follow-up message to the task's process instance.
#[derive(Debug, Clone)]
pub struct MessageCorrelationHandler {
    /// The variables set on every completion (by default `var1` = 1, `var2` = "value").
    pub variables: Variables,
    /// How the follow-up finds its process instance.
    pub correlate_by: CorrelateBy,
    /// The variables fetched with each task, for the follow-up's work (`--fetch-var`).
    pub fetch_variables: Vec<String>,
}

impl Handler for MessageCorrelationHandler {
    fn variables_to_fetch(&self) -> Option<Vec<String>> {
        Some(self.fetch_variables.clone())
    }

    async fn handle(&self, task: &ExternalTask) -> Result<TaskResult, HandlerError> {
        let follow_up = self.correlate_by.target_for(task).map_err(|missing| {
            HandlerError::permanent(
                missing.clone(),
                format!(
                    "{missing}. The follow-up message could not find this process instance, so the \
                     task was not completed. Start instances with a business key, or run the \
                     worker with --correlate-by process-instance."
                ),
            )
        })?;
        Ok(TaskResult::Complete {
            variables: self.variables.clone(),
            follow_up: Some(follow_up),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variables::default_variables;

    fn task(business_key: Option<&str>) -> ExternalTask {
        serde_json::from_value(serde_json::json!({
            "id": "t1",
            "businessKey": business_key,
            "processInstanceId": "p1",
        }))
        .expect("valid task")
    }

    #[tokio::test]
    async fn a_task_is_completed_with_the_variables_and_a_follow_up_by_business_key() {
        let handler = MessageCorrelationHandler {
            variables: default_variables(),
            correlate_by: CorrelateBy::BusinessKey,
            fetch_variables: Vec::new(),
        };
        let result = handler.handle(&task(Some("order-1"))).await;
        assert_eq!(
            result,
            Ok(TaskResult::Complete {
                variables: default_variables(),
                follow_up: Some(CorrelationTarget {
                    business_key: Some("order-1".into()),
                    process_instance_id: None,
                    tenant_id: None,
                }),
            })
        );
    }

    #[tokio::test]
    async fn a_task_without_business_key_fails_permanently_when_correlating_by_business_key() {
        let handler = MessageCorrelationHandler {
            variables: default_variables(),
            correlate_by: CorrelateBy::BusinessKey,
            fetch_variables: Vec::new(),
        };
        let error = handler.handle(&task(None)).await.expect_err("must fail");
        assert_eq!(error.retries, Some(0));
        assert!(
            error.message.contains("no business key"),
            "{}",
            error.message
        );
    }
}
