//! Sending one call and reading its reply: credentials, timeout, metrics, node health, the one
//! immediate resend after a stale kept-alive connection, and the mapping of every reply that is
//! not a success to an [`EngineError`].
//!
//! Every reply is read whole here, against its endpoint's size bound, and a redirect is an error,
//! never followed (see `reply.rs`): callers get a [`Reply`] already in memory.
//!
//! The client retries in two cases only, both at once and without backoff: a call whose
//! kept-alive connection the server had just closed is sent again on a new connection (if the
//! call is repeatable), and a 401 is retried once with refreshed credentials. Any other retry
//! policy belongs to the caller, who knows whether a lock or a deadline bounds it.

use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, error};

use super::dto::ErrorBody;
use super::endpoint::Endpoint;
use super::error::{error_chain, excerpt, is_stale_connection, EngineError};
use super::health::Reach;
use super::node::{route, Node};
pub(super) use super::reply::Reply;
use super::reply::{fetch_reply_limit, location, read_bounded, reply_limit, BodyError, ReplySize};
use super::EngineClient;

/// One REST call: the endpoint, its path below the REST root, and how it may be sent.
pub(super) struct Call {
    pub(super) endpoint: Endpoint,
    pub(super) path: String,
    timeout: Option<Duration>,
    /// The most bytes of reply body taken (see `reply.rs`).
    limit: u64,
}

impl Call {
    /// A call of `endpoint` (whose path names `id`, if it has one).
    pub(super) fn new(endpoint: Endpoint, id: &str) -> Self {
        Call {
            endpoint,
            path: endpoint.path(id),
            timeout: None,
            limit: reply_limit(reply_size(endpoint)),
        }
    }

    /// The same call with its own timeout instead of `--request-timeout`.
    pub(super) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The same call with the reply bound of a fetch of up to `max_tasks` tasks.
    pub(super) fn fetching(mut self, max_tasks: u32) -> Self {
        self.limit = fetch_reply_limit(max_tasks);
        self
    }

    pub(super) fn describe(&self) -> String {
        format!("{} /{}", self.endpoint.method(), self.path)
    }
}

/// Which bound an endpoint's reply is read against: batches of tasks or variables, pages of query
/// rows, small objects.
fn reply_size(endpoint: Endpoint) -> ReplySize {
    match endpoint {
        Endpoint::FetchAndLock | Endpoint::InstanceVariables => ReplySize::Batch,
        Endpoint::ExternalTasks
        | Endpoint::EventSubscriptions
        | Endpoint::ExternalTaskLog
        | Endpoint::VariableInstances
        | Endpoint::VariableInstanceQuery
        | Endpoint::Incidents => ReplySize::Query,
        _ => ReplySize::Small,
    }
}

/// What to do after a call's connection closed before the reply (see [`is_stale_connection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterClose {
    /// A kept-alive connection the server had just closed, so the engine most likely never saw
    /// the call, which may be sent twice: send it again at once, on a new connection.
    SendAgain,
    /// The same, but the call must not be repeated blindly (it may have been carried out): the
    /// caller decides, after checking the engine's state.
    HandBack,
    /// The connection was opened for this call: whatever is there closes connections, which is
    /// an outage like any other.
    Outage,
}

