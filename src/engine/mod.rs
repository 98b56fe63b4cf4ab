//! The Camunda 7 REST client: every call the worker and its subcommands make, with credentials,
//! timeouts, error mapping and the engine's health in one place. Nothing outside this module
//! builds a REST path.
//!
//! An engine may be one node or a cluster of nodes sharing one database. The client keeps one
//! [`Node`] per engine URL, each with its own connection pool and [`NodeHealth`]. Fetch-and-lock
//! goes to the node the caller names (a long poll is only woken by its own node); every other call
//! goes to any node that answers, because the nodes share their state.
//!
//! Every method returns [`EngineError`], whose predicates (`is_transient`, `outcome_unknown`,
//! `mismatch`, ...) are what the worker's retry policy branches on. The client itself retries in
//! two cases only, both at once and without backoff: a call whose kept-alive connection the server
//! had just closed is sent again on a new connection, and a 401 is retried once with refreshed
//! credentials. Any other retry policy belongs to the caller, who knows whether a lock or a
//! deadline bounds it.

pub mod auth;
pub mod dto;
pub mod error;
pub mod health;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Certificate, Identity, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, instrument};
use url::Url;

pub use auth::Credentials;
pub use dto::*;
pub use error::{EngineError, Mismatch};
pub use health::{NodeHealth, Reach};

use crate::metrics::Metrics;
use error::{error_chain, excerpt, is_stale_connection};

/// The engine refuses a long poll above 30 minutes.
pub const MAX_LONG_POLL: Duration = Duration::from_secs(30 * 60);

/// Extra time a fetch-and-lock request may take beyond its long poll before the client gives up:
/// a third of the long poll, between 1 s and 10 s. The engine answers a parked request at the
/// latest after the long poll; a request still open this much later sits on a half-open
/// connection and must not hang the worker.
pub fn long_poll_margin(long_poll: Duration) -> Duration {
    (long_poll / 3).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Idle pooled connections are probed this often, so a silently dropped peer is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Pooled connections idle this long are closed by the client. It must stay below the shortest
/// keep-alive timeout common in front of or inside an engine — Apache httpd and Node.js close idle
/// connections after 5 s (nginx after 75 s, Tomcat after 60 s or its `connectionTimeout`, AWS load
/// balancers after 60 s) — so that the client, not the server, ends an idle connection. The race
/// that remains (the server closes it in the instant the client reuses it) is covered by sending
/// the call again at once on a new connection (see [`error::is_stale_connection`]).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// After a pooled connection turned out closed by the server, calls to that node use new
/// connections for this long: the pool's other connections have been idle just as long, and the
/// caller's immediate retry must not meet one of them.
const STALE_POOL_WINDOW: Duration = Duration::from_secs(1);

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS settings beyond the system's trusted roots.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// PEM of an extra trusted root (a private CA).
    pub ca_cert_pem: Option<Vec<u8>>,
    /// PEM of a client certificate followed by its private key, for mutual TLS.
    pub client_identity_pem: Option<Vec<u8>>,
}

/// Everything needed to build an [`EngineClient`].
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The REST root of every engine node, e.g. `http://localhost:8080/engine-rest`.
    pub nodes: Vec<Url>,
    /// Credentials attached to every call.
    pub credentials: Credentials,
    /// Timeout of every call but fetch-and-lock (which gets its long poll + [`long_poll_margin`]).
    pub request_timeout: Duration,
    /// Extra TLS settings.
    pub tls: TlsSettings,
}

impl EngineSettings {
    /// Settings for one engine node without authentication or special TLS.
    pub fn new(base_url: Url) -> Self {
        EngineSettings {
            nodes: vec![base_url],
            credentials: Credentials::Anonymous,
            request_timeout: Duration::from_secs(30),
            tls: TlsSettings::default(),
        }
    }
}

/// Where one engine node is: its REST root, and (for a node found by DNS discovery) the address
/// its host name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTarget {
    /// The REST root, e.g. `http://camunda-engine-headless:8080/engine-rest`.
    pub url: Url,
    /// The address to connect to instead of resolving the URL's host.
    pub address: Option<SocketAddr>,
}

impl NodeTarget {
    /// How the node is named in logs and metrics: its URL, with the address in place of the host
    /// name when it was discovered (each pod of a headless Service has its own).
    pub fn name(&self) -> String {
        let mut url = self.url.clone();
        if let Some(address) = self.address {
            // Setting an IP host and a port on an http(s) URL cannot fail.
            let _ = url.set_ip_host(address.ip());
            let _ = url.set_port(Some(address.port()));
        }
        url.as_str().trim_end_matches('/').to_owned()
    }
}

