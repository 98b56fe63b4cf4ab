//! Wire types of the Camunda 7 REST API (`/engine-rest`), exactly as the engine reads and writes
//! them. Nothing here knows about HTTP or retries; `EngineClient` moves these over the wire.
//!
//! Fields the worker does not use are still modelled where a library user may want them
//! (`activity_id`, `priority`, ...). Unknown fields are ignored so that newer engines and the
//! community forks, which add fields, keep working.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::FetchFilter;
use crate::variables::Variables;

/// An external task as `fetchAndLock` returns it, locked for this worker.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalTask {
    /// The task id, used in every follow-up call (`complete`, `failure`, ...).
    pub id: String,
    /// The topic the task was fetched for.
    #[serde(default)]
    pub topic_name: Option<String>,
    /// The worker that holds the lock (this one).
    #[serde(default)]
    pub worker_id: Option<String>,
    /// The business key of the process instance; `None` when the instance was started without one.
    #[serde(default)]
    pub business_key: Option<String>,
    /// The tenant of the task's process instance; `None` when it has none. Its follow-up message
    /// is correlated within this tenant only.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// The service task's BPMN extension properties (`camunda:properties`), when the fetch asked
    /// for them (`includeExtensionProperties`).
    #[serde(default)]
    pub extension_properties: Option<BTreeMap<String, String>>,
    /// The process instance the task belongs to.
    #[serde(default)]
    pub process_instance_id: Option<String>,
    /// The key of the process definition (the BPMN process id).
    #[serde(default)]
    pub process_definition_key: Option<String>,
    /// The BPMN activity id of the service task.
    #[serde(default)]
    pub activity_id: Option<String>,
    /// The execution that waits on the task.
    #[serde(default)]
    pub execution_id: Option<String>,
    /// Remaining retries; `null` until a failure report has set it.
    #[serde(default)]
    pub retries: Option<i32>,
    /// The task's priority.
    #[serde(default)]
    pub priority: Option<i64>,
    /// When the lock expires, as the engine formats dates.
    #[serde(default)]
    pub lock_expiration_time: Option<String>,
    /// The variables the fetch asked for.
    #[serde(default)]
    pub variables: Option<Variables>,
}

/// The body of `POST /external-task/fetchAndLock`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FetchAndLockRequest {
    /// Who takes the locks; must be unique per worker process.
    pub worker_id: String,
    /// How many tasks the engine may hand out: exactly the worker's free slots.
    pub max_tasks: u32,
    /// Whether to hand out high-priority tasks first.
    pub use_priority: bool,
    /// How long the engine may park the request when no task is available, in milliseconds.
    pub async_response_timeout: u64,
    /// In which order the tasks are handed out (after the priority, when `use_priority`); empty:
    /// the engine's own order, and no field sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sorting: Vec<Sorting>,
    /// The topics to fetch.
    pub topics: Vec<TopicRequest>,
}

/// One ordering of a fetch (`sorting`, Camunda 7.21+): the engine orders by `createTime` only.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Sorting {
    /// The field to order by.
    pub sort_by: SortBy,
    /// Ascending or descending.
    pub sort_order: SortOrder,
}

/// What a fetch can be ordered by.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SortBy {
    /// When the task was created (`createTime`).
    CreateTime,
}

/// The direction of a [`Sorting`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Oldest first (`asc`).
    Asc,
    /// Newest first (`desc`).
    Desc,
}

/// One topic of a fetch-and-lock request.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicRequest {
    /// The topic name as set in the BPMN (`camunda:topic`).
    pub topic_name: String,
    /// How long the lock holds, in milliseconds.
    pub lock_duration: u64,
    /// Which variables to fetch; `None` means all of them, an empty list none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<Vec<String>>,
    /// Which of the topic's tasks may be handed out (tenants, definitions, ...); the default
    /// adds no field.
    #[serde(flatten)]
    pub filter: FetchFilter,
}

/// The body of `POST /external-task/{id}/complete`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CompleteRequest {
    /// Must be the worker that holds the lock.
    pub worker_id: String,
    /// Process variables to set, each with an explicit type.
    pub variables: Variables,
}

/// The body of `POST /external-task/{id}/failure`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailureRequest {
    /// Must be the worker that holds the lock.
    pub worker_id: String,
    /// A one-line summary, shown in Cockpit's incident list.
    pub error_message: String,
    /// The full details (cause chain), shown when the operator opens the incident.
    pub error_details: String,
    /// Retries left; 0 raises an incident. Always sent: the engine treats a missing value as 0.
    pub retries: i32,
    /// How long the engine waits before handing the task out again, in milliseconds.
    pub retry_timeout: u64,
}

/// The body of `POST /external-task/{id}/bpmnError`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BpmnErrorRequest {
    /// Must be the worker that holds the lock.
    pub worker_id: String,
    /// The error code a boundary error event catches.
    pub error_code: String,
    /// A human-readable message.
    pub error_message: String,
    /// Variables to pass along with the error.
    pub variables: Variables,
}

/// The body of `POST /external-task/{id}/extendLock`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtendLockRequest {
    /// Must be the worker that holds the lock.
    pub worker_id: String,
    /// The new lock duration from now, in milliseconds.
    pub new_duration: u64,
}

