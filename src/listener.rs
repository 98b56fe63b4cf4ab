//! The HTTP/1 server under `/metrics` and the health probes, built so that no client can hold
//! the worker: not at run time (a client that sends half a request, or never reads its reply,
//! ties up one connection for a bounded time, and only [`MAX_CONNECTIONS`] at once), and not at
//! shutdown (every connection is told to close, and the ones that do not are dropped after
//! [`CLOSE_WAIT`]).
//!
//! `axum::serve` has neither a header timeout nor a bound on its graceful shutdown: a client
//! that sent half a request kept the worker past its shutdown grace. Hence this accept loop,
//! on hyper directly.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long a client may take to send a request's headers — and, on a kept-alive connection,
/// to begin its next request. A scraper sends a request in a millisecond.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a connection is served, requests and idle time together; then it is closed
/// after its current response. A scraper that keeps its connection reconnects; a client that
/// does not read its reply is let go.
pub const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(60);

/// At shutdown (or at [`MAX_CONNECTION_LIFE`]), how long a response in flight may take before
/// its connection is dropped. Taken after the grace: this bounds how far past it the process
/// may run.
pub const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Connections served at once; more are closed as they come. Probes and scrapers need a few.
pub const MAX_CONNECTIONS: usize = 64;

/// Serves `app` on `listener` until `stop`; then closes every connection within [`CLOSE_WAIT`]
/// and returns.
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() < MAX_CONNECTIONS => {
                    debug!(%peer, "metrics listener: connection");
                    connections.spawn(serve_connection(stream, app.clone(), stop.clone()));
                }
                Ok((stream, peer)) => {
                    debug!(%peer, "metrics listener: {MAX_CONNECTIONS} connections open; closing a new one");
                    drop(stream);
                }
                // Out of file descriptors, or a connection reset before it was accepted: wait
                // a moment rather than spin.
                Err(e) => {
                    debug!("metrics listener: accept failed: {e}");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    // Each connection closes by itself within CLOSE_WAIT of `stop`; the bound here is a second
    // guard, and what is left then is aborted when the set is dropped.
    let _ = tokio::time::timeout(CLOSE_WAIT * 2, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// One connection: served until the client closes it, [`MAX_CONNECTION_LIFE`] or `stop`; then
/// its current response gets [`CLOSE_WAIT`] to finish.
async fn serve_connection(stream: TcpStream, app: Router, stop: CancellationToken) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stop.cancelled() => {}
        () = tokio::time::sleep(MAX_CONNECTION_LIFE) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_WAIT, connection).await;
}
