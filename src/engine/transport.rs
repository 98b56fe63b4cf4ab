//! Sending one call and reading its reply: credentials, timeout, metrics, node health, the one
//! immediate resend after a stale kept-alive connection, and the mapping of every reply that is
//! not a success to an [`EngineError`].
//!
//! The client retries in two cases only, both at once and without backoff: a call whose
//! kept-alive connection the server had just closed is sent again on a new connection (if the
//! call is repeatable), and a 401 is retried once with refreshed credentials. Any other retry
//! policy belongs to the caller, who knows whether a lock or a deadline bounds it.

use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::debug;

use super::dto::ErrorBody;
use super::endpoint::Endpoint;
use super::error::{error_chain, excerpt, is_stale_connection, EngineError};
use super::health::Reach;
use super::node::{route, Node};
use super::EngineClient;

/// One REST call: the endpoint, its path below the REST root, and how it may be sent.
pub(super) struct Call {
    pub(super) endpoint: Endpoint,
    pub(super) path: String,
    timeout: Option<Duration>,
}

impl Call {
    /// A call of `endpoint` (whose path names `id`, if it has one).
    pub(super) fn new(endpoint: Endpoint, id: &str) -> Self {
        Call {
            endpoint,
            path: endpoint.path(id),
            timeout: None,
        }
    }

    /// The same call with its own timeout instead of `--request-timeout`.
    pub(super) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub(super) fn describe(&self) -> String {
        format!("{} /{}", self.endpoint.method(), self.path)
    }
}

/// A request body as JSON (or none).
pub(super) fn json_body<B: Serialize>(
    body: Option<&B>,
) -> impl Fn(RequestBuilder) -> RequestBuilder + '_ {
    move |request| match body {
        Some(body) => request.json(body),
        None => request,
    }
}

impl EngineClient {
    /// Sends a call to the first node of the route that takes it: a node that refuses the
    /// connection is passed over (nothing reached it), any other answer or error is the call's
    /// result.
    pub(super) async fn send_any(
        &self,
        call: &Call,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, EngineError> {
        let turn = self
            .inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let route = route(&self.nodes(), turn);
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
    pub(super) async fn send_to(
        &self,
        node: &Node,
        call: &Call,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, EngineError> {
        let inner = &self.inner;
        let mut refreshed = false;
        let mut fresh_connection = false;
        let url = format!("{}/{}", node.base, call.path);
        let label = call.endpoint.label();
        loop {
            // On a connection opened for this call, a close is no stale keep-alive: whatever is
            // there closes connections, and that is judged (and counted) like any outage.
            let on_fresh = fresh_connection || node.avoid_pool();
            let http = if on_fresh { &node.fresh } else { &node.http };
            let request = http
                .request(call.endpoint.method(), &url)
                .timeout(call.timeout.unwrap_or(inner.request_timeout));
            let request = match inner.credentials.apply(http, build(request)).await {
                Ok(request) => request,
                Err(error) => {
                    self.record_health(node, Err(&error), false);
                    return Err(error);
                }
            };
            let started = Instant::now();
            let sent = request.send().await;
            if let Some(metrics) = &inner.metrics {
                metrics.observe_engine_request(label, &node.name, started.elapsed());
            }
            let outcome = match sent {
                Err(source) if !on_fresh && is_stale_connection(&source) => {
                    node.distrust_pool();
                    if let Some(metrics) = &inner.metrics {
                        metrics.stale_connection_retried(&node.name);
                    }
                    if !call.endpoint.repeatable() {
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
            self.record_health(node, outcome.as_ref().map(drop), call.endpoint.anonymous());
            return match outcome {
                Err(error) if fresh_connection => Err(EngineError::Resent(Box::new(error))),
                outcome => outcome,
            };
        }
    }

    /// Feeds one call's outcome into the node's health, and wakes those waiting for the engine
    /// when it answers again after no node did.
    fn record_health(&self, node: &Node, outcome: Result<(), &EngineError>, anonymous: bool) {
        let was_up = self.is_up();
        let metrics = self.inner.metrics.as_deref();
        if let Some(reach) = node.health.record(outcome, anonymous) {
            if let Some(metrics) = metrics {
                metrics.set_engine_up(&node.name, reach == Reach::Up);
            }
            if reach == Reach::Up && !was_up {
                self.inner.back.notify_waiters();
            }
        }
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
    if call.endpoint == Endpoint::FetchAndLock
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

/// Reads a JSON reply.
pub(super) async fn read_json<T: DeserializeOwned>(
    call: &Call,
    reply: Response,
) -> Result<T, EngineError> {
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

/// Checks the reply of a call the engine answers with 204 and no body.
pub(super) async fn expect_no_content(call: &Call, reply: Response) -> Result<(), EngineError> {
    let status = reply.status();
    // 204 is the engine's answer; a gateway in front of it may turn it into another 2xx.
    if status.is_success() {
        return Ok(());
    }
    let text = reply.text().await.unwrap_or_default();
    Err(EngineError::UnexpectedReply {
        endpoint: call.describe(),
        status,
        excerpt: excerpt(&text),
    })
}
