//! A fault-injecting HTTP/1.1 proxy to sit between the worker and a real engine.
//!
//! Every request is forwarded unchanged unless a [`Rule`] matches it; a matching rule provokes,
//! deterministically, one of the network failures the worker must survive: a reply lost after the
//! engine processed the request (504, reset, hang), a slow reply, a request that never reached the
//! engine, or a proxy's own error status. [`FaultProxy::close_idle_after`] adds the keep-alive race:
//! a server closing an idle connection in the instant the client reuses it.
//!
//! Client side: hyper's HTTP/1.1 server, one task per keep-alive connection, no timeouts — the
//! engine may park a fetchAndLock long poll for as long as it likes. Upstream side: one reqwest
//! pool with no timeouts and no redirects; it is not what is being tested.

use std::convert::Infallible;
use std::future::pending;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use regex::Regex;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long an upstream connection may idle in the pool. Shorter than any engine's keep-alive
/// timeout, so the proxy never itself reuses a connection the engine is closing — the very race it
/// simulates on the client side must not happen unasked on the upstream side.
const UPSTREAM_IDLE: Duration = Duration::from_secs(2);

/// Headers that belong to one hop, never forwarded. `host` and `content-length` are not hop-by-hop,
/// but the next hop derives them again (from the upstream URL, from the buffered body).
const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// What the proxy does to a request a [`Rule`] matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward, wait for the engine's full reply, then answer 504 Gateway Timeout (text body)
    /// instead. The engine DID process the request.
    ReplyLost504,
    /// Forward, wait for the reply, then reset the client connection (RST, SO_LINGER 0) without
    /// answering. The engine DID process the request.
    ReplyLostReset,
    /// Forward, wait for the reply, then never answer: the connection stays open until the client
    /// gives up (its own timeout) or the proxy is dropped. The engine DID process the request.
    ReplyLostHang,
    /// Sleep this long, then forward; the reply is passed through (a slow answer).
    Delay(Duration),
    /// Close the client connection (FIN) without forwarding and without answering: the request
    /// never reached the engine.
    CloseWithoutForwarding,
    /// Answer this status with a small text body without forwarding (a proxy's own 502 or 503).
    Status(u16),
}

/// What [`FaultProxy::applied`] records: a rule's [`Fault`], or a stale keep-alive close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// See [`Fault::ReplyLost504`].
    ReplyLost504,
    /// See [`Fault::ReplyLostReset`].
    ReplyLostReset,
    /// See [`Fault::ReplyLostHang`].
    ReplyLostHang,
    /// See [`Fault::Delay`].
    Delay(Duration),
    /// See [`Fault::CloseWithoutForwarding`].
    CloseWithoutForwarding,
    /// See [`Fault::Status`].
    Status(u16),
    /// A request on an idle keep-alive connection, closed (FIN) without forwarding and without
    /// answering (see [`FaultProxy::close_idle_after`]).
    StaleClose,
}

impl From<Fault> for FaultKind {
    fn from(fault: Fault) -> FaultKind {
        match fault {
            Fault::ReplyLost504 => FaultKind::ReplyLost504,
            Fault::ReplyLostReset => FaultKind::ReplyLostReset,
            Fault::ReplyLostHang => FaultKind::ReplyLostHang,
            Fault::Delay(pause) => FaultKind::Delay(pause),
            Fault::CloseWithoutForwarding => FaultKind::CloseWithoutForwarding,
            Fault::Status(code) => FaultKind::Status(code),
        }
    }
}

/// One fault the proxy applied.
#[derive(Debug, Clone)]
pub struct Applied {
    pub kind: FaultKind,
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The request body as JSON, `Null` when it is empty or not JSON.
    pub body: Value,
    /// When the fault took effect: for the reply-lost faults, once the engine's reply had arrived
    /// (so the engine has processed the request when the record appears); for the others, when the
    /// request arrived.
    pub at: Instant,
}

/// One request the proxy sent to the engine, and the status the engine answered (`None` when it
/// did not answer) — whatever the client was told afterwards.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The request body as JSON, `Null` when it is empty or not JSON.
    pub body: Value,
    pub engine_status: Option<u16>,
}