/// One engine node: its REST root, its connections and what the last call said about it.
#[derive(Debug)]
pub struct Node {
    /// The node's name in logs and metrics (see [`NodeTarget::name`]).
    name: String,
    /// The REST root without a trailing slash, as requests address it.
    base: String,
    /// The pooled client every call uses.
    http: reqwest::Client,
    /// A client that keeps no connection: the one immediate retry after a stale connection must
    /// not pick another pooled connection that the server may have closed just the same.
    fresh: reqwest::Client,
    /// Until when calls to this node go over new connections (ms since `created`): set when a
    /// pooled connection turned out closed, because the others in the pool have been idle just as
    /// long. Covers the caller's own immediate retry of a call the client does not repeat itself.
    fresh_until_ms: AtomicU64,
    created: Instant,
    health: NodeHealth,
}

impl Node {
    /// Whether calls should avoid the pool for now (see `fresh_until_ms`).
    fn avoid_pool(&self) -> bool {
        let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.fresh_until_ms.load(Ordering::Relaxed)
    }

    /// Marks the pool as suspect for [`STALE_POOL_WINDOW`].
    fn distrust_pool(&self) {
        let until = self.created.elapsed() + STALE_POOL_WINDOW;
        self.fresh_until_ms.store(
            u64::try_from(until.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The node's name in logs and metrics: its REST root (with the discovered address).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the last call to this node said about it.
    pub fn reach(&self) -> Reach {
        self.health.reach()
    }
}

/// A cheap-to-clone handle to the engine's REST API.
#[derive(Clone, Debug)]
pub struct EngineClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The nodes now; replaced as a whole when discovery finds the cluster changed, which the fetch
    /// loop follows through a subscription.
    nodes: tokio::sync::watch::Sender<Arc<Vec<Arc<Node>>>>,
    /// Round-robin position for calls that may go to any node.
    next: AtomicUsize,
    credentials: Credentials,
    request_timeout: Duration,
    tls: TlsSettings,
    metrics: Option<Arc<Metrics>>,
}

impl EngineClient {
    /// Builds the client; fails only on unusable TLS material.
    pub fn new(settings: EngineSettings) -> Result<Self, EngineError> {
        let nodes = settings
            .nodes
            .iter()
            .map(|url| {
                let target = NodeTarget {
                    url: url.clone(),
                    address: None,
                };
                new_node(&target, &settings.tls).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EngineClient {
            inner: Arc::new(Inner {
                nodes: tokio::sync::watch::Sender::new(Arc::new(nodes)),
                next: AtomicUsize::new(0),
                credentials: settings.credentials,
                request_timeout: settings.request_timeout,
                tls: settings.tls,
                metrics: None,
            }),
        })
    }

    /// The same client, reporting request latency and engine health to `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        let nodes = self.nodes();
        for node in nodes.iter() {
            metrics.add_node(node.name());
        }
        EngineClient {
            inner: Arc::new(Inner {
                nodes: tokio::sync::watch::Sender::new(nodes),
                next: AtomicUsize::new(0),
                credentials: self.inner.credentials.clone(),
                request_timeout: self.inner.request_timeout,
                tls: self.inner.tls.clone(),
                metrics: Some(metrics),
            }),
        }
    }

    /// The nodes the client knows now.
    pub fn nodes(&self) -> Arc<Vec<Arc<Node>>> {
        Arc::clone(&self.inner.nodes.borrow())
    }

    /// Follows changes of the node list (see [`EngineClient::set_nodes`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Vec<Arc<Node>>>> {
        self.inner.nodes.subscribe()
    }

    /// Replaces the node list: nodes that stay keep their connections and health, new ones start
    /// fresh, and the metrics of nodes that left are removed. Returns whether anything changed.
    pub fn set_nodes(&self, targets: &[NodeTarget]) -> Result<bool, EngineError> {
        let current = self.nodes();
        let mut next = Vec::with_capacity(targets.len());
        for target in targets {
            let name = target.name();
            match current.iter().find(|node| node.name == name) {
                Some(node) => next.push(Arc::clone(node)),
                None => next.push(Arc::new(new_node(target, &self.inner.tls)?)),
            }
        }
        let unchanged = next.len() == current.len()
            && next
                .iter()
                .all(|n| current.iter().any(|c| Arc::ptr_eq(c, n)));
        if unchanged {
            return Ok(false);
        }
        if let Some(metrics) = &self.inner.metrics {
            for node in &next {
                if !current.iter().any(|c| c.name == node.name) {
                    metrics.add_node(&node.name);
                }
            }
            for node in current.iter() {
                if !next.iter().any(|n| n.name == node.name) {
                    metrics.remove_node(&node.name);
                }
            }
        }
        self.inner.nodes.send_replace(Arc::new(next));
        Ok(true)
    }

    /// The name of the first node (for messages that name "the engine").
    pub fn base_url(&self) -> String {
        self.nodes()
            .first()
            .map(|n| n.name.clone())
            .unwrap_or_default()
    }

    /// The order in which to try the nodes for a call that may go to any of them: round-robin,
    /// nodes known to answer first.
    fn route(&self) -> Vec<Arc<Node>> {
        let nodes = self.nodes();
        let count = nodes.len();
        if count <= 1 {
            return nodes.iter().cloned().collect();
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut ordered: Vec<Arc<Node>> = (0..count)
            .map(|i| Arc::clone(&nodes[(start + i) % count]))
            .collect();
        ordered.sort_by_key(|node| node.reach() != Reach::Up);
        ordered
    }

    /// Locks up to `request.max_tasks` tasks on `node`, waiting up to `asyncResponseTimeout` for
    /// one to appear.
    #[instrument(level = "debug", skip_all, fields(node = %node.name, max_tasks = request.max_tasks))]
    pub async fn fetch_and_lock(
        &self,
        node: &Node,
        request: &FetchAndLockRequest,
    ) -> Result<Vec<ExternalTask>, EngineError> {
        let long_poll = Duration::from_millis(request.async_response_timeout);
        let timeout = long_poll + long_poll_margin(long_poll);
        let call = Call::post("fetchAndLock", "external-task/fetchAndLock".into())
            .timeout(timeout)
            .repeatable();
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
            topics: Vec::new(),
        };
        let call = Call::post("fetchAndLock", "external-task/fetchAndLock".into()).repeatable();
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
        let call = Call::post("complete", format!("external-task/{task_id}/complete"));
        expect_no_content(&call, self.send_any(&call, json_body(Some(request))).await?).await
    }

    /// Reports a failure; with `retries` 0 the engine raises an incident.
    #[instrument(level = "debug", skip(self, request))]
    pub async fn report_failure(
        &self,
        task_id: &str,
        request: &FailureRequest,
    ) -> Result<(), EngineError> {
        let call = Call::post("failure", format!("external-task/{task_id}/failure"));
        expect_no_content(&call, self.send_any(&call, json_body(Some(request))).await?).await
    }

    /// Reports a BPMN error, for a boundary error event to catch.
    #[instrument(level = "debug", skip(self, request))]
    pub async fn report_bpmn_error(
        &self,
        task_id: &str,
        request: &BpmnErrorRequest,
    ) -> Result<(), EngineError> {
        let call = Call::post("bpmnError", format!("external-task/{task_id}/bpmnError"));
        expect_no_content(&call, self.send_any(&call, json_body(Some(request))).await?).await
    }

    /// Extends the lock of a task this worker holds.
    #[instrument(level = "debug", skip(self, request))]
    pub async fn extend_lock(
        &self,
        task_id: &str,
        request: &ExtendLockRequest,
    ) -> Result<(), EngineError> {
        let call =
            Call::post("extendLock", format!("external-task/{task_id}/extendLock")).repeatable();
        expect_no_content(&call, self.send_any(&call, json_body(Some(request))).await?).await
    }

    /// Releases a task so that any worker can fetch it at once.
    #[instrument(level = "debug", skip(self))]
    pub async fn unlock(&self, task_id: &str) -> Result<(), EngineError> {
        let call = Call::post("unlock", format!("external-task/{task_id}/unlock")).repeatable();
        expect_no_content(&call, self.send_any(&call, json_body::<()>(None)).await?).await
    }

    /// Correlates a message to the one execution waiting for it.
    #[instrument(level = "debug", skip_all, fields(message = %request.message_name))]
    pub async fn correlate_message(
        &self,
        request: &CorrelateMessageRequest,
    ) -> Result<(), EngineError> {
        let call = Call::post("message", "message".into());
        expect_no_content(&call, self.send_any(&call, json_body(Some(request))).await?).await
    }

    /// Deploys BPMN resources (`(file name, contents)`), skipping unchanged ones.
    pub async fn deploy(
        &self,
        deployment_name: &str,
        resources: Vec<(String, Vec<u8>)>,
    ) -> Result<Deployment, EngineError> {
        // Duplicate filtering makes a repeated deployment a no-op.
        let call = Call::post("deploy", "deployment/create".into()).repeatable();
        let build_form = || {
            let mut form = reqwest::multipart::Form::new()
                .text("deployment-name", deployment_name.to_owned())
                .text("enable-duplicate-filtering", "true")
                .text("deploy-changed-only", "true")
                .text("deployment-source", "camunda-worker");
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

    /// Starts an instance of the latest version of process `key`.
    pub async fn start_process(
        &self,
        key: &str,
        request: &StartProcessRequest,
    ) -> Result<ProcessInstance, EngineError> {
        let call = Call::post("start", format!("process-definition/key/{key}/start"));
        let reply = self.send_any(&call, json_body(Some(request))).await?;
        read_json(&call, reply).await
    }

    /// Tasks the engine holds locked for `worker_id` (at most 1000 per call).
    pub async fn locked_tasks(&self, worker_id: &str) -> Result<Vec<ExternalTask>, EngineError> {
        self.get_json(
            "externalTasks",
            "external-task",
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
        self.get_json("eventSubscriptions", "event-subscription", &query)
            .await
    }

    /// Whether a process instance is still running (a 404 says it ended or was deleted).
    pub async fn process_instance_exists(
        &self,
        process_instance_id: &str,
    ) -> Result<bool, EngineError> {
        let found: Result<ProcessInstance, EngineError> = self
            .get_json(
                "processInstance",
                &format!("process-instance/{process_instance_id}"),
                &[],
            )
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
            "externalTaskLog",
            "history/external-task-log",
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
                "externalTaskLog",
                "history/external-task-log",
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
    ) -> Result<u64, EngineError> {
        self.count(
            "eventSubscriptionCount",
            "event-subscription/count",
            &[
                ("eventType", "message".to_owned()),
                ("eventName", message_name.to_owned()),
            ],
        )
        .await
    }

    /// How many open external tasks of `topic` match `filter`.
    pub async fn count_external_tasks(
        &self,
        topic: &str,
        filter: TaskFilter,
    ) -> Result<u64, EngineError> {
        let mut query = vec![("topicName", topic.to_owned())];
        match filter {
            TaskFilter::All => {}
            TaskFilter::Locked => query.push(("locked", "true".to_owned())),
            TaskFilter::NoRetriesLeft => query.push(("noRetriesLeft", "true".to_owned())),
        }
        self.count("externalTaskCount", "external-task/count", &query)
            .await
    }

    /// How many incidents are open.
    pub async fn count_incidents(&self) -> Result<u64, EngineError> {
        self.count("incidentCount", "incident/count", &[]).await
    }

    /// Asks one node `GET /engine` (anonymous in every setup): what the node's health starts from,
    /// before a first long poll that may stay parked for its whole timeout.
    pub async fn ping(&self, node: &Node) -> Result<(), EngineError> {
        let call = Call::get("engine", "engine".into()).anonymous();
        let reply = self.send_to(node, &call, |request| request).await?;
        read_json::<Vec<serde_json::Value>>(&call, reply)
            .await
            .map(drop)
    }

    /// Whether the engine answers `GET /engine` (anonymous in every setup: a liveness probe).
    pub async fn engine_names(&self) -> Result<Vec<serde_json::Value>, EngineError> {
        self.get_json("engine", "engine", &[]).await
    }

    async fn count(
        &self,
        label: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<u64, EngineError> {
        self.get_json::<Count>(label, path, query)
            .await
            .map(|c| c.count)
    }

    /// `GET {path}?{query}` on any node, returning JSON. `label` names the endpoint in metrics.
    async fn get_json<T: DeserializeOwned>(
        &self,
        label: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, EngineError> {
        let call = Call::get(label, path.to_owned());
        let reply = self.send_any(&call, |request| request.query(query)).await?;
        read_json(&call, reply).await
    }

    /// Sends a call to the first node of [`EngineClient::route`] that takes it: a node that
    /// refuses the connection is passed over (nothing reached it), any other answer or error is
    /// the call's result.
    async fn send_any(
        &self,
        call: &Call,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, EngineError> {
        let route = self.route();
        let mut last = None;
        for node in &route {
            match self.send_to(node, call, &build).await {
                Err(error @ EngineError::Unreachable { .. })
                    if !error.outcome_unknown() && route.len() > 1 =>
                {
                    debug!(node = %node.name, "node unreachable, trying the next: {error}");
                    last = Some(error);
                }
                result => return result,
            }
        }
        Err(last.unwrap_or_else(|| EngineError::NoNode(call.describe())))
    }

    /// Sends one call to one node: credentials, timeout, metrics, health, and the mapping of
    /// every non-2xx status to an [`EngineError`]. A call whose kept-alive connection turns out to
    /// be closed is sent again at once on a new connection; after a 401 the call is sent again
    /// once if the credentials could be refreshed.
    async fn send_to(
        &self,
        node: &Node,
        call: &Call,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, EngineError> {
        let inner = &self.inner;
        let mut refreshed = false;
        let mut fresh_connection = false;
        let url = format!("{}/{}", node.base, call.path);
        loop {
            let http = if fresh_connection || node.avoid_pool() {
                &node.fresh
            } else {
                &node.http
            };
            let request = http
                .request(call.method.clone(), &url)
                .timeout(call.timeout.unwrap_or(inner.request_timeout));
            let request = match inner.credentials.apply(http, build(request)).await {
                Ok(request) => request,
                Err(error) => {
                    node.health
                        .record(Err(&error), false, inner.metrics.as_deref());
                    return Err(error);
                }
            };
            let started = Instant::now();
            let sent = request.send().await;
            if let Some(metrics) = &inner.metrics {
                metrics.observe_engine_request(call.label, &node.name, started.elapsed());
            }
            let outcome = match sent {
                Err(source) if !fresh_connection && is_stale_connection(&source) => {
                    node.distrust_pool();
                    if let Some(metrics) = &inner.metrics {
                        metrics.stale_connection_retried(&node.name);
                    }
                    if !call.repeatable {
                        debug!(node = %node.name, "{}: the connection closed before the reply ({}); the caller decides", call.describe(), error_chain(&source));
                        return Err(EngineError::ConnectionClosed {
                            endpoint: call.describe(),
                            source,
                        });
                    }
                    debug!(node = %node.name, "{}: the kept-alive connection was closed ({}); sending again on a new one", call.describe(), error_chain(&source));
                    fresh_connection = true;
                    continue;
                }
                Err(source) => Err(EngineError::Unreachable {
                    endpoint: call.describe(),
                    source,
                }),
                Ok(reply) if reply.status().is_success() => Ok(reply),
                Ok(reply)
                    if matches!(
                        reply.status(),
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                    ) =>
                {
                    if reply.status() == StatusCode::UNAUTHORIZED
                        && !refreshed
                        && inner.credentials.refresh_after_rejection().await
                    {
                        refreshed = true;
                        continue;
                    }
                    Err(EngineError::Unauthorized {
                        endpoint: call.describe(),
                        status: reply.status(),
                        user: inner.credentials.user(),
                    })
                }
                Ok(reply) => Err(read_error(call, reply).await),
            };
            node.health.record(
                outcome.as_ref().map(drop),
                call.anonymous,
                inner.metrics.as_deref(),
            );
            return match outcome {
                Err(error) if fresh_connection => Err(EngineError::Resent(Box::new(error))),
                outcome => outcome,
            };
        }
    }
}

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

/// A request body as JSON (or none).
fn json_body<B: Serialize>(body: Option<&B>) -> impl Fn(RequestBuilder) -> RequestBuilder + '_ {
    move |request| match body {
        Some(body) => request.json(body),
        None => request,
    }
}

/// Builds one node's HTTP clients. A discovered address over plain HTTP goes into the URL; over
/// HTTPS the host name stays in the URL (for the certificate check) and is pinned to the address.
fn new_node(target: &NodeTarget, tls: &TlsSettings) -> Result<Node, EngineError> {
    let name = target.name();
    let https = target.url.scheme() == "https";
    let base = if https {
        target.url.as_str().trim_end_matches('/').to_owned()
    } else {
        name.clone()
    };
    let pinned = target
        .address
        .filter(|_| https)
        .zip(target.url.host_str().map(str::to_owned));
    let builder = |pooled: bool| -> Result<reqwest::Client, EngineError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("camunda-worker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(TCP_KEEPALIVE);
        builder = if pooled {
            builder.pool_idle_timeout(POOL_IDLE_TIMEOUT)
        } else {
            builder.pool_max_idle_per_host(0)
        };
        if let Some((address, host)) = &pinned {
            builder = builder.resolve(host, *address);
        }
        if let Some(pem) = &tls.ca_cert_pem {
            let cert = Certificate::from_pem(pem)
                .map_err(|e| EngineError::Credentials(format!("--ca-cert: {}", error_chain(&e))))?;
            builder = builder.add_root_certificate(cert);
        }
        if let Some(pem) = &tls.client_identity_pem {
            let identity = Identity::from_pem(pem).map_err(|e| {
                EngineError::Credentials(format!("--client-cert/--client-key: {}", error_chain(&e)))
            })?;
            builder = builder.identity(identity);
        }
        builder
            .build()
            .map_err(|e| EngineError::Credentials(format!("HTTP client: {}", error_chain(&e))))
    };
    Ok(Node {
        health: NodeHealth::new(&name),
        name,
        base,
        http: builder(true)?,
        fresh: builder(false)?,
        fresh_until_ms: AtomicU64::new(0),
        created: Instant::now(),
    })
}

/// One REST call: method, path below the REST root, and a short label for metrics.
struct Call {
    method: reqwest::Method,
    path: String,
    label: &'static str,
    timeout: Option<Duration>,
    /// Whether sending the call twice does no harm (a query, a fetch, an unlock), so the client
    /// may send it again by itself after a closed connection. A `complete` or a message may have
    /// been carried out already; its caller checks the engine's state before repeating it.
    repeatable: bool,
    /// Whether the engine answers the call without credentials (`GET /engine`).
    anonymous: bool,
}

impl Call {
    fn post(label: &'static str, path: String) -> Self {
        Call {
            method: reqwest::Method::POST,
            path,
            label,
            timeout: None,
            repeatable: false,
            anonymous: false,
        }
    }

    fn get(label: &'static str, path: String) -> Self {
        Call {
            method: reqwest::Method::GET,
            repeatable: true,
            ..Call::post(label, path)
        }
    }

    fn anonymous(mut self) -> Self {
        self.anonymous = true;
        self
    }

    fn repeatable(mut self) -> Self {
        self.repeatable = true;
        self
    }

    fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn describe(&self) -> String {
        format!("{} /{}", self.method, self.path)
    }
}

async fn read_error(call: &Call, reply: Response) -> EngineError {
    let status = reply.status();
    let text = match reply.text().await {
        Ok(text) => text,
        Err(source) => {
            return EngineError::Unreachable {
                endpoint: call.describe(),
                source,
            }
        }
    };
    if call.label == "fetchAndLock"
        && status == StatusCode::SERVICE_UNAVAILABLE
        && is_servlet_error_page(&text)
    {
        return EngineError::Replaced {
            endpoint: call.describe(),
        };
    }
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) if body.message.is_some() || body.kind.is_some() => EngineError::Rejected {
            endpoint: call.describe(),
            status,
            kind: body.kind.unwrap_or_else(|| "unknown".to_owned()),
            message: body.message.unwrap_or_default(),
            code: body.code,
        },
        _ => EngineError::UnexpectedReply {
            endpoint: call.describe(),
            status,
            excerpt: excerpt(&text),
        },
    }
}

/// Whether a body is the servlet container's own error page for the request (Spring Boot:
/// `{"timestamp", "status", "error", "path"}`): what the engine's REST layer produces when it
/// cancels a parked long poll, as opposed to a proxy's 503 page or the engine's exception body.
fn is_servlet_error_page(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| {
        v.get("status").and_then(serde_json::Value::as_u64) == Some(503)
            && v.get("path").is_some()
            && v.get("type").is_none()
    })
}

async fn read_json<T: DeserializeOwned>(call: &Call, reply: Response) -> Result<T, EngineError> {
    let status = reply.status();
    let text = reply
        .text()
        .await
        .map_err(|source| EngineError::Unreachable {
            endpoint: call.describe(),
            source,
        })?;
    serde_json::from_str(&text).map_err(|_| EngineError::UnexpectedReply {
        endpoint: call.describe(),
        status,
        excerpt: excerpt(&text),
    })
}

async fn expect_no_content(call: &Call, reply: Response) -> Result<(), EngineError> {
    let status = reply.status();
    if status == StatusCode::NO_CONTENT {
        return Ok(());
    }
    let text = reply.text().await.unwrap_or_default();
    Err(EngineError::UnexpectedReply {
        endpoint: call.describe(),
        status,
        excerpt: excerpt(&text),
    })
}
