//! The Camunda 7 REST client: one `reqwest::Client` (one connection pool) for every call the
//! worker and its subcommands make, with credentials, timeouts and error mapping in one place.
//!
//! Every method returns [`EngineError`], whose predicates (`is_transient`, `mismatch`, ...) are
//! what the worker's retry policy branches on. The client itself never retries, except one
//! re-send with fresh credentials after a 401 when the credentials can be refreshed: retry policy
//! belongs to the caller, who knows whether a lock or a deadline bounds it.

pub mod auth;
pub mod dto;
pub mod error;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Certificate, Identity, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::instrument;
use url::Url;

pub use auth::Credentials;
pub use dto::*;
pub use error::{EngineError, Mismatch};

use crate::metrics::Metrics;
use error::{error_chain, excerpt};

/// Extra time a fetch-and-lock request may take beyond its long poll before the client gives up:
/// a third of the long poll, between 1 s and 10 s. The engine answers a parked request at the
/// latest after the long poll; a request still open this much later sits on a half-open
/// connection and must not hang the worker.
pub fn long_poll_margin(long_poll: Duration) -> Duration {
    (long_poll / 3).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Idle pooled connections are probed this often, so a silently dropped peer is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

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
    /// The REST root, e.g. `http://localhost:8080/engine-rest`.
    pub base_url: Url,
    /// Credentials attached to every call.
    pub credentials: Credentials,
    /// Timeout of every call but fetch-and-lock (which gets its long poll + [`long_poll_margin`]).
    pub request_timeout: Duration,
    /// Extra TLS settings.
    pub tls: TlsSettings,
}

impl EngineSettings {
    /// Settings for an engine without authentication or special TLS.
    pub fn new(base_url: Url) -> Self {
        EngineSettings {
            base_url,
            credentials: Credentials::Anonymous,
            request_timeout: Duration::from_secs(30),
            tls: TlsSettings::default(),
        }
    }
}