/// Which requests get which fault.
///
/// Rules are consulted in insertion order. A rule whose method and path match counts the request
/// as one of its matches; it fires when that count, past the first `skip`, is a multiple of
/// `every`, and at most `times` times. The first rule that fires applies and ends the consultation;
/// a request no rule fires on is forwarded.
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<Method>,
    path: Regex,
    every: u32,
    skip: u32,
    times: Option<u32>,
    fault: Fault,
}

/// A [`Rule`] without its fault yet; [`RuleBuilder::then`] finishes it.
#[derive(Debug, Clone)]
pub struct RuleBuilder {
    method: Option<Method>,
    path: Regex,
    every: u32,
    skip: u32,
    times: Option<u32>,
}

impl Rule {
    /// Requests with this method whose path (without the query) matches `path_regex`, e.g.
    /// `Rule::on("POST", r"/external-task/[^/]+/complete$")`. Fires on each match until refined.
    pub fn on(method: &str, path_regex: &str) -> RuleBuilder {
        let method = Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|e| panic!("rule method {method:?} is invalid: {e}"));
        let mut builder = Rule::any_method(path_regex);
        builder.method = Some(method);
        builder
    }

    /// Requests of any method whose path (without the query) matches `path_regex`.
    pub fn any_method(path_regex: &str) -> RuleBuilder {
        let path = Regex::new(path_regex)
            .unwrap_or_else(|e| panic!("rule path regex {path_regex:?} is invalid: {e}"));
        RuleBuilder {
            method: None,
            path,
            every: 1,
            skip: 0,
            times: None,
        }
    }
}

impl RuleBuilder {
    /// Fires on every `n`th match only (1 = each, 3 = the 3rd, 6th, ...).
    pub fn every(mut self, n: u32) -> RuleBuilder {
        assert!(
            n >= 1,
            "a rule fires on every n-th match with n >= 1, not {n}"
        );
        self.every = n;
        self
    }

    /// Lets the first `n` matches pass; counting for [`RuleBuilder::every`] starts after them.
    pub fn skip(mut self, n: u32) -> RuleBuilder {
        self.skip = n;
        self
    }

    /// Fires at most `n` times, then stops matching.
    pub fn times(mut self, n: u32) -> RuleBuilder {
        self.times = Some(n);
        self
    }

    /// The rule, applying `fault` when it fires.
    pub fn then(self, fault: Fault) -> Rule {
        if let Fault::Status(code) = fault {
            assert!(
                StatusCode::from_u16(code).is_ok(),
                "{code} is not an HTTP status"
            );
        }
        Rule {
            method: self.method,
            path: self.path,
            every: self.every,
            skip: self.skip,
            times: self.times,
            fault,
        }
    }
}

/// A rule with its counts.
struct Armed {
    rule: Rule,
    matched: u32,
    fired: u32,
}

impl Armed {
    /// Counts the request if it matches; whether the rule fires on it.
    fn fires(&mut self, method: &Method, path: &str) -> bool {
        let rule = &self.rule;
        let exhausted = rule.times.is_some_and(|times| self.fired >= times);
        let other_method = rule.method.as_ref().is_some_and(|m| m != method);
        if exhausted || other_method || !rule.path.is_match(path) {
            return false;
        }
        self.matched += 1;
        let fires = self.matched > rule.skip && (self.matched - rule.skip) % rule.every == 0;
        if fires {
            self.fired += 1;
        }
        fires
    }
}

/// State shared by the accept loop and every connection.
struct Shared {
    /// Scheme and authority of the engine, without a trailing slash.
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Vec<Armed>>,
    close_idle_after: Mutex<Option<Duration>>,
    applied: Mutex<Vec<Applied>>,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    /// While set, the engine is "gone": every connection is closed at once (see [`FaultProxy::set_down`]).
    down: std::sync::atomic::AtomicBool,
    /// The close tokens of the open connections, for an outage to end them all.
    open: Mutex<Vec<CancellationToken>>,
    forwarded: AtomicUsize,
    connections: AtomicUsize,
    upstream_errors: AtomicUsize,
}