/// The resend rule: a call of `endpoint` whose connection closed under it, on a pooled connection
/// or (`on_fresh`) one opened for it. A call is sent again at most once, since the resend goes
/// out on a new connection.
fn after_close(endpoint: Endpoint, on_fresh: bool) -> AfterClose {
    if on_fresh {
        AfterClose::Outage
    } else if endpoint.repeatable() {
        AfterClose::SendAgain
    } else {
        AfterClose::HandBack
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
    ) -> Result<Reply, EngineError> {
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

    /// Sends one call to one node: a call slot, credentials, timeout, metrics, health, the bounded
    /// read of the reply, and the mapping of every non-2xx status to an [`EngineError`]. A call whose
    /// kept-alive connection turns out to be closed is sent again at once on a new connection
    /// (see [`after_close`]); after a 401 the call is sent again once if the credentials could be
    /// refreshed.
    pub(super) async fn send_to(
        &self,
        node: &Node,
        call: &Call,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Reply, EngineError> {
        let mut refreshed = false;
        let mut fresh_connection = false;
        // Held until the reply is read, over the resend and the retry with fresh credentials.
        let _slot = self.inner.call_slots.take(call.endpoint).await;
        loop {
            // On a connection opened for this call, a close is no stale keep-alive: whatever is
            // there closes connections, and that is judged (and counted) like any outage.
            let on_fresh = fresh_connection || node.avoid_pool();
            let sent = match self.attempt(node, call, &build, on_fresh).await {
                Ok(sent) => sent,
                Err(error) => {
                    self.record_health(node, Err(&error), false);
                    return Err(error);
                }
            };
            let outcome = match sent {
                Err(source) if is_stale_connection(&source) => {
                    match after_close(call.endpoint, on_fresh) {
                        AfterClose::SendAgain => {
                            self.stale_connection(node);
                            debug!(node = %node.name, "{}: the kept-alive connection was closed ({}); sending again on a new one", call.describe(), error_chain(&source));
                            fresh_connection = true;
                            continue;
                        }
                        AfterClose::HandBack => {
                            self.stale_connection(node);
                            debug!(node = %node.name, "{}: the connection closed before the reply ({}); the caller decides", call.describe(), error_chain(&source));
                            return Err(EngineError::ConnectionClosed {
                                endpoint: call.describe(),
                                source,
                            });
                        }
                        AfterClose::Outage => Err(EngineError::Unreachable {
                            endpoint: call.describe(),
                            source,
                        }),
                    }
                }
                Err(source) => Err(EngineError::Unreachable {
                    endpoint: call.describe(),
                    source,
                }),
                Ok(reply) => match self.judge_status(node, call, reply, &mut refreshed).await {
                    Some(outcome) => outcome,
                    None => continue,
                },
            };
            return self.finish(node, call, outcome, fresh_connection).await;
        }
    }

    /// One attempt at a call: the request, with credentials and timeout, on the node's pooled
    /// connections or (`on_fresh`) a new one; its duration observed. The outer error is the
    /// credentials that could not be obtained (nothing was sent), the inner one the transport's.
    async fn attempt(
        &self,
        node: &Node,
        call: &Call,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
        on_fresh: bool,
    ) -> Result<Result<Response, reqwest::Error>, EngineError> {
        let inner = &self.inner;
        let url = format!("{}/{}", node.base, call.path);
        let http = if on_fresh { &node.fresh } else { &node.http };
        let request = http
            .request(call.endpoint.method(), &url)
            .timeout(call.timeout.unwrap_or(inner.request_timeout));
        let request = inner.credentials.apply(http, build(request)).await?;
        let started = Instant::now();
        let sent = request.send().await;
        if let Ok(reply) = &sent {
            crate::engine_clock::observe(reply.headers());
        }
        if let Some(metrics) = &inner.metrics {
            metrics.observe_engine_request(call.endpoint.label(), &node.name, started.elapsed());
        }
        Ok(sent)
    }

    /// A kept-alive connection was closed under a call: the node's pool is suspect for a while,
    /// and the close is counted.
    fn stale_connection(&self, node: &Node) {
        node.distrust_pool();
        if let Some(metrics) = &self.inner.metrics {
            metrics.stale_connection_retried(&node.name);
        }
    }

    /// Judges a reply by its status, before its body is read: a success (whose body is read
    /// next), an error, or `None` when the call is to be sent again because a 401 led to
    /// refreshed credentials (once per call, `refreshed`).
    async fn judge_status(
        &self,
        node: &Node,
        call: &Call,
        reply: Response,
        refreshed: &mut bool,
    ) -> Option<Result<Response, EngineError>> {
        let inner = &self.inner;
        let status = reply.status();
        if status.is_success() {
            return Some(Ok(reply));
        }
        if status.is_redirection() {
            return Some(Err(redirected(node, call, &reply)));
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            if status == StatusCode::UNAUTHORIZED
                && !*refreshed
                && inner.credentials.refresh_after_rejection().await
            {
                *refreshed = true;
                return None;
            }
            return Some(Err(EngineError::Unauthorized {
                endpoint: call.describe(),
                status,
                user: inner.credentials.user(),
            }));
        }
        Some(match read_body(node, call, reply).await {
            Ok(reply) => Err(read_error(call, &reply)),
            Err(error) => Err(error),
        })
    }

    /// Ends a call: reads a success's body, feeds the outcome into the node's health, and marks
    /// an error of a call sent again after its connection broke (`resent`).
    async fn finish(
        &self,
        node: &Node,
        call: &Call,
        outcome: Result<Response, EngineError>,
        resent: bool,
    ) -> Result<Reply, EngineError> {
        // The body is part of the answer: one that breaks off or outlasts the call's deadline
        // counts against the node's health like a reply that never came.
        let outcome = match outcome {
            Ok(reply) => read_body(node, call, reply).await,
            Err(error) => Err(error),
        };
        self.record_health(node, outcome.as_ref().map(drop), call.endpoint.anonymous());
        match outcome {
            Err(error) if resent => Err(EngineError::Resent(Box::new(error))),
            outcome => outcome,
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

/// Reads a reply's body against the call's bound (see `reply.rs`); an oversized one is logged at
/// ERROR (once a minute per node and endpoint) and fails the call.
async fn read_body(node: &Node, call: &Call, response: Response) -> Result<Reply, EngineError> {
    let status = response.status();
    match read_bounded(response, call.limit).await {
        Ok(reply) => Ok(reply),
        Err(BodyError::Transport(source)) => Err(EngineError::Unreachable {
            endpoint: call.describe(),
            source,
        }),
        Err(BodyError::TooLarge { declared }) => {
            let error = EngineError::TooLarge {
                endpoint: call.describe(),
                status,
                limit: call.limit,
                declared,
            };
            if node.alarms.due(call.endpoint.label(), "too large") {
                error!(node = %node.name, "{error}; the call counts as failed");
            } else {
                debug!(node = %node.name, "{error}");
            }
            Err(error)
        }
    }
}

/// The error for a 3xx reply, which is never followed; logged at ERROR (once a minute per node
/// and endpoint).
fn redirected(node: &Node, call: &Call, response: &Response) -> EngineError {
    let error = EngineError::Redirected {
        endpoint: call.describe(),
        status: response.status(),
        location: location(response),
    };
    if node.alarms.due(call.endpoint.label(), "redirect") {
        error!(node = %node.name, "{error}; the call counts as failed");
    } else {
        debug!(node = %node.name, "{error}");
    }
    error
}

fn read_error(call: &Call, reply: &Reply) -> EngineError {
    let status = reply.status;
    let text = reply.text();
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
    reply: Reply,
) -> Result<T, EngineError> {
    serde_json::from_slice(&reply.body).map_err(|_| EngineError::UnexpectedReply {
        endpoint: call.describe(),
        status: reply.status,
        excerpt: excerpt(&reply.text()),
    })
}

/// Checks the reply of a call the engine answers with 204 and no body.
pub(super) async fn expect_no_content(call: &Call, reply: Reply) -> Result<(), EngineError> {
    // 204 is the engine's answer; a gateway in front of it may turn it into another 2xx.
    if reply.status.is_success() {
        return Ok(());
    }
    Err(EngineError::UnexpectedReply {
        endpoint: call.describe(),
        status: reply.status,
        excerpt: excerpt(&reply.text()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Follows the resend rule for one call whose every connection closes under it: the
    /// attempts made, and how the last one ended.
    fn attempts_while_every_connection_closes(endpoint: Endpoint) -> (usize, AfterClose) {
        let mut on_fresh = false;
        for attempt in 1.. {
            match after_close(endpoint, on_fresh) {
                AfterClose::SendAgain => on_fresh = true,
                end => return (attempt, end),
            }
        }
        unreachable!("the attempts are endless")
    }

    #[test]
    fn a_call_that_may_have_been_carried_out_is_handed_back_after_a_close_not_resent() {
        for endpoint in [
            Endpoint::Complete,
            Endpoint::Failure,
            Endpoint::BpmnError,
            Endpoint::Message,
            Endpoint::CreateIncident,
            Endpoint::Start,
        ] {
            assert_eq!(
                attempts_while_every_connection_closes(endpoint),
                (1, AfterClose::HandBack),
                "{endpoint:?}"
            );
        }
    }

    #[test]
    fn a_repeatable_call_is_resent_once_on_a_new_connection_and_then_is_an_outage() {
        for endpoint in [
            Endpoint::FetchAndLock,
            Endpoint::ExtendLock,
            Endpoint::Unlock,
            Endpoint::Deploy,
            Endpoint::ExternalTasks,
            Endpoint::ProcessInstance,
            Endpoint::VariableInstances,
            Endpoint::VariableInstanceQuery,
            Endpoint::VariableInstanceCount,
            Endpoint::DeleteIncident,
            Endpoint::ModifyInstanceVariables,
            Endpoint::InstanceVariables,
            Endpoint::Engine,
        ] {
            assert_eq!(
                attempts_while_every_connection_closes(endpoint),
                (2, AfterClose::Outage),
                "{endpoint:?}"
            );
        }
    }

    #[test]
    fn a_close_on_a_connection_opened_for_the_call_is_an_outage_whatever_the_call() {
        assert_eq!(after_close(Endpoint::Complete, true), AfterClose::Outage);
        assert_eq!(
            after_close(Endpoint::FetchAndLock, true),
            AfterClose::Outage
        );
    }
}
