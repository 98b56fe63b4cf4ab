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

/// How long a worker binary may take to exit after SIGTERM: the default 25 s shutdown grace (the
/// worker may use it to release what an abandoned long poll locks) plus a margin.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(40);

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

/// The worker binary, with a clean `CAMUNDA_WORKER_*` environment.
pub fn binary() -> std::process::Command {
    let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("camunda-worker"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CAMUNDA_WORKER_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

/// A worker binary running in the background, its stderr captured to a file.
pub struct WorkerProcess {
    pub child: std::process::Child,
    pub log: tempfile::NamedTempFile,
}

impl WorkerProcess {
    /// Starts the binary with `args` (add `--metrics-addr` yourself when it matters).
    pub fn spawn(args: &[&str]) -> WorkerProcess {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = binary()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        WorkerProcess { child, log }
    }

    /// Everything the worker logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends a signal by pid.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded) for the exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "the worker did not exit within {limit:?}; log:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        self.signal("TERM");
        self.wait_exit(limit)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Log lines containing `needle`.
pub fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// GETs a worker's /metrics, waiting (up to 10 s) for a worker that is still starting to listen.
pub async fn scrape(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match reqwest::get(&url).await {
            Ok(reply) => return reply.text().await.unwrap(),
            Err(e) if e.is_connect() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot scrape {url}: {e}"),
        }
    }
}

/// The value of one sample (`name` including labels, exactly as exposed), 0 when absent.
pub fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Sends SIGTERM to a child by pid and waits (bounded) for its exit code.
pub fn terminate(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the worker") {
            return status.code();
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the worker did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