/// The proxy; its listener and connections stop when it is dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    port: u16,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral 127.0.0.1 port in front of `upstream`, the engine's scheme
    /// and authority (`http://127.0.0.1:PORT`); paths are forwarded unchanged.
    pub async fn start(upstream: &str) -> FaultProxy {
        let parsed = url::Url::parse(upstream)
            .unwrap_or_else(|e| panic!("upstream {upstream:?} is not a URL: {e}"));
        assert!(
            parsed.scheme() == "http" && parsed.path() == "/" && parsed.query().is_none(),
            "upstream {upstream:?} must be http://host:port only; paths are forwarded unchanged"
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(UPSTREAM_IDLE)
            .build()
            .expect("build the proxy's upstream client");
        let shared = Arc::new(Shared {
            upstream: parsed.origin().ascii_serialization(),
            client,
            rules: Mutex::new(Vec::new()),
            close_idle_after: Mutex::new(None),
            applied: Mutex::new(Vec::new()),
            exchanges: Arc::default(),
            down: std::sync::atomic::AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            forwarded: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            upstream_errors: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on 127.0.0.1");
        let port = listener.local_addr().expect("the proxy's address").port();
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop.clone()));
        FaultProxy { shared, port, stop }
    }

    /// `http://127.0.0.1:<port>`; the worker's engine URL is `format!("{}/engine-rest", url)`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(Armed {
            rule,
            matched: 0,
            fired: 0,
        });
    }

    /// Removes every rule: from now on everything is forwarded (stale closes aside).
    pub fn clear_rules(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// With `Some(idle)`, a request arriving on a connection that carried an earlier request and
    /// has been idle (nothing in flight) for at least `idle` is met by closing the connection (FIN)
    /// at once, without forwarding or answering — what a client sees when a server closes an idle
    /// keep-alive connection in the instant the client reuses it. Recorded as
    /// [`FaultKind::StaleClose`]. Fresh connections and shorter idles are served normally.
    pub fn close_idle_after(&self, idle: Option<Duration>) {
        *self.shared.close_idle_after.lock().unwrap() = idle;
    }

    /// With `true`, the engine goes away as far as the client can tell: every open connection is
    /// closed at once (requests in flight lose their replies, or never reach the engine) and every
    /// new connection is closed as soon as it is accepted, until `set_down(false)`. No request can
    /// succeed in between, so the outage has one clear beginning and one clear end.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            for close in self.shared.open.lock().unwrap().drain(..) {
                close.cancel();
            }
        }
    }

    /// Every fault applied so far, in order.
    pub fn applied(&self) -> Vec<Applied> {
        self.shared.applied.lock().unwrap().clone()
    }

    /// How many of the applied faults were of `kind`.
    pub fn applied_count(&self, kind: FaultKind) -> usize {
        let applied = self.shared.applied.lock().unwrap();
        applied.iter().filter(|a| a.kind == kind).count()
    }

    /// Every request sent to the engine so far with the engine's answer, in order: what the
    /// engine really saw, whatever faults did to the replies.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.exchanges.lock().unwrap().clone()
    }

    /// Requests sent to the engine so far (including ones whose reply a fault then lost).
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Forwarded requests the engine did not answer (connection refused, reset, ...); each was
    /// answered 502 by the proxy. Not a fault of a rule: a test expecting none can assert 0.
    pub fn upstream_errors(&self) -> usize {
        self.shared.upstream_errors.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                if shared.down.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let close = stop.child_token();
                {
                    let mut open = shared.open.lock().unwrap();
                    open.retain(|token| !token.is_cancelled());
                    open.push(close.clone());
                }
                tokio::spawn(serve_connection(Arc::clone(&shared), stream, close));
            }
            // Out of descriptors or similar: pause instead of spinning; the client retries.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// One client connection, as seen by the requests it carries.
