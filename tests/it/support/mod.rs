//! Shared helpers: the worker binary against any engine URL (and, for library handlers, the daemon
//! in this test process), a scripted mock engine, a fault-injecting proxy, and the real engine
//! built from `engine/`.

#![allow(dead_code)] // Helpers serve many test modules; not each uses every one.

pub mod cluster;
pub mod engine;
pub mod faults;
pub mod jaeger;
pub mod metrics;
pub mod mock;
pub mod previous_release;
pub mod proxy;
pub mod run;
pub mod work;

pub use metrics::{engine_requests, metric_sum, metric_value};

use std::future::Future;
use std::time::Duration;

use camunda_worker::config::{self, Config};
use camunda_worker::daemon::{self, RunSummary};
use camunda_worker::handler::Handler;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a worker binary may take to exit after SIGTERM: the default 25 s shutdown grace (the
/// worker may use it to release what an abandoned long poll locks) plus a margin.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(40);

/// The daemon with a library handler, running in this test process: the one way to test what a
/// handler of the library's users makes the worker do. Everything the binary's own handler does
/// is tested on the binary ([`WorkerProcess`]), as an operator runs it.
pub struct TestWorker {
    stop: CancellationToken,
    handle: JoinHandle<anyhow::Result<RunSummary>>,
}

impl TestWorker {
    /// Starts the daemon against `engine_url` with `flags`, serving tasks with `handler`.
    pub fn spawn(engine_url: &str, flags: &[&str], handler: impl Handler) -> TestWorker {
        let config = config_for(engine_url, flags);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle =
            tokio::spawn(async move { daemon::run_with_handler(&config, handler, token).await });
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

/// The path a build script of the project prints (`scripts/jaeger.sh`,
/// `scripts/previous-release.sh`): the tool it built or found built. A script that fails fails
/// the test, with its output.
pub fn built_by(script: &str) -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new(root.join(script))
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// The worker binary, with a clean `CAMUNDA_WORKER_*` environment.
pub fn binary() -> std::process::Command {
    worker_command(&assert_cmd::cargo::cargo_bin("camunda-worker"))
}

/// A worker binary (this build's or another release's), with a clean `CAMUNDA_WORKER_*`
/// environment.
fn worker_command(program: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    for (key, _) in std::env::vars() {
        if key.starts_with("CAMUNDA_WORKER_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

/// Runs the worker binary with `args` (a `deploy` command and its engine flags) and requires that
/// it deployed the bundled process as a new version; its stdout.
pub fn deploy_with_binary(args: &[&str]) -> String {
    let deploy = binary().args(args).output().unwrap();
    let out = String::from_utf8_lossy(&deploy.stdout).into_owned();
    assert!(
        deploy.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&deploy.stderr)
    );
    assert!(
        out.contains("deployed message_correlation version"),
        "{out}"
    );
    out
}

/// The worker binary running in the background as an operator runs it: against an engine URL,
/// with its metrics on a port of its own and its stderr in a file. Killed when dropped if still
/// running; a failing test prints the end of its log.
pub struct WorkerProcess {
    pub name: String,
    pub child: std::process::Child,
    pub metrics_addr: String,
    log: tempfile::NamedTempFile,
}

impl WorkerProcess {
    /// Starts the daemon against `engine_url` with `flags` (plus `--metrics-addr
    /// 127.0.0.1:<free port>` unless the flags name one), logging at info.
    pub fn spawn(name: &str, engine_url: &str, flags: &[&str]) -> WorkerProcess {
        Self::spawn_with_env(name, engine_url, flags, &[])
    }

    /// [`WorkerProcess::spawn`] with these environment variables set as well.
    pub fn spawn_with_env(
        name: &str,
        engine_url: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        Self::spawn_command(binary(), name, engine_url, flags, env)
    }

    /// [`WorkerProcess::spawn`] with the previous release's binary ([`previous_release`]).
    pub fn spawn_previous_release(name: &str, engine_url: &str, flags: &[&str]) -> WorkerProcess {
        let command = worker_command(previous_release::path());
        Self::spawn_command(command, name, engine_url, flags, &[])
    }

    fn spawn_command(
        mut command: std::process::Command,
        name: &str,
        engine_url: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let metrics_addr = match flags.iter().position(|f| *f == "--metrics-addr") {
            Some(i) => flags[i + 1].to_owned(),
            None => format!("127.0.0.1:{}", engine::free_port()),
        };
        let mut args = vec!["--engine-url", engine_url];
        if !flags.contains(&"--metrics-addr") {
            args.extend(["--metrics-addr", &metrics_addr]);
        }
        args.extend(flags);
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = command
            .args(&args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        WorkerProcess {
            name: name.to_owned(),
            child,
            metrics_addr,
            log,
        }
    }

    /// Everything the worker logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Fails the test if the worker has exited.
    pub fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "worker {} exited ({status}) {when}; its log:\n{}",
                self.name,
                self.stderr()
            );
        }
    }

    /// Sends a signal by pid.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {} failed", self.name);
    }

    /// Waits (bounded) for the exit code; fails the test, with the log, past `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "worker {} did not exit within {limit:?}; log:\n{}",
                    self.name,
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

    /// `kill -9`: no shutdown sequence, whatever is in memory is lost.
    pub fn kill_hard(&mut self) {
        self.signal("KILL");
        self.child.wait().unwrap();
    }

    /// GET on the worker's own listener: (status, body). `None` while it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let reply = reqwest::Client::new()
            .get(format!("http://{}{path}", self.metrics_addr))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = reply.status().as_u16();
        Some((status, reply.text().await.ok()?))
    }

    /// The Prometheus text of `/metrics`, waiting (bounded) for the listener to come up.
    pub async fn scrape(&self) -> String {
        eventually(
            Duration::from_secs(30),
            &format!("worker {} serves /metrics", self.name),
            || async { self.get("/metrics").await.filter(|(s, _)| *s == 200) },
        )
        .await
        .1
    }

    /// The value of one series (a name with its labels, as exposed); absent counts as 0.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.scrape().await, series)
    }

    /// The value of one counter or gauge as a whole number (absent counts as 0).
    pub async fn count(&self, series: &str) -> u64 {
        self.metric(series).await as u64
    }

    /// The exposition once `series` has reached `at_least` — or after [`COUNT_SETTLE`], so that
    /// the caller's assertion shows the shortfall. The engine commits a call before it answers,
    /// so engine state can show a completion or a correlation a moment before the worker, which
    /// counts when the answer arrives, does.
    pub async fn scrape_settled(&self, series: &str, at_least: f64) -> String {
        let deadline = tokio::time::Instant::now() + COUNT_SETTLE;
        loop {
            let metrics = self.scrape().await;
            if metric_value(&metrics, series) >= at_least || tokio::time::Instant::now() >= deadline
            {
                return metrics;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (up to `limit`) until `done` holds for the worker's metrics (or for anything else the
    /// closure looks at, such as a mock's requests), then stops the worker with SIGTERM and
    /// requires exit code 0: what the worker showed at that moment, for the test to judge.
    pub async fn stop_once(
        mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> Stopped {
        let metrics = eventually(limit, what, || async {
            let metrics = self.scrape().await;
            done(&metrics).then_some(metrics)
        })
        .await;
        let log = self.stderr();
        assert_eq!(
            self.terminate(SHUTDOWN_LIMIT),
            Some(0),
            "worker {} after SIGTERM; its log:\n{}",
            self.name,
            self.stderr()
        );
        Stopped {
            metrics,
            log,
            worker: self,
        }
    }

    /// The status `/healthz` or `/readyz` answers.
    pub async fn probe(&self, path: &str) -> u16 {
        eventually(
            Duration::from_secs(30),
            &format!("worker {} answers {path}", self.name),
            || async { self.get(path).await.map(|(status, _)| status) },
        )
        .await
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.stderr();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of worker {} ---", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A worker binary stopped by [`WorkerProcess::stop_once`], and what it showed just before.
pub struct Stopped {
    /// The exposition of `/metrics` in which the awaited state was seen.
    pub metrics: String,
    /// The log up to that moment (before SIGTERM: without the shutdown's own lines).
    pub log: String,
    /// The exited process: its [`WorkerProcess::stderr`] is the whole log, shutdown included.
    pub worker: WorkerProcess,
}

impl Stopped {
    /// The value of one series in [`Stopped::metrics`] (see [`metric_value`]).
    pub fn value(&self, series: &str) -> f64 {
        metric_value(&self.metrics, series)
    }

    /// The sum of a metric's series in [`Stopped::metrics`] (see [`metric_sum`]).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.metrics, name, labels)
    }
}

/// How long a worker may take to count a call whose effect the engine already shows (the engine
/// commits before it answers, and on a loaded machine the answer can trail the commit by seconds;
/// only a count that stays wrong this long fails a test).
pub const COUNT_SETTLE: Duration = Duration::from_secs(60);

/// The sum of `series` over `workers`, read once it has reached `expected` — or after
/// [`COUNT_SETTLE`], so that the caller's assertion shows the shortfall. A total above `expected`
/// returns at once, for the assertion to catch.
pub async fn settled_total(workers: &[&WorkerProcess], series: &[&str], expected: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + COUNT_SETTLE;
    loop {
        let mut total = 0;
        for worker in workers {
            for name in series {
                total += worker.count(name).await;
            }
        }
        if total >= expected || tokio::time::Instant::now() >= deadline {
            return total;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Log lines containing `needle`.
pub fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Asserts that an incident's `configuration` names the follow-up of task `task_id`: the task id,
/// `#`, and a part of the incident's own (so that resolving one incident resolves no other).
pub fn assert_names_follow_up(configuration: &serde_json::Value, task_id: &str) {
    let text = configuration.as_str().unwrap_or_default();
    let own = text.strip_prefix(&format!("{task_id}#"));
    assert!(
        own.is_some_and(|own| !own.is_empty()),
        "the configuration {configuration} names task {task_id} and a part of its own"
    );
}
