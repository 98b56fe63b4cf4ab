//! The operator's window into a running worker: `/metrics` (Prometheus text), `/healthz`
//! (liveness: the loop is alive and has polled recently) and `/readyz` (readiness: an engine node
//! answered its last call and accepted the credentials), on one small HTTP listener.
//!
//! [`Liveness`] holds the facts the fetch loop reports for these probes and for the reconciler
//! (when the loop last finished a poll, how many tasks it has fetched); readiness comes from the
//! engine client, which judges every call it makes. A background task that ended before
//! shutdown ([`Liveness::task_died`]) fails `/healthz` at once and for good: the worker no longer
//! does all its work, and must not look healthy while it exits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
    /// The first background task that ended before shutdown, and how.
    died: OnceLock<String>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            last_poll_ms: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
            died: OnceLock::new(),
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

    /// Records that a background task ended before shutdown (`what`: which, and how); from now
    /// on `/healthz` fails. The first death is the one reported.
    pub fn task_died(&self, what: String) {
        let _ = self.died.set(what);
    }

    /// The background task that ended before shutdown, if one did.
    pub fn dead_task(&self) -> Option<&str> {
        self.died.get().map(String::as_str)
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

/// Binds the listener now (so a taken port fails at start); the future serves until `stop`,
/// through [`crate::listener`]: no client can hold the shutdown. The caller spawns it, tracked.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    client: EngineClient,
    long_poll: Duration,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
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
    Ok((bound, crate::listener::serve(listener, app, stop)))
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
    if let Some(task) = liveness.dead_task() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{task}: the worker is exiting\n"),
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> Probe {
        let url = "http://127.0.0.1:9/engine-rest".parse().expect("a URL");
        let settings = crate::engine::EngineSettings::new(url);
        Probe {
            metrics: Arc::new(Metrics::new()),
            liveness: Arc::new(Liveness::default()),
            client: EngineClient::new(settings).expect("a client"),
            stale_after: Duration::from_secs(3600),
        }
    }

    async fn status(probe: &Probe) -> (StatusCode, String) {
        let response = healthz(State(probe.clone())).await.into_response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("a short body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_dead_background_task_fails_healthz_at_once_even_right_after_a_poll() {
        let probe = probe();
        probe.liveness.polled(0);
        assert_eq!(status(&probe).await.0, StatusCode::OK);
        probe
            .liveness
            .task_died("the reconciler of topic t ended before shutdown".into());
        probe.liveness.polled(1);
        let (code, body) = status(&probe).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("the reconciler of topic t ended"), "{body}");
    }
}