struct Connection {
    /// A second descriptor of the client socket: a reset sets SO_LINGER 0 through it, since hyper
    /// owns the stream itself.
    duplicate: Mutex<Option<std::net::TcpStream>>,
    /// Cancelled to close the connection: the connection task drops hyper's connection and stream.
    close: CancellationToken,
    /// When the last request on this connection was answered; `None` before the first.
    idle_since: Mutex<Option<Instant>>,
}

impl Connection {
    /// Whether a request arriving now finds the connection stale: it carried an earlier request
    /// and has been idle for at least `limit`.
    fn is_stale(&self, limit: Option<Duration>) -> bool {
        let idle_since = *self.idle_since.lock().unwrap();
        match (limit, idle_since) {
            (Some(limit), Some(since)) => since.elapsed() >= limit,
            _ => false,
        }
    }

    fn answered(&self) {
        *self.idle_since.lock().unwrap() = Some(Instant::now());
    }

    /// Closes the connection with a FIN; never returns (the connection task drops this future).
    async fn close(&self) -> Response<Full<Bytes>> {
        self.close.cancel();
        pending().await
    }

    /// Closes the connection with a RST; never returns.
    async fn reset(&self) -> Response<Full<Bytes>> {
        if let Some(duplicate) = self.duplicate.lock().unwrap().take() {
            // SO_LINGER 0 is a property of the socket: once hyper's descriptor closes too, the
            // kernel sends RST instead of FIN. This duplicate closes at the end of the statement.
            TcpSocket::from_std_stream(duplicate)
                .set_zero_linger()
                .expect("set SO_LINGER 0 on the client socket");
        }
        self.close().await
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, close: CancellationToken) {
    let Ok((stream, duplicate)) = with_duplicate(stream) else {
        return;
    };
    let connection = Arc::new(Connection {
        duplicate: Mutex::new(Some(duplicate)),
        close: close.clone(),
        idle_since: Mutex::new(None),
    });
    let service =
        service_fn(move |request| handle(Arc::clone(&shared), Arc::clone(&connection), request));
    let serving = http1::Builder::new()
        .keep_alive(true)
        // No timer, no timeouts: an idle keep-alive connection stays open until the client closes
        // it (staleness is simulated on purpose, never by accident).
        .header_read_timeout(None::<Duration>)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = serving => {}
        () = close.cancelled() => {}
    }
    // Dropping `serving` dropped the stream, the service and with it the duplicate descriptor:
    // the socket is closed now.
}

fn with_duplicate(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let stream = stream.into_std()?;
    let duplicate = stream.try_clone()?;
    Ok((TcpStream::from_std(stream)?, duplicate))
}

async fn handle(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if shared.down.load(Ordering::SeqCst) {
        return Ok(connection.close().await);
    }
    let stale = connection.is_stale(*shared.close_idle_after.lock().unwrap());
    let (parts, body) = request.into_parts();
    // Read the whole body first, also before closing: a socket closed with unread data sends RST.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "fault proxy: unreadable body",
            ))
        }
    };
    let path = parts.uri.path().to_owned();
    let record = |kind: FaultKind| {
        shared.applied.lock().unwrap().push(Applied {
            kind,
            method: parts.method.to_string(),
            path: path.clone(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: Instant::now(),
        });
    };
    if stale {
        record(FaultKind::StaleClose);
        return Ok(connection.close().await);
    }
    let fault = shared.rules.lock().unwrap().iter_mut().find_map(|armed| {
        armed
            .fires(&parts.method, &path)
            .then_some(armed.rule.fault)
    });
    let reply = match fault {
        None => shared.relay(&parts, body.clone()).await,
        Some(Fault::Delay(pause)) => {
            record(FaultKind::Delay(pause));
            tokio::time::sleep(pause).await;
            shared.relay(&parts, body.clone()).await
        }
        Some(Fault::CloseWithoutForwarding) => {
            record(FaultKind::CloseWithoutForwarding);
            connection.close().await
        }
        Some(Fault::Status(code)) => {
            record(FaultKind::Status(code));
            let status = StatusCode::from_u16(code).expect("checked by RuleBuilder::then");
            text(status, &format!("fault proxy: injected {code}"))
        }
        Some(lost @ (Fault::ReplyLost504 | Fault::ReplyLostReset | Fault::ReplyLostHang)) => {
            match shared.forward(&parts, body.clone()).await {
                // The engine never answered: there is no reply to lose.
                Err(e) => shared.bad_gateway(&e),
                Ok(_) => {
                    record(lost.into());
                    match lost {
                        Fault::ReplyLost504 => text(
                            StatusCode::GATEWAY_TIMEOUT,
                            "fault proxy: the engine's reply was lost (504 Gateway Timeout)",
                        ),
                        Fault::ReplyLostReset => connection.reset().await,
                        _ => pending().await,
                    }
                }
            }
        }
    };
    connection.answered();
    Ok(reply)
}

