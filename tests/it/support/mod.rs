//! Shared helpers: an in-process worker against any engine URL, a scripted mock engine, and the
//! real engine built from `engine/`.

#![allow(dead_code)] // Helpers serve many test modules; not each uses every one.

pub mod engine;
pub mod mock;

use std::future::Future;
use std::time::Duration;

use camunda_worker::config::{self, Config};
use camunda_worker::daemon::{self, RunSummary};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A daemon running in this test process.
pub struct TestWorker {
    pub stop: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<RunSummary>>,
}

impl TestWorker {
    /// Starts the daemon with these flags (plus `--metrics-addr 127.0.0.1:0` unless given).
    pub fn spawn(engine_url: &str, flags: &[&str]) -> TestWorker {
        let config = config_for(engine_url, flags);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(async move { daemon::run(&config, token).await });
        TestWorker { stop, handle }
    }

    /// Cancels and waits for the shutdown sequence to finish.
    pub async fn shutdown(self) -> RunSummary {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("the worker shuts down within 60 s")
            .expect("the worker task does not panic")
            .expect("the worker runs without error")
    }
}

/// The validated config for a worker with `flags` against `engine_url`.
pub fn config_for(engine_url: &str, flags: &[&str]) -> Config {
    let mut args = vec!["camunda-worker", "--engine-url", engine_url];
    if !flags.contains(&"--metrics-addr") {
        args.extend(["--metrics-addr", "127.0.0.1:0"]);
    }
    args.extend(flags);
    match config::load(args) {
        Ok((_, _, config)) => config,
        Err(e) => panic!("test config is invalid: {e}"),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
