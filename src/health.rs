//! The operator's window into a running worker: `/metrics` (Prometheus text), `/healthz`
//! (liveness: the loop is alive and has polled recently) and `/readyz` (readiness: the engine
//! answered the last call and accepted the credentials), on one small HTTP listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the endpoints judge by.
#[derive(Debug, Clone)]
struct Probe {
    metrics: Arc<Metrics>,
    /// The loop is unhealthy when it has not finished a poll for this long.
    stale_after: Duration,
}

/// Binds the listener now (so a taken port fails at start) and serves until `stop`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    long_poll: Duration,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let probe = Probe {
        metrics,
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
    let since = probe
        .metrics
        .since_last_poll()
        .unwrap_or_else(|| probe.metrics.uptime());
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
    if probe.metrics.engine_is_up() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine did not answer the last call, or refused the credentials\n",
        )
    }
}