impl Shared {
    /// The engine's reply to the request, or the proxy's own 502 when the engine did not answer.
    async fn relay(
        &self,
        parts: &hyper::http::request::Parts,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        match self.forward(parts, body).await {
            Ok(reply) => reply,
            Err(e) => self.bad_gateway(&e),
        }
    }

    /// Sends the request to the engine and waits for its whole reply.
    async fn forward(
        &self,
        parts: &hyper::http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Full<Bytes>>, reqwest::Error> {
        self.forwarded.fetch_add(1, Ordering::SeqCst);
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut exchange = Exchange {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            engine_status: None,
        };
        let upstream = self
            .client
            .request(
                parts.method.clone(),
                format!("{}{path_and_query}", self.upstream),
            )
            .headers(end_to_end(&parts.headers))
            .body(body);
        // The exchange with the engine runs as a task of its own: when the client's connection
        // is closed under it (an outage, a reset), the engine still answers, and the record of
        // what it answered stays complete.
        let exchanges = Arc::clone(&self.exchanges);
        let sent = tokio::spawn(async move {
            let sent = match upstream.send().await {
                Ok(reply) => {
                    let status = reply.status();
                    let headers = end_to_end(reply.headers());
                    reply.bytes().await.map(|body| (status, headers, body))
                }
                Err(e) => Err(e),
            };
            exchange.engine_status = sent.as_ref().ok().map(|(status, _, _)| status.as_u16());
            exchanges.lock().unwrap().push(exchange);
            sent
        })
        .await
        .expect("the upstream exchange does not panic");
        let (status, headers, body) = sent?;
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// The proxy's own 502 for an engine that did not answer.
    fn bad_gateway(&self, error: &reqwest::Error) -> Response<Full<Bytes>> {
        self.upstream_errors.fetch_add(1, Ordering::SeqCst);
        text(
            StatusCode::BAD_GATEWAY,
            &format!("fault proxy: upstream error: {}", error_chain(error)),
        )
    }
}

/// The headers without the hop-by-hop ones, including any the `Connection` header names.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| {
            !HOP_BY_HOP.contains(&name.as_str()) && !named.iter().any(|n| n == name.as_str())
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// An error and its causes, `: `-joined.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    //! The proxy against a tiny local upstream that records what reaches it.

    use axum::extract::State;
    use axum::response::IntoResponse;
    use serde_json::json;

    use super::*;
    use crate::support::eventually;

    /// Bound of every wait that should end at once.
    const LIMIT: Duration = Duration::from_secs(30);

    /// A request as the upstream saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path_and_query: String,
        headers: HeaderMap,
        body: Bytes,
    }

    /// The upstream: records each request when it arrives, then answers `/slow` after 3 s, `/json`
    /// with what it received, anything else 204.
    struct Upstream {
        url: String,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Upstream {
        async fn start() -> Upstream {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let app = axum::Router::new()
                .fallback(answer)
                .with_state(Arc::clone(&seen));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            Upstream { url, seen }
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        fn count(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
    }

    async fn answer(
        State(seen): State<Arc<Mutex<Vec<Seen>>>>,
        request: axum::extract::Request,
    ) -> axum::response::Response {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            path_and_query: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        match parts.uri.path() {
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "slow and intact".into_response()
            }
            "/json" => {
                let header = |name| {
                    parts
                        .headers
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_owned())
                };
                let echo = json!({
                    "authorization": header(header::AUTHORIZATION),
                    "contentType": header(header::CONTENT_TYPE),
                    "query": parts.uri.query(),
                    "body": serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
                });
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    echo.to_string(),
                )
                    .into_response()
            }
            _ => StatusCode::NO_CONTENT.into_response(),
        }
    }

