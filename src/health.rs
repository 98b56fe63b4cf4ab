//! The operator's window into a running worker: `/metrics` (Prometheus text), `/healthz`
//! (liveness: the loop is alive and has polled recently) and `/readyz` (readiness: an engine node
//! answered its last call and accepted the credentials), on one small HTTP listener.
//!
//! [`Liveness`] holds the facts the fetch loop reports for these probes and for the reconciler
//! (when the loop last finished a poll, how many tasks it has fetched); readiness comes from the
//! engine client, which judges every call it makes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::engine::EngineClient;
use crate::metrics::Metrics;

/// What the fetch loop tells the probes and the reconciler about itself.
#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    /// Milliseconds since `started` of the last finished poll (successful or not); 0 = never.
    last_poll_ms: AtomicU64,
    /// Tasks fetched since start, over all nodes (the reconciler's sign of activity).
    fetched: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            last_poll_ms: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    /// Records a finished poll that fetched `tasks`.
    pub fn polled(&self, tasks: usize) {
        self.fetched.fetch_add(tasks as u64, Ordering::Relaxed);
        let since_start = self.started.elapsed().as_millis().max(1);
        self.last_poll_ms.store(
            u64::try_from(since_start).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Tasks fetched since start, over all nodes.
    pub fn fetched_so_far(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// Time since the loop last finished a poll; `None` before the first.
    pub fn since_last_poll(&self) -> Option<Duration> {
        match self.last_poll_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    /// Time since the worker started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// What the endpoints judge by.
#[derive(Debug, Clone)]
struct Probe {
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    client: EngineClient,
    /// The loop is unhealthy when it has not finished a poll for this long.
    stale_after: Duration,
}

/// Binds the listener now (so a taken port fails at start) and serves until `stop`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    client: EngineClient,
    long_poll: Duration,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let probe = Probe {
        metrics,
        liveness,
        client,
        // A poll takes up to the long poll plus the request margin; twice that without one
        // means the loop is stuck.
        stale_after: (long_poll + crate::engine::long_poll_margin(long_poll)) * 2,
    };
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(probe);
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok((bound, handle))
}

async fn metrics_text(State(probe): State<Probe>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        probe.metrics.render(),
    )
}

async fn healthz(State(probe): State<Probe>) -> impl IntoResponse {
    let liveness = &probe.liveness;
    let since = liveness
        .since_last_poll()
        .unwrap_or_else(|| liveness.uptime());
    if since <= probe.stale_after {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no poll finished for {}s\n", since.as_secs()),
        )
    }
}

async fn readyz(State(probe): State<Probe>) -> impl IntoResponse {
    if probe.client.is_up() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine did not answer the last call, or refused the credentials\n",
        )
    }
}