/// The body of `POST /message`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CorrelateMessageRequest {
    /// The message name, as in the BPMN message definition.
    pub message_name: String,
    /// Correlate to the instance with this business key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_key: Option<String>,
    /// Correlate to exactly this process instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_instance_id: Option<String>,
    /// Correlate only to instances of this tenant (never beside `process_instance_id`: the
    /// engine refuses it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Correlate only to instances without a tenant (never beside `process_instance_id`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub without_tenant_id: bool,
    /// Process instance variables the waiting instance must have, type-exact: the owed marker.
    #[serde(skip_serializing_if = "Variables::is_empty")]
    pub correlation_keys: Variables,
    /// Variables set on the instance in the correlating transaction: the delivered marker and
    /// the message's own variables.
    #[serde(skip_serializing_if = "Variables::is_empty")]
    pub process_variables: Variables,
}

/// One variable of `GET/POST /variable-instance`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VariableInstance {
    /// The variable's name.
    pub name: String,
    /// Its value (a string for String variables).
    #[serde(default)]
    pub value: serde_json::Value,
    /// The instance it belongs to.
    #[serde(default)]
    pub process_instance_id: Option<String>,
    /// The tenant of that instance; `None` when it has none.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// The body of `POST /process-definition/key/{key}/start`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StartProcessRequest {
    /// The business key of the new instance.
    pub business_key: String,
    /// Start variables.
    pub variables: Variables,
}

/// A process instance as the runtime API returns it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInstance {
    /// The instance id.
    pub id: String,
    /// The business key it was started with.
    #[serde(default)]
    pub business_key: Option<String>,
    /// The process definition it runs.
    #[serde(default)]
    pub definition_id: Option<String>,
    /// Whether the instance already ended (it ran to completion within the start call).
    #[serde(default)]
    pub ended: bool,
    /// Its tenant; `None` when it has none.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// A process instance from the history API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoricProcessInstance {
    /// The instance id.
    pub id: String,
    /// The business key it was started with.
    #[serde(default)]
    pub business_key: Option<String>,
    /// `ACTIVE`, `COMPLETED`, `SUSPENDED`, `EXTERNALLY_TERMINATED`, `INTERNALLY_TERMINATED`.
    #[serde(default)]
    pub state: Option<String>,
    /// When the instance started, as the engine formats dates.
    #[serde(default)]
    pub start_time: Option<String>,
    /// When the instance ended.
    #[serde(default)]
    pub end_time: Option<String>,
}

/// A historic variable instance.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoricVariable {
    /// The variable name.
    pub name: String,
    /// The variable type as the engine stores it (`Integer`, `String`, ...).
    #[serde(rename = "type")]
    pub value_type: Option<String>,
    /// The value.
    #[serde(default)]
    pub value: serde_json::Value,
    /// The process instance the variable belongs to.
    #[serde(default)]
    pub process_instance_id: Option<String>,
}

/// An event subscription: a process instance waiting for a message or signal.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventSubscription {
    /// The subscription id.
    pub id: String,
    /// `message`, `signal`, ...
    #[serde(default)]
    pub event_type: Option<String>,
    /// The message name.
    #[serde(default)]
    pub event_name: Option<String>,
    /// The waiting instance; `None` for a message start event.
    #[serde(default)]
    pub process_instance_id: Option<String>,
    /// The BPMN activity that waits.
    #[serde(default)]
    pub activity_id: Option<String>,
    /// The execution that waits (where an incident about the wait belongs).
    #[serde(default)]
    pub execution_id: Option<String>,
    /// When the instance reached the catch event, as the engine formats dates.
    #[serde(default)]
    pub created_date: Option<String>,
}

/// One entry of the external-task log in the history (`GET /history/external-task-log`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalTaskLog {
    /// The log entry id.
    pub id: String,
    /// When it happened, as the engine formats dates.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The external task it is about.
    #[serde(default)]
    pub external_task_id: Option<String>,
    /// The task's topic.
    #[serde(default)]
    pub topic_name: Option<String>,
    /// The worker that held the lock.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// The task's process instance.
    #[serde(default)]
    pub process_instance_id: Option<String>,
}

/// An incident (a task out of retries, a failed job, ...).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// The incident id.
    pub id: String,
    /// `failedExternalTask`, `failedJob`, ...
    #[serde(default)]
    pub incident_type: Option<String>,
    /// The instance the incident belongs to.
    #[serde(default)]
    pub process_instance_id: Option<String>,
    /// The error message reported with the failure.
    #[serde(default)]
    pub incident_message: Option<String>,
}

/// A deployment as `POST /deployment/create` answers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The deployment id.
    pub id: String,
    /// The deployment name.
    #[serde(default)]
    pub name: Option<String>,
    /// Process definitions deployed by this call; empty when duplicate filtering found no change.
    #[serde(default)]
    pub deployed_process_definitions: Option<BTreeMap<String, ProcessDefinition>>,
}

/// A process definition.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProcessDefinition {
    /// The definition id (`key:version:uuid`).
    pub id: String,
    /// The process key.
    pub key: String,
    /// The version, counting up with every changed deployment.
    #[serde(default)]
    pub version: Option<i64>,
}

/// The answer of the `/count` endpoints.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Count {
    /// How many rows match.
    pub count: u64,
}

/// The error body the engine sends with 4xx/5xx: `{"type", "message", "code"}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct ErrorBody {
    /// The simple class name of the Java exception (`RestException`, `InvalidRequestException`, ...).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The exception message.
    #[serde(default)]
    pub message: Option<String>,
    /// An engine error code (7.20+): 1 = optimistic locking, 0 = unspecified.
    #[serde(default)]
    pub code: Option<i64>,
}