    /// A client with reqwest's default keep-alive pool, deaf to proxy variables.
    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    /// Sends, bounded by [`LIMIT`].
    async fn send(request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
        tokio::time::timeout(LIMIT, request.send())
            .await
            .expect("the request ends within the limit")
    }

    /// An error and its causes, outermost first.
    fn causes(error: &reqwest::Error) -> Vec<&(dyn std::error::Error + 'static)> {
        let mut causes: Vec<&(dyn std::error::Error + 'static)> = vec![error];
        let mut cause: &(dyn std::error::Error + 'static) = error;
        while let Some(source) = cause.source() {
            causes.push(source);
            cause = source;
        }
        causes
    }

    fn is_incomplete_message(error: &reqwest::Error) -> bool {
        causes(error).iter().any(|cause| {
            cause
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_incomplete_message)
        })
    }

    fn io_kind(error: &reqwest::Error) -> Option<std::io::ErrorKind> {
        causes(error)
            .iter()
            .find_map(|cause| cause.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind)
    }

    /// Prints what a client sees, for whoever classifies these errors (`--nocapture`).
    fn show(fault: &str, error: &reqwest::Error) {
        let causes = causes(error);
        eprintln!(
            "{fault}: reqwest error: {error} | innermost: {} | chain: {:?}",
            causes.last().unwrap(),
            causes.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
    }

    async fn proxy_with(rules: Vec<Rule>) -> (Upstream, FaultProxy) {
        let upstream = Upstream::start().await;
        let proxy = FaultProxy::start(&upstream.url).await;
        for rule in rules {
            proxy.add_rule(rule);
        }
        (upstream, proxy)
    }

    #[tokio::test]
    async fn requests_pass_through_unchanged_on_one_keep_alive_connection() {
        let (upstream, proxy) = proxy_with(vec![]).await;
        let http = client();

        let reply = send(
            http.post(format!("{}/json?a=1&b=two", proxy.url()))
                .basic_auth("demo", Some("demo"))
                .json(&json!({"workerId": "w", "maxTasks": 2})),
        )
        .await
        .unwrap();
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.headers()[header::CONTENT_TYPE], "application/json");
        let echo: Value = reply.json().await.unwrap();
        assert_eq!(
            echo,
            json!({
                "authorization": "Basic ZGVtbzpkZW1v",
                "contentType": "application/json",
                "query": "a=1&b=two",
                "body": {"workerId": "w", "maxTasks": 2},
            })
        );

        let reply = send(
            http.post(format!(
                "{}/engine-rest/external-task/t1/complete",
                proxy.url()
            ))
            .json(&json!({"workerId": "w"})),
        )
        .await
        .unwrap();
        assert_eq!(reply.status(), 204);
        assert_eq!(reply.bytes().await.unwrap().len(), 0);

        let seen = upstream.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path_and_query, "/json?a=1&b=two");
        assert_eq!(
            seen[1].path_and_query,
            "/engine-rest/external-task/t1/complete"
        );
        assert_eq!(&seen[1].body[..], br#"{"workerId":"w"}"#);
        assert!(!seen[1].headers.contains_key(header::CONNECTION));
        assert_eq!(proxy.connections(), 1, "both requests on one connection");
        assert_eq!(proxy.forwarded(), 2);
        assert!(proxy.applied().is_empty());
        assert_eq!(proxy.upstream_errors(), 0);
    }

    #[tokio::test]
    async fn reply_lost_504_answers_504_after_the_upstream_processed_the_request() {
        let (upstream, proxy) = proxy_with(vec![
            Rule::on("POST", r"/complete$").then(Fault::ReplyLost504)
        ])
        .await;

        let reply = send(
            client()
                .post(format!(
                    "{}/engine-rest/external-task/t1/complete",
                    proxy.url()
                ))
                .json(&json!({"workerId": "w"})),
        )
        .await
        .unwrap();

        assert_eq!(reply.status(), 504);
        assert!(reply.text().await.unwrap().contains("504"));
        assert_eq!(upstream.count(), 1, "the engine processed the request");
        let applied = proxy.applied();
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].kind, FaultKind::ReplyLost504);
        assert_eq!(applied[0].method, "POST");
        assert_eq!(applied[0].path, "/engine-rest/external-task/t1/complete");
        assert_eq!(applied[0].body, json!({"workerId": "w"}));
    }

    #[tokio::test]
    async fn reply_lost_reset_resets_the_connection_after_the_upstream_processed_the_request() {
        let (upstream, proxy) = proxy_with(vec![
            Rule::any_method("/complete$").then(Fault::ReplyLostReset)
        ])
        .await;

        let error = send(client().post(format!("{}/t1/complete", proxy.url())))
            .await
            .unwrap_err();

        show("ReplyLostReset", &error);
        assert!(error.is_request(), "{error:?}");
        assert_eq!(io_kind(&error), Some(std::io::ErrorKind::ConnectionReset));
        assert_eq!(upstream.count(), 1, "the engine processed the request");
        assert_eq!(proxy.applied_count(FaultKind::ReplyLostReset), 1);
    }

    #[tokio::test]
    async fn reply_lost_hang_lets_the_client_time_out_after_the_upstream_processed_the_request() {
        let (upstream, proxy) = proxy_with(vec![
            Rule::on("POST", "/complete$").then(Fault::ReplyLostHang)
        ])
        .await;
        let impatient = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();

        let error = send(impatient.post(format!("{}/t1/complete", proxy.url())))
            .await
            .unwrap_err();

        show("ReplyLostHang", &error);
        assert!(error.is_timeout(), "{error:?}");
        eventually(LIMIT, "the upstream counted the request", || async {
            (upstream.count() == 1).then_some(())
        })
        .await;
        eventually(LIMIT, "the hang is recorded", || async {
            (proxy.applied_count(FaultKind::ReplyLostHang) == 1).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn delay_answers_no_sooner_than_the_delay() {
        let pause = Duration::from_millis(400);
        let (upstream, proxy) = proxy_with(vec![
            Rule::on("POST", "/complete$").then(Fault::Delay(pause))
        ])
        .await;

        let started = Instant::now();
        let reply = send(client().post(format!("{}/t1/complete", proxy.url())))
            .await
            .unwrap();

        assert!(started.elapsed() >= pause, "{:?}", started.elapsed());
        assert_eq!(reply.status(), 204);
        assert_eq!(upstream.count(), 1);
        assert_eq!(proxy.applied_count(FaultKind::Delay(pause)), 1);
    }

    #[tokio::test]
    async fn close_without_forwarding_and_a_status_never_reach_the_upstream() {
        let (upstream, proxy) = proxy_with(vec![
            Rule::on("POST", "^/closed$").then(Fault::CloseWithoutForwarding),
            Rule::on("POST", "^/refused$").then(Fault::Status(502)),
        ])
        .await;

        let error = send(client().post(format!("{}/closed", proxy.url())).body("{}"))
            .await
            .unwrap_err();
        show("CloseWithoutForwarding", &error);
        assert!(error.is_request(), "{error:?}");
        assert!(is_incomplete_message(&error), "{error:?}");

        let http = client();
        let reply = send(http.post(format!("{}/refused", proxy.url())))
            .await
            .unwrap();
        assert_eq!(reply.status(), 502);
        assert_eq!(reply.text().await.unwrap(), "fault proxy: injected 502");

        assert_eq!(upstream.count(), 0, "nothing reached the upstream");
        assert_eq!(proxy.forwarded(), 0);
        assert_eq!(proxy.applied_count(FaultKind::CloseWithoutForwarding), 1);
        assert_eq!(proxy.applied_count(FaultKind::Status(502)), 1);

        // A status keeps the connection alive.
        let reply = send(http.post(format!("{}/passes", proxy.url())))
            .await
            .unwrap();
        assert_eq!(reply.status(), 204);
        assert_eq!(upstream.count(), 1);
        assert_eq!(proxy.connections(), 2);
    }

    #[tokio::test]
    async fn a_request_on_a_connection_idle_past_the_limit_finds_it_closed() {
        let (upstream, proxy) = proxy_with(vec![]).await;
        proxy.close_idle_after(Some(Duration::from_secs(1)));
        let http = client();
        let complete = format!("{}/engine-rest/external-task/t1/complete", proxy.url());

        let reply = send(http.post(&complete)).await.unwrap();
        assert_eq!(reply.status(), 204);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let error = send(http.post(&complete).json(&json!({"n": 2})))
            .await
            .unwrap_err();

        show("StaleClose", &error);
        assert!(is_incomplete_message(&error), "{error:?}");
        assert_eq!(upstream.count(), 1, "only the first request was forwarded");
        let applied = proxy.applied();
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].kind, FaultKind::StaleClose);
        assert_eq!(applied[0].body, json!({"n": 2}));

        // The next request opens a fresh connection and passes.
        let reply = send(http.post(&complete)).await.unwrap();
        assert_eq!(reply.status(), 204);
        assert_eq!(upstream.count(), 2);
        assert_eq!(proxy.connections(), 2);
    }

    #[tokio::test]
    async fn a_long_held_upstream_reply_passes_through_intact() {
        let (upstream, proxy) = proxy_with(vec![]).await;

        let started = Instant::now();
        let reply = send(client().get(format!("{}/slow", proxy.url())))
            .await
            .unwrap();

        assert_eq!(reply.status(), 200);
        assert_eq!(reply.text().await.unwrap(), "slow and intact");
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert_eq!(upstream.count(), 1);
    }

    #[tokio::test]
    async fn every_three_times_two_hits_the_third_and_sixth_match_only() {
        let (upstream, proxy) = proxy_with(vec![Rule::on("POST", r"/complete$")
            .every(3)
            .times(2)
            .then(Fault::Status(503))])
        .await;
        let http = client();

        let mut statuses = Vec::new();
        for i in 1..=9 {
            // A GET on the same path is no match and does not count.
            let reply = send(http.get(format!("{}/t{i}/complete", proxy.url())))
                .await
                .unwrap();
            assert_eq!(reply.status(), 204);
            let reply = send(http.post(format!("{}/t{i}/complete", proxy.url())))
                .await
                .unwrap();
            statuses.push(reply.status().as_u16());
        }

        assert_eq!(statuses, [204, 204, 503, 204, 204, 503, 204, 204, 204]);
        let paths: Vec<String> = proxy.applied().into_iter().map(|a| a.path).collect();
        assert_eq!(paths, ["/t3/complete", "/t6/complete"]);
        assert_eq!(upstream.count(), 16);
    }

    #[tokio::test]
    async fn rules_apply_in_insertion_order_after_their_skipped_matches() {
        let (upstream, proxy) = proxy_with(vec![
            Rule::on("POST", "^/a$")
                .skip(1)
                .times(1)
                .then(Fault::Status(503)),
            Rule::any_method("^/a$").then(Fault::Status(502)),
        ])
        .await;
        let http = client();
        let status = |request: reqwest::RequestBuilder| async move {
            send(request).await.unwrap().status().as_u16()
        };
        let a = format!("{}/a", proxy.url());

        assert_eq!(
            status(http.post(&a)).await,
            502,
            "skipped by the first rule"
        );
        assert_eq!(status(http.post(&a)).await, 503, "the first rule fires");
        assert_eq!(status(http.post(&a)).await, 502, "the first rule is spent");
        assert_eq!(status(http.get(&a)).await, 502, "other method");
        proxy.clear_rules();
        assert_eq!(status(http.post(&a)).await, 204, "no rules");
        assert_eq!(upstream.count(), 1);
    }
}
