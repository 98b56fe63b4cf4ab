//! The proxy at work: the accept loop, one task per keep-alive connection, each request matched
//! against the rules and forwarded to the engine or met with its fault.

use std::convert::Infallible;
use std::future::{pending, Future};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{Applied, Exchange, Fault, FaultKind, Shared};

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

pub(super) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
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

/// A request other than fetch-and-lock, counted open while it lives (dropped with the reply, or
/// with the request when the client gives up).
struct OpenCall<'a>(&'a Shared);

impl<'a> OpenCall<'a> {
    fn new(shared: &'a Shared) -> Self {
        let open = shared.calls_open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.calls_peak.fetch_max(open, Ordering::SeqCst);
        OpenCall(shared)
    }
}

impl Drop for OpenCall<'_> {
    fn drop(&mut self) {
        self.0.calls_open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the proxy answers: a whole body, or one cut short of the length its headers claim.
type Reply = Either<Full<Bytes>, Unsized>;

async fn handle(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    request: Request<Incoming>,
) -> Result<Response<Reply>, Infallible> {
    if shared.down.load(Ordering::SeqCst) {
        return Ok(connection.close().await.map(Either::Left));
    }
    let stale = connection.is_stale(*shared.close_idle_after.lock().unwrap());
    let (parts, body) = request.into_parts();
    // Read the whole body first, also before closing: a socket closed with unread data sends RST.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(
                text(StatusCode::BAD_REQUEST, "fault proxy: unreadable body").map(Either::Left),
            )
        }
    };
    let path = parts.uri.path().to_owned();
    let _open = (!path.ends_with("/fetchAndLock")).then(|| OpenCall::new(&shared));
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
        return Ok(connection.close().await.map(Either::Left));
    }
    let ruled = shared.rules.lock().unwrap().iter_mut().find_map(|armed| {
        armed
            .fires(&parts.method, &path)
            .then_some(armed.rule.fault)
    });
    // A rule decides first; a request no rule fired on may draw a fault of the chaos mix.
    let fault = ruled.or_else(|| {
        let mut chaos = shared.chaos.lock().unwrap();
        chaos.as_mut().and_then(|chaos| chaos.draw(&path))
    });
    let reply = match fault {
        None => shared.relay(&parts, body.clone()).await,
        Some(Fault::Delay(pause)) => {
            record(FaultKind::Delay(pause));
            tokio::time::sleep(pause).await;
            shared.relay(&parts, body.clone()).await
        }
        Some(Fault::Hold) => {
            record(FaultKind::Hold);
            shared.release.cancelled().await;
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
        Some(
            lost @ (Fault::ReplyLost504
            | Fault::ReplyLostReset
            | Fault::ReplyLostHang
            | Fault::CutBody),
        ) => {
            // The exchange and the fault's record run as a task of their own: a client that gives
            // up first (its request timeout, on a slow engine) drops this future, and the reply
            // the engine sends after that is lost all the same: the fault must still be counted.
            let in_task = Arc::clone(&shared);
            let (task_parts, task_body) = (parts.clone(), body.clone());
            let forwarded = tokio::spawn(async move {
                let reply = in_task.forward(&task_parts, task_body.clone()).await;
                if reply.is_ok() {
                    in_task.applied.lock().unwrap().push(Applied {
                        kind: lost.into(),
                        method: task_parts.method.to_string(),
                        path: task_parts.uri.path().to_owned(),
                        body: serde_json::from_slice(&task_body).unwrap_or(Value::Null),
                        at: Instant::now(),
                    });
                }
                reply
            })
            .await
            .expect("the upstream exchange does not panic");
            match forwarded {
                // The engine never answered: there is no reply to lose.
                Err(e) => shared.bad_gateway(&e),
                Ok(reply) if lost == Fault::CutBody => return Ok(cut_in_half(reply).await),
                Ok(_) => match lost {
                    Fault::ReplyLost504 => text(
                        StatusCode::GATEWAY_TIMEOUT,
                        "fault proxy: the engine's reply was lost (504 Gateway Timeout)",
                    ),
                    Fault::ReplyLostReset => connection.reset().await,
                    _ => pending().await,
                },
            }
        }
    };
    connection.answered();
    Ok(reply.map(Either::Left))
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
            sent: SystemTime::now(),
            answered: SystemTime::now(),
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
            exchange.answered = SystemTime::now();
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

/// The reply with its full `content-length` but only the first half of its body: hyper sends the
/// status, the headers and the half, finds the body short of its length and closes the connection
/// (the client reads a body that ends too early). An empty body is cut to nothing the same way,
/// its length claimed as one byte.
async fn cut_in_half(reply: Response<Full<Bytes>>) -> Response<Reply> {
    let (mut parts, body) = reply.into_parts();
    let whole = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let claimed = whole.len().max(1);
    parts.headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from_str(&claimed.to_string()).expect("a number is a header value"),
    );
    let half = Unsized {
        part: Some(whole.slice(..whole.len() / 2)),
        pause: Box::pin(tokio::time::sleep(CUT_PAUSE)),
    };
    Response::from_parts(parts, Either::Right(half))
}

/// How long a cut body waits after its half before it ends: hyper writes what it has buffered
/// (status, headers, the half) while the body waits; a body that ended at once would make it drop
/// the buffer with the connection, and the client would see no reply at all.
const CUT_PAUSE: Duration = Duration::from_millis(100);

/// A body that does not announce its size, so that hyper sends the `content-length` header as
/// given instead of the body's own (and finds out only at its end that the two differ).
pub(super) struct Unsized {
    part: Option<Bytes>,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Unsized {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(part) = self.part.take() {
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        self.pause.as_mut().poll(context).map(|()| None)
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