/// A cheap-to-clone handle to the engine's REST API.
#[derive(Clone, Debug)]
pub struct EngineClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// The REST root without a trailing slash.
    base: String,
    credentials: Credentials,
    request_timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl EngineClient {
    /// Builds the client; fails only on unusable TLS material.
    pub fn new(settings: EngineSettings) -> Result<Self, EngineError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("camunda-worker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(TCP_KEEPALIVE)
            .pool_idle_timeout(Duration::from_secs(50));
        if let Some(pem) = &settings.tls.ca_cert_pem {
            let cert = Certificate::from_pem(pem)
                .map_err(|e| EngineError::Credentials(format!("--ca-cert: {}", error_chain(&e))))?;
            builder = builder.add_root_certificate(cert);
        }
        if let Some(pem) = &settings.tls.client_identity_pem {
            let identity = Identity::from_pem(pem).map_err(|e| {
                EngineError::Credentials(format!("--client-cert/--client-key: {}", error_chain(&e)))
            })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| EngineError::Credentials(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(EngineClient {
            inner: Arc::new(Inner {
                http,
                base: settings.base_url.as_str().trim_end_matches('/').to_owned(),
                credentials: settings.credentials,
                request_timeout: settings.request_timeout,
                metrics: None,
            }),
        })
    }

    /// The same client, reporting request latency and engine health to `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        let inner = Inner {
            http: self.inner.http.clone(),
            base: self.inner.base.clone(),
            credentials: self.inner.credentials.clone(),
            request_timeout: self.inner.request_timeout,
            metrics: Some(metrics),
        };
        EngineClient {
            inner: Arc::new(inner),
        }
    }

    /// The REST root this client talks to.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.inner.base, path)
    }

    /// Locks up to `request.max_tasks` tasks, waiting up to `asyncResponseTimeout` for one to
    /// appear.
    #[instrument(level = "debug", skip_all, fields(max_tasks = request.max_tasks))]
    pub async fn fetch_and_lock(
        &self,
        request: &FetchAndLockRequest,
    ) -> Result<Vec<ExternalTask>, EngineError> {
        let long_poll = Duration::from_millis(request.async_response_timeout);
        let timeout = long_poll + long_poll_margin(long_poll);
        let call = Call::post("fetchAndLock", "external-task/fetchAndLock".into()).timeout(timeout);
        let reply = self.send(&call, Some(request)).await?;
        read_json(&call, reply).await
    }

    /// Completes a task, setting `request.variables` on the process instance.
    #[instrument(level = "debug", skip(self, request))]
    pub async fn complete(
        &self,
        task_id: &str,
        request: &CompleteRequest,
    ) -> Result<(), EngineError> {
        let call = Call::post("complete", format!("external-task/{task_id}/complete"));
        expect_no_content(&call, self.send(&call, Some(request)).await?).await
    }

    /// Reports a failure; with `retries` 0 the engine raises an incident.
    #[instrument(level = "debug", skip(self, request))]
    pub async fn report_failure(
        &self,
        task_id: &str,
        request: &FailureRequest,
    ) -> Result<(), EngineError> {
        let call = Call::post("failure", format!("external-task/{task_id}/failure"));
        expect_no_content(&call, self.send(&call, Some(request)).await?).await
    }

    /// Reports a BPMN error, for a boundary error event to catch.
    #[instrument(level = "debug", skip(self, request))]
    pub async fn report_bpmn_error(
        &self,
        task_id: &str,
        request: &BpmnErrorRequest,
    ) -> Result<(), EngineError> {
        let call = Call::post("bpmnError", format!("external-task/{task_id}/bpmnError"));
        expect_no_content(&call, self.send(&call, Some(request)).await?).await
    }

    /// Extends the lock of a task this worker holds.
    #[instrument(level = "debug", skip(self, request))]
    pub async fn extend_lock(
        &self,
        task_id: &str,
        request: &ExtendLockRequest,
    ) -> Result<(), EngineError> {
        let call = Call::post("extendLock", format!("external-task/{task_id}/extendLock"));
        expect_no_content(&call, self.send(&call, Some(request)).await?).await
    }

    /// Releases a task so that any worker can fetch it at once.
    #[instrument(level = "debug", skip(self))]
    pub async fn unlock(&self, task_id: &str) -> Result<(), EngineError> {
        let call = Call::post("unlock", format!("external-task/{task_id}/unlock"));
        expect_no_content(&call, self.send::<()>(&call, None).await?).await
    }

    /// Correlates a message to the one execution waiting for it.
    #[instrument(level = "debug", skip_all, fields(message = %request.message_name))]
    pub async fn correlate_message(
        &self,
        request: &CorrelateMessageRequest,
    ) -> Result<(), EngineError> {
        let call = Call::post("message", "message".into());
        expect_no_content(&call, self.send(&call, Some(request)).await?).await
    }

    /// Deploys BPMN resources (`(file name, contents)`), skipping unchanged ones.
    pub async fn deploy(
        &self,
        deployment_name: &str,
        resources: Vec<(String, Vec<u8>)>,
    ) -> Result<Deployment, EngineError> {
        let call = Call::post("deploy", "deployment/create".into());
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
            .send_with(&call, |request| request.multipart(build_form()))
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
        let reply = self.send(&call, Some(request)).await?;
        read_json(&call, reply).await
    }

    /// `GET {path}?{query}` returning JSON, for the read-only queries (history, subscriptions,
    /// incidents, counts). `label` names the endpoint in metrics.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        label: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, EngineError> {
        let call = Call::get(label, path.to_owned());
        let reply = self
            .send_with(&call, |request| request.query(query))
            .await?;
        read_json(&call, reply).await
    }

    /// Message subscriptions of waiting process instances, oldest first, one page.
    pub async fn message_subscriptions(
        &self,
        message_name: &str,
        first_result: u64,
        max_results: u64,
    ) -> Result<Vec<EventSubscription>, EngineError> {
        self.get_json(
            "eventSubscriptions",
            "event-subscription",
            &[
                ("eventType", "message".to_owned()),
                ("eventName", message_name.to_owned()),
                ("sortBy", "created".to_owned()),
                ("sortOrder", "asc".to_owned()),
                ("firstResult", first_result.to_string()),
                ("maxResults", max_results.to_string()),
            ],
        )
        .await
    }

    /// Whether the engine answers `GET /engine` (anonymous in every setup: a liveness probe).
    pub async fn engine_names(&self) -> Result<Vec<serde_json::Value>, EngineError> {
        self.get_json("engine", "engine", &[]).await
    }

    async fn send<B: Serialize>(
        &self,
        call: &Call,
        body: Option<&B>,
    ) -> Result<Response, EngineError> {
        self.send_with(call, |request| match body {
            Some(body) => request.json(body),
            None => request,
        })
        .await
    }

    /// Sends one call: credentials, timeout, metrics, and the mapping of every non-2xx status to
    /// an [`EngineError`]. After a 401 it re-sends once if the credentials could be refreshed.
    async fn send_with(
        &self,
        call: &Call,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, EngineError> {
        let inner = &self.inner;
        let mut refreshed = false;
        loop {
            let request = inner
                .http
                .request(call.method.clone(), self.url(&call.path))
                .timeout(call.timeout.unwrap_or(inner.request_timeout));
            let request = inner.credentials.apply(&inner.http, build(request)).await?;
            let started = Instant::now();
            let sent = request.send().await;
            if let Some(metrics) = &inner.metrics {
                metrics.observe_engine_request(call.label, started.elapsed());
            }
            let outcome = match sent {
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
            if let Some(metrics) = &inner.metrics {
                // The engine is "up" for readiness when it answered and accepted us; a 4xx about
                // one task or message says nothing bad about the engine.
                let up = match &outcome {
                    Ok(_) => true,
                    Err(e) => !(e.is_transient() || e.is_unauthorized()),
                };
                metrics.set_engine_up(up);
            }
            return outcome;
        }
    }
}

/// One REST call: method, path below the REST root, and a short label for metrics.
struct Call {
    method: reqwest::Method,
    path: String,
    label: &'static str,
    timeout: Option<Duration>,
}

impl Call {
    fn post(label: &'static str, path: String) -> Self {
        Call {
            method: reqwest::Method::POST,
            path,
            label,
            timeout: None,
        }
    }

    fn get(label: &'static str, path: String) -> Self {
        Call {
            method: reqwest::Method::GET,
            ..Call::post(label, path)
        }
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
