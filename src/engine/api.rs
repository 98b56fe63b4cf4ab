//! Every REST call the worker and its subcommands make, as methods of [`EngineClient`], each
//! built from its [`Endpoint`] (see `endpoint.rs` for what each one is).
//!
//! To add an endpoint: a variant in [`Endpoint`], and a method here that sends it.

use std::time::Duration;

use tracing::instrument;

use super::dto::*;
use super::endpoint::Endpoint;
use super::error::EngineError;
use super::node::Node;
use super::transport::{expect_no_content, json_body, read_json, Call};
use super::{long_poll_margin, EngineClient};

/// Which open tasks a count includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFilter {
    /// Every open task of the topic.
    All,
    /// Tasks locked by some worker.
    Locked,
    /// Tasks whose retries ran out (an incident).
    NoRetriesLeft,
}

/// A duration in whole milliseconds, as the engine's REST API counts time.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl EngineClient {
    /// Locks up to `request.max_tasks` tasks on `node`, waiting up to `asyncResponseTimeout` for
    /// one to appear.
    #[instrument(level = "debug", skip_all, fields(node = %node.name(), max_tasks = request.max_tasks))]
    pub async fn fetch_and_lock(
        &self,
        node: &Node,
        request: &FetchAndLockRequest,
    ) -> Result<Vec<ExternalTask>, EngineError> {
        let long_poll = Duration::from_millis(request.async_response_timeout);
        let call = Call::new(Endpoint::FetchAndLock, "")
            .timeout(long_poll + long_poll_margin(long_poll))
            .fetching(request.max_tasks);
        let reply = self.send_to(node, &call, json_body(Some(request))).await?;
        read_json(&call, reply).await
    }

    /// Ends this worker's long poll parked on `node`, on an engine that runs with
    /// `fetch-and-lock-unique-worker-request=true`: a new fetch-and-lock with the same worker id
    /// replaces the parked one, which the engine then answers with 503. This one asks for no task
    /// and waits a millisecond, so it can lock nothing and is answered at once. On an engine
    /// without that setting it is a harmless empty fetch, and the parked poll stays.
    pub async fn cancel_parked_poll(
        &self,
        node: &Node,
        worker_id: &str,
    ) -> Result<(), EngineError> {
        let request = FetchAndLockRequest {
            worker_id: worker_id.to_owned(),
            max_tasks: 0,
            use_priority: false,
            async_response_timeout: 1,
            sorting: Vec::new(),
            topics: Vec::new(),
        };
        let call = Call::new(Endpoint::FetchAndLock, "");
        let reply = self.send_to(node, &call, json_body(Some(&request))).await?;
        read_json::<Vec<ExternalTask>>(&call, reply).await.map(drop)
    }

    /// Completes a task, setting `request.variables` on the process instance.
    #[instrument(level = "debug", skip(self, request))]
    pub async fn complete(
        &self,
        task_id: &str,
        request: &CompleteRequest,
    ) -> Result<(), EngineError> {
        self.task_action(Endpoint::Complete, task_id, Some(request))
            .await
    }

    /// Reports a failure; with `retries` 0 the engine raises an incident.
    #[instrument(level = "debug", skip(self, request))]
    pub async fn report_failure(
        &self,
        task_id: &str,
        request: &FailureRequest,
    ) -> Result<(), EngineError> {
        self.task_action(Endpoint::Failure, task_id, Some(request))
            .await
    }

    /// Reports a BPMN error, for a boundary error event to catch.
    #[instrument(level = "debug", skip(self, request))]
    pub async fn report_bpmn_error(
        &self,
        task_id: &str,
        request: &BpmnErrorRequest,
    ) -> Result<(), EngineError> {
        self.task_action(Endpoint::BpmnError, task_id, Some(request))
            .await
    }

    /// Extends the lock of a task this worker holds.
    #[instrument(level = "debug", skip(self, request))]
    pub async fn extend_lock(
        &self,
        task_id: &str,
        request: &ExtendLockRequest,
    ) -> Result<(), EngineError> {
        self.task_action(Endpoint::ExtendLock, task_id, Some(request))
            .await
    }

    /// Releases a task so that any worker can fetch it at once.
    #[instrument(level = "debug", skip(self))]
    pub async fn unlock(&self, task_id: &str) -> Result<(), EngineError> {
        self.task_action::<()>(Endpoint::Unlock, task_id, None)
            .await
    }

    /// One call about one task that the engine answers with 204.
    pub(super) async fn task_action<B: serde::Serialize>(
        &self,
        endpoint: Endpoint,
        task_id: &str,
        body: Option<&B>,
    ) -> Result<(), EngineError> {
        let call = Call::new(endpoint, task_id);
        expect_no_content(&call, self.send_any(&call, json_body(body)).await?).await
    }

    /// Correlates a message to the one execution waiting for it.
    #[instrument(level = "debug", skip_all, fields(message = %request.message_name))]
    pub async fn correlate_message(
        &self,
        request: &CorrelateMessageRequest,
    ) -> Result<(), EngineError> {
        let call = Call::new(Endpoint::Message, "");
        expect_no_content(&call, self.send_any(&call, json_body(Some(request))).await?).await
    }

    /// Deploys BPMN resources (`(file name, contents)`), skipping unchanged ones; for
    /// `tenant_id`, when given (the deployment and its definitions belong to that tenant).
    pub async fn deploy(
        &self,
        deployment_name: &str,
        tenant_id: Option<&str>,
        resources: Vec<(String, Vec<u8>)>,
    ) -> Result<Deployment, EngineError> {
        let call = Call::new(Endpoint::Deploy, "");
        let build_form = || {
            let mut form = reqwest::multipart::Form::new()
                .text("deployment-name", deployment_name.to_owned())
                .text("enable-duplicate-filtering", "true")
                .text("deploy-changed-only", "true")
                .text("deployment-source", "camunda-worker");
            if let Some(tenant_id) = tenant_id {
                form = form.text("tenant-id", tenant_id.to_owned());
            }
            for (file_name, bytes) in &resources {
                let part = reqwest::multipart::Part::bytes(bytes.clone())
                    .file_name(file_name.clone())
                    .mime_str("application/octet-stream")
                    .unwrap_or_else(|_| reqwest::multipart::Part::bytes(bytes.clone()));
                form = form.part(file_name.clone(), part);
            }
            form
        };
        let reply = self
            .send_any(&call, |request| request.multipart(build_form()))
            .await?;
        read_json(&call, reply).await
    }

    /// Starts an instance of the latest version of process `key` — of `tenant_id`'s definition
    /// when given (without it, the engine refuses a key several tenants deployed).
    pub async fn start_process(
        &self,
        key: &str,
        tenant_id: Option<&str>,
        request: &StartProcessRequest,
    ) -> Result<ProcessInstance, EngineError> {
        let definition = match tenant_id {
            Some(tenant_id) => format!("{key}/tenant-id/{tenant_id}"),
            None => key.to_owned(),
        };
        let call = Call::new(Endpoint::Start, &definition);
        let reply = self.send_any(&call, json_body(Some(request))).await?;
        read_json(&call, reply).await
    }

    /// Tasks the engine holds locked for `worker_id` (at most 1000 per call).
    pub async fn locked_tasks(&self, worker_id: &str) -> Result<Vec<ExternalTask>, EngineError> {
        self.get_json(
            Endpoint::ExternalTasks,
            "",
            &[
                ("workerId", worker_id.to_owned()),
                ("locked", "true".to_owned()),
                ("maxResults", "1000".to_owned()),
            ],
        )
        .await
    }

    /// Message subscriptions of waiting process instances for `message_name`, oldest first, one
    /// page.
    pub async fn message_subscriptions(
        &self,
        message_name: &str,
        first_result: u64,
        max_results: u64,
    ) -> Result<Vec<EventSubscription>, EngineError> {
        self.message_waits(
            message_name,
            [
                ("sortBy", "created".to_owned()),
                ("sortOrder", "asc".to_owned()),
                ("firstResult", first_result.to_string()),
                ("maxResults", max_results.to_string()),
            ],
        )
        .await
    }

    /// Where one process instance waits for `message_name` right now (usually none or one).
    pub async fn instance_subscriptions(
        &self,
        process_instance_id: &str,
        message_name: &str,
    ) -> Result<Vec<EventSubscription>, EngineError> {
        self.message_waits(
            message_name,
            [("processInstanceId", process_instance_id.to_owned())],
        )
        .await
    }

    /// `GET /event-subscription` for message `message_name`, narrowed by `more`.
    async fn message_waits<const N: usize>(
        &self,
        message_name: &str,
        more: [(&str, String); N],
    ) -> Result<Vec<EventSubscription>, EngineError> {
        let mut query = vec![
            ("eventType", "message".to_owned()),
            ("eventName", message_name.to_owned()),
        ];
        query.extend(more);
        self.get_json(Endpoint::EventSubscriptions, "", &query)
            .await
    }

    /// Whether a process instance is still running (a 404 says it ended or was deleted).
    pub async fn process_instance_exists(
        &self,
        process_instance_id: &str,
    ) -> Result<bool, EngineError> {
        let found: Result<ProcessInstance, EngineError> = self
            .get_json(Endpoint::ProcessInstance, process_instance_id, &[])
            .await;
        match found {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The successful completions of one external task in the history (empty with history level
    /// `none`, or when the task was not completed).
    pub async fn task_completions(
        &self,
        task_id: &str,
    ) -> Result<Vec<ExternalTaskLog>, EngineError> {
        self.get_json(
            Endpoint::ExternalTaskLog,
            "",
            &[
                ("externalTaskId", task_id.to_owned()),
                ("successLog", "true".to_owned()),
            ],
        )
        .await
    }

    /// The latest successful completion of a task of `topic` in one process instance, from the
    /// history (`None` also with history level `none`).
    pub async fn latest_topic_completion(
        &self,
        process_instance_id: &str,
        topic: &str,
    ) -> Result<Option<ExternalTaskLog>, EngineError> {
        let mut found: Vec<ExternalTaskLog> = self
            .get_json(
                Endpoint::ExternalTaskLog,
                "",
                &[
                    ("processInstanceId", process_instance_id.to_owned()),
                    ("topicName", topic.to_owned()),
                    ("successLog", "true".to_owned()),
                    ("sortBy", "timestamp".to_owned()),
                    ("sortOrder", "desc".to_owned()),
                    ("maxResults", "1".to_owned()),
                ],
            )
            .await?;
        Ok(found.pop())
    }

    /// How many instances wait for `message_name`.
    pub async fn count_message_subscriptions(
        &self,
        message_name: &str,
        tenant_id: Option<&str>,
    ) -> Result<u64, EngineError> {
        let mut query = vec![
            ("eventType", "message".to_owned()),
            ("eventName", message_name.to_owned()),
        ];
        query.extend(tenant_id.map(|t| ("tenantIdIn", t.to_owned())));
        self.count(Endpoint::EventSubscriptionCount, &query).await
    }

    /// How many open external tasks of `topic` match `filter`.
    pub async fn count_external_tasks(
        &self,
        topic: &str,
        filter: TaskFilter,
        tenant_id: Option<&str>,
    ) -> Result<u64, EngineError> {
        let mut query = vec![("topicName", topic.to_owned())];
        query.extend(tenant_id.map(|t| ("tenantIdIn", t.to_owned())));
        match filter {
            TaskFilter::All => {}
            TaskFilter::Locked => query.push(("locked", "true".to_owned())),
            TaskFilter::NoRetriesLeft => query.push(("noRetriesLeft", "true".to_owned())),
        }
        self.count(Endpoint::ExternalTaskCount, &query).await
    }

    /// The tenants of the latest process definitions, sorted, each once: the tenants `status`
    /// splits its counts by (none on an engine without tenants).
    pub async fn definition_tenants(&self) -> Result<Vec<String>, EngineError> {
        let definitions: Vec<serde_json::Value> = self
            .get_json(
                Endpoint::ProcessDefinitions,
                "",
                &[
                    ("latestVersion", "true".to_owned()),
                    ("maxResults", "1000".to_owned()),
                ],
            )
            .await?;
        let tenants: std::collections::BTreeSet<String> = definitions
            .iter()
            .filter_map(|d| d["tenantId"].as_str().map(str::to_owned))
            .collect();
        Ok(tenants.into_iter().collect())
    }

    /// How many incidents are open.
    pub async fn count_incidents(&self) -> Result<u64, EngineError> {
        self.count(Endpoint::IncidentCount, &[]).await
    }

    /// Asks one node `GET /engine` (anonymous in every setup): what the node's health starts from,
    /// before a first long poll that may stay parked for its whole timeout.
    pub async fn ping(&self, node: &Node) -> Result<(), EngineError> {
        let call = Call::new(Endpoint::Engine, "");
        let reply = self.send_to(node, &call, |request| request).await?;
        read_json::<Vec<serde_json::Value>>(&call, reply)
            .await
            .map(drop)
    }

    /// Whether the engine answers `GET /engine` (anonymous in every setup: a liveness probe).
    pub async fn engine_names(&self) -> Result<Vec<serde_json::Value>, EngineError> {
        self.get_json(Endpoint::Engine, "", &[]).await
    }

    async fn count(
        &self,
        endpoint: Endpoint,
        query: &[(&str, String)],
    ) -> Result<u64, EngineError> {
        self.get_json::<Count>(endpoint, "", query)
            .await
            .map(|c| c.count)
    }

    /// `GET` of `endpoint` (about `id`) with `query` on any node, returning JSON.
    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        id: &str,
        query: &[(&str, String)],
    ) -> Result<T, EngineError> {
        let call = Call::new(endpoint, id);
        let reply = self.send_any(&call, |request| request.query(query)).await?;
        read_json(&call, reply).await
    }
}
